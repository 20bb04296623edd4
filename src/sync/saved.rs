//! Saved plans, for change-controlled environments: `sync --dry-run --out plan.json`
//! writes the exact operations of every target with the snapshot they were computed
//! against, and `dirsync apply plan.json` sends exactly those operations, only if
//! each target's snapshot and config are still what the plan saw.
//!
//! A plan holds directory data (ids, names, the fields a request sends) and the
//! fingerprints of the requests, never a secret: requests are rendered again with the
//! real secrets when applied.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Prepared, Progress, Report, SyncError, TargetReport, deliver, record_held, summarize};
use crate::config::Config;
use crate::hold::{self, Held};
use crate::lock::RunLock;
use crate::mapping::DesiredUser;
use crate::plan::{Operation, Plan, Snapshot};
use crate::store::Store;
use crate::target::HttpTarget;
use crate::target::request::{self, Secrets};

/// The format version `apply` reads.
const FORMAT: u32 = 1;

/// What `sync --dry-run --out` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SavedPlan {
    format: u32,
    created_at: String,
    /// `sync` or `resync`.
    mode: String,
    targets: Vec<SavedTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedTarget {
    name: String,
    /// The target's config hash: a changed mapping or request template would send
    /// something else than what was reviewed.
    config_hash: String,
    /// The snapshot the plan was computed against: each entity's request fingerprint.
    snapshot: Fingerprints,
    operations: Vec<Operation>,
    /// The users the group requests read member details from (empty when the
    /// target's requests only name member ids).
    #[serde(default)]
    users: BTreeMap<String, DesiredUser>,
    /// Why the dry run refused the target's plan (an empty source): `apply` refuses
    /// it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    /// The removals the dry run held back: `apply` holds them too, records them for
    /// `dirsync approve` and ends as a sync that held them does. Absent when it held
    /// none: `apply` then leaves the target's held set as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<Held>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Fingerprints {
    groups: BTreeMap<String, String>,
    users: BTreeMap<String, String>,
}

impl Fingerprints {
    pub(super) fn of(snapshot: &Snapshot) -> Fingerprints {
        Fingerprints {
            groups: snapshot
                .groups
                .iter()
                .map(|(id, g)| (id.clone(), g.fingerprint.clone()))
                .collect(),
            users: snapshot
                .users
                .iter()
                .map(|(id, u)| (id.clone(), u.fingerprint.clone()))
                .collect(),
        }
    }

    /// The ids whose confirmed request differs between the two, by kind.
    fn changed(&self, now: &Fingerprints) -> Vec<String> {
        let diff = |kind: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            let ids: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            ids.into_iter()
                .filter(|id| a.get(*id) != b.get(*id))
                .map(|id| format!("{kind} {}", crate::text::visible(id)))
                .collect::<Vec<_>>()
        };
        let mut out = diff("group", &self.groups, &now.groups);
        out.extend(diff("user", &self.users, &now.users));
        out
    }
}

