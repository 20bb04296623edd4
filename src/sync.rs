//! One run, wired together: lock → read the source → for each target: load its
//! snapshot → map → fingerprint → plan → check safety → push → record.
//!
//! Everything that decides *what* to do is in the pure core (`mapping`, `plan`,
//! `safety`, `target::request`); this module only sequences I/O around it.
//!
//! Architecture Invariant: nothing is pushed before the whole source was read and
//! every target's plan was built; a source error ends the run with zero requests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

mod incremental;
mod propagation;
mod saved;

pub use incremental::Warm;
pub use saved::apply;

use crate::config::{Config, SourceConfig, TargetConfig};
use crate::hold::{self, Held};
use crate::lock::{LockError, RunLock};
use crate::mapping::{self, DesiredUser, MapOptions, MappingError};
use crate::model::{Directory, User};
use crate::plan::{self, Mode, Operation, Plan, Snapshot};
use crate::source::token::{self, Decision, Facts, ReadMode};
use crate::source::{self, SourceError};
use crate::store::{EntryWrite, Record, Skipped, SourceRead, SourceState, Store, StoreError};
use crate::target::http::{PushError, endpoint_of};
use crate::target::request::{self, Secrets};
use crate::target::spec::EndpointKind;
use crate::target::{HttpTarget, TargetError};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Print the plan, send nothing, write nothing.
    pub dry_run: bool,
    /// Only this target.
    pub target: Option<String>,
    /// Allow, for this run, removals over the safety limits.
    pub allow_removals: bool,
    /// Wait for another run's lock instead of failing.
    pub wait: bool,
    /// Send the removals of this held set that are still planned (`dirsync approve`).
    pub approve: Option<Approve>,
    /// With `dry_run`: also write the plan here, for `dirsync apply`.
    pub out: Option<std::path::PathBuf>,
    /// The service with `watch = true` keeps the LDAP entry cache in memory here.
    pub warm: Option<Warm>,
}

/// An operator's approval of a held set.
#[derive(Debug, Clone)]
pub struct Approve {
    /// The held set's id.
    pub id: String,
    /// Who approved it (the local user name), for the audit.
    pub by: String,
}

/// The run could not go ahead at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("target `{target}`: {source}")]
    Mapping { target: String, source: MappingError },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("no target is named `{0}`")]
    UnknownTarget(String),
    #[error("no held set has the id `{0}`; `dirsync held` lists them")]
    UnknownHeld(String),
    #[error("held set `{id}` is {status}, not held: nothing to approve")]
    NotHeld { id: String, status: String },
    #[error("held set `{id}` belongs to target `{target}`, which the config no longer has")]
    HeldForUnknownTarget { id: String, target: String },
    #[error("cannot write the plan: {0}")]
    Output(std::io::Error),
    #[error("plan file {}: {message}", path.display())]
    PlanFile {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("the saved plan no longer applies to target `{target}`: {why}; make a new one")]
    StalePlan { target: String, why: String },
}

/// What happened to one target in a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TargetReport {
    pub(crate) name: String,
    pub(crate) planned: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Planned but not started (stopped by an auth failure or shutdown).
    pub not_started: usize,
    pub(crate) unchanged_groups: usize,
    pub(crate) unchanged_users: usize,
    pub(crate) added_memberships: usize,
    pub(crate) removed_memberships: usize,
    pub(crate) disabled_users: usize,
    /// Users who left the source, deleted (`users.removed = "delete"`).
    pub(crate) deleted_users: usize,
    pub unmapped_users: usize,
    /// Entities whose request cannot be built from the source data (skipped).
    pub(crate) invalid: usize,
    /// Of those, the ones that make the run partial: the ones first seen (or whose
    /// reason changed) in this run, or all of them with `strict = true`.
    pub(crate) invalid_failing: usize,
    /// The target asked (`Retry-After`) to be left alone until this time (RFC 3339),
    /// for the whole target or an endpoint: what was planned for it waits.
    pub(crate) paused_until: Option<String>,
    pub(crate) drift: usize,
    /// Why the plan may not go ahead at all (an empty source).
    pub refused: Option<String>,
    /// The removals and disables a limit held back, waiting for `dirsync approve`.
    pub held: Option<HeldReport>,
    /// Removals and disables not made because the member is protected.
    pub(crate) protected: usize,
    /// Removals waiting out `safety.removal_delay`.
    pub(crate) waiting: usize,
    /// Groups not sent because they keep members (held, protected, waiting) that the
    /// source no longer describes, on a target whose request gives member details.
    pub(crate) withheld_groups: usize,
    /// The requests the target allowed in flight at the end of its push (the configured
    /// concurrency, unless 429 or 503 answers lowered it).
    pub(crate) concurrency_limit: usize,
    /// Set when the target stopped early because it refused the credentials.
    pub(crate) auth_error: Option<String>,
    /// Attempts beyond the first, over all operations.
    pub(crate) retries: usize,
    /// 429 answers.
    pub(crate) throttled: usize,
    /// Finished operations by kind (`replace_members`, `update_user`) and outcome.
    pub(crate) by_kind: BTreeMap<String, KindCounts>,
    /// Seconds from each measured source change to the target's confirmation, for
    /// `dirsync_propagation_seconds`; `propagation` is what the run keeps of them.
    #[serde(skip)]
    pub(crate) propagation_seconds: Vec<f64>,
    /// Median and 95th percentile of those, stored with the run for `dirsync status`.
    pub(crate) propagation: Option<propagation::Summary>,
}

/// A held set, as a run reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HeldReport {
    /// `None` in a dry run, which records nothing.
    pub id: Option<String>,
    pub removed_memberships: usize,
    pub disabled_users: usize,
    pub deleted_users: usize,
    pub reasons: Vec<String>,
    /// An earlier run held the same set (same id): it was reported then.
    pub held_before: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct KindCounts {
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
}

/// Progress of the pushes, for a progress bar. Calls come from the run's task.
pub trait Progress: Send + Sync {
    /// A target starts pushing `total` operations.
    fn start(&self, target: &str, total: usize);
    /// One more operation finished (or was skipped).
    fn advance(&self);
    /// The target is done.
    fn finish(&self);
}

/// No progress display (daemon, cron, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: usize) {}
    fn advance(&self) {}
    fn finish(&self) {}
}

/// A run's result.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub(crate) run_id: Option<String>,
    pub(crate) mode: Option<Mode>,
    pub(crate) source_users: usize,
    pub(crate) source_groups: usize,
    pub targets: Vec<TargetReport>,
    /// The held set this run sent (`dirsync approve`), and who approved it.
    pub approved: Option<ApprovedReport>,
    /// How the source was read and how long deciding and reading took, for
    /// `dirsync_source_read_seconds{mode}`; `None` when the run read no source.
    pub(crate) source_read: Option<SourceReadReport>,
}

/// A run's source read: its mode (`full`, `incremental`, `unchanged`) and duration.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct SourceReadReport {
    pub(crate) mode: &'static str,
    pub(crate) seconds: f64,
}

/// An approval a run carried out.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ApprovedReport {
    pub id: String,
    pub target: String,
    pub by: String,
}

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    /// Some operations failed or were left for the next run.
    Partial,
    /// A safety limit refused a target's plan, or held removals back.
    Refused,
}

impl Outcome {
    /// The word stored in the runs table and used as a metrics label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Refused => "refused",
        }
    }
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        if self
            .targets
            .iter()
            .any(|t| t.failed + t.not_started + t.invalid_failing > 0)
        {
            Outcome::Partial
        } else if self
            .targets
            .iter()
            .any(|t| t.refused.is_some() || t.held.is_some())
        {
            Outcome::Refused
        } else {
            Outcome::Success
        }
    }
}

/// A target's plan with everything needed to push it.
struct Prepared<'c> {
    config: &'c TargetConfig,
    target: HttpTarget,
    plan: Plan,
    users: Arc<BTreeMap<String, DesiredUser>>,
    /// The target ids of every desired group and user; a resync's only.
    desired_ids: (BTreeSet<String>, BTreeSet<String>),
    invalid: Vec<Skipped>,
    /// What the removal policy held back or kept.
    hold: hold::Outcome,
    /// Groups not sent because they keep members nothing describes (`describe_kept`).
    withheld: usize,
    /// The approval this run carries out (`{held, by}`), for the audit rows of the
    /// operations it lets through.
    approval: Option<serde_json::Value>,
    /// The source change time each operation carries, for the propagation latency.
    changed: propagation::ChangeTimes,
}

