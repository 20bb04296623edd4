//! The state database (SQLite through sqlx): per-target snapshots of what each target
//! confirmed, the runs, the audit log, and the source's state as last read with
//! each target's claim to be clean for it.
//!
//! Architecture Invariant: a snapshot row changes only in the same transaction as the
//! audit row of the confirmed operation that changed it. A failed, interrupted or
//! killed push leaves the snapshot as it was, so the next run plans it again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};

mod held;
mod ids;

pub use held::{AbsentRow, HeldRow};

use crate::mapping::Unmapped;
use crate::plan::{Members, Operation, Snapshot, SnapshotGroup, SnapshotUser};
use crate::source::ldap::Entry;
use crate::source::ldap::cache::{self, Cache, Delta, Kind};

/// The state database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("state database {path}: migration failed: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("state database: corrupt row for `{id}`: {message}")]
    Corrupt { id: String, message: String },
}

/// Now, as stored: RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    stamp(chrono::Utc::now())
}

/// A time as stored: RFC 3339 UTC with milliseconds, so stored times compare as text.
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An open state database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// The outcome of one pushed operation, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) target: &'a str,
    pub(crate) op: &'a Operation,
    /// The operation kind sent, when not `op`'s (see `PushOutcome::sent_as`).
    pub(crate) operation: Option<&'static str>,
    pub(crate) success: bool,
    pub(crate) http_status: Option<u16>,
    pub(crate) attempts: u32,
    pub(crate) drift: Option<serde_json::Value>,
    /// Already free of secrets.
    pub(crate) error: Option<String>,
    /// A confirmation whose answer lacked a declared echo; free of secrets.
    pub(crate) warning: Option<String>,
    /// The approval that let this operation's removals through (held set, who).
    pub(crate) approval: Option<&'a serde_json::Value>,
    /// A confirmed group's members with their details (JSON), for a target whose
    /// request gives them.
    pub(crate) member_users: Option<String>,
    /// Whether a confirmed operation leaves its entity as planned: not so for a
    /// group delta another one of the same group follows, whose row keeps
    /// [`SENDING`] until the last is confirmed.
    pub(crate) settles: bool,
    /// For an operation the target refused (so it applied nothing), the fingerprint
    /// its row takes back from [`SENDING`]: the one it had before the run marked it,
    /// or for a group delta, that of the delta confirmed just before it (whose list
    /// the row holds).
    pub(crate) restores: Option<&'a str>,
}

/// `head` (ending in `target = `) for `target` and the rows whose id is one of `ids`.
fn in_ids<'q>(head: String, target: &'q str, ids: &[&'q str]) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut q = sqlx::QueryBuilder::new(head);
    q.push_bind(target).push(" AND id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    list.push_unseparated(")");
    q
}

/// A marked row's fingerprint given back: (fingerprint, target, id).
const UNMARK_GROUP: &str =
    "UPDATE snapshot_groups SET fingerprint = ? WHERE target = ? AND id = ? AND fingerprint = 'sending'";
const UNMARK_USER: &str =
    "UPDATE snapshot_users SET fingerprint = ? WHERE target = ? AND id = ? AND fingerprint = 'sending'";

/// The fingerprints snapshot rows had before [`Store::mark_sending`], by id.
#[derive(Debug, Default)]
pub(crate) struct Marked {
    pub(crate) groups: std::collections::HashMap<String, String>,
    pub(crate) users: std::collections::HashMap<String, String>,
}

impl Marked {
    /// The fingerprint `op`'s entity had before it was marked.
    pub(crate) fn before(&self, op: &Operation) -> Option<&str> {
        match op {
            Operation::ReplaceMembers(g) => self.groups.get(&g.group.id),
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => self.users.get(&u.user.id),
        }
        .map(String::as_str)
    }
}

/// The fingerprint of a snapshot row whose entity has a request under way, which no
/// request has: until its confirmation is recorded, the next run plans the entity
/// again, even when the source went back to what the row holds (the target may
/// have applied the request of a run killed before it recorded the answer).
pub(crate) const SENDING: &str = "sending";

/// An entity left out of a run because its request cannot be built (a template
/// error, or a value the endpoint's validations refuse). Reported, never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// `group` or `user`.
    pub(crate) kind: &'static str,
    pub(crate) id: String,
    pub(crate) name: String,
    /// Already free of secrets.
    pub(crate) reason: String,
}

