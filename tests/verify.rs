//! `dirsync verify` against a generic HTTP target that describes a `read_group`
//! endpoint: a stateful mock whose groups can be changed behind dirsync's back. Drift
//! is found, `--repair` corrects it through a normal (audited, safety-checked) sync,
//! an answer that does not match the pointers is a per-group error naming them, a
//! target without `read_group` is reported as not verifiable, the run lock keeps
//! verify from racing a sync, and the service's `verify_schedule` exports the drift.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, config_csv, expected_state, group_uuid, groups_csv, target_common, users_csv, uuid};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const GROUPS: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[4, 5])];

/// How the mock answers a read of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadAnswer {
    /// `{"data": {"members": [{"user": {"id": …}}, …]}}`.
    Members,
    /// The list under another key than the pointer names.
    ElsewhereInTheAnswer,
    /// One item of the list without the id.
    ItemWithoutId,
    /// 403: the caller may not read the group.
    Forbidden,
}

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<String, BTreeSet<String>>,
    /// Groups read with another answer than `ReadAnswer::Members`.
    answers: BTreeMap<String, ReadAnswer>,
    /// (method, path) of every request.
    seen: Vec<(String, String)>,
}

/// A generic REST API: `PUT /groups/{id}` with `{"members": [ids]}` replaces a
/// group's members; `GET /groups/{id}/members` lists them as objects; an unknown
/// group is 404.
struct Api {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl Api {
    async fn start() -> Api {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Responder(Arc::clone(&state)))
            .mount(&server)
            .await;
        Api { server, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("mock state")
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.lock().groups.clone()
    }

    /// The requests seen since the last call.
    fn take_seen(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.lock().seen)
    }

    /// Someone edits group `k` in the target itself.
    fn edit(&self, k: u64, add: &[u64], remove: &[u64]) {
        let mut state = self.lock();
        let group = state.groups.entry(group_uuid(k)).or_default();
        group.extend(add.iter().map(|i| uuid(*i)));
        group.retain(|m| !remove.iter().any(|i| uuid(*i) == *m));
    }
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().expect("mock state");
        let path = req.url.path().to_owned();
        state.seen.push((req.method.to_string(), path.clone()));
        let Some(rest) = path.strip_prefix("/groups/") else {
            return ResponseTemplate::new(404);
        };
        match (req.method.as_str(), rest.strip_suffix("/members")) {
            ("GET", Some(id)) => {
                let Some(members) = state.groups.get(id) else {
                    return ResponseTemplate::new(404).set_body_string(r#"{"error": "no such group"}"#);
                };
                let mut items: Vec<serde_json::Value> = members
                    .iter()
                    .map(|m| serde_json::json!({ "user": { "id": m } }))
                    .collect();
                let body = match state.answers.get(id).copied().unwrap_or(ReadAnswer::Members) {
                    ReadAnswer::Members => serde_json::json!({ "data": { "members": items } }),
                    ReadAnswer::ElsewhereInTheAnswer => serde_json::json!({ "data": { "people": items } }),
                    ReadAnswer::ItemWithoutId => {
                        items.push(serde_json::json!({ "user": { "name": "someone" } }));
                        serde_json::json!({ "data": { "members": items } })
                    }
                    ReadAnswer::Forbidden => {
                        return ResponseTemplate::new(403)
                            .set_body_json(serde_json::json!({ "error": "forbidden" }));
                    }
                };
                ResponseTemplate::new(200).set_body_json(body)
            }
            ("PUT", None) => {
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let Some(members) = body["members"].as_array() else {
                    return ResponseTemplate::new(400);
                };
                let ids = members
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect();
                state.groups.insert(rest.to_owned(), ids);
                ResponseTemplate::new(204)
            }
            _ => ResponseTemplate::new(405),
        }
    }
}

