//! The HTTP target: sends what `request` builds, with auth, timeouts and retries.
//!
//! One engine for every API: a preset is only a `Spec`. Auth is added here, on the
//! wire, so it is never part of a fingerprint, a log line or an audit row; anything a
//! server echoes back is scrubbed of every configured secret before it is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderValue, RETRY_AFTER};

use crate::config::TargetConfig;
use crate::mapping::{DesiredGroup, DesiredUser};
use crate::plan::{Delta, Operation};
use crate::target::pace::{Pacer, Window};
use crate::target::request::{self, Failure, Request, Secrets, Verdict};
use crate::target::scim;
use crate::target::spec::{Auth, Endpoint, EndpointKind, Retry, Spec};
use crate::template::Templates;

/// What happened to one operation, after every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct PushOutcome {
    pub result: Result<Option<request::Drift>, PushError>,
    /// Last HTTP status seen, if any answer came.
    pub status: Option<u16>,
    pub attempts: u32,
    /// The target asked to wait longer than `retry.max_retry_after`: stop its run.
    pub stop_target: bool,
    /// How long, and for what, the target asked to be left alone when that was longer
    /// than the run waits: kept in the state database so that the next run waits too.
    pub pause: Option<Pause>,
    /// How many answers were 429 Too Many Requests.
    pub throttled: u32,
    /// A confirmation that lacked an echo the endpoint declares (see [`Verdict`]).
    pub warning: Option<String>,
    /// The kind of operation sent, when not the one planned: a SCIM service without
    /// PATCH is sent a delta as the group's whole list (`replace_members`).
    pub sent_as: Option<&'static str>,
    /// The outcome repeats the failure of a request already counted (a bulk request's
    /// operations after its first).
    pub same_request: bool,
}

impl PushOutcome {
    /// An outcome before any answer: no status, no attempt yet.
    pub(super) fn with(result: Result<Option<request::Drift>, PushError>) -> PushOutcome {
        PushOutcome {
            result,
            status: None,
            attempts: 0,
            stop_target: false,
            pause: None,
            throttled: 0,
            warning: None,
            sent_as: None,
            same_request: false,
        }
    }
}

/// A `Retry-After` longer than a run waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// The endpoint a 429 answer limits, or `None` for the whole target (a 503 says
    /// the service as a whole is unavailable).
    pub endpoint: Option<EndpointKind>,
    pub wait: Duration,
}

/// Why an operation failed. Messages are free of secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    #[error("target `{target}` refused the credentials: {message}")]
    Auth { target: String, message: String },
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Transient(String),
    #[error("cannot build the request: {0}")]
    Build(String),
}

impl PushError {
    pub fn is_auth(&self) -> bool {
        matches!(self, PushError::Auth { .. })
    }
}

/// A target could not be set up (the HTTP client, say).
#[derive(Debug, thiserror::Error)]
#[error("target `{target}`: {message}")]
pub struct TargetError {
    pub(crate) target: String,
    pub(crate) message: String,
}

/// One configured HTTP target.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub name: String,
    spec: Arc<Spec>,
    templates: Arc<Templates>,
    client: reqwest::Client,
    /// Shared by every request to this target: rate limit and `Retry-After` pauses.
    pacer: Arc<Pacer>,
    /// How many of its requests may be in flight, adapting to 429 and 503 answers.
    window: Arc<Window>,
    /// A SCIM service's ids for the entities dirsync maps, when the target is one.
    pub(super) scim: Option<Arc<scim::Ids>>,
    /// Once cancelled (the run is stopping), no request starts: not a retry, nor
    /// one waiting for its turn.
    stopping: CancellationToken,
    /// Every form of every secret an answer may echo, longest first (`redact`).
    secret_forms: Arc<[String]>,
    /// Of those, the ones scrubbed from an answer before it is judged: a shorter
    /// one would match ordinary text (`ok`) and change what the answer says.
    answer_forms: Arc<[String]>,
}