/// What the removal policy of a target takes from the run.
#[derive(Clone, Copy)]
struct RunPolicy<'a> {
    /// The read's size against the last one the target accepted: (before, now) as
    /// (users, memberships).
    sizes: Option<((usize, usize), (usize, usize))>,
    approved: Option<&'a Held>,
    allow_removals: bool,
    source_users: usize,
}

/// Runs one sync or resync. `out` receives the dry-run plan.
pub async fn run(
    config: &Config,
    opts: &Options,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    out: &mut (dyn Write + Send),
) -> Result<Report, SyncError> {
    let named = |name: &String| {
        config
            .targets
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| SyncError::UnknownTarget(name.clone()))
    };
    if let Some(name) = &opts.target {
        named(name)?;
    }
    // A dry run writes nothing, so it needs no lock and does not create the database.
    let _lock = if opts.dry_run {
        None
    } else {
        Some(RunLock::acquire(&config.state_db, opts.wait).await?)
    };
    let store = if opts.dry_run && !config.state_db.exists() {
        None
    } else {
        Some(Store::open(&config.state_db).await?)
    };
    // An approval is of one target's held set, and only while it is held.
    let approval = match (&opts.approve, &store) {
        (Some(a), Some(s)) => {
            let row = s
                .held_set(&a.id)
                .await?
                .ok_or_else(|| SyncError::UnknownHeld(a.id.clone()))?;
            if row.status != "held" {
                return Err(SyncError::NotHeld {
                    id: row.id,
                    status: row.status,
                });
            }
            Some(row)
        }
        (Some(a), None) => return Err(SyncError::UnknownHeld(a.id.clone())),
        (None, _) => None,
    };
    let targets: Vec<&TargetConfig> = match (&approval, &opts.target) {
        (Some(row), _) => vec![named(&row.target).map_err(|_| SyncError::HeldForUnknownTarget {
            id: row.id.clone(),
            target: row.target.clone(),
        })?],
        (None, Some(name)) => vec![named(name)?],
        (None, None) => config.targets.iter().collect(),
    };
    let approved = approval.as_ref().map(|row| row.held());

    // Whether the source changed since the last run, from its token (a dry run plans
    // every target and writes nothing, so it needs neither).
    let kind = source_kind(&config.source);
    let deciding = std::time::Instant::now();
    let (token, stored, target_states) = match &store {
        Some(s) if !opts.dry_run => (
            source::token(&config.source).await?,
            s.source_state().await?,
            s.target_states().await?,
        ),
        _ => (None, None, BTreeMap::new()),
    };
    let decided = stored.as_ref().map(as_decided);
    let facts = Facts {
        kind,
        config_hash: &config.source_hash,
        token: token.as_ref(),
        resync: opts.mode == Mode::Resync,
        full_read_every: config.full_read_every,
    };
    // LDAP is read first: only the refresh from the stored cookies (OpenLDAP), or the
    // domain controller's USN (Active Directory), tells whether it changed.
    let cached = match (&config.source, &store) {
        (SourceConfig::Ldap(c), Some(s)) if !opts.dry_run => {
            match incremental::read(s, c, decided.as_ref(), facts, opts.warm.as_ref()).await {
                Ok(r) => Some(r),
                Err(e) => {
                    force_full_read(s, &e).await;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let token = match &cached {
        Some(c) => c.token.clone(),
        None => token.clone(),
    };
    let decision = if opts.dry_run {
        Decision {
            mode: ReadMode::Full,
            reason: "a dry run plans every target".into(),
            changed: false,
        }
    } else if let Some(c) = &cached {
        c.decision.clone()
    } else {
        token::decide(decided.as_ref(), facts)
    };
    let decided_in = deciding.elapsed();
    let generation = stored
        .as_ref()
        .map_or(1, |s| s.generation + i64::from(decision.changed));
    // A target whose last plan was confirmed for this source generation and this
    // config has nothing to plan while the source is unchanged.
    let (skipped, targets): (Vec<&TargetConfig>, Vec<&TargetConfig>) = targets.into_iter().partition(|tc| {
        decision.mode == ReadMode::Unchanged
            && approval.is_none()
            && target_states
                .get(&tc.name)
                .is_some_and(|ts| ts.clean && ts.generation == generation && ts.config_hash == tc.config_hash)
    });
    let (mode, reason) = (decision.mode.as_str(), decision.reason.as_str());
    match decision.mode {
        // Every read of a source kind without a token is full: not news.
        ReadMode::Full if token.is_none() && cached.is_none() => {
            tracing::debug!(mode, reason, "Reading the whole source.")
        }
        ReadMode::Full => tracing::info!(mode, reason, "Reading the whole source."),
        ReadMode::Incremental => tracing::info!(mode, reason, "Read what changed in the source."),
        ReadMode::Unchanged if targets.is_empty() => {
            tracing::info!(mode, reason, "Source unchanged; nothing to plan.");
        }
        ReadMode::Unchanged => {
            let names = targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(
                mode,
                reason,
                targets = names,
                "Source unchanged; reading it again for the targets whose last plan was not confirmed."
            );
        }
    }

    // The snapshots load while the source is read: both are I/O-bound and independent.
    let t0 = std::time::Instant::now();
    let load_snapshots = async {
        let mut snapshots = Vec::new();
        for tc in &targets {
            snapshots.push(match &store {
                Some(s) => s.load_snapshot(&tc.name).await?,
                None => Snapshot::default(),
            });
        }
        Ok::<_, StoreError>(snapshots)
    };
    // So are the targets' HTTP clients (a few milliseconds each for the TLS setup).
    // Built on this task once the other two are under way.
    let clients = async {
        targets
            .iter()
            .map(|tc| HttpTarget::new(tc).map(|t| t.stops_with(cancel)))
            .collect::<Result<Vec<_>, _>>()
    };
    let read = async {
        let reading = std::time::Instant::now();
        let mut parsed = None;
        let dir = match (&cached, &store, &config.source) {
            _ if targets.is_empty() => Ok(None),
            (Some(c), Some(s), SourceConfig::Ldap(l)) => c
                .directory(s, &config.source, l, opts.warm.as_ref(), decided.as_ref())
                .await
                .map(Some),
            (_, _, SourceConfig::Csv(c)) => source::read_csv(c)
                .await
                .map(|(dir, sha256)| {
                    parsed = Some(sha256);
                    Some(dir)
                })
                .map_err(SyncError::from),
            _ => source::read(&config.source)
                .await
                .map(Some)
                .map_err(SyncError::from),
        };
        (dir, parsed, reading.elapsed())
    };
    let ((dir, parsed, read_in), snapshots, clients) = tokio::join!(read, load_snapshots, clients);
    // A CSV file rewritten between its token and its read was parsed as content the
    // token does not describe: no token is kept, so the next run reads it again.
    let token = match (token, parsed) {
        (Some(t), Some(parsed)) if !t.describes(&parsed) => {
            tracing::warn!("A source file changed while it was read; the next run reads the files again.");
            None
        }
        (token, _) => token,
    };
    let dir = match (dir, &store) {
        (Err(e), Some(s)) if cached.is_some() => {
            force_full_read(s, &e).await;
            return Err(e);
        }
        (dir, _) => dir?,
    };
    let (snapshots, clients) = (snapshots?, clients?);
    let (source_users, source_groups) = match (&dir, &stored) {
        (Some(dir), _) => {
            tracing::debug!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "Read the source and the snapshots."
            );
            tracing::info!(
                users = dir.users.len(),
                groups = dir.groups.len(),
                memberships = dir.membership_count(),
                "Read the source."
            );
            (dir.users.len(), dir.groups.len())
        }
        (None, Some(s)) => (crate::store::count(s.users), crate::store::count(s.groups)),
        (None, None) => (0, 0),
    };
    // A target not planned still has the invalid source data it was last planned with.
    let mut not_planned = Vec::new();
    for tc in &skipped {
        let invalid = match &store {
            Some(s) => s.known_invalid(&tc.name).await?.len(),
            None => 0,
        };
        not_planned.push(TargetReport {
            name: tc.name.clone(),
            invalid,
            concurrency_limit: tc.spec.concurrency,
            ..TargetReport::default()
        });
    }
    let mut report = Report {
        run_id: None,
        mode: Some(opts.mode),
        source_users,
        source_groups,
        targets: not_planned,
        approved: None,
        source_read: Some(SourceReadReport {
            mode: decision.mode.as_str(),
            seconds: (decided_in + read_in).as_secs_f64(),
        }),
    };

    // The read's size against the last one each target trusted with removals.
    let size = dir.as_ref().map(|dir| (dir.users.len(), dir.membership_count()));
    let mut sizes = Vec::new();
    for tc in &targets {
        sizes.push(match (size, &store) {
            (Some(now), Some(s)) => s.accepted_read(&tc.name).await?.map(|before| (before, now)),
            _ => None,
        });
    }
    // Since when members have been absent, for targets with a removal delay.
    let mut absences = Vec::new();
    for tc in &targets {
        absences.push(match &store {
            Some(s) if tc.removals.removal_delay.is_some() => s.absences(&tc.name).await?,
            _ => BTreeMap::new(),
        });
    }
    let policy = RunPolicy {
        sizes: None,
        approved: approved.as_ref(),
        allow_removals: opts.allow_removals,
        source_users,
    };
    let mut prepared = Vec::new();
    // What each plan was made from, for a saved plan: a sync may confirm more while
    // this dry run, which takes no lock, goes on.
    let mut planned_from = Vec::new();
    if let Some(dir) = &dir {
        let each = targets
            .iter()
            .zip(clients)
            .zip(snapshots)
            .zip(&absences)
            .zip(sizes);
        for ((((tc, target), snapshot), absent), sizes) in each {
            let t = std::time::Instant::now();
            let policy = RunPolicy { sizes, ..policy };
            if opts.out.is_some() {
                planned_from.push(saved::Fingerprints::of(&snapshot));
            }
            let mut p = prepare(tc, target, dir, snapshot, opts.mode, &policy, absent)?;
            let since = target_states.get(&tc.name).and_then(|ts| ts.changed_through);
            p.changed = propagation::ChangeTimes::of_plan(&p.plan, dir, since);
            prepared.push(p);
            tracing::debug!(target_name = %tc.name, elapsed_ms = t.elapsed().as_millis() as u64, "Planned the target.");
        }
    }
    // The read is the new baseline of each target it made hold no removals for its
    // size; of one whose drop an approval or --allow-removals let through, once the
    // target took its plan whole (below), so that removals not sent are held again.
    let accept: Vec<(&str, bool)> = prepared
        .iter()
        .filter(|p| !p.hold.source_drop)
        .map(|p| (p.config.name.as_str(), p.hold.drop_let_through))
        .collect();
    // How far the read's changes reach: what a target that confirms its plan whole
    // has confirmed every change up to.
    let changed_through = dir.as_ref().and_then(Directory::changed_through);
    // Every plan is built: the push does not need the directory.
    drop(dir);

    if opts.dry_run {
        let mut refused = Vec::new();
        for p in &prepared {
            let mut tr = summarize(p);
            tr.refused = refusal(p, &report);
            refused.push(tr.refused.clone());
            // The exit code the run would have: invalid entities not reported before.
            let known = match &store {
                Some(s) => s.known_invalid(&p.config.name).await?,
                None => BTreeMap::new(),
            };
            tr.invalid_failing = failing_invalid(p, crate::store::fresh_invalid(&known, &p.invalid).len());
            print_plan(out, p, &tr).map_err(SyncError::Output)?;
            report.targets.push(tr);
        }
        if let Some(path) = &opts.out {
            saved::write(
                path,
                &saved::save(&prepared, planned_from, refused, opts.mode.as_str()),
            )?;
            tracing::info!(plan = %path.display(), "Wrote the plan; `dirsync apply` sends exactly it while the targets are unchanged.");
        }
        return Ok(report);
    }

    let Some(store) = store else {
        unreachable!("a real run always opens the store")
    };
    // What was read, and that the planned targets are not clean until their push is
    // confirmed: one transaction, after every plan and before the first request.
    let planned: Vec<(&str, &str)> = prepared
        .iter()
        .map(|p| (p.config.name.as_str(), p.config.config_hash.as_str()))
        .collect();
    let committing = std::time::Instant::now();
    store
        .commit_source_read(
            &SourceRead {
                kind,
                config_hash: &config.source_hash,
                token: token.as_ref().and_then(|t| serde_json::to_value(t).ok()),
                generation,
                users: source_users,
                groups: source_groups,
                mode,
                reason,
                full: decision.mode == ReadMode::Full,
                entries: match &cached {
                    Some(c) => c.write(),
                    None if matches!(config.source, SourceConfig::Ldap(_)) => EntryWrite::Clear,
                    None => EntryWrite::Keep,
                },
            },
            &planned,
        )
        .await?;
    tracing::debug!(
        elapsed_ms = committing.elapsed().as_millis() as u64,
        "Committed the source state and the entry cache."
    );
    // The service keeps what it committed for the next run.
    if let Some(w) = &opts.warm {
        match cached.map(|c| c.entries) {
            Some(incremental::Entries::Cache(cache)) => w.put(generation, cache),
            Some(incremental::Entries::Stored) => {}
            _ => w.clear(),
        }
    }
    let run_id = uuid::Uuid::now_v7().to_string();
    store.start_run(&run_id, opts.mode.as_str(), false).await?;
    report.run_id = Some(run_id.clone());
    tracing::info!(run_id, mode = opts.mode.as_str(), "Started a run.");

    for mut p in prepared {
        let mut tr = summarize(&p);
        if let Some(why) = refusal(&p, &report) {
            tracing::error!(target_name = %p.config.name, "Refused the plan: {why}");
            tr.refused = Some(why);
            report.targets.push(tr);
            // The target stays not clean: the next run plans it again.
            continue;
        }
        log_kept(&p);
        store
            .set_absences(&p.config.name, &p.hold.absent, &p.hold.waiting)
            .await?;
        if let Some(next) = p.hold.waiting.iter().map(|w| w.due).min() {
            tracing::info!(target_name = %p.config.name, waiting = p.hold.waiting.len(), next_due = %next, "Removals wait out the removal delay; members who come back before then are not removed.");
        }
        // The set being approved stays held until its removals are confirmed (below):
        // an approval run killed part way leaves it to approve again.
        let approving = approval.as_ref().is_some_and(|row| row.target == p.config.name);
        if !(approving && p.hold.held.is_empty()) {
            record_held(&store, &run_id, &p, &mut tr).await?;
        }
        store
            .record_unmapped(&run_id, &p.config.name, &p.plan.unmapped)
            .await?;
        let fresh = store.record_invalid(&run_id, &p.config.name, &p.invalid).await?;
        for s in &fresh {
            tracing::warn!(target_name = %p.config.name, kind = s.kind, id = s.id, name = s.name, "Skipped an entity the source data cannot build a request for, until the data changes: {}", s.reason);
        }
        if fresh.len() < p.invalid.len() {
            tracing::info!(target_name = %p.config.name, invalid = p.invalid.len() - fresh.len(), "Skipped entities already reported as invalid source data (see `dirsync status`).");
        }
        tr.invalid_failing = failing_invalid(&p, fresh.len());
        p.approval = approval
            .as_ref()
            .zip(opts.approve.as_ref())
            .map(|(row, a)| serde_json::json!({ "held": row.id, "by": a.by, "reasons": row.reasons() }));
        let push_ms = deliver(&store, &run_id, &p, cancel, progress, &mut tr).await?;
        if opts.mode == Mode::Resync && tr.failed + tr.not_started + tr.invalid == 0 {
            let forgotten = store
                .retain(&p.config.name, &p.desired_ids.0, &p.desired_ids.1)
                .await?;
            if forgotten > 0 {
                tracing::info!(target_name = %p.config.name, forgotten, "Dropped snapshot rows of entities no longer mapped.");
            }
        }
        tracing::info!(
            target_name = %tr.name, succeeded = tr.succeeded, failed = tr.failed, not_started = tr.not_started,
            unchanged = tr.unchanged_groups + tr.unchanged_users, unmapped = tr.unmapped_users, concurrency_limit = tr.concurrency_limit,
            push_ms,
            "Finished the target."
        );
        let clean = tr.failed + tr.not_started + tr.invalid_failing == 0
            && tr.paused_until.is_none()
            && tr.held.is_none()
            && tr.waiting == 0;
        store
            .set_target_state(&p.config.name, generation, &p.config.config_hash, clean)
            .await?;
        if let Some(through) = changed_through.filter(|_| clean) {
            store.set_changed_through(&p.config.name, through).await?;
        }
        report.targets.push(tr);
    }
    report.targets.sort_by(|a, b| a.name.cmp(&b.name));
    if let (Some(row), Some(a)) = (&approval, &opts.approve) {
        // Approved once sent: a target that refused, failed or was not reached keeps
        // the set held, to be approved again.
        if took_whole(&report, &row.target) {
            store.decide_held(&row.id, "approved", &a.by).await?;
            report.approved = Some(ApprovedReport {
                id: row.id.clone(),
                target: row.target.clone(),
                by: a.by.clone(),
            });
            tracing::info!(held = row.id, by = a.by, "Approved the held set.");
        } else if store.hold_again(&row.id).await? {
            tracing::warn!(
                held = row.id,
                "The approved removals were not all sent; the set stays held: approve it again."
            );
        } else {
            let replaced_by = report
                .targets
                .iter()
                .find(|t| t.name == row.target)
                .and_then(|t| t.held.as_ref())
                .and_then(|h| h.id.clone())
                .unwrap_or_default();
            tracing::warn!(
                held = row.id,
                replaced_by,
                "The approved removals were not all sent, and this run held other removals as a new set, which replaced this one: the next run holds what was not sent together with those, as one set to approve."
            );
        }
    }
    for (target, let_through) in accept {
        if let Some((users, memberships)) = size
            && (!let_through || took_whole(&report, target))
        {
            store.accept_read(target, users, memberships).await?;
        }
    }
    let outcome = report.outcome();
    let summary = serde_json::to_value(&report).unwrap_or_default();
    store.finish_run(&run_id, outcome.as_str(), &summary).await?;
    store.close().await;
    Ok(report)
}

/// Records the removals `p` holds back (or none, which releases the target's earlier
/// set), and says so in `tr` and the log.
async fn record_held(
    store: &Store,
    run_id: &str,
    p: &Prepared<'_>,
    tr: &mut TargetReport,
) -> Result<(), SyncError> {
    // Whether an earlier run held this same set already (it keeps its id).
    let earlier: Vec<String> = if p.hold.held.is_empty() {
        Vec::new()
    } else {
        let rows = store.held().await?.into_iter();
        rows.filter(|r| r.target == p.config.name).map(|r| r.id).collect()
    };
    let held_id = store.record_held(run_id, &p.config.name, &p.hold.held).await?;
    if let Some(h) = tr.held.as_mut() {
        h.id.clone_from(&held_id);
        h.held_before = held_id.as_ref().is_some_and(|id| earlier.contains(id));
        let id = held_id.as_deref().unwrap_or_default();
        tracing::error!(
            target_name = %p.config.name, held = id, removed_memberships = h.removed_memberships,
            disabled_users = h.disabled_users, deleted_users = h.deleted_users,
            "Held removals back, the rest of the plan goes ahead: {}; `dirsync held` lists them, `dirsync approve {id}` sends them, --allow-removals allows them for one run",
            h.reasons.join("; ")
        );
    }
    Ok(())
}

/// Whether `target` took its plan whole: not refused, nothing failed or left unsent,
/// no group withheld.
fn took_whole(report: &Report, target: &str) -> bool {
    report
        .targets
        .iter()
        .find(|t| t.name == target)
        .is_some_and(|t| t.refused.is_none() && t.failed == 0 && t.not_started == 0 && t.withheld_groups == 0)
}

/// Marks the next read full after a read that failed: the cookies it started from
/// are in doubt. The read's own error is what the run reports.
async fn force_full_read(store: &Store, e: &SyncError) {
    if let Err(store_error) = store.force_full_read(&e.to_string()).await {
        tracing::warn!(error = %store_error, "Could not record that the next read must be full.");
    }
}

/// The source kind as stored.
fn source_kind(config: &SourceConfig) -> &'static str {
    match config {
        SourceConfig::Csv(_) => "csv",
        SourceConfig::Ldap(_) => "ldap",
    }
}

/// The stored source state in the form `token::decide` compares. A token or a time
/// that does not parse reads as absent, which makes the read full.
fn as_decided(s: &SourceState) -> token::Stored {
    let since_full = s
        .last_full_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default()
        });
    token::Stored {
        kind: s.kind.clone(),
        config_hash: s.config_hash.clone(),
        token: s.token.clone().and_then(|t| serde_json::from_value(t).ok()),
        generation: s.generation,
        since_full,
        users: crate::store::count(s.users),
        groups: crate::store::count(s.groups),
        force_full: s.force_full.clone(),
    }
}

