//! What a target's answer means, end to end against the group-members API mock:
//! a 2xx that is not a confirmation, the API's envelope, a confirmation without the
//! members echo, a `Retry-After` longer than a run, hostile error text, and what the
//! audit row says when the last attempt got no answer at all (issue 15).

mod common;

use std::time::Duration;

use common::group_members::{Fault, GroupMembersApi, KEY};
use common::{Env, config_group_members, expected_state, groups_csv, sqlite, users_csv};
use sqlx::Row;

const GROUPS: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 4]), ("all", &[1, 2, 3, 4, 5])];

fn setup(mock: &GroupMembersApi, groups: &[(&str, &[u64])], extra: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(groups));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), extra));
    env
}

async fn sync(env: &Env, args: &[&str]) -> common::Run {
    env.run(args, &[("TEST_OFFICE_KEY", KEY)]).await
}

/// Audit rows as (entity id, outcome, http status, error, warning), in order.
async fn audit(env: &Env) -> Vec<(String, String, Option<i64>, Option<String>, Option<String>)> {
    let pool = sqlite(&env.db()).await;
    let rows = sqlx::query("SELECT entity_id, outcome, http_status, error, warning FROM audit ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("query audit");
    pool.close().await;
    rows.into_iter()
        .map(|r| {
            (
                r.get("entity_id"),
                r.get("outcome"),
                r.get("http_status"),
                r.get("error"),
                r.get("warning"),
            )
        })
        .collect()
}

async fn snapshot_rows(env: &Env) -> i64 {
    let pool = sqlite(&env.db()).await;
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM snapshot_groups")
        .fetch_one(&pool)
        .await
        .expect("count")
        .get("n");
    pool.close().await;
    n
}

/// A gateway that answers 200 in the API's place (an HTML login page, an empty body,
/// truncated JSON) applied nothing: the run fails, records nothing as confirmed, and
/// once the gateway is fixed one plain sync converges.
#[tokio::test]
async fn a_200_that_is_not_a_confirmation_is_retried_and_never_recorded() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, GROUPS, "");
    let fakes = [
        (
            "text/html",
            "<!DOCTYPE html>\n<html><body>Sign in</body></html>".to_owned(),
        ),
        ("application/json", String::new()),
        ("application/json", r#"{"members": [}"#.to_owned()),
    ];
    // Two attempts for each of the three groups.
    for (content_type, body) in fakes.iter().cycle().take(2 * GROUPS.len()) {
        mock.lock().faults.push_back(Fault::Fake200 {
            content_type,
            body: body.clone(),
        });
    }
    let run = sync(&env, &["sync"]).await;
    run.expect_code(3);
    assert!(mock.groups().is_empty(), "the gateway applied nothing");
    assert_eq!(snapshot_rows(&env).await, 0, "nothing recorded as confirmed");
    let rows = audit(&env).await;
    assert_eq!(rows.len(), GROUPS.len());
    for (id, outcome, status, error, _) in &rows {
        let error = error.as_deref().unwrap_or_default();
        assert_eq!(outcome, "failed", "{id}");
        assert_eq!(*status, Some(200), "{id}");
        assert!(
            error.contains("is not a confirmation: expected a JSON body"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }
    let all: String = rows.iter().filter_map(|r| r.3.clone()).collect();
    assert!(all.contains("<!DOCTYPE html> <html><body>Sign in"), "{all}");
    assert!(all.contains("got an empty one"), "{all}");
    assert!(all.contains(r#"{"members": [}"#), "{all}");

    let run = sync(&env, &["sync"]).await;
    run.expect_code(0);
    assert_eq!(mock.groups(), expected_state(GROUPS));
    assert_eq!(snapshot_rows(&env).await, GROUPS.len() as i64);
    let before = mock.request_count().await;
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        before,
        "converged: nothing more to send"
    );
    mock.assert_no_violations();
}

/// The group-members API may wrap its answer in `{"status": 0, "response": …}`: the
/// members echo is read from inside it, so drift is still seen.
#[tokio::test]
async fn drift_is_read_from_the_apis_envelope() {
    let mock = GroupMembersApi::start().await;
    mock.lock().envelope = true;
    let env = setup(&mock, GROUPS, "");
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(GROUPS));
    assert!(audit(&env).await.iter().all(|r| r.4.is_none()), "no warning");

    // The target drops user 5 silently: the enveloped echo shows it.
    mock.lock().ignore_members.insert(common::uuid(5));
    let changed: &[(&str, &[u64])] = &[
        ("eng", &[1, 2, 3, 5]),
        ("ops", &[2, 4]),
        ("all", &[1, 2, 3, 4, 5]),
    ];
    env.write("groups.csv", &groups_csv(changed));
    sync(&env, &["sync"]).await.expect_code(0);
    let pool = sqlite(&env.db()).await;
    let drift: Option<String> = sqlx::query("SELECT drift FROM audit ORDER BY id DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("row")
        .get("drift");
    pool.close().await;
    let drift = drift.expect("drift recorded");
    assert!(
        drift.contains(&common::uuid(5)) && drift.contains("missing"),
        "{drift}"
    );
}

/// A confirmation that lacks the members echo the preset declares is a success with a
/// warning, in the audit row and once per run in the log: never silence, nor a line
/// per operation.
#[tokio::test]
async fn a_confirmation_without_the_echo_is_a_warning() {
    let mock = GroupMembersApi::start().await;
    mock.lock().no_echo = true;
    let env = setup(&mock, GROUPS, "");
    let run = sync(&env, &["sync"]).await;
    run.expect_code(0);
    let warned: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("without the echo"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    assert!(
        warned[0].contains("The target confirmed 3 operation(s) without the echo its endpoint declares"),
        "{}",
        warned[0]
    );
    let rows = audit(&env).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.1 == "success" && r.4.is_some()), "{rows:?}");
    let warning = rows[0].4.as_deref().expect("a warning");
    assert!(warning.contains("`/members` or `/response/members`"), "{warning}");
    let shown = env.dirsync(&["audit"]).await;
    assert!(
        shown.stdout.contains("drift cannot be checked"),
        "{}",
        shown.stdout
    );
}

/// A `Retry-After` longer than the run waits is kept: later runs send nothing to the
/// target before it has passed, say so, and exit 3; afterwards the push resumes.
#[tokio::test]
async fn a_long_retry_after_outlives_the_run() {
    for (fault, scope) in [
        (Fault::RetryAfter(3600), "group_members"),
        (Fault::Unavailable(3600), "every endpoint"),
    ] {
        let mock = GroupMembersApi::start().await;
        let env = setup(&mock, GROUPS, "");
        env.write(
            "dirsync.toml",
            &config_group_members(&mock.uri(), "").replace("concurrency = 4", "concurrency = 1"),
        );
        mock.lock().faults.push_back(fault);
        let run = sync(&env, &["sync"]).await;
        run.expect_code(3);
        assert!(
            run.stderr.contains("Keeping the target's Retry-After"),
            "{}",
            run.stderr
        );
        let sent = mock.request_count().await;
        assert_eq!(sent, 1, "the run stopped at the answer");

        let run = sync(&env, &["sync"]).await;
        run.expect_code(3);
        assert_eq!(
            mock.request_count().await,
            sent,
            "nothing sent before the time has passed"
        );
        assert!(
            run.stderr.contains("Sent nothing the target asked to wait for"),
            "{}",
            run.stderr
        );
        let status = env.dirsync(&["status"]).await;
        assert!(status.stdout.contains("paused"), "{}", status.stdout);
        assert!(
            status.stdout.contains(&format!("office {scope} until")),
            "{}",
            status.stdout
        );

        // Once the time has passed, the next run pushes everything.
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
        sqlx::query("UPDATE target_pauses SET until = '2000-01-01T00:00:00.000Z'")
            .execute(&pool)
            .await
            .expect("update");
        pool.close().await;
        sync(&env, &["sync"]).await.expect_code(0);
        assert_eq!(mock.groups(), expected_state(GROUPS));
        let status = env.dirsync(&["status"]).await;
        assert!(!status.stdout.contains("paused"), "{}", status.stdout);
    }
}

/// Error text from a target is escaped and capped before it reaches a log line or
/// an audit row, so it can neither forge lines nor bloat the database.
#[tokio::test]
async fn target_error_text_cannot_forge_log_lines_or_bloat_the_audit() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, &GROUPS[..1], "");
    let hostile = format!(
        "{{\"error\": {{\"message\": \"no\\n2026-01-01T00:00:00Z  INFO Finished the target. \\u001b[31m{}\"}}}}",
        "x".repeat(100_000)
    );
    mock.lock().faults.push_back(Fault::Reject(hostile));
    let run = sync(&env, &["sync"]).await;
    run.expect_code(3);
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("2026-01-01")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "an escape sequence reached the terminal"
    );
    let rows = audit(&env).await;
    let error = rows[0].3.as_deref().expect("an error");
    assert!(error.starts_with("HTTP 400: no\\n2026-01-01"), "{}", &error[..80]);
    assert!(error.len() < 2200, "{} bytes kept", error.len());
    assert!(error.contains("bytes in all)"), "the cut is noted");
}

/// When the last attempt got no answer (a timeout), the audit row says so: no HTTP
/// status, not the status an earlier attempt got.
#[tokio::test]
async fn the_audit_row_tells_what_the_last_attempt_met() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, &GROUPS[..1], "");
    env.write(
        "dirsync.toml",
        &config_group_members(&mock.uri(), "").replace("timeout = \"5s\"", "timeout = \"300ms\""),
    );
    {
        let mut state = mock.lock();
        state.faults.push_back(Fault::Status(503));
        state.faults.push_back(Fault::Hang(Duration::from_secs(2)));
    }
    sync(&env, &["sync"]).await.expect_code(3);
    let rows = audit(&env).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "failed");
    assert_eq!(rows[0].2, None, "no answer on the last attempt: {rows:?}");
    assert!(
        rows[0].3.as_deref().unwrap_or_default().contains("timed out"),
        "{rows:?}"
    );
}
