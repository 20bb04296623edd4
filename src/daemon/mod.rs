//! `dirsync run`: the long-running service.
//!
//! Runs syncs (and resyncs) on the configured cron schedules, one at a time, and
//! verifies on `verify_schedule` (under the same run lock; the drift goes to
//! /metrics); reloads the config on request (validated first: an invalid one is
//! logged and the old one kept); stops gracefully: no new operations, in-flight
//! requests get `shutdown_grace` to finish and be recorded. Signals arrive as
//! injected values (`Signals`), so tests drive the loop without sending real signals.
//!
//! Talks to systemd through `notify` (READY, STATUS, WATCHDOG, RELOADING, STOPPING)
//! and serves /healthz and /metrics on a loopback address when configured.

pub(crate) mod notify;
pub(crate) mod schedule;
mod server;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Local;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::lock::LockError;
use crate::metrics::Metrics;
use crate::plan::Mode;
use crate::store::Store;
use crate::sync::{self, NoProgress, SyncError};
use crate::verify::{self, VerifyError};
use schedule::{Due, Schedules};

/// What the outside world asks of the daemon.
#[derive(Debug)]
pub struct Signals {
    /// Stop: no new operations, finish in-flight ones within the grace period.
    pub shutdown: CancellationToken,
    /// Reload the config from its file.
    pub reload: mpsc::UnboundedReceiver<()>,
}

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What /healthz and STATUS= report.
#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) started: Instant,
    pub(crate) last_run: Option<(Instant, String)>,
    pub(crate) last_success: Option<Instant>,
    /// /healthz stays healthy this long after the last success (and after start).
    pub(crate) healthy_within: Duration,
}

impl Health {
    /// Healthy while the last run succeeded, or the last success (kept from before a
    /// restart too) or the start, before any run, is recent enough.
    pub(crate) fn check(&self, now: Instant) -> Result<String, String> {
        let recent = |t: Instant| now.saturating_duration_since(t) <= self.healthy_within;
        match (&self.last_run, self.last_success) {
            (Some((_, outcome)), _) if outcome == "success" => Ok("ok: the last run succeeded".into()),
            (_, Some(t)) if recent(t) => Ok(format!(
                "ok: the last success was {}s ago",
                now.duration_since(t).as_secs()
            )),
            (None, _) if recent(self.started) => Ok("ok: starting, no run yet".into()),
            (Some((_, outcome)), _) => Err(format!(
                "unhealthy: the last run ended `{outcome}` and no run succeeded recently"
            )),
            (None, _) => Err("unhealthy: no run succeeded since start".into()),
        }
    }
}

/// Shared between the loop and the HTTP server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) health: Mutex<Health>,
    pub(crate) metrics: Metrics,
    /// The LDAP entry cache between runs, kept only with `watch = true`: a watched
    /// change is then synced without loading every kept entry again.
    pub(crate) warm: sync::Warm,
}

