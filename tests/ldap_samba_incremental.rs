//! Active Directory read by USN against a real Samba AD DC: the real binary syncs
//! the `active-directory` preset to a mock of the group-members API. The oracle of
//! every case is a `resync` from an empty state database into a second mock: an
//! incremental run must leave the target, and the entry cache, as a full read
//! would.
//!
//! Each test runs in a network namespace of its own (the DC listens on port 389):
//! the test binary runs the test again under `unshare -n`, which starts the DC, the
//! mocks and dirsync.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::group_members::{GroupMembersApi, KEY};
use common::samba::{ADMIN_DN, DOMAIN, Dc, STAFF, admin, in_private_network};
use common::{Env, Run};
use ldap3::{Ldap, Mod};
use rand::{Rng, SeedableRng};

const FULL_READ: &str = "Reading every entry of the source.";
const OUTSIDE: &str = "CN=Users,DC=corp,DC=example,DC=com";

fn config(dc: &Dc, mock: &GroupMembersApi, daemon: &str) -> String {
    format!(
        r#"
state_db = "state.db"

[source]
kind = "ldap"
preset = "active-directory"
url = "ldap://127.0.0.1"
base_dn = "{DOMAIN}"
bind_dn = "{ADMIN_DN}"
bind_password_file = "{pw}"
page_size = 2
timeout = "20s"

[source.users]
base_dn = "{STAFF}"

[source.groups]
base_dn = "{STAFF}"

[targets.office]
preset = "onlyoffice-group-members"
base_url = "{uri}"
timeout = "5s"

[targets.office.auth]
value_env = "TEST_OFFICE_KEY"

[[targets.office.groups.rules]]
match = ".*"
target_id = "{{{{ group.id }}}}"

[targets.office.users]
id_attribute = "id"
{daemon}
"#,
        pw = dc.password_file().display(),
        uri = mock.uri()
    )
}

/// Runs `test` (named `name`) in a network namespace of its own with a started DC.
fn with_dc<F: Future<Output = ()>>(name: &str, test: impl FnOnce(Dc) -> F) {
    if !in_private_network(name) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dc = Dc::start(tmp.path());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test(dc));
}

async fn dirsync(env: &Env, args: &[&str]) -> Run {
    let mut cmd = env.command(args);
    cmd.env("TEST_OFFICE_KEY", KEY);
    Run::from(cmd.output().await.expect("run dirsync"))
}

type Groups = BTreeMap<String, BTreeSet<String>>;
type Entries = BTreeMap<(String, String), (String, String)>;

/// The entry cache of a state database: (kind, id) → (DN, attributes).
async fn cache(env: &Env) -> Entries {
    let db = common::sqlite(&env.db()).await;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT kind, id, dn, attrs FROM source_entries")
            .fetch_all(&db)
            .await
            .expect("read the cache");
    db.close().await;
    rows.into_iter()
        .map(|(k, id, dn, a)| ((k, id), (dn, sorted_attrs(&a))))
        .collect()
}

/// Stored attributes in name order: a domain controller answers a search with
/// them in no fixed order.
fn sorted_attrs(stored: &str) -> String {
    let mut attrs: Vec<serde_json::Value> = serde_json::from_str(stored).expect("stored attributes are JSON");
    attrs.sort_by_key(|a| a[0].as_str().unwrap_or_default().to_owned());
    serde_json::to_string(&attrs).expect("JSON")
}

/// What a `resync` from an empty state database pushes for the directory as it is,
/// and the entry cache it keeps.
async fn oracle(dc: &Dc) -> (Groups, Entries) {
    oracle_of(&|mock| config(dc, mock, "")).await
}

/// [`oracle`] for the config `config_for` writes for a mock.
async fn oracle_of(config_for: &dyn Fn(&GroupMembersApi) -> String) -> (Groups, Entries) {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("dirsync.toml", &config_for(&mock));
    let run = dirsync(&env, &["resync"]).await;
    run.expect_code(0);
    assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
    mock.assert_no_violations();
    (mock.groups(), cache(&env).await)
}

/// An incremental sync, then the target and the cache compared with the oracle's.
async fn sync_and_compare(env: &Env, mock: &GroupMembersApi, dc: &Dc, what: &str) {
    sync_and_compare_of(env, mock, &|mock| config(dc, mock, ""), what).await;
}

