//! Delivery under faults, measured by the mock: retries, Retry-After, limits, the
//! circuit, crashes at several points, and the single-run lock.

mod common;

use std::time::{Duration, Instant};

use common::faults::ResetProxy;
use common::group_members::{Fault, GroupMembersApi, KEY};
use common::{Env, Run, config_group_members, expected_state, groups_csv, users_csv};

/// `n` groups of a few members each over 10 users.
fn many_groups(n: u64) -> Vec<(String, Vec<u64>)> {
    (0..n)
        .map(|k| (format!("team{k}"), vec![1 + k % 10, 1 + (k * 7 + 3) % 10]))
        .collect()
}

fn as_refs(groups: &[(String, Vec<u64>)]) -> Vec<(&str, &[u64])> {
    groups.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect()
}

/// A setup with `groups` over 10 users; `settings` go into `[targets.office]`.
fn setup(base_url: &str, groups: &[(String, Vec<u64>)], settings: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(10));
    env.write("groups.csv", &groups_csv(&as_refs(groups)));
    let config = config_group_members(base_url, "")
        .replace("concurrency = 4\n", &format!("concurrency = 4\n{settings}\n"));
    env.write("dirsync.toml", &config);
    env
}

async fn sync(env: &Env, args: &[&str]) -> Run {
    let mut cmd = env.command(args);
    cmd.env("TEST_OFFICE_KEY", KEY);
    Run::from(cmd.output().await.expect("run dirsync"))
}

/// Runs `sync` until it exits 0, at most `max_runs` times; returns the number of runs.
async fn converge(env: &Env, max_runs: usize) -> usize {
    for run in 1..=max_runs {
        let r = sync(env, &["sync"]).await;
        if r.code == 0 {
            return run;
        }
        assert_eq!(r.code, 3, "only partial failures expected:\n{}", r.stderr);
    }
    panic!("did not converge within {max_runs} runs");
}

#[tokio::test]
async fn transient_failures_converge_within_bounded_runs() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(12);
    let env = setup(&mock.uri(), &groups, "");
    // Five 503s in a row: with two attempts per operation, some operations fail.
    mock.lock().faults.extend([
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(502),
    ]);
    let runs = converge(&env, 3).await;
    assert!(runs <= 2, "{runs} runs");
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
    mock.assert_no_violations();
}

#[tokio::test]
async fn random_failures_from_a_fixed_seed_converge() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(40);
    let env = setup(&mock.uri(), &groups, "max_consecutive_failures = 100");
    mock.lock().fail_randomly(7, 0.3);
    let runs = converge(&env, 6).await;
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
    // Every success in the audit log is one the mock recorded.
    let accepted = mock.accepted();
    for (_, id, outcome) in env.audit().await {
        assert!(
            outcome != "success" || accepted.contains(&id),
            "audit claims {id}"
        );
    }
    println!("converged in {runs} runs");
}

#[tokio::test]
async fn no_request_inside_a_retry_after_window() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(10);
    let env = setup(&mock.uri(), &groups, "");
    mock.lock().faults.push_back(Fault::RetryAfter(2));
    sync(&env, &["sync"]).await.expect_code(0);
    let state = mock.lock();
    let throttled = state.throttled_at[0];
    // Requests already on the wire when the 429 was answered may still arrive in the
    // first moments; after that, nothing until the window ends.
    let inside: Vec<Duration> = state
        .arrivals
        .iter()
        .filter(|a| **a > throttled + Duration::from_millis(100) && **a < throttled + Duration::from_secs(2))
        .map(|a| *a - throttled)
        .collect();
    assert!(
        inside.is_empty(),
        "requests inside the Retry-After window: {inside:?}"
    );
    drop(state);
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}

/// Requests that wait for a place in flight (the window narrowed by earlier 429s)
/// while another is answered 429 do not start inside its Retry-After window: the
/// pause holds them when they get their place.
#[tokio::test]
async fn requests_waiting_for_a_place_in_flight_honour_a_retry_after() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(12);
    let env = setup(&mock.uri(), &groups, "");
    mock.lock().delay = Duration::from_millis(300);
    // Two 429s narrow the window to one request in flight (the other two of the
    // first four are answered as usual); the next request, the first after their
    // pause, gets a 429 with a pause of 2 s while others wait for their place.
    mock.lock().faults.extend([
        Fault::RetryAfter(1),
        Fault::RetryAfter(1),
        Fault::None,
        Fault::None,
        Fault::RetryAfter(2),
    ]);
    // The request that met two 429s is out of its two attempts: the run is partial.
    sync(&env, &["sync"]).await.expect_code(3);
    let inside: Vec<Duration> = {
        let state = mock.lock();
        let last = *state.throttled_at.iter().max().expect("throttled");
        state
            .arrivals
            .iter()
            .filter(|a| **a > last + Duration::from_millis(50) && **a < last + Duration::from_millis(1900))
            .map(|a| *a - last)
            .collect()
    };
    assert!(
        inside.is_empty(),
        "requests inside the Retry-After window: {inside:?}"
    );
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}