impl HttpTarget {
    pub fn new(config: &TargetConfig) -> Result<HttpTarget, TargetError> {
        let secret_forms = secret_forms_of(&config.spec);
        let client = reqwest::Client::builder()
            .timeout(config.spec.timeout)
            .connect_timeout(config.spec.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("dirsync/", env!("CARGO_PKG_VERSION")))
            // A redirect is an answer, judged like any other: followed, it would carry
            // a header credential to another server, and turn a write into a GET
            // whose 200 looks like a confirmation.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TargetError {
                target: config.name.clone(),
                message: format!("cannot create the HTTP client: {e}"),
            })?;
        Ok(HttpTarget {
            name: config.name.clone(),
            spec: Arc::new(config.spec.clone()),
            templates: Arc::clone(&config.templates),
            client,
            pacer: Arc::new(Pacer::new(config.spec.rate_limit)),
            window: Arc::new(Window::new(
                config.spec.concurrency,
                config.spec.concurrency_increase_after,
            )),
            scim: config.spec.scim.clone().map(|s| Arc::new(scim::Ids::new(s))),
            stopping: CancellationToken::new(),
            answer_forms: secret_forms
                .iter()
                .filter(|f| f.chars().count() >= MIN_SCRUBBED)
                .cloned()
                .collect(),
            secret_forms: secret_forms.into(),
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// How many requests may be in flight now (lowered by 429 and 503 answers).
    pub fn concurrency_limit(&self) -> usize {
        self.window.limit()
    }

    pub fn offers(&self, kind: EndpointKind) -> bool {
        self.spec.endpoints.contains_key(&kind)
    }

    pub(super) fn endpoint(&self, kind: EndpointKind) -> Result<&Endpoint, request::BuildError> {
        self.spec.endpoints.get(&kind).ok_or_else(|| {
            request::BuildError(format!("target `{}` has no `{}` endpoint", self.name, kind.key()))
        })
    }

    /// The request that replaces a group's whole member list, as it would be sent.
    pub fn group_request(
        &self,
        group: &DesiredGroup,
        users: &BTreeMap<String, DesiredUser>,
        secrets: Secrets,
    ) -> Result<Request, request::BuildError> {
        self.group_request_to(EndpointKind::GroupMembers, group, &group.members, users, secrets)
    }

    /// A group request to the endpoint `kind`, carrying `members`.
    pub(super) fn group_request_to(
        &self,
        kind: EndpointKind,
        group: &DesiredGroup,
        members: &BTreeSet<String>,
        users: &BTreeMap<String, DesiredUser>,
        secrets: Secrets,
    ) -> Result<Request, request::BuildError> {
        let ep = self.endpoint(kind)?;
        let ctx = request::group_context(&self.spec, ep, &self.name, group, members, users, secrets);
        request::build(&self.templates, ep, &ctx)
    }

    /// The request for a user, as it would be sent.
    pub fn user_request(&self, user: &DesiredUser, secrets: Secrets) -> Result<Request, request::BuildError> {
        self.user_request_to(EndpointKind::UpdateUser, user, secrets)
    }

    /// A user request to the endpoint `kind`.
    fn user_request_to(
        &self,
        kind: EndpointKind,
        user: &DesiredUser,
        secrets: Secrets,
    ) -> Result<Request, request::BuildError> {
        let ep = self.endpoint(kind)?;
        let ctx = request::user_context(&self.spec, &self.name, user, secrets);
        request::build(&self.templates, ep, &ctx)
    }

    /// The request an operation sends to its endpoint.
    pub(super) fn op_request(
        &self,
        op: &Operation,
        users: &BTreeMap<String, DesiredUser>,
        secrets: Secrets,
    ) -> Result<Request, request::BuildError> {
        match op {
            Operation::ReplaceMembers(g) => {
                let members = match g.delta {
                    None => &g.group.members,
                    Some(Delta::Add) => &g.added,
                    Some(Delta::Remove) => &g.removed,
                };
                self.group_request_to(endpoint_of(op), &g.group, members, users, secrets)
            }
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => {
                self.user_request_to(endpoint_of(op), &u.user, secrets)
            }
        }
    }

    /// Sends one operation, retrying what is worth retrying. The request is rendered
    /// here, with the real secrets (and, for a SCIM service, its own ids).
    pub async fn push(&self, op: &Operation, users: &BTreeMap<String, DesiredUser>) -> PushOutcome {
        match &self.scim {
            None => self.push_as_planned(op, users).await,
            Some(ids) => self.push_scim(ids, op, users).await,
        }
    }

    /// Sends an operation as it is, its ids those of the request.
    pub(super) async fn push_as_planned(
        &self,
        op: &Operation,
        users: &BTreeMap<String, DesiredUser>,
    ) -> PushOutcome {
        // A group answer that echoes the members is compared with the list the group
        // should hold once this request is applied, for a delta as for a replace.
        let sent = match op {
            Operation::ReplaceMembers(g) => Some(&g.group.members),
            Operation::UpdateUser(_) | Operation::DeleteUser(_) => None,
        };
        let (ep, req) = match (
            self.endpoint(endpoint_of(op)),
            self.op_request(op, users, Secrets::Real),
        ) {
            (Ok(ep), Ok(req)) => (ep, req),
            (Err(e), _) | (_, Err(e)) => {
                return PushOutcome::with(Err(PushError::Build(self.redact(&e.0))));
            }
        };
        // Echoed fields are compared with the masked body, so a drift row never holds
        // a secret that was sent; the answer is redacted before it is judged.
        let masked = match ep.response_echo {
            None => None,
            Some(_) => self.op_request(op, users, Secrets::Masked).ok(),
        };
        let body = masked.as_ref().map(|m| m.body.as_str());
        let sent = request::Sent { members: sent, body };
        let mut outcome = self.send_with_retries(ep, &req, sent, None).await;
        if matches!(op, Operation::DeleteUser(_)) && outcome.status == Some(404) {
            // The user the deletion is for is not there: what it asked for holds.
            outcome.result = Ok(None);
        }
        outcome
    }

    /// Starts no request once `stop` is cancelled.
    pub(crate) fn stops_with(mut self, stop: &CancellationToken) -> HttpTarget {
        self.stopping = stop.child_token();
        self
    }

    /// Sleeps `delay`, or less when the run stops; false when it stopped.
    async fn sleep_unless_stopping(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stopping.cancelled() => false,
        }
    }

    /// Waits the backoff before attempt `attempt + 1`; false when the retries are
    /// spent or the run is stopping.
    pub(super) async fn wait_to_retry(&self, attempt: u32) -> bool {
        let retry = &self.spec.retry;
        attempt < retry.max_attempts
            && !self.stopping.is_cancelled()
            && self
                .sleep_unless_stopping(backoff(retry, attempt, rand::random::<f64>()))
                .await
    }

    /// Sends `req` until it is confirmed, refused or out of attempts. With `kept_answer`,
    /// the last answer's body (secrets redacted) is left there, for a caller that
    /// reads ids out of it.
    pub(super) async fn send_with_retries(
        &self,
        ep: &Endpoint,
        req: &Request,
        sent: request::Sent<'_>,
        kept_answer: Option<&mut String>,
    ) -> PushOutcome {
        self.send_attempts(ep, req, sent, kept_answer, self.spec.retry.max_attempts)
            .await
    }

    /// `send_with_retries` with at most `max_attempts` attempts.
    pub(super) async fn send_attempts(
        &self,
        ep: &Endpoint,
        req: &Request,
        sent: request::Sent<'_>,
        mut kept_answer: Option<&mut String>,
        max_attempts: u32,
    ) -> PushOutcome {
        let retry = &self.spec.retry;
        let mut outcome = PushOutcome::with(Ok(None));
        loop {
            // A place in flight first, then the pacer's turn: the rate and any
            // Retry-After pause are checked just before the request goes out, not
            // before a wait for a place that may outlast them.
            let turn = async {
                let slot = self.window.enter().await;
                self.pacer.wait_turn().await;
                slot
            };
            let slot = tokio::select! {
                biased;
                _ = self.stopping.cancelled() => {
                    outcome.result = Err(stopped(std::mem::replace(&mut outcome.result, Ok(None))));
                    return outcome;
                }
                slot = turn => slot,
            };
            outcome.attempts += 1;
            let answer = self.send_once(req).await;
            let (verdict, retry_after) = match answer {
                Ok((code, headers, body)) => {
                    outcome.status = Some(code);
                    outcome.throttled += u32::from(code == 429);
                    let after = headers
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    // Redacted before anything reads it, so that no excerpt, message or
                    // drift value can hold a secret the target echoed, whole or cut.
                    let body = scrubbed(&body, &self.answer_forms);
                    let judged = request::Answer {
                        status: code,
                        content_type: headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                        body: &body,
                    };
                    let verdict = request::judge(ep, &judged, sent);
                    if let Some(kept) = kept_answer.as_deref_mut() {
                        *kept = body;
                    }
                    (verdict, after)
                }
                Err(NotSent { message, again }) => {
                    // The audit row tells what the last attempt met: no answer at all.
                    outcome.status = None;
                    let kind = if again {
                        Failure::Retryable
                    } else {
                        Failure::Rejected
                    };
                    (Verdict::Failure { kind, message }, None)
                }
            };
            match (&verdict, outcome.status) {
                (Verdict::Success { .. }, _) => self.window.succeeded(),
                (_, Some(429 | 503)) => {
                    self.window.throttled();
                    tracing::debug!(target_name = %self.name, limit = self.window.limit(), "Lowered the requests in flight after the target asked to slow down.");
                }
                _ => self.window.failed(),
            }
            let (kind, message) = match verdict {
                Verdict::Success { drift, warning } => {
                    outcome.result = Ok(drift);
                    outcome.warning = warning;
                    return outcome;
                }
                Verdict::Failure { kind, message } => (kind, self.redact(&message)),
            };
            let error = match kind {
                Failure::Auth => PushError::Auth {
                    target: self.name.clone(),
                    message,
                },
                Failure::Rejected => PushError::Rejected(message),
                Failure::Retryable => PushError::Transient(message),
            };
            if let Some(after) = retry_after.filter(|_| kind == Failure::Retryable) {
                if after > retry.max_retry_after {
                    // Sending sooner would ignore what the target asked; waiting longer
                    // would hold the run. Leave the rest of this target for a later run.
                    outcome.result = Err(PushError::Transient(format!(
                        "{error}; the target asked to wait {}s (Retry-After), longer than \
                         `retry.max_retry_after`",
                        after.as_secs()
                    )));
                    outcome.stop_target = true;
                    outcome.pause = Some(Pause {
                        endpoint: (outcome.status == Some(429)).then_some(ep.kind),
                        wait: after,
                    });
                    return outcome;
                }
                // Every request to this target waits, not only this one: paused
                // before this place in flight is given up to one waiting for it.
                self.pacer.pause(after).await;
            }
            drop(slot);
            if kind != Failure::Retryable || outcome.attempts >= max_attempts {
                outcome.result = Err(error);
                return outcome;
            }
            let attempts = outcome.attempts;
            // A Retry-After of zero (or a date already past) asks for no wait: the
            // backoff still spaces the attempts.
            if retry_after.is_none_or(|after| after.is_zero()) {
                let delay = backoff(retry, attempts, rand::random::<f64>());
                tracing::debug!(target_name = %self.name, attempts, delay_ms = delay.as_millis() as u64, %error, "Retrying after a transient failure.");
                // A stop ends the wait; the next turn sees it.
                self.sleep_unless_stopping(delay).await;
            } else {
                tracing::debug!(target_name = %self.name, attempts, %error, "Retrying when the target's Retry-After has passed.");
            }
            outcome.result = Err(error);
        }
    }

    /// One HTTP exchange: status, headers and body, or a transport error message.
    async fn send_once(&self, req: &Request) -> Result<(u16, reqwest::header::HeaderMap, String), NotSent> {
        let never = |message: String| NotSent {
            message,
            again: false,
        };
        // The base URL's own path is kept: `https://host/api` + `/x` is `https://host/api/x`.
        let base = self.spec.base_url.as_str().trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{}", req.path_and_query))
            .map_err(|e| never(format!("invalid request URL: {e}")))?;
        let mut builder = self
            .client
            .request(req.method.clone(), url)
            .header(CONTENT_TYPE, &req.content_type)
            .body(req.body.clone());
        if let Some(accept) = &req.accept {
            builder = builder.header(ACCEPT, accept);
        }
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match &self.spec.auth {
            Auth::None => builder,
            Auth::Bearer(token) => builder.header(
                AUTHORIZATION,
                sensitive(&format!("Bearer {}", token.expose())).map_err(never)?,
            ),
            Auth::Basic { username, password } => builder.basic_auth(username, Some(password.expose())),
            Auth::Header { name, value } => {
                builder.header(name.as_str(), sensitive(value.expose()).map_err(never)?)
            }
            Auth::Cookie { name, value } => builder.header(
                COOKIE,
                sensitive(&format!("{name}={}", value.expose())).map_err(never)?,
            ),
            Auth::Query { name, value } => builder.query(&[(name.as_str(), value.expose())]),
        };
        let not_sent = |e: reqwest::Error| NotSent {
            message: self.redact(&describe_transport(&e)),
            // A request that cannot be built never will be.
            again: !e.is_builder(),
        };
        let response = builder.send().await.map_err(not_sent)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(not_sent)?;
        Ok((status, headers, body))
    }

    /// Replaces every configured secret in `text` with `***`, then makes it safe to keep
    /// (control characters escaped, length capped: see [`request::untrusted`]).
    pub fn redact(&self, text: &str) -> String {
        request::untrusted(&self.redact_secrets(text), request::MAX_MESSAGE_LEN)
    }

    /// Replaces every configured secret in `text` with `***`, in each form a target
    /// may echo it (`secret_forms_of`).
    fn redact_secrets(&self, text: &str) -> String {
        scrubbed(text, &self.secret_forms)
    }
}

