//! The `scim2` preset against the reference SCIM 2.0 server (python-scim's
//! `scim2-server`, installed by `scripts/install-test-deps`), started on a free
//! loopback port per test behind a recording proxy; and, against wiremock, a SCIM
//! error body, a service that answers another `userName` than the one sent, and a
//! service without PATCH.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{Env, config_csv};
use sqlx::Row;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "scim-test-token-7f3a";
const VARS: &[(&str, &str)] = &[("TEST_SCIM_TOKEN", TOKEN)];

/// The virtualenv `scripts/install-test-deps` creates: under `$CARGO_TARGET_DIR`,
/// else the target directory this test binary was built in.
fn scim_server_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            // target/debug/deps/scim-…
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .expect("a target directory");
    let bin = target.join("scim-venv/bin/scim2-server");
    assert!(
        bin.exists(),
        "scim2-server is not installed at {}: run scripts/install-test-deps (with the same CARGO_TARGET_DIR)",
        bin.display()
    );
    bin
}

/// A running scim2-server; killed when dropped.
struct ScimServer {
    child: std::process::Child,
    url: String,
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScimServer {
    async fn start() -> ScimServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(scim_server_bin())
            .args([
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--bearer-token",
                TOKEN,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start scim2-server");
        let server = ScimServer {
            child,
            url: format!("http://127.0.0.1:{port}/v2"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let ok = client
                .get(format!("{}/ServiceProviderConfig", server.url))
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("scim2-server did not answer on port {port}");
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }

    /// Every resource of `/Users` or `/Groups`, read page by page.
    async fn all(&self, resources: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        loop {
            let page = self
                .get(&format!("{resources}?startIndex={}&count=50", out.len() + 1))
                .await;
            let items = page["Resources"].as_array().cloned().unwrap_or_default();
            let total = page["totalResults"].as_u64().unwrap_or(0) as usize;
            out.extend(items.iter().cloned());
            if items.is_empty() || out.len() >= total {
                return out;
            }
        }
    }

    /// displayName → the userNames of its members.
    async fn memberships(&self) -> BTreeMap<String, BTreeSet<String>> {
        let users: BTreeMap<String, String> = self
            .all("/Users")
            .await
            .iter()
            .map(|u| (s(&u["id"]), s(&u["userName"])))
            .collect();
        self.all("/Groups")
            .await
            .iter()
            .map(|g| {
                let members = g["members"]
                    .as_array()
                    .map(|m| m.iter().map(|m| users[&s(&m["value"])].clone()).collect())
                    .unwrap_or_default();
                (s(&g["displayName"]), members)
            })
            .collect()
    }

    /// userName → active.
    async fn active(&self) -> BTreeMap<String, bool> {
        self.all("/Users")
            .await
            .iter()
            .map(|u| (s(&u["userName"]), u["active"].as_bool().unwrap_or(true)))
            .collect()
    }
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A loopback proxy in front of the server that records (method, path) of every
/// request dirsync sends, and can lose the answers of POSTs to a path.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    faults: Arc<Mutex<Faults>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::new();
        // scim2-server serves under /v2: the proxy's paths are the upstream's.
        let base = upstream.trim_end_matches("/v2").to_owned();
        let record = Arc::clone(&seen);
        let faults = Arc::new(Mutex::new(Faults::default()));
        let faulty = Arc::clone(&faults);
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (client, base, record) = (client.clone(), base.clone(), Arc::clone(&record));
            let faulty = Arc::clone(&faulty);
            async move {
                let method = req.method().as_str().to_owned();
                let target = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                record
                    .lock()
                    .expect("proxy log")
                    .push((method.clone(), target.clone()));
                let headers = req.headers().clone();
                let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default();
                let mut out = client.request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    format!("{base}{target}"),
                );
                for name in ["authorization", "content-type", "accept"] {
                    if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                        out = out.header(name, v);
                    }
                }
                let answer = out.body(body.to_vec()).send().await.expect("upstream");
                let (lost, hide_filter) = {
                    let mut faults = faulty.lock().expect("proxy faults");
                    let (path, n) = &mut faults.lose;
                    let hit = method == "POST" && target == *path && *n > 0;
                    *n -= usize::from(hit);
                    (hit, faults.hide_filter && target == "/v2/ServiceProviderConfig")
                };
                if lost {
                    return axum::response::Response::builder()
                        .status(502)
                        .body(axum::body::Body::from("upstream answer lost"))
                        .expect("response");
                }
                let status = answer.status().as_u16();
                let ctype = answer
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/scim+json")
                    .to_owned();
                let mut bytes = answer.bytes().await.unwrap_or_default();
                if hide_filter {
                    let mut config: serde_json::Value =
                        serde_json::from_slice(&bytes).expect("configuration");
                    config["filter"]["supported"] = false.into();
                    bytes = config.to_string().into();
                }
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", ctype)
                    .body(axum::body::Body::from(bytes))
                    .expect("response")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            url: format!("http://{addr}/v2"),
            seen,
            faults,
            task,
        }
    }

    /// The next `n` POSTs to `path` reach the server; their answers become a 502.
    fn lose_posts(&self, path: &str, n: usize) {
        self.faults.lock().expect("proxy faults").lose = (path.to_owned(), n);
    }

    /// `/ServiceProviderConfig` says the service has no filters.
    fn hide_filter(&self) {
        self.faults.lock().expect("proxy faults").hide_filter = true;
    }

    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.seen.lock().expect("proxy log"))
    }
}

/// What the proxy does to the requests it passes on.
#[derive(Default)]
struct Faults {
    /// (path, how many): POSTs passed on to the server whose answer becomes a 502.
    lose: (String, usize),
    hide_filter: bool,
}

fn scim_target(base_url: &str) -> String {
    scim_target_with(base_url, "disable", 100)
}

/// The scim2 target with `users.removed = removed` and `safety.max_disabled_users`.
fn scim_target_with(base_url: &str, removed: &str, max_disabled_users: usize) -> String {
    format!(
        r#"
[targets.scim]
preset = "scim2"
base_url = "{base_url}"
timeout = "10s"
concurrency = 2

[targets.scim.auth]
token_env = "TEST_SCIM_TOKEN"

[targets.scim.scim]
create_users = true
create_groups = true

[targets.scim.safety]
max_removed_memberships_percent = 0
max_removed_members_per_group_percent = 0
max_disabled_users_percent = 0
max_disabled_users = {max_disabled_users}

[[targets.scim.groups.rules]]
match = ".*"
target_id = "{{{{ group.name }}}}"

[targets.scim.users]
id_template = "{{{{ user.username }}}}"
removed = "{removed}"
"#
    )
}

fn users(n: u64) -> String {
    let mut s = String::from("id,username,email\n");
    for i in 1..=n {
        s.push_str(&format!("u{i},user{i},user{i}@example.com\n"));
    }
    s
}

fn groups(groups: &[(&str, Vec<u64>)]) -> String {
    let mut s = String::from("id,name,members\n");
    for (k, (name, members)) in groups.iter().enumerate() {
        let m: Vec<String> = members.iter().map(|i| format!("u{i}")).collect();
        s.push_str(&format!("g{k},{name},{}\n", m.join(";")));
    }
    s
}

