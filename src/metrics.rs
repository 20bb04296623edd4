//! Prometheus metrics of the daemon, derived from each run's report.
//!
//! Operations by outcome are `dirsync_operations_total{target,kind,outcome}`; the
//! HTTP requests behind them are `dirsync_target_requests_total{target,outcome}`,
//! each request counted once: the answer that confirmed an operation (`success`),
//! the last answer of one that failed (`failed`), or an answer that was retried
//! (`retried`, 429s among them, also in `dirsync_throttled_total{target}`).
//! `dirsync_propagation_seconds{target}` is the time from a directory change to
//! the target's confirmation (see `sync::propagation`). A verify (`dirsync verify`,
//! on `[daemon] verify_schedule`) sets `dirsync_drift_members{target}` and
//! `dirsync_last_verify_timestamp_seconds{target}`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::sync::Report;

type Labels = Vec<(String, String)>;

/// The metrics `/metrics` serves.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    operations: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    throttled: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    propagation: Family<Labels, Histogram>,
    last_success: Gauge<f64, AtomicU64>,
    run_duration: Histogram,
    source_read: Family<Labels, Histogram>,
    source_objects: Family<Labels, Gauge>,
    invalid_entities: Family<Labels, Gauge>,
    held_removals: Family<Labels, Gauge>,
    concurrency_limit: Family<Labels, Gauge>,
    drift_members: Family<Labels, Gauge>,
    last_verify: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and returns it (a metric is a handle: both share
/// one value).
fn register<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("dirsync");
        let buckets = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        // Fields are evaluated in the order written, which is the order of the
        // exposition; the registry is moved in last, after every metric is registered.
        Metrics {
            invalid_entities: register(
                &mut r,
                "invalid_entities",
                "Entities the source data cannot build a request for, by target, in the last run",
                Family::default(),
            ),
            held_removals: register(
                &mut r,
                "held_removals",
                "Membership removals, disables and deletions held back by a safety limit, by target, in the last run",
                Family::default(),
            ),
            concurrency_limit: register(
                &mut r,
                "concurrency_limit",
                "Requests the target allowed in flight at the end of the last run (lowered by 429 and 503 answers)",
                Family::default(),
            ),
            drift_members: register(
                &mut r,
                "drift_members",
                "Memberships that differ between the target and what dirsync confirmed, by target, in the last verify",
                Family::default(),
            ),
            last_verify: register(
                &mut r,
                "last_verify_timestamp_seconds",
                "Unix time of the end of the last verify that read every group of the target back",
                Family::default(),
            ),
            runs: register(&mut r, "runs", "Runs by outcome", Family::default()),
            operations: register(
                &mut r,
                "operations",
                "Finished operations by target, kind and outcome",
                Family::default(),
            ),
            retries: register(
                &mut r,
                "retries",
                "Request attempts beyond the first, by target",
                Family::default(),
            ),
            throttled: register(
                &mut r,
                "throttled",
                "429 Too Many Requests answers, by target",
                Family::default(),
            ),
            requests: register(
                &mut r,
                "target_requests",
                "HTTP requests to a target by outcome: success (confirmed), failed (the last attempt of a failed operation), retried",
                Family::default(),
            ),
            propagation: register(
                &mut r,
                "propagation_seconds",
                "Time from a directory change (modifyTimestamp, whenChanged, a CSV file's mtime) to the target's confirmation, by target",
                Family::new_with_constructor(propagation_buckets as fn() -> Histogram),
            ),
            last_success: register(
                &mut r,
                "last_success_timestamp_seconds",
                "Unix time of the end of the last successful run",
                Gauge::default(),
            ),
            run_duration: register(&mut r, "run_duration_seconds", "Duration of runs", buckets),
            source_read: register(
                &mut r,
                "source_read_seconds",
                "Time a run took to decide how to read the source and read it, by read mode (full, incremental, unchanged)",
                Family::new_with_constructor(source_read_buckets as fn() -> Histogram),
            ),
            source_objects: register(
                &mut r,
                "source_objects",
                "Users and groups read from the source in the last run",
                Family::default(),
            ),
            registry: r,
        }
    }

    /// The end of the last successful run as the state database records it, so a
    /// restarted service does not report "never" (and page) until its first run.
    pub(crate) fn restore_last_success(&self, unix_seconds: f64) {
        self.last_success.set(unix_seconds);
    }

    /// Counts a finished run.
    pub fn observe(&self, report: &Report, outcome: &str, duration: Duration) {
        self.runs.get_or_create(&labels(&[("outcome", outcome)])).inc();
        self.run_duration.observe(duration.as_secs_f64());
        if outcome == "success" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
        if let Some(read) = &report.source_read {
            self.source_read
                .get_or_create(&labels(&[("mode", read.mode)]))
                .observe(read.seconds);
        }
        self.source_objects
            .get_or_create(&labels(&[("kind", "users")]))
            .set(report.source_users as i64);
        self.source_objects
            .get_or_create(&labels(&[("kind", "groups")]))
            .set(report.source_groups as i64);
        for t in &report.targets {
            for (kind, counts) in &t.by_kind {
                for (result, n) in [("success", counts.succeeded), ("failed", counts.failed)] {
                    if n > 0 {
                        self.operations
                            .get_or_create(&labels(&[
                                ("target", &t.name),
                                ("kind", kind),
                                ("outcome", result),
                            ]))
                            .inc_by(n as u64);
                    }
                }
            }
            let target = labels(&[("target", &t.name)]);
            for (outcome, n) in [
                ("success", t.succeeded),
                ("failed", t.failed),
                ("retried", t.retries),
            ] {
                if n > 0 {
                    self.requests
                        .get_or_create(&labels(&[("target", &t.name), ("outcome", outcome)]))
                        .inc_by(n as u64);
                }
            }
            // Created empty too, so that a target's quantiles read 0/0 (no change
            // measured) rather than no series at all.
            let histogram = self.propagation.get_or_create(&target);
            t.propagation_seconds.iter().for_each(|s| histogram.observe(*s));
            self.retries.get_or_create(&target).inc_by(t.retries as u64);
            self.throttled.get_or_create(&target).inc_by(t.throttled as u64);
            // Each run starts from the configured window: one that sent nothing (or
            // was not planned) reports it, so a past 429 does not hold the gauge low.
            if t.concurrency_limit > 0 {
                self.concurrency_limit
                    .get_or_create(&target)
                    .set(t.concurrency_limit as i64);
            }
            // A target refused by a safety limit built no requests: its count is unknown.
            if t.refused.is_none() {
                self.invalid_entities.get_or_create(&target).set(t.invalid as i64);
                let held = t
                    .held
                    .as_ref()
                    .map_or(0, |h| h.removed_memberships + h.disabled_users + h.deleted_users);
                self.held_removals.get_or_create(&target).set(held as i64);
            }
        }
    }

    /// Records what a verify found, for each target it could read back. A target
    /// with a group that could not be read keeps its last complete verify's time;
    /// one of which no group could be read (an expired token) keeps a drift no lower
    /// than before, since nothing was seen.
    pub(crate) fn observe_verify(&self, report: &crate::verify::Report) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        for t in &report.targets {
            let target = labels(&[("target", &t.target)]);
            let drift = self.drift_members.get_or_create(&target);
            let nothing_read = t.unreadable_groups > 0 && t.groups_checked == 0;
            if !nothing_read || t.drifted_members as i64 > drift.get() {
                drift.set(t.drifted_members as i64);
            }
            if t.unreadable_groups == 0 {
                self.last_verify.get_or_create(&target).set(now);
            }
        }
    }

    /// Drops the gauges of a target the configuration no longer has, so that its
    /// last held removals, invalid entities or drift do not keep an alert firing.
    /// Its counters stay: they only ever grow, and totals remain true.
    pub(crate) fn forget_target(&self, name: &str) {
        let target = labels(&[("target", name)]);
        self.invalid_entities.remove(&target);
        self.held_removals.remove(&target);
        self.concurrency_limit.remove(&target);
        self.drift_members.remove(&target);
        self.last_verify.remove(&target);
    }

    /// Counts a run that could not go ahead (source error, lock held, …).
    pub fn observe_error(&self, outcome: &str, duration: Duration) {
        self.runs.get_or_create(&labels(&[("outcome", outcome)])).inc();
        self.run_duration.observe(duration.as_secs_f64());
    }

    /// The OpenMetrics text format, which Prometheus asks for first.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text format 0.0.4, for clients that do not ask for OpenMetrics
    /// (curl, `promtool check metrics`, older scrapers).
    pub fn encode_text(&self) -> String {
        to_text_format(&self.encode())
    }
}

