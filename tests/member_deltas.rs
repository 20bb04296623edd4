//! Member deltas in the generic HTTP target: with `add_members` and `remove_members`
//! endpoints, a changed group sends only what it gains and loses, in requests of at
//! most `max_members_per_request` members, against a stateful mock that refuses
//! larger ones; the snapshot follows each confirmed request.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use common::{Env, config_csv, expected_state, group_uuid, groups_csv, users_csv, uuid};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Members one delta request may carry, in the mock and in the config.
const LIMIT: usize = 3;

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<String, BTreeSet<String>>,
    /// (operation, group id, member count) of every request applied.
    applied: Vec<(&'static str, String, usize)>,
    violations: Vec<String>,
    /// Statuses for the next delta requests, one each (`None`: serve it).
    faults: VecDeque<Option<u16>>,
    /// Once this many requests were applied, each is applied but its answer held
    /// back for a minute (a run killed meanwhile never hears of it).
    hang_after: Option<usize>,
}

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

    /// The requests applied since the last call.
    fn take_applied(&self) -> Vec<(&'static str, String, usize)> {
        std::mem::take(&mut self.lock().applied)
    }
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().expect("mock state");
        let path = req.url.path().to_owned();
        let Some(rest) = path.strip_prefix("/groups/") else {
            state.violations.push(format!("unknown path {path}"));
            return ResponseTemplate::new(404);
        };
        let (id, op) = match (req.method.as_str(), rest.split_once('/')) {
            ("PUT", None) => (rest.to_owned(), "replace"),
            ("POST", Some((id, "members"))) => (id.to_owned(), "add"),
            ("POST", Some((id, "members/remove"))) => (id.to_owned(), "remove"),
            _ => {
                state.violations.push(format!("{} {path}", req.method));
                return ResponseTemplate::new(404);
            }
        };
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let Some(members) = body["members"].as_array() else {
            state.violations.push(format!("{op} {id}: no members array"));
            return ResponseTemplate::new(400);
        };
        let ids: BTreeSet<String> = members
            .iter()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect();
        if op != "replace" {
            if ids.len() > LIMIT || ids.is_empty() {
                state
                    .violations
                    .push(format!("{op} {id}: {} members (limit {LIMIT})", ids.len()));
                return ResponseTemplate::new(413);
            }
            if let Some(Some(status)) = state.faults.pop_front() {
                return ResponseTemplate::new(status).set_body_string("{\"error\":\"refused\"}");
            }
        }
        let group = state.groups.entry(id.clone()).or_default();
        match op {
            "replace" => *group = ids.clone(),
            "add" => group.extend(ids.iter().cloned()),
            _ => group.retain(|m| !ids.contains(m)),
        }
        state.applied.push((op, id, ids.len()));
        if state.hang_after.is_some_and(|n| state.applied.len() > n) {
            return ResponseTemplate::new(204).set_delay(std::time::Duration::from_secs(60));
        }
        ResponseTemplate::new(204)
    }
}

fn target(base_url: &str) -> String {
    format!(
        r#"
[targets.deltas]
base_url = "{base_url}"
timeout = "5s"
concurrency = 4
max_members_per_request = {LIMIT}

[targets.deltas.retry]
max_attempts = 1

[targets.deltas.safety]
max_removed_memberships_percent = 0
max_removed_members_per_group_percent = 0

[[targets.deltas.groups.rules]]
match = ".*"
target_id = "{{{{ group.attrs.tid }}}}"

[targets.deltas.users]
id_attribute = "tid"

[targets.deltas.endpoints.group_members]
method = "PUT"
path = "/groups/{{{{ group.id }}}}"
body = '{{"members": {{{{ members }}}}}}'

[targets.deltas.endpoints.add_members]
method = "POST"
path = "/groups/{{{{ group.id }}}}/members"
body = '{{"members": {{{{ members }}}}}}'

[targets.deltas.endpoints.remove_members]
method = "POST"
path = "/groups/{{{{ group.id }}}}/members/remove"
body = '{{"members": {{{{ members }}}}}}'
"#
    )
}

fn setup(api: &Api, groups: &[(&str, &[u64])]) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(40));
    env.write("groups.csv", &groups_csv(groups));
    env.write("dirsync.toml", &config_csv(&target(&api.server.uri())));
    env
}

fn range(lo: u64, hi: u64) -> Vec<u64> {
    (lo..=hi).collect()
}

/// The snapshot's groups of the one target.
async fn snapshot(env: &Env) -> BTreeMap<String, BTreeSet<String>> {
    env.snapshot()
        .await
        .into_iter()
        .map(|((_, id), members)| (id, members))
        .collect()
}