/// [`sync_and_compare`] for the config `config_for` writes for a mock.
async fn sync_and_compare_of(
    env: &Env,
    mock: &GroupMembersApi,
    config_for: &dyn Fn(&GroupMembersApi) -> String,
    what: &str,
) {
    let run = dirsync(env, &["sync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("mode=\"incremental\""),
        "{what}: not incremental:\n{}",
        run.stderr
    );
    let (groups, entries) = oracle_of(config_for).await;
    assert_eq!(
        mock.groups(),
        groups,
        "{what}: the target differs from a resync's"
    );
    assert_eq!(
        cache(env).await,
        entries,
        "{what}: the cache differs from a full read's"
    );
    mock.assert_no_violations();
}

async fn ok(what: &str, r: ldap3::result::Result<ldap3::LdapResult>) {
    r.and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn staff(cn: &str) -> String {
    format!("CN={cn},{STAFF}")
}

async fn set_members(ldap: &mut Ldap, group: &str, add: bool, member: &str) {
    let values = HashSet::from([member]);
    let m = if add {
        Mod::Add("member", values)
    } else {
        Mod::Delete("member", values)
    };
    ok(&format!("member of {group}"), ldap.modify(group, vec![m]).await).await;
}

async fn add_user(ldap: &mut Ldap, dn: &str, sam: &str) {
    let upn = format!("{sam}@corp.example.com");
    let attrs = vec![
        ("objectClass", HashSet::from(["user"])),
        ("sAMAccountName", HashSet::from([sam])),
        ("userPrincipalName", HashSet::from([upn.as_str()])),
        // 0x200 NORMAL_ACCOUNT | 0x20 PASSWD_NOTREQD: enabled without a password.
        ("userAccountControl", HashSet::from(["544"])),
    ];
    ok(&format!("add {dn}"), ldap.add(dn, attrs).await).await;
}

async fn set_uac(ldap: &mut Ldap, dn: &str, value: &str) {
    let m = Mod::Replace("userAccountControl", HashSet::from([value]));
    ok(
        &format!("userAccountControl of {dn}"),
        ldap.modify(dn, vec![m]).await,
    )
    .await;
}

async fn move_to(ldap: &mut Ldap, dn: &str, rdn: &str, parent: &str) {
    ok(
        &format!("move {dn}"),
        ldap.modifydn(dn, rdn, true, Some(parent)).await,
    )
    .await;
}

#[test]
fn an_unchanged_directory_sends_nothing_and_each_change_pushes_what_a_resync_would() {
    with_dc(
        "an_unchanged_directory_sends_nothing_and_each_change_pushes_what_a_resync_would",
        |dc| async move {
            let started = Instant::now();
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &config(&dc, &mock, ""));

            let first = dirsync(&env, &["sync"]).await;
            first.expect_code(0);
            assert!(first.stderr.contains(FULL_READ), "{}", first.stderr);
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups, "the first sync pushes everything");
            assert_eq!(cache(&env).await, entries);
            assert_eq!(entries.len(), 10, "{entries:?}");

            let requests = mock.request_count().await;
            let quiet = dirsync(&env, &["--log-format", "json", "sync"]).await;
            quiet.expect_code(0);
            assert!(
                quiet.stderr.contains("\"mode\":\"unchanged\""),
                "{}",
                quiet.stderr
            );
            assert!(
                quiet
                    .stderr
                    .contains("the domain controller names no change up to its USN"),
                "{}",
                quiet.stderr
            );
            assert_eq!(
                mock.request_count().await,
                requests,
                "an unchanged directory sends nothing"
            );
            let status = dirsync(&env, &["status"]).await;
            status.expect_code(0);
            assert!(status.stdout.contains("last read unchanged"), "{}", status.stdout);

            let mut ldap = admin().await;
            // The USN moves for an object that is neither a user nor a group: still
            // no change, and nothing is sent.
            let m = Mod::Replace("description", HashSet::from(["the staff"]));
            ok("describe the OU", ldap.modify(STAFF, vec![m]).await).await;
            let quiet = dirsync(&env, &["sync"]).await;
            quiet.expect_code(0);
            assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);
            assert_eq!(
                mock.request_count().await,
                requests,
                "a change to an OU sends nothing"
            );
            // Members added and removed.
            set_members(&mut ldap, &staff("SRE"), true, &staff("Alice Example")).await;
            set_members(&mut ldap, &staff("SRE"), false, &staff("Dave Example")).await;
            sync_and_compare(&env, &mock, &dc, "members added and removed").await;
            // A user disabled.
            set_uac(&mut ldap, &staff("Carol Example"), "514").await;
            sync_and_compare(&env, &mock, &dc, "a user disabled").await;
            // A user deleted (a tombstone).
            ok("delete erin", ldap.delete(&staff("Erin Example")).await).await;
            sync_and_compare(&env, &mock, &dc, "a user deleted").await;
            // A user moved out of the users' base.
            move_to(&mut ldap, &staff("Dave Example"), "CN=Dave Example", OUTSIDE).await;
            sync_and_compare(&env, &mock, &dc, "a user moved out of the base").await;
            // A group renamed (nested in Engineering), and a user renamed: the groups
            // that name them by DN are read again.
            move_to(&mut ldap, &staff("Platform"), "CN=Platform Team", STAFF).await;
            move_to(&mut ldap, &staff("Alice Example"), "CN=Alice Renamed", STAFF).await;
            sync_and_compare(&env, &mock, &dc, "a group and a user renamed").await;
            // A user added to a group, and a moved user back in the base.
            add_user(&mut ldap, &staff("Kim Example"), "kim").await;
            set_members(&mut ldap, &staff("Ring B"), true, &staff("Kim Example")).await;
            move_to(
                &mut ldap,
                &format!("CN=Dave Example,{OUTSIDE}"),
                "CN=Dave Example",
                STAFF,
            )
            .await;
            sync_and_compare(&env, &mock, &dc, "a user added, a user back in the base").await;
            ldap.unbind().await.expect("unbind");
            eprintln!("the scripted changes took {:?}", started.elapsed());
        },
    );
}