/// From a second (a watched change) to a day (a change that waited for a failing
/// target, or for a nightly schedule).
fn propagation_buckets() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
        86400.0,
    ])
}

/// From 10 ms (an unchanged CSV file) to about 80 s (a full read of a large directory).
fn source_read_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// OpenMetrics text → Prometheus text format 0.0.4. They differ, for the metric kinds
/// dirsync exports, in three ways: a counter's HELP and TYPE name its family without
/// `_total` in OpenMetrics and its samples in 0.0.4; 0.0.4 has no `# UNIT` lines; and
/// it has no `# EOF`.
fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{HeldReport, KindCounts, SourceReadReport, TargetReport};

    #[test]
    fn counts_come_from_the_report() {
        let m = Metrics::new();
        let mut t = TargetReport {
            name: "office".into(),
            retries: 2,
            throttled: 1,
            invalid: 4,
            concurrency_limit: 2,
            succeeded: 3,
            failed: 1,
            propagation_seconds: vec![0.5, 40.0, 90_000.0],
            held: Some(HeldReport {
                id: Some("h1".into()),
                removed_memberships: 7,
                disabled_users: 1,
                deleted_users: 0,
                reasons: vec![],
                held_before: false,
            }),
            ..TargetReport::default()
        };
        t.by_kind.insert(
            "replace_members".into(),
            KindCounts {
                succeeded: 3,
                failed: 1,
            },
        );
        let report = Report {
            source_users: 5,
            source_groups: 2,
            targets: vec![t],
            source_read: Some(SourceReadReport {
                mode: "incremental",
                seconds: 0.2,
            }),
            ..Report::default()
        };
        m.observe(&report, "partial", Duration::from_millis(300));
        let text = m.encode();
        for line in [
            "dirsync_invalid_entities{target=\"office\"} 4",
            "dirsync_held_removals{target=\"office\"} 8",
            "dirsync_concurrency_limit{target=\"office\"} 2",
            "dirsync_runs_total{outcome=\"partial\"} 1",
            "dirsync_operations_total{target=\"office\",kind=\"replace_members\",outcome=\"success\"} 3",
            "dirsync_operations_total{target=\"office\",kind=\"replace_members\",outcome=\"failed\"} 1",
            "dirsync_retries_total{target=\"office\"} 2",
            "dirsync_throttled_total{target=\"office\"} 1",
            "dirsync_source_objects{kind=\"users\"} 5",
            "dirsync_source_read_seconds_count{mode=\"incremental\"} 1",
            "dirsync_source_read_seconds_sum{mode=\"incremental\"} 0.2",
            "dirsync_target_requests_total{target=\"office\",outcome=\"success\"} 3",
            "dirsync_target_requests_total{target=\"office\",outcome=\"failed\"} 1",
            "dirsync_target_requests_total{target=\"office\",outcome=\"retried\"} 2",
            "dirsync_propagation_seconds_count{target=\"office\"} 3",
            "dirsync_propagation_seconds_bucket{le=\"1.0\",target=\"office\"} 1",
            "dirsync_propagation_seconds_bucket{le=\"60.0\",target=\"office\"} 2",
            "dirsync_propagation_seconds_bucket{le=\"86400.0\",target=\"office\"} 2",
            "dirsync_propagation_seconds_bucket{le=\"+Inf\",target=\"office\"} 3",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }

        // The target leaves the config: its gauges go, its counters stay.
        m.forget_target("office");
        let text = m.encode();
        for gone in [
            "dirsync_invalid_entities{target=\"office\"}",
            "dirsync_held_removals{target=\"office\"}",
            "dirsync_concurrency_limit{target=\"office\"}",
        ] {
            assert!(!text.contains(gone), "`{gone}` still in\n{text}");
        }
        assert!(
            text.contains("dirsync_retries_total{target=\"office\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn text_format_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.observe_error("source_error", Duration::from_millis(20));
        let text = m.encode_text();
        for line in [
            "# HELP dirsync_runs_total Runs by outcome.",
            "# TYPE dirsync_runs_total counter",
            "dirsync_runs_total{outcome=\"source_error\"} 1",
            "# TYPE dirsync_run_duration_seconds histogram",
            "# TYPE dirsync_last_success_timestamp_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("# EOF") && !text.contains("# UNIT "), "{text}");
        assert!(!text.contains("# TYPE dirsync_runs counter"), "{text}");
        assert!(m.encode().ends_with("# EOF\n"));
    }

    #[test]
    fn a_verify_sets_the_drift_and_stamps_only_targets_read_completely() {
        use crate::verify::{Report, TargetSummary};
        let m = Metrics::new();
        let drift = |target: &str, n: usize| {
            let text = m.encode_text();
            let line = format!("dirsync_drift_members{{target=\"{target}\"}} {n}\n");
            assert!(text.contains(&line), "missing `{line}` in\n{text}");
        };
        let summary = |target: &str, drifted_members, unreadable_groups| TargetSummary {
            target: target.into(),
            groups_checked: 4,
            drifted_groups: 1,
            drifted_members,
            unreadable_groups,
        };
        let report = Report {
            targets: vec![summary("office", 3, 0), summary("partly", 1, 2)],
            ..Report::default()
        };
        m.observe_verify(&report);
        let text = m.encode_text();
        drift("office", 3);
        drift("partly", 1);
        assert!(
            text.contains("dirsync_last_verify_timestamp_seconds{target=\"office\"} "),
            "{text}"
        );
        assert!(
            !text.contains("dirsync_last_verify_timestamp_seconds{target=\"partly\"}"),
            "{text}"
        );

        // A verify that could read no group (an expired token) does not lower the
        // drift: it saw nothing. One that read some groups sets what it found.
        let nothing = |target: &str| TargetSummary {
            target: target.into(),
            groups_checked: 0,
            drifted_groups: 0,
            drifted_members: 0,
            unreadable_groups: 4,
        };
        let report = |office| Report {
            targets: vec![office, nothing("partly")],
            ..Report::default()
        };
        m.observe_verify(&report(nothing("office")));
        drift("office", 3);
        drift("partly", 1);
        m.observe_verify(&report(summary("office", 0, 1)));
        drift("office", 0);
    }
}