/// `text` with each of `forms` replaced by `***`.
fn scrubbed(text: &str, forms: &[String]) -> String {
    let mut out = text.to_owned();
    for form in forms {
        out = out.replace(form.as_str(), "***");
    }
    out
}

/// The shortest secret form scrubbed from an answer before it is judged; messages
/// are scrubbed of every form.
const MIN_SCRUBBED: usize = 6;

/// Every form of the target's secrets an answer may echo: each as sent in a query
/// (form-encoded) or a path (percent-encoded), escaped in JSON or XML, and a Basic
/// credential as its header carries it. Longest first, so that a form holding
/// another is replaced whole.
fn secret_forms_of(spec: &Spec) -> Vec<String> {
    let secrets = spec
        .auth
        .secrets()
        .into_iter()
        .chain(spec.secrets.values())
        .map(|s| s.expose())
        .filter(|s| !s.is_empty());
    let mut forms = BTreeSet::new();
    for s in secrets {
        forms.extend(secret_forms(s));
    }
    use base64::Engine as _;
    let basic = |username: &str, password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    };
    if let Auth::Basic { username, password } = &spec.auth {
        forms.insert(basic(username, password.expose()));
    }
    // Credentials in the base URL (`https://user:password@host`, or a token as the
    // user alone) are sent as Basic auth: they, and that header's value, are
    // secrets too (the user only when there is no password).
    let decoded = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, password) = (
        decoded(spec.base_url.username()),
        decoded(spec.base_url.password().unwrap_or_default()),
    );
    if !user.is_empty() || !password.is_empty() {
        forms.insert(basic(&user, &password));
        let secret = if password.is_empty() { &user } else { &password };
        forms.extend(secret_forms(secret));
    }
    let mut forms: Vec<String> = forms.into_iter().collect();
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

