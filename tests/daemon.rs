//! `dirsync run` as a service: the real binary on a schedule a few seconds apart,
//! driven by signals, talking to a NOTIFY_SOCKET the test owns, serving /metrics.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Timelike;

use common::group_members::{Fault, GroupMembersApi, KEY};
use common::{Env, Run, config_group_members, expected_state, groups_csv, users_csv};

const GROUPS: &[(&str, &[u64])] = &[
    ("eng-a", &[1, 2]),
    ("eng-b", &[2, 3]),
    ("ops-a", &[4]),
    ("ops-b", &[1, 5]),
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn config(mock: &GroupMembersApi, port: u16, rule: &str) -> String {
    config_group_members(&mock.uri(), "")
        .replace("match = \".*\"", &format!("match = \"{rule}\""))
        .replace("concurrency = 4", "concurrency = 1")
        + &format!(
            "\n[daemon]\nschedule = \"*/2 * * * * *\"\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"10s\"\n"
        )
}

/// Collects what the service sends to NOTIFY_SOCKET.
fn notify_socket(env: &Env) -> (std::path::PathBuf, Arc<Mutex<Vec<String>>>) {
    let path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&messages);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            sink.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (path, messages)
}

/// `dirsync run` on the env's config, its log kept for `common::stop_service`.
fn start_service(env: &Env) -> tokio::process::Child {
    env.command(&["run"])
        .env("TEST_OFFICE_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn")
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// Parses the text exposition format: every sample line `name{labels} value`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty()
                    || line == "# EOF"
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT "),
                "bad comment line `{line}`"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line `{line}`"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in `{line}`"));
        if let Some((metric, labels)) = name.split_once('{') {
            assert!(labels.ends_with('}'), "bad labels in `{line}`");
            assert!(
                metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad name in `{line}`"
            );
        }
        out.insert(name.to_owned(), value);
    }
    out
}

