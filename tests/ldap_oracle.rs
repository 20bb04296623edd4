//! The correctness oracle of LDAP syncs: against a real slapd with content
//! synchronisation, a seeded random sequence of 240 directory changes (users added,
//! deleted, renamed, moved out of the users' base, mail changed; members added and
//! removed, groups nested, renamed, deleted, added) in batches. After every batch one
//! `sync` on a state database that saw every earlier batch must leave the target
//! exactly as a `resync` from an empty state database leaves a second target.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::Env;
use common::group_members::{GroupMembersApi, KEY};
use common::slapd::{BASE, NOBODY, Options, READER_DN, Slapd, admin, people_ldif, refint_settled};
use ldap3::Mod;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Users from `ou=people`, groups from `ou=groups`, every group pushed by entryUUID,
/// unmapped groups pushed empty, no safety limits (the oracle judges the result).
fn config(server: &Slapd, mock: &GroupMembersApi) -> String {
    format!(
        r#"
state_db = "state.db"

[source]
kind = "ldap"
preset = "openldap"
url = "{}"
base_dn = "{BASE}"
bind_dn = "{READER_DN}"
bind_password_file = "reader.pw"
timeout = "20s"

[source.users]
base_dn = "ou=people,{BASE}"

[source.groups]
base_dn = "ou=groups,{BASE}"

[safety]
max_removed_memberships = 0
max_removed_memberships_percent = 0
max_unmapped_users_percent = 0
max_removed_members_per_group_percent = 0
max_source_drop_percent = 0

[targets.office]
preset = "onlyoffice-group-members"
base_url = "{}"
timeout = "5s"

[targets.office.auth]
value_env = "TEST_OFFICE_KEY"

[targets.office.groups]
removed = "empty"

[[targets.office.groups.rules]]
match = ".*"
target_id = "{{{{ group.id }}}}"

[targets.office.users]
id_attribute = "id"
"#,
        server.url(),
        mock.uri()
    )
}

fn env_for(server: &Slapd, mock: &GroupMembersApi) -> Env {
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    env.write("dirsync.toml", &config(server, mock));
    env
}

async fn dirsync(env: &Env, args: &[&str]) -> common::Run {
    let mut cmd = env.command(args);
    cmd.env("TEST_OFFICE_KEY", KEY);
    common::Run::from(cmd.output().await.expect("run dirsync"))
}

/// What the target holds, without the groups pushed empty: a group that was deleted
/// is emptied by the incremental side and unknown to the fresh one.
fn non_empty(mock: &GroupMembersApi) -> BTreeMap<String, BTreeSet<String>> {
    mock.groups().into_iter().filter(|(_, m)| !m.is_empty()).collect()
}

/// The directory as the test changed it, enough to pick valid changes.
struct Model {
    /// DNs of the people in `ou=people`.
    people: Vec<String>,
    /// Group DN → member DNs (people or groups; a member may dangle).
    groups: BTreeMap<String, Vec<String>>,
    next: u64,
    /// The server rewrites member values on renames and deletes (`refint`).
    refint: bool,
}

