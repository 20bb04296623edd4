//! Webhook notifications: the messages a run's result calls for, and their delivery.
//!
//! `messages` is pure: a run's report (or the error that stopped it) and the time and
//! host → the JSON messages to post (`removals_held`, `plan_refused`, `held_approved`,
//! `run_partial`, `run_failed`). `deliver` posts them to `[notify] webhook_url` once the run is over,
//! retrying connection errors, 429 and 5xx with the targets' backoff, all within
//! `notify.timeout`. A receiver that is down or failing costs one warning, never the
//! run's exit code: a notification reports a run, it is not part of it.
//!
//! The URL is a secret (a webhook URL often carries its token): it is used only on the
//! wire, and no log line or error names it.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Config, NotifyConfig};
use crate::sync::{Options, Report, SyncError};
use crate::target::http::{backoff, describe_transport, parse_retry_after};
use crate::target::request::{Failure, classify};
use crate::target::spec::Retry;

/// One POST to the webhook: an event and where and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Message {
    /// `event` and the event's own fields.
    #[serde(flatten)]
    pub(crate) event: Event,
    /// When the message was made (RFC 3339, UTC).
    pub(crate) at: String,
    /// The host that ran dirsync, so that a receiver serving several tells them apart.
    pub(crate) host: String,
    /// dirsync's version.
    pub(crate) dirsync: &'static str,
    /// The run's id (`dirsync audit --run`); absent when the run never started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_id: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// A target's removals and disables wait for `dirsync approve`.
    RemovalsHeld {
        held_set_id: String,
        target: String,
        removed_memberships: usize,
        disabled_users: usize,
        /// Users who left the source, not deleted (`users.removed = "delete"`).
        deleted_users: usize,
        reasons: Vec<String>,
    },
    /// `dirsync approve` sent a held set.
    HeldApproved {
        held_set_id: String,
        target: String,
        by: String,
    },
    /// A target's whole plan was refused (an empty source never removes anything):
    /// nothing was sent to it. Sent on every run that refuses, like `run_failed`.
    PlanRefused {
        target: String,
        reason: String,
        exit_code: u8,
    },
    /// Some operations failed or were left for the next run.
    RunPartial {
        exit_code: u8,
        /// The targets with something failed or not started.
        targets: Vec<PartialTarget>,
    },
    /// The run could not go ahead.
    RunFailed {
        /// The error as the log shows it (free of secrets).
        error: String,
        exit_code: u8,
    },
}

/// One target's share of a partial run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PartialTarget {
    pub(crate) target: String,
    pub(crate) planned: usize,
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
    pub(crate) not_started: usize,
    /// Entities the source data cannot build a request for that fail this run.
    pub(crate) invalid: usize,
    /// The target asked (`Retry-After`) to be left alone until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) paused_until: Option<String>,
    /// Why the target stopped early, when it refused the credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth_error: Option<String>,
}

/// Where and when messages are made: parameters, so that tests pin them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) at: String,
    pub(crate) host: String,
}

impl Origin {
    fn now() -> Origin {
        Origin {
            at: crate::store::now(),
            host: hostname(),
        }
    }
}