/// The invalid entities that make the run partial: those not reported before
/// (`fresh`), or every one on a `strict` target.
fn failing_invalid(p: &Prepared<'_>, fresh: usize) -> usize {
    if p.config.strict { p.invalid.len() } else { fresh }
}

/// Maps, fingerprints and plans one target with the HTTP client built for it. Pure.
fn prepare<'c>(
    config: &'c TargetConfig,
    target: HttpTarget,
    dir: &Directory,
    snapshot: Snapshot,
    mode: Mode,
    policy: &RunPolicy<'_>,
    absent: &BTreeMap<(String, String), chrono::DateTime<chrono::Utc>>,
) -> Result<Prepared<'c>, SyncError> {
    let t = std::time::Instant::now();
    let updates_users = target.offers(EndpointKind::UpdateUser);
    let deletes_users = config.removed_users == plan::RemovedUsers::Delete;
    let needs_member_users = target.spec().lists_member_details();
    let options = MapOptions {
        // Every user, not only members: a user left out of the mapping would be
        // taken for one who left the source.
        all_users: updates_users || deletes_users,
        member_details: needs_member_users,
    };
    let unmatched = mapping::unmatched_explicit(dir, &config.groups);
    if !unmatched.is_empty() {
        tracing::warn!(
            target_name = %config.name,
            groups = %crate::text::first_few(&unmatched),
            "`groups.map` names groups the source does not have (by id or name); they are not synced."
        );
    }
    let mut desired = mapping::desired_state(dir, &config.groups, &config.users, &config.templates, options)
        .map_err(|source| SyncError::Mapping {
            target: config.name.clone(),
            source,
        })?;
    let left = plan::add_removals(
        &mut desired,
        &snapshot,
        config.removed_groups,
        config.removed_users,
    );

    tracing::debug!(
        elapsed_ms = t.elapsed().as_millis() as u64,
        "Mapped the directory."
    );
    let t = std::time::Instant::now();
    let mut invalid = Vec::new();
    // Only a resync forgets the snapshot rows of entities no longer mapped.
    let desired_ids = if mode == Mode::Resync {
        (
            desired.groups.keys().cloned().collect(),
            // A user to be deleted keeps its row until the deletion is confirmed.
            desired.users.keys().chain(&left).cloned().collect(),
        )
    } else {
        Default::default()
    };
    let mut users = Arc::new(std::mem::take(&mut desired.users));
    // Each entity's request is built and hashed with the secrets masked; the push
    // renders the ones it sends again, with the real secrets.
    let mut groups = Vec::new();
    if target.offers(EndpointKind::GroupMembers) {
        for group in std::mem::take(&mut desired.groups).into_values() {
            match target.group_request(&group, &users, Secrets::Masked) {
                Ok(req) => groups.push((group, request::fingerprint(&req))),
                Err(e) => invalid.push(Skipped {
                    kind: "group",
                    id: group.id.clone(),
                    name: group.name.clone(),
                    reason: target.redact(&e.0),
                }),
            }
        }
    }
    let mut user_items = Vec::new();
    if updates_users {
        for user in users.values() {
            match target.user_request(user, Secrets::Masked) {
                Ok(req) => user_items.push((user.clone(), request::fingerprint(&req))),
                Err(e) => invalid.push(Skipped {
                    kind: "user",
                    id: user.id.clone(),
                    name: user.user.username.clone(),
                    reason: target.redact(&e.0),
                }),
            }
        }
    }
    tracing::debug!(target_name = %config.name, elapsed_ms = t.elapsed().as_millis() as u64, "Built and hashed every request.");
    let unmapped = desired.unmapped.into_values().collect();
    let mut plan = plan::diff(groups, user_items, unmapped, &left, &snapshot, mode);
    if deletes_users {
        plan::add_deletions(&mut plan, &snapshot, &left);
    }
    let hold = hold_removals(config, dir, &snapshot, &mut plan, policy, absent);
    // An approved removal in a group, or of a user, the source data cannot build a
    // request for is not sent: the approval is not done.
    let mut withheld = policy.approved.map_or(0, |set| {
        invalid
            .iter()
            .filter(|s| match s.kind {
                "group" => set.groups.contains_key(&s.id),
                _ => set.users.contains_key(&s.id),
            })
            .count()
    });
    if needs_member_users {
        let users = Arc::get_mut(&mut users).expect("the users are not shared before the plan is built");
        let unsendable = describe_kept(config, dir, &snapshot, &mut plan, users, &hold);
        withheld += unsendable.len();
        invalid.extend(unsendable);
    }
    let unbuilt = rebuild_kept_groups(&target, &snapshot, &mut plan, &users, &hold);
    withheld += unbuilt.len();
    invalid.extend(unbuilt);
    // After the removal policy: a delta carries the members it let through.
    let rules = plan::DeltaRules {
        add: target.offers(EndpointKind::AddMembers),
        remove: target.offers(EndpointKind::RemoveMembers),
        max_per_request: target.spec().max_members_per_request,
    };
    plan::split_deltas(&mut plan, &snapshot, rules, |group| {
        let req = target.group_request(group, &users, Secrets::Masked).ok()?;
        Some(request::fingerprint(&req))
    });
    Ok(Prepared {
        config,
        target,
        plan,
        users,
        desired_ids,
        invalid,
        hold,
        withheld,
        approval: None,
        changed: Default::default(),
    })
}