/// A seeded random sequence of changes, in batches, each followed by an
/// incremental sync compared with a resync from an empty state database.
#[test]
fn random_changes_in_batches_push_what_a_resync_would() {
    with_dc(
        "random_changes_in_batches_push_what_a_resync_would",
        |dc| async move {
            let started = Instant::now();
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &config(&dc, &mock, ""));
            dirsync(&env, &["sync"]).await.expect_code(0);

            let mut rng = rand::rngs::StdRng::seed_from_u64(17);
            let mut ldap = admin().await;
            // Users by sAMAccountName → (cn, parent); groups by cn.
            let mut users: BTreeMap<String, (String, String)> = ["alice", "bob", "carol", "dave", "erin"]
                .iter()
                .map(|s| {
                    let cn = format!("{}{} Example", s[..1].to_uppercase(), &s[1..]);
                    ((*s).to_owned(), (cn, STAFF.to_owned()))
                })
                .collect();
            let mut groups: Vec<String> = ["SRE", "Platform", "Engineering", "Ring A", "Ring B"]
                .map(str::to_owned)
                .to_vec();
            let mut next_user = 0;
            let mut changes = 0;
            for batch in 0..5 {
                for _ in 0..8 {
                    let names: Vec<String> = users.keys().cloned().collect();
                    let pick =
                        |rng: &mut rand::rngs::StdRng, v: &[String]| v[rng.random_range(0..v.len())].clone();
                    let user = pick(&mut rng, &names);
                    let (cn, parent) = users[&user].clone();
                    let dn = format!("CN={cn},{parent}");
                    let group_cn = pick(&mut rng, &groups);
                    let group = staff(&group_cn);
                    match rng.random_range(0..8) {
                        0 => {
                            next_user += 1;
                            let sam = format!("new{next_user}");
                            let cn = format!("New User {next_user}");
                            add_user(&mut ldap, &staff(&cn), &sam).await;
                            set_members(&mut ldap, &group, true, &staff(&cn)).await;
                            users.insert(sam, (cn, STAFF.to_owned()));
                        }
                        1 if users.len() > 3 => {
                            ok("delete", ldap.delete(&dn).await).await;
                            users.remove(&user);
                        }
                        2 => {
                            let uac = if rng.random_bool(0.5) { "514" } else { "544" };
                            set_uac(&mut ldap, &dn, uac).await;
                        }
                        3 => {
                            // Adding a member twice, or removing one that is not, is
                            // refused: look first.
                            let found = ldap
                                .search(&group, ldap3::Scope::Base, "(objectClass=*)", vec!["member"])
                                .await
                                .and_then(|r| r.success())
                                .expect("read the group")
                                .0;
                            let members = found
                                .into_iter()
                                .map(ldap3::SearchEntry::construct)
                                .flat_map(|e| e.attrs.get("member").cloned().unwrap_or_default())
                                .map(|m| m.to_lowercase())
                                .collect::<BTreeSet<_>>();
                            let add = !members.contains(&dn.to_lowercase());
                            set_members(&mut ldap, &group, add, &dn).await;
                        }
                        4 => {
                            let to = if parent == STAFF { OUTSIDE } else { STAFF };
                            move_to(&mut ldap, &dn, &format!("CN={cn}"), to).await;
                            users.insert(user, (cn, to.to_owned()));
                        }
                        5 => {
                            let cn2 = format!("{cn} R");
                            move_to(&mut ldap, &dn, &format!("CN={cn2}"), &parent).await;
                            users.insert(user, (cn2, parent));
                        }
                        6 => {
                            let renamed = format!("{group_cn} R");
                            move_to(&mut ldap, &group, &format!("CN={renamed}"), STAFF).await;
                            groups.retain(|g| g != &group_cn);
                            groups.push(renamed);
                        }
                        _ => {
                            let mail = format!("{user}{batch}@example.com");
                            let m = Mod::Replace("mail", HashSet::from([mail.as_str()]));
                            ok("mail", ldap.modify(&dn, vec![m]).await).await;
                        }
                    }
                    changes += 1;
                }
                sync_and_compare(&env, &mock, &dc, &format!("batch {batch}")).await;
            }
            ldap.unbind().await.expect("unbind");
            assert!(changes >= 30, "{changes}");
            eprintln!(
                "{changes} random changes in 5 batches took {:?}",
                started.elapsed()
            );
        },
    );
}

