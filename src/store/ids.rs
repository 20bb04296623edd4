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