/// The plan of every prepared target, as `apply` reads it back, with the snapshot
/// each was planned from.
/// `refused` is each target's refusal, in the order of `prepared`.
pub(super) fn save(
    prepared: &[Prepared<'_>],
    snapshots: Vec<Fingerprints>,
    refused: Vec<Option<String>>,
    mode: &str,
) -> SavedPlan {
    SavedPlan {
        format: FORMAT,
        created_at: crate::store::now(),
        mode: mode.to_owned(),
        targets: prepared
            .iter()
            .zip(snapshots)
            .zip(refused)
            .map(|((p, snapshot), refused)| {
                let members: BTreeSet<&String> = p.plan.group_ops().flat_map(|g| &g.group.members).collect();
                SavedTarget {
                    name: p.config.name.clone(),
                    config_hash: p.config.config_hash.clone(),
                    snapshot,
                    operations: p.plan.ops.clone(),
                    users: p
                        .users
                        .iter()
                        .filter(|(id, _)| members.contains(id))
                        .map(|(id, u)| (id.clone(), u.clone()))
                        .collect(),
                    refused,
                    held: (!p.hold.held.is_empty()).then(|| p.hold.held.clone()),
                }
            })
            .collect(),
    }
}

/// The first operation of a saved target that is not what the plan's own data
/// builds: a group or user update whose request, built again (secrets masked),
/// has another fingerprint than the one saved with it, or a deletion of a user the
/// snapshot does not hold as saved. A plan edited by hand would otherwise send
/// something else than what was reviewed (a member list without the members whose
/// details were removed, say), and the snapshot would record it as confirmed.
fn unrendered(target: &HttpTarget, t: &SavedTarget, snapshot: &Snapshot) -> Option<String> {
    let what = |op: &Operation| format!("{} {}", op.kind(), crate::text::visible(op.entity_id()));
    // Each group's list before its next operation: as confirmed, then as each of its
    // operations leaves it. An add or remove sends only its members, which must be
    // exactly what takes the list from one to the next.
    let mut before: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    t.operations.iter().find_map(|op| {
        if let Operation::ReplaceMembers(g) = op {
            let prev = before
                .remove(g.group.id.as_str())
                .unwrap_or_else(|| snapshot.groups.get(&g.group.id).map(|s| s.members.ids()).unwrap_or_default());
            let now = &g.group.members;
            let consistent = match g.delta {
                None => true,
                Some(crate::plan::Delta::Add) => {
                    prev.is_subset(now) && now.difference(&prev).eq(g.added.iter()) && g.removed.is_empty()
                }
                Some(crate::plan::Delta::Remove) => {
                    now.is_subset(&prev) && prev.difference(now).eq(g.removed.iter()) && g.added.is_empty()
                }
            };
            if !consistent {
                return Some(format!(
                    "{} does not take the group's list from what it holds to the list saved with it (edited since it was made?)",
                    what(op)
                ));
            }
            before.insert(g.group.id.as_str(), now.clone());
        }
        let fingerprint = match op {
            Operation::ReplaceMembers(g) => target
                .group_request(&g.group, &t.users, Secrets::Masked)
                .map(|req| (request::fingerprint(&req), &g.fingerprint)),
            Operation::UpdateUser(u) => target
                .user_request(&u.user, Secrets::Masked)
                .map(|req| (request::fingerprint(&req), &u.fingerprint)),
            Operation::DeleteUser(u) => {
                let kept = snapshot.users.get(&u.user.id).is_some_and(|s| {
                    s.fingerprint == u.fingerprint
                        && s.user
                            .as_ref()
                            .map_or(s.name == u.user.user.username, |kept| *kept == u.user.user)
                });
                return (!kept).then(|| {
                    format!(
                        "{} deletes a user the snapshot does not hold as the plan says",
                        what(op)
                    )
                });
            }
        };
        match fingerprint {
            Ok((built, saved)) if built == *saved => None,
            Ok(_) => Some(format!(
                "{} is not what the plan's own data builds (edited since it was made?)",
                what(op)
            )),
            Err(e) => Some(format!("{} cannot be built: {}", what(op), target.redact(&e.0))),
        }
    })
}

/// Writes a saved plan as pretty JSON.
pub(super) fn write(path: &Path, plan: &SavedPlan) -> Result<(), SyncError> {
    let text = serde_json::to_string_pretty(plan).unwrap_or_default();
    let mut file = std::fs::File::create(path).map_err(|e| SyncError::PlanFile {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .map_err(|e| SyncError::PlanFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Sends exactly the operations of a saved plan, after checking that every target's
/// snapshot and config are what the plan was computed against; if one is not,
/// nothing is sent and the error names what changed.
pub async fn apply(
    config: &Config,
    path: &Path,
    wait: bool,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<Report, SyncError> {
    let plan_error = |message: String| SyncError::PlanFile {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| plan_error(e.to_string()))?;
    let saved: SavedPlan =
        serde_json::from_str(&text).map_err(|e| plan_error(format!("not a saved plan: {e}")))?;
    if saved.format != FORMAT {
        return Err(plan_error(format!(
            "format {} is not the format {FORMAT} this dirsync writes",
            saved.format
        )));
    }
    let _lock = RunLock::acquire(&config.state_db, wait).await?;
    let store = Store::open(&config.state_db).await?;

    // Every check first: a plan applies whole or not at all.
    let mut prepared = Vec::new();
    for t in &saved.targets {
        let stale = |why: String| SyncError::StalePlan {
            target: t.name.clone(),
            why,
        };
        if let Some(why) = &t.refused {
            return Err(stale(format!("the plan was refused when it was made ({why})")));
        }
        let tc = config
            .targets
            .iter()
            .find(|tc| tc.name == t.name)
            .ok_or_else(|| stale("the config has no target of that name any more".into()))?;
        if tc.config_hash != t.config_hash {
            return Err(stale(
                "the target's config changed since the plan was made".into(),
            ));
        }
        let snapshot = store.load_snapshot(&t.name).await?;
        let changed = t.snapshot.changed(&Fingerprints::of(&snapshot));
        if !changed.is_empty() {
            return Err(stale(format!(
                "the target confirmed other changes since the plan was made: {}",
                crate::text::first_few(&changed)
            )));
        }
        let target = HttpTarget::new(tc)?.stops_with(cancel);
        if let Some(why) = unrendered(&target, t, &snapshot) {
            return Err(plan_error(format!(
                "target `{}`: {why}; nothing was sent",
                t.name
            )));
        }
        prepared.push(Prepared {
            config: tc,
            target,
            plan: Plan {
                ops: t.operations.clone(),
                ..Plan::default()
            },
            // The users updated too: a SCIM target tells by them which removed key
            // is the same user under another case.
            users: Arc::new(
                t.users
                    .clone()
                    .into_iter()
                    .chain(t.operations.iter().filter_map(|op| match op {
                        Operation::UpdateUser(u) if u.user.user.enabled => {
                            Some((u.user.id.clone(), u.user.clone()))
                        }
                        _ => None,
                    }))
                    .collect(),
            ),
            desired_ids: Default::default(),
            invalid: Vec::new(),
            hold: hold::Outcome {
                held: t.held.clone().unwrap_or_default(),
                ..Default::default()
            },
            withheld: 0,
            approval: None,
            // A saved plan keeps no change times: `apply` measures no latency.
            changed: Default::default(),
        });
    }

    let run_id = uuid::Uuid::now_v7().to_string();
    store.start_run(&run_id, "apply", false).await?;
    tracing::info!(run_id, plan = %path.display(), created_at = saved.created_at, "Applying a saved plan.");
    let generation = store.source_state().await?.map_or(0, |s| s.generation);
    // Before the first request: the next sync plans each target from the source
    // again, even if this apply is killed part way.
    for p in &prepared {
        store
            .set_target_state(&p.config.name, generation, &p.config.config_hash, false)
            .await?;
    }
    let mut report = Report {
        run_id: Some(run_id.clone()),
        ..Report::default()
    };
    for p in &prepared {
        let mut tr: TargetReport = summarize(p);
        if !p.hold.held.is_empty() {
            record_held(&store, &run_id, p, &mut tr).await?;
        }
        let push_ms = deliver(&store, &run_id, p, cancel, progress, &mut tr).await?;
        tracing::info!(
            target_name = %tr.name, succeeded = tr.succeeded, failed = tr.failed, not_started = tr.not_started,
            push_ms,
            "Finished the target."
        );
        report.targets.push(tr);
    }
    let outcome = report.outcome();
    let summary = serde_json::to_value(&report).unwrap_or_default();
    store.finish_run(&run_id, outcome.as_str(), &summary).await?;
    store.close().await;
    Ok(report)
}