fn expected(groups: &[(&str, Vec<u64>)]) -> BTreeMap<String, BTreeSet<String>> {
    groups
        .iter()
        .map(|(name, m)| ((*name).to_owned(), m.iter().map(|i| format!("user{i}")).collect()))
        .collect()
}

/// 100 users in four groups of 25 to 50 members.
fn four_groups() -> Vec<(&'static str, Vec<u64>)> {
    vec![
        ("eng", (1..=50).collect()),
        ("ops", (40..=70).collect()),
        ("sales", (71..=100).collect()),
        ("all-hands", (1..=25).collect()),
    ]
}

#[tokio::test]
async fn first_sync_creates_and_converges_then_sends_nothing_then_only_patch_deltas() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    let env = Env::new();
    let mut groups_now = four_groups();
    env.write("users.csv", &users(100));
    env.write("groups.csv", &groups(&groups_now));
    env.write("dirsync.toml", &config_csv(&scim_target(&proxy.url)));

    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));
    assert_eq!(server.active().await.len(), 100);
    assert!(!proxy.take().is_empty());

    // Converged: nothing to send, not even a search.
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(proxy.take(), []);

    // One membership in a hundred changes: user 60 moves from ops to sales.
    groups_now[1].1.retain(|i| *i != 60);
    groups_now[2].1.push(60);
    env.write("groups.csv", &groups(&groups_now));
    env.run(&["sync"], VARS).await.expect_code(0);
    let sent = proxy.take();
    let changes: Vec<&(String, String)> = sent
        .iter()
        .filter(|(m, p)| !(m == "GET" && p == "/v2/ServiceProviderConfig"))
        .collect();
    assert_eq!(changes.len(), 2, "{sent:?}");
    assert!(
        changes
            .iter()
            .all(|(m, p)| m == "PATCH" && p.starts_with("/v2/Groups/")),
        "{sent:?}"
    );
    assert_eq!(server.memberships().await, expected(&groups_now));
    let audited: BTreeSet<String> = env.audit().await.into_iter().map(|(op, _, _)| op).collect();
    assert!(
        audited.contains("add_members") && audited.contains("remove_members"),
        "{audited:?}"
    );
}

/// A create whose answer is lost (the service made the group, a proxy answered 502)
/// is not sent again blind: the service is searched first, so each group is made
/// once, and gets its members.
#[tokio::test]
async fn a_group_create_whose_answer_was_lost_makes_the_group_once() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    proxy.lose_posts("/v2/Groups", 2);
    let env = Env::new();
    env.write("users.csv", &users(100));
    env.write("groups.csv", &groups(&four_groups()));
    let target = scim_target(&proxy.url).replace(
        "[targets.scim.auth]",
        "[targets.scim.retry]\ninitial_delay = \"10ms\"\n\n[targets.scim.auth]",
    );
    env.write("dirsync.toml", &config_csv(&target));

    env.run(&["sync"], VARS).await.expect_code(0);
    let mut names: Vec<String> = server
        .all("/Groups")
        .await
        .iter()
        .map(|g| s(&g["displayName"]))
        .collect();
    names.sort();
    assert_eq!(names, ["all-hands", "eng", "ops", "sales"]);
    assert_eq!(server.memberships().await, expected(&four_groups()));
}

/// With `scim.bulk = true`, the group member changes of a run go to the real server in
/// `/Bulk` requests (it takes 1,000 operations in one), not as a request each; the
/// groups converge and the audit has a row per group.
#[tokio::test]
async fn with_bulk_the_group_changes_go_in_one_bulk_request_and_converge() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    let env = Env::new();
    let mut groups_now = four_groups();
    env.write("users.csv", &users(100));
    env.write("groups.csv", &groups(&groups_now));
    let target =
        scim_target(&proxy.url).replace("create_groups = true\n", "create_groups = true\nbulk = true\n");
    env.write("dirsync.toml", &config_csv(&target));

    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));
    let first = proxy.take();
    let bulks = |sent: &[(String, String)]| {
        sent.iter()
            .filter(|(m, p)| m == "POST" && p == "/v2/Bulk")
            .count()
    };
    assert_eq!(bulks(&first), 1, "{first:?}");
    assert!(
        !first
            .iter()
            .any(|(m, p)| (m == "PUT" || m == "PATCH") && p.starts_with("/v2/Groups/")),
        "{first:?}"
    );
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(proxy.take(), []);

    // User 60 moves from ops to sales, user 99 joins eng: three groups change.
    groups_now[1].1.retain(|i| *i != 60);
    groups_now[2].1.push(60);
    groups_now[0].1.push(99);
    env.write("groups.csv", &groups(&groups_now));
    env.run(&["sync"], VARS).await.expect_code(0);
    let sent = proxy.take();
    let changes: Vec<&(String, String)> = sent
        .iter()
        .filter(|(m, p)| !(m == "GET" && p == "/v2/ServiceProviderConfig"))
        .collect();
    assert_eq!(changes, [&("POST".to_owned(), "/v2/Bulk".to_owned())], "{sent:?}");
    assert_eq!(server.memberships().await, expected(&groups_now));
    let rows = env.audit().await;
    let last: BTreeSet<(String, String, String)> = rows[rows.len() - 3..].iter().cloned().collect();
    let row = |op: &str, id: &str| (op.to_owned(), id.to_owned(), "success".to_owned());
    assert_eq!(
        last,
        [
            row("add_members", "eng"),
            row("remove_members", "ops"),
            row("add_members", "sales")
        ]
        .into()
    );
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(proxy.take(), []);
}

#[tokio::test]
async fn a_user_who_leaves_is_deactivated_and_a_lost_id_is_found_again() {
    let server = ScimServer::start().await;
    let env = Env::new();
    let mut groups_now = vec![("eng", vec![1, 2, 3]), ("ops", vec![3, 4])];
    env.write("users.csv", &users(4));
    env.write("groups.csv", &groups(&groups_now));
    env.write("dirsync.toml", &config_csv(&scim_target(&server.url)));
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));

    // user4 leaves the source: sent `active: false`, never deleted.
    env.write("users.csv", &users(3));
    groups_now[1].1 = vec![3];
    env.write("groups.csv", &groups(&groups_now));
    env.run(&["sync"], VARS).await.expect_code(0);
    let active = server.active().await;
    assert_eq!(active.get("user4"), Some(&false), "{active:?}");
    assert_eq!(active.values().filter(|a| **a).count(), 3);
    assert_eq!(server.memberships().await, expected(&groups_now));

    // The group is deleted by hand: the kept id answers 404, so it is found (not
    // there) and created again.
    let eng = server.get("/Groups?filter=displayName%20eq%20%22eng%22").await;
    let id = s(&eng["Resources"][0]["id"]);
    let deleted = reqwest::Client::new()
        .delete(format!("{}/Groups/{id}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert!(deleted.status().is_success());
    groups_now[0].1 = vec![1, 2];
    env.write("groups.csv", &groups(&groups_now));
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));
}

