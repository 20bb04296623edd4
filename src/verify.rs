//! `dirsync verify`: reads each confirmed group's members back from its target and
//! reports where they differ from the snapshot (members added or removed by hand).
//!
//! With `--repair`, each drifted group's snapshot row takes the members the target
//! holds (with an audit row saying so), so that the next sync, a normal one with its
//! safety limits and audit, plans the group as changed and sends the whole list.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::target::{HttpTarget, TargetError};

/// One group whose members in the target are not the ones the snapshot records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDrift {
    pub target: String,
    pub group: String,
    pub name: String,
    /// The target has no such group any more.
    pub missing: bool,
    /// In the target, not in the snapshot: added behind dirsync's back.
    pub added: BTreeSet<String>,
    /// In the snapshot, not in the target: removed behind dirsync's back.
    pub removed: BTreeSet<String>,
    /// What the target holds (for `--repair`).
    #[serde(skip)]
    held: BTreeSet<String>,
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub groups_checked: usize,
    pub drift: Vec<GroupDrift>,
    /// Targets that cannot be read back, with why.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// Memberships that differ, over every group.
    pub fn drifted_members(&self) -> usize {
        self.drift.iter().map(|d| d.added.len() + d.removed.len()).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no target named `{0}` in the config")]
    UnknownTarget(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("target `{target}`: cannot read group `{group}`: {message}")]
    Read {
        target: String,
        group: String,
        message: String,
    },
}

/// Reads back every group the snapshot holds for each target (or only `only`).
pub async fn verify(config: &Config, only: Option<&str>) -> Result<Report, VerifyError> {
    if let Some(name) = only.filter(|n| !config.targets.iter().any(|t| t.name == *n)) {
        return Err(VerifyError::UnknownTarget(name.to_owned()));
    }
    let store = Store::open(&config.state_db).await?;
    let mut report = Report::default();
    for tc in config.targets.iter().filter(|t| only.is_none_or(|n| n == t.name)) {
        let target = HttpTarget::new(tc)?;
        if !target.reads_groups() {
            report.skipped.push((
                tc.name.clone(),
                "it cannot read a group's members back (only a SCIM target can)".into(),
            ));
            continue;
        }
        target.keep_ids_in(&store);
        let snapshot = store.load_snapshot(&tc.name).await?;
        for (id, group) in &snapshot.groups {
            report.groups_checked += 1;
            let read = target.read_members(id).await.map_err(|e| VerifyError::Read {
                target: tc.name.clone(),
                group: id.clone(),
                message: e.to_string(),
            })?;
            let confirmed = group.members.ids();
            let held = read.clone().unwrap_or_default();
            let drift = GroupDrift {
                target: tc.name.clone(),
                group: id.clone(),
                name: group.name.clone(),
                missing: read.is_none(),
                added: held.difference(&confirmed).cloned().collect(),
                removed: confirmed.difference(&held).cloned().collect(),
                held,
            };
            if drift.missing || !drift.added.is_empty() || !drift.removed.is_empty() {
                tracing::warn!(target_name = %tc.name, group = %id, added = drift.added.len(), removed = drift.removed.len(), missing = drift.missing, "The group's members in the target differ from what dirsync confirmed.");
                report.drift.push(drift);
            }
        }
    }
    store.close().await;
    Ok(report)
}

/// Marks every drifted group of `report` for the next sync to correct.
pub async fn mark(config: &Config, report: &Report) -> Result<(), VerifyError> {
    let store = Store::open(&config.state_db).await?;
    let run_id = uuid::Uuid::now_v7().to_string();
    store.start_run(&run_id, "verify", false).await?;
    for d in &report.drift {
        let drift = serde_json::json!({ "added": d.added, "removed": d.removed, "missing": d.missing });
        store
            .mark_drift(&run_id, &d.target, (&d.group, &d.name), &d.held, &drift)
            .await?;
    }
    let summary = serde_json::json!({ "drifted_groups": report.drift.len(), "drifted_members": report.drifted_members() });
    store.finish_run(&run_id, "success", &summary).await?;
    store.close().await;
    Ok(())
}