/// One audit row, as `dirsync audit` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRow {
    pub(crate) id: i64,
    pub run_id: String,
    pub at: String,
    pub target: String,
    pub operation: String,
    pub(crate) entity_kind: String,
    pub entity_id: String,
    pub entity_name: String,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub attempts: i64,
    pub summary: Option<serde_json::Value>,
    pub drift: Option<serde_json::Value>,
    pub error: Option<String>,
    pub warning: Option<String>,
}

/// Filters for `dirsync audit`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub run_id: Option<String>,
    pub target: Option<String>,
    pub entity: Option<String>,
    /// Rows at or after this time (RFC 3339, UTC, as `now` writes it).
    pub since: Option<String>,
    /// Rows before this time (same form): `since`..`until` is a half-open range, so
    /// consecutive months neither overlap nor leave a gap.
    pub until: Option<String>,
    /// At most this many rows; `None` for all of them.
    pub limit: Option<i64>,
}

/// One run, as `dirsync status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub command: String,
    pub(crate) dry_run: bool,
    pub started_at: String,
    pub(crate) finished_at: Option<String>,
    pub outcome: Option<String>,
    pub summary: Option<serde_json::Value>,
}

/// A target (or one of its endpoints) that asked, with `Retry-After`, to be left
/// alone for longer than a run waits.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct PauseRow {
    pub target: String,
    /// `None`: the whole target.
    pub endpoint: Option<String>,
    /// RFC 3339 UTC.
    pub until: String,
    pub http_status: Option<i64>,
}

/// An entity whose request cannot be built from the source data, as `status` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct InvalidRow {
    pub target: String,
    pub entity_kind: String,
    pub entity_id: String,
    pub entity_name: String,
    pub reason: String,
    pub since: String,
}

/// The source as the last run read it, as `dirsync status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceState {
    /// `csv` or `ldap`.
    pub kind: String,
    pub(crate) config_hash: String,
    /// Per kind (CSV: each file's path, size, mtime and SHA-256); no secrets.
    pub token: Option<serde_json::Value>,
    /// When the token was written, RFC 3339 UTC.
    pub token_at: String,
    /// Moves whenever what was read changed.
    pub generation: i64,
    pub(crate) users: i64,
    pub(crate) groups: i64,
    /// `full` or `unchanged`.
    pub last_mode: String,
    pub last_reason: String,
    pub last_read_at: String,
    pub last_full_at: Option<String>,
    /// Why the next read must be full (the last one failed); `None` otherwise.
    pub force_full: Option<String>,
}

/// What a run read, written before its push.
#[derive(Debug, Clone)]
pub(crate) struct SourceRead<'a> {
    pub(crate) kind: &'a str,
    pub(crate) config_hash: &'a str,
    pub(crate) token: Option<serde_json::Value>,
    pub(crate) generation: i64,
    pub(crate) users: usize,
    pub(crate) groups: usize,
    pub(crate) mode: &'a str,
    pub(crate) reason: &'a str,
    /// The read parsed everything: `last_full_at` moves.
    pub(crate) full: bool,
    /// What changes in the LDAP entry cache.
    pub(crate) entries: EntryWrite<'a>,
}

/// What a read changes in the LDAP entry cache.
#[derive(Debug, Clone)]
pub(crate) enum EntryWrite<'a> {
    /// Nothing (a CSV source, or a refresh that changed nothing).
    Keep,
    /// No cache is kept (a source read without content synchronisation).
    Clear,
    /// The cache is these entries.
    Replace(&'a Cache),
    /// These entries of `cache` changed or were removed.
    Apply { cache: &'a Cache, delta: &'a Delta },
}

/// A target's claim about its last plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetState {
    pub(crate) generation: i64,
    pub(crate) config_hash: String,
    /// Everything the plan held was confirmed.
    pub(crate) clean: bool,
    /// The latest source change time the target confirmed everything up to.
    pub(crate) changed_through: Option<std::time::SystemTime>,
}