/// Applies the target's removal policy to its plan. Pure.
fn hold_removals(
    config: &TargetConfig,
    dir: &Directory,
    snapshot: &Snapshot,
    plan: &mut Plan,
    policy: &RunPolicy<'_>,
    absent: &BTreeMap<(String, String), chrono::DateTime<chrono::Utc>>,
) -> hold::Outcome {
    let settings = &config.removals;
    // Protected members are named by target id or source id: a source id is found
    // in the source, or, for a user who left it, in the user as last pushed.
    let to_target_ids = |ids: &BTreeSet<String>| {
        let mut all = ids.clone();
        all.extend(mapping::target_ids_of(dir, ids, &config.users, &config.templates));
        let pushed = snapshot
            .users
            .iter()
            .filter(|(_, s)| s.user.as_ref().is_some_and(|u| ids.contains(&u.id)));
        all.extend(pushed.map(|(id, _)| id.clone()));
        all
    };
    let protected = to_target_ids(&settings.protected);
    let group_protected: BTreeMap<String, BTreeSet<String>> = settings
        .group_protected
        .iter()
        .map(|(g, ids)| (g.clone(), to_target_ids(ids)))
        .collect();
    let drop = policy.sizes.and_then(|(before, now)| {
        let min_count = config.limits.percent_min_count;
        hold::source_drop(before, now, settings.max_source_drop_percent, min_count)
    });
    hold::apply(
        plan,
        snapshot,
        &hold::Policy {
            limits: &config.limits,
            group_limit: settings.group_limit,
            group_limits: &settings.group_limits,
            protected: &protected,
            group_protected: &group_protected,
            source_drop: drop.as_deref(),
            approved: policy.approved,
            allow_removals: policy.allow_removals,
            source_users: policy.source_users,
            removal_delay: settings.removal_delay,
            absent_since: absent,
            now: chrono::Utc::now(),
        },
    )
}