#[tokio::test]
async fn a_change_sends_only_the_added_and_removed_members_in_requests_of_at_most_the_limit() {
    let api = Api::start().await;
    let (big, small) = (range(1, 20), range(1, 5));
    let env = setup(&api, &[("big", &big), ("small", &small)]);
    env.dirsync(&["sync"]).await.expect_code(0);
    let first = api.take_applied();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|(op, _, _)| *op == "replace"), "{first:?}");

    // Seven members join the big group and four leave it.
    let changed = [range(5, 27), small.clone()];
    env.write(
        "groups.csv",
        &groups_csv(&[("big", &changed[0]), ("small", &changed[1])]),
    );
    env.dirsync(&["sync"]).await.expect_code(0);
    let big_id = group_uuid(0);
    let sent = api.take_applied();
    let ops: Vec<(&str, usize)> = sent.iter().map(|(op, _, n)| (*op, *n)).collect();
    assert_eq!(
        ops,
        [("add", 3), ("add", 3), ("add", 1), ("remove", 3), ("remove", 1)]
    );
    assert!(sent.iter().all(|(_, id, _)| *id == big_id), "{sent:?}");
    let want = expected_state(&[("big", &changed[0]), ("small", &changed[1])]);
    assert_eq!(api.lock().groups, want);
    assert_eq!(snapshot(&env).await, want);
    let audited: Vec<String> = env
        .audit()
        .await
        .into_iter()
        .skip(2)
        .map(|(op, _, _)| op)
        .collect();
    assert_eq!(
        audited,
        [
            "add_members",
            "add_members",
            "add_members",
            "remove_members",
            "remove_members"
        ]
    );

    // Converged: nothing more to send.
    env.dirsync(&["sync"]).await.expect_code(0);
    assert_eq!(api.take_applied(), []);
    assert!(api.lock().violations.is_empty(), "{:?}", api.lock().violations);
}

#[tokio::test]
async fn a_change_larger_than_the_group_and_a_resync_send_the_whole_list() {
    let api = Api::start().await;
    let env = setup(&api, &[("small", &range(1, 5))]);
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_applied();

    // Seven in, five out: twelve changes to a group of seven.
    let now = range(6, 12);
    env.write("groups.csv", &groups_csv(&[("small", &now)]));
    env.dirsync(&["sync"]).await.expect_code(0);
    assert_eq!(api.take_applied(), [("replace", group_uuid(0), 7)]);

    env.write("groups.csv", &groups_csv(&[("small", &range(6, 13))]));
    env.dirsync(&["resync"]).await.expect_code(0);
    assert_eq!(api.take_applied(), [("replace", group_uuid(0), 8)]);
    assert!(api.lock().violations.is_empty(), "{:?}", api.lock().violations);
}

/// A run killed while the second of a group's delta requests is under way (applied,
/// its answer not heard): the next run sends the group's whole list, even though the
/// source went back to what it was, since the target may hold either part.
#[tokio::test]
async fn a_run_killed_between_a_groups_delta_requests_leaves_the_group_to_send_whole() {
    let api = Api::start().await;
    let env = setup(&api, &[("g", &range(1, 20))]);
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_applied();

    env.write("groups.csv", &groups_csv(&[("g", &range(1, 28))]));
    api.lock().hang_after = Some(1);
    let mut child = env.command(&["sync"]).spawn().expect("spawn");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while api.lock().applied.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second request never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    assert_eq!(api.take_applied().len(), 2, "two of the three requests applied");

    api.lock().hang_after = None;
    env.write("groups.csv", &groups_csv(&[("g", &range(1, 20))]));
    env.dirsync(&["sync"]).await.expect_code(0);
    assert_eq!(api.take_applied(), [("replace", group_uuid(0), 20)]);
    assert_eq!(api.lock().groups, expected_state(&[("g", &range(1, 20))]));
}

/// A group change the target refused, and one never sent because the run stopped,
/// keep their rows as confirmed: the next run sends them as deltas again, not as
/// whole lists.
#[tokio::test]
async fn a_refused_or_unsent_delta_goes_as_a_delta_next_time() {
    let api = Api::start().await;
    let env = setup(&api, &[("a", &range(1, 20)), ("b", &range(1, 20))]);
    let one_at_a_time = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("concurrency = 4", "concurrency = 1");
    env.write("dirsync.toml", &one_at_a_time);
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_applied();

    // Each group gains one member; the first request is refused with 401, which
    // stops the run before the second is sent.
    env.write(
        "groups.csv",
        &groups_csv(&[("a", &range(1, 21)), ("b", &range(1, 21))]),
    );
    api.lock().faults = VecDeque::from([Some(401)]);
    env.dirsync(&["sync"]).await.expect_code(3);
    assert_eq!(api.take_applied(), []);

    env.dirsync(&["sync"]).await.expect_code(0);
    assert_eq!(
        api.take_applied(),
        [("add", group_uuid(0), 1), ("add", group_uuid(1), 1)]
    );
}

