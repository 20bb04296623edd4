//! `dirsync run` with `[daemon] watch = true` against a real slapd with content
//! synchronisation: no schedule at all, and a change made in the directory still
//! reaches the target, within seconds of being made; an invalid use is refused.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::Env;
use common::group_members::{GroupMembersApi, KEY};
use common::slapd::{BASE, Options, READER_DN, Slapd, admin, people_ldif};
use common::{group_uuid, uuid};
use ldap3::Mod;

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
timeout = "10s"

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

[daemon]
watch = true
debounce = "200ms"
run_at_start = true
shutdown_grace = "5s"
"#,
        server.url(),
        mock.uri()
    )
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// A slapd with content synchronisation holding `people` users and the group
/// `staff` with user1, and a mock of the group-members API.
async fn staff(people: u64) -> (Slapd, GroupMembersApi) {
    let ldif = format!(
        "{}dn: cn=staff,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: staff\n\
         member: uid=user1,ou=people,{BASE}\nentryUUID: {}\n",
        people_ldif(people),
        group_uuid(0)
    );
    let options = Options {
        syncprov: true,
        ..Options::default()
    };
    (Slapd::start(&ldif, options), GroupMembersApi::start().await)
}

#[tokio::test]
async fn a_watched_directory_change_reaches_the_target_without_a_schedule() {
    let (server, mock) = staff(3).await;
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    env.write("dirsync.toml", &config(&server, &mock));
    let child = env
        .command(&["run"])
        .env("TEST_OFFICE_KEY", KEY)
        .env("RUST_LOG", "info,dirsync::sync::incremental=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let staff = |members: &[u64]| -> bool {
        let want: BTreeSet<String> = members.iter().map(|n| uuid(*n)).collect();
        mock.groups().get(&group_uuid(0)) == Some(&want)
    };
    wait_for("the sync at start", || staff(&[1])).await;

    let mut ldap = admin(&server).await;
    for (n, members) in [(2, &[1, 2][..]), (3, &[1, 2, 3][..])] {
        let member = format!("uid=user{n},ou=people,{BASE}");
        ldap.modify(
            &format!("cn=staff,ou=groups,{BASE}"),
            vec![Mod::Add("member", HashSet::from([member.as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("add a member");
        let took = wait_for("the change on the target", || staff(members)).await;
        eprintln!("user{n} reached the target {took:?} after the change");
    }
    ldap.unbind().await.expect("unbind");

    let stderr = common::stop_service(child).await;
    assert!(stderr.contains("Watching the directory for changes."), "{stderr}");
    assert!(stderr.contains("The directory changed"), "{stderr}");
    // The service keeps the entries it committed: watched changes do not load them.
    assert!(stderr.contains("Took the kept entries from memory."), "{stderr}");
    mock.assert_no_violations();
}

/// A watched run that fails is run again after a backoff, with no directory change
/// and no schedule to start it.
#[tokio::test]
async fn a_failed_watched_run_is_run_again_without_a_directory_change() {
    let (server, mock) = staff(2).await;
    mock.lock().fail.insert(group_uuid(0));
    let env = Env::new();
    std::fs::copy(server.password_file(), env.path("reader.pw")).expect("copy password");
    // The first run comes from the watch: its search's initial content counts as
    // a change. It fails, and nothing else starts a run.
    let config = config(&server, &mock)
        .replace(
            "[targets.office.users]",
            "[targets.office.retry]\nmax_attempts = 1\n\n[targets.office.users]",
        )
        .replace("run_at_start = true", "run_at_start = false");
    env.write("dirsync.toml", &config);
    let child = env
        .command(&["run"])
        .env("TEST_OFFICE_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut requests = 0;
    while requests == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        requests = mock.request_count().await;
    }
    // The target recovers; the directory stays as it is.
    mock.lock().fail.clear();
    let want: BTreeSet<String> = [uuid(1)].into();
    let took = wait_for("the run again", || {
        mock.groups().get(&group_uuid(0)) == Some(&want)
    })
    .await;
    assert!(
        took >= Duration::from_secs(5),
        "ran again after the backoff, not at once: {took:?}"
    );

    let stderr = common::stop_service(child).await;
    assert!(
        stderr
            .contains("The run did not finish clean; running again without waiting for a directory change.")
            && stderr.contains("retry_in_s=10"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("The directory changed").count(),
        1,
        "only the watch's initial content: {stderr}"
    );
    mock.assert_no_violations();
}

#[tokio::test]
async fn watch_needs_a_directory_that_can_be_watched() {
    let env = Env::new();
    env.write("users.csv", &common::users_csv(1));
    env.write("groups.csv", &common::groups_csv(&[("a", &[1])]));
    env.write(
        "dirsync.toml",
        &(common::config_group_members("http://127.0.0.1:9", "") + "\n[daemon]\nwatch = true\n"),
    );
    let run = env
        .run(&["check", "--offline"], &[("TEST_OFFICE_KEY", KEY)])
        .await;
    run.expect_code(5);
    assert!(
        run.stderr.contains("daemon.watch") && run.stderr.contains("needs an LDAP source"),
        "{}",
        run.stderr
    );

    env.write(
        "dirsync.toml",
        &(common::config_group_members("http://127.0.0.1:9", "") + "\n[daemon]\nwatch_poll = \"0s\"\n"),
    );
    let run = env
        .run(&["check", "--offline"], &[("TEST_OFFICE_KEY", KEY)])
        .await;
    run.expect_code(5);
    assert!(
        run.stderr.contains("daemon.watch_poll") && run.stderr.contains("must be longer than zero"),
        "{}",
        run.stderr
    );
}
