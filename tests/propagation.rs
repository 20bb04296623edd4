//! Propagation latency end to end: the time from a directory change (a CSV file's
//! mtime, OpenLDAP's `modifyTimestamp`) to the target's confirmation, in the run
//! stored for `dirsync status`. A first sync measures nothing.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::group_members::{GroupMembersApi, KEY};
use common::slapd::{BASE, Options, READER_DN, Slapd, admin, fixture};
use common::{Env, config_group_members, groups_csv, users_csv};
use ldap3::Mod;

async fn dirsync(env: &Env, args: &[&str]) -> common::Run {
    env.run(args, &[("TEST_OFFICE_KEY", KEY)]).await
}

/// The propagation summary of target `office` in the newest run, from `status --json`.
async fn last_propagation(env: &Env) -> serde_json::Value {
    let status = dirsync(env, &["status", "--json"]).await;
    status.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let targets = v["runs"][0]["summary"]["targets"]
        .as_array()
        .expect("the last run's targets")
        .clone();
    let office = targets
        .iter()
        .find(|t| t["name"] == "office")
        .expect("target office");
    office["propagation"].clone()
}

fn set_mtime(env: &Env, name: &str, age: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(env.path(name))
        .expect("open a source file");
    file.set_modified(SystemTime::now() - age).expect("set mtime");
}

#[tokio::test]
async fn a_csv_change_is_measured_from_the_file_mtime() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(&[("eng", &[1, 2]), ("ops", &[3])]));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    let hours = |h: u64| Duration::from_secs(h * 3600);
    set_mtime(&env, "users.csv", hours(2));
    set_mtime(&env, "groups.csv", hours(2));

    // The first sync confirms entries changed two hours ago: not a two-hour delay.
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, 2);
    assert_eq!(last_propagation(&env).await, serde_json::Value::Null);

    // An hour ago, u4 joined ops.
    env.write("groups.csv", &groups_csv(&[("eng", &[1, 2]), ("ops", &[3, 4])]));
    set_mtime(&env, "groups.csv", hours(1));
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, 3, "one request: ops");
    let p = last_propagation(&env).await;
    assert_eq!(p["count"], 1, "{p}");
    for key in ["p50_seconds", "p95_seconds", "max_seconds"] {
        let seconds = p[key].as_f64().expect("seconds");
        assert!((3600.0..3900.0).contains(&seconds), "{key}: {p}");
    }
    let status = dirsync(&env, &["status"]).await;
    assert!(
        status
            .stdout
            .contains("  office: p50 1h, p95 1h, max 1h over 1 change(s), run "),
        "{}",
        status.stdout
    );

    // Nothing changed: nothing is sent, nothing measured, and status keeps showing
    // the run that measured.
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, 3);
    let status = dirsync(&env, &["status"]).await;
    assert!(status.stdout.contains("  office: p50 1h"), "{}", status.stdout);
}

/// Users from `ou=people`, every group pushed by entryUUID, content synchronisation on.
fn ldap_config(url: &str, mock: &GroupMembersApi) -> String {
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

#[tokio::test]
async fn an_ldap_modification_is_measured_from_its_modify_timestamp() {
    let server = Slapd::start(
        &fixture("ldap-groups.ldif"),
        Options {
            syncprov: true,
            ..Options::default()
        },
    );
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    env.write("dirsync.toml", &ldap_config(&server.url(), &mock));

    dirsync(&env, &["sync"]).await.expect_code(0);
    let first = mock.request_count().await;
    assert_eq!(last_propagation(&env).await, serde_json::Value::Null);
    let status = dirsync(&env, &["status"]).await;
    assert!(
        status
            .stdout
            .contains("propagation (directory change to target confirmation")
    );
    assert!(status.stdout.contains("  none measured"), "{}", status.stdout);

    // modifyTimestamp counts whole seconds: the change must fall in a later second
    // than every entry the first sync confirmed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut admin = admin(&server).await;
    let judy = format!("uid=judy,ou=people,{BASE}");
    admin
        .modify(
            &format!("cn=company,ou=groups,{BASE}"),
            vec![Mod::Delete("member", HashSet::from([judy.as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("remove judy from company");
    admin.unbind().await.expect("unbind");

    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(0);
    // Read by content synchronisation: the change time comes through the refresh,
    // the others from the entry cache.
    assert!(
        run.stderr.contains("Read what changed in the source."),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, first + 1, "one request: company");
    let p = last_propagation(&env).await;
    assert_eq!(p["count"], 1, "{p}");
    let p95 = p["p95_seconds"].as_f64().expect("seconds");
    // From the change's second to the confirmation: under a second or two here.
    assert!((0.0..30.0).contains(&p95), "{p}");
    let status = dirsync(&env, &["status"]).await;
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("  office: p50 "))
        .unwrap_or_else(|| panic!("no propagation line: {}", status.stdout));
    assert!(
        line.contains(", p95 ") && line.contains(" over 1 change(s), run "),
        "{line}"
    );
}