#[tokio::test]
async fn a_retry_after_over_the_cap_leaves_the_target_until_it_has_passed() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(6);
    let env = setup(&mock.uri(), &groups, "concurrency = 1");
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("concurrency = 4\n", "");
    env.write(
        "dirsync.toml",
        &config.replace(
            "max_delay = \"50ms\"",
            "max_delay = \"50ms\"\nmax_retry_after = \"1s\"",
        ),
    );
    mock.lock().faults.push_back(Fault::RetryAfter(3));
    let run = sync(&env, &["sync"]).await;
    // The wait is kept from the end of the run at the latest.
    let asked = std::time::Instant::now();
    run.expect_code(3);
    assert!(
        run.stderr.contains("longer than `retry.max_retry_after`"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, 1, "nothing more was sent");
    // A run before the time has passed sends nothing either (the wait is kept in the
    // state database); one after it converges.
    sync(&env, &["sync"]).await.expect_code(3);
    assert_eq!(
        mock.request_count().await,
        1,
        "nothing sent while the target waits"
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(asked.elapsed()) + Duration::from_millis(300))
        .await;
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}

#[tokio::test]
async fn concurrency_never_above_the_limit() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(24);
    let env = setup(&mock.uri(), &groups, "");
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("concurrency = 4", "concurrency = 3");
    env.write("dirsync.toml", &config);
    let delay = Duration::from_millis(150);
    mock.lock().delay = delay;
    sync(&env, &["sync"]).await.expect_code(0);
    let arrivals = mock.lock().arrivals.clone();
    // A slot frees only when its answer (sent `delay` after arrival) is back, so more
    // than 3 arrivals within one `delay` would mean more than 3 requests in flight.
    let window = delay - Duration::from_millis(20);
    let most = arrivals
        .iter()
        .map(|a| arrivals.iter().filter(|b| **b >= *a && **b < *a + window).count())
        .max();
    assert_eq!(most, Some(3), "{arrivals:?}");
}

#[tokio::test]
async fn rate_never_above_the_limit() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(25);
    let env = setup(&mock.uri(), &groups, "rate_limit = 20.0");
    sync(&env, &["sync"]).await.expect_code(0);
    let arrivals = mock.lock().arrivals.clone();
    assert_eq!(arrivals.len(), 25);
    // Any 21 consecutive requests span at least a second (5% for transit jitter).
    for w in arrivals.windows(21) {
        assert!(
            w[20] - w[0] >= Duration::from_millis(950),
            "21 requests in {:?}",
            w[20] - w[0]
        );
    }
}

#[tokio::test]
async fn a_hanging_target_is_bounded_by_the_timeout() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(3);
    let env = setup(&mock.uri(), &groups, "");
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("timeout = \"5s\"", "timeout = \"500ms\"");
    env.write("dirsync.toml", &config);
    mock.lock().faults.push_back(Fault::Hang(Duration::from_secs(30)));
    let started = Instant::now();
    let run = tokio::time::timeout(Duration::from_secs(20), sync(&env, &["sync"]))
        .await
        .expect("the run ended");
    run.expect_code(0);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let mock = GroupMembersApi::start().await;
    let proxy = ResetProxy::start(*mock.server.address(), 2).await;
    let groups = many_groups(4);
    let env = setup(&format!("http://{}", proxy.addr), &groups, "concurrency = 1");
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("concurrency = 4\n", "")
        .replace("max_attempts = 2", "max_attempts = 3");
    env.write("dirsync.toml", &config);
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(proxy.resets.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}

