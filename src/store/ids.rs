//! The ids a target assigned to mapped entities (`target_ids`): a SCIM service picks
//! its own ids, which dirsync keeps by the key it searched the entity by.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Store, StoreError, now};

impl Store {
    /// Every id kept for `target`: (kind, key) → the target's id.
    pub(crate) async fn target_ids(
        &self,
        target: &str,
    ) -> Result<BTreeMap<(String, String), String>, StoreError> {
        let rows = sqlx::query("SELECT kind, key, target_id FROM target_ids WHERE target = ?")
            .bind(target)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok(((r.try_get("kind")?, r.try_get("key")?), r.try_get("target_id")?)))
            .collect()
    }

    /// Keeps the id the target gave the entity of `kind` searched by `key`.
    pub(crate) async fn set_target_id(
        &self,
        target: &str,
        kind: &str,
        key: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO target_ids (target, kind, key, target_id, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (target, kind, key) DO UPDATE SET target_id = excluded.target_id,
               updated_at = excluded.updated_at",
        )
        .bind(target)
        .bind(kind)
        .bind(key)
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a kept id the target no longer knows (it answered 404).
    pub(crate) async fn forget_target_id(
        &self,
        target: &str,
        kind: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM target_ids WHERE target = ? AND kind = ? AND key = ?")
            .bind(target)
            .bind(kind)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Marks a group whose members in the target differ from the snapshot (found by
    /// `dirsync verify --repair`): its row takes the members the target holds and a
    /// fingerprint no request has, and the target is marked not clean, so the next
    /// sync plans the group as changed and sends the whole list, its removals
    /// counted by the safety limits. One audit row
    /// (`verify`, outcome `drift`) says what was found, in the same transaction.
    pub(crate) async fn mark_drift(
        &self,
        run_id: &str,
        target: &str,
        group: (&str, &str),
        held: &std::collections::BTreeSet<String>,
        drift: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let (id, name) = group;
        let at = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE snapshot_groups SET members = ?, fingerprint = 'drift', run_id = ?, updated_at = ? WHERE target = ? AND id = ?")
            .bind(serde_json::to_string(held).unwrap_or_default())
            .bind(run_id)
            .bind(&at)
            .bind(target)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // A clean target is skipped while the source is unchanged: this one is not.
        sqlx::query("UPDATE target_state SET clean = 0 WHERE target = ?")
            .bind(target)
            .execute(&mut *tx)
            .await?;
        super::insert_audit(
            &mut tx,
            super::AuditInsert {
                run_id,
                at: &at,
                target,
                operation: "verify",
                entity_kind: "group",
                entity_id: id,
                entity_name: name,
                outcome: "drift",
                http_status: None,
                attempts: 0,
                summary: None,
                drift: Some(drift.to_string()),
                error: None,
                warning: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