/// A target `name` of the generic API; with `read`, it has the `read_group` endpoint.
fn target(name: &str, base_url: &str, read: bool) -> String {
    let mut t = target_common(name, "", base_url)
        + &format!(
            r#"
[targets.{name}.safety]
max_removed_memberships = 3

[targets.{name}.endpoints.group_members]
method = "PUT"
path = "/groups/{{{{ group.id }}}}"
body = '{{"members": {{{{ members }}}}}}'
"#
        );
    if read {
        t += &format!(
            r#"
[targets.{name}.endpoints.read_group]
path = "/groups/{{{{ group.id }}}}/members"
response_members = {{ pointer = "/data/members", id_pointer = "/user/id" }}
"#
        );
    }
    t
}

fn setup(targets: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(12));
    env.write("groups.csv", &groups_csv(GROUPS));
    env.write("dirsync.toml", &config_csv(targets));
    env
}

/// A synced setup with one target, `api`, that reads groups back.
async fn synced(api: &Api) -> Env {
    let env = setup(&target("api", &api.server.uri(), true));
    env.dirsync(&["sync"]).await.expect_code(0);
    assert_eq!(api.groups(), expected_state(GROUPS));
    api.take_seen();
    env
}

#[tokio::test]
async fn verify_reports_members_added_and_removed_behind_dirsyncs_back() {
    let api = Api::start().await;
    let env = synced(&api).await;
    let clean = env.dirsync(&["verify"]).await;
    clean.expect_code(0);
    assert!(
        clean.stdout.contains("2 group(s) checked, 0 with drift"),
        "{}",
        clean.stdout
    );
    let seen = api.take_seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|(m, p)| m == "GET" && p.ends_with("/members")),
        "{seen:?}"
    );

    api.edit(0, &[9], &[]);
    api.edit(1, &[], &[4]);
    let found = env.dirsync(&["verify"]).await;
    found.expect_code(3);
    let out = &found.stdout;
    assert!(
        out.contains(&format!("added in the target: {}", uuid(9))),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed in the target: {}", uuid(4))),
        "{out}"
    );
    assert!(
        out.contains("2 group(s) checked, 2 with drift (2 member(s))"),
        "{out}"
    );

    let json = env.dirsync(&["verify", "--json"]).await;
    json.expect_code(3);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON report");
    assert_eq!(report["drift"][0]["group"], group_uuid(0));
    assert_eq!(report["drift"][0]["added"], serde_json::json!([uuid(9)]));
    assert_eq!(report["drift"][1]["removed"], serde_json::json!([uuid(4)]));
    assert_eq!(report["targets"][0]["drifted_members"], 2);
    assert_eq!(report["marked"], false);
    // Verifying reads; it sends nothing and marks nothing.
    assert!(api.take_seen().iter().all(|(m, _)| m == "GET"));
    assert_eq!(api.groups()[&group_uuid(1)].len(), 1);
    assert!(!env.audit().await.iter().any(|(op, _, _)| op == "verify"));
}