#[tokio::test]
async fn an_outage_opens_the_circuit_and_status_shows_what_is_pending() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(20);
    let env = setup(&mock.uri(), &groups, "max_consecutive_failures = 3");
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("concurrency = 4", "concurrency = 1");
    env.write("dirsync.toml", &config);
    {
        let mut state = mock.lock();
        for k in 0..20 {
            state.fail.insert(common::group_uuid(k));
        }
    }
    let run = sync(&env, &["sync"]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("3 operations failed in a row"),
        "{}",
        run.stderr
    );
    // Three operations of two attempts each; the other 17 were not started.
    assert_eq!(mock.request_count().await, 6);

    let status = env.dirsync(&["status"]).await;
    status.expect_code(0);
    assert!(status.stdout.contains("partial"), "{}", status.stdout);
    assert!(status.stdout.contains("not started 17"), "{}", status.stdout);
    assert!(status.stdout.contains("HTTP 500"), "{}", status.stdout);

    mock.lock().fail.clear();
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
    let status = env.dirsync(&["status"]).await;
    assert!(
        status.stdout.contains("pending (last attempt failed):\n  none"),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn sigkill_at_several_points_then_one_run_converges() {
    for kill_after in [1usize, 30, 70] {
        let mock = GroupMembersApi::start().await;
        let groups = many_groups(100);
        let env = setup(&mock.uri(), &groups, "");
        mock.lock().delay = Duration::from_millis(15);
        let mut child = env
            .command(&["sync"])
            .env("TEST_OFFICE_KEY", KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(20);
        while mock.accepted().len() < kill_after {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
        let accepted = mock.accepted();
        for (_, id, outcome) in env.audit().await {
            assert!(
                outcome != "success" || accepted.contains(&id),
                "kill at {kill_after}: audit claims {id}"
            );
        }
        mock.lock().delay = Duration::ZERO;
        sync(&env, &["sync"]).await.expect_code(0);
        assert_eq!(
            mock.groups(),
            expected_state(&as_refs(&groups)),
            "kill at {kill_after}"
        );
    }
}

#[tokio::test]
async fn two_invocations_one_gets_the_lock_code_or_waits() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(8);
    let env = setup(&mock.uri(), &groups, "");
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("concurrency = 4", "concurrency = 1");
    env.write("dirsync.toml", &config);
    mock.lock().delay = Duration::from_millis(150);
    let first = env.command(&["sync"]).env("TEST_OFFICE_KEY", KEY).output();
    let first = tokio::spawn(first);
    while mock.request_count().await == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = sync(&env, &["sync"]).await;
    second.expect_code(7);
    assert!(
        second.stderr.contains("another sync is running"),
        "{}",
        second.stderr
    );
    let waiting = sync(&env, &["sync", "--wait"]).await;
    waiting.expect_code(0);
    Run::from(first.await.expect("join").expect("first run")).expect_code(0);
    assert_eq!(
        mock.request_count().await,
        groups.len(),
        "the waiting run found nothing left to push"
    );
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}

/// The most arrivals among `arrivals` that fall within any `window` from one of them:
/// with every answer `window` + a little after its arrival, that many were in flight.
fn most_in_flight(arrivals: &[Instant], window: Duration) -> usize {
    arrivals
        .iter()
        .map(|a| arrivals.iter().filter(|b| **b >= *a && **b < *a + window).count())
        .max()
        .unwrap_or(0)
}

/// A storm of 429s narrows the requests in flight to one; successes widen it again one
/// at a time (here after every 3), up to the configured concurrency of 4; nothing is
/// sent inside the Retry-After window.
#[tokio::test]
async fn a_throttling_storm_narrows_concurrency_and_successes_widen_it_again() {
    let mock = GroupMembersApi::start().await;
    let groups = many_groups(40);
    let env = setup(&mock.uri(), &groups, "concurrency_increase_after = 3");
    let delay = Duration::from_millis(100);
    mock.lock().delay = delay;
    for _ in 0..3 {
        mock.lock().faults.push_back(Fault::RetryAfter(1));
    }
    sync(&env, &["sync"]).await.expect_code(0);
    let state = mock.lock();
    let first = *state.throttled_at.iter().min().expect("throttled");
    let last = *state.throttled_at.iter().max().expect("throttled");
    let window = delay - Duration::from_millis(20);
    let inside: Vec<&Instant> = state
        .arrivals
        .iter()
        .filter(|a| **a > first + Duration::from_millis(100) && **a < first + Duration::from_secs(1))
        .collect();
    assert!(
        inside.is_empty(),
        "{} requests inside the Retry-After window",
        inside.len()
    );
    // Right after the pause: one at a time.
    let reopened: Vec<Instant> = state
        .arrivals
        .iter()
        .copied()
        .filter(|a| *a >= last + Duration::from_secs(1) && *a < last + Duration::from_millis(1150))
        .collect();
    assert!(!reopened.is_empty(), "requests resumed after the pause");
    assert_eq!(most_in_flight(&reopened, window), 1, "{reopened:?}");
    // Towards the end: wide again.
    let n = state.arrivals.len();
    let tail = &state.arrivals[n - 16..n - 4];
    assert!(most_in_flight(tail, window) >= 3, "{tail:?}");
    drop(state);
    assert_eq!(mock.groups(), expected_state(&as_refs(&groups)));
}
