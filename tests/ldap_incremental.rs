//! End to end: an OpenLDAP directory with the `syncprov` overlay (a real slapd)
//! synced by the real binary to a mock of the group-members API through content
//! synchronisation refreshes. The oracle of every case is a `resync` from an empty
//! state database into a second mock: an incremental run must leave the target, and
//! the entry cache, as a full read would.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::group_members::{GroupMembersApi, KEY};
use common::slapd::{BASE, Options, READER_DN, Slapd, admin, fixture, refint_settled};
use common::{Env, Run};
use ldap3::Mod;

const UNSUPPORTED: &str = "every run reads the whole directory: enable the syncprov overlay";
const FULL_REFRESH: &str = "Refreshing every entry of the source.";

/// A config reading `url` as `cn=reader`, users from `ou=people` only, pushing every
/// group to `mock` by entryUUID with its members named by entryUUID.
fn config(url: &str, mock: &GroupMembersApi, extra_source: &str) -> String {
    format!(
        r#"
state_db = "state.db"

[source]
kind = "ldap"
preset = "openldap"
url = "{url}"
base_dn = "{BASE}"
bind_dn = "{READER_DN}"
bind_password_file = "reader.pw"
timeout = "20s"
{extra_source}

[source.users]
base_dn = "ou=people,{BASE}"

[targets.office]
preset = "onlyoffice-group-members"
base_url = "{}"
timeout = "5s"

[targets.office.auth]
value_env = "TEST_OFFICE_KEY"

[[targets.office.groups.rules]]
match = ".*"
target_id = "{{{{ group.id }}}}"

[targets.office.users]
id_attribute = "id"
"#,
        mock.uri()
    )
}

fn setup(server: &Slapd, mock: &GroupMembersApi, extra_source: &str) -> Env {
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    env.write("dirsync.toml", &config(&server.url(), mock, extra_source));
    env
}

async fn dirsync(env: &Env, args: &[&str]) -> Run {
    let mut cmd = env.command(args);
    cmd.env("TEST_OFFICE_KEY", KEY);
    Run::from(cmd.output().await.expect("run dirsync"))
}

fn syncprov() -> Options {
    Options {
        syncprov: true,
        ..Options::default()
    }
}

type Groups = BTreeMap<String, BTreeSet<String>>;

/// The entry cache of a state database: (kind, id) → (DN, attributes).
async fn cache(env: &Env) -> BTreeMap<(String, String), (String, String)> {
    let db = common::sqlite(&env.db()).await;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT kind, id, dn, attrs FROM source_entries")
            .fetch_all(&db)
            .await
            .expect("read the cache");
    db.close().await;
    rows.into_iter()
        .map(|(k, id, dn, a)| ((k, id), (dn, a)))
        .collect()
}

/// What a `resync` from an empty state database pushes for the directory as it is,
/// and the entry cache it keeps.
async fn oracle_with_cache(server: &Slapd) -> (Groups, BTreeMap<(String, String), (String, String)>) {
    oracle_of(server, "").await
}

/// [`oracle_with_cache`] with `extra_source` in the config.
async fn oracle_of(
    server: &Slapd,
    extra_source: &str,
) -> (Groups, BTreeMap<(String, String), (String, String)>) {
    let mock = GroupMembersApi::start().await;
    let env = setup(server, &mock, extra_source);
    dirsync(&env, &["resync"]).await.expect_code(0);
    mock.assert_no_violations();
    (mock.groups(), cache(&env).await)
}

async fn oracle(server: &Slapd) -> Groups {
    oracle_with_cache(server).await.0
}

fn person(uid: &str) -> String {
    format!("uid={uid},ou=people,{BASE}")
}

fn group(cn: &str) -> String {
    format!("cn={cn},ou=groups,{BASE}")
}