/// Objects made outside the bases, made members of groups inside, then moved in:
/// membership is a linked attribute, so the groups' uSNChanged does not move and the
/// cache holds them under a DN it never saw. The changed objects' memberOf names
/// them, and they are read again.
#[test]
fn objects_the_cache_never_held_moved_into_the_bases_keep_their_groups() {
    with_dc(
        "objects_the_cache_never_held_moved_into_the_bases_keep_their_groups",
        |dc| async move {
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &config(&dc, &mock, ""));
            let mut ldap = admin().await;
            let outside = |cn: &str| format!("CN={cn},{OUTSIDE}");
            add_user(&mut ldap, &outside("Zed Example"), "zed").await;
            set_members(&mut ldap, &staff("SRE"), true, &outside("Zed Example")).await;
            add_user(&mut ldap, &outside("Yan Example"), "yan").await;
            set_members(&mut ldap, &staff("Ring A"), true, &outside("Yan Example")).await;
            let group = vec![
                ("objectClass", HashSet::from(["group"])),
                ("sAMAccountName", HashSet::from(["outer-team"])),
            ];
            ok("add Outer Team", ldap.add(&outside("Outer Team"), group).await).await;
            set_members(&mut ldap, &outside("Outer Team"), true, &staff("Alice Example")).await;
            set_members(&mut ldap, &staff("Engineering"), true, &outside("Outer Team")).await;
            dirsync(&env, &["sync"]).await.expect_code(0);
            assert_eq!(mock.groups(), oracle(&dc).await.0, "the first sync");

            move_to(&mut ldap, &outside("Zed Example"), "CN=Zed Example", STAFF).await;
            sync_and_compare(&env, &mock, &dc, "a member moved in").await;
            move_to(&mut ldap, &outside("Yan Example"), "CN=Yan Renamed", STAFF).await;
            sync_and_compare(&env, &mock, &dc, "a member moved in and renamed").await;
            move_to(&mut ldap, &outside("Outer Team"), "CN=Outer Team", STAFF).await;
            sync_and_compare(&env, &mock, &dc, "a nested group moved in").await;
            ldap.unbind().await.expect("unbind");
        },
    );
}