/// A user who leaves the source after being deleted from the service by hand has
/// nothing left to disable: the run succeeds, and the next one sends nothing.
#[tokio::test]
async fn a_leaver_deleted_by_hand_has_nothing_to_disable() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    let env = Env::new();
    // user4 is in no group: scim2-server keeps a deleted user's id in its groups.
    let groups_now = vec![("eng", vec![1, 2, 3])];
    env.write("users.csv", &users(4));
    env.write("groups.csv", &groups(&groups_now));
    env.write("dirsync.toml", &config_csv(&scim_target(&proxy.url)));
    env.run(&["sync"], VARS).await.expect_code(0);

    let found = server.get("/Users?filter=userName%20eq%20%22user4%22").await;
    let id = s(&found["Resources"][0]["id"]);
    let deleted = reqwest::Client::new()
        .delete(format!("{}/Users/{id}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert!(deleted.status().is_success());
    env.write("users.csv", &users(3));
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));
    assert!(
        !server.active().await.contains_key("user4"),
        "not created to be disabled"
    );
    proxy.take();
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(proxy.take(), []);
}

/// A service without filters is listed to the end before a deletion found in the
/// listing is sent: a deletion sent while the listing pages shifts the later pages,
/// and a user on a shifted page boundary would be taken as deleted while it stays.
#[tokio::test]
async fn deletions_found_by_listing_leave_no_user_behind() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    proxy.hide_filter();
    let env = Env::new();
    env.write("users.csv", &users(12));
    env.write("groups.csv", &groups(&[("all", (1..=12).collect())]));
    let target = scim_target_with(&proxy.url, "delete", 100)
        .replace("create_groups = true", "create_groups = true\npage_size = 3");
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.active().await.len(), 12);

    // The kept ids are lost (a database restored from before they were kept):
    // every deletion searches.
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
    let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open");
    sqlx::query("DELETE FROM target_ids WHERE kind = 'user'")
        .execute(&pool)
        .await
        .expect("forget the ids");
    pool.close().await;
    env.write("users.csv", &users(2));
    env.write("groups.csv", &groups(&[("all", vec![1, 2])]));
    env.run(&["sync", "--allow-removals"], VARS).await.expect_code(0);
    let active = server.active().await;
    assert_eq!(
        active.keys().collect::<Vec<_>>(),
        ["user1", "user2"],
        "{active:?}"
    );
}

/// A deletion takes the user out of every group: users whose removal from a group
/// the per-group limit holds are not deleted either; the held set has both, and
/// approving it sends both.
#[tokio::test]
async fn users_whose_group_removal_is_held_are_not_deleted() {
    let server = ScimServer::start().await;
    let env = Env::new();
    env.write("users.csv", &users(12));
    env.write("groups.csv", &groups(&[("ops", (1..=12).collect())]));
    let target = scim_target_with(&server.url, "delete", 100).replace(
        "max_removed_members_per_group_percent = 0",
        "max_removed_members_per_group_percent = 50",
    );
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(0);

    // Seven of the twelve leave the source.
    env.write("users.csv", &users(5));
    env.write("groups.csv", &groups(&[("ops", (1..=5).collect())]));
    let run = env.run(&["sync"], VARS).await;
    run.expect_code(4);
    assert_eq!(server.active().await.len(), 12, "{}", run.stderr);
    assert_eq!(
        server.memberships().await,
        expected(&[("ops", (1..=12).collect())])
    );

    let held = env.run(&["held", "--json"], VARS).await;
    let id = serde_json::from_str::<serde_json::Value>(&held.stdout).expect("JSON")[0]["id"]
        .as_str()
        .expect("a held set")
        .to_owned();
    env.run(&["approve", &id], VARS).await.expect_code(0);
    assert_eq!(server.active().await.len(), 5);
    assert_eq!(
        server.memberships().await,
        expected(&[("ops", (1..=5).collect())])
    );
}

/// With a removal delay, a user who left is not deleted while their removal from a
/// group waits: one who comes back within the delay is as they were.
#[tokio::test]
async fn a_user_whose_group_removal_waits_is_not_deleted_meanwhile() {
    let server = ScimServer::start().await;
    let env = Env::new();
    env.write("users.csv", &users(3));
    env.write("groups.csv", &groups(&[("ops", vec![1, 2, 3])]));
    let target = scim_target_with(&server.url, "delete", 100).replace(
        "max_disabled_users = 100",
        "max_disabled_users = 100\nremoval_delay = \"1h\"",
    );
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(0);

    env.write("users.csv", &users(2));
    env.write("groups.csv", &groups(&[("ops", vec![1, 2])]));
    let run = env.run(&["sync"], VARS).await;
    run.expect_code(0);
    assert_eq!(server.active().await.len(), 3, "{}", run.stderr);
    assert_eq!(server.memberships().await, expected(&[("ops", vec![1, 2, 3])]));
}

/// A member a group's own protection keeps is not deleted when they leave the
/// source: the deletion would take them out of that group.
#[tokio::test]
async fn a_member_protected_in_a_group_is_not_deleted() {
    let server = ScimServer::start().await;
    let env = Env::new();
    env.write("users.csv", &users(3));
    env.write("groups.csv", &groups(&[("ops", vec![1, 2, 3])]));
    let target = scim_target_with(&server.url, "delete", 100).replace(
        "[[targets.scim.groups.rules]]",
        "[[targets.scim.groups.map]]\nsource = \"ops\"\ntarget_id = \"ops\"\n\
         safety = { protected_members = [\"u3\"] }\n\n[[targets.scim.groups.rules]]",
    );
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(0);

    env.write("users.csv", &users(2));
    env.write("groups.csv", &groups(&[("ops", vec![1, 2])]));
    let run = env.run(&["sync", "--allow-removals"], VARS).await;
    run.expect_code(0);
    assert!(run.stderr.contains("Kept a protected member"), "{}", run.stderr);
    assert_eq!(server.active().await.len(), 3, "{}", run.stderr);
    assert_eq!(server.memberships().await, expected(&[("ops", vec![1, 2, 3])]));
}

/// The rows the state database keeps for `user`: (snapshot rows, kept target ids).
async fn kept_rows(env: &Env, user: &str) -> (i64, i64) {
    let pool = common::sqlite(&env.db()).await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .bind(user)
                .fetch_one(&pool)
                .await
                .expect("count")
                .get::<i64, _>(0)
        }
    };
    let rows = (
        count("SELECT COUNT(*) FROM snapshot_users WHERE id = ?").await,
        count("SELECT COUNT(*) FROM target_ids WHERE kind = 'user' AND key = ?").await,
    );
    pool.close().await;
    rows
}

