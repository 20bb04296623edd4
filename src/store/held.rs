//! Held removals (`held_changes`), the last source read trusted with removals
//! (`accepted_read`) and members waiting out the removal delay (`absent_members`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use serde::Serialize;

use super::{Store, StoreError, now};
use crate::hold::{Held, Waiting};

/// One held set as stored.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct HeldRow {
    pub id: String,
    pub target: String,
    pub status: String,
    /// JSON list of why.
    #[serde(skip)]
    pub reasons: String,
    pub removed_memberships: i64,
    pub disabled_users: i64,
    /// JSON: what is held.
    #[serde(skip)]
    pub detail: String,
    pub first_held_at: String,
    pub last_held_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
}

impl HeldRow {
    pub fn reasons(&self) -> Vec<String> {
        serde_json::from_str(&self.reasons).unwrap_or_default()
    }

    /// What is held; a hand-edited row that does not parse holds nothing.
    pub fn held(&self) -> Held {
        let mut held: Held = serde_json::from_str(&self.detail).unwrap_or_default();
        held.reasons = self.reasons();
        held
    }
}

/// A removal waiting out `safety.removal_delay`.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct AbsentRow {
    pub target: String,
    pub group_id: String,
    pub member: String,
    pub since: String,
    pub due: String,
}

/// The columns of a [`HeldRow`], for `SELECT`s.
macro_rules! held_columns {
    () => {
        "id, target, status, reasons, removed_memberships, disabled_users, detail, first_held_at, last_held_at, \
         decided_by, decided_at"
    };
}

impl Store {
    /// Records what a run holds for a target and returns the held set's id: the same
    /// removals held again keep their id; other ones replace the target's earlier
    /// set. A run that holds nothing clears the target's set.
    pub(crate) async fn record_held(
        &self,
        run_id: &str,
        target: &str,
        held: &Held,
    ) -> Result<Option<String>, StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        if held.is_empty() {
            sqlx::query("UPDATE held_changes SET status = 'cleared' WHERE target = ? AND status = 'held'")
                .bind(target)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        }
        let fingerprint = held.fingerprint();
        let reasons = serde_json::to_string(&held.reasons).unwrap_or_default();
        let same: Option<String> = sqlx::query_scalar(
            "SELECT id FROM held_changes WHERE target = ? AND fingerprint = ? AND status = 'held'",
        )
        .bind(target)
        .bind(&fingerprint)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match same {
            Some(id) => {
                sqlx::query(
                    "UPDATE held_changes SET last_held_at = ?, last_run_id = ?, reasons = ? WHERE id = ?",
                )
                .bind(&at)
                .bind(run_id)
                .bind(&reasons)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                sqlx::query(
                    "UPDATE held_changes SET status = 'replaced' WHERE target = ? AND status = 'held'",
                )
                .bind(target)
                .execute(&mut *tx)
                .await?;
                // The random tail of a UUIDv7: short enough to type, unique enough.
                let uuid = uuid::Uuid::now_v7().simple().to_string();
                let id = format!("h{}", &uuid[uuid.len() - 10..]);
                let detail = held.detail();
                sqlx::query(
                    "INSERT INTO held_changes (id, target, fingerprint, status, reasons, removed_memberships,
                       disabled_users, detail, first_held_at, last_held_at, last_run_id)
                     VALUES (?, ?, ?, 'held', ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(target)
                .bind(&fingerprint)
                .bind(&reasons)
                .bind(held.removed_memberships() as i64)
                .bind(held.disabled_users() as i64)
                .bind(detail.to_string())
                .bind(&at)
                .bind(&at)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(Some(id))
    }

    /// The held sets waiting for an operator, oldest first.
    pub async fn held(&self) -> Result<Vec<HeldRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            held_columns!(),
            " FROM held_changes WHERE status = 'held' ORDER BY first_held_at, id"
        );
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }

    /// One held set, whatever its status.
    pub async fn held_set(&self, id: &str) -> Result<Option<HeldRow>, StoreError> {
        let sql = concat!("SELECT ", held_columns!(), " FROM held_changes WHERE id = ?");
        Ok(sqlx::query_as(sql).bind(id).fetch_optional(&self.pool).await?)
    }

    /// Marks a held set `approved` or `discarded` by `by`.
    pub async fn decide_held(&self, id: &str, status: &str, by: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE held_changes SET status = ?, decided_by = ?, decided_at = ? WHERE id = ?")
            .bind(status)
            .bind(by)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Holds again a set an approval run cleared without sending it whole. False
    /// when the run replaced it instead (it held other removals too): the new set
    /// holds what is left of it.
    pub(crate) async fn hold_again(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE held_changes SET status = 'held' WHERE id = ? AND status IN ('held', 'cleared')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The last read `target` trusted with removals: (users, memberships); for a
    /// target without one, the last read every target trusted.
    pub(crate) async fn accepted_read(&self, target: &str) -> Result<Option<(usize, usize)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT users, memberships FROM (
                 SELECT 0 AS own, users, memberships FROM target_accepted_read WHERE target = ?
                 UNION ALL SELECT 1, users, memberships FROM accepted_read WHERE id = 1
             ) ORDER BY own LIMIT 1",
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(u, m)| (super::count(u), super::count(m))))
    }

    pub(crate) async fn accept_read(
        &self,
        target: &str,
        users: usize,
        memberships: usize,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO target_accepted_read (target, users, memberships, at) VALUES (?, ?, ?, ?)
             ON CONFLICT (target) DO UPDATE SET users = excluded.users, memberships = excluded.memberships, at = excluded.at",
        )
        .bind(target)
        .bind(users as i64)
        .bind(memberships as i64)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Since when each (group, member) of a target has been absent from the source.
    /// A time that does not parse (a hand-edited row) reads as absent from now on.
    pub(crate) async fn absences(
        &self,
        target: &str,
    ) -> Result<BTreeMap<(String, String), DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT group_id, member, since FROM absent_members WHERE target = ?")
                .bind(target)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(g, m, since)| {
                let since = DateTime::parse_from_rfc3339(&since).ok()?.to_utc();
                Some(((g, m), since))
            })
            .collect())
    }

    /// Replaces a target's absent members with `absent`; `waiting` gives the due time
    /// of those not removed yet (the others are due now).
    pub(crate) async fn set_absences(
        &self,
        target: &str,
        absent: &BTreeMap<(String, String), DateTime<Utc>>,
        waiting: &[Waiting],
    ) -> Result<(), StoreError> {
        let due: BTreeMap<(&str, &str), DateTime<Utc>> = waiting
            .iter()
            .map(|w| ((w.group.as_str(), w.member.as_str()), w.due))
            .collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM absent_members WHERE target = ?")
            .bind(target)
            .execute(&mut *tx)
            .await?;
        for ((group, member), since) in absent {
            let due = due.get(&(group.as_str(), member.as_str())).unwrap_or(since);
            sqlx::query(
                "INSERT INTO absent_members (target, group_id, member, since, due) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(target)
            .bind(group)
            .bind(member)
            .bind(super::stamp(*since))
            .bind(super::stamp(*due))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removals waiting out the removal delay, soonest due first.
    pub async fn waiting_removals(&self) -> Result<Vec<AbsentRow>, StoreError> {
        let sql = "SELECT target, group_id, member, since, due FROM absent_members WHERE due > ? ORDER BY due, target, group_id, member";
        Ok(sqlx::query_as(sql).bind(now()).fetch_all(&self.pool).await?)
    }
}