/// An organizational unit renamed, moved out of the base or back in, moves the entries
/// under it without changing them: the next run reads everything, and the target and the
/// cache come out as a full read's. Editing an OU, or adding one that holds nothing
/// the searches return, is no change.
#[test]
fn an_organizational_unit_renamed_or_moved_out_reads_everything() {
    with_dc(
        "an_organizational_unit_renamed_or_moved_out_reads_everything",
        |dc| async move {
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &config(&dc, &mock, ""));
            let mut ldap = admin().await;
            let team = format!("OU=Team,{STAFF}");
            let attrs = vec![
                ("objectClass", HashSet::from(["organizationalUnit"])),
                ("ou", HashSet::from(["Team"])),
            ];
            ok("add the OU", ldap.add(&team, attrs).await).await;
            let tom = format!("CN=Tom Example,{team}");
            add_user(&mut ldap, &tom, "tom").await;
            set_members(&mut ldap, &staff("SRE"), true, &tom).await;
            dirsync(&env, &["sync"]).await.expect_code(0);
            let (groups, _) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups, "the first sync pushes everything");

            let requests = mock.request_count().await;
            let m = Mod::Replace("description", HashSet::from(["the team"]));
            ok("describe the OU", ldap.modify(&team, vec![m]).await).await;
            // An OU that holds nothing the searches return (as a Group Policy
            // container or an OU of computers): added, no change either.
            let empty = vec![
                ("objectClass", HashSet::from(["organizationalUnit"])),
                ("ou", HashSet::from(["Empty"])),
            ];
            ok(
                "add an empty OU",
                ldap.add(&format!("OU=Empty,{STAFF}"), empty).await,
            )
            .await;
            let quiet = dirsync(&env, &["sync"]).await;
            quiet.expect_code(0);
            assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);
            assert_eq!(mock.request_count().await, requests, "an OU edit sends nothing");

            // Renamed, then a member added to the group that names Tom: the group is
            // read again and names Tom by his new DN.
            move_to(&mut ldap, &team, "OU=Crew", STAFF).await;
            let crew = format!("OU=Crew,{STAFF}");
            set_members(&mut ldap, &staff("SRE"), true, &staff("Alice Example")).await;
            let run = dirsync(&env, &["sync"]).await;
            run.expect_code(0);
            assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
            assert!(
                run.stderr.contains(&crew),
                "the reason names the OU:\n{}",
                run.stderr
            );
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups, "after the OU was renamed");
            assert_eq!(cache(&env).await, entries, "after the OU was renamed");

            // Moved out of the base: Tom leaves the source.
            move_to(&mut ldap, &crew, "OU=Crew", DOMAIN).await;
            let run = dirsync(&env, &["sync"]).await;
            run.expect_code(0);
            assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups, "after the OU moved out of the base");
            assert_eq!(cache(&env).await, entries, "after the OU moved out of the base");
            assert!(
                !entries.values().any(|(dn, _)| dn.contains("Tom Example")),
                "{entries:?}"
            );

            // Moved back in: Tom is in the source again.
            move_to(&mut ldap, &format!("OU=Crew,{DOMAIN}"), "OU=Crew", STAFF).await;
            let run = dirsync(&env, &["sync"]).await;
            run.expect_code(0);
            assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups, "after the OU moved back in");
            assert_eq!(cache(&env).await, entries, "after the OU moved back in");
            assert!(
                entries.values().any(|(dn, _)| dn.contains("Tom Example")),
                "{entries:?}"
            );

            // Tom moved out of the base (SRE names him there), then deleted: the DC
            // drops him from SRE without moving SRE's USN, and the cache never held
            // the tombstone's object. SRE is read again all the same.
            let tom = format!("CN=Tom Example,OU=Crew,{STAFF}");
            move_to(&mut ldap, &tom, "CN=Tom Example", OUTSIDE).await;
            sync_and_compare(&env, &mock, &dc, "Tom moved out of the base").await;
            ok(
                "delete tom",
                ldap.delete(&format!("CN=Tom Example,{OUTSIDE}")).await,
            )
            .await;
            sync_and_compare(&env, &mock, &dc, "Tom deleted out there").await;

            // Two OUs swap names: each still has cached entries under its DN, but
            // they are the other's, and a user named alike in both would resolve to
            // the other. The entry under each tells.
            let ou = |name: &str| format!("OU={name},{STAFF}");
            for (name, sam) in [("Left", "sam-left"), ("Right", "sam-right")] {
                let attrs = vec![
                    ("objectClass", HashSet::from(["organizationalUnit"])),
                    ("ou", HashSet::from([name])),
                ];
                ok(&format!("add OU {name}"), ldap.add(&ou(name), attrs).await).await;
                add_user(&mut ldap, &format!("CN=Sam Example,{}", ou(name)), sam).await;
            }
            let left_sam = format!("CN=Sam Example,{}", ou("Left"));
            set_members(&mut ldap, &staff("SRE"), true, &left_sam).await;
            sync_and_compare(&env, &mock, &dc, "two OUs added").await;
            move_to(&mut ldap, &ou("Left"), "OU=Swap", STAFF).await;
            move_to(&mut ldap, &ou("Right"), "OU=Left", STAFF).await;
            move_to(&mut ldap, &ou("Swap"), "OU=Right", STAFF).await;
            let run = dirsync(&env, &["sync"]).await;
            run.expect_code(0);
            assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
            assert!(
                run.stderr.contains("is now"),
                "the reason names the moved entry:\n{}",
                run.stderr
            );
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups, "after two OUs swapped names");
            assert_eq!(cache(&env).await, entries, "after two OUs swapped names");
            // The Sam under OU=Left now is the one that was under OU=Right: he joins.
            set_members(&mut ldap, &staff("SRE"), true, &left_sam).await;
            sync_and_compare(&env, &mock, &dc, "a member added after the swap").await;
            ldap.unbind().await.expect("unbind");
        },
    );
}

