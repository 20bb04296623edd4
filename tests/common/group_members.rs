//! A stateful mock of the group-members API, `POST /api/2.0/group/{id}/members`, enforcing the
//! document: POST only, `{id}` a UUID, the API key in the `asc_auth_key` cookie (or a
//! Bearer token), a JSON content type, a body `{"members": [uuid, …]}`. It answers as
//! documented: 200 with the group and its members as objects, 401 otherwise.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const KEY: &str = "864FE52C-1C1C-469F-9308-51DAFEFE7436";

/// What the mock holds and what it saw.
#[derive(Debug, Default)]
pub struct State {
    /// Group id → member ids, as last replaced.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Group id of every accepted request, in order.
    pub accepted: Vec<String>,
    /// Requests refused for breaking the contract, with the reason.
    pub violations: Vec<String>,
    /// Groups whose requests are answered 500 (the state is left unchanged).
    pub fail: BTreeSet<String>,
    /// Groups whose requests are answered 503 only after 60 s (the state is left
    /// unchanged): they keep requests in flight without changing anything.
    pub hang: BTreeSet<String>,
    /// Member ids the target drops silently (a user it does not know).
    pub ignore_members: BTreeSet<String>,
    /// Delay before each answer, to keep requests in flight.
    pub delay: Duration,
    /// Faults for the next requests, one each, in order (after the auth check).
    pub faults: VecDeque<Fault>,
    /// Fail this share of requests with 503, drawn from a seeded generator.
    pub random_failures: Option<(rand::rngs::StdRng, f64)>,
    /// When each request arrived (every request, whatever its answer).
    pub arrivals: Vec<Instant>,
    /// When each 429 was answered.
    pub throttled_at: Vec<Instant>,
    /// Answer in the API's envelope, `{"status": 0, "response": {…}}`.
    pub envelope: bool,
    /// Answer `{}` to applied requests: a confirmation without the members echo.
    pub no_echo: bool,
}

/// A way to answer one request instead of serving it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, state unchanged.
    Status(u16),
    /// 429 with `Retry-After: N` (seconds).
    RetryAfter(u64),
    /// Answer only after this long (past the client's timeout).
    Hang(Duration),
    /// 503 with `Retry-After: N` (seconds): the whole service is unavailable.
    Unavailable(u64),
    /// 200 with this body and content type, without applying anything: a proxy or
    /// SSO gateway that answers in the API's place.
    Fake200 {
        content_type: &'static str,
        body: String,
    },
    /// 400 with this body (text an API may send back in an error).
    Reject(String),
    /// No fault: answered as usual (to place a later fault after some requests).
    None,
}

impl State {
    pub fn fail_randomly(&mut self, seed: u64, share: f64) {
        self.random_failures = Some((rand::rngs::StdRng::seed_from_u64(seed), share));
    }
}

#[derive(Clone)]
pub struct GroupMembersApi {
    pub server: Arc<MockServer>,
    pub state: Arc<Mutex<State>>,
}

impl GroupMembersApi {
    pub async fn start() -> GroupMembersApi {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Responder {
                state: Arc::clone(&state),
            })
            .mount(&server)
            .await;
        GroupMembersApi {
            server: Arc::new(server),
            state,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.lock().groups.clone()
    }

    pub fn accepted(&self) -> Vec<String> {
        self.lock().accepted.clone()
    }

    /// Every request that reached the server, accepted or not.
    pub async fn request_count(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("mock state")
    }

    pub fn assert_no_violations(&self) {
        let v = &self.lock().violations;
        assert!(v.is_empty(), "contract violations: {v:?}");
    }
}