#[tokio::test]
async fn a_user_removed_from_the_source_is_deleted_and_a_second_run_sends_nothing() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    let env = Env::new();
    let mut groups_now = vec![("eng", vec![1, 2, 3]), ("ops", vec![3, 4])];
    env.write("users.csv", &users(4));
    env.write("groups.csv", &groups(&groups_now));
    env.write(
        "dirsync.toml",
        &config_csv(&scim_target_with(&proxy.url, "delete", 100)),
    );
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));
    assert_eq!(kept_rows(&env, "user4").await, (1, 1));
    proxy.take();

    // user4 leaves the source. The dry run shows the deletion and sends nothing.
    env.write("users.csv", &users(3));
    groups_now[1].1 = vec![3];
    env.write("groups.csv", &groups(&groups_now));
    let dry = env.run(&["sync", "--dry-run"], VARS).await;
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("delete user \"user4\" (user4) [LeftSource]"),
        "{}",
        dry.stdout
    );
    assert_eq!(proxy.take(), []);
    assert_eq!(server.active().await.len(), 4);

    env.run(&["sync"], VARS).await.expect_code(0);
    let active = server.active().await;
    assert_eq!(
        active.keys().collect::<Vec<_>>(),
        ["user1", "user2", "user3"],
        "{active:?}"
    );
    assert_eq!(server.memberships().await, expected(&groups_now));
    let deletes: Vec<(String, String)> = proxy.take().into_iter().filter(|(m, _)| m == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].1.starts_with("/v2/Users/"), "{deletes:?}");
    let audit = env.audit().await;
    assert_eq!(
        audit
            .iter()
            .filter(|(op, _, _)| op == "delete_user")
            .collect::<Vec<_>>(),
        [&("delete_user".to_owned(), "user4".to_owned(), "success".to_owned())],
        "{audit:?}"
    );
    assert_eq!(kept_rows(&env, "user4").await, (0, 0));
    assert_eq!(kept_rows(&env, "user3").await, (1, 1));

    // Converged: the deleted user is not looked for again.
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(proxy.take(), []);
}

#[tokio::test]
async fn a_mass_deletion_above_the_safety_limit_is_held_and_nothing_is_deleted() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(&server.url).await;
    let env = Env::new();
    let vars = [VARS[0], ("USER", "alice"), ("SUDO_USER", "")];
    env.write("users.csv", &users(10));
    env.write("groups.csv", &groups(&[("eng", (1..=10).collect())]));
    env.write(
        "dirsync.toml",
        &config_csv(&scim_target_with(&proxy.url, "delete", 3)),
    );
    env.run(&["sync"], &vars).await.expect_code(0);
    assert_eq!(server.active().await.len(), 10);
    proxy.take();

    // Half the users leave: five deletions, over `max_disabled_users = 3`.
    let now = vec![("eng", (1..=5).collect::<Vec<u64>>())];
    env.write("users.csv", &users(5));
    env.write("groups.csv", &groups(&now));
    let run = env.run(&["sync"], &vars).await;
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("disable or delete users (5 of 10, 50.0%), over the limit of 3"),
        "{}",
        run.stderr
    );
    assert!(
        proxy.take().iter().all(|(m, _)| m != "DELETE"),
        "nothing is deleted"
    );
    assert_eq!(server.active().await.len(), 10);
    // The group keeps the members whose removal is held with them.
    assert_eq!(
        server.memberships().await,
        expected(&[("eng", (1..=10).collect())])
    );
    assert!(env.audit().await.iter().all(|(op, _, _)| op != "delete_user"));
    assert_eq!(kept_rows(&env, "user10").await, (1, 1));

    let held = env.run(&["held", "--json"], &vars).await;
    held.expect_code(0);
    let sets: Vec<serde_json::Value> = serde_json::from_str(&held.stdout).expect("held --json");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        (&sets[0]["deleted_users"], &sets[0]["disabled_users"]),
        (&5.into(), &0.into()),
        "{sets:?}"
    );
    assert_eq!(sets[0]["deleted"].as_array().map(Vec::len), Some(5), "{sets:?}");
    let text = env.run(&["held"], &vars).await;
    assert!(
        text.stdout.contains("0 disable(s), 5 deletion(s)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("is not deleted"), "{}", text.stdout);
    let id = sets[0]["id"].as_str().expect("id").to_owned();

    // Approved like any held removal: the users are deleted, the group emptied of them.
    env.run(&["approve", &id], &vars).await.expect_code(0);
    let active = server.active().await;
    assert_eq!(active.len(), 5, "{active:?}");
    assert_eq!(server.memberships().await, expected(&now));
    let deleted = env
        .audit()
        .await
        .into_iter()
        .filter(|(op, _, outcome)| op == "delete_user" && outcome == "success")
        .count();
    assert_eq!(deleted, 5);
    assert_eq!(kept_rows(&env, "user10").await, (0, 0));
}

/// A wiremock SCIM service that knows user `ann` (id `a1`) and answers her update
/// with `answer`.
async fn mock_service(status: u16, answer: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(page(1, 1, serde_json::json!([{"id": "a1", "userName": "ann"}])))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Users/a1"))
        .respond_with(ResponseTemplate::new(status).set_body_json(answer))
        .mount(&server)
        .await;
    server
}

fn mock_env(server: &MockServer) -> Env {
    let env = Env::new();
    env.write("users.csv", "id,username,email\nu1,ann,ann@example.com\n");
    env.write("groups.csv", "id,name,members\ng0,staff,u1\n");
    let target = format!(
        r#"
[targets.scim]
preset = "scim2"
base_url = "{}"
timeout = "5s"

[targets.scim.auth]
token_env = "TEST_SCIM_TOKEN"

[targets.scim.retry]
max_attempts = 1

[targets.scim.endpoints.group_members]
enabled = false
[targets.scim.endpoints.add_members]
enabled = false
[targets.scim.endpoints.remove_members]
enabled = false
"#,
        server.uri()
    );
    env.write("dirsync.toml", &config_csv(&target));
    env
}

#[tokio::test]
async fn a_scim_error_body_is_a_failure_with_its_type_and_detail() {
    let server = mock_service(
        409,
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "409", "scimType": "uniqueness", "detail": "userName ann is taken"
        }),
    )
    .await;
    let env = mock_env(&server);
    env.run(&["sync"], VARS).await.expect_code(3);
    let rows = env.audit_rows().await;
    let user: Vec<_> = rows.iter().filter(|r| r.0 == "update_user").collect();
    assert_eq!(user.len(), 1, "{rows:?}");
    assert_eq!(user[0].1, "ann");
    assert_eq!(user[0].2, "failed");
    assert_eq!(
        user[0].3.as_deref(),
        Some("HTTP 409: uniqueness: userName ann is taken")
    );
    assert!(env.snapshot().await.is_empty());
}

#[tokio::test]
async fn a_service_that_answers_another_user_name_has_not_confirmed() {
    let server = mock_service(
        200,
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "a1", "userName": "ann.renamed", "active": true
        }),
    )
    .await;
    let env = mock_env(&server);
    env.run(&["sync"], VARS).await.expect_code(3);
    let rows = env.audit_rows().await;
    let user: Vec<_> = rows.iter().filter(|r| r.0 == "update_user").collect();
    assert_eq!(user.len(), 1, "{rows:?}");
    assert_eq!(user[0].2, "failed");
    let error = user[0].3.clone().unwrap_or_default();
    assert!(
        error.contains("`userName` is \"ann.renamed\", not \"ann\" as sent"),
        "{error}"
    );
    // Not confirmed: the next run sends it again.
    env.run(&["sync"], VARS).await.expect_code(3);
    let puts = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .count();
    assert_eq!(puts, 2);
}