#[tokio::test]
async fn a_refused_delta_keeps_the_confirmed_ones_and_the_next_run_sends_the_rest() {
    let api = Api::start().await;
    let env = setup(&api, &[("g", &range(1, 20))]);
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_applied();

    // Eight members join: three requests; the second one is refused.
    let now = range(1, 28);
    env.write("groups.csv", &groups_csv(&[("g", &now)]));
    api.lock().faults = VecDeque::from([None, Some(400)]);
    env.dirsync(&["sync"]).await.expect_code(3);
    assert_eq!(api.take_applied(), [("add", group_uuid(0), 3)]);
    let first_part: BTreeSet<String> = range(1, 23).iter().map(|i| uuid(*i)).collect();
    assert_eq!(api.lock().groups[&group_uuid(0)], first_part);
    assert_eq!(snapshot(&env).await[&group_uuid(0)], first_part);
    let outcomes: Vec<(String, String)> = env
        .audit()
        .await
        .into_iter()
        .skip(1)
        .map(|(op, _, outcome)| (op, outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("add_members".to_owned(), "success".to_owned()),
            ("add_members".to_owned(), "failed".to_owned()),
        ]
    );

    // The next run adds only the five still missing, in two requests.
    env.dirsync(&["sync"]).await.expect_code(0);
    assert_eq!(
        api.take_applied(),
        [("add", group_uuid(0), 3), ("add", group_uuid(0), 2)]
    );
    let want = expected_state(&[("g", &now)]);
    assert_eq!(api.lock().groups, want);
    assert_eq!(snapshot(&env).await, want);
    assert!(api.lock().violations.is_empty(), "{:?}", api.lock().violations);
}

/// A saved plan of member deltas applies as made: each add or remove operation
/// carries the list the group holds once it is confirmed, which `apply` builds
/// again and finds is what was reviewed.
#[tokio::test]
async fn a_saved_plan_of_deltas_applies() {
    let api = Api::start().await;
    let (big, small) = (range(1, 20), range(1, 5));
    let env = setup(&api, &[("big", &big), ("small", &small)]);
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_applied();
    let changed = [range(5, 27), small.clone()];
    env.write(
        "groups.csv",
        &groups_csv(&[("big", &changed[0]), ("small", &changed[1])]),
    );
    let plan = env.path("plan.json").display().to_string();
    env.dirsync(&["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    let run = env.dirsync(&["apply", &plan]).await;
    run.expect_code(0);
    let ops: Vec<&str> = api.take_applied().iter().map(|(op, _, _)| *op).collect();
    assert_eq!(ops, ["add", "add", "add", "remove", "remove"], "{}", run.stderr);
    let want = expected_state(&[("big", &changed[0]), ("small", &changed[1])]);
    assert_eq!(api.lock().groups, want);
    assert_eq!(snapshot(&env).await, want);
}

/// A saved plan whose add or remove operation was edited (other members, or the
/// other direction) is refused by `apply`: the list saved with the operation still
/// builds, but the members it sends would not take the group there.
#[tokio::test]
async fn an_edited_delta_in_a_saved_plan_is_refused() {
    let api = Api::start().await;
    let (big, small) = (range(1, 20), range(1, 5));
    let env = setup(&api, &[("big", &big), ("small", &small)]);
    env.dirsync(&["sync"]).await.expect_code(0);
    api.take_applied();
    env.write(
        "groups.csv",
        &groups_csv(&[("big", &range(5, 27)), ("small", &small)]),
    );
    let plan = env.path("plan.json").display().to_string();
    env.dirsync(&["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    let text = std::fs::read_to_string(&plan).expect("plan");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let remove = saved["targets"][0]["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .position(|op| op["delta"] == "remove")
        .expect("a remove operation");
    let edits: [(&str, serde_json::Value); 2] = [
        ("removed", serde_json::json!([uuid(5), uuid(6)])),
        ("delta", serde_json::json!("add")),
    ];
    for (field, value) in edits {
        let mut edited = saved.clone();
        edited["targets"][0]["operations"][remove][field] = value;
        env.write("plan.json", &edited.to_string());
        let run = env.dirsync(&["apply", &plan]).await;
        run.expect_code(2);
        assert!(
            run.stderr
                .contains("does not take the group's list from what it holds"),
            "{field}: {}",
            run.stderr
        );
        assert_eq!(api.take_applied(), [], "{field}: nothing sent");
    }
}