struct Responder {
    state: Arc<Mutex<State>>,
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().expect("mock state");
        state.arrivals.push(Instant::now());
        let delay = state.delay;
        let mut refuse = |status: u16, why: String| {
            state
                .violations
                .push(format!("{} {}: {why}", req.method, req.url.path()));
            ResponseTemplate::new(status)
        };
        if req.method.as_str() != "POST" {
            return refuse(405, "method must be POST".into());
        }
        let path = req.url.path();
        let Some(id) = path
            .strip_prefix("/api/2.0/group/")
            .and_then(|rest| rest.strip_suffix("/members"))
        else {
            return refuse(404, "unknown path".into());
        };
        if !is_uuid(id) {
            return refuse(404, format!("group id `{id}` is not a uuid"));
        }
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let cookie_ok = header("cookie")
            .split(';')
            .any(|c| c.trim() == format!("asc_auth_key={KEY}"));
        let bearer_ok = header("authorization") == format!("Bearer {KEY}");
        if !cookie_ok && !bearer_ok {
            // Wrong credentials are not a contract violation: the document's 401.
            return ResponseTemplate::new(401);
        }
        let ctype = header("content-type")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if !["application/json", "text/json"].contains(&ctype.as_str()) && !ctype.ends_with("+json") {
            return refuse(415, format!("content type `{ctype}`"));
        }
        let body: serde_json::Value = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => return refuse(400, format!("body is not JSON: {e}")),
        };
        let Some(members) = body.get("members").and_then(|m| m.as_array()) else {
            return refuse(400, "body has no `members` array".into());
        };
        let mut ids = BTreeSet::new();
        for m in members {
            match m.as_str() {
                Some(s) if is_uuid(s) => {
                    ids.insert(s.to_owned());
                }
                _ => return refuse(400, format!("member {m} is not a uuid string")),
            }
        }
        if let Some(fault) = state.faults.pop_front().filter(|f| !matches!(f, Fault::None)) {
            return match fault {
                Fault::None => unreachable!("filtered out above"),
                Fault::Status(s) => ResponseTemplate::new(s).set_body_string("fault injected"),
                Fault::RetryAfter(secs) => {
                    state.throttled_at.push(Instant::now());
                    ResponseTemplate::new(429).insert_header("Retry-After", secs.to_string().as_str())
                }
                Fault::Hang(d) => ResponseTemplate::new(503).set_delay(d),
                Fault::Unavailable(secs) => {
                    ResponseTemplate::new(503).insert_header("Retry-After", secs.to_string().as_str())
                }
                Fault::Fake200 { content_type, body } => ResponseTemplate::new(200)
                    .insert_header("content-type", content_type)
                    .set_body_string(body),
                Fault::Reject(body) => ResponseTemplate::new(400)
                    .insert_header("content-type", "application/json")
                    .set_body_string(body),
            };
        }
        if let Some((rng, share)) = state.random_failures.as_mut() {
            let share = *share;
            if rng.random_bool(share) {
                return ResponseTemplate::new(503).set_body_string("random failure");
            }
        }
        if state.hang.contains(id) {
            return ResponseTemplate::new(503).set_delay(Duration::from_secs(60));
        }
        if state.fail.contains(id) {
            return ResponseTemplate::new(500)
                .set_body_string("{\"error\":{\"message\":\"internal error\"}}")
                .set_delay(delay);
        }
        let kept: BTreeSet<String> = ids.difference(&state.ignore_members).cloned().collect();
        state.groups.insert(id.to_owned(), kept.clone());
        state.accepted.push(id.to_owned());
        let members: Vec<serde_json::Value> = kept
            .iter()
            .map(|m| serde_json::json!({ "id": m, "displayName": format!("user {m}") }))
            .collect();
        let group = serde_json::json!({
            "id": id,
            "name": format!("group {id}"),
            "isLDAP": false,
            "members": members,
            "membersCount": kept.len(),
            "shared": false,
        });
        let answer = match (state.no_echo, state.envelope) {
            (true, _) => serde_json::json!({}),
            (false, true) => serde_json::json!({ "status": 0, "response": group }),
            (false, false) => group,
        };
        ResponseTemplate::new(200).set_body_json(answer).set_delay(delay)
    }
}