async fn ok(what: &str, res: ldap3::result::Result<ldap3::LdapResult>) {
    res.and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

impl Model {
    /// What the server does to member values when `old` is renamed to `new`, or
    /// deleted (`None`): nothing, or with `refint` the same to every value naming it
    /// (a group left without members names `NOBODY`). refint rewrites them in the
    /// background, after the operation's answer: this waits until no group names
    /// `old`.
    async fn referenced(&mut self, ldap: &mut ldap3::Ldap, old: &str, new: Option<&str>) {
        if !self.refint {
            return;
        }
        refint_settled(ldap, old).await;
        for members in self.groups.values_mut() {
            if !members.iter().any(|m| m == old) {
                continue;
            }
            members.retain(|m| m != old);
            members.extend(new.map(str::to_owned));
            if members.is_empty() {
                members.push(NOBODY.to_owned());
            }
        }
    }

    fn pick<'a>(rng: &mut StdRng, list: &'a [String]) -> Option<&'a String> {
        (!list.is_empty()).then(|| &list[rng.random_range(0..list.len())])
    }

    /// Makes one random change through `ldap`; returns what it did.
    async fn change(&mut self, rng: &mut StdRng, ldap: &mut ldap3::Ldap) -> &'static str {
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        match rng.random_range(0..11) {
            0 => {
                self.next += 1;
                let uid = format!("new{}", self.next);
                let dn = format!("uid={uid},ou=people,{BASE}");
                let attrs = vec![
                    ("objectClass", HashSet::from(["inetOrgPerson"])),
                    ("uid", HashSet::from([uid.as_str()])),
                    ("cn", HashSet::from([uid.as_str()])),
                    ("sn", HashSet::from(["New"])),
                ];
                ok("add user", ldap.add(&dn, attrs).await).await;
                self.people.push(dn);
                "add user"
            }
            1 | 2 => {
                let Some(dn) = Self::pick(rng, &self.people).cloned() else {
                    return "none";
                };
                let mail = format!("m{}@example.com", rng.random_range(0..1_000_000));
                ok(
                    "mail",
                    ldap.modify(&dn, vec![Mod::Replace("mail", HashSet::from([mail.as_str()]))])
                        .await,
                )
                .await;
                "change mail"
            }
            3 => {
                let Some(dn) = Self::pick(rng, &self.people).cloned() else {
                    return "none";
                };
                ok("delete user", ldap.delete(&dn).await).await;
                self.people.retain(|p| *p != dn);
                self.referenced(ldap, &dn, None).await;
                "delete user"
            }
            4 => {
                let Some(dn) = Self::pick(rng, &self.people).cloned() else {
                    return "none";
                };
                self.next += 1;
                let rdn = format!("uid=renamed{}", self.next);
                ok("rename user", ldap.modifydn(&dn, &rdn, true, None).await).await;
                self.people.retain(|p| *p != dn);
                let new = format!("{rdn},ou=people,{BASE}");
                self.referenced(ldap, &dn, Some(&new)).await;
                self.people.push(new);
                "rename user"
            }
            5 => {
                let Some(dn) = Self::pick(rng, &self.people).cloned() else {
                    return "none";
                };
                let rdn = dn.split(',').next().unwrap_or_default().to_owned();
                let outside = format!("ou=outside,{BASE}");
                ok("move user", ldap.modifydn(&dn, &rdn, true, Some(&outside)).await).await;
                self.people.retain(|p| *p != dn);
                self.referenced(ldap, &dn, Some(&format!("{rdn},{outside}")))
                    .await;
                "move user out of the base"
            }
            6 | 7 => {
                let (Some(g), Some(p)) = (Self::pick(rng, &groups), Self::pick(rng, &self.people)) else {
                    return "none";
                };
                if self.groups[g].contains(p) {
                    return "none";
                }
                ok(
                    "add member",
                    ldap.modify(g, vec![Mod::Add("member", HashSet::from([p.as_str()]))])
                        .await,
                )
                .await;
                self.groups.get_mut(g).expect("group").push(p.clone());
                "add member"
            }
            8 => {
                let Some(g) = Self::pick(rng, &groups).cloned() else {
                    return "none";
                };
                let members = &self.groups[&g];
                if members.len() < 2 {
                    return "none";
                }
                let m = members[rng.random_range(0..members.len())].clone();
                ok(
                    "remove member",
                    ldap.modify(&g, vec![Mod::Delete("member", HashSet::from([m.as_str()]))])
                        .await,
                )
                .await;
                self.groups.get_mut(&g).expect("group").retain(|x| *x != m);
                "remove member"
            }
            9 => {
                let (Some(parent), Some(child)) = (Self::pick(rng, &groups), Self::pick(rng, &groups)) else {
                    return "none";
                };
                if parent == child || self.groups[parent].contains(child) {
                    return "none";
                }
                ok(
                    "nest",
                    ldap.modify(parent, vec![Mod::Add("member", HashSet::from([child.as_str()]))])
                        .await,
                )
                .await;
                self.groups.get_mut(parent).expect("group").push(child.clone());
                "nest a group"
            }
            _ => match rng.random_range(0..3) {
                0 => {
                    let Some(g) = Self::pick(rng, &groups).cloned() else {
                        return "none";
                    };
                    self.next += 1;
                    let rdn = format!("cn=renamed{}", self.next);
                    ok("rename group", ldap.modifydn(&g, &rdn, true, None).await).await;
                    let members = self.groups.remove(&g).unwrap_or_default();
                    let new = format!("{rdn},ou=groups,{BASE}");
                    self.groups.insert(new.clone(), members);
                    self.referenced(ldap, &g, Some(&new)).await;
                    "rename group"
                }
                1 => {
                    let Some(g) = Self::pick(rng, &groups).cloned() else {
                        return "none";
                    };
                    ok("delete group", ldap.delete(&g).await).await;
                    self.groups.remove(&g);
                    self.referenced(ldap, &g, None).await;
                    "delete group"
                }
                _ => {
                    let Some(p) = Self::pick(rng, &self.people).cloned() else {
                        return "none";
                    };
                    self.next += 1;
                    let cn = format!("team{}", self.next);
                    let dn = format!("cn={cn},ou=groups,{BASE}");
                    let attrs = vec![
                        ("objectClass", HashSet::from(["groupOfNames"])),
                        ("cn", HashSet::from([cn.as_str()])),
                        ("member", HashSet::from([p.as_str()])),
                    ];
                    ok("add group", ldap.add(&dn, attrs).await).await;
                    self.groups.insert(dn, vec![p]);
                    "add group"
                }
            },
        }
    }
}