/// Puts into `users` the members the removal policy keeps in a group's list, for a
/// target whose request gives each member's details (`member_users`): a member the
/// mapping left out (in no mapped group any more) is described from the source, or
/// as last pushed (the user's own snapshot row, else the group's last confirmed list).
/// A group that keeps a member nothing describes is not sent, and
/// is reported: its list without that member would remove it. Pure.
fn describe_kept(
    config: &TargetConfig,
    dir: &Directory,
    snapshot: &Snapshot,
    plan: &mut Plan,
    users: &mut BTreeMap<String, DesiredUser>,
    hold: &hold::Outcome,
) -> Vec<Skipped> {
    fn kept_in<'o>(op: &'o Operation, hold: &hold::Outcome) -> Option<&'o plan::GroupOp> {
        match op {
            Operation::ReplaceMembers(g) if hold.changed_groups.contains(&g.group.id) => Some(g),
            _ => None,
        }
    }
    let missing: BTreeSet<String> = plan
        .ops
        .iter()
        .filter_map(|op| kept_in(op, hold))
        .flat_map(|g| g.group.members.iter())
        .filter(|id| !users.contains_key(*id))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    users.extend(mapping::users_with_target_ids(
        dir,
        &missing,
        &config.users,
        &config.templates,
    ));
    for id in &missing {
        if let Some(user) = snapshot.users.get(id).and_then(|s| s.user.clone()) {
            users
                .entry(id.clone())
                .or_insert_with(|| DesiredUser { id: id.clone(), user });
        }
    }
    // Then as the target last confirmed them in any group: of two groups' details of
    // one member, the later confirmed (an earlier group's push may have failed).
    // As each appears in a stored member list (a JSON array of ids).
    let undescribed: Vec<String> = missing
        .iter()
        .filter(|id| !users.contains_key(*id))
        .map(|id| serde_json::to_string(id).unwrap_or_default())
        .collect();
    let mut last: BTreeMap<String, (&str, User)> = BTreeMap::new();
    for kept in snapshot.groups.values() {
        let Some(json) = kept.member_users.as_deref() else {
            continue;
        };
        // Parsed only for a group that lists one of them.
        if !undescribed
            .iter()
            .any(|id| kept.members.json.contains(id.as_str()))
        {
            continue;
        }
        // Text that is not such an object describes no one: the group is withheld.
        let described: BTreeMap<String, User> = serde_json::from_str(json).unwrap_or_default();
        for (id, user) in described {
            if !missing.contains(&id) || users.contains_key(&id) {
                continue;
            }
            match last.get(&id) {
                Some((at, _)) if *at >= kept.confirmed_at.as_str() => {}
                _ => {
                    last.insert(id, (kept.confirmed_at.as_str(), user));
                }
            }
        }
    }
    for (id, (_, user)) in last {
        users.insert(id.clone(), DesiredUser { id, user });
    }
    let mut unsendable = Vec::new();
    plan.ops.retain(|op| {
        let Some(g) = kept_in(op, hold) else {
            return true;
        };
        let undescribed: Vec<&str> = g
            .group
            .members
            .iter()
            .filter(|id| !users.contains_key(*id))
            .map(String::as_str)
            .collect();
        if undescribed.is_empty() {
            return true;
        }
        unsendable.push(Skipped {
            kind: "group",
            id: g.group.id.clone(),
            name: g.group.name.clone(),
            reason: format!(
                "not sent: it keeps {} member(s) the removal policy holds, protects or delays that the source no longer describes ({}), and this target's request gives each member's details, so a list without them would remove them; it is sent once they are approved away, come back, or are no longer protected",
                undescribed.len(),
                crate::text::first_few(&undescribed)
            ),
        });
        false
    });
    unsendable
}