/// A users filter that also takes contacts: a contact added, edited and deleted is
/// read by USN like a user, and its group pushes what a resync would.
#[test]
fn contacts_the_users_filter_takes_are_read_by_their_usn() {
    with_dc(
        "contacts_the_users_filter_takes_are_read_by_their_usn",
        |dc| async move {
            let with_contacts = |mock: &GroupMembersApi| {
                let users = format!("[source.users]\nbase_dn = \"{STAFF}\"");
                config(&dc, mock, "").replace(
                    &users,
                    &format!(
                        "{users}\nfilter = \"(|(&(objectCategory=person)(objectClass=user))(objectClass=contact))\"\n\
                         username = \"cn\""
                    ),
                )
            };
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &with_contacts(&mock));
            dirsync(&env, &["sync"]).await.expect_code(0);

            let mut ldap = admin().await;
            let carl = staff("Carl Contact");
            let attrs = vec![
                ("objectClass", HashSet::from(["contact"])),
                ("mail", HashSet::from(["carl@partner.example"])),
            ];
            ok("add a contact", ldap.add(&carl, attrs).await).await;
            sync_and_compare_of(&env, &mock, &with_contacts, "a contact added").await;
            set_members(&mut ldap, &staff("SRE"), true, &carl).await;
            sync_and_compare_of(&env, &mock, &with_contacts, "a contact joined a group").await;
            let m = Mod::Replace("mail", HashSet::from(["carl@elsewhere.example"]));
            ok("edit the contact", ldap.modify(&carl, vec![m]).await).await;
            sync_and_compare_of(&env, &mock, &with_contacts, "a contact edited").await;
            ok("delete the contact", ldap.delete(&carl).await).await;
            sync_and_compare_of(&env, &mock, &with_contacts, "a contact deleted").await;
            ldap.unbind().await.expect("unbind");
        },
    );
}

/// A user search filtered on memberOf: a member added to the group moves the group's
/// USN, not the user's, so every read that finds a change is full, and the user
/// comes into the source.
#[test]
fn a_search_that_names_member_of_reads_everything_when_anything_changed() {
    with_dc(
        "a_search_that_names_member_of_reads_everything_when_anything_changed",
        |dc| async move {
            let filtered = |mock: &GroupMembersApi| {
                let users = format!("[source.users]\nbase_dn = \"{STAFF}\"");
                let sre = staff("SRE");
                config(&dc, mock, "").replace(
                    &users,
                    &format!("{users}\nfilter = \"(&(objectClass=user)(memberOf={sre}))\""),
                )
            };
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &filtered(&mock));
            dirsync(&env, &["sync"]).await.expect_code(0);
            let quiet = dirsync(&env, &["sync"]).await;
            quiet.expect_code(0);
            assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);

            let mut ldap = admin().await;
            set_members(&mut ldap, &staff("SRE"), true, &staff("Carol Example")).await;
            ldap.unbind().await.expect("unbind");
            let run = dirsync(&env, &["sync"]).await;
            run.expect_code(0);
            assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
            assert!(run.stderr.contains("names memberOf"), "{}", run.stderr);

            let fresh = GroupMembersApi::start().await;
            let oracle = Env::new();
            oracle.write("dirsync.toml", &filtered(&fresh));
            dirsync(&oracle, &["resync"]).await.expect_code(0);
            assert_eq!(mock.groups(), fresh.groups(), "Carol came into the source");
            mock.assert_no_violations();
        },
    );
}