/// The messages a run's result calls for, in the order they are sent: each held set
/// new in this run (a set held again under its id was reported when first held), the
/// approval, then the partial outcome; or the failure. A dry run sends nothing, and
/// neither does a run that did not start because another holds the lock (that one
/// reports) or because the command named no held set (the person who typed it sees
/// why).
pub(crate) fn messages(opts: &Options, result: Result<&Report, &SyncError>, origin: &Origin) -> Vec<Message> {
    if opts.dry_run {
        return Vec::new();
    }
    let message = |event, run_id: Option<&String>| Message {
        event,
        at: origin.at.clone(),
        host: origin.host.clone(),
        dirsync: env!("CARGO_PKG_VERSION"),
        run_id: run_id.cloned(),
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let exit_code = crate::exit::of_error(e);
            if matches!(exit_code, crate::exit::LOCKED | crate::exit::USAGE) {
                return Vec::new();
            }
            let event = Event::RunFailed {
                error: e.to_string(),
                exit_code,
            };
            return vec![message(event, None)];
        }
    };
    let run_id = report.run_id.as_ref();
    let mut out = Vec::new();
    for t in &report.targets {
        let Some(held) = &t.held else { continue };
        // A held set without an id was not recorded, so there is nothing to approve;
        // one held before was reported by the run that first held it.
        let Some(id) = held.id.as_ref().filter(|_| !held.held_before) else {
            continue;
        };
        let event = Event::RemovalsHeld {
            held_set_id: id.clone(),
            target: t.name.clone(),
            removed_memberships: held.removed_memberships,
            disabled_users: held.disabled_users,
            deleted_users: held.deleted_users,
            reasons: held.reasons.clone(),
        };
        out.push(message(event, run_id));
    }
    for t in &report.targets {
        let Some(reason) = &t.refused else { continue };
        let event = Event::PlanRefused {
            target: t.name.clone(),
            reason: reason.clone(),
            exit_code: crate::exit::REFUSED,
        };
        out.push(message(event, run_id));
    }
    if let Some(a) = &report.approved {
        let event = Event::HeldApproved {
            held_set_id: a.id.clone(),
            target: a.target.clone(),
            by: a.by.clone(),
        };
        out.push(message(event, run_id));
    }
    let outcome = report.outcome();
    if outcome == crate::sync::Outcome::Partial {
        let targets = report
            .targets
            .iter()
            .filter(|t| t.failed + t.not_started + t.invalid_failing > 0)
            .map(|t| PartialTarget {
                target: t.name.clone(),
                planned: t.planned,
                succeeded: t.succeeded,
                failed: t.failed,
                not_started: t.not_started,
                invalid: t.invalid_failing,
                paused_until: t.paused_until.clone(),
                auth_error: t.auth_error.clone(),
            })
            .collect();
        let event = Event::RunPartial {
            exit_code: crate::exit::of_outcome(outcome),
            targets,
        };
        out.push(message(event, run_id));
    }
    out
}

/// Posts what the run's result calls for to the configured webhook, if there is one,
/// and returns once they are delivered or `notify.timeout` has passed.
pub async fn after_run(config: &Config, opts: &Options, result: Result<&Report, &SyncError>) {
    let Some(webhook) = &config.notify else { return };
    deliver(webhook, &messages(opts, result, &Origin::now())).await;
}

/// Deliveries under way in the service, so that a stop lets them finish.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    sending: tokio::task::JoinSet<()>,
}

impl Outbox {
    /// Starts posting what the run's result calls for; the service goes on meanwhile.
    pub(crate) fn after_run(&mut self, config: &Config, opts: &Options, result: Result<&Report, &SyncError>) {
        while self.sending.try_join_next().is_some() {}
        let Some(webhook) = config.notify.clone() else {
            return;
        };
        let messages = messages(opts, result, &Origin::now());
        if messages.is_empty() {
            return;
        }
        self.sending
            .spawn(async move { deliver(&webhook, &messages).await });
    }

    /// Waits for the deliveries under way (each ends within its timeout).
    pub(crate) async fn drain(mut self) {
        while self.sending.join_next().await.is_some() {}
    }
}

/// The retry schedule of a delivery: the deadline, not a count, ends it.
const RETRY: Retry = Retry {
    max_attempts: u32::MAX,
    initial_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(5),
    max_retry_after: Duration::from_secs(60),
};

/// Posts each message in turn, all within `webhook.timeout`. What could not be
/// delivered is logged in one warning, without the URL.
async fn deliver(webhook: &NotifyConfig, messages: &[Message]) {
    if messages.is_empty() {
        return;
    }
    let deadline = Instant::now() + webhook.timeout;
    let client = match reqwest::Client::builder()
        .connect_timeout(webhook.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dirsync/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("Sent no webhook notification: cannot create the HTTP client: {e}");
            return;
        }
    };
    let mut failed = Vec::new();
    let mut last_error = String::new();
    for m in messages {
        let event = event_name(&m.event);
        match post(&client, webhook, m, deadline).await {
            Ok(()) => tracing::debug!(event, "Delivered a webhook notification."),
            Err(e) => {
                failed.push(event);
                last_error = e;
            }
        }
    }
    if !failed.is_empty() {
        tracing::warn!(
            events = failed.join(","),
            timeout_ms = webhook.timeout.as_millis() as u64,
            "Could not deliver {} of {} webhook notification(s); the run's outcome stands: {last_error}",
            failed.len(),
            messages.len(),
        );
    }
}