/// Runs the service until `signals.shutdown` fires.
pub async fn run(config_path: &Path, config: Config, mut signals: Signals) -> Result<(), DaemonError> {
    let mut config = Arc::new(config);
    // READY means the config is valid and the state database usable.
    let store = Store::open(&config.state_db).await?;
    let last_success = store.last_success().await?;
    store.close().await;
    // The last success of an earlier start counts: a restart while runs fail does
    // not make the service look healthy or unhealthy for it.
    let last_success_at = last_success.and_then(|at| {
        let at = std::time::UNIX_EPOCH + Duration::try_from_secs_f64(at).ok()?;
        let age = std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default();
        Instant::now().checked_sub(age)
    });
    let shared = Arc::new(Shared {
        health: Mutex::new(Health {
            started: Instant::now(),
            last_run: None,
            last_success: last_success_at,
            healthy_within: config.daemon.healthy_within,
        }),
        metrics: Metrics::new(),
        warm: sync::Warm::default(),
    });
    if let Some(at) = last_success {
        shared.metrics.restore_last_success(at);
    }
    if let Some(addr) = config.daemon.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        tracing::info!(%addr, "Serving /healthz and /metrics.");
        tokio::spawn(server::serve(
            listener,
            Arc::clone(&shared),
            signals.shutdown.clone(),
        ));
    }
    // When the stop came: the run under way and the webhook messages share one grace.
    let stopped_at: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    {
        let (stopped_at, stop) = (Arc::clone(&stopped_at), signals.shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            let _ = stopped_at.set(Instant::now());
        });
    }
    if let Some(every) = notify::watchdog_interval() {
        let stop = signals.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => notify::watchdog(),
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
    notify::ready("waiting for the first scheduled run");
    tracing::info!(config = %config_path.display(), "The daemon is ready.");

    // Changes the directory reports, when it is watched (`daemon.watch`).
    let (changed, mut changes) = mpsc::unbounded_channel::<()>();
    let mut watcher = watch(&config, changed.clone());
    let mut run_now = config.daemon.run_at_start;
    let mut outbox = crate::notify::Outbox::default();
    // A watched run that did not finish clean, run again after this backoff: no
    // directory change may come to start another.
    let mut retry: Option<Retry> = None;
    // Ticks up to here are accounted for: run, covered by a run, or owed.
    let mut seen = Local::now();
    let mut owed: Option<Due> = None;
    loop {
        let due = if run_now {
            run_now = false;
            Due {
                run: Some(Mode::Sync),
                verify: false,
            }
        } else if let Some(due) = owed.take() {
            tracing::info!(
                run = due.run.map(Mode::as_str),
                verify = due.verify,
                "Running what fell due while the service was busy."
            );
            due
        } else {
            let now = Local::now();
            let next = schedule::next(schedules(&config), &now);
            let wait = next
                .as_ref()
                .map(|(at, _)| (*at - now).to_std().unwrap_or_default());
            if next.is_none() && watcher.is_none() {
                tracing::warn!(
                    "No schedule is configured ([daemon] schedule); idle until stopped or reloaded."
                );
            }
            let retry_wait = retry.map(|r| r.at.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = sleep_or_forever(wait) => next.map_or(Due { run: Some(Mode::Sync), verify: false }, |(_, d)| d),
                _ = sleep_or_forever(retry_wait) => Due { run: Some(Mode::Sync), verify: false },
                _ = signals.shutdown.cancelled() => break,
                Some(()) = signals.reload.recv() => {
                    // What fell due under the old schedules is owed; the new ones
                    // count from now.
                    let now = Local::now();
                    let idle = Due { run: None, verify: false };
                    owed = Some(schedule::owed(schedules(&config), &seen, &now, idle))
                        .filter(|d| d.run.is_some() || d.verify);
                    seen = now;
                    let before = Arc::clone(&config);
                    config = reload(config_path, config);
                    for gone in before.targets.iter().filter(|t| !config.targets.iter().any(|n| n.name == t.name)) {
                        shared.metrics.forget_target(&gone.name);
                    }
                    shared.health.lock().unwrap_or_else(|e| e.into_inner()).healthy_within = config.daemon.healthy_within;
                    if let Some(w) = watcher.take() {
                        w.abort();
                    }
                    watcher = watch(&config, changed.clone());
                    continue;
                }
                Some(()) = changes.recv() => {
                    let debounce = config.daemon.debounce;
                    tracing::info!(debounce_ms = debounce.as_millis() as u64, "The directory changed; syncing after the debounce.");
                    tokio::select! {
                        _ = tokio::time::sleep(debounce) => {}
                        _ = signals.shutdown.cancelled() => break,
                    }
                    // One run covers every change seen so far.
                    while changes.try_recv().is_ok() {}
                    Due { run: Some(Mode::Sync), verify: false }
                }
            }
        };
        let started_wall = Local::now();
        if let Some(mode) = due.run {
            let started = Instant::now();
            let outcome = run_once(&config, mode, &signals.shutdown, &shared, &mut outbox).await;
            let elapsed = started.elapsed();
            retry = Retry::after(retry, watcher.is_some(), &outcome);
            {
                let mut health = shared.health.lock().unwrap_or_else(|e| e.into_inner());
                health.last_run = Some((Instant::now(), outcome.clone()));
                if outcome == "success" {
                    health.last_success = Some(Instant::now());
                }
            }
            notify::status(&format!(
                "last run: {outcome} at {} ({:.1}s)",
                started_wall.format("%Y-%m-%d %H:%M:%S"),
                elapsed.as_secs_f64()
            ));
        }
        if due.verify && !signals.shutdown.is_cancelled() {
            verify_once(&config, &signals.shutdown, &shared).await;
        }
        if signals.shutdown.is_cancelled() {
            break;
        }
        let end = Local::now();
        // A resync or a verify that fell due in a debounce, or in work of another kind,
        // runs next; a tick that fell in a run of its own kind was covered by it.
        let next_owed = schedule::owed(schedules(&config), &seen, &end, due);
        seen = end;
        for (name, sched, runs_next) in [
            ("schedule", &config.daemon.schedule, next_owed.run.is_some()),
            (
                "resync_schedule",
                &config.daemon.resync_schedule,
                next_owed.run == Some(Mode::Resync),
            ),
            (
                "verify_schedule",
                &config.daemon.verify_schedule,
                next_owed.verify,
            ),
        ] {
            if let Some(s) = sched.as_ref().filter(|_| !runs_next) {
                let skipped = schedule::missed(s, &started_wall, &end);
                if skipped > 0 {
                    tracing::warn!(
                        skipped,
                        schedule = name,
                        "The run overran; skipped the ticks that fell inside it."
                    );
                }
            }
        }
        owed = Some(next_owed).filter(|d| d.run.is_some() || d.verify);
    }
    if let Some(w) = watcher {
        w.abort();
    }
    notify::stopping();
    // Messages under way get what is left of the grace period, not their own (up to
    // ten minutes) timeout: systemd stops the service for good soon after.
    let grace = config.daemon.shutdown_grace;
    let left = stopped_at
        .get()
        .map_or(grace, |at| grace.saturating_sub(at.elapsed()));
    if tokio::time::timeout(left, outbox.drain()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "Stopped before the webhook receiver answered: the message under way may not have been delivered."
        );
    }
    tracing::info!("The daemon stopped.");
    Ok(())
}