/// A stored USN from another copy of the DC's database, or above the DC's own,
/// is in doubt: the run reads everything and says why.
#[test]
fn a_token_from_another_dc_or_ahead_of_it_reads_everything() {
    with_dc(
        "a_token_from_another_dc_or_ahead_of_it_reads_everything",
        |dc| async move {
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &config(&dc, &mock, ""));
            dirsync(&env, &["sync"]).await.expect_code(0);

            let tamper = |sql: &'static str| {
                let db = env.db();
                async move {
                    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
                    let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open");
                    sqlx::query(sql).execute(&pool).await.expect("tamper");
                    pool.close().await;
                }
            };
            for (sql, reason) in [
                (
                    "UPDATE source_state SET token = json_set(token, '$.invocation_id', \
                 '00000000-0000-0000-0000-000000000001')",
                    "the domain controller's invocationId changed (00000000-0000-0000-0000-000000000001 to ",
                ),
                (
                    "UPDATE source_state SET token = json_set(token, '$.usn', json_extract(token, '$.usn') + 1000)",
                    "is below the stored one",
                ),
                (
                    "UPDATE source_state SET token = json_set(token, '$.ds_service_name', 'CN=NTDS Settings,CN=DC2')",
                    "another domain controller answers",
                ),
            ] {
                tamper(sql).await;
                let run = dirsync(&env, &["sync"]).await;
                run.expect_code(0);
                assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
                assert!(run.stderr.contains(reason), "{reason}\n{}", run.stderr);
                let status = dirsync(&env, &["status"]).await;
                assert!(status.stdout.contains("last read full"), "{}", status.stdout);
                assert!(status.stdout.contains(reason), "{reason}\n{}", status.stdout);
                // The full read stored a token the next run trusts.
                let quiet = dirsync(&env, &["sync"]).await;
                quiet.expect_code(0);
                assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);
            }
            let (groups, _) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups);
        },
    );
}

/// A read that fails (here: the DC is down) commits nothing, exits 6 saying the
/// next run reads everything, and the next run does.
#[test]
fn a_failed_read_commits_nothing_and_the_next_run_reads_everything() {
    with_dc(
        "a_failed_read_commits_nothing_and_the_next_run_reads_everything",
        |mut dc| async move {
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("dirsync.toml", &config(&dc, &mock, ""));
            dirsync(&env, &["sync"]).await.expect_code(0);
            let before = cache(&env).await;

            dc.stop();
            let requests = mock.request_count().await;
            let failed = dirsync(&env, &["sync"]).await;
            failed.expect_code(6);
            assert!(
                failed.stderr.contains("the next run reads every entry"),
                "{}",
                failed.stderr
            );
            assert_eq!(
                mock.request_count().await,
                requests,
                "a failed read pushes nothing"
            );
            assert_eq!(cache(&env).await, before, "a failed read commits nothing");
            let status = dirsync(&env, &["status"]).await;
            assert!(
                status.stdout.contains("the next read is full"),
                "{}",
                status.stdout
            );

            dc.restart();
            let mut ldap = admin().await;
            set_members(&mut ldap, &staff("SRE"), true, &staff("Alice Example")).await;
            ldap.unbind().await.expect("unbind");
            let next = dirsync(&env, &["sync"]).await;
            next.expect_code(0);
            assert!(next.stderr.contains(FULL_READ), "{}", next.stderr);
            assert!(next.stderr.contains("the last read failed"), "{}", next.stderr);
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups);
            assert_eq!(cache(&env).await, entries);
        },
    );
}

