//! End to end: an OpenLDAP directory (a real slapd) synced by the real binary to a
//! mock of the group-members API, a read cut short by killing slapd, and `dirsync check`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::group_members::{GroupMembersApi, KEY};
use common::slapd::{BASE, Options, Proxy, READER_DN, Slapd, fixture, people_ldif};
use common::{Env, group_uuid, uuid};

/// A config reading `url` as `cn=reader`, pushing every group to `mock` by entryUUID.
fn config(url: &str, mock: &GroupMembersApi, page_size: u32) -> String {
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
page_size = {page_size}
timeout = "20s"

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

fn setup(server: &Slapd, mock: &GroupMembersApi, page_size: u32) -> Env {
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    env.write("dirsync.toml", &config(&server.url(), mock, page_size));
    env
}

async fn dirsync(env: &Env, args: &[&str]) -> common::Run {
    let mut cmd = env.command(args);
    cmd.env("TEST_OFFICE_KEY", KEY);
    common::Run::from(cmd.output().await.expect("run dirsync"))
}

/// tests/fixtures/ldap-groups.ldif, flattened: group id → member ids.
fn fixture_state() -> BTreeMap<String, BTreeSet<String>> {
    let groups: [(u64, &[u64]); 8] = [
        (0, &[1, 2, 3, 4, 5, 10]),
        (1, &[1, 2, 3, 4, 5]),
        (2, &[3, 4, 5]),
        (3, &[4, 5]),
        (4, &[6, 7]),
        (5, &[8, 9]),
        (6, &[8, 9]),
        (7, &[1]),
    ];
    groups
        .iter()
        .map(|(k, m)| (group_uuid(*k), m.iter().map(|n| uuid(*n)).collect()))
        .collect()
}

#[tokio::test]
async fn an_openldap_directory_reaches_the_group_members_api_and_stays_there() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), Options::default());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, 3);

    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(0);
    assert_eq!(mock.groups(), fixture_state(), "the target holds the directory");
    assert_eq!(mock.request_count().await, 8, "one request per group");
    mock.assert_no_violations();
    assert!(
        run.stderr.contains("ring-a, ring-b"),
        "the cycle is logged: {}",
        run.stderr
    );

    // Stable ids: an unchanged directory sends nothing.
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, 8);
}

#[tokio::test]
async fn slapd_killed_in_the_middle_of_a_read_aborts_the_run_before_any_request() {
    let mut ldif = people_ldif(2500);
    ldif.push_str("dn: cn=everyone,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: everyone\n");
    for i in 1..=2500 {
        ldif.push_str(&format!("member: uid=user{i},ou=people,dc=example,dc=com\n"));
    }
    ldif.push_str(&format!("entryUUID: {}\n", group_uuid(0)));
    let mut server = Slapd::start(&ldif, Options::default());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, 50);

    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups()[&group_uuid(0)].len(), 2500);
    let requests = mock.request_count().await;
    let snapshot = env.snapshot().await;
    assert_eq!(snapshot.len(), 1);

    // The next run reads through a proxy that stops passing slapd's answers after
    // 20,000 bytes: inside the second page of users (about 10 kB a page).
    let mut proxy = Proxy::start(server.port, 20_000).await;
    env.write(
        "dirsync.toml",
        &config(&format!("ldap://127.0.0.1:{}", proxy.port), &mock, 50),
    );
    let child = env
        .command(&["sync"])
        .env("TEST_OFFICE_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dirsync");
    proxy.paused().await;
    server.kill();
    proxy.release();
    let run = common::Run::from(child.wait_with_output().await.expect("dirsync ends"));

    run.expect_code(6);
    assert!(
        run.stderr.contains("the connection was lost after"),
        "a clear error: {}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, requests, "zero requests");
    assert_eq!(env.snapshot().await, snapshot, "snapshot unchanged");
}

#[tokio::test]
async fn check_reports_the_bind_the_counts_and_the_first_problems() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), Options::default());
    let mock = GroupMembersApi::start().await;
    let env = setup(&server, &mock, 500);

    let run = dirsync(&env, &["check"]).await;
    run.expect_code(0);
    let out = &run.stdout;
    assert!(
        out.contains(&format!("connected (plain), bound as {READER_DN}")),
        "{out}"
    );
    assert!(out.contains("source: 10 users, 8 groups"), "{out}");
    assert!(
        out.contains("source problem: nested groups contain each other: ring-a ⊃ ring-b"),
        "{out}"
    );
    assert!(out.contains("member value(s) name no user or group"), "{out}");
    assert!(
        out.contains("unencrypted"),
        "a cleartext bind is a problem: {out}"
    );
    assert!(
        out.contains("source problem: the server does not offer content synchronisation")
            && out.contains("syncprov"),
        "a server without syncprov is a problem, with the fix: {out}"
    );

    std::fs::write(env.path("reader.pw"), "wrong\n").expect("write");
    let run = dirsync(&env, &["check"]).await;
    run.expect_code(6);
    assert!(
        run.stderr.contains("failed: invalidCredentials (49)"),
        "{}",
        run.stderr
    );
    assert!(mock.accepted().is_empty(), "check pushes nothing");
}