#[tokio::test]
async fn verify_reports_a_member_added_behind_dirsyncs_back_and_repair_removes_it() {
    let server = ScimServer::start().await;
    let env = Env::new();
    let groups_now = vec![("eng", vec![1, 2]), ("ops", vec![3])];
    env.write("users.csv", &users(3));
    env.write("groups.csv", &groups(&groups_now));
    env.write("dirsync.toml", &config_csv(&scim_target(&server.url)));
    env.run(&["sync"], VARS).await.expect_code(0);
    env.run(&["verify"], VARS).await.expect_code(0);

    // Someone adds user3 to eng in the service itself.
    let eng = s(&server.get("/Groups?filter=displayName%20eq%20%22eng%22").await["Resources"][0]["id"]);
    let user3 = s(&server.get("/Users?filter=userName%20eq%20%22user3%22").await["Resources"][0]["id"]);
    let patch = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": user3}]}]
    });
    let patched = reqwest::Client::new()
        .patch(format!("{}/Groups/{eng}", server.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(patch.to_string())
        .send()
        .await
        .expect("PATCH");
    assert!(patched.status().is_success());

    let found = env.run(&["verify"], VARS).await;
    found.expect_code(3);
    assert!(
        found.stdout.contains("added in the target: user3"),
        "{}",
        found.stdout
    );
    // A plain sync does not see it: the snapshot says eng is as confirmed.
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await["eng"].len(), 3);

    env.run(&["verify", "--repair"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&groups_now));
    let audit = env.audit().await;
    assert!(
        audit
            .iter()
            .any(|(op, id, outcome)| op == "verify" && id == "eng" && outcome == "drift"),
        "{audit:?}"
    );
    assert_eq!(
        audit
            .last()
            .map(|(op, id, outcome)| (op.as_str(), id.as_str(), outcome.as_str())),
        Some(("replace_members", "eng", "success"))
    );
    env.run(&["verify"], VARS).await.expect_code(0);
}

/// Mounts the service's `/ServiceProviderConfig`, saying whether it takes PATCH and
/// filters.
async fn mount_config(server: &MockServer, patch: bool, filter: bool) {
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": patch}, "bulk": {"supported": false},
            "filter": {"supported": filter, "maxResults": 100}
        })))
        .mount(server)
        .await;
}

/// Mounts a service that takes PATCH, filters and bulk requests of up to
/// `max_operations`, and knows user `ann` (id `a1`).
async fn mount_bulk_service(server: &MockServer, max_operations: usize) {
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 100},
            "bulk": {"supported": true, "maxOperations": max_operations, "maxPayloadSize": 1048576}
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(page(1, 1, serde_json::json!([{"id": "a1", "userName": "ann"}])))
        .mount(server)
        .await;
}

/// A list answer: one page from `start` of `total` resources.
fn page(start: usize, total: usize, resources: serde_json::Value) -> ResponseTemplate {
    let on_page = resources.as_array().map_or(0, Vec::len);
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total, "startIndex": start, "itemsPerPage": on_page,
        "Resources": resources
    }))
}

/// Mounts `PUT /Groups/{id}`, answered with the group.
async fn mount_group_put(server: &MockServer, id: &str, name: &str) {
    Mock::given(method("PUT"))
        .and(path(format!("/Groups/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": id, "displayName": name
        })))
        .mount(server)
        .await;
}

/// The scim2 target at `base_url` for groups only (no user updates), one attempt.
fn groups_only_target(base_url: &str) -> String {
    format!(
        r#"
[targets.scim]
preset = "scim2"
base_url = "{base_url}"
timeout = "5s"

[targets.scim.auth]
token_env = "TEST_SCIM_TOKEN"

[targets.scim.retry]
max_attempts = 1

[[targets.scim.groups.rules]]
match = ".*"
target_id = "{{{{ group.name }}}}"

[targets.scim.endpoints.update_user]
enabled = false
"#
    )
}

