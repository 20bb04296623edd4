//! The monitoring kit in `contrib/`: the alert rules pass `promtool check rules` and
//! fire as `tests/fixtures/monitoring/dirsync.rules.test.yml` expects, the
//! /metrics of a service that ran a sync and a verify passes `promtool check
//! metrics`, and every metric the Grafana dashboard and the rules query is one the
//! service exports.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, groups_csv, target_common, users_csv};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const GROUPS: &[(&str, &[u64])] = &[("eng-a", &[1, 2]), ("ops-a", &[3])];

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(path)
}

/// Runs promtool (from Debian's `prometheus` package, which scripts/install-test-deps
/// installs) with `stdin`; returns its exit success and its output.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/install-test-deps installs the `prometheus` package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Every `dirsync_…` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("dirsync_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names of an exposition (the names queries use).
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// A second target, of a generic API whose groups read back empty: every verify
/// finds its members removed.
async fn readable_target() -> (MockServer, String) {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "members": [] })))
        .mount(&server)
        .await;
    let target = target_common("readable", "", &server.uri())
        + r#"
[targets.readable.endpoints.group_members]
path = "/groups/{{ group.id }}"
body = '{"members": {{ members }}}'

[targets.readable.endpoints.read_group]
path = "/groups/{{ group.id }}/members"
response_members = { pointer = "/members" }
"#;
    (server, target)
}

/// Starts `dirsync run` with a sync and a verify schedule a second apart, waits for a
/// successful run and a verify, and returns /metrics in the Prometheus text format
/// and in OpenMetrics.
async fn metrics_after_a_sync() -> (String, String) {
    let mock = GroupMembersApi::start().await;
    let (_readable, readable) = readable_target().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(3));
    env.write("groups.csv", &groups_csv(GROUPS));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    env.write(
        "dirsync.toml",
        &(config_group_members(&mock.uri(), &readable)
            + &format!(
                "\n[daemon]\nschedule = \"* * * * * *\"\nverify_schedule = \"* * * * * *\"\nlisten = \"127.0.0.1:{port}\"\n"
            )),
    );
    let mut child = env
        .command(&["run"])
        .env("TEST_OFFICE_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = client.get(&url).send().await {
            let text = r.text().await.expect("body");
            // Two runs: the first pushes, the second reads an unchanged source; and a
            // verify that read the readable target's groups back.
            if text.contains("dirsync_source_read_seconds_count{mode=\"unchanged\"}")
                && text.contains("dirsync_last_verify_timestamp_seconds{target=\"readable\"}")
            {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no successful run in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let openmetrics = client
        .get(&url)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("metrics");
    assert!(
        openmetrics.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text"),
    );
    let openmetrics = openmetrics.text().await.expect("body");
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    (text, openmetrics)
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = contrib("prometheus/dirsync.rules.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().expect("utf-8 path")], "");
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Each alert fires when it should and not before, on made-up series
/// (`promtool test rules`).
#[test]
fn alert_rules_fire_when_they_should() {
    let cases =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monitoring/dirsync.rules.test.yml");
    let (ok, out) = promtool(&["test", "rules", cases.to_str().expect("utf-8 path")], "");
    assert!(ok, "{out}");
}

#[tokio::test]
async fn metrics_pass_promtool_and_the_kit_queries_only_exported_metrics() {
    let (text, openmetrics) = metrics_after_a_sync().await;

    // promtool lints names, types and help texts; it reads the Prometheus text format.
    let (ok, out) = promtool(&["check", "metrics"], &text);
    assert!(ok && out.trim().is_empty(), "promtool: {out}\n{text}");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert_eq!(exported(&openmetrics), exported(&text));

    let exported = exported(&text);
    for needed in [
        "dirsync_operations_total",
        "dirsync_source_read_seconds_bucket",
        "dirsync_held_removals",
        "dirsync_concurrency_limit",
        "dirsync_last_success_timestamp_seconds",
        "dirsync_target_requests_total",
        "dirsync_propagation_seconds_bucket",
        "dirsync_drift_members",
        "dirsync_last_verify_timestamp_seconds",
    ] {
        assert!(exported.contains(needed), "{needed} missing from\n{text}");
    }

    // The dashboard: valid JSON, a datasource input, and queries of exported metrics.
    let raw = std::fs::read_to_string(contrib("grafana/dirsync.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&raw).expect("the dashboard is valid JSON");
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dash["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} queries no dirsync metric");
            queried.extend(names);
        }
    }
    for name in &queried {
        assert!(
            exported.contains(name),
            "the dashboard queries {name}, which /metrics lacks:\n{text}"
        );
    }
    // Every gauge and counter family the service exports has a panel.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or_default();
        let shown = queried.iter().any(|q| q.starts_with(name));
        assert!(shown, "no dashboard panel shows {name}");
    }

    // The alert rules, too (comments and annotations name only real metrics as well).
    let rules = std::fs::read_to_string(contrib("prometheus/dirsync.rules.yml")).expect("rules");
    for name in metric_names(&rules) {
        assert!(
            exported.contains(&name),
            "the rules name {name}, which /metrics lacks:\n{text}"
        );
    }
}