#[tokio::test]
async fn service_syncs_on_schedule_reloads_and_stops_cleanly() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    let port = free_port();
    env.write("dirsync.toml", &config(&mock, port, "^eng"));
    let (socket, messages) = notify_socket(&env);

    let mut child = env
        .command(&["run"])
        .env("TEST_OFFICE_KEY", KEY)
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "500000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let has = |m: &Arc<Mutex<Vec<String>>>, what: &str| {
        m.lock()
            .expect("lock")
            .iter()
            .any(|s| s.lines().any(|l| l == what))
    };

    wait_for("READY=1", || has(&messages, "READY=1")).await;
    wait_for("WATCHDOG=1", || has(&messages, "WATCHDOG=1")).await;

    // The first scheduled run pushes the two mapped groups.
    let eng: Vec<(&str, &[u64])> = GROUPS[..2].to_vec();
    wait_for("the scheduled sync", || mock.groups() == expected_state(&eng)).await;
    wait_for("STATUS= with the last run", || {
        messages
            .lock()
            .expect("lock")
            .iter()
            .any(|s| s.contains("STATUS=last run: success"))
    })
    .await;

    // /healthz and /metrics; the counters match what the mock received.
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let metrics = parse_metrics(&text);
    let pushed = metrics
        .get("dirsync_operations_total{target=\"office\",kind=\"replace_members\",outcome=\"success\"}")
        .copied();
    assert_eq!(pushed, Some(mock.accepted().len() as f64), "{text}");
    assert!(
        metrics
            .get("dirsync_runs_total{outcome=\"success\"}")
            .is_some_and(|n| *n >= 1.0),
        "{text}"
    );

    // SIGHUP with a new group mapping: the next run pushes the newly mapped groups.
    // A new `state_db` waits for a restart: the runs keep the database they had.
    let moved = config(&mock, port, ".*").replace("state_db = \"state.db\"", "state_db = \"other.db\"");
    assert!(moved.contains("other.db"));
    env.write("dirsync.toml", &moved);
    kill(pid, "-HUP");
    wait_for("the reloaded mapping", || mock.groups() == expected_state(GROUPS)).await;
    assert!(
        !env.path("other.db").exists(),
        "the state database stays until a restart"
    );
    // An invalid config on SIGHUP is refused and the old one stays; systemd's
    // status says so.
    env.write("dirsync.toml", "this is not toml = = =");
    kill(pid, "-HUP");
    wait_for("a status after the refused reload", || {
        messages
            .lock()
            .expect("lock")
            .iter()
            .any(|s| s.contains("STATUS=configuration not reloaded"))
    })
    .await;
    let sent = messages.lock().expect("lock").clone();
    assert_eq!(
        sent.iter().filter(|s| s.contains("RELOADING=1")).count(),
        2,
        "{sent:?}"
    );

    // SIGTERM in the middle of a run: in-flight requests finish and are recorded.
    env.write("dirsync.toml", &config(&mock, port, ".*"));
    kill(pid, "-HUP");
    let many: Vec<(String, Vec<u64>)> = (0..30).map(|k| (format!("team{k}"), vec![1 + k % 5])).collect();
    let many: Vec<(&str, &[u64])> = many.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect();
    mock.lock().delay = Duration::from_millis(200);
    let before = mock.accepted().len();
    env.write("groups.csv", &groups_csv(&many));
    wait_for("the next run to start pushing", || {
        mock.accepted().len() > before + 1
    })
    .await;
    kill(pid, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stopped in time")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
    assert!(has(&messages, "STOPPING=1"));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(stderr.contains("Reloaded the configuration"), "{stderr}");
    assert!(stderr.contains("Kept the running configuration"), "{stderr}");
    assert!(!stderr.contains(KEY));

    // Nothing lost: every success recorded was received; one more sync converges.
    let accepted = mock.accepted();
    for (_, id, outcome) in env.audit().await {
        assert!(
            outcome != "success" || accepted.contains(&id),
            "audit claims {id}"
        );
    }
    mock.lock().delay = Duration::ZERO;
    let mut cmd = env.command(&["sync"]);
    cmd.env("TEST_OFFICE_KEY", KEY);
    Run::from(cmd.output().await.expect("sync")).expect_code(0);
    let mut want = expected_state(&many);
    for (k, v) in expected_state(GROUPS) {
        want.entry(k).or_insert(v);
    }
    assert_eq!(mock.groups(), want);
}

/// A restarted service reports the last success the state database records, not
/// "never", until its own first run: the "no successful sync" alert does not fire
/// on every restart.
#[tokio::test]
async fn a_restarted_service_reports_the_last_recorded_success() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    let port = free_port();
    // Once a year: the service does not run during the test.
    let yearly = config(&mock, port, ".*").replace("*/2 * * * * *", "0 0 0 1 1 *");
    env.write("dirsync.toml", &yearly);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut sync = env.command(&["sync"]);
    sync.env("TEST_OFFICE_KEY", KEY);
    Run::from(sync.output().await.expect("sync")).expect_code(0);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // A later `verify --repair` records a run of its own: not a sync's success.
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
    let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open");
    sqlx::query(
        "INSERT INTO runs (id, command, dry_run, started_at, finished_at, outcome) \
         VALUES ('ffffffff-ffff-7fff-bfff-ffffffffffff', 'verify', 0, '2099-01-01T00:00:00Z', '2099-01-01T00:00:01Z', 'success')",
    )
    .execute(&pool)
    .await
    .expect("a verify run");
    pool.close().await;

    let mut child = env
        .command(&["run"])
        .env("TEST_OFFICE_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            break r.text().await.expect("body");
        }
        assert!(Instant::now() < deadline, "the service never served /metrics");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let at = parse_metrics(&text)
        .get("dirsync_last_success_timestamp_seconds")
        .copied()
        .unwrap_or_else(|| panic!("no last success in {text}"));
    // The stored end time has millisecond precision.
    assert!(
        before - 0.001 <= at && at <= after + 0.001,
        "{at} is not the sync's end ({before}..{after})"
    );
    assert!(
        !parse_metrics(&text).contains_key("dirsync_runs_total{outcome=\"success\"}"),
        "the service ran during the test: {text}"
    );
}