/// A wiremock SCIM service whose /ServiceProviderConfig says it has no filters: users
/// and groups are found by listing them page by page, each page read once however
/// many entities it names, and no request carries a filter.
#[tokio::test]
async fn a_service_without_filters_is_searched_by_listing_each_page_once() {
    let server = MockServer::start().await;
    mount_config(&server, true, false).await;
    // Five users over three pages; "Eve" on page 1 differs from eve (page 3) only in
    // case: the exact name wins, however far on it is listed.
    let users = [
        ("ann", "a1"),
        ("Eve", "x9"),
        ("cat", "c1"),
        ("dan", "d1"),
        ("eve", "e1"),
    ];
    for (i, chunk) in users.chunks(2).enumerate() {
        let start = 1 + 2 * i;
        let resources: Vec<_> = chunk
            .iter()
            .map(|(name, id)| serde_json::json!({"id": id, "userName": name}))
            .collect();
        Mock::given(method("GET"))
            .and(path("/Users"))
            .and(query_param("startIndex", start.to_string()))
            .respond_with(page(start, users.len(), resources.into()))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .and(query_param("startIndex", "1"))
        .respond_with(page(
            1,
            2,
            serde_json::json!([
                {"id": "g0", "displayName": "other"}, {"id": "g1", "displayName": "staff"}
            ]),
        ))
        .mount(&server)
        .await;
    mount_group_put(&server, "g1", "staff").await;

    let env = Env::new();
    env.write(
        "users.csv",
        "id,username,email\nu1,ann,ann@example.com\nu5,eve,eve@example.com\nu3,cat,cat@example.com\n",
    );
    env.write("groups.csv", "id,name,members\ng0,staff,u1;u5;u3\n");
    let target = groups_only_target(&server.uri()) + "\n[targets.scim.scim]\npage_size = 2\n";
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(0);

    let received = server.received_requests().await.unwrap_or_default();
    let gets: Vec<String> = received
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .map(|r| format!("{}?{}", r.url.path(), r.url.query().unwrap_or_default()))
        .collect();
    assert!(gets.iter().all(|g| !g.contains("filter")), "{gets:?}");
    let listings = |prefix: &str| gets.iter().filter(|g| g.starts_with(prefix)).count();
    assert_eq!((listings("/Users?"), listings("/Groups?")), (3, 1), "{gets:?}");
    let put = received
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .expect("a PUT");
    let body: serde_json::Value = serde_json::from_slice(&put.body).expect("JSON body");
    assert_eq!(
        body["members"],
        serde_json::json!([{"value": "a1"}, {"value": "c1"}, {"value": "e1"}])
    );
}

/// A wiremock SCIM service whose /ServiceProviderConfig says it has no PATCH: a
/// member added to a group goes as the group's whole list, and the audit row says
/// so (`replace_members`, not `add_members`).
#[tokio::test]
async fn a_delta_sent_whole_to_a_service_without_patch_is_audited_as_a_replace() {
    let server = MockServer::start().await;
    mount_config(&server, false, true).await;
    let list = |resource: serde_json::Value| page(1, 1, serde_json::json!([resource]));
    for (name, id) in [("ann", "a1"), ("bob", "b1")] {
        Mock::given(method("GET"))
            .and(path("/Users"))
            .and(query_param("filter", format!("userName eq \"{name}\"")))
            .respond_with(list(serde_json::json!({"id": id, "userName": name})))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .and(query_param("filter", "displayName eq \"staff\""))
        .respond_with(list(serde_json::json!({"id": "g1", "displayName": "staff"})))
        .mount(&server)
        .await;
    mount_group_put(&server, "g1", "staff").await;

    let env = Env::new();
    env.write(
        "users.csv",
        "id,username,email\nu1,ann,ann@example.com\nu2,bob,bob@example.com\n",
    );
    env.write("groups.csv", "id,name,members\ng0,staff,u1\n");
    env.write("dirsync.toml", &config_csv(&groups_only_target(&server.uri())));
    env.run(&["sync"], VARS).await.expect_code(0);

    // bob joins: planned as an add, sent as the whole list.
    env.write("groups.csv", "id,name,members\ng0,staff,u1;u2\n");
    env.run(&["sync"], VARS).await.expect_code(0);
    let received = server.received_requests().await.unwrap_or_default();
    assert!(
        received.iter().all(|r| r.method.as_str() != "PATCH"),
        "{received:?}"
    );
    let last_put = received
        .iter()
        .rfind(|r| r.method.as_str() == "PUT")
        .expect("a PUT");
    let body: serde_json::Value = serde_json::from_slice(&last_put.body).expect("JSON body");
    assert_eq!(
        body["members"],
        serde_json::json!([{"value": "a1"}, {"value": "b1"}])
    );
    let audit = env.audit().await;
    assert_eq!(
        audit
            .iter()
            .map(|(op, id, outcome)| (op.as_str(), id.as_str(), outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("replace_members", "staff", "success"),
            ("replace_members", "staff", "success")
        ]
    );
}

/// A bulk answer that refuses one operation fails that group alone, with the
/// service's scimType and detail in its audit row; the others are confirmed, and
/// the next run sends only the refused one again.
#[tokio::test]
async fn an_operation_refused_inside_a_bulk_request_fails_its_group_alone() {
    let server = MockServer::start().await;
    mount_bulk_service(&server, 10).await;
    for (name, id) in [("eng", "g1"), ("ops", "g2"), ("sales", "g3")] {
        Mock::given(method("GET"))
            .and(path("/Groups"))
            .and(query_param("filter", format!("displayName eq \"{name}\"")))
            .respond_with(page(1, 1, serde_json::json!([{"id": id, "displayName": name}])))
            .mount(&server)
            .await;
    }
    // The second operation of every bulk request is refused; the others confirmed,
    // one with a number for its status, as some services write it.
    Mock::given(method("POST"))
        .and(path("/Bulk"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
            "Operations": [
                {"method": "PUT", "bulkId": "0", "status": "200"},
                {"method": "PUT", "bulkId": "1", "status": "409", "response": {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "scimType": "mutability", "detail": "the group is read-only", "status": "409"}},
                {"method": "PUT", "bulkId": "2", "status": 200}
            ]
        })))
        .mount(&server)
        .await;

    let env = Env::new();
    env.write("users.csv", "id,username,email\nu1,ann,ann@example.com\n");
    env.write(
        "groups.csv",
        "id,name,members\ng1,eng,u1\ng2,ops,u1\ng3,sales,u1\n",
    );
    let target = groups_only_target(&server.uri()) + "\n[targets.scim.scim]\nbulk = true\n";
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(3);

    let bulk_bodies = || async {
        let received = server.received_requests().await.unwrap_or_default();
        let bodies: Vec<serde_json::Value> = received
            .iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/Bulk")
            .map(|r| serde_json::from_slice(&r.body).expect("JSON bulk body"))
            .collect();
        assert!(
            received.iter().all(|r| r.method.as_str() != "PUT"),
            "{received:?}"
        );
        bodies
    };
    let bodies = bulk_bodies().await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let ops = bodies[0]["Operations"].as_array().expect("Operations");
    let paths: Vec<&str> = ops.iter().filter_map(|o| o["path"].as_str()).collect();
    assert_eq!(paths, ["/Groups/g1", "/Groups/g2", "/Groups/g3"]);
    assert_eq!(ops[0]["method"], "PUT");
    assert_eq!(ops[0]["data"]["members"], serde_json::json!([{"value": "a1"}]));
    let rows = env.audit_rows().await;
    let outcome = |id: &str| {
        rows.iter()
            .find(|r| r.1 == id)
            .map(|r| (r.2.clone(), r.3.clone()))
            .expect("an audit row")
    };
    assert_eq!(outcome("eng"), ("success".to_owned(), None));
    assert_eq!(
        outcome("ops"),
        (
            "failed".to_owned(),
            Some("HTTP 409: mutability: the group is read-only".to_owned())
        )
    );
    assert_eq!(outcome("sales"), ("success".to_owned(), None));

    // Only the refused group goes again (the answer's bulkId 0 confirms it now).
    env.run(&["sync"], VARS).await.expect_code(0);
    let bodies = bulk_bodies().await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let again: Vec<&str> = bodies[1]["Operations"]
        .as_array()
        .expect("Operations")
        .iter()
        .filter_map(|o| o["path"].as_str())
        .collect();
    assert_eq!(again, ["/Groups/g2"]);
}

/// A bulk request that fails whole is one failed request, not one per operation: a
/// bulk of twelve groups does not trip `max_consecutive_failures` (10) on its own.
#[tokio::test]
async fn a_failed_bulk_request_counts_once_toward_the_consecutive_failures() {
    let server = MockServer::start().await;
    mount_bulk_service(&server, 100).await;
    let groups: Vec<serde_json::Value> = (0..12)
        .map(|k| serde_json::json!({"id": format!("id{k}"), "displayName": format!("team{k}")}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(page(1, 12, groups.into()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Bulk"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;

    let env = Env::new();
    env.write("users.csv", "id,username,email\nu1,ann,ann@example.com\n");
    let rows: String = (0..12).map(|k| format!("g{k},team{k},u1\n")).collect();
    env.write("groups.csv", &format!("id,name,members\n{rows}"));
    let target = groups_only_target(&server.uri()) + "\n[targets.scim.scim]\nbulk = true\n";
    env.write("dirsync.toml", &config_csv(&target));
    let run = env.run(&["sync"], VARS).await;
    run.expect_code(3);
    assert!(!run.stderr.contains("Stopped pushing"), "{}", run.stderr);
    let failed = env
        .audit()
        .await
        .into_iter()
        .filter(|(_, _, o)| o == "failed")
        .count();
    assert_eq!(failed, 12);
}

/// A failed deletion keeps the user's snapshot row and kept id, so the next run
/// sends it again; a 404 (already gone) confirms it.
#[tokio::test]
async fn a_failed_deletion_is_sent_again_and_a_404_confirms_it() {
    let server = MockServer::start().await;
    for (name, id) in [("ann", "a1"), ("bob", "b1")] {
        Mock::given(method("GET"))
            .and(path("/Users"))
            .and(query_param("filter", format!("userName eq \"{name}\"")))
            .respond_with(page(1, 1, serde_json::json!([{"id": id, "userName": name}])))
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path(format!("/Users/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id, "userName": name, "active": true
            })))
            .mount(&server)
            .await;
    }
    let error = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "503", "detail": "try later"
    });
    Mock::given(method("DELETE"))
        .and(path("/Users/b1"))
        .respond_with(ResponseTemplate::new(503).set_body_json(error))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/Users/b1"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let env = mock_env(&server);
    let config = std::fs::read_to_string(env.config()).expect("config");
    env.write(
        "dirsync.toml",
        &format!("{config}\n[targets.scim.users]\nremoved = \"delete\"\n"),
    );
    env.write(
        "users.csv",
        "id,username,email\nu1,ann,ann@example.com\nu2,bob,bob@example.com\n",
    );
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(kept_rows(&env, "bob").await, (1, 1));

    let deletes = || async {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "DELETE")
            .count()
    };
    env.write("users.csv", "id,username,email\nu1,ann,ann@example.com\n");
    for run in 1..=2 {
        env.run(&["sync"], VARS).await.expect_code(3);
        assert_eq!(deletes().await, run);
        assert_eq!(kept_rows(&env, "bob").await, (1, 1), "run {run}");
    }
    let rows = env.audit_rows().await;
    let failed: Vec<_> = rows.iter().filter(|r| r.0 == "delete_user").collect();
    assert_eq!(failed.len(), 2, "{rows:?}");
    assert!(
        failed
            .iter()
            .all(|r| r.1 == "bob" && r.2 == "failed" && r.3.as_deref() == Some("HTTP 503: try later")),
        "{failed:?}"
    );

    // Gone meanwhile: the 404 (again after the id is looked up anew) confirms it.
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(kept_rows(&env, "bob").await, (0, 0));
    let rows = env.audit_rows().await;
    assert_eq!(
        rows.last().map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str())),
        Some(("delete_user", "bob", "success"))
    );
    let sent = server.received_requests().await.unwrap_or_default().len();
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), sent);
}

