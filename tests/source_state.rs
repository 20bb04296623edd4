//! The source state through the real binary: a CSV source whose files are unchanged
//! is neither parsed nor mapped for a target whose last plan was confirmed; a
//! changed file, a failed push, a target config edit, `resync` and
//! `source.full_read_every` each make a run read and plan again. Against a mock of
//! the group-members API.

mod common;

use std::time::{Duration, SystemTime};

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, expected_state, group_uuid, groups_csv, users_csv};

const GROUPS: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 4]), ("all", &[1, 2, 3, 4, 5])];

/// The log line of a run that found nothing to plan.
const NOTHING_TO_PLAN: &str = "Source unchanged; nothing to plan.";
/// The log line of a run that re-reads an unchanged source for targets not clean.
const REPLANNING: &str =
    "Source unchanged; reading it again for the targets whose last plan was not confirmed.";
/// The log line every parse of the source writes.
const PARSED: &str = "Read the source.";

/// 5 users, the groups above, one target; `source_extra` goes into `[source]`.
fn setup(mock: &GroupMembersApi, source_extra: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    env.write("dirsync.toml", &config(mock, source_extra, ".*"));
    env
}

fn config(mock: &GroupMembersApi, source_extra: &str, group_match: &str) -> String {
    config_group_members(&mock.uri(), "")
        .replace(
            "groups = \"groups.csv\"\n",
            &format!("groups = \"groups.csv\"\n{source_extra}\n"),
        )
        .replace("match = \".*\"", &format!("match = \"{group_match}\""))
}

impl Env {
    async fn sync(&self, args: &[&str]) -> common::Run {
        self.run(args, &[("TEST_OFFICE_KEY", KEY), ("RUST_LOG", "debug")])
            .await
    }

    /// `status --json`'s `source` object.
    async fn source_status(&self) -> serde_json::Value {
        let run = self.dirsync(&["status", "--json"]).await;
        run.expect_code(0);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
        v["source"].clone()
    }

    fn set_mtime(&self, name: &str, at: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(self.path(name))
            .and_then(|f| f.set_modified(at))
            .expect("set mtime");
    }

    fn mtime(&self, name: &str) -> SystemTime {
        std::fs::metadata(self.path(name))
            .and_then(|m| m.modified())
            .expect("mtime")
    }
}

/// The stored token's mtime of the file whose path ends with `name`.
fn token_mtime(source: &serde_json::Value, name: &str) -> i64 {
    source["token"]["files"]
        .as_array()
        .expect("token files")
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .and_then(|f| f["mtime_ns"].as_i64())
        .expect("file in token")
}

#[tokio::test]
async fn an_unchanged_csv_is_neither_parsed_nor_mapped_and_sends_nothing() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");

    let first = env.sync(&["sync"]).await;
    first.expect_code(0);
    assert!(
        first.stderr.contains("no earlier read is recorded"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains(PARSED), "{}", first.stderr);
    assert_eq!(mock.request_count().await, GROUPS.len());
    let after_first = env.source_status().await;
    assert_eq!(after_first["last_mode"], "full");

    let second = env.sync(&["sync"]).await;
    second.expect_code(0);
    assert!(second.stderr.contains(NOTHING_TO_PLAN), "{}", second.stderr);
    assert!(second.stderr.contains("mode=\"unchanged\""), "{}", second.stderr);
    for not in [PARSED, "Mapped the directory.", "Planned the target."] {
        assert!(!second.stderr.contains(not), "{not:?} in {}", second.stderr);
    }
    assert_eq!(mock.request_count().await, GROUPS.len(), "no request");
    let source = env.source_status().await;
    assert_eq!(source["last_mode"], "unchanged");
    assert_eq!(source["last_reason"], "the files are unchanged");
    assert_eq!(source["generation"], after_first["generation"]);
    assert_eq!(
        source["last_full_at"], after_first["last_full_at"],
        "an unchanged read is not a full read"
    );

    // A dry run reads everything and writes no source state.
    let dry = env.sync(&["sync", "--dry-run"]).await;
    dry.expect_code(0);
    assert!(dry.stderr.contains(PARSED), "{}", dry.stderr);
    assert_eq!(env.source_status().await, source);
}

#[tokio::test]
async fn a_touched_file_refreshes_the_token_and_sends_nothing() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    let before = token_mtime(&env.source_status().await, "groups.csv");

    env.set_mtime("groups.csv", SystemTime::now() + Duration::from_secs(60));
    let touched = env.sync(&["sync"]).await;
    touched.expect_code(0);
    assert!(touched.stderr.contains(NOTHING_TO_PLAN), "{}", touched.stderr);
    assert!(!touched.stderr.contains(PARSED), "{}", touched.stderr);
    assert_eq!(mock.request_count().await, GROUPS.len());
    let source = env.source_status().await;
    assert_eq!(
        source["last_reason"],
        "the files were touched but their content is unchanged"
    );
    assert_ne!(token_mtime(&source, "groups.csv"), before, "token refreshed");

    // The refreshed token matches the file as it is.
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(
        env.source_status().await["last_reason"],
        "the files are unchanged"
    );
}

#[tokio::test]
async fn a_change_that_keeps_size_and_mtime_is_still_read_and_pushed() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    env.sync(&["sync"]).await.expect_code(0);
    let mtime = env.mtime("groups.csv");

    // u5 replaces u4 in ops: same size; the mtime is set back to what it was.
    let changed: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 5]), ("all", &[1, 2, 3, 4, 5])];
    let (old, new) = (groups_csv(GROUPS), groups_csv(changed));
    assert_eq!(old.len(), new.len());
    env.write("groups.csv", &new);
    env.set_mtime("groups.csv", mtime);

    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(run.stderr.contains("the files changed"), "{}", run.stderr);
    assert!(run.stderr.contains(PARSED), "{}", run.stderr);
    assert_eq!(mock.request_count().await, GROUPS.len() + 1);
    assert_eq!(mock.accepted().last(), Some(&group_uuid(1)));
    assert_eq!(mock.groups(), expected_state(changed));
    assert_eq!(env.source_status().await["last_mode"], "full");
}