/// A modify (mail), a delete, a rename, a move out of the users' base, an add, and
/// group member changes.
async fn change_the_directory(server: &Slapd) {
    let mut admin = admin(server).await;
    admin
        .modify(
            &person("carol"),
            vec![Mod::Replace("mail", HashSet::from(["carol.new@example.com"]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("modify carol");
    admin
        .delete(&person("dave"))
        .await
        .and_then(|r| r.success())
        .expect("delete dave");
    admin
        .modifydn(&person("erin"), "uid=erin2", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename erin");
    admin
        .modifydn(
            &person("bob"),
            "uid=bob",
            true,
            Some(&format!("ou=groups,{BASE}")),
        )
        .await
        .and_then(|r| r.success())
        .expect("move bob out of ou=people");
    admin
        .add(
            &person("kim"),
            vec![
                ("objectClass", HashSet::from(["inetOrgPerson"])),
                ("uid", HashSet::from(["kim"])),
                ("cn", HashSet::from(["Kim Example"])),
                ("sn", HashSet::from(["Example"])),
                ("mail", HashSet::from(["kim@example.com"])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .expect("add kim");
    let kim = person("kim");
    admin
        .modify(
            &group("sre"),
            vec![Mod::Add("uniqueMember", HashSet::from([kim.as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("add kim to sre");
    let judy = person("judy");
    admin
        .modify(
            &group("company"),
            vec![Mod::Delete("member", HashSet::from([judy.as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("remove judy from company");
    admin.unbind().await.expect("unbind");
}

#[tokio::test]
async fn an_unchanged_directory_sends_nothing_and_changes_push_what_a_resync_would() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");

    let first = dirsync(&env, &["sync"]).await;
    first.expect_code(0);
    assert!(first.stderr.contains(FULL_REFRESH), "{}", first.stderr);
    assert!(!first.stderr.contains(UNSUPPORTED), "{}", first.stderr);
    let before = oracle(&server).await;
    assert_eq!(mock.groups(), before, "the first sync pushes everything");
    let requests = mock.request_count().await;
    assert_eq!(requests, before.len(), "one request per group");

    let quiet = dirsync(&env, &["sync"]).await;
    quiet.expect_code(0);
    assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);
    assert!(
        quiet.stderr.contains("Source unchanged; nothing to plan."),
        "{}",
        quiet.stderr
    );
    assert_eq!(mock.request_count().await, requests, "no request");

    change_the_directory(&server).await;
    let changed = dirsync(&env, &["sync", "--allow-removals"]).await;
    changed.expect_code(0);
    assert!(
        changed.stderr.contains("mode=\"incremental\""),
        "{}",
        changed.stderr
    );
    let (after, full_cache) = oracle_with_cache(&server).await;
    assert_ne!(after, before, "the changes reach the target");
    assert_eq!(mock.groups(), after, "what a resync pushes");
    let cached = cache(&env).await;
    assert_eq!(cached, full_cache, "the cache is what a full read keeps");
    let carol = &cached[&("user".to_owned(), common::uuid(3))];
    assert!(carol.1.contains("carol.new@example.com"), "{carol:?}");
    assert!(mock.request_count().await > requests);
    mock.assert_no_violations();

    let status = dirsync(&env, &["status"]).await;
    status.expect_code(0);
    assert!(
        status.stdout.contains("last read incremental"),
        "{}",
        status.stdout
    );

    // The cache moved on with the refresh: the next run names no change.
    let requests = mock.request_count().await;
    let again = dirsync(&env, &["sync"]).await;
    again.expect_code(0);
    assert!(again.stderr.contains("mode=\"unchanged\""), "{}", again.stderr);
    assert_eq!(mock.request_count().await, requests);
}

/// Adds an entry of these object class and attributes, or fails the test.
async fn add(admin: &mut ldap3::Ldap, dn: &str, class: &str, attrs: &[(&str, &str)]) {
    let mut all = vec![("objectClass", HashSet::from([class]))];
    all.extend(attrs.iter().map(|(name, value)| (*name, HashSet::from([*value]))));
    admin
        .add(dn, all)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

/// Adds `ou=sub` under the users' base with sam in it, a member of engineering;
/// returns their DNs.
async fn sam_in_a_unit(admin: &mut ldap3::Ldap) -> (String, String) {
    let sub = format!("ou=sub,ou=people,{BASE}");
    let sam = sam_in(admin, &sub).await;
    (sub, sam)
}

/// Adds the organizational unit `unit` with sam in it, a member of engineering;
/// returns sam's DN.
async fn sam_in(admin: &mut ldap3::Ldap, unit: &str) -> String {
    let ou = unit
        .split(',')
        .next()
        .and_then(|rdn| rdn.strip_prefix("ou="))
        .expect("ou=…");
    add(admin, unit, "organizationalUnit", &[("ou", ou)]).await;
    let sam = format!("uid=sam,{unit}");
    let person = [("uid", "sam"), ("cn", "Sam Example"), ("sn", "Example")];
    add(admin, &sam, "inetOrgPerson", &person).await;
    add_member(admin, &group("engineering"), &sam).await;
    sam
}

async fn add_member(admin: &mut ldap3::Ldap, group: &str, member: &str) {
    admin
        .modify(group, vec![Mod::Add("member", HashSet::from([member]))])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add {member} to {group}: {e}"));
}

/// A sync, then the target and the entry cache compared with a fresh resync's.
async fn sync_and_compare(env: &Env, mock: &GroupMembersApi, server: &Slapd, what: &str) -> Run {
    let run = dirsync(env, &["sync", "--allow-removals"]).await;
    run.expect_code(0);
    let (groups, entries) = oracle_with_cache(server).await;
    assert_eq!(
        mock.groups(),
        groups,
        "{what}: the target differs from a resync's\n{}",
        run.stderr
    );
    assert_eq!(
        cache(env).await,
        entries,
        "{what}: the cache differs from a full read's"
    );
    mock.assert_no_violations();
    run
}

/// A users filter on memberOf: the memberof overlay writes a user's memberOf without
/// changing the user's entryCSN, so a refresh never names the user who joined the
/// group. Every refresh that finds a change reads everything, and the user comes
/// into the source as a resync would bring them.
#[tokio::test]
async fn a_search_that_names_member_of_reads_everything_when_anything_changed() {
    let opts = Options {
        syncprov: true,
        memberof: true,
        ..Options::default()
    };
    let server = Slapd::start(&fixture("ldap-groups.ldif"), opts);
    let mut admin = admin(&server).await;
    let alice = person("alice");
    let attrs = [("cn", "filtered"), ("member", alice.as_str())];
    add(&mut admin, &group("filtered"), "groupOfNames", &attrs).await;
    let filtered = |mock: &GroupMembersApi| {
        let env = setup(&server, mock, "");
        let users = format!("[source.users]\nbase_dn = \"ou=people,{BASE}\"");
        let text = std::fs::read_to_string(env.path("dirsync.toml")).expect("config");
        let filter = format!("(&(objectClass=inetOrgPerson)(memberOf={}))", group("filtered"));
        env.write(
            "dirsync.toml",
            &text.replace(&users, &format!("{users}\nfilter = \"{filter}\"")),
        );
        env
    };
    let mock = GroupMembersApi::start().await;
    let env = filtered(&mock);
    let first = dirsync(&env, &["sync"]).await;
    first.expect_code(0);
    assert!(
        first.stderr.contains("names memberOf"),
        "the warning:\n{}",
        first.stderr
    );
    let quiet = dirsync(&env, &["sync"]).await;
    quiet.expect_code(0);
    assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);

    add_member(&mut admin, &group("filtered"), &person("bob")).await;
    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(0);
    let oracle = GroupMembersApi::start().await;
    let fresh = filtered(&oracle);
    dirsync(&fresh, &["resync"]).await.expect_code(0);
    let entries = cache(&fresh).await;
    assert!(
        entries.values().any(|(dn, _)| *dn == person("bob")),
        "bob joined the source: {entries:?}"
    );
    assert_eq!(cache(&env).await, entries, "the cache differs from a full read's");
    assert_eq!(
        mock.groups(),
        oracle.groups(),
        "the target differs from a resync's"
    );
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert!(run.stderr.contains("names memberOf"), "{}", run.stderr);
    mock.assert_no_violations();
}

/// An organizational unit moved out of the users' base takes its users out of the
/// source, and moved back in brings them back: the server names only the unit as
/// gone, so the read is full. Edited in place, it moves nothing.
#[tokio::test]
async fn an_organizational_unit_moved_out_of_the_base_takes_its_users_out() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let (sub, _) = sam_in_a_unit(&mut admin).await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), oracle(&server).await);

    // Edited in place: the server names it as gone, and it moved nothing.
    let m = Mod::Replace("description", HashSet::from(["the sub unit"]));
    admin
        .modify(&sub, vec![m])
        .await
        .and_then(|r| r.success())
        .expect("describe ou=sub");
    let run = sync_and_compare(&env, &mock, &server, "ou=sub edited").await;
    assert!(!run.stderr.contains(FULL_REFRESH), "{}", run.stderr);

    admin
        .modifydn(&sub, "ou=sub", true, Some(BASE))
        .await
        .and_then(|r| r.success())
        .expect("move ou=sub out of ou=people");
    let run = sync_and_compare(&env, &mock, &server, "ou=sub moved out").await;
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert!(
        run.stderr.contains("moved with entries the searches return"),
        "{}",
        run.stderr
    );
    assert!(
        !cache(&env).await.values().any(|(dn, _)| dn.contains("uid=sam")),
        "sam left the source"
    );

    // Edited out there (the groups' base, the whole directory, holds it): sam is
    // outside the users' base, so it moved nothing.
    let m = Mod::Replace("description", HashSet::from(["moved out"]));
    admin
        .modify(&format!("ou=sub,{BASE}"), vec![m])
        .await
        .and_then(|r| r.success())
        .expect("describe ou=sub out there");
    let run = sync_and_compare(&env, &mock, &server, "ou=sub edited out there").await;
    assert!(!run.stderr.contains(FULL_REFRESH), "{}", run.stderr);

    // Moved back in: sam comes back, though the server names only the unit.
    admin
        .modifydn(
            &format!("ou=sub,{BASE}"),
            "ou=sub",
            true,
            Some(&format!("ou=people,{BASE}")),
        )
        .await
        .and_then(|r| r.success())
        .expect("move ou=sub back into ou=people");
    admin.unbind().await.expect("unbind");
    let run = sync_and_compare(&env, &mock, &server, "ou=sub moved back in").await;
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert!(
        cache(&env).await.values().any(|(dn, _)| dn.contains("uid=sam")),
        "sam is back in the source"
    );
}

/// An organizational unit renamed inside the users' base moves its users to new DNs;
/// the server names only the unit, as gone, and the read is full, so the cache holds
/// their new DNs. Without referential integrity the groups keep naming the old
/// DNs, which name nobody; with it, they name the new ones, and a later edit of such
/// a group keeps its moved members.
async fn rename_a_unit_inside_the_base(refint: bool) {
    let opts = Options { refint, ..syncprov() };
    let server = Slapd::start(&fixture("ldap-groups.ldif"), opts);
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let (sub, sam) = sam_in_a_unit(&mut admin).await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), oracle(&server).await);

    admin
        .modifydn(&sub, "ou=team", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename ou=sub");
    if refint {
        refint_settled(&mut admin, &sam).await;
    }
    let run = sync_and_compare(&env, &mock, &server, "ou=sub renamed").await;
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert!(
        run.stderr.contains("moved with entries the searches return"),
        "the log says why: {}",
        run.stderr
    );
    assert!(
        cache(&env)
            .await
            .values()
            .any(|(dn, _)| dn.starts_with("uid=sam,ou=team,")),
        "sam's new DN is kept"
    );

    // An edit of a group naming sam: read incrementally, sam stays as he was.
    admin
        .modify(
            &group("engineering"),
            vec![Mod::Replace("description", HashSet::from(["edited"]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("edit engineering");
    admin.unbind().await.expect("unbind");
    let run = sync_and_compare(&env, &mock, &server, "engineering edited").await;
    assert!(!run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
}

#[tokio::test]
async fn an_organizational_unit_renamed_inside_the_base_moves_its_users() {
    rename_a_unit_inside_the_base(false).await;
}

#[tokio::test]
async fn with_referential_integrity_an_organizational_unit_renamed_inside_the_base_keeps_its_members() {
    rename_a_unit_inside_the_base(true).await;
}

/// A bind identity that reads only the users' and the groups' bases cannot see an
/// organizational unit moved out to an archive branch: the server names the unit as
/// gone, the lookup finds nothing, and the unit's DN, which held kept users, is gone:
/// the read is full and its users leave the source.
#[tokio::test]
async fn an_organizational_unit_moved_where_the_reader_cannot_see_takes_its_users_out() {
    moved_out_of_sight(false).await;
}

/// The same, with the suffix entry disclosed: the server refuses the lookup there
/// (insufficientAccess) instead of saying it does not exist.
#[tokio::test]
async fn an_organizational_unit_moved_where_the_reader_may_not_search_takes_its_users_out() {
    moved_out_of_sight(true).await;
}

async fn moved_out_of_sight(disclose_suffix: bool) {
    let opts = Options {
        confined: true,
        disclose_suffix,
        ..syncprov()
    };
    let server = Slapd::start(&fixture("ldap-groups.ldif"), opts);
    let mock = GroupMembersApi::start().await;
    let groups_base = format!("\n[source.groups]\nbase_dn = \"ou=groups,{BASE}\"\n");
    let env = setup(&server, &mock, &groups_base);
    let mut admin = admin(&server).await;
    add(
        &mut admin,
        &format!("ou=archive,{BASE}"),
        "organizationalUnit",
        &[("ou", "archive")],
    )
    .await;
    let (sub, _) = sam_in_a_unit(&mut admin).await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), oracle_of(&server, &groups_base).await.0);

    // A user added and deleted between two runs is not found either; the units of the
    // kept entries are all there, so the read stays incremental.
    let kim = person("kim");
    add(
        &mut admin,
        &kim,
        "inetOrgPerson",
        &[("uid", "kim"), ("cn", "Kim"), ("sn", "Example")],
    )
    .await;
    admin
        .delete(&kim)
        .await
        .and_then(|r| r.success())
        .expect("delete kim");
    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(0);
    assert!(!run.stderr.contains(FULL_REFRESH), "{}", run.stderr);

    admin
        .modifydn(&sub, "ou=sub", true, Some(&format!("ou=archive,{BASE}")))
        .await
        .and_then(|r| r.success())
        .expect("move ou=sub to the archive");
    admin.unbind().await.expect("unbind");
    let run = dirsync(&env, &["sync", "--allow-removals"]).await;
    run.expect_code(0);
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert!(
        run.stderr.contains("is gone or can no longer be read"),
        "{}",
        run.stderr
    );
    let (groups, entries) = oracle_of(&server, &groups_base).await;
    assert_eq!(mock.groups(), groups, "{}", run.stderr);
    assert_eq!(cache(&env).await, entries);
    assert!(
        !entries.values().any(|(dn, _)| dn.contains("uid=sam")),
        "sam left the source"
    );
    mock.assert_no_violations();
}

/// A refresh names as gone an entry of the users' base that the search never
/// returned when it changes (a device), and a user added and deleted between two
/// runs: neither makes the read full.
#[tokio::test]
async fn entries_the_searches_never_returned_named_as_gone_are_no_reason_to_read_everything() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let printer = format!("cn=printer,ou=people,{BASE}");
    add(&mut admin, &printer, "device", &[("cn", "printer")]).await;
    dirsync(&env, &["sync"]).await.expect_code(0);

    let m = Mod::Replace("description", HashSet::from(["on the second floor"]));
    admin
        .modify(&printer, vec![m])
        .await
        .and_then(|r| r.success())
        .expect("describe the device");
    let passing = person("pat");
    let pat = [("uid", "pat"), ("cn", "Pat Example"), ("sn", "Example")];
    add(&mut admin, &passing, "inetOrgPerson", &pat).await;
    admin
        .delete(&passing)
        .await
        .and_then(|r| r.success())
        .expect("delete pat");
    let judy = person("judy");
    admin
        .modify(
            &group("company"),
            vec![Mod::Delete("member", HashSet::from([judy.as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("remove judy from company");
    admin.unbind().await.expect("unbind");
    let run = sync_and_compare(&env, &mock, &server, "a device changed, pat came and went").await;
    assert!(run.stderr.contains("mode=\"incremental\""), "{}", run.stderr);
    assert!(!run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
}

/// With referential integrity, renaming or deleting a user or a nested group rewrites
/// the member values naming it and the refresh does not name those groups: they are
/// read again, so renamed entries stay members and a deleted one's DN, used again,
/// names nobody's old groups.
#[tokio::test]
async fn with_referential_integrity_a_renamed_member_stays_in_its_groups() {
    let opts = Options {
        refint: true,
        ..syncprov()
    };
    let server = Slapd::start(&fixture("ldap-groups.ldif"), opts);
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let before = mock.groups();
    assert_eq!(before, oracle(&server).await);

    let mut admin = admin(&server).await;
    admin
        .modifydn(&person("alice"), "uid=alice2", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename alice");
    admin
        .modifydn(&group("sre"), "cn=sre2", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename sre");
    refint_settled(&mut admin, &person("alice")).await;
    refint_settled(&mut admin, &group("sre")).await;
    admin.unbind().await.expect("unbind");
    let run = sync_and_compare(&env, &mock, &server, "alice and sre renamed").await;
    assert!(run.stderr.contains("mode=\"incremental\""), "{}", run.stderr);
    assert_eq!(mock.groups(), before, "renaming moves no member");

    // Bob deleted (the server drops him from engineering), then someone else added
    // under his DN: the newcomer is in no group.
    let mut admin = common::slapd::admin(&server).await;
    admin
        .delete(&person("bob"))
        .await
        .and_then(|r| r.success())
        .expect("delete bob");
    refint_settled(&mut admin, &person("bob")).await;
    sync_and_compare(&env, &mock, &server, "bob deleted").await;
    let newcomer = [("uid", "bob"), ("cn", "Another Bob"), ("sn", "Example")];
    add(&mut admin, &person("bob"), "inetOrgPerson", &newcomer).await;
    admin.unbind().await.expect("unbind");
    sync_and_compare(&env, &mock, &server, "another bob added").await;
}

/// With referential integrity, an entry that moves into a search is named by the
/// groups that named it outside, rewritten without the refresh naming them, and by
/// a DN the cache never held: the server is asked which groups name it. A user made
/// outside the users' base, put in a group, then moved in; and a user moved out and
/// back in.
#[tokio::test]
async fn with_referential_integrity_a_user_moved_into_the_base_keeps_the_groups_naming_them() {
    let opts = Options {
        refint: true,
        ..syncprov()
    };
    let server = Slapd::start(&fixture("ldap-groups.ldif"), opts);
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let sam = sam_in(&mut admin, &format!("ou=staging,{BASE}")).await;
    dirsync(&env, &["sync"]).await.expect_code(0);

    admin
        .modifydn(&sam, "uid=sam", true, Some(&format!("ou=people,{BASE}")))
        .await
        .and_then(|r| r.success())
        .expect("move sam in");
    refint_settled(&mut admin, &sam).await;
    sync_and_compare(&env, &mock, &server, "sam moved in").await;

    let outside = format!("uid=alice,{BASE}");
    admin
        .modifydn(&person("alice"), "uid=alice", true, Some(BASE))
        .await
        .and_then(|r| r.success())
        .expect("move alice out");
    refint_settled(&mut admin, &person("alice")).await;
    sync_and_compare(&env, &mock, &server, "alice moved out").await;
    admin
        .modifydn(&outside, "uid=alice", true, Some(&format!("ou=people,{BASE}")))
        .await
        .and_then(|r| r.success())
        .expect("move alice back");
    refint_settled(&mut admin, &outside).await;
    admin.unbind().await.expect("unbind");
    let run = sync_and_compare(&env, &mock, &server, "alice moved back").await;
    assert!(run.stderr.contains("mode=\"incremental\""), "{}", run.stderr);
}

/// A group entry holding another group entry, renamed: the server names only the
/// renamed group, and the one under it moved with it, so the read is full.
#[tokio::test]
async fn a_group_renamed_with_a_group_under_it_reads_everything() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let parent = group("parent");
    let alice = person("alice");
    add(
        &mut admin,
        &parent,
        "groupOfNames",
        &[("cn", "parent"), ("member", &alice)],
    )
    .await;
    let child = format!("cn=child,{parent}");
    let frank = person("frank");
    add(
        &mut admin,
        &child,
        "groupOfNames",
        &[("cn", "child"), ("member", &frank)],
    )
    .await;
    add_member(&mut admin, &group("ring-a"), &child).await;
    dirsync(&env, &["sync"]).await.expect_code(0);

    admin
        .modifydn(&parent, "cn=parent2", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename parent");
    admin.unbind().await.expect("unbind");
    let run = sync_and_compare(&env, &mock, &server, "parent renamed").await;
    assert!(
        run.stderr.contains("renamed or moved with kept entries under it"),
        "{}",
        run.stderr
    );
}

/// A group entry holding another group entry, moved out of the groups' base: the
/// server names the moved group as gone and not the one under it, which left with
/// it, so the read is full.
#[tokio::test]
async fn a_group_moved_out_of_the_base_with_a_group_under_it_reads_everything() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let groups_base = format!("\n[source.groups]\nbase_dn = \"ou=groups,{BASE}\"\n");
    let env = setup(&server, &mock, &groups_base);
    let mut admin = admin(&server).await;
    let parent = group("parent");
    add(
        &mut admin,
        &parent,
        "groupOfNames",
        &[("cn", "parent"), ("member", &person("alice"))],
    )
    .await;
    let child = format!("cn=child,{parent}");
    add(
        &mut admin,
        &child,
        "groupOfNames",
        &[("cn", "child"), ("member", &person("frank"))],
    )
    .await;
    dirsync(&env, &["sync"]).await.expect_code(0);

    admin
        .modifydn(&parent, "cn=parent", true, Some(BASE))
        .await
        .and_then(|r| r.success())
        .expect("move parent out of the groups' base");
    admin.unbind().await.expect("unbind");
    let run = dirsync(&env, &["sync", "--allow-removals"]).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("is named as gone with kept entries under it"),
        "{}",
        run.stderr
    );
    // Both left the source; the target keeps them (`removed_groups = "keep"`).
    assert!(run.stderr.contains("groups=8 "), "{}", run.stderr);
    let (_, entries) = oracle_of(&server, &groups_base).await;
    assert_eq!(cache(&env).await, entries, "the group under it left the cache");
    mock.assert_no_violations();
}

#[tokio::test]
async fn a_restarted_server_names_what_is_still_there_and_the_deletion_comes_out_right() {
    let mut server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);

    let mut admin = admin(&server).await;
    admin
        .delete(&person("heidi"))
        .await
        .and_then(|r| r.success())
        .expect("delete heidi");
    admin.unbind().await.expect("unbind");
    // The session log is in memory: after a restart the server runs a present phase.
    server.stop();
    server.restart();

    let run = dirsync(&env, &["sync", "--allow-removals"]).await;
    run.expect_code(0);
    assert!(run.stderr.contains("mode=\"incremental\""), "{}", run.stderr);
    assert_eq!(mock.groups(), oracle(&server).await);
}

/// After a restart the server runs a present phase, which names neither an
/// organizational unit renamed inside the users' base nor the users under it (their
/// entryCSN did not move): the unit's old DN, which holds kept users, is gone, so the
/// read is full and the cache holds their new DNs.
#[tokio::test]
async fn a_present_phase_after_a_unit_was_renamed_reads_everything() {
    let mut server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let (sub, _) = sam_in_a_unit(&mut admin).await;
    dirsync(&env, &["sync"]).await.expect_code(0);

    admin
        .modifydn(&sub, "ou=team", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename ou=sub");
    admin.unbind().await.expect("unbind");
    server.stop();
    server.restart();
    let run = sync_and_compare(&env, &mock, &server, "ou=sub renamed, then a restart").await;
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert!(
        cache(&env)
            .await
            .values()
            .any(|(dn, _)| dn.starts_with("uid=sam,ou=team,")),
        "sam's new DN is kept"
    );
}

/// After a restart the server runs a present phase, which names the entries of an
/// organizational unit moved into the base as present, never as changed: the read
/// is full, and they come into the source.
#[tokio::test]
async fn a_present_phase_naming_entries_the_cache_lacks_reads_everything() {
    let mut server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let mut admin = admin(&server).await;
    let staging = format!("ou=staging,{BASE}");
    add(&mut admin, &staging, "organizationalUnit", &[("ou", "staging")]).await;
    let person = [("uid", "sam"), ("cn", "Sam Example"), ("sn", "Example")];
    add(
        &mut admin,
        &format!("uid=sam,{staging}"),
        "inetOrgPerson",
        &person,
    )
    .await;
    dirsync(&env, &["sync"]).await.expect_code(0);

    admin
        .modifydn(&staging, "ou=staging", true, Some(&format!("ou=people,{BASE}")))
        .await
        .and_then(|r| r.success())
        .expect("move ou=staging into ou=people");
    admin.unbind().await.expect("unbind");
    server.stop();
    server.restart();
    let run = sync_and_compare(&env, &mock, &server, "ou=staging moved in before a restart").await;
    assert!(
        run.stderr.contains("as present, which the kept entries lack"),
        "{}",
        run.stderr
    );
    assert!(
        cache(&env).await.values().any(|(dn, _)| dn.contains("uid=sam")),
        "sam came into the source"
    );
}

#[tokio::test]
async fn a_push_that_failed_is_planned_again_from_the_cache_while_the_directory_is_unchanged() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let sre = common::group_uuid(3);
    mock.lock().fail.insert(sre.clone());
    dirsync(&env, &["sync"]).await.expect_code(3);

    mock.lock().fail.clear();
    let before = mock.request_count().await;
    let retry = dirsync(&env, &["sync"]).await;
    retry.expect_code(0);
    assert!(retry.stderr.contains("mode=\"unchanged\""), "{}", retry.stderr);
    assert!(
        retry
            .stderr
            .contains("reading it again for the targets whose last plan was not confirmed"),
        "{}",
        retry.stderr
    );
    assert_eq!(mock.request_count().await, before + 1, "only the failed group");
    assert_eq!(mock.accepted().last(), Some(&sre));
    assert_eq!(mock.groups(), oracle(&server).await);
}

#[tokio::test]
async fn a_run_killed_after_its_cache_commit_is_finished_by_the_next_run_from_the_cache() {
    let mut ldif = common::slapd::people_ldif(5);
    for k in 0..60 {
        ldif.push_str(&format!(
            "dn: cn=team{k},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: team{k}\n\
             member: uid=user1,ou=people,{BASE}\nmember: uid=user{},ou=people,{BASE}\n\
             entryUUID: {}\n\n",
            2 + k % 4,
            common::group_uuid(k)
        ));
    }
    let server = Slapd::start(&ldif, syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);

    // user1 leaves every group: the refresh's cache commit comes before the push,
    // which is killed part way.
    let mut admin = admin(&server).await;
    admin
        .delete(&format!("uid=user1,ou=people,{BASE}"))
        .await
        .and_then(|r| r.success())
        .expect("delete user1");
    admin.unbind().await.expect("unbind");
    mock.lock().delay = std::time::Duration::from_millis(40);
    let mut child = env
        .command(&["sync", "--allow-removals"])
        .env("TEST_OFFICE_KEY", KEY)
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while mock.accepted().len() < 60 + 10 {
        assert!(tokio::time::Instant::now() < deadline, "the run made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    assert!(mock.accepted().len() < 2 * 60, "killed before the end");
    mock.lock().delay = std::time::Duration::ZERO;

    // The directory names no change since the committed cookies, and the target is
    // not clean: it is planned from the cache.
    let next = dirsync(&env, &["sync", "--allow-removals"]).await;
    next.expect_code(0);
    assert!(next.stderr.contains("mode=\"unchanged\""), "{}", next.stderr);
    assert!(
        next.stderr
            .contains("reading it again for the targets whose last plan was not confirmed"),
        "{}",
        next.stderr
    );
    assert_eq!(mock.groups(), oracle(&server).await);
    let after = dirsync(&env, &["sync"]).await;
    assert!(
        after.stderr.contains("Source unchanged; nothing to plan."),
        "{}",
        after.stderr
    );
}

/// The source state as stored: generation and token.
async fn source_state(env: &Env) -> (i64, String) {
    let db = common::sqlite(&env.db()).await;
    let row = sqlx::query_as("SELECT generation, token FROM source_state")
        .fetch_one(&db)
        .await
        .expect("read the source state");
    db.close().await;
    row
}

#[tokio::test]
async fn a_run_killed_between_its_read_and_its_commit_leaves_cookies_and_cache_as_they_were() {
    // Enough users that building and planning after the refresh take about half a
    // second (debug build): the kill lands in that window, which the test checks.
    let mut ldif = common::slapd::people_ldif(5_000);
    for k in 0..3 {
        ldif.push_str(&format!(
            "dn: cn=team{k},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: team{k}\n"
        ));
        for u in (1 + k..=5_000).step_by(50) {
            ldif.push_str(&format!("member: uid=user{u},ou=people,{BASE}\n"));
        }
        ldif.push_str(&format!("entryUUID: {}\n\n", common::group_uuid(k)));
    }
    let server = Slapd::start(
        &ldif,
        Options {
            size_limit: 50_000,
            ..syncprov()
        },
    );
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let (state, kept) = (source_state(&env).await, cache(&env).await);
    let pushed = mock.request_count().await;

    // A member leaves team0; the run that reads it is killed once the refresh is in.
    let mut admin = admin(&server).await;
    admin
        .modify(
            &group("team0"),
            vec![Mod::Delete("member", HashSet::from([person("user1").as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("remove user1 from team0");
    admin.unbind().await.expect("unbind");
    let mut child = env
        .command(&["sync"])
        .env("TEST_OFFICE_KEY", KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().expect("stderr")));
    let mut seen = String::new();
    while let Some(line) = lines.next_line().await.expect("stderr line") {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Read what changed in the source.") {
            child.start_kill().expect("SIGKILL");
            break;
        }
    }
    child.wait().await.expect("reaped");
    assert!(seen.contains("Read what changed in the source."), "{seen}");
    assert!(
        !seen.contains("Started a run."),
        "killed after the commit: {seen}"
    );
    assert_eq!(mock.request_count().await, pushed, "nothing was pushed");
    assert_eq!(source_state(&env).await, state, "the cookies stay as they were");
    assert!(cache(&env).await == kept, "the entry cache stays as it was");

    // The next run refreshes from the same cookies and pushes the change.
    let next = dirsync(&env, &["sync"]).await;
    next.expect_code(0);
    assert!(
        next.stderr.contains("Read what changed in the source."),
        "{}",
        next.stderr
    );
    assert_eq!(mock.request_count().await, pushed + 1, "only team0");
    assert_eq!(mock.groups(), oracle(&server).await);
}

#[tokio::test]
async fn a_size_limit_that_stops_a_refresh_falls_back_to_paged_reads_with_a_warning() {
    let server = Slapd::start(
        &fixture("ldap-groups.ldif"),
        Options {
            syncprov: true,
            size_limit: 5,
            ..Options::default()
        },
    );
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "page_size = 3");
    for _ in 0..2 {
        let run = dirsync(&env, &["sync"]).await;
        run.expect_code(0);
        assert!(
            run.stderr
                .contains("limits dn.exact=\"<bind dn>\" size=unlimited"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("mode=\"full\""), "{}", run.stderr);
    }
    let oracle_mock = GroupMembersApi::start().await;
    let oracle_env = setup(&server, &oracle_mock, "page_size = 3");
    dirsync(&oracle_env, &["resync"]).await.expect_code(0);
    assert_eq!(mock.groups(), oracle_mock.groups());
    assert_eq!(mock.groups().len(), 8, "every group");
}

#[tokio::test]
async fn a_server_without_syncprov_is_read_whole_every_run_with_a_warning() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), Options::default());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");

    let first = dirsync(&env, &["sync"]).await;
    first.expect_code(0);
    assert_eq!(first.stderr.matches(UNSUPPORTED).count(), 1, "{}", first.stderr);
    assert_eq!(mock.groups(), oracle(&server).await);

    let mut admin = admin(&server).await;
    admin
        .delete(&person("heidi"))
        .await
        .and_then(|r| r.success())
        .expect("delete heidi");
    admin.unbind().await.expect("unbind");
    let second = dirsync(&env, &["sync", "--allow-removals"]).await;
    second.expect_code(0);
    assert_eq!(second.stderr.matches(UNSUPPORTED).count(), 1, "{}", second.stderr);
    assert!(second.stderr.contains("mode=\"full\""), "{}", second.stderr);
    assert_eq!(mock.groups(), oracle(&server).await);
    mock.assert_no_violations();

    let db = common::sqlite(&env.db()).await;
    let cached: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM source_entries")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(cached, 0, "no cache is kept");

    let check = dirsync(&env, &["check"]).await;
    check.expect_code(0);
    assert!(
        check
            .stdout
            .contains("source problem: the server does not offer content synchronisation"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("enable OpenLDAP's syncprov overlay"),
        "{}",
        check.stdout
    );
}

#[tokio::test]
async fn check_says_the_server_offers_content_synchronisation() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    let check = dirsync(&env, &["check"]).await;
    check.expect_code(0);
    assert!(check.stdout.contains("source problem:"), "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains("source: content synchronisation (RFC 4533) offered")
            && !check.stdout.contains("does not offer content synchronisation"),
        "{}",
        check.stdout
    );
}

#[tokio::test]
async fn a_corrupt_cookie_fails_the_run_before_any_request_and_the_next_run_reads_everything() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let requests = mock.request_count().await;
    let snapshot = env.snapshot().await;

    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
    let db = sqlx::SqlitePool::connect_with(opts).await.expect("open state db");
    sqlx::query("UPDATE source_state SET token = json_set(token, '$.users_cookie', 'not a cookie')")
        .execute(&db)
        .await
        .expect("corrupt the cookie");
    db.close().await;
    change_the_directory(&server).await;

    let failed = dirsync(&env, &["sync", "--allow-removals"]).await;
    failed.expect_code(6);
    assert!(failed.stderr.contains("holds no cookie"), "{}", failed.stderr);
    assert_eq!(mock.request_count().await, requests, "zero requests");
    assert_eq!(env.snapshot().await, snapshot, "snapshot unchanged");

    let status = dirsync(&env, &["status"]).await;
    assert!(
        status.stdout.contains("the next read is full"),
        "{}",
        status.stdout
    );

    let next = dirsync(&env, &["sync", "--allow-removals"]).await;
    next.expect_code(0);
    assert!(next.stderr.contains(FULL_REFRESH), "{}", next.stderr);
    assert!(next.stderr.contains("the last read failed"), "{}", next.stderr);
    assert_eq!(mock.groups(), oracle(&server).await, "converged");
    mock.assert_no_violations();

    let quiet = dirsync(&env, &["sync"]).await;
    quiet.expect_code(0);
    assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);
}

/// A cookie naming a state the server does not have (from another server, or ahead
/// of a server restored from a backup) fails the run before any request, with exit
/// code 6; the next run reads everything.
#[tokio::test]
async fn a_foreign_cookie_fails_the_run_before_any_request_and_the_next_run_reads_everything() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let requests = mock.request_count().await;
    let snapshot = env.snapshot().await;
    let entries = cache(&env).await;

    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
    let db = sqlx::SqlitePool::connect_with(opts).await.expect("open state db");
    let ahead = "rid=000,csn=29991231000000.000000Z#000000#000#000000";
    sqlx::query("UPDATE source_state SET token = json_set(token, '$.users_cookie', ?)")
        .bind(ahead)
        .execute(&db)
        .await
        .expect("a cookie from ahead of the server");
    db.close().await;
    change_the_directory(&server).await;

    let failed = dirsync(&env, &["sync", "--allow-removals"]).await;
    failed.expect_code(6);
    assert!(
        failed
            .stderr
            .contains("refuses the stored content synchronisation cookie"),
        "{}",
        failed.stderr
    );
    assert_eq!(mock.request_count().await, requests, "zero requests");
    assert_eq!(env.snapshot().await, snapshot, "snapshot unchanged");
    assert_eq!(cache(&env).await, entries, "cache unchanged");

    let next = dirsync(&env, &["sync", "--allow-removals"]).await;
    next.expect_code(0);
    assert!(next.stderr.contains(FULL_REFRESH), "{}", next.stderr);
    assert!(next.stderr.contains("the last read failed"), "{}", next.stderr);
    assert_eq!(mock.groups(), oracle(&server).await, "converged");
    mock.assert_no_violations();
}

/// A stored token that is not JSON (a damaged state database) is no token: the run
/// reads everything, with a warning, instead of failing every run.
#[tokio::test]
async fn a_stored_token_that_is_not_json_makes_the_read_full() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
    let db = sqlx::SqlitePool::connect_with(opts).await.expect("open state db");
    sqlx::query("UPDATE source_state SET token = '{not json'")
        .execute(&db)
        .await
        .expect("damage the token");
    db.close().await;
    change_the_directory(&server).await;

    let run = dirsync(&env, &["sync", "--allow-removals"]).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("The stored source token is not JSON"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(FULL_REFRESH), "{}", run.stderr);
    assert_eq!(mock.groups(), oracle(&server).await, "converged");
    let quiet = dirsync(&env, &["sync"]).await;
    quiet.expect_code(0);
    assert!(quiet.stderr.contains("mode=\"unchanged\""), "{}", quiet.stderr);
}

#[tokio::test]
async fn resync_and_full_read_every_refresh_every_entry() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), syncprov());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, "full_read_every = \"2s\"");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let requests = mock.request_count().await;

    let resync = dirsync(&env, &["resync"]).await;
    resync.expect_code(0);
    assert!(resync.stderr.contains(FULL_REFRESH), "{}", resync.stderr);
    assert!(
        resync.stderr.contains("a resync reads and plans everything"),
        "{}",
        resync.stderr
    );
    assert_eq!(
        mock.request_count().await,
        2 * requests,
        "a resync pushes everything"
    );

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let old = dirsync(&env, &["sync"]).await;
    old.expect_code(0);
    assert!(old.stderr.contains(FULL_REFRESH), "{}", old.stderr);
    assert!(
        old.stderr.contains("older than source.full_read_every (2s)"),
        "{}",
        old.stderr
    );
    assert_eq!(mock.request_count().await, 2 * requests, "nothing changed");

    // Within `full_read_every` of that full read, the cookies serve. (A longer
    // period, so that a slow machine cannot pass it between two runs; the period is
    // not part of what is read, so the cache stays valid.)
    env.write(
        "dirsync.toml",
        &config(&server.url(), &mock, "full_read_every = \"1h\""),
    );
    let quick = dirsync(&env, &["sync"]).await;
    quick.expect_code(0);
    assert!(quick.stderr.contains("mode=\"unchanged\""), "{}", quick.stderr);
}