/// A group found by `displayName` whose target id is not its name is not created:
/// no search would find it again, so every run that lost its id would make one
/// more. The error says what to change; the users are created as usual.
#[tokio::test]
async fn a_group_that_no_search_would_find_is_not_created() {
    let server = ScimServer::start().await;
    let env = Env::new();
    env.write("users.csv", &users(3));
    env.write("groups.csv", &groups(&[("eng", vec![1, 2])]));
    let target = scim_target(&server.url).replace("{{ group.name }}", "{{ group.id }}");
    env.write("dirsync.toml", &config_csv(&target));
    let run = env.run(&["sync"], VARS).await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "not created: the group would be made with displayName \"eng\", but is found by displayName \"g0\""
        ),
        "{}",
        run.stderr
    );
    assert_eq!(server.all("/Groups").await.len(), 0);
    assert_eq!(server.active().await.len(), 3);
}

/// A group create answered 429 made nothing: with filters, its retry is sent without
/// searching first; without filters, it is the one retry a create gets. A create
/// answered 502 may have made the group: with filters the service is searched
/// before the retry; without them it is not sent again this run.
#[tokio::test]
async fn a_create_is_retried_blind_only_after_a_429() {
    for (filter, status) in [(true, 429), (false, 429), (true, 502), (false, 502)] {
        let server = MockServer::start().await;
        mount_config(&server, true, filter).await;
        let users = page(1, 1, serde_json::json!([{"id": "a1", "userName": "ann"}]));
        Mock::given(method("GET"))
            .and(path("/Users"))
            .respond_with(users)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/Groups"))
            .respond_with(page(1, 0, serde_json::json!([])))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/Groups"))
            .respond_with(ResponseTemplate::new(status).insert_header("Retry-After", "0"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/Groups"))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g1", "displayName": "staff", "members": [{"value": "a1"}]
            })))
            .mount(&server)
            .await;
        mount_group_put(&server, "g1", "staff").await;

        let env = Env::new();
        env.write("users.csv", "id,username,email\nu1,ann,ann@example.com\n");
        env.write("groups.csv", "id,name,members\ng0,staff,u1\n");
        let target = groups_only_target(&server.uri()).replace(
            "max_attempts = 1",
            "max_attempts = 3\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"",
        ) + "\n[targets.scim.scim]\ncreate_groups = true\n";
        env.write("dirsync.toml", &config_csv(&target));
        let run = env.run(&["sync"], VARS).await;

        let received = server.received_requests().await.unwrap_or_default();
        let sent: Vec<String> = received
            .iter()
            .filter(|r| r.url.path() == "/Groups")
            .map(|r| r.method.to_string())
            .collect();
        let case = format!("filter {filter}, {status}: {sent:?}\n{}", run.stderr);
        match (filter, status) {
            // One search (or listing) before the first create, none before its retry.
            (_, 429) => {
                assert_eq!(sent, ["GET", "POST", "POST"], "{case}");
                run.expect_code(0);
            }
            (true, _) => {
                assert_eq!(sent, ["GET", "POST", "GET", "POST"], "{case}");
                run.expect_code(0);
            }
            (false, _) => {
                assert_eq!(sent, ["GET", "POST"], "{case}");
                run.expect_code(3);
            }
        }
    }
}

/// A service without filters whose user listing fails is not listed again for each
/// member of the run: the failed listing fails the later lookups, and nothing that
/// needs them is sent.
#[tokio::test]
async fn a_failed_listing_is_read_once_and_fails_the_lookups_that_need_it() {
    let server = MockServer::start().await;
    mount_config(&server, true, false).await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(page(
            1,
            2,
            serde_json::json!([
                {"id": "g1", "displayName": "staff"}, {"id": "g2", "displayName": "ops"}
            ]),
        ))
        .mount(&server)
        .await;
    mount_group_put(&server, "g1", "staff").await;
    mount_group_put(&server, "g2", "ops").await;

    let env = Env::new();
    env.write(
        "users.csv",
        "id,username,email\nu1,ann,ann@example.com\nu2,bob,bob@example.com\nu3,cat,cat@example.com\n",
    );
    env.write("groups.csv", "id,name,members\ng0,staff,u1;u2\ng1,ops,u3\n");
    env.write("dirsync.toml", &config_csv(&groups_only_target(&server.uri())));
    let run = env.run(&["sync"], VARS).await;
    run.expect_code(3);

    let received = server.received_requests().await.unwrap_or_default();
    let user_listings = received
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == "/Users")
        .count();
    assert_eq!(user_listings, 1, "{}", run.stderr);
    assert!(
        received.iter().all(|r| r.method.as_str() != "PUT"),
        "{}",
        run.stderr
    );
}