#[tokio::test]
async fn a_failed_push_is_retried_while_the_file_is_unchanged() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    mock.lock().fail.insert(group_uuid(1));
    env.sync(&["sync"]).await.expect_code(3);

    mock.lock().fail.clear();
    let before = mock.request_count().await;
    let retry = env.sync(&["sync"]).await;
    retry.expect_code(0);
    assert!(retry.stderr.contains(REPLANNING), "{}", retry.stderr);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.accepted().last(), Some(&group_uuid(1)));
    assert_eq!(mock.groups(), expected_state(GROUPS));

    let converged = env.sync(&["sync"]).await;
    converged.expect_code(0);
    assert!(converged.stderr.contains(NOTHING_TO_PLAN), "{}", converged.stderr);
    assert_eq!(mock.request_count().await, before + 1);
}

#[tokio::test]
async fn an_edit_of_the_target_mapping_replans_the_target() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    env.sync(&["sync"]).await.expect_code(0);

    // Only eng and ops stay mapped.
    env.write("dirsync.toml", &config(&mock, "", "^(eng|ops)$"));
    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(run.stderr.contains(REPLANNING), "{}", run.stderr);
    assert!(run.stderr.contains("targets=\"office\""), "{}", run.stderr);
    assert!(run.stderr.contains("Planned the target."), "{}", run.stderr);

    let again = env.sync(&["sync"]).await;
    again.expect_code(0);
    assert!(again.stderr.contains(NOTHING_TO_PLAN), "{}", again.stderr);
}

#[tokio::test]
async fn resync_reads_and_pushes_everything() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, GROUPS.len());

    let run = env.sync(&["resync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("a resync reads and plans everything"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, 2 * GROUPS.len());
    assert_eq!(env.source_status().await["last_mode"], "full");

    let after = env.sync(&["sync"]).await;
    after.expect_code(0);
    assert!(after.stderr.contains(NOTHING_TO_PLAN), "{}", after.stderr);
}

#[tokio::test]
async fn an_old_full_read_forces_a_full_read() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "full_read_every = \"1s\"");
    env.sync(&["sync"]).await.expect_code(0);
    let first = env.source_status().await;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("the last full read is older than source.full_read_every (1s)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(PARSED), "{}", run.stderr);
    assert_eq!(mock.request_count().await, GROUPS.len(), "nothing changed");
    let source = env.source_status().await;
    assert_eq!(source["last_mode"], "full");
    assert_ne!(source["last_full_at"], first["last_full_at"]);
    assert_eq!(
        source["generation"], first["generation"],
        "what was read is the same"
    );
}

#[tokio::test]
async fn full_read_every_must_be_a_duration() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "full_read_every = \"daily\"");
    let run = env.sync(&["sync"]).await;
    run.expect_code(5);
    assert!(run.stderr.contains("source.full_read_every"), "{}", run.stderr);
}

#[tokio::test]
async fn status_shows_the_last_read_the_token_age_and_the_last_full_read() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let before = env.dirsync(&["status"]).await;
    assert!(!before.stdout.contains("last read"), "{}", before.stdout);
    env.sync(&["sync"]).await.expect_code(0);
    env.sync(&["sync"]).await.expect_code(0);

    let text = env.dirsync(&["status"]).await;
    text.expect_code(0);
    for want in [
        "source:",
        "csv: last read unchanged at ",
        "(the files are unchanged)",
        "token written ",
        "(age ",
        "last full read 20",
    ] {
        assert!(text.stdout.contains(want), "{want:?} in {}", text.stdout);
    }

    let json = env.source_status().await;
    assert_eq!(json["kind"], "csv");
    assert_eq!(json["last_mode"], "unchanged");
    assert!(
        json["token_age_seconds"]
            .as_i64()
            .is_some_and(|a| (0..60).contains(&a)),
        "{json}"
    );
    assert!(json["last_full_at"].as_str().is_some(), "{json}");
    assert!(json["token_at"].as_str().is_some(), "{json}");
}

#[tokio::test]
async fn a_run_killed_during_its_push_is_planned_again_on_an_unchanged_file() {
    let mock = GroupMembersApi::start().await;
    let groups: Vec<(String, Vec<u64>)> = (0..60)
        .map(|k| (format!("team{k}"), vec![1 + k % 5, 1 + (k + 2) % 5]))
        .collect();
    let groups: Vec<(&str, &[u64])> = groups.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect();
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(&groups));
    env.write("dirsync.toml", &config(&mock, "", ".*"));
    // A converged first run: the target is clean for what was read.
    env.sync(&["sync"]).await.expect_code(0);

    // A resync of the unchanged file is killed part way through its push.
    mock.lock().delay = Duration::from_millis(40);
    let mut child = env
        .command(&["resync"])
        .env("TEST_OFFICE_KEY", KEY)
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while mock.accepted().len() < groups.len() + 10 {
        assert!(tokio::time::Instant::now() < deadline, "the run made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    assert!(mock.accepted().len() < 2 * groups.len(), "killed before the end");
    mock.lock().delay = Duration::ZERO;

    let next = env.sync(&["sync"]).await;
    next.expect_code(0);
    assert!(next.stderr.contains(REPLANNING), "{}", next.stderr);
    assert_eq!(mock.groups(), expected_state(&groups));
    let after = env.sync(&["sync"]).await;
    assert!(after.stderr.contains(NOTHING_TO_PLAN), "{}", after.stderr);
}