/// The service with `watch = true` and no schedule: a change made on the DC reaches
/// the target through the poll of its USN.
#[test]
fn a_watched_domain_controller_change_reaches_the_target_without_a_schedule() {
    with_dc(
        "a_watched_domain_controller_change_reaches_the_target_without_a_schedule",
        |dc| async move {
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            let daemon = "\n[daemon]\nwatch = true\nwatch_poll = \"200ms\"\ndebounce = \"200ms\"\n\
                      run_at_start = true\nshutdown_grace = \"5s\"\n";
            env.write("dirsync.toml", &config(&dc, &mock, daemon));
            let child = env
                .command(&["run"])
                .env("TEST_OFFICE_KEY", KEY)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn");
            let sre = dc.guids["sre"].clone();
            let wait_for = |what: &'static str, want: BTreeSet<String>| {
                let mock = mock.clone();
                let sre = sre.clone();
                async move {
                    let started = Instant::now();
                    while mock.groups().get(&sre) != Some(&want) {
                        assert!(
                            started.elapsed() < Duration::from_secs(60),
                            "timed out waiting for {what}"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    started.elapsed()
                }
            };
            let ids = |names: &[&str]| {
                names
                    .iter()
                    .map(|n| dc.guids[*n].clone())
                    .collect::<BTreeSet<_>>()
            };
            wait_for("the sync at start", ids(&["bob", "dave"])).await;

            let mut ldap = admin().await;
            set_members(&mut ldap, &staff("SRE"), true, &staff("Alice Example")).await;
            let took = wait_for("the change on the target", ids(&["alice", "bob", "dave"])).await;
            eprintln!("the change reached the target {took:?} after it was made");
            ldap.unbind().await.expect("unbind");

            let stderr = common::stop_service(child).await;
            assert!(stderr.contains("The directory changed"), "{stderr}");
            mock.assert_no_violations();
        },
    );
}

/// A bind identity that is not an administrator cannot read the Deleted Objects
/// container (Microsoft KB 892806), so a search for what changed returns no
/// tombstone: every read that finds a change is full, with a warning naming the
/// container and the grant, and a deleted user leaves the cache as a full read
/// would.
#[test]
fn a_bind_identity_that_cannot_see_deletions_reads_everything() {
    with_dc(
        "a_bind_identity_that_cannot_see_deletions_reads_everything",
        |dc| async move {
            let dir = dc
                .password_file()
                .parent()
                .expect("the DC's directory")
                .to_owned();
            common::samba::run(
                std::process::Command::new("samba-tool")
                    .args(["user", "create", "reader", "Reader-Pass-1", "-H"])
                    .arg(dir.join("dc/private/sam.ldb"))
                    .arg("-s")
                    .arg(dir.join("dc/etc/smb.conf")),
            );
            let mock = GroupMembersApi::start().await;
            let env = Env::new();
            env.write("reader.pw", "Reader-Pass-1");
            let reader = config(&dc, &mock, "")
                .replace(
                    &format!("bind_dn = \"{ADMIN_DN}\""),
                    "bind_dn = \"reader@corp.example.com\"",
                )
                .replace(
                    &format!("bind_password_file = \"{}\"", dc.password_file().display()),
                    &format!("bind_password_file = \"{}\"", env.path("reader.pw").display()),
                );
            assert!(reader.contains("reader@corp"), "{reader}");
            env.write("dirsync.toml", &reader);
            let mut ldap = admin().await;
            let lone = staff("Lone Example");
            add_user(&mut ldap, &lone, "lone").await;
            dirsync(&env, &["sync"]).await.expect_code(0);
            let check = dirsync(&env, &["check"]).await;
            assert!(
                check.stdout.contains(&format!(
                    "source problem: the bind identity cannot read `CN=Deleted Objects,{DOMAIN}`"
                )),
                "{}\n{}",
                check.stdout,
                check.stderr
            );

            ok("delete", ldap.delete(&lone).await).await;
            ldap.unbind().await.expect("unbind");
            let run = dirsync(&env, &["sync"]).await;
            run.expect_code(0);
            assert!(run.stderr.contains(FULL_READ), "{}", run.stderr);
            assert!(
                run.stderr.contains(&format!(
                    "the bind identity cannot read `CN=Deleted Objects,{DOMAIN}`"
                )),
                "{}",
                run.stderr
            );
            let (groups, entries) = oracle(&dc).await;
            assert_eq!(mock.groups(), groups);
            assert_eq!(cache(&env).await, entries, "the deleted user left the cache");

            // The Administrator reads them: `check` says so.
            env.write("dirsync.toml", &config(&dc, &mock, ""));
            let check = dirsync(&env, &["check"]).await;
            assert!(
                check
                    .stdout
                    .contains("source: deleted objects readable: a read of what changed sees deletions"),
                "{}\n{}",
                check.stdout,
                check.stderr
            );
        },
    );
}