/// A disabled source user in a group is created disabled (`active: false`) and
/// named by the group: before, the group failed on every run for want of him.
#[tokio::test]
async fn a_disabled_member_is_created_inactive_and_the_group_goes_out() {
    let server = ScimServer::start().await;
    let env = Env::new();
    env.write(
        "users.csv",
        "id,username,email,enabled\nu1,user1,user1@example.com,true\nu2,user2,user2@example.com,false\n",
    );
    env.write("groups.csv", &groups(&[("ops", vec![1, 2])]));
    env.write("dirsync.toml", &config_csv(&scim_target(&server.url)));
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&[("ops", vec![1, 2])]));
    let active = server.active().await;
    assert_eq!(active.get("user2"), Some(&false), "{active:?}");
    assert_eq!(active.get("user1"), Some(&true), "{active:?}");
}

/// A userName changed only in case names the same user in the service (SCIM
/// compares it without case): the old key is neither deleted (or disabled) nor
/// taken out of its groups.
#[tokio::test]
async fn a_user_name_changed_only_in_case_is_neither_deleted_nor_taken_out_of_groups() {
    for removed in ["delete", "disable"] {
        let server = ScimServer::start().await;
        let proxy = Proxy::start(&server.url).await;
        let env = Env::new();
        env.write("users.csv", &users(3));
        env.write("groups.csv", &groups(&[("eng", vec![1, 2, 3])]));
        env.write(
            "dirsync.toml",
            &config_csv(&scim_target_with(&proxy.url, removed, 100)),
        );
        env.run(&["sync"], VARS).await.expect_code(0);
        proxy.take();

        env.write("users.csv", &users(3).replace("u2,user2,", "u2,User2,"));
        env.run(&["sync"], VARS).await.expect_code(0);
        let sent = proxy.take();
        assert!(!sent.iter().any(|(m, _)| m == "DELETE"), "{removed}: {sent:?}");
        let active = server.active().await;
        assert_eq!(active.len(), 3, "{removed}: {active:?}");
        assert!(active.values().all(|a| *a), "{removed}: {active:?}");
        let members = &server.memberships().await["eng"];
        assert_eq!(members.len(), 3, "{removed}: {members:?}");
        assert!(
            members.iter().any(|m| m.eq_ignore_ascii_case("user2")),
            "{removed}: {members:?}"
        );
    }
}

/// A group deleted and made again by hand (empty) answers 404 for the id kept: it is
/// found again and gets the whole list, not only the change.
#[tokio::test]
async fn a_group_found_again_after_a_404_gets_its_whole_list() {
    let server = ScimServer::start().await;
    let env = Env::new();
    env.write("users.csv", &users(3));
    env.write("groups.csv", &groups(&[("devs", vec![1, 2])]));
    env.write("dirsync.toml", &config_csv(&scim_target(&server.url)));
    env.run(&["sync"], VARS).await.expect_code(0);

    let client = reqwest::Client::new();
    let old = s(&server.all("/Groups").await[0]["id"]);
    let deleted = client
        .delete(format!("{}/Groups/{old}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let made = client
        .post(format!("{}/Groups", server.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "devs"
        }))
        .send()
        .await
        .expect("POST");
    assert!(made.status().is_success(), "{}", made.status());

    env.write("groups.csv", &groups(&[("devs", vec![1, 2, 3])]));
    env.run(&["sync"], VARS).await.expect_code(0);
    assert_eq!(server.memberships().await, expected(&[("devs", vec![1, 2, 3])]));
}

/// A 429 on a lookup that asks for longer than the run waits stops the target's run
/// and is kept, as one on a push is: nothing more goes out, in this run or the next.
#[tokio::test]
async fn a_lookup_answered_429_for_an_hour_stops_the_run_and_is_kept() {
    let server = MockServer::start().await;
    mount_config(&server, true, true).await;
    for resources in ["/Users", "/Groups"] {
        Mock::given(method("GET"))
            .and(path(resources))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
            .mount(&server)
            .await;
    }
    let env = Env::new();
    env.write("users.csv", &users(6));
    env.write(
        "groups.csv",
        &groups(&[("a", vec![1, 2]), ("b", vec![3, 4]), ("c", vec![5, 6])]),
    );
    let target = scim_target(&server.uri()).replace("concurrency = 2", "concurrency = 1");
    env.write("dirsync.toml", &config_csv(&target));
    let run = env.run(&["sync"], VARS).await;
    run.expect_code(3);
    let lookups = |requests: &[wiremock::Request]| {
        requests
            .iter()
            .filter(|r| r.url.path() != "/ServiceProviderConfig")
            .count()
    };
    let first = server.received_requests().await.unwrap_or_default();
    assert_eq!(lookups(&first), 1, "one lookup, then nothing: {first:?}");
    env.run(&["sync"], VARS).await.expect_code(3);
    let second = server.received_requests().await.unwrap_or_default();
    assert_eq!(lookups(&second), 1, "nothing while the target waits");
}

/// A group change too big for one bulk request within the service's
/// `maxPayloadSize` goes as a plain request; the others still go in bulk.
#[tokio::test]
async fn an_operation_over_the_bulk_payload_limit_goes_alone_as_a_plain_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 100},
            "bulk": {"supported": true, "maxOperations": 10, "maxPayloadSize": 600}
        })))
        .mount(&server)
        .await;
    let mut users = String::from("id,username,email\n");
    for i in 1..=40 {
        users.push_str(&format!("u{i},user{i},user{i}@example.com\n"));
        Mock::given(method("GET"))
            .and(path("/Users"))
            .and(query_param("filter", format!("userName eq \"user{i}\"")))
            .respond_with(page(
                1,
                1,
                serde_json::json!([{"id": format!("a{i}"), "userName": format!("user{i}")}]),
            ))
            .mount(&server)
            .await;
    }
    for (name, id) in [("big", "g1"), ("small", "g2"), ("tiny", "g3")] {
        Mock::given(method("GET"))
            .and(path("/Groups"))
            .and(query_param("filter", format!("displayName eq \"{name}\"")))
            .respond_with(page(1, 1, serde_json::json!([{"id": id, "displayName": name}])))
            .mount(&server)
            .await;
    }
    mount_group_put(&server, "g1", "big").await;
    Mock::given(method("POST"))
        .and(path("/Bulk"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
            "Operations": [
                {"method": "PUT", "bulkId": "0", "status": "200"},
                {"method": "PUT", "bulkId": "1", "status": "200"}
            ]
        })))
        .mount(&server)
        .await;
    let env = Env::new();
    env.write("users.csv", &users);
    let all: Vec<String> = (1..=40).map(|i| format!("u{i}")).collect();
    env.write(
        "groups.csv",
        &format!(
            "id,name,members\ng1,big,{}\ng2,small,u1\ng3,tiny,u2\n",
            all.join(";")
        ),
    );
    let target = groups_only_target(&server.uri()) + "\n[targets.scim.scim]\nbulk = true\n";
    env.write("dirsync.toml", &config_csv(&target));
    env.run(&["sync"], VARS).await.expect_code(0);

    let received = server.received_requests().await.unwrap_or_default();
    let bulks: Vec<&wiremock::Request> = received
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/Bulk")
        .collect();
    assert_eq!(bulks.len(), 1, "{received:?}");
    assert!(bulks[0].body.len() <= 600, "{} bytes", bulks[0].body.len());
    let puts: Vec<&str> = received
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .map(|r| r.url.path())
        .collect();
    assert_eq!(puts, ["/Groups/g1"]);
}