/// The `event` word of a message.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::RemovalsHeld { .. } => "removals_held",
        Event::HeldApproved { .. } => "held_approved",
        Event::PlanRefused { .. } => "plan_refused",
        Event::RunPartial { .. } => "run_partial",
        Event::RunFailed { .. } => "run_failed",
    }
}

/// One message, retried until a 2xx, an answer not worth retrying, or the deadline.
/// The error says what the last attempt met, never the URL.
async fn post(
    client: &reqwest::Client,
    webhook: &NotifyConfig,
    m: &Message,
    deadline: Instant,
) -> Result<(), String> {
    let url = webhook.webhook_url.expose();
    let body = serde_json::to_vec(m).map_err(|e| format!("cannot encode the message: {e}"))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send();
        let (error, retry_after) = match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => return Err(no_answer(webhook.timeout)),
            Ok(Ok(answer)) if answer.status().is_success() => return Ok(()),
            Ok(Ok(answer)) => {
                let status = answer.status().as_u16();
                let error = format!("the receiver answered HTTP {status}");
                if classify(status) != Failure::Retryable {
                    return Err(error);
                }
                let after = answer
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                (error, after)
            }
            Ok(Err(e)) => (scrub(&describe_transport(&e), url), None),
        };
        let delay = retry_after
            .map(|d| d.min(RETRY.max_retry_after))
            .unwrap_or_else(|| backoff(&RETRY, attempt, rand::random::<f64>()));
        if Instant::now() + delay >= deadline {
            return Err(format!("{error} (after {attempt} attempt(s))"));
        }
        tracing::debug!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            "Retrying a webhook notification: {error}"
        );
        tokio::time::sleep(delay).await;
    }
}

fn no_answer(timeout: Duration) -> String {
    format!(
        "the receiver did not answer within {} (`notify.timeout`)",
        humantime::format_duration(timeout)
    )
}

/// `text` without the URL, should a transport error ever quote it.
fn scrub(text: &str, url: &str) -> String {
    text.replace(url, "***")
}