#[tokio::test]
async fn repair_corrects_drift_through_an_audited_sync_within_the_safety_limits() {
    let api = Api::start().await;
    let env = synced(&api).await;
    api.edit(0, &[9], &[1]);
    // A group deleted by hand is drift too: the repair's sync sends its list again.
    api.lock().groups.remove(&group_uuid(1));

    let repaired = env.dirsync(&["verify", "--repair"]).await;
    repaired.expect_code(0);
    assert!(
        repaired.stdout.contains("not in the target"),
        "{}",
        repaired.stdout
    );
    assert_eq!(api.groups(), expected_state(GROUPS));
    let audit = env.audit().await;
    let verify_rows: Vec<&str> = audit
        .iter()
        .filter(|(op, _, outcome)| op == "verify" && outcome == "drift")
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(verify_rows, [group_uuid(0), group_uuid(1)]);
    let tail: Vec<(&str, &str)> = audit[audit.len() - 2..]
        .iter()
        .map(|(op, _, outcome)| (op.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        tail,
        [("replace_members", "success"), ("replace_members", "success")]
    );
    env.dirsync(&["verify"]).await.expect_code(0);

    // With --json, standard output is the report alone, repair or not.
    api.edit(1, &[9], &[]);
    let json = env.dirsync(&["verify", "--json", "--repair"]).await;
    json.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("the JSON report alone");
    assert_eq!(report["marked"], true, "{report}");
    assert_eq!(api.groups(), expected_state(GROUPS));

    // Four members added by hand: removing them crosses `max_removed_memberships = 3`,
    // so the repair's sync holds the removals for approval, as any sync would.
    api.edit(0, &[7, 8, 9, 10], &[]);
    env.dirsync(&["verify", "--repair"]).await.expect_code(4);
    assert_eq!(api.groups()[&group_uuid(0)].len(), 7);
    let held = env.dirsync(&["held"]).await;
    held.expect_code(0);
    assert!(
        held.stdout
            .contains("target api: 4 membership removal(s), 0 disable(s)"),
        "{}",
        held.stdout
    );
}

#[tokio::test]
async fn an_answer_that_does_not_match_the_pointers_is_an_error_for_that_group_only() {
    let api = Api::start().await;
    let groups: &[(&str, &[u64])] = &[("eng", &[1, 2]), ("ops", &[3]), ("sales", &[4])];
    let env = setup(&target("api", &api.server.uri(), true));
    env.write("groups.csv", &groups_csv(groups));
    env.dirsync(&["sync"]).await.expect_code(0);
    {
        let mut state = api.lock();
        state
            .answers
            .insert(group_uuid(1), ReadAnswer::ElsewhereInTheAnswer);
        state.answers.insert(group_uuid(2), ReadAnswer::ItemWithoutId);
    }
    api.edit(0, &[5], &[]);

    let run = env.dirsync(&["verify"]).await;
    run.expect_code(3);
    let out = &run.stdout;
    let line = |k: u64| {
        out.lines()
            .find(|l| l.contains(&group_uuid(k)))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line(0).contains("+1 -0 member(s) differ"), "{out}");
    let ops = line(1);
    assert!(ops.contains("cannot read its members"), "{out}");
    assert!(ops.contains("`endpoints.read_group.response_members`"), "{out}");
    assert!(ops.contains("nothing at `/data/members`"), "{out}");
    let sales = line(2);
    assert!(
        sales.contains("item 1 of `/data/members` has no member id at `/user/id`"),
        "{out}"
    );
    assert!(
        out.contains("1 group(s) checked, 1 with drift (1 member(s)), 2 could not be read"),
        "{out}"
    );

    // A repair corrects what it could read and leaves the unreadable groups alone.
    env.dirsync(&["verify", "--repair"]).await.expect_code(3);
    assert_eq!(api.groups(), expected_state(groups));
}

/// A token that may write groups but not read them fails every read alike: after
/// `max_consecutive_failures` failed reads in a row the target is not read further.
#[tokio::test]
async fn reads_stop_after_max_consecutive_failures() {
    let api = Api::start().await;
    let groups: Vec<(String, Vec<u64>)> = (0..12).map(|k| (format!("g{k}"), vec![1, 2])).collect();
    let groups: Vec<(&str, &[u64])> = groups.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect();
    let config = target("api", &api.server.uri(), true)
        .replace("concurrency = 4", "concurrency = 1\nmax_consecutive_failures = 3");
    let env = setup(&config);
    env.write("groups.csv", &groups_csv(&groups));
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_seen();
    {
        let mut state = api.lock();
        for k in 0..12 {
            state.answers.insert(group_uuid(k), ReadAnswer::Forbidden);
        }
    }

    let run = env.dirsync(&["verify"]).await;
    run.expect_code(3);
    assert_eq!(api.take_seen().len(), 3, "{}", run.stdout);
    assert!(
        run.stdout.contains("not read: 3 reads in a row failed before it"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("12 could not be read"), "{}", run.stdout);
}

#[tokio::test]
async fn a_target_without_read_group_is_reported_as_not_verifiable() {
    let api = Api::start().await;
    let plain = Api::start().await;
    let targets = target("api", &api.server.uri(), true) + &target("plain", &plain.server.uri(), false);
    let env = setup(&targets);
    env.dirsync(&["sync"]).await.expect_code(0);
    plain.take_seen();

    let all = env.dirsync(&["verify"]).await;
    all.expect_code(3);
    assert!(
        all.stdout
            .contains("target plain: not verified: it has no way to read a group's members back"),
        "{}",
        all.stdout
    );
    assert!(all.stdout.contains("`endpoints.read_group`"), "{}", all.stdout);
    assert!(
        all.stdout
            .contains("2 group(s) checked, 0 with drift (0 member(s)); 1 target(s) not verifiable"),
        "{}",
        all.stdout
    );
    env.dirsync(&["verify", "--target", "api"]).await.expect_code(0);
    let only = env.dirsync(&["verify", "--target", "plain", "--json"]).await;
    only.expect_code(3);
    let report: serde_json::Value = serde_json::from_str(&only.stdout).expect("JSON report");
    assert_eq!(report["not_verifiable"][0]["target"], "plain");
    assert_eq!(report["groups_checked"], 0);
    assert_eq!(plain.take_seen(), []);
}

#[tokio::test]
async fn verify_and_its_repair_take_the_run_lock() {
    let api = Api::start().await;
    let env = synced(&api).await;
    api.edit(0, &[9], &[]);
    // A sync holds the lock (as `sync::run` takes it: the state database's `.lock`).
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.path("state.db.lock"))
        .expect("lock file");
    held.try_lock().expect("lock");
    let locked = env.dirsync(&["verify", "--repair"]).await;
    locked.expect_code(7);
    assert!(
        locked.stderr.contains("another sync is running"),
        "{}",
        locked.stderr
    );
    assert_eq!(api.take_seen(), [], "nothing is read while a sync runs");
    assert!(!env.audit().await.iter().any(|(op, _, _)| op == "verify"));

    // With --wait, it starts once the sync is over.
    let mut waiting = env
        .command(&["verify", "--repair", "--wait"])
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waiting.try_wait().expect("status").is_none(),
        "verify waits for the lock"
    );
    assert_eq!(api.take_seen(), []);
    held.unlock().expect("unlock");
    let status = waiting.wait().await.expect("verify ends");
    assert_eq!(status.code(), Some(0));
    assert_eq!(api.groups(), expected_state(GROUPS));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The value of the sample `name` in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_service_verifies_on_its_schedule_and_exports_the_drift() {
    let api = Api::start().await;
    let env = synced(&api).await;
    api.edit(0, &[9, 10], &[1]);
    let port = free_port();
    let config = config_csv(&target("api", &api.server.uri(), true))
        + &format!("\n[daemon]\nverify_schedule = \"* * * * * *\"\nlisten = \"127.0.0.1:{port}\"\n");
    env.write("dirsync.toml", &config);
    let mut child = env
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let drift = "dirsync_drift_members{target=\"api\"}";
    let stamp = "dirsync_last_verify_timestamp_seconds{target=\"api\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = client.get(&url).send().await {
            let text = r.text().await.expect("body");
            if sample(&text, drift).is_some() {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no verify in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&text, drift), Some(3.0), "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let at = sample(&text, stamp).expect("timestamp");
    assert!((now - 60.0..=now + 1.0).contains(&at), "{at} vs {now}");
    // A scheduled verify reports; it does not repair.
    assert_eq!(api.groups()[&group_uuid(0)].len(), 4);
    assert!(api.take_seen().iter().all(|(m, _)| m == "GET"));

    // Corrected in the target, the next verify reads 0.
    api.edit(0, &[1], &[9, 10]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .get(&url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        if sample(&text, drift) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the drift gauge stayed up:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}

/// A target that holds a member's GUID in another spelling (braces, upper case)
/// holds that member: no drift, and nothing for `--repair` to send again.
#[tokio::test]
async fn a_guid_held_in_another_spelling_is_no_drift() {
    let api = Api::start().await;
    let env = synced(&api).await;
    for members in api.lock().groups.values_mut() {
        *members = members
            .iter()
            .map(|m| format!("{{{}}}", m.to_uppercase()))
            .collect();
    }
    let run = env.dirsync(&["verify"]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains("2 group(s) checked, 0 with drift"),
        "{}",
        run.stdout
    );
}
