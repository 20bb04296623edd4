//! `dirsync verify`: reads each confirmed group's members back from its target and
//! reports where they differ from the snapshot (members added or removed by hand).
//!
//! A target reads groups back through a SCIM service's `GET /Groups/{id}` or its
//! `read_group` endpoint; one without either is reported as not verifiable, never as
//! free of drift. A group whose answer cannot be read is reported with the reason and
//! the other groups are still read.
//!
//! The whole verification holds the run lock: a sync running between a read and the
//! snapshot row it is compared with would show its own pushes as drift. With
//! `repair`, each drifted group's snapshot row takes the members the target holds
//! (with an audit row saying so) under that same lock, so that the next sync, a
//! normal one with its safety limits and audit, plans the group as changed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Config, TargetConfig};
use crate::lock::{LockError, RunLock};
use crate::mapping::entities_not_in;
use crate::store::{Store, StoreError};
use crate::target::{HttpTarget, ReadError, TargetError};

/// What to verify, and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this target.
    pub target: Option<String>,
    /// Mark the drifted groups for the next sync to correct.
    pub repair: bool,
    /// Wait for another run's lock instead of failing.
    pub wait: bool,
}

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

/// A group whose members could not be read: its drift is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub target: String,
    pub group: String,
    pub name: String,
    pub error: String,
}

/// A target that has no way to read a group's members back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotVerifiable {
    pub target: String,
    pub reason: String,
}

/// What verifying one target found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetSummary {
    pub target: String,
    /// Groups read back (a group the target no longer has counts).
    pub groups_checked: usize,
    pub drifted_groups: usize,
    /// Memberships that differ, over every group of the target.
    pub drifted_members: usize,
    pub unreadable_groups: usize,
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub groups_checked: usize,
    /// Each target that could be read back, in config order.
    pub targets: Vec<TargetSummary>,
    pub drift: Vec<GroupDrift>,
    pub unreadable: Vec<Unreadable>,
    pub not_verifiable: Vec<NotVerifiable>,
    /// The drifted groups were marked for the next sync (`repair`).
    pub marked: bool,
}

impl Report {
    /// Memberships that differ, over every group.
    pub fn drifted_members(&self) -> usize {
        self.drift.iter().map(|d| d.added.len() + d.removed.len()).sum()
    }

    /// Whether every group of every target in scope was read and matches.
    pub fn clean(&self) -> bool {
        self.drift.is_empty() && self.unreadable.is_empty() && self.not_verifiable.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no target named `{0}` in the config")]
    UnknownTarget(String),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Reads back every group the snapshot holds for each target (or only `opts.target`)
/// under the run lock; with `opts.repair`, marks the drifted ones before letting go.
pub async fn verify(config: &Config, opts: &Options) -> Result<Report, VerifyError> {
    let only = opts.target.as_deref();
    if let Some(name) = only.filter(|n| !config.targets.iter().any(|t| t.name == *n)) {
        return Err(VerifyError::UnknownTarget(name.to_owned()));
    }
    let _lock = RunLock::acquire(&config.state_db, opts.wait).await?;
    let store = Store::open(&config.state_db).await?;
    let result = check(config, only, &store).await;
    let result = match result {
        Ok(mut report) if opts.repair && !report.drift.is_empty() => mark(&store, &report).await.map(|()| {
            report.marked = true;
            report
        }),
        other => other,
    };
    store.close().await;
    result
}

async fn check(config: &Config, only: Option<&str>, store: &Store) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    for tc in config.targets.iter().filter(|t| only.is_none_or(|n| n == t.name)) {
        let target = HttpTarget::new(tc)?;
        if !target.can_read_groups() {
            report.not_verifiable.push(NotVerifiable {
                target: tc.name.clone(),
                reason: "it has no way to read a group's members back: give it an \
                         `endpoints.read_group` (a SCIM target reads them by itself)"
                    .into(),
            });
            continue;
        }
        check_target(tc, &target, store, &mut report).await?;
    }
    Ok(report)
}

async fn check_target(
    tc: &TargetConfig,
    target: &HttpTarget,
    store: &Store,
    report: &mut Report,
) -> Result<(), VerifyError> {
    target.keep_ids_in(store);
    let snapshot = store.load_snapshot(&tc.name).await?;
    let mut summary = TargetSummary {
        target: tc.name.clone(),
        ..TargetSummary::default()
    };
    // Refused credentials fail every read alike, and more requests only lock the
    // account; a target that failed `max_consecutive_failures` reads in a row (an
    // outage, a token without the right to read) is not read further either.
    let refused = AtomicBool::new(false);
    let failures = AtomicUsize::new(0);
    let max_failures = target.spec().max_consecutive_failures;
    let reads = futures_util::stream::iter(&snapshot.groups)
        .map(|(id, group)| {
            let (refused, failures) = (&refused, &failures);
            async move {
                if refused.load(Ordering::Relaxed) || failures.load(Ordering::Relaxed) >= max_failures {
                    return (id, group, None);
                }
                let read = target.read_group(id, &group.name).await;
                match &read {
                    Ok(_) => failures.store(0, Ordering::Relaxed),
                    Err(ReadError::Request(e)) if e.is_auth() => refused.store(true, Ordering::Relaxed),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (id, group, Some(read))
            }
        })
        .buffered(tc.spec.concurrency);
    futures_util::pin_mut!(reads);
    while let Some((id, group, read)) = reads.next().await {
        let read = match read {
            Some(Ok(read)) => read,
            failed => {
                let error = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ if refused.load(Ordering::Relaxed) => {
                        "not read: the target refused the credentials for another group".to_owned()
                    }
                    _ => format!("not read: {max_failures} reads in a row failed before it"),
                };
                tracing::warn!(target_name = %tc.name, group = %id, %error, "Could not read the group's members back from the target.");
                summary.unreadable_groups += 1;
                report.unreadable.push(Unreadable {
                    target: tc.name.clone(),
                    group: id.clone(),
                    name: group.name.clone(),
                    error,
                });
                continue;
            }
        };
        summary.groups_checked += 1;
        let confirmed = group.members.ids();
        let held = read.clone().unwrap_or_default();
        let drift = GroupDrift {
            target: tc.name.clone(),
            group: id.clone(),
            name: group.name.clone(),
            missing: read.is_none(),
            added: entities_not_in(&held, &confirmed).cloned().collect(),
            removed: entities_not_in(&confirmed, &held).cloned().collect(),
            held,
        };
        if drift.missing || !drift.added.is_empty() || !drift.removed.is_empty() {
            tracing::warn!(target_name = %tc.name, group = %id, added = drift.added.len(), removed = drift.removed.len(), missing = drift.missing, "The group's members in the target differ from what dirsync confirmed.");
            summary.drifted_groups += 1;
            summary.drifted_members += drift.added.len() + drift.removed.len();
            report.drift.push(drift);
        }
    }
    report.groups_checked += summary.groups_checked;
    report.targets.push(summary);
    Ok(())
}

/// Marks every drifted group of `report` for the next sync to correct.
async fn mark(store: &Store, report: &Report) -> Result<(), VerifyError> {
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
    Ok(())
}