/// Keeps a content synchronisation search open on the directory, or polls an Active
/// Directory controller's USN every `daemon.watch_poll` (with `daemon.watch`), and
/// sends on `changed` for every change it reports. A watch that ends is opened
/// again after a backoff (1 s, doubling to a minute), and counts as a change: what
/// happened while it was closed is not known.
fn watch(config: &Config, changed: mpsc::UnboundedSender<()>) -> Option<tokio::task::JoinHandle<()>> {
    let config::SourceConfig::Ldap(ldap) = &config.source else {
        return None;
    };
    if !config.daemon.watch {
        return None;
    }
    let ldap = (**ldap).clone();
    let poll = config.daemon.watch_poll;
    tracing::info!(url = %ldap.url, "Watching the directory for changes.");
    Some(tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let opened = Instant::now();
            let tx = changed.clone();
            let ended = crate::source::ldap::watch(&ldap, poll, move || {
                let _ = tx.send(());
            })
            .await;
            if let Err(e) = ended {
                tracing::warn!(retry_in_s = backoff.as_secs(), "The directory watch ended: {e}");
            }
            let _ = changed.send(());
            if opened.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }))
}

fn schedules(config: &Config) -> Schedules<'_> {
    Schedules {
        sync: config.daemon.schedule.as_ref(),
        resync: config.daemon.resync_schedule.as_ref(),
        verify: config.daemon.verify_schedule.as_ref(),
    }
}