/// Issue 15: the OpenLDAP preset sends inetOrgPerson's `displayName`, and `cn` for an
/// entry without one; end to end from a real slapd to the admin-user API.
#[tokio::test]
async fn the_openldap_preset_sends_display_name_else_cn() {
    use common::admin_user::{AdminUserApi, TOKEN};
    let ldif = people_ldif(2)
        .replace("sn: ", "telephoneNumber: +1 555 0100\nsn: ")
        .replacen("cn: User 1\n", "cn: User 1\ndisplayName: Ann Archer\n", 1);
    let server = Slapd::start(&ldif, Options::default());
    let mock = AdminUserApi::start().await;
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    env.write(
        "dirsync.toml",
        &format!(
            r#"
state_db = "state.db"

[source]
kind = "ldap"
preset = "openldap"
url = "{url}"
base_dn = "{BASE}"
bind_dn = "{READER_DN}"
bind_password_file = "reader.pw"

[targets.admin]
preset = "admin-user"
base_url = "{base}"

[targets.admin.auth]
token_env = "TEST_ADMIN_TOKEN"

[targets.admin.vars]
language_id = "c2fd9942-2548-483b-875c-a724b208dcaa"
time_zone = "UTC"

[targets.admin.users]
id_attribute = "id"
"#,
            url = server.url(),
            base = mock.uri()
        ),
    );
    env.run(&["sync"], &[("TEST_ADMIN_TOKEN", TOKEN)])
        .await
        .expect_code(0);
    let users = mock.lock().users.clone();
    assert_eq!(users[&uuid(1)]["DisplayName"], "Ann Archer");
    assert_eq!(users[&uuid(2)]["DisplayName"], "User 2");
}

/// A user search that comes back empty (here a filter that matches nothing) would empty
/// every group: the target's plan is refused, nothing is sent, the groups stay as
/// they are on the target, and the webhook hears which target and why.
#[tokio::test]
async fn an_empty_user_search_refuses_the_plan_and_notifies() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = Slapd::start(&fixture("ldap-groups.ldif"), Options::default());
    let mock = GroupMembersApi::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let env = setup(&server, &mock, 100);
    let good = config(&server.url(), &mock, 100) + "\n[notify]\nwebhook_url_env = \"TEST_HOOK_URL\"\n";
    env.write("dirsync.toml", &good);
    let run = |env: &Env| {
        let mut cmd = env.command(&["sync"]);
        cmd.env("TEST_OFFICE_KEY", KEY)
            .env("TEST_HOOK_URL", format!("{}/hook", hook.uri()));
        async move { common::Run::from(cmd.output().await.expect("run dirsync")) }
    };
    run(&env).await.expect_code(0);
    let (pushed, groups) = (mock.request_count().await, mock.groups());
    assert!(!groups.is_empty());

    env.write(
        "dirsync.toml",
        &format!("{good}\n[source.users]\nfilter = \"(uid=no-such-user)\"\n"),
    );
    let refused = run(&env).await;
    refused.expect_code(4);
    assert!(
        refused.stderr.contains("allow_empty_source"),
        "{}",
        refused.stderr
    );
    assert_eq!(mock.request_count().await, pushed, "nothing sent");
    assert_eq!(mock.groups(), groups, "nothing emptied");

    let got: Vec<serde_json::Value> = hook
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["event"], "plan_refused", "{}", got[0]);
    assert_eq!(got[0]["target"], "office", "{}", got[0]);
    assert_eq!(got[0]["exit_code"], 4, "{}", got[0]);
    assert!(
        got[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("returned 0 users and")),
        "{}",
        got[0]
    );

    // Nor does the same plan saved by a dry run and applied.
    let plan = env.path("plan.json").display().to_string();
    let hooked = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("TEST_OFFICE_KEY", KEY)
            .env("TEST_HOOK_URL", format!("{}/hook", hook.uri()));
        async move { common::Run::from(cmd.output().await.expect("run dirsync")) }
    };
    hooked(&["sync", "--dry-run", "--allow-removals", "--out", &plan])
        .await
        .expect_code(4);
    let apply = hooked(&["apply", &plan]).await;
    apply.expect_code(4);
    assert!(
        apply
            .stderr
            .contains("target `office`: the plan was refused when it was made (the source returned 0 users"),
        "{}",
        apply.stderr
    );
    assert_eq!(mock.request_count().await, pushed, "nothing sent");
    assert_eq!(mock.groups(), groups, "nothing emptied");
}
