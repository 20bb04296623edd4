//! Shared test support: a temporary dirsync setup (config, CSV files, state database),
//! a way to run the real binary against it, and HTTP mocks of the target APIs that
//! enforce each document's contract and keep state.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod admin_user;
pub mod adminuser_group;
pub mod faults;
pub mod group_members;
pub mod mock;
pub mod samba;
pub mod security_group_users;
pub mod slapd;
pub mod usergroup_v2;
pub mod xml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::Row;

/// A deterministic UUID for test entity `n` (users and groups in different ranges).
pub fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A directory for one test: config file, CSV files and the state database.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path(name), content).expect("write test file");
    }

    pub fn config(&self) -> PathBuf {
        self.path("dirsync.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.path("state.db")
    }

    /// Runs `dirsync --config <this config> ARGS…` to completion.
    pub async fn dirsync(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().await.expect("run dirsync");
        Run::from(output)
    }

    /// Runs `dirsync --config <this config> ARGS…` with extra environment variables.
    pub async fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(vars.iter().copied());
        Run::from(cmd.output().await.expect("run dirsync"))
    }

    /// Everything an operator can see, each with where it came from: the dry run,
    /// a sync and a resync with debug logs (text, then JSON), `audit` and `status`
    /// (JSON and table), and the audit rows themselves. For leak checks.
    pub async fn everything_visible(&self, vars: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut debug: Vec<(&str, &str)> = vars.to_vec();
        debug.push(("RUST_LOG", "debug"));
        let mut out = Vec::new();
        for (label, args) in [
            ("dry run", &["sync", "--dry-run"][..]),
            ("sync", &["sync"][..]),
            ("resync, JSON logs", &["--log-format", "json", "resync"][..]),
            ("audit --json", &["audit", "--json"][..]),
            ("audit", &["audit"][..]),
            ("status --json", &["status", "--json"][..]),
        ] {
            let run = self.run(args, &debug).await;
            out.push((format!("{label}: stdout"), run.stdout));
            out.push((format!("{label}: stderr"), run.stderr));
        }
        out.push(("audit rows".into(), self.audit_text().await));
        out
    }

    /// Every audit row as (operation, entity id, outcome, error), in insertion order.
    pub async fn audit_rows(&self) -> Vec<(String, String, String, Option<String>)> {
        let pool = sqlite(&self.db()).await;
        let rows = sqlx::query("SELECT operation, entity_id, outcome, error FROM audit ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("query audit");
        pool.close().await;
        rows.into_iter()
            .map(|r| {
                (
                    r.get("operation"),
                    r.get("entity_id"),
                    r.get("outcome"),
                    r.get("error"),
                )
            })
            .collect()
    }

    /// The command, for tests that need to start and stop it themselves.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dirsync"));
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.env_remove("DIRSYNC_CONFIG")
            .env("RUST_LOG", "info")
            .kill_on_drop(true);
        cmd
    }

    /// Changes the state database as a hand edit or an older version would have.
    pub async fn alter_db(&self, sql: &'static str) {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(self.db());
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open state db");
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }

    /// The snapshot's groups: (target, group id) → members.
    pub async fn snapshot(&self) -> BTreeMap<(String, String), BTreeSet<String>> {
        if !self.db().exists() {
            return BTreeMap::new();
        }
        let pool = sqlite(&self.db()).await;
        let rows = sqlx::query("SELECT target, id, members FROM snapshot_groups")
            .fetch_all(&pool)
            .await
            .expect("query snapshot");
        let out = rows
            .into_iter()
            .map(|r| {
                let members: String = r.get("members");
                (
                    (r.get("target"), r.get("id")),
                    serde_json::from_str(&members).expect("members json"),
                )
            })
            .collect();
        pool.close().await;
        out
    }

    /// Every audit row as (operation, entity id, outcome), in insertion order.
    pub async fn audit(&self) -> Vec<(String, String, String)> {
        let pool = sqlite(&self.db()).await;
        let rows = sqlx::query("SELECT operation, entity_id, outcome FROM audit ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("query audit");
        pool.close().await;
        rows.into_iter()
            .map(|r| (r.get("operation"), r.get("entity_id"), r.get("outcome")))
            .collect()
    }

    /// Every audit row's text columns joined, to search for leaked secrets.
    pub async fn audit_text(&self) -> String {
        let pool = sqlite(&self.db()).await;
        let rows = sqlx::query(
            "SELECT run_id || target || operation || entity_id || entity_name || outcome
                    || COALESCE(summary, '') || COALESCE(drift, '') || COALESCE(error, '') AS t FROM audit",
        )
        .fetch_all(&pool)
        .await
        .expect("query audit");
        pool.close().await;
        rows.into_iter()
            .map(|r| r.get::<String, _>("t"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Stops a running `dirsync run` the way systemd does (SIGTERM); asserts it exits 0
/// and returns what it logged.
pub async fn stop_service(child: tokio::process::Child) -> String {
    let pid = child.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().await.expect("the service ends");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

pub async fn sqlite(path: &Path) -> sqlx::SqlitePool {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    sqlx::SqlitePool::connect_with(opts).await.expect("open state db")
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Asserts that `secret` appears in none of `texts` (labelled), naming where it did.
pub fn assert_no_leak(secret: &str, texts: &[(String, String)]) {
    assert!(!texts.is_empty());
    for (label, text) in texts {
        assert!(!text.contains(secret), "the secret leaked into {label}:\n{text}");
    }
}

/// A config with the CSV source `users.csv` + `groups.csv` and the given targets.
pub fn config_csv(targets: &str) -> String {
    format!(
        r#"
state_db = "state.db"

[source]
kind = "csv"
users = "users.csv"
groups = "groups.csv"

{targets}
"#
    )
}

/// The usual target keys for tests: `head` (say, `preset = "…"`), base URL, short
/// timeouts and retries, every source group mapped to its `tid` column, users by
/// their `tid` column.
pub fn target_common(name: &str, head: &str, base_url: &str) -> String {
    format!(
        r#"
[targets.{name}]
{head}
base_url = "{base_url}"
timeout = "5s"
concurrency = 4

[targets.{name}.retry]
max_attempts = 2
initial_delay = "10ms"
max_delay = "50ms"

[[targets.{name}.groups.rules]]
match = ".*"
target_id = "{{{{ group.attrs.tid }}}}"

[targets.{name}.users]
id_attribute = "tid"
"#
    )
}

/// Users 1..=n as CSV, each with a target id column `tid` (a UUID).
pub fn users_csv(n: u64) -> String {
    let mut s = String::from("id,username,email,tid\n");
    for i in 1..=n {
        s.push_str(&format!("u{i},user{i},user{i}@example.com,{}\n", uuid(i)));
    }
    s
}

/// Groups as CSV from (name, member numbers); group `k` maps to `uuid(1_000_000 + k)`.
pub fn groups_csv(groups: &[(&str, &[u64])]) -> String {
    let mut s = String::from("id,name,members,tid\n");
    for (k, (name, members)) in groups.iter().enumerate() {
        let m: Vec<String> = members.iter().map(|i| format!("u{i}")).collect();
        s.push_str(&format!("g{k},{name},{},{}\n", m.join(";"), group_uuid(k as u64)));
    }
    s
}

/// An extra CSV column: its header, and its value for group `k`.
pub type ExtraColumn<'a> = (&'a str, fn(usize) -> String);

/// Groups CSV like `groups_csv`, with every name quoted (names may hold `"`, `,` or a
/// newline) and, when given, one more column whose value is `extra.1(k)` for group `k`.
pub fn groups_csv_quoted(groups: &[(&str, &[u64])], extra: Option<ExtraColumn<'_>>) -> String {
    let mut s = String::from("id,name,members,tid");
    if let Some((header, _)) = extra {
        s.push(',');
        s.push_str(header);
    }
    s.push('\n');
    for (k, (name, members)) in groups.iter().enumerate() {
        let m: Vec<String> = members.iter().map(|i| format!("u{i}")).collect();
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        s.push_str(&format!("g{k},{quoted},{},{}", m.join(";"), group_uuid(k as u64)));
        if let Some((_, value)) = extra {
            s.push(',');
            s.push_str(&value(k));
        }
        s.push('\n');
    }
    s
}

pub fn group_uuid(k: u64) -> String {
    uuid(1_000_000 + k)
}

/// 20 users in four groups, 44 memberships: `eng` 1–12, `ops` 8–20, `sales` 1–10,
/// `all-hands` 1–9. Big enough for the safety limits' percentages to matter.
pub fn four_groups() -> Vec<(String, Vec<u64>)> {
    vec![
        ("eng".into(), (1..=12).collect()),
        ("ops".into(), (8..=20).collect()),
        ("sales".into(), (1..=10).collect()),
        ("all-hands".into(), (1..=9).collect()),
    ]
}

/// Owned (name, members) pairs as the borrowed form `groups_csv` takes.
pub fn as_refs(groups: &[(String, Vec<u64>)]) -> Vec<(&str, &[u64])> {
    groups.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect()
}

/// `users.csv` with 20 users, `groups.csv` with [`four_groups`], and a config for one
/// group-members API target at `base_url` with `extra` appended.
pub fn four_groups_env(base_url: &str, extra: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(20));
    env.write("groups.csv", &groups_csv(&as_refs(&four_groups())));
    env.write("dirsync.toml", &config_group_members(base_url, extra));
    env
}

/// Expected target state for `groups_csv(groups)`: group uuid → member uuids.
pub fn expected_state(groups: &[(&str, &[u64])]) -> BTreeMap<String, BTreeSet<String>> {
    groups
        .iter()
        .enumerate()
        .map(|(k, (_, members))| (group_uuid(k as u64), members.iter().map(|i| uuid(*i)).collect()))
        .collect()
}

/// A config for the CSV files `users.csv` and `groups.csv` and one group-members API target.
pub fn config_group_members(base_url: &str, extra: &str) -> String {
    format!(
        r#"
state_db = "state.db"

[source]
kind = "csv"
users = "users.csv"
groups = "groups.csv"

[targets.office]
preset = "onlyoffice-group-members"
base_url = "{base_url}"
timeout = "5s"
concurrency = 4

[targets.office.auth]
value_env = "TEST_OFFICE_KEY"

[targets.office.retry]
max_attempts = 2
initial_delay = "10ms"
max_delay = "50ms"

[[targets.office.groups.rules]]
match = ".*"
target_id = "{{{{ group.attrs.tid }}}}"

[targets.office.users]
id_attribute = "tid"
{extra}
"#
    )
}
