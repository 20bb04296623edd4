//! Webhook notifications through the real binary: a local receiver gets one
//! well-formed JSON message per event (removals held, their approval, a partial run,
//! a failed run); a receiver that answers 503 is retried; a dead or hanging one never
//! changes the exit code and costs at most `notify.timeout`; the URL, which carries a
//! token, shows in no output.

mod common;

use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, Run, config_group_members, groups_csv, users_csv};

/// The token a webhook URL carries in its path, which must never be shown.
const TOKEN: &str = "T0KEN-b7d1e9c2a4f6";

/// The receiver's path.
fn hook_path() -> String {
    format!("/hooks/{TOKEN}")
}

/// A receiver that accepts every message.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(hook_path()))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// 20 users in four groups.
fn groups(eng: &[u64]) -> String {
    let ops: Vec<u64> = (8..=20).collect();
    let sales: Vec<u64> = (1..=10).collect();
    groups_csv(&[("eng", eng), ("ops", &ops), ("sales", &sales)])
}

const ENG: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

/// The CSV source and the group-members API, with `[notify]` reading the URL from
/// `TEST_HOOK_URL`.
fn setup(mock: &GroupMembersApi, timeout: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(20));
    env.write("groups.csv", &groups(ENG));
    let notify = format!("\n[notify]\nwebhook_url_env = \"TEST_HOOK_URL\"\ntimeout = \"{timeout}\"\n");
    env.write("dirsync.toml", &config_group_members(&mock.uri(), &notify));
    env
}

/// Every output of every run a test makes, to check that the URL shows in none.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    async fn dirsync(&mut self, env: &Env, hook: &str, args: &[&str]) -> Run {
        self.run(env, hook, args, "info").await
    }

    async fn run(&mut self, env: &Env, hook: &str, args: &[&str], log: &str) -> Run {
        let vars = [
            ("TEST_OFFICE_KEY", KEY),
            ("TEST_HOOK_URL", hook),
            ("USER", "alice"),
            ("SUDO_USER", ""),
            ("RUST_LOG", log),
        ];
        let run = env.run(args, &vars).await;
        let label = args.join(" ");
        self.0.push((format!("{label}: stdout"), run.stdout.clone()));
        self.0.push((format!("{label}: stderr"), run.stderr.clone()));
        run
    }

    fn assert_no_url(&self) {
        common::assert_no_leak(TOKEN, &self.0);
    }
}

/// The messages the receiver got, after checking each is a JSON POST to the hook
/// with the fields every message has.
async fn messages(server: &MockServer) -> Vec<serde_json::Value> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let mut out = Vec::new();
    for req in server.received_requests().await.unwrap_or_default() {
        assert_eq!(req.method.as_str(), "POST");
        assert_eq!(req.url.path(), hook_path());
        assert_eq!(common::mock::media_type(&req), "application/json");
        let m: serde_json::Value = serde_json::from_slice(&req.body).expect("a JSON body");
        let at = m["at"].as_str().expect("at");
        assert!(at.ends_with('Z'), "UTC: {m}");
        chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
        assert_eq!(m["host"], host.trim(), "{m}");
        assert_eq!(m["dirsync"], env!("CARGO_PKG_VERSION"), "{m}");
        out.push(m);
    }
    out
}