/// One scheduled verify, without repair: its drift goes to /metrics. A verify holds
/// the run lock like a sync, so one that finds it held is skipped, as a run is.
async fn verify_once(config: &Config, shutdown: &CancellationToken, shared: &Shared) {
    let started = Instant::now();
    let opts = verify::Options::default();
    let result = tokio::select! {
        r = verify::verify(config, &opts) => r,
        _ = shutdown.cancelled() => {
            // A verify without repair marks nothing: stopping it anywhere leaves the
            // snapshot as it was.
            tracing::info!("Stopping: the scheduled verify ends unfinished.");
            return;
        }
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(report) => {
            shared.metrics.observe_verify(&report);
            for t in &report.not_verifiable {
                tracing::debug!(target_name = %t.target, reason = %t.reason, "Did not verify the target.");
            }
            tracing::info!(
                groups = report.groups_checked,
                drifted_groups = report.drift.len(),
                drifted_members = report.drifted_members(),
                unreadable_groups = report.unreadable.len(),
                elapsed_ms,
                "Scheduled verify finished."
            );
        }
        Err(VerifyError::Lock(LockError::Held { .. })) => {
            tracing::warn!(
                "Skipped the scheduled verify: another sync (cron, a timer or a person) holds the lock."
            );
        }
        Err(e) => tracing::error!("Scheduled verify failed: {e}"),
    }
}

/// When a watched run that did not finish clean is run again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    backoff: Duration,
    /// Runs again so far, this one included.
    attempt: u32,
}

impl Retry {
    const FIRST: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(300);
    /// About 20 minutes of runs again: a failure that lasts longer (refused
    /// credentials, a rejected operation) waits for a change or the schedule.
    const ATTEMPTS: u32 = 8;

    /// The retry after a run that ended with `outcome`: with a watched directory, a
    /// run skipped for the lock, failed, or partly pushed is run again after 10 s,
    /// then twice as long each time up to 5 minutes, 8 times at most; nothing
    /// otherwise. A refused plan waits for a person, as it does on a schedule.
    fn after(last: Option<Retry>, watched: bool, outcome: &str) -> Option<Retry> {
        if !watched || !matches!(outcome, "skipped" | "error" | "source_error" | "partial") {
            return None;
        }
        let attempt = last.map_or(1, |r| r.attempt + 1);
        if attempt > Self::ATTEMPTS {
            tracing::warn!(
                outcome,
                attempts = Self::ATTEMPTS,
                "The run still did not finish clean; the next directory change or scheduled run tries again."
            );
            return None;
        }
        let backoff = last.map_or(Self::FIRST, |r| (r.backoff * 2).min(Self::MAX));
        tracing::info!(
            outcome,
            retry_in_s = backoff.as_secs(),
            attempt,
            "The run did not finish clean; running again without waiting for a directory change."
        );
        Some(Retry {
            at: Instant::now() + backoff,
            backoff,
            attempt,
        })
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(w) => tokio::time::sleep(w).await,
        None => std::future::pending().await,
    }
}