/// The details of a confirmed group's members, as kept beside its snapshot row: a
/// JSON object of target user id → user. Pure.
fn member_details(members: &BTreeSet<String>, users: &BTreeMap<String, DesiredUser>) -> String {
    let described: BTreeMap<&str, &User> = members
        .iter()
        .filter_map(|id| users.get(id).map(|u| (id.as_str(), &u.user)))
        .collect();
    serde_json::to_string(&described).unwrap_or_default()
}

/// Builds again the requests of the groups that keep members (another list is sent);
/// a group left with what the target already has sends nothing. Pure.
fn rebuild_kept_groups(
    target: &HttpTarget,
    snapshot: &Snapshot,
    plan: &mut Plan,
    users: &BTreeMap<String, DesiredUser>,
    outcome: &hold::Outcome,
) -> Vec<Skipped> {
    let mut unchanged = 0;
    let mut unbuilt = Vec::new();
    plan.ops.retain_mut(|op| {
        let Operation::ReplaceMembers(g) = op else {
            return true;
        };
        if !outcome.changed_groups.contains(&g.group.id) {
            return true;
        }
        // The list grew back towards what was confirmed, but a kept member may fail
        // a check the list without them passed (a validation of their details).
        match target.group_request(&g.group, users, Secrets::Masked) {
            Ok(req) => g.fingerprint = request::fingerprint(&req),
            Err(e) => {
                unbuilt.push(Skipped {
                    kind: "group",
                    id: g.group.id.clone(),
                    name: g.group.name.clone(),
                    reason: format!(
                        "not sent: with the members the removal policy keeps, {}",
                        target.redact(&e.0)
                    ),
                });
                return false;
            }
        }
        let same = g.reason != plan::Reason::Resync
            && snapshot
                .groups
                .get(&g.group.id)
                .is_some_and(|s| s.fingerprint == g.fingerprint);
        unchanged += usize::from(same);
        !same
    });
    plan.unchanged_groups += unchanged;
    unbuilt
}

fn summarize(p: &Prepared<'_>) -> TargetReport {
    TargetReport {
        name: p.config.name.clone(),
        planned: p.plan.ops.len(),
        unchanged_groups: p.plan.unchanged_groups,
        unchanged_users: p.plan.unchanged_users,
        added_memberships: p.plan.added_memberships(),
        removed_memberships: p.plan.removed_memberships(),
        disabled_users: p.plan.disabled_users(),
        deleted_users: p.plan.deleted_users(),
        unmapped_users: p.plan.unmapped.len(),
        invalid: p.invalid.len(),
        held: (!p.hold.held.is_empty()).then(|| HeldReport {
            id: None,
            removed_memberships: p.hold.held.removed_memberships(),
            disabled_users: p.hold.held.disabled_users(),
            deleted_users: p.hold.held.deleted_users(),
            reasons: p.hold.held.reasons.clone(),
            held_before: false,
        }),
        protected: p.hold.kept.len(),
        waiting: p.hold.waiting.len(),
        withheld_groups: p.withheld,
        // Each run starts from the configured window; a push may lower it.
        concurrency_limit: p.target.spec().concurrency,
        ..TargetReport::default()
    }
}

/// The entity kind of an operation, as the removal policy names it.
fn op_kind(op: &Operation) -> &'static str {
    match op {
        Operation::ReplaceMembers(_) => "group",
        Operation::UpdateUser(_) | Operation::DeleteUser(_) => "user",
    }
}

/// Logs each removal or disable not made because the member is protected.
fn log_kept(p: &Prepared<'_>) {
    for k in &p.hold.kept {
        match &k.group {
            Some(group) => {
                tracing::warn!(target_name = %p.config.name, group = %group, member = %k.member, "Kept a protected member the source no longer has in the group.")
            }
            None => {
                tracing::warn!(target_name = %p.config.name, user = %k.member, "Left a protected user as they are whom the source would disable or delete.")
            }
        }
    }
}

/// Why the plan may not go ahead, if it may not.
fn refusal(p: &Prepared<'_>, report: &Report) -> Option<String> {
    let held = &p.hold.held;
    let removes =
        p.plan.removed_memberships() + p.plan.disabled_users() + p.plan.deleted_users() + held.removals() > 0;
    if removes && !p.config.allow_empty_source && (report.source_users == 0 || report.source_groups == 0) {
        return Some(format!(
            "the source returned {} users and {} groups; an empty source never removes anything \
             unless `safety.allow_empty_source = true`",
            report.source_users, report.source_groups
        ));
    }
    None
}

/// Sends a target's plan (nothing to an endpoint whose kept `Retry-After` has not
/// passed) and keeps the pauses it asks for beyond the run. Returns the push phase's
/// duration in milliseconds.
async fn deliver(
    store: &Store,
    run_id: &str,
    p: &Prepared<'_>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    tr: &mut TargetReport,
) -> Result<u64, StoreError> {
    let paused = store.pauses(Some(&p.config.name), &crate::store::now()).await?;
    let held = held_endpoints(&paused);
    if let Some(pause) = paused.iter().max_by(|a, b| a.until.cmp(&b.until)) {
        let scope = pause.endpoint.as_deref().unwrap_or("every endpoint");
        tracing::warn!(target_name = %p.config.name, until = %pause.until, scope, "Sent nothing the target asked to wait for (Retry-After); it is left for a run after that time.");
        tr.paused_until = Some(pause.until.clone());
    }
    p.target.keep_ids_in(store);
    progress.start(&p.config.name, p.plan.ops.len());
    let pushing = std::time::Instant::now();
    let pauses = push(store, run_id, p, &held, cancel, progress, tr).await?;
    for pause in pauses {
        let endpoint = pause.endpoint.map(EndpointKind::key);
        // A target cannot shut dirsync out for longer than a day with one answer.
        let wait = pause.wait.min(MAX_KEPT_PAUSE);
        let until = store
            .set_pause(run_id, &p.config.name, endpoint, wait, pause.status)
            .await?;
        tracing::warn!(target_name = %p.config.name, %until, endpoint = endpoint.unwrap_or("every endpoint"), "Keeping the target's Retry-After: no run sends to it before that time.");
        tr.paused_until = Some(tr.paused_until.take().map_or(until.clone(), |u| u.max(until)));
    }
    let push_ms = pushing.elapsed().as_millis() as u64;
    progress.finish();
    tr.concurrency_limit = p.target.concurrency_limit();
    Ok(push_ms)
}

/// The endpoints a stored pause holds back (all of them for a target-wide pause).
fn held_endpoints(paused: &[crate::store::PauseRow]) -> BTreeSet<EndpointKind> {
    let all = EndpointKind::ALL;
    paused
        .iter()
        .flat_map(|p| match p.endpoint.as_deref() {
            None => all.to_vec(),
            Some(e) => all.into_iter().filter(|k| k.key() == e).collect(),
        })
        .collect()
}

/// The longest `Retry-After` kept for later runs.
const MAX_KEPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A `Retry-After` the run could not honour, with the answer's status.
struct AskedPause {
    endpoint: Option<EndpointKind>,
    wait: std::time::Duration,
    status: Option<u16>,
}

/// The plan cut into what is pushed in order: a group's delta operations together,
/// every other operation alone.
fn units(ops: &[Operation]) -> Vec<&[Operation]> {
    let mut out = Vec::new();
    let mut rest = ops;
    while let Some(first) = rest.first() {
        let len = if first.is_delta() {
            rest.iter()
                .take_while(|op| op.is_delta() && op.entity_id() == first.entity_id())
                .count()
        } else {
            1
        };
        let (unit, tail) = rest.split_at(len);
        out.push(unit);
        rest = tail;
    }
    out
}