/// The run ids `dirsync status --json` lists, newest first.
async fn run_ids(out: &mut Outputs, env: &Env, hook: &str) -> Vec<String> {
    let status = out.dirsync(env, hook, &["status", "--json"]).await;
    status.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_held_run_and_its_approval_each_send_one_message() {
    let mock = GroupMembersApi::start().await;
    let hook = receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "5s");
    let mut out = Outputs::default();
    out.dirsync(&env, &url, &["sync"]).await.expect_code(0);
    assert!(messages(&hook).await.is_empty(), "a clean run sends nothing");

    // eng loses 9 of its 12 members: held.
    env.write("groups.csv", &groups(&[1, 2, 3]));
    out.dirsync(&env, &url, &["sync"]).await.expect_code(4);
    let held = out.dirsync(&env, &url, &["held", "--json"]).await;
    let held: serde_json::Value = serde_json::from_str(&held.stdout).expect("held --json");
    let id = held[0]["id"].as_str().expect("a held set").to_owned();
    let run_id = run_ids(&mut out, &env, &url).await[0].clone();
    let got = messages(&hook).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["event"], "removals_held", "{m}");
    assert_eq!(m["held_set_id"], id.as_str(), "{m}");
    assert_eq!(m["target"], "office", "{m}");
    assert_eq!(m["removed_memberships"], 9, "{m}");
    assert_eq!(m["disabled_users"], 0, "{m}");
    assert_eq!(m["run_id"], run_id.as_str(), "{m}");
    let reasons = m["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("group `eng` would lose 9 of its 12 members"))),
        "{m}"
    );

    // Held again under the same id: reported once already.
    out.dirsync(&env, &url, &["sync"]).await.expect_code(4);
    assert_eq!(messages(&hook).await.len(), 1);

    out.dirsync(&env, &url, &["approve", &id]).await.expect_code(0);
    let run_id = run_ids(&mut out, &env, &url).await[0].clone();
    let got = messages(&hook).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let m = &got[1];
    assert_eq!(m["event"], "held_approved", "{m}");
    assert_eq!(m["held_set_id"], id.as_str(), "{m}");
    assert_eq!(m["target"], "office", "{m}");
    assert_eq!(m["by"], "alice", "{m}");
    assert_eq!(m["run_id"], run_id.as_str(), "{m}");

    // Nothing left to report; a dry run reports nothing either.
    out.dirsync(&env, &url, &["sync"]).await.expect_code(0);
    // ops loses 12 of its 13 members.
    let sales: Vec<u64> = (1..=10).collect();
    env.write(
        "groups.csv",
        &groups_csv(&[("eng", &[1, 2, 3]), ("ops", &[8]), ("sales", &sales)]),
    );
    out.dirsync(&env, &url, &["sync", "--dry-run"])
        .await
        .expect_code(4);
    assert_eq!(messages(&hook).await.len(), 2);
    let check = out.dirsync(&env, &url, &["check", "--offline"]).await;
    check.expect_code(0);
    assert!(
        check.stdout.contains("notify: a webhook is configured"),
        "{}",
        check.stdout
    );
    out.assert_no_url();
}

#[tokio::test]
async fn a_partial_run_sends_the_counts_of_each_target() {
    let mock = GroupMembersApi::start().await;
    let hook = receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "5s");
    mock.state
        .lock()
        .expect("mock")
        .fail
        .insert(common::group_uuid(1));
    let mut out = Outputs::default();
    out.dirsync(&env, &url, &["sync"]).await.expect_code(3);
    let run_id = run_ids(&mut out, &env, &url).await[0].clone();
    let got = messages(&hook).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["event"], "run_partial", "{m}");
    assert_eq!(m["exit_code"], 3, "{m}");
    assert_eq!(m["run_id"], run_id.as_str(), "{m}");
    let t = &m["targets"][0];
    assert_eq!(t["target"], "office", "{m}");
    assert_eq!(t["planned"], 3, "{m}");
    assert_eq!(t["succeeded"], 2, "{m}");
    assert_eq!(t["failed"], 1, "{m}");
    assert_eq!(t["not_started"], 0, "{m}");
    assert_eq!(m["targets"].as_array().map(Vec::len), Some(1), "{m}");
    out.assert_no_url();
}

#[tokio::test]
async fn a_failed_run_sends_its_error_and_exit_code() {
    let mock = GroupMembersApi::start().await;
    let hook = receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "5s");
    env.write("groups.csv", "id,name\ng0,eng\n");
    let mut out = Outputs::default();
    let run = out.dirsync(&env, &url, &["sync"]).await;
    run.expect_code(6);
    let got = messages(&hook).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["event"], "run_failed", "{m}");
    assert_eq!(m["exit_code"], 6, "{m}");
    let error = m["error"].as_str().expect("error");
    assert!(error.starts_with("source: "), "{m}");
    assert!(error.contains("groups.csv"), "{m}");
    assert!(m.get("run_id").is_none(), "the run never started: {m}");
    assert_eq!(mock.request_count().await, 0);
    out.assert_no_url();
}

#[tokio::test]
async fn a_receiver_answering_503_twice_gets_the_message_on_the_third_try() {
    let mock = GroupMembersApi::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(hook_path()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST"))
        .and(path(hook_path()))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&hook)
        .await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "10s");
    env.write("groups.csv", "id,name\ng0,eng\n");
    let mut out = Outputs::default();
    let run = out.dirsync(&env, &url, &["sync"]).await;
    run.expect_code(6);
    let got = messages(&hook).await;
    assert_eq!(got.len(), 3, "two 503s, then the 200: {got:?}");
    assert!(got.iter().all(|m| m == &got[0]), "the same message each time");
    assert_eq!(got[0]["event"], "run_failed");
    assert!(
        !run.stderr.contains("Could not deliver"),
        "delivered: {}",
        run.stderr
    );
    out.assert_no_url();
}