/// 40 people, 12 groups of 3–8 of them, an OU outside the users' base.
fn directory() -> (String, Model) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut ldif = format!("dn: ou=outside,{BASE}\nobjectClass: organizationalUnit\nou: outside\n\n");
    ldif.push_str(&people_ldif(40));
    let people: Vec<String> = (1..=40)
        .map(|i| format!("uid=user{i},ou=people,{BASE}"))
        .collect();
    let mut groups = BTreeMap::new();
    for k in 0..12 {
        let dn = format!("cn=group{k},ou=groups,{BASE}");
        let mut members: Vec<String> = Vec::new();
        while members.len() < rng.random_range(3..=8) {
            let p = people[rng.random_range(0..people.len())].clone();
            if !members.contains(&p) {
                members.push(p);
            }
        }
        ldif.push_str(&format!("dn: {dn}\nobjectClass: groupOfNames\ncn: group{k}\n"));
        for m in &members {
            ldif.push_str(&format!("member: {m}\n"));
        }
        ldif.push('\n');
        groups.insert(dn, members);
    }
    (
        ldif,
        Model {
            people,
            groups,
            next: 0,
            refint: false,
        },
    )
}

#[tokio::test]
async fn every_sync_after_random_changes_leaves_what_a_fresh_resync_leaves() {
    random_changes(Options {
        syncprov: true,
        ..Options::default()
    })
    .await;
}

/// The same against a server with referential integrity: renames and deletions
/// rewrite the member values naming them, and the refresh does not name the groups.
#[tokio::test]
async fn with_referential_integrity_every_sync_leaves_what_a_fresh_resync_leaves() {
    random_changes(Options {
        syncprov: true,
        refint: true,
        ..Options::default()
    })
    .await;
}

async fn random_changes(opts: Options) {
    let (ldif, mut model) = directory();
    model.refint = opts.refint;
    let server = Slapd::start(&ldif, opts);
    let mock = GroupMembersApi::start().await;
    let env = env_for(&server, &mock);
    dirsync(&env, &["sync"]).await.expect_code(0);

    let mut ldap = admin(&server).await;
    let mut rng = StdRng::seed_from_u64(2026);
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    let mut changes = 0;
    for batch in 0..12 {
        for _ in 0..20 {
            let what = model.change(&mut rng, &mut ldap).await;
            if what != "none" {
                changes += 1;
                *done.entry(what).or_default() += 1;
            }
        }
        let run = dirsync(&env, &["sync"]).await;
        run.expect_code(0);

        let fresh = GroupMembersApi::start().await;
        let fresh_env = env_for(&server, &fresh);
        dirsync(&fresh_env, &["resync"]).await.expect_code(0);
        assert_eq!(
            non_empty(&mock),
            non_empty(&fresh),
            "batch {batch}: the synced target differs from a fresh resync's\n{}",
            run.stderr
        );
        mock.assert_no_violations();
    }
    ldap.unbind().await.expect("unbind");
    eprintln!("{changes} changes: {done:?}");
    assert!(changes >= 200, "{changes} changes: {done:?}");
    for kind in [
        "add user",
        "change mail",
        "delete user",
        "rename user",
        "move user out of the base",
        "add member",
        "remove member",
        "nest a group",
        "rename group",
        "delete group",
        "add group",
    ] {
        assert!(done.contains_key(kind), "no `{kind}` among {done:?}");
    }
}