/// This machine's host name, as the kernel has it.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What `dirsync check` says about notifications: whether a webhook is configured,
/// never its URL.
pub fn describe(config: &Config) -> String {
    match &config.notify {
        Some(n) => format!(
            "notify: a webhook is configured (timeout {}; its URL is a secret and not shown)",
            humantime::format_duration(n.timeout)
        ),
        None => "notify: no webhook is configured".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Mode;
    use crate::sync::{ApprovedReport, HeldReport, TargetReport};

    fn opts(dry_run: bool) -> Options {
        Options {
            mode: Mode::Sync,
            dry_run,
            target: None,
            allow_removals: false,
            wait: false,
            approve: None,
            out: None,
            warm: None,
        }
    }

    fn origin() -> Origin {
        Origin {
            at: "2026-12-03T10:00:00.000Z".into(),
            host: "sync01".into(),
        }
    }

    fn target(name: &str) -> TargetReport {
        TargetReport {
            name: name.into(),
            planned: 3,
            succeeded: 3,
            ..TargetReport::default()
        }
    }

    fn held(id: Option<&str>) -> Option<HeldReport> {
        Some(HeldReport {
            id: id.map(str::to_owned),
            removed_memberships: 9,
            disabled_users: 1,
            deleted_users: 0,
            reasons: vec!["group `eng` would lose 9 of its 12 members".into()],
            held_before: false,
        })
    }

    fn report(targets: Vec<TargetReport>) -> Report {
        Report {
            run_id: Some("r1".into()),
            targets,
            ..Report::default()
        }
    }

    /// The messages of a report, as JSON values.
    fn check(opts: &Options, result: Result<&Report, &SyncError>, expected: serde_json::Value) {
        let got: Vec<serde_json::Value> = messages(opts, result, &origin())
            .iter()
            .map(|m| serde_json::to_value(m).expect("serializes"))
            .collect();
        assert_eq!(serde_json::Value::from(got), expected);
    }

    #[test]
    fn a_clean_run_sends_nothing() {
        check(
            &opts(false),
            Ok(&report(vec![target("a")])),
            serde_json::json!([]),
        );
    }

    /// A target whose plan an empty source refused is named with the reason; the
    /// others are not.
    #[test]
    fn a_refused_plan_is_one_message_per_target() {
        let mut a = target("a");
        a.refused = Some("the source returned 0 users and 0 groups".into());
        check(
            &opts(false),
            Ok(&report(vec![a, target("b")])),
            serde_json::json!([{
                "event": "plan_refused", "target": "a",
                "reason": "the source returned 0 users and 0 groups", "exit_code": 4,
                "at": "2026-12-03T10:00:00.000Z", "host": "sync01",
                "dirsync": env!("CARGO_PKG_VERSION"), "run_id": "r1",
            }]),
        );
    }

    #[test]
    fn each_held_set_is_one_message() {
        let mut a = target("a");
        a.held = held(Some("h1"));
        let mut b = target("b");
        b.held = held(Some("h2"));
        let version = env!("CARGO_PKG_VERSION");
        let one = |id: &str, t: &str| {
            serde_json::json!({
                "event": "removals_held", "held_set_id": id, "target": t,
                "removed_memberships": 9, "disabled_users": 1, "deleted_users": 0,
                "reasons": ["group `eng` would lose 9 of its 12 members"],
                "at": "2026-12-03T10:00:00.000Z", "host": "sync01", "dirsync": version, "run_id": "r1",
            })
        };
        let mut again = target("d");
        again.held = held(Some("h0"));
        if let Some(h) = again.held.as_mut() {
            h.held_before = true;
        }
        check(
            &opts(false),
            Ok(&report(vec![a, target("c"), b, again])),
            serde_json::json!([one("h1", "a"), one("h2", "b")]),
        );
    }

    #[test]
    fn a_dry_run_sends_nothing() {
        let mut a = target("a");
        a.held = held(None);
        a.failed = 1;
        check(&opts(true), Ok(&report(vec![a])), serde_json::json!([]));
        let e = SyncError::UnknownTarget("x".into());
        check(&opts(true), Err(&e), serde_json::json!([]));
    }

    #[test]
    fn an_approval_is_sent_with_what_failed() {
        let mut a = target("a");
        a.failed = 1;
        a.not_started = 2;
        a.paused_until = Some("2026-12-03T11:00:00.000Z".into());
        let mut r = report(vec![a, target("b")]);
        r.approved = Some(ApprovedReport {
            id: "h1".into(),
            target: "a".into(),
            by: "alice".into(),
        });
        let version = env!("CARGO_PKG_VERSION");
        check(
            &opts(false),
            Ok(&r),
            serde_json::json!([
                {
                    "event": "held_approved", "held_set_id": "h1", "target": "a", "by": "alice",
                    "at": "2026-12-03T10:00:00.000Z", "host": "sync01", "dirsync": version, "run_id": "r1",
                },
                {
                    "event": "run_partial", "exit_code": 3,
                    "targets": [{
                        "target": "a", "planned": 3, "succeeded": 3, "failed": 1, "not_started": 2,
                        "invalid": 0, "paused_until": "2026-12-03T11:00:00.000Z",
                    }],
                    "at": "2026-12-03T10:00:00.000Z", "host": "sync01", "dirsync": version, "run_id": "r1",
                },
            ]),
        );
    }

    #[test]
    fn a_failed_run_says_why_with_its_exit_code() {
        let e = SyncError::UnknownTarget("x".into());
        let version = env!("CARGO_PKG_VERSION");
        check(
            &opts(false),
            Err(&e),
            serde_json::json!([{
                "event": "run_failed", "error": "no target is named `x`", "exit_code": 5,
                "at": "2026-12-03T10:00:00.000Z", "host": "sync01", "dirsync": version,
            }]),
        );
    }

    #[test]
    fn a_held_lock_or_an_unknown_held_set_is_no_failure_to_report() {
        let held = SyncError::Lock(crate::lock::LockError::Held {
            path: "state.db".into(),
        });
        check(&opts(false), Err(&held), serde_json::json!([]));
        let unknown = SyncError::UnknownHeld("h0".into());
        check(&opts(false), Err(&unknown), serde_json::json!([]));
    }

    #[test]
    fn a_transport_error_loses_the_url() {
        let url = "https://hooks.example/T0KEN";
        assert_eq!(
            scrub(&format!("cannot connect to {url}: refused"), url),
            "cannot connect to ***: refused"
        );
    }
}