/// A resync that falls due while a sync is under way runs once the sync ends, not a
/// day later: the schedule is the safety net of a service whose directory changes
/// often, and a busy service must not lose it.
#[tokio::test]
async fn a_resync_due_during_a_sync_runs_after_it() {
    let mock = GroupMembersApi::start().await;
    // The sync at start's request takes 8 s: it is under way when the resync falls
    // due, 4 to 5 s after the start.
    mock.lock().delay = Duration::from_secs(8);
    let env = Env::new();
    env.write("users.csv", &users_csv(2));
    env.write("groups.csv", &groups_csv(&GROUPS[..1]));
    // Cron has whole seconds.
    let tick = (chrono::Local::now() + chrono::Duration::seconds(5))
        .with_nanosecond(0)
        .expect("a whole second");
    let resync = tick.format("%S %M %H * * *");
    env.write(
        "dirsync.toml",
        &(config_group_members(&mock.uri(), "").replace("timeout = \"5s\"", "timeout = \"20s\"")
            + &format!(
                "\n[daemon]\nrun_at_start = true\nresync_schedule = \"{resync}\"\nshutdown_grace = \"10s\"\n"
            )),
    );
    let child = start_service(&env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.request_count().await == 0 {
        assert!(Instant::now() < deadline, "no request reached the target");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(chrono::Local::now() < tick, "the service took too long to start");
    // Only that first request is slow.
    mock.lock().delay = Duration::ZERO;
    let db = env.db();
    let deadline = Instant::now() + Duration::from_secs(30);
    let commands = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if db.exists() {
            let pool = common::sqlite(&db).await;
            let commands: Vec<String> =
                sqlx::query_scalar("SELECT command FROM runs WHERE outcome IS NOT NULL ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
            pool.close().await;
            if commands.len() >= 2 {
                break commands;
            }
        }
        assert!(Instant::now() < deadline, "the resync never ran");
    };
    let stderr = common::stop_service(child).await;
    assert_eq!(commands[..2], ["sync", "resync"], "{stderr}");
    assert!(
        stderr.contains("Running what fell due while the service was busy.")
            && !stderr.contains("skipped the ticks"),
        "{stderr}"
    );
    mock.assert_no_violations();
}

/// A reload takes a new `healthy_within`: the service that stopped succeeding turns
/// unhealthy as soon as the reloaded config says.
#[tokio::test]
async fn a_reloaded_healthy_within_applies() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    let port = free_port();
    let hour = config(&mock, port, ".*") + "healthy_within = \"1h\"\n";
    env.write("dirsync.toml", &hour);
    let child = start_service(&env);
    let pid = child.id().expect("pid");
    wait_for("the scheduled sync", || mock.groups() == expected_state(GROUPS)).await;
    let client = reqwest::Client::new();
    let health = || async {
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status()
            .as_u16()
    };
    // The source breaks: the runs fail, within an hour of the last success.
    std::fs::remove_file(env.path("groups.csv")).expect("remove");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health().await, 200, "within an hour of the last success");

    env.write("dirsync.toml", &hour.replace("\"1h\"", "\"1s\""));
    kill(pid, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while health().await != 503 {
        assert!(Instant::now() < deadline, "still healthy after the reload");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stderr = common::stop_service(child).await;
    assert!(stderr.contains("Reloaded the configuration"), "{stderr}");
}

/// The last success before a restart counts for /healthz: a service restarted while
/// its runs fail stays healthy within `healthy_within` of that success, as its
/// metrics say.
#[tokio::test]
async fn a_restarted_service_is_healthy_within_the_last_success_before_it() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    let port = free_port();
    let text = config(&mock, port, ".*") + "healthy_within = \"1h\"\nrun_at_start = true\n";
    env.write("dirsync.toml", &text);
    env.run(&["sync"], &[("TEST_OFFICE_KEY", KEY)])
        .await
        .expect_code(0);

    // The source breaks, then the service starts: its runs fail.
    std::fs::remove_file(env.path("groups.csv")).expect("remove");
    let child = start_service(&env);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let answer = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await;
        if let Ok(answer) = answer {
            let status = answer.status().as_u16();
            let body = answer.text().await.unwrap_or_default();
            if body.contains("last success") || status != 200 {
                break (status, body);
            }
        }
        assert!(Instant::now() < deadline, "no run ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = common::stop_service(child).await;
    assert_eq!(body.0, 200, "{}\n{stderr}", body.1);
    assert!(body.1.contains("ok: the last success was"), "{}", body.1);
}

/// A stop while the target asked to wait (`Retry-After`) sends nothing more: the
/// run records the operation as failed and ends at once, instead of waiting out
/// the pause and the grace period and ending unrecorded.
#[tokio::test]
async fn a_stop_during_a_retry_after_pause_ends_the_run_at_once() {
    let mock = GroupMembersApi::start().await;
    mock.lock().faults.extend((0..5).map(|_| Fault::Unavailable(20)));
    let env = Env::new();
    env.write("users.csv", &users_csv(2));
    env.write("groups.csv", &groups_csv(&GROUPS[..1]));
    let config = config_group_members(&mock.uri(), "")
        .replace("max_attempts = 2", "max_attempts = 5\nmax_retry_after = \"60s\"")
        + "\n[daemon]\nrun_at_start = true\nshutdown_grace = \"30s\"\n";
    env.write("dirsync.toml", &config);
    let child = start_service(&env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.request_count().await == 0 {
        assert!(Instant::now() < deadline, "no request reached the target");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let stderr = common::stop_service(child).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "took {:?} to stop: {stderr}",
        stopping.elapsed()
    );
    assert_eq!(mock.request_count().await, 1, "{stderr}");
    assert!(
        stderr.contains("not sent again: the run is stopping") && !stderr.contains("grace period ended"),
        "{stderr}"
    );
    let pool = common::sqlite(&env.db()).await;
    let unfinished: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE outcome IS NULL")
        .fetch_one(&pool)
        .await
        .expect("runs");
    assert_eq!(unfinished, 0, "every run is recorded as finished");
}

/// A target that a reload removes leaves /metrics with its gauges, so that its last
/// held removals or invalid entities do not keep an alert firing.
#[tokio::test]
async fn a_target_removed_by_a_reload_leaves_its_gauges() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    let port = free_port();
    let office = config(&mock, port, ".*");
    env.write("dirsync.toml", &office);
    let child = start_service(&env);
    let pid = child.id().expect("pid");
    let client = reqwest::Client::new();
    // Empty until the server listens.
    let metrics = || async {
        match client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(answer) => answer.text().await.expect("body"),
            Err(_) => String::new(),
        }
    };
    let gauge = |target: &str| format!("dirsync_invalid_entities{{target=\"{target}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics().await.contains(&gauge("office")) {
        assert!(Instant::now() < deadline, "no run reported the target");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    env.write(
        "dirsync.toml",
        &office.replace("targets.office", "targets.renamed"),
    );
    kill(pid, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = metrics().await;
        if text.contains(&gauge("renamed")) {
            break text;
        }
        assert!(Instant::now() < deadline, "no run reported the renamed target");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for name in ["dirsync_invalid_entities", "dirsync_held_removals"] {
        assert!(
            !text.contains(&format!("{name}{{target=\"office\"}}")),
            "{name} of the removed target is still served:\n{text}"
        );
    }
    let stderr = common::stop_service(child).await;
    assert!(stderr.contains("Reloaded the configuration"), "{stderr}");
}