#[tokio::test]
async fn a_dead_receiver_costs_one_warning_and_leaves_the_exit_code() {
    let mock = GroupMembersApi::start().await;
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}{}", hook_path());
    let env = setup(&mock, "2s");
    let mut out = Outputs::default();
    out.dirsync(&env, &url, &["sync"]).await.expect_code(0);
    env.write("groups.csv", &groups(&[1, 2, 3]));
    let started = Instant::now();
    let run = out.run(&env, &url, &["sync"], "debug").await;
    let took = started.elapsed();
    run.expect_code(4);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("Could not deliver"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("removals_held"), "{}", warnings[0]);
    assert!(warnings[0].contains("cannot connect"), "{}", warnings[0]);
    assert!(!warnings[0].contains(&port.to_string()), "{}", warnings[0]);
    out.assert_no_url();
}

/// A receiver that takes every message and answers none within a minute.
async fn hanging_receiver() -> MockServer {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&hook)
        .await;
    hook
}

#[tokio::test]
async fn a_hanging_receiver_holds_the_run_no_longer_than_the_timeout() {
    let mock = GroupMembersApi::start().await;
    let hook = hanging_receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "2s");
    env.write("groups.csv", "id,name\ng0,eng\n");
    let mut out = Outputs::default();
    let started = Instant::now();
    let run = out.dirsync(&env, &url, &["sync"]).await;
    let took = started.elapsed();
    run.expect_code(6);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(run.stderr.contains("did not answer within 2s"), "{}", run.stderr);
    assert_eq!(messages(&hook).await.len(), 1, "sent once, never answered");
    out.assert_no_url();
}

/// The first stop signal lets the message under way go out; a second one ends the
/// command at once, with its own exit code.
#[tokio::test]
async fn a_second_stop_signal_ends_the_wait_for_a_hanging_receiver() {
    let mock = GroupMembersApi::start().await;
    let hook = hanging_receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "60s");
    env.write("groups.csv", "id,name\ng0,eng\n");
    let mut cmd = env.command(&["sync"]);
    cmd.env("TEST_OFFICE_KEY", KEY).env("TEST_HOOK_URL", &url);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start dirsync");
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.received_requests().await.unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "no message from the run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let started = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the second signal ends the command")
        .expect("dirsync output");
    assert!(started.elapsed() < Duration::from_secs(5));
    let run = Run::from(output);
    run.expect_code(130);
    assert!(
        run.stderr.contains("A second signal stops at once"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Stopped at once by a second signal"),
        "{}",
        run.stderr
    );
}

/// `dirsync run` with `run_at_start` and `shutdown_grace = grace`, sending to `url`,
/// once `hook` has received its first message.
async fn service_after_its_first_message(
    env: &Env,
    hook: &MockServer,
    url: &str,
    grace: &str,
) -> tokio::process::Child {
    let config = std::fs::read_to_string(env.config()).expect("config")
        + &format!("\n[daemon]\nrun_at_start = true\nshutdown_grace = \"{grace}\"\n");
    env.write("dirsync.toml", &config);
    let mut cmd = env.command(&["run"]);
    cmd.env("TEST_OFFICE_KEY", KEY).env("TEST_HOOK_URL", url);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start the service");
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.received_requests().await.unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "no message from the service");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[tokio::test]
async fn the_service_sends_what_its_runs_call_for() {
    let mock = GroupMembersApi::start().await;
    let hook = receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "5s");
    env.write("groups.csv", "id,name\ng0,eng\n");
    let child = service_after_its_first_message(&env, &hook, &url, "2s").await;
    sigterm(&child);
    let output = child.wait_with_output().await.expect("service output");
    let run = Run::from(output);
    run.expect_code(0);
    let got = messages(&hook).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["event"], "run_failed");
    assert_eq!(got[0]["exit_code"], 6);
    common::assert_no_leak(
        TOKEN,
        &[
            ("run: stdout".into(), run.stdout),
            ("run: stderr".into(), run.stderr),
        ],
    );
}

/// A stopped service waits for a hanging receiver no longer than its
/// `shutdown_grace`, not the message's own `notify.timeout`.
#[tokio::test]
async fn a_stopped_service_waits_for_a_hanging_receiver_only_its_grace() {
    let mock = GroupMembersApi::start().await;
    let hook = hanging_receiver().await;
    let url = format!("{}{}", hook.uri(), hook_path());
    let env = setup(&mock, "60s");
    env.write("groups.csv", "id,name\ng0,eng\n");
    let child = service_after_its_first_message(&env, &hook, &url, "1s").await;
    sigterm(&child);
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stopped within the grace, not the webhook's timeout")
        .expect("service output");
    let run = Run::from(output);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("Stopped before the webhook receiver answered"),
        "{}",
        run.stderr
    );
}