/// A secret as written raw, form-encoded (a query), percent-encoded (as a path
/// segment is, and every other character too), JSON-escaped and XML-escaped.
fn secret_forms(secret: &str) -> BTreeSet<String> {
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(secret)
        .to_owned();
    [
        Some(secret.to_owned()),
        Some(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect()),
        Some(percent_encoding::utf8_percent_encode(secret, crate::template::SEGMENT).to_string()),
        Some(percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string()),
        Some(json),
        crate::template::xml_escaped(secret),
    ]
    .into_iter()
    .flatten()
    .filter(|f| !f.is_empty())
    .collect()
}

/// The endpoint an operation is sent to.
pub(crate) fn endpoint_of(op: &Operation) -> EndpointKind {
    match op {
        Operation::ReplaceMembers(g) => match g.delta {
            None => EndpointKind::GroupMembers,
            Some(Delta::Add) => EndpointKind::AddMembers,
            Some(Delta::Remove) => EndpointKind::RemoveMembers,
        },
        Operation::UpdateUser(_) => EndpointKind::UpdateUser,
        Operation::DeleteUser(_) => EndpointKind::DeleteUser,
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| "a credential holds characters not allowed in a header".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // The URL is left out: it may carry a query-parameter credential.
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A request that got no answer: why, and whether another attempt may get one.
struct NotSent {
    message: String,
    again: bool,
}

/// What an operation that the run's stop kept from sending (again) failed with: its
/// last attempt's error, or that it was not sent.
fn stopped(last: Result<Option<request::Drift>, PushError>) -> PushError {
    match last {
        Err(e) => PushError::Transient(format!("{e}; not sent again: the run is stopping")),
        Ok(_) => PushError::Transient("not sent: the run is stopping".into()),
    }
}

/// Exponential backoff with full jitter: a uniform wait in `[0, min(cap, base·2ⁿ)]`.
/// `fraction` is the random draw in `[0, 1)`, a parameter so that tests pin it.
pub fn backoff(retry: &Retry, attempt: u32, fraction: f64) -> Duration {
    let exp = retry
        .initial_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(retry.max_delay);
    ceiling.mul_f64(fraction.clamp(0.0, 1.0))
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at: std::time::SystemTime = at.with_timezone(&chrono::Utc).into();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_forms_cover_what_a_target_may_echo() {
        let forms = secret_forms("a-b c~d\"<");
        for form in [
            "a-b c~d\"<",
            "a-b+c%7Ed%22%3C",
            "a-b%20c~d%22%3C",
            "a%2Db%20c%7Ed%22%3C",
            "a-b c~d\\\"<",
            "a-b c~d&quot;&lt;",
        ] {
            assert!(forms.contains(form), "{form} not in {forms:?}");
        }
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let r = Retry {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        let cases = [
            (1, 1.0, 100),
            (2, 1.0, 200),
            (3, 0.5, 200),
            (5, 1.0, 1000),
            (30, 1.0, 1000),
            (4, 0.0, 0),
        ];
        for (attempt, f, ms) in cases {
            assert_eq!(
                backoff(&r, attempt, f),
                Duration::from_millis(ms),
                "attempt {attempt} fraction {f}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        let later = chrono::DateTime::<chrono::Utc>::from(now + Duration::from_secs(30)).to_rfc2822();
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