/// Pushes a target's plan, recording each operation as it completes. Operations for
/// a `held` endpoint are not started. Returns the pauses the target asked for.
async fn push<'p>(
    store: &Store,
    run_id: &str,
    p: &'p Prepared<'_>,
    held: &BTreeSet<EndpointKind>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    tr: &mut TargetReport,
) -> Result<Vec<AskedPause>, StoreError> {
    let stop = AtomicBool::new(false);
    let consecutive_failures = AtomicUsize::new(0);
    // How many of those failures in a row were 403s.
    let consecutive_forbidden = AtomicUsize::new(0);
    let max_failures = p.target.spec().max_consecutive_failures;
    let lists_details = p.target.spec().lists_member_details();
    // Before the first request: a run killed with requests under way leaves their
    // entities to be planned again, whatever the source says by then.
    let (mut groups, mut users) = (Vec::new(), Vec::new());
    for op in &p.plan.ops {
        match op {
            Operation::ReplaceMembers(g) => groups.push(g.group.id.as_str()),
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => users.push(u.user.id.as_str()),
        }
    }
    groups.dedup();
    let marked = store.mark_sending(&p.config.name, &groups, &users).await?;
    // The entities a request went out for; the others get their rows back.
    let attempted: std::sync::Mutex<BTreeSet<&str>> = Default::default();
    let (marked, tried) = (&marked, &attempted);
    let name = p.config.name.as_str();
    // Outcomes go to one writer that commits them in batches, so a request slot is
    // free again as soon as its answer is in, not after a database commit. The queue
    // and a batch hold at most `concurrency` outcomes each: a crash can lose at most
    // three times `concurrency` confirmations (in flight, queued, being written),
    // which the next run pushes again.
    let concurrency = p.target.spec().concurrency;
    let (records, mut pending) = tokio::sync::mpsc::channel::<Record<'_>>(concurrency);
    let writer = async move {
        let mut batch = Vec::with_capacity(concurrency);
        while let Some(first) = pending.recv().await {
            batch.push(first);
            while batch.len() < concurrency {
                match pending.try_recv() {
                    Ok(rec) => batch.push(rec),
                    Err(_) => break,
                }
            }
            store.record_batch(&batch).await?;
            for _ in 0..batch.len() {
                progress.advance();
            }
            batch.clear();
        }
        Ok::<_, StoreError>(())
    };
    let (stop, consecutive_failures, consecutive_forbidden, users) =
        (&stop, &consecutive_failures, &consecutive_forbidden, &p.users);
    let skipped = move |op: &Operation| {
        cancel.is_cancelled() || stop.load(Ordering::Relaxed) || held.contains(&endpoint_of(op))
    };
    // An operation's outcome: counted, logged, recorded.
    // `before`: the group delta confirmed just before `op`, in the same unit.
    let settle = move |op: &'p Operation,
                       outcome: crate::target::PushOutcome,
                       settles: bool,
                       before: Option<&'p Operation>| {
        let records = records.clone();
        async move {
            let latency = outcome
                .result
                .is_ok()
                .then(|| p.changed.seconds_to_now(op))
                .flatten();
            // Failures are counted by request: the operations of a failed bulk
            // request after its first add none.
            let failures = match &outcome.result {
                Ok(_) => {
                    consecutive_failures.store(0, Ordering::Relaxed);
                    0
                }
                Err(_) if outcome.same_request => consecutive_failures.load(Ordering::Relaxed),
                Err(_) => consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1,
            };
            let forbidden = match (&outcome.result, outcome.status) {
                (Err(_), Some(403)) if outcome.same_request => consecutive_forbidden.load(Ordering::Relaxed),
                (Err(_), Some(403)) => consecutive_forbidden.fetch_add(1, Ordering::Relaxed) + 1,
                _ => {
                    consecutive_forbidden.store(0, Ordering::Relaxed);
                    0
                }
            };
            let auth = matches!(&outcome.result, Err(e) if e.is_auth());
            // More requests with credentials the target refuses only lock accounts;
            // more requests to a target that is down only prolong the outage.
            if (auth || outcome.stop_target || failures >= max_failures)
                && !stop.swap(true, Ordering::Relaxed)
            {
                let why = if auth {
                    "it refused the credentials".to_owned()
                } else if outcome.stop_target {
                    "it asked to wait longer than retry.max_retry_after".to_owned()
                } else if forbidden >= failures {
                    format!(
                        "{failures} operations in a row were refused with 403 Forbidden (do the credentials have the rights these requests need?)"
                    )
                } else {
                    format!("{failures} operations failed in a row")
                };
                tracing::error!(
                    target_name = name,
                    "Stopped pushing to the target because {why}; the remaining operations are left for the next run."
                );
            }
            let drift = outcome
                .result
                .as_ref()
                .ok()
                .and_then(|d| d.as_ref())
                .map(|d| serde_json::json!(d));
            let error = outcome.result.as_ref().err().map(ToString::to_string);
            log_outcome(name, op, &outcome, drift.as_ref());
            let record = Record {
                run_id,
                target: name,
                op,
                operation: outcome.sent_as,
                success: outcome.result.is_ok(),
                http_status: outcome.status,
                attempts: outcome.attempts,
                drift,
                error,
                warning: outcome.warning.clone(),
                approval: p.approval.as_ref().filter(|_| {
                    p.hold
                        .approved_ops
                        .contains(&(op_kind(op), op.entity_id().to_owned()))
                }),
                member_users: match op {
                    Operation::ReplaceMembers(g) if lists_details && outcome.result.is_ok() => {
                        Some(member_details(&g.group.members, &p.users))
                    }
                    _ => None,
                },
                settles,
                // Refused, or never sent: the target applied nothing of it.
                restores: match &outcome.result {
                    Err(PushError::Rejected(_) | PushError::Auth { .. } | PushError::Build(_)) => {
                        match before {
                            Some(Operation::ReplaceMembers(g)) => Some(g.fingerprint.as_str()),
                            _ => marked.before(op),
                        }
                    }
                    _ => None,
                },
            };
            // A closed channel means the writer failed; its error is returned below.
            let _ = records.send(record).await;
            (
                outcome.sent_as.unwrap_or_else(|| op.kind()),
                Some((outcome, latency)),
            )
        }
    };
    let settle_one = settle.clone();
    let push_one = move |op: &'p Operation, settles: bool, before: Option<&'p Operation>| {
        let settle = settle_one.clone();
        async move {
            if skipped(op) {
                progress.advance();
                return (op.kind(), None);
            }
            tried
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(op.entity_id());
            settle(op, p.target.push(op, users).await, settles, before).await
        }
    };
    // Group member operations sent together, in one bulk request (SCIM).
    let send_bulk = move |ops: Vec<&'p Operation>| {
        let settle = settle.clone();
        async move {
            let (go, not): (Vec<&Operation>, Vec<&Operation>) = ops.into_iter().partition(|op| !skipped(op));
            let mut out = Vec::with_capacity(go.len() + not.len());
            for op in not {
                progress.advance();
                out.push((op.kind(), None));
            }
            tried
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(go.iter().map(|op| op.entity_id()));
            let outcomes = p.target.push_bulk(&go, users).await;
            for (op, outcome) in go.into_iter().zip(outcomes) {
                out.push(settle(op, outcome, true, None).await);
            }
            out
        }
    };
    // A group's delta operations go in order, each only after the one before it was
    // confirmed: the snapshot then always holds a list the target had, and a failure
    // leaves the rest to the next run.
    // Users are deleted once every other operation is done: a group request that
    // still names a member resolves the member's id before the member is gone.
    let (others, deletions): (Vec<_>, Vec<_>) = units(&p.plan.ops)
        .into_iter()
        .partition(|unit| !matches!(unit.first(), Some(Operation::DeleteUser(_))));
    let send_unit = move |unit: &'p [Operation]| {
        let push_one = push_one.clone();
        async move {
            let mut out = Vec::with_capacity(unit.len());
            let mut blocked = false;
            for (i, op) in unit.iter().enumerate() {
                if blocked {
                    progress.advance();
                    out.push((op.kind(), None));
                    continue;
                }
                // A group split into several requests has its change confirmed
                // by the last of them.
                let last = i + 1 == unit.len();
                let before = i.checked_sub(1).map(|b| &unit[b]);
                let (kind, outcome) = push_one(op, last, before).await;
                blocked = outcome.as_ref().is_none_or(|(o, _)| o.result.is_err());
                out.push((kind, outcome.map(|(o, latency)| (o, latency.filter(|_| last)))));
            }
            out
        }
    };
    // A target that takes bulk requests gets the groups changed by one request each
    // together, as many to a request as it takes.
    let per_request = p.target.bulk_operations().await;
    let (bulked, alone): (Vec<_>, Vec<_>) = others
        .into_iter()
        .partition(|unit| per_request > 1 && matches!(unit, [Operation::ReplaceMembers(_)]));
    // (`move`: once collected, only the batches hold `settle` and its sender.)
    let batches = bulked
        .chunks(per_request)
        .map(move |chunk| send_bulk(chunk.iter().flat_map(|unit| unit.iter()).collect()).boxed())
        .collect::<Vec<_>>();
    let send_alone = send_unit.clone();
    let pushes = futures_util::stream::iter(alone)
        .map(move |unit| send_alone(unit).boxed())
        .chain(futures_util::stream::iter(batches))
        .buffer_unordered(concurrency)
        .chain(
            futures_util::stream::iter(deletions)
                .map(send_unit)
                .buffer_unordered(concurrency),
        )
        .flat_map(futures_util::stream::iter)
        .collect::<Vec<_>>()
        .boxed();
    // The stream owns the last sender: once every push is done, the writer drains and ends.
    let (results, written) = tokio::join!(pushes, writer);
    written?;
    let attempted = attempted.into_inner().unwrap_or_else(PoisonError::into_inner);
    let (unsent_groups, unsent_users): (Vec<&Operation>, Vec<&Operation>) = p
        .plan
        .ops
        .iter()
        .filter(|op| !attempted.contains(op.entity_id()))
        .partition(|op| matches!(op, Operation::ReplaceMembers(_)));
    if !unsent_groups.is_empty() || !unsent_users.is_empty() {
        let ids = |ops: Vec<&'p Operation>| ops.into_iter().map(|op| op.entity_id()).collect::<Vec<_>>();
        store
            .unmark(name, marked, &ids(unsent_groups), &ids(unsent_users))
            .await?;
    }
    let mut pauses = Vec::new();
    let mut unechoed = Vec::new();
    for (kind, outcome) in results {
        let Some((o, latency)) = outcome else {
            tr.not_started += 1;
            continue;
        };
        tr.propagation_seconds.extend(latency);
        unechoed.extend(o.warning);
        if let Some(pause) = o.pause {
            pauses.push(AskedPause {
                endpoint: pause.endpoint,
                wait: pause.wait,
                status: o.status,
            });
        }
        tr.retries += o.attempts.saturating_sub(1) as usize;
        tr.throttled += o.throttled as usize;
        let counts = tr.by_kind.entry(kind.to_owned()).or_default();
        match o.result {
            Ok(drift) => {
                tr.succeeded += 1;
                counts.succeeded += 1;
                tr.drift += usize::from(drift.is_some());
            }
            Err(e) => {
                tr.failed += 1;
                counts.failed += 1;
                if e.is_auth() {
                    tr.auth_error = Some(e.to_string());
                }
            }
        }
    }
    warn_unechoed(name, &unechoed);
    tr.propagation = propagation::Summary::of(&tr.propagation_seconds);
    Ok(pauses)
}