/// One scheduled run; returns its outcome word. Its webhook notifications go out in
/// `outbox` while the service goes on.
async fn run_once(
    config: &Config,
    mode: Mode,
    shutdown: &CancellationToken,
    shared: &Shared,
    outbox: &mut crate::notify::Outbox,
) -> String {
    let opts = sync::Options {
        mode,
        dry_run: false,
        target: None,
        allow_removals: false,
        wait: false,
        approve: None,
        out: None,
        warm: config.daemon.watch.then(|| shared.warm.clone()),
    };
    if !config.daemon.watch {
        shared.warm.clear();
    }
    let cancel = CancellationToken::new();
    let mut sink = std::io::sink();
    let started = Instant::now();
    let run = sync::run(config, &opts, &cancel, &NoProgress, &mut sink);
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r,
        _ = shutdown.cancelled() => {
            tracing::info!(grace_s = config.daemon.shutdown_grace.as_secs(), "Stopping: no new operations start; waiting for those in flight.");
            cancel.cancel();
            match tokio::time::timeout(config.daemon.shutdown_grace, &mut run).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("The grace period ended with requests in flight; they are not recorded and the next run repeats them.");
                    shared.metrics.observe_error("interrupted", started.elapsed());
                    return "interrupted".into();
                }
            }
        }
    };
    let elapsed = started.elapsed();
    outbox.after_run(config, &opts, result.as_ref());
    match result {
        Ok(report) => {
            let outcome = report.outcome().as_str();
            shared.metrics.observe(&report, outcome, elapsed);
            tracing::info!(outcome, mode = ?mode, elapsed_ms = elapsed.as_millis() as u64, "Scheduled run finished.");
            outcome.into()
        }
        Err(SyncError::Lock(LockError::Held { .. })) => {
            tracing::warn!(
                "Skipped the scheduled run: another sync (cron, a timer or a person) holds the lock."
            );
            shared.metrics.observe_error("skipped", elapsed);
            "skipped".into()
        }
        Err(e) => {
            tracing::error!("Scheduled run failed: {e}");
            let outcome = if matches!(e, SyncError::Source(_)) {
                "source_error"
            } else {
                "error"
            };
            shared.metrics.observe_error(outcome, elapsed);
            outcome.into()
        }
    }
}

/// Loads the config again; keeps the old one if the new one is invalid.
fn reload(path: &Path, old: Arc<Config>) -> Arc<Config> {
    notify::reloading();
    let new = match config::load(path) {
        Ok(mut new) => {
            for w in &new.warnings {
                tracing::warn!("{w}");
            }
            if new.daemon.listen != old.daemon.listen || new.state_db != old.state_db {
                tracing::warn!("`daemon.listen` and `state_db` take effect only after a restart.");
            }
            // The entries kept in memory, the health and the metrics belong to the
            // state database the service started with.
            new.state_db.clone_from(&old.state_db);
            tracing::info!("Reloaded the configuration.");
            Arc::new(new)
        }
        Err(e) => {
            tracing::error!("Kept the running configuration; the new one is invalid: {e}");
            notify::ready(
                "configuration not reloaded: the new one is invalid (see the log); running the previous one",
            );
            return old;
        }
    };
    notify::ready("configuration reloaded");
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs again after 10 s, doubling to 5 minutes, 8 times; only when watched and
    /// not clean, and not for a refused plan.
    #[test]
    fn a_watched_run_that_is_not_clean_is_run_again_eight_times() {
        let mut last = None;
        let mut backoffs = Vec::new();
        while let Some(r) = Retry::after(last, true, "partial") {
            backoffs.push(r.backoff.as_secs());
            last = Some(r);
        }
        assert_eq!(backoffs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert!(Retry::after(None, false, "partial").is_none());
        for outcome in ["success", "refused", "interrupted"] {
            assert!(Retry::after(None, true, outcome).is_none(), "{outcome}");
        }
        for outcome in ["skipped", "error", "source_error"] {
            assert!(Retry::after(None, true, outcome).is_some(), "{outcome}");
        }
    }

    #[test]
    fn health() {
        let t0 = Instant::now();
        let h = |last_run: Option<&str>, success_ago: Option<u64>, now_after: u64| {
            let now = t0 + Duration::from_secs(now_after);
            Health {
                started: t0,
                last_run: last_run.map(|o| (now, o.to_owned())),
                last_success: success_ago.map(|a| now - Duration::from_secs(a)),
                healthy_within: Duration::from_secs(600),
            }
            .check(now)
            .is_ok()
        };
        assert!(h(None, None, 10), "starting");
        assert!(!h(None, None, 700), "never ran");
        assert!(h(Some("success"), Some(0), 5000));
        assert!(h(Some("partial"), Some(300), 5000), "within the grace period");
        assert!(!h(Some("partial"), Some(900), 5000));
        assert!(!h(Some("source_error"), None, 5000));
    }
}