/// The latest audit row of an entity whose last attempt failed.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct Pending {
    pub target: String,
    pub entity_kind: String,
    pub entity_id: String,
    pub entity_name: String,
    pub at: String,
    pub error: Option<String>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a killed process; a power loss may drop the
            // last commits, which only makes the next run push those groups again.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // sqlx logs statements slower than a second at WARN: reading the entry
            // cache of a large directory is one, and no operator can act on it.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        Ok(Store { pool })
    }

    pub(crate) async fn close(self) {
        self.pool.close().await;
    }

    /// What `target` last confirmed.
    pub(crate) async fn load_snapshot(&self, target: &str) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        let rows = sqlx::query("SELECT id, name, members, json_array_length(members) AS n, fingerprint, member_users, member_users_at FROM snapshot_groups WHERE target = ?")
            .bind(target)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let text: String = row.try_get("members")?;
            let count: Option<i64> = row.try_get("n")?;
            let count = count
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    id: id.clone(),
                    message: "the member list is not a JSON array".into(),
                })?;
            snapshot.groups.insert(
                id,
                SnapshotGroup {
                    name: row.try_get("name")?,
                    members: Members { json: text, count },
                    fingerprint: row.try_get("fingerprint")?,
                    member_users: row.try_get("member_users")?,
                    confirmed_at: row
                        .try_get::<Option<String>, _>("member_users_at")?
                        .unwrap_or_default(),
                },
            );
        }
        let rows =
            sqlx::query("SELECT id, name, enabled, data, fingerprint FROM snapshot_users WHERE target = ?")
                .bind(target)
                .fetch_all(&self.pool)
                .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let data: String = row.try_get("data")?;
            snapshot.users.insert(
                id,
                SnapshotUser {
                    name: row.try_get("name")?,
                    fingerprint: row.try_get("fingerprint")?,
                    enabled: row.try_get("enabled")?,
                    user: serde_json::from_str(&data).ok(),
                },
            );
        }
        Ok(snapshot)
    }

    pub(crate) async fn start_run(&self, id: &str, command: &str, dry_run: bool) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO runs (id, command, dry_run, started_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(command)
            .bind(dry_run)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn finish_run(
        &self,
        id: &str,
        outcome: &str,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?")
            .bind(now())
            .bind(outcome)
            .bind(summary.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the snapshot rows of `groups` and `users` of `target` as [`SENDING`],
    /// before their requests go out; returns the fingerprints they had.
    pub(crate) async fn mark_sending(
        &self,
        target: &str,
        groups: &[&str],
        users: &[&str],
    ) -> Result<Marked, StoreError> {
        let mut marked = Marked::default();
        let mut tx = self.pool.begin().await?;
        for (table, ids, before) in [
            ("snapshot_groups", groups, &mut marked.groups),
            ("snapshot_users", users, &mut marked.users),
        ] {
            for chunk in ids.chunks(500) {
                let rows: Vec<(String, String)> = in_ids(
                    format!("SELECT id, fingerprint FROM {table} WHERE target = "),
                    target,
                    chunk,
                )
                .build_query_as()
                .fetch_all(&mut *tx)
                .await?;
                before.extend(rows);
                in_ids(
                    format!("UPDATE {table} SET fingerprint = '{SENDING}' WHERE target = "),
                    target,
                    chunk,
                )
                .build()
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// Gives the rows of entities `marked` that no request went out for (the run
    /// stopped, or their endpoint waits out a pause) their fingerprints back.
    pub(crate) async fn unmark(
        &self,
        target: &str,
        marked: &Marked,
        groups: &[&str],
        users: &[&str],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (unmark, ids, before) in [
            (UNMARK_GROUP, groups, &marked.groups),
            (UNMARK_USER, users, &marked.users),
        ] {
            for id in ids {
                let Some(fingerprint) = before.get(*id) else {
                    continue;
                };
                sqlx::query(unmark)
                    .bind(fingerprint)
                    .bind(target)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records several pushed operations in one transaction: for each, on success its
    /// snapshot row and audit row; on failure the audit row alone. One commit per
    /// batch instead of per operation keeps the push at the target's pace. A batch is
    /// all or nothing, so a crash loses at most confirmations not yet written, and
    /// those operations are simply pushed again by the next run.
    pub(crate) async fn record_batch(&self, recs: &[Record<'_>]) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        for rec in recs {
            record_in(&mut tx, rec, &at).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn record_in(tx: &mut sqlx::SqliteConnection, rec: &Record<'_>, at: &str) -> Result<(), StoreError> {
    if rec.success {
        match rec.op {
            Operation::ReplaceMembers(g) => {
                let members = serde_json::to_string(&g.group.members).unwrap_or_default();
                sqlx::query(
                        "INSERT INTO snapshot_groups (target, id, name, members, fingerprint, member_users,
                           member_users_at, run_id, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (target, id) DO UPDATE SET name = excluded.name, members = excluded.members,
                           fingerprint = excluded.fingerprint, member_users = excluded.member_users,
                           member_users_at = excluded.member_users_at,
                           run_id = excluded.run_id, updated_at = excluded.updated_at",
                    )
                    .bind(rec.target)
                    .bind(&g.group.id)
                    .bind(&g.group.name)
                    .bind(members)
                    .bind(if rec.settles { g.fingerprint.as_str() } else { SENDING })
                    .bind(rec.member_users.as_deref())
                    .bind(rec.member_users.as_ref().map(|_| at))
                    .bind(rec.run_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            Operation::UpdateUser(u) => {
                let data = serde_json::to_string(&u.user.user).unwrap_or_default();
                sqlx::query(
                        "INSERT INTO snapshot_users (target, id, name, enabled, data, fingerprint, run_id, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (target, id) DO UPDATE SET name = excluded.name, enabled = excluded.enabled,
                           data = excluded.data, fingerprint = excluded.fingerprint, run_id = excluded.run_id,
                           updated_at = excluded.updated_at",
                    )
                    .bind(rec.target)
                    .bind(&u.user.id)
                    .bind(&u.user.user.username)
                    .bind(u.user.user.enabled)
                    .bind(data)
                    .bind(&u.fingerprint)
                    .bind(rec.run_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            Operation::DeleteUser(u) => {
                // The user is gone from the target: nothing is left to diff against,
                // and the service's id for the user names no one any more.
                sqlx::query("DELETE FROM snapshot_users WHERE target = ? AND id = ?")
                    .bind(rec.target)
                    .bind(&u.user.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM target_ids WHERE target = ? AND kind = 'user' AND key = ?")
                    .bind(rec.target)
                    .bind(&u.user.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    if let (false, Some(fingerprint)) = (rec.success, rec.restores) {
        let (unmark, id) = match rec.op {
            Operation::ReplaceMembers(g) => (UNMARK_GROUP, &g.group.id),
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => (UNMARK_USER, &u.user.id),
        };
        sqlx::query(unmark)
            .bind(fingerprint)
            .bind(rec.target)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let (kind, mut summary) = match rec.op {
        Operation::ReplaceMembers(g) => (
            "group",
            serde_json::json!({ "reason": g.reason, "members": g.group.members.len(), "added": g.added, "removed": g.removed }),
        ),
        Operation::UpdateUser(u) => (
            "user",
            serde_json::json!({ "reason": u.reason, "enabled": u.user.user.enabled, "disables": u.disables }),
        ),
        Operation::DeleteUser(u) => ("user", serde_json::json!({ "reason": u.reason })),
    };
    if let Some(approval) = rec.approval {
        summary["approved"] = approval.clone();
    }
    insert_audit(
        tx,
        AuditInsert {
            run_id: rec.run_id,
            at,
            target: rec.target,
            operation: rec.operation.unwrap_or_else(|| rec.op.kind()),
            entity_kind: kind,
            entity_id: rec.op.entity_id(),
            entity_name: rec.op.entity_name(),
            outcome: if rec.success { "success" } else { "failed" },
            http_status: rec.http_status,
            attempts: rec.attempts,
            summary: Some(summary.to_string()),
            drift: rec.drift.as_ref().map(|d| d.to_string()),
            error: rec.error.as_deref(),
            warning: rec.warning.as_deref(),
        },
    )
    .await?;
    Ok(())
}

impl Store {
    /// Records the users left out of a target's member lists, one audit row each.
    pub(crate) async fn record_unmapped(
        &self,
        run_id: &str,
        target: &str,
        unmapped: &[Unmapped],
    ) -> Result<(), StoreError> {
        if unmapped.is_empty() {
            return Ok(());
        }
        let rows = unmapped.iter().map(|u| {
            (
                "unmapped",
                "user",
                u.source_id.as_str(),
                u.username.as_str(),
                u.reason.as_str(),
            )
        });
        self.record_not_sent(run_id, target, rows).await
    }

    /// Brings a target's invalid entities up to date with this run's, in one
    /// transaction, and returns those to report: new ones, and ones whose reason
    /// changed (its data changed). Each of those gets a `skipped` audit row; one seen
    /// with the same reason before gets none, and one no longer invalid is forgotten.
    pub(crate) async fn record_invalid<'s>(
        &self,
        run_id: &str,
        target: &str,
        invalid: &'s [Skipped],
    ) -> Result<Vec<&'s Skipped>, StoreError> {
        let known = self.known_invalid(target).await?;
        let now_invalid: BTreeSet<(&str, &str)> = invalid.iter().map(|s| (s.kind, s.id.as_str())).collect();
        let fresh = fresh_invalid(&known, invalid);
        let at = now();
        let mut tx = self.pool.begin().await?;
        for (kind, id) in known.keys() {
            if !now_invalid.contains(&(kind.as_str(), id.as_str())) {
                sqlx::query(
                    "DELETE FROM invalid_entities WHERE target = ? AND entity_kind = ? AND entity_id = ?",
                )
                .bind(target)
                .bind(kind)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        for s in &fresh {
            sqlx::query(
                "INSERT INTO invalid_entities (target, entity_kind, entity_id, entity_name, reason, since, run_id)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (target, entity_kind, entity_id) DO UPDATE SET entity_name = excluded.entity_name,
                   reason = excluded.reason, since = excluded.since, run_id = excluded.run_id",
            )
            .bind(target)
            .bind(s.kind)
            .bind(&s.id)
            .bind(&s.name)
            .bind(&s.reason)
            .bind(&at)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        let rows = fresh.iter().map(|s| {
            let operation = if s.kind == "group" {
                "replace_members"
            } else {
                "update_user"
            };
            (
                operation,
                s.kind,
                s.id.as_str(),
                s.name.as_str(),
                s.reason.as_str(),
            )
        });
        insert_not_sent(&mut tx, run_id, target, &at, rows).await?;
        tx.commit().await?;
        Ok(fresh)
    }

    /// A target's invalid entities as last reported: (kind, id) → reason.
    pub(crate) async fn known_invalid(
        &self,
        target: &str,
    ) -> Result<BTreeMap<(String, String), String>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT entity_kind, entity_id, reason FROM invalid_entities WHERE target = ?")
                .bind(target)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, id, reason)| ((kind, id), reason))
            .collect())
    }

    /// Entities whose request cannot be built from the source data, per target.
    pub async fn invalid(&self) -> Result<Vec<InvalidRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT target, entity_kind, entity_id, entity_name, reason, since FROM invalid_entities
             ORDER BY target, entity_kind, entity_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Keeps a target's `Retry-After` beyond this run: nothing is sent to the target
    /// (or, with `endpoint`, to that endpoint) before `wait` from now has passed.
    /// Returns that time, RFC 3339 UTC.
    pub(crate) async fn set_pause(
        &self,
        run_id: &str,
        target: &str,
        endpoint: Option<&str>,
        wait: Duration,
        http_status: Option<u16>,
    ) -> Result<String, StoreError> {
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
        let until = stamp(chrono::Utc::now() + wait);
        sqlx::query(
            "INSERT INTO target_pauses (target, endpoint, until, http_status, run_id) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (target, endpoint) DO UPDATE SET until = MAX(until, excluded.until),
               http_status = excluded.http_status, run_id = excluded.run_id",
        )
        .bind(target)
        .bind(endpoint.unwrap_or(""))
        .bind(&until)
        .bind(http_status.map(i64::from))
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(until)
    }

    /// The pauses still in force at `now` (RFC 3339 UTC), for `target` or for every
    /// target; those whose time has passed are deleted.
    pub async fn pauses(&self, target: Option<&str>, now: &str) -> Result<Vec<PauseRow>, StoreError> {
        sqlx::query("DELETE FROM target_pauses WHERE until <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        // The whole target is stored as endpoint '' (it is part of the key).
        Ok(sqlx::query_as(
            "SELECT target, NULLIF(endpoint, '') AS endpoint, until, http_status FROM target_pauses
             WHERE ?1 IS NULL OR target = ?1 ORDER BY target, endpoint",
        )
        .bind(target)
        .fetch_all(&self.pool)
        .await?)
    }

    /// `skipped` audit rows, one per (operation, entity kind, id, name, reason), in
    /// one transaction: entities that were deliberately not sent.
    async fn record_not_sent<'r>(
        &self,
        run_id: &str,
        target: &str,
        rows: impl Iterator<Item = (&'r str, &'r str, &'r str, &'r str, &'r str)>,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        insert_not_sent(&mut tx, run_id, target, &at, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// After a complete resync: forgets snapshot rows of entities no longer desired.
    pub(crate) async fn retain(
        &self,
        target: &str,
        groups: &BTreeSet<String>,
        users: &BTreeSet<String>,
    ) -> Result<u64, StoreError> {
        let snapshot = self.load_snapshot(target).await?;
        let mut tx = self.pool.begin().await?;
        let gone_groups = snapshot.groups.keys().filter(|id| !groups.contains(*id));
        let gone_users = snapshot.users.keys().filter(|id| !users.contains(*id));
        let gone = gone_groups
            .map(|id| ("DELETE FROM snapshot_groups WHERE target = ? AND id = ?", id))
            .chain(gone_users.map(|id| ("DELETE FROM snapshot_users WHERE target = ? AND id = ?", id)));
        let mut removed = 0;
        for (sql, id) in gone {
            removed += sqlx::query(sql)
                .bind(target)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Audit rows, newest first.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, run_id, at, target, operation, entity_kind, entity_id, entity_name, outcome,
                    http_status, attempts, summary, drift, error, warning
             FROM audit
             WHERE (?1 IS NULL OR substr(run_id, -length(?1)) = ?1) AND (?2 IS NULL OR target = ?2)
               AND (?3 IS NULL OR entity_id = ?3 OR entity_name = ?3) AND (?4 IS NULL OR at >= ?4)
               AND (?5 IS NULL OR at < ?5)
             ORDER BY id DESC LIMIT ?6",
        )
        .bind(&q.run_id)
        .bind(&q.target)
        .bind(&q.entity)
        .bind(&q.since)
        .bind(&q.until)
        // SQLite reads a negative LIMIT as no limit.
        .bind(q.limit.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await?;
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        rows.into_iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    at: r.try_get("at")?,
                    target: r.try_get("target")?,
                    operation: r.try_get("operation")?,
                    entity_kind: r.try_get("entity_kind")?,
                    entity_id: r.try_get("entity_id")?,
                    entity_name: r.try_get("entity_name")?,
                    outcome: r.try_get("outcome")?,
                    http_status: r.try_get("http_status")?,
                    attempts: r.try_get("attempts")?,
                    summary: json(r.try_get("summary")?),
                    drift: json(r.try_get("drift")?),
                    error: r.try_get("error")?,
                    warning: r.try_get("warning")?,
                })
            })
            .collect()
    }

    /// The latest runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, command, dry_run, started_at, finished_at, outcome, summary FROM runs ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let summary: Option<String> = r.try_get("summary")?;
                Ok(RunRow {
                    id: r.try_get("id")?,
                    command: r.try_get("command")?,
                    dry_run: r.try_get("dry_run")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .collect()
    }

    /// When the last successful run (not a dry run, nor the run a `verify --repair`
    /// records) ended, as Unix seconds.
    pub(crate) async fn last_success(&self) -> Result<Option<f64>, StoreError> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT finished_at FROM runs WHERE outcome = 'success' AND dry_run = 0 AND command <> 'verify' \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(at
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.timestamp_millis() as f64 / 1000.0))
    }

    /// Entities whose latest push attempt failed and that no later success covered.
    /// (Entities skipped as invalid source data are listed by [`Store::invalid`].)
    pub async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.target, a.entity_kind, a.entity_id, a.entity_name, a.at, a.error
             FROM audit a
             JOIN (SELECT target, entity_kind, entity_id, MAX(id) AS last FROM audit
                   WHERE operation != 'unmapped' GROUP BY target, entity_kind, entity_id) l ON a.id = l.last
             WHERE a.outcome = 'failed'
             ORDER BY a.target, a.entity_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The source as the last run read it; `None` before the first run.
    pub async fn source_state(&self) -> Result<Option<SourceState>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT kind, config_hash, token, token_at, generation, users, groups, last_mode, last_reason,
                    last_read_at, last_full_at, force_full FROM source_state WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let token: Option<String> = r.try_get("token")?;
        // A token that is not JSON is no token: the read is full.
        let token = token
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .unwrap_or_else(|e| {
                tracing::warn!("The stored source token is not JSON ({e}); the next read is full.");
                None
            });
        Ok(Some(SourceState {
            kind: r.try_get("kind")?,
            config_hash: r.try_get("config_hash")?,
            token,
            token_at: r.try_get("token_at")?,
            generation: r.try_get("generation")?,
            users: r.try_get("users")?,
            groups: r.try_get("groups")?,
            last_mode: r.try_get("last_mode")?,
            last_reason: r.try_get("last_reason")?,
            last_read_at: r.try_get("last_read_at")?,
            last_full_at: r.try_get("last_full_at")?,
            force_full: r.try_get("force_full")?,
        }))
    }

    /// The LDAP entry cache, as the last read committed it.
    pub(crate) async fn source_entries(&self) -> Result<Cache, StoreError> {
        let mut out = Cache::default();
        let mut rows = sqlx::query("SELECT kind, id, dn, attrs FROM source_entries").fetch(&self.pool);
        while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await? {
            let (kind, id): (String, String) = (r.try_get("kind")?, r.try_get("id")?);
            let corrupt = |message: String| StoreError::Corrupt {
                id: format!("source_entries {kind} {id}"),
                message,
            };
            let k = Kind::parse(&kind).ok_or_else(|| corrupt("unknown kind".into()))?;
            let attrs: String = r.try_get("attrs")?;
            let entry = Entry {
                dn: r.try_get("dn")?,
                attrs: cache::decode_attrs(&attrs).map_err(|e| corrupt(format!("the attributes: {e}")))?,
            };
            match k {
                Kind::User => out.users.insert(id, entry),
                Kind::Group => out.groups.insert(id, entry),
            };
        }
        Ok(out)
    }

    /// Makes the next read full, for `why`; outside any read's transaction, so that
    /// a read that failed and committed nothing still leaves the mark.
    pub(crate) async fn force_full_read(&self, why: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE source_state SET force_full = ? WHERE id = 1")
            .bind(why)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every target's claim about its last plan, by name.
    pub(crate) async fn target_states(&self) -> Result<BTreeMap<String, TargetState>, StoreError> {
        let rows =
            sqlx::query("SELECT target, generation, config_hash, clean, changed_through FROM target_state")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("target")?,
                    TargetState {
                        generation: r.try_get("generation")?,
                        config_hash: r.try_get("config_hash")?,
                        clean: r.try_get("clean")?,
                        changed_through: r
                            .try_get::<Option<i64>, _>("changed_through")?
                            .and_then(|ms| u64::try_from(ms).ok())
                            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
                    },
                ))
            })
            .collect()
    }

    /// Records what this run read and marks the `planned` targets (name, config hash)
    /// not clean until their push is confirmed, in one transaction: a run killed
    /// after this commit plans those targets again.
    pub(crate) async fn commit_source_read(
        &self,
        read: &SourceRead<'_>,
        planned: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO source_state (id, kind, config_hash, token, token_at, generation, users, groups,
                                       last_mode, last_reason, last_read_at, last_full_at)
             VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, config_hash = excluded.config_hash,
               token = excluded.token, token_at = excluded.token_at, generation = excluded.generation,
               users = excluded.users, groups = excluded.groups, last_mode = excluded.last_mode,
               last_reason = excluded.last_reason, last_read_at = excluded.last_read_at,
               last_full_at = COALESCE(excluded.last_full_at, source_state.last_full_at),
               force_full = NULL",
        )
        .bind(read.kind)
        .bind(read.config_hash)
        .bind(read.token.as_ref().map(|t| t.to_string()))
        .bind(&at)
        .bind(read.generation)
        .bind(read.users as i64)
        .bind(read.groups as i64)
        .bind(read.mode)
        .bind(read.reason)
        .bind(&at)
        .bind(read.full.then_some(&at))
        .execute(&mut *tx)
        .await?;
        write_entries(&mut tx, &read.entries).await?;
        for (target, config_hash) in planned {
            upsert_target_state(&mut tx, target, read.generation, config_hash, false, &at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records whether everything `target`'s plan held was confirmed.
    pub(crate) async fn set_target_state(
        &self,
        target: &str,
        generation: i64,
        config_hash: &str,
        clean: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        upsert_target_state(&mut conn, target, generation, config_hash, clean, &now()).await
    }

    /// Records that `target` confirmed every change of the source up to `through`.
    pub(crate) async fn set_changed_through(
        &self,
        target: &str,
        through: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        let ms = through
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        sqlx::query("UPDATE target_state SET changed_through = ? WHERE target = ?")
            .bind(ms)
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Row counts of the snapshot, per target: (groups, users).
    pub async fn snapshot_counts(&self) -> Result<BTreeMap<String, (i64, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT target, SUM(g), SUM(u) FROM
               (SELECT target, 1 AS g, 0 AS u FROM snapshot_groups
                UNION ALL SELECT target, 0, 1 FROM snapshot_users)
             GROUP BY target",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(target, g, u)| (target, (g, u))).collect())
    }
}

/// The invalid entities to report: those not reported before, or reported with
/// another reason (their data changed).
pub(crate) fn fresh_invalid<'s>(
    known: &BTreeMap<(String, String), String>,
    invalid: &'s [Skipped],
) -> Vec<&'s Skipped> {
    invalid
        .iter()
        .filter(|s| known.get(&(s.kind.to_owned(), s.id.clone())) != Some(&s.reason))
        .collect()
}

/// Rows per INSERT of the entry cache, under SQLite's limit of bound parameters.
const ENTRY_ROWS_PER_INSERT: usize = 500;

async fn write_entries(tx: &mut sqlx::SqliteConnection, write: &EntryWrite<'_>) -> Result<(), StoreError> {
    let (cache, upserts): (&Cache, Vec<(Kind, &String)>) = match write {
        EntryWrite::Keep => return Ok(()),
        EntryWrite::Clear => {
            sqlx::query("DELETE FROM source_entries")
                .execute(&mut *tx)
                .await?;
            return Ok(());
        }
        EntryWrite::Replace(cache) => {
            sqlx::query("DELETE FROM source_entries")
                .execute(&mut *tx)
                .await?;
            let all = [Kind::User, Kind::Group]
                .into_iter()
                .flat_map(|k| cache.entries(k).keys().map(move |id| (k, id)))
                .collect();
            (cache, all)
        }
        EntryWrite::Apply { cache, delta } => {
            for (kind, id) in &delta.removed {
                sqlx::query("DELETE FROM source_entries WHERE kind = ? AND id = ?")
                    .bind(kind.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            (cache, delta.upserted.iter().map(|(k, id)| (*k, id)).collect())
        }
    };
    // An upserted id is in the cache by construction.
    let rows: Vec<(Kind, &String, &Entry)> = upserts
        .into_iter()
        .filter_map(|(kind, id)| cache.entries(kind).get(id).map(|e| (kind, id, e)))
        .collect();
    for chunk in rows.chunks(ENTRY_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::new("INSERT OR REPLACE INTO source_entries (kind, id, dn, attrs) ");
        q.push_values(chunk, |mut row, (kind, id, entry)| {
            row.push_bind(kind.as_str())
                .push_bind((*id).clone())
                .push_bind(entry.dn.clone())
                .push_bind(cache::encode_attrs(&entry.attrs));
        });
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

async fn upsert_target_state(
    conn: &mut sqlx::SqliteConnection,
    target: &str,
    generation: i64,
    config_hash: &str,
    clean: bool,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO target_state (target, generation, config_hash, clean, at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (target) DO UPDATE SET generation = excluded.generation,
           config_hash = excluded.config_hash, clean = excluded.clean, at = excluded.at",
    )
    .bind(target)
    .bind(generation)
    .bind(config_hash)
    .bind(clean)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// `skipped` audit rows, one per (operation, entity kind, id, name, reason).
async fn insert_not_sent<'r>(
    tx: &mut sqlx::SqliteConnection,
    run_id: &str,
    target: &str,
    at: &str,
    rows: impl Iterator<Item = (&'r str, &'r str, &'r str, &'r str, &'r str)>,
) -> Result<(), StoreError> {
    for (operation, entity_kind, entity_id, entity_name, reason) in rows {
        insert_audit(
            &mut *tx,
            AuditInsert {
                run_id,
                at,
                target,
                operation,
                entity_kind,
                entity_id,
                entity_name,
                outcome: "skipped",
                http_status: None,
                attempts: 0,
                summary: None,
                drift: None,
                error: Some(reason),
                warning: None,
            },
        )
        .await?;
    }
    Ok(())
}

struct AuditInsert<'a> {
    run_id: &'a str,
    at: &'a str,
    target: &'a str,
    operation: &'a str,
    entity_kind: &'a str,
    entity_id: &'a str,
    entity_name: &'a str,
    outcome: &'a str,
    http_status: Option<u16>,
    attempts: u32,
    summary: Option<String>,
    drift: Option<String>,
    error: Option<&'a str>,
    warning: Option<&'a str>,
}

async fn insert_audit(tx: &mut sqlx::SqliteConnection, a: AuditInsert<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (run_id, at, target, operation, entity_kind, entity_id, entity_name, outcome,
                            http_status, attempts, summary, drift, error, warning)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.run_id)
    .bind(a.at)
    .bind(a.target)
    .bind(a.operation)
    .bind(a.entity_kind)
    .bind(a.entity_id)
    .bind(a.entity_name)
    .bind(a.outcome)
    .bind(a.http_status.map(i64::from))
    .bind(i64::from(a.attempts))
    .bind(a.summary)
    .bind(a.drift)
    .bind(a.error)
    .bind(a.warning)
    .execute(tx)
    .await?;
    Ok(())
}

/// A stored count; a negative one (a hand-edited database) reads as none.
pub(crate) fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}