fn log_outcome(
    target: &str,
    op: &Operation,
    outcome: &crate::target::PushOutcome,
    drift: Option<&serde_json::Value>,
) {
    let (kind, id, name) = (op.kind(), op.entity_id(), op.entity_name());
    match &outcome.result {
        Ok(_) => tracing::debug!(
            target_name = target,
            kind,
            id,
            name,
            status = outcome.status,
            attempts = outcome.attempts,
            "Pushed."
        ),
        Err(e) => tracing::warn!(
            target_name = target,
            kind,
            id,
            name,
            status = outcome.status,
            attempts = outcome.attempts,
            "Push failed: {e}"
        ),
    }
    if let Some(d) = drift {
        tracing::warn!(target_name = target, kind, id, name, drift = %d, "The target's answer differs from what was sent.");
    }
    // Kept in the audit row; the run warns once per target (`warn_unechoed`).
    if let Some(w) = &outcome.warning {
        tracing::debug!(
            target_name = target,
            kind,
            id,
            name,
            "The target confirmed without the echo its endpoint declares: {w}"
        );
    }
}

/// One warning for a target's confirmations that came without the echo their endpoint
/// declares (a target that never echoes would otherwise log a line per operation).
fn warn_unechoed(target: &str, warnings: &[String]) {
    if let Some(first) = warnings.first() {
        tracing::warn!(
            target_name = target,
            operations = warnings.len(),
            "The target confirmed {} operation(s) without the echo its endpoint declares, so drift cannot be checked for them (the audit rows say which); the first: {first}",
            warnings.len()
        );
    }
}

/// The dry-run view of one target's plan.
fn print_plan(out: &mut (dyn Write + Send), p: &Prepared<'_>, tr: &TargetReport) -> std::io::Result<()> {
    // Names print quoted (`{:?}`), ids through `escape_debug` and free text through
    // `shown`: a line break, an escape sequence or a bidi override in the directory's
    // or a target's text must not start a line or restyle the terminal.
    let shown = |text: &str| crate::text::visible(text).into_owned();
    let preset = p
        .config
        .preset
        .as_deref()
        .map(|s| format!(" (preset {s})"))
        .unwrap_or_default();
    writeln!(
        out,
        "target {}{preset}: {} operation(s); {} group(s) and {} user(s) unchanged; {} unmapped user(s)",
        tr.name, tr.planned, tr.unchanged_groups, tr.unchanged_users, tr.unmapped_users
    )?;
    if let Some(h) = &tr.held {
        writeln!(
            out,
            "  held until approved: {}: {}",
            crate::hold::counts_text(h.removed_memberships, h.disabled_users, h.deleted_users),
            shown(&h.reasons.join("; "))
        )?;
    }
    for k in &p.hold.kept {
        let group = k
            .group
            .as_deref()
            .map_or("(disable)".to_owned(), |g| g.escape_debug().to_string());
        writeln!(out, "  protected, kept: {} in {group}", k.member.escape_debug())?;
    }
    for op in &p.plan.ops {
        match op {
            Operation::ReplaceMembers(g) if g.delta.is_some() => {
                let (verb, ids) = match g.delta {
                    Some(plan::Delta::Remove) => ("remove from", &g.removed),
                    _ => ("add to", &g.added),
                };
                writeln!(
                    out,
                    "  {verb} group {:?} ({}): {} member(s) [{:?}]",
                    g.group.name,
                    g.group.id.escape_debug(),
                    ids.len(),
                    g.reason
                )?;
                writeln!(
                    out,
                    "      {} {}",
                    if g.added.is_empty() { '-' } else { '+' },
                    join(ids)
                )?;
            }
            Operation::ReplaceMembers(g) => {
                writeln!(
                    out,
                    "  replace members of group {:?} ({}): {} member(s), +{} -{} [{:?}]",
                    g.group.name,
                    g.group.id.escape_debug(),
                    g.group.members.len(),
                    g.added.len(),
                    g.removed.len(),
                    g.reason
                )?;
                if !g.added.is_empty() {
                    writeln!(out, "      + {}", join(&g.added))?;
                }
                if !g.removed.is_empty() {
                    writeln!(out, "      - {}", join(&g.removed))?;
                }
            }
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => {
                let what = match op {
                    Operation::DeleteUser(_) => "delete",
                    _ if u.disables => "disable",
                    _ => "update",
                };
                writeln!(
                    out,
                    "  {what} user {:?} ({}) [{:?}]",
                    u.user.user.username,
                    u.user.id.escape_debug(),
                    u.reason
                )?;
            }
        }
    }
    for s in &p.invalid {
        writeln!(
            out,
            "  skipped {} {:?} ({}): {}",
            s.kind,
            s.name,
            s.id.escape_debug(),
            shown(&s.reason)
        )?;
    }
    for u in &p.plan.unmapped {
        writeln!(
            out,
            "  unmapped user {:?} ({}): {}",
            u.username,
            u.source_id.escape_debug(),
            shown(&u.reason)
        )?;
    }
    if let Some(why) = &tr.refused {
        writeln!(out, "  REFUSED: {}", shown(why))?;
    }
    Ok(())
}

/// The first ids of a set, escaped like every id in the plan.
fn join(ids: &BTreeSet<String>) -> String {
    const SHOWN: usize = 20;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .map(|id| id.escape_debug().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(", … {} more", ids.len() - SHOWN));
    }
    s
}
