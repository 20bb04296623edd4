//! Building requests and judging responses: the pure half of the HTTP target.
//!
//! Given an endpoint's spec, its compiled templates and an operation, `build` returns
//! the exact request to send. `fingerprint` hashes it with secrets masked, which is
//! what the snapshot compares. `build` also applies the endpoint's validations, so an
//! entity whose request the target would refuse is reported and skipped before
//! anything is sent. `judge` reads a response into a verdict, with any drift between
//! what was sent and what the answer shows. Nothing here touches the network, so every
//! rule is tested with plain values.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::mapping::{DesiredGroup, DesiredUser, entities_not_in};
use crate::model::{Attrs, User};
use crate::target::spec::{
    BodyFormat, Condition, Endpoint, MemberId, ResponseEcho, ResponseMembers, Spec, SuccessRule, Validation,
};
use crate::template::{Kind, Templates};

/// A request, ready to send, without the auth (added on the wire only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: reqwest::Method,
    /// Path and query relative to the base URL, already encoded.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub accept: Option<String>,
    pub body: String,
}

/// Whether templates see the real secrets (to send) or placeholders (to fingerprint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Real,
    Masked,
}

/// The request could not be built: a template failed, or rendered an invalid body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// What a template sees of a user.
///
/// The contexts are views that borrow the desired state: rendering 10,000 group
/// requests does not first copy 300,000 member ids into `serde_json::Value`s (and
/// free them again). Fields are declared in name order, the order a template's
/// `tojson` prints a map in.
#[derive(Debug, Serialize)]
pub struct UserView<'a> {
    pub attrs: &'a Attrs,
    pub display_name: &'a Option<String>,
    pub email: &'a Option<String>,
    pub enabled: bool,
    pub first_name: &'a Option<String>,
    pub id: &'a str,
    pub last_name: &'a Option<String>,
    pub phone: &'a Option<String>,
    pub source_id: &'a str,
    pub username: &'a str,
}

pub fn user_view<'a>(target_id: &'a str, user: &'a User) -> UserView<'a> {
    UserView {
        attrs: &user.attrs,
        display_name: &user.display_name,
        email: &user.email,
        enabled: user.enabled,
        first_name: &user.first_name,
        id: target_id,
        last_name: &user.last_name,
        phone: &user.phone,
        source_id: &user.id,
        username: &user.username,
    }
}

#[derive(Debug, Serialize)]
pub struct GroupView<'a> {
    pub attrs: &'a Attrs,
    pub id: &'a str,
    pub name: &'a str,
    pub source_id: &'a str,
    pub source_name: &'a str,
}

#[derive(Debug, Serialize)]
pub struct TargetView<'a> {
    pub name: &'a str,
}

/// Template context of a group-members request: `group`, `members`, `member_users`
/// (when the endpoint reads them), `secrets`, `target` and `vars`.
#[derive(Debug, Serialize)]
pub struct GroupContext<'a> {
    pub group: GroupView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_users: Option<Vec<UserView<'a>>>,
    pub members: &'a BTreeSet<String>,
    pub secrets: BTreeMap<&'a str, Cow<'a, str>>,
    pub target: TargetView<'a>,
    pub vars: &'a serde_json::Map<String, Value>,
}

/// Template context of an update-user request: `user`, `secrets`, `target`, `vars`.
#[derive(Debug, Serialize)]
pub struct UserContext<'a> {
    pub secrets: BTreeMap<&'a str, Cow<'a, str>>,
    pub target: TargetView<'a>,
    pub user: UserView<'a>,
    pub vars: &'a serde_json::Map<String, Value>,
}

fn secrets_view(spec: &Spec, secrets: Secrets) -> BTreeMap<&str, Cow<'_, str>> {
    spec.secrets
        .iter()
        .map(|(name, s)| {
            let v = match secrets {
                Secrets::Real => Cow::Borrowed(s.expose()),
                Secrets::Masked => Cow::Owned(format!("<secret:{name}>")),
            };
            (name.as_str(), v)
        })
        .collect()
}

/// `members` is the group's whole list for a replace, or the members an add or remove
/// request carries.
pub fn group_context<'a>(
    spec: &'a Spec,
    ep: &Endpoint,
    target: &'a str,
    group: &'a DesiredGroup,
    members: &'a BTreeSet<String>,
    users: &'a BTreeMap<String, DesiredUser>,
    secrets: Secrets,
) -> GroupContext<'a> {
    let member_users = ep.uses_member_users.then(|| {
        members
            .iter()
            .filter_map(|id| users.get(id).map(|u| user_view(id, &u.user)))
            .collect()
    });
    GroupContext {
        group: GroupView {
            attrs: &group.attrs,
            id: &group.id,
            name: &group.name,
            source_id: &group.source_id,
            source_name: &group.source_name,
        },
        member_users,
        members,
        secrets: secrets_view(spec, secrets),
        target: TargetView { name: target },
        vars: &spec.vars,
    }
}

pub fn user_context<'a>(
    spec: &'a Spec,
    target: &'a str,
    user: &'a DesiredUser,
    secrets: Secrets,
) -> UserContext<'a> {
    UserContext {
        secrets: secrets_view(spec, secrets),
        target: TargetView { name: target },
        user: user_view(&user.id, &user.user),
        vars: &spec.vars,
    }
}

/// Renders the endpoint's templates with `ctx` into a request.
pub fn build<C: Serialize>(templates: &Templates, ep: &Endpoint, ctx: &C) -> Result<Request, BuildError> {
    let ctx = crate::template::context(ctx);
    let render = |part: &str, kind: Kind| {
        templates
            .render_value(&ep.template(part), kind, &ctx)
            .map_err(|e| BuildError(e.to_string()))
    };
    let mut path_and_query = render("path", Kind::Url)?;
    if !path_and_query.starts_with('/') {
        path_and_query.insert(0, '/');
    }
    let mut query = Vec::new();
    for name in &ep.query {
        // A parameter that renders empty is left out: optional parameters (the
        // admin-user group API's `responseFields`) are set by giving their var a value.
        let value = render(&format!("query.{name}"), Kind::Text)?;
        if !value.is_empty() {
            query.push((name.clone(), value));
        }
    }
    if !query.is_empty() {
        let encoded = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        path_and_query.push(if path_and_query.contains('?') { '&' } else { '?' });
        path_and_query.push_str(&encoded);
    }
    let mut headers = Vec::new();
    for name in &ep.headers {
        let value = render(&format!("header.{name}"), Kind::Text)?;
        // Checked here, so that an entity whose data no header can carry is invalid
        // source data, not a request that fails every run.
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(BuildError(format!(
                "header `{name}`: the value holds a character a header cannot carry (a line break or another control character)"
            )));
        }
        headers.push((name.clone(), value));
    }
    let body = render("body", ep.format.template_kind())?;
    // A read (GET by default) or a delete sends no body unless its template renders one.
    let well_formed = match ep.format {
        _ if body.is_empty() && ep.kind.body_optional() => Ok(()),
        BodyFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(&body)
            .map(drop)
            .map_err(|e| e.to_string()),
        BodyFormat::Xml => check_xml(&body),
    };
    if let Err(e) = well_formed {
        let (template, format) = (ep.template("body"), ep.format.name());
        return Err(BuildError(format!(
            "template `{template}` rendered invalid {format}: {e}"
        )));
    }
    if !ep.validations.is_empty() {
        let doc = parse_body(&body).unwrap_or(Value::Null);
        for v in &ep.validations {
            validate(v, &doc).map_err(BuildError)?;
        }
    }
    Ok(Request {
        method: ep.method.clone(),
        path_and_query,
        headers,
        content_type: ep.content_type.clone(),
        accept: ep.accept.clone(),
        body,
    })
}

/// Checks every value `v.pointer` designates in the rendered body.
fn validate(v: &Validation, doc: &Value) -> Result<(), String> {
    for (path, value) in resolve(doc, &v.pointer) {
        let text = value.map(text).unwrap_or_default();
        // The regex engine gives up on pathological backtracking: that is a failure too.
        if v.pattern.is_match(&text).unwrap_or(false) {
            continue;
        }
        let what = if text.is_empty() {
            "missing".to_owned()
        } else {
            format!("{text:?}")
        };
        return Err(match &v.message {
            Some(m) => format!("{m} (`{path}` is {what})"),
            None => format!(
                "`{path}` is {what}, which does not match `{}`",
                v.pattern.as_str()
            ),
        });
    }
    Ok(())
}

/// The values a pointer designates, each with its concrete path; a `*` segment
/// stands for every item of an array (or value of an object). A path that leads
/// nowhere yields `None`, so that a required value that is absent is still checked.
fn resolve<'a>(doc: &'a Value, pointer: &str) -> Vec<(String, Option<&'a Value>)> {
    let mut current = vec![(String::new(), Some(doc))];
    for seg in pointer.split('/').skip(1) {
        let mut next = Vec::new();
        for (path, value) in current {
            match (seg, value) {
                ("*", Some(Value::Array(items))) => next.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{path}/{i}"), Some(item))),
                ),
                ("*", Some(Value::Object(map))) => {
                    next.extend(map.iter().map(|(k, item)| (format!("{path}/{k}"), Some(item))))
                }
                // XML makes a single repeated element a plain value, not a list.
                ("*", Some(Value::Null)) => {}
                ("*", Some(item)) => next.push((path, Some(item))),
                (_, Some(v)) => next.push((format!("{path}/{seg}"), v.pointer(&format!("/{seg}")))),
                (_, None) => next.push((format!("{path}/{seg}"), None)),
            }
        }
        current = next;
    }
    current
}

/// The first value a pointer (with `*` segments, see `resolve`) designates. Answer
/// pointers use it, so that `/*/UserGroup` reads an XML answer whose root element's
/// name the document does not give.
pub fn find<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    resolve(doc, pointer).into_iter().find_map(|(_, v)| v)
}

/// A value as text: strings as they are, null as "", anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Well-formedness of an XML body: tags balanced and properly nested.
fn check_xml(body: &str) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_str(body);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(quick_xml::events::Event::Empty(_)) if depth == 0 => roots += 1,
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if depth != 0 || roots != 1 {
        return Err("expected exactly one root element".into());
    }
    Ok(())
}

/// The hash the snapshot keeps: method, path, query and body, secrets masked.
pub fn fingerprint(req: &Request) -> String {
    let mut h = Sha256::new();
    h.update(req.method.as_str().as_bytes());
    h.update(b" ");
    h.update(req.path_and_query.as_bytes());
    h.update(b"\n");
    h.update(req.body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// How a failed response is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// 401: the credentials are wrong; retrying does not help, and every further
    /// request only risks locking the account.
    Auth,
    /// 408, 429, 5xx but 501, or a transport error: worth another attempt.
    Retryable,
    /// Anything else: the target refused this request as it is (a 403 included:
    /// the caller may not do this one thing, say edit the account's owner).
    Rejected,
}

/// What a response means.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success {
        drift: Option<Drift>,
        /// The answer confirmed, but lacks something the endpoint says it echoes, so
        /// drift could not be checked: worth an operator's look, not a failure.
        warning: Option<String>,
    },
    Failure {
        kind: Failure,
        message: String,
    },
}

/// What came back, as far as judging it needs.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// The `Content-Type` header, when the answer has one.
    pub content_type: Option<&'a str>,
    /// The body, with every configured secret already redacted.
    pub body: &'a str,
}

/// What the answer shows differently from what was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// Members sent, but not in the target's answer (silently skipped).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub missing: BTreeSet<String>,
    /// Members in the target's answer, but not sent.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub unexpected: BTreeSet<String>,
    /// Echoed fields whose value differs from the one sent.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldDrift>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.fields.is_empty()
    }
}

/// One echoed field that differs: the value sent and the value answered, as text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldDrift {
    pub sent: String,
    pub answered: String,
}

/// What was sent, as far as judging the answer needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent<'a> {
    /// The member ids sent (group requests), for `response_members`.
    pub members: Option<&'a BTreeSet<String>>,
    /// The body sent, secrets masked, for `response_echo`.
    pub body: Option<&'a str>,
}

/// Classifies a status outside the success range.
pub fn classify(status: u16) -> Failure {
    match status {
        401 => Failure::Auth,
        408 | 429 => Failure::Retryable,
        501 => Failure::Rejected,
        500..=599 => Failure::Retryable,
        _ => Failure::Rejected,
    }
}

/// Judges a response. `sent` is what was sent, for drift detection.
pub fn judge(ep: &Endpoint, answer: &Answer<'_>, sent: Sent<'_>) -> Verdict {
    let status = answer.status;
    let parsed = parse_body(answer.body);
    let detail = || error_message(ep, parsed.as_ref()).unwrap_or_else(|| excerpt(answer.body));
    if !ep.success.status.contains(&status) {
        let detail = detail();
        let message = if detail.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {detail}")
        };
        return Verdict::Failure {
            kind: classify(status),
            message,
        };
    }
    if let Some(problem) = not_a_confirmation(&ep.success, answer) {
        return Verdict::Failure {
            kind: Failure::Retryable,
            message: format!("HTTP {status} is not a confirmation: {problem}"),
        };
    }
    for cond in &ep.success.conditions {
        let found = |pointer| parsed.as_ref().and_then(|p| find(p, pointer));
        let (ok, pointer) = match cond {
            Condition::Equals { pointer, value } => (found(pointer) == Some(value), pointer),
            Condition::Empty { pointer } => {
                let empty = found(pointer).is_none_or(|v| v.is_null() || v.as_str() == Some(""));
                (empty, pointer)
            }
        };
        if !ok {
            return Verdict::Failure {
                kind: Failure::Rejected,
                message: format!("HTTP {status} but `{pointer}` says it failed: {}", detail()),
            };
        }
    }
    let mut drift = Drift::default();
    let mut missing = Vec::new();
    // 204 No Content promises no body, so there is no echo to miss.
    let echoes = status != 204;
    if let (Some(rm), Some(sent)) = (&ep.response_members, sent.members) {
        match parsed.as_ref().and_then(|doc| answered_members(rm, doc)) {
            Some(got) => {
                drift.missing = entities_not_in(sent, &got).cloned().collect();
                drift.unexpected = entities_not_in(&got, sent)
                    .map(|id| untrusted(id, MAX_ID_LEN))
                    .collect();
            }
            None if echoes => missing.push(format!("`{}` (the members)", rm.pointers.join("` or `"))),
            None => {}
        }
    }
    if let (Some(echo), Some(sent)) = (&ep.response_echo, sent.body) {
        match parsed.as_ref().and_then(|doc| find(doc, &echo.pointer)) {
            Some(got) if !got.is_null() => drift.fields = echo_drift(echo, sent, got),
            _ if echoes => missing.push(format!("`{}` (the echoed fields)", echo.pointer)),
            _ => {}
        }
    }
    if let Some(echo) = ep
        .response_echo
        .as_ref()
        .filter(|e| e.fail && !drift.fields.is_empty())
    {
        let fields = drift
            .fields
            .iter()
            .map(|(name, d)| format!("`{name}` is {:?}, not {:?} as sent", d.answered, d.sent))
            .collect::<Vec<_>>()
            .join(", ");
        return Verdict::Failure {
            kind: Failure::Rejected,
            message: format!(
                "HTTP {status} but the answer at `{}` differs: {fields}",
                echo.pointer
            ),
        };
    }
    let warning = (!missing.is_empty()).then(|| {
        format!(
            "the answer confirmed but has no {}, so drift cannot be checked: {}",
            missing.join(" and no "),
            excerpt(answer.body)
        )
    });
    Verdict::Success {
        drift: (!drift.is_empty()).then_some(drift),
        warning,
    }
}

/// Why a 2xx answer does not confirm what the endpoint says a success looks like, if
/// it does not: the wrong media type, an empty body, or a body that does not parse
/// as the declared format (an HTML login page counts as not XML).
fn not_a_confirmation(rule: &SuccessRule, answer: &Answer<'_>) -> Option<String> {
    if answer.status == 204 {
        return None;
    }
    if let Some(want) = &rule.content_type {
        let got = answer.content_type.map(media_type);
        if got.as_deref() != Some(want.as_str()) {
            let got = got.map_or_else(
                || "no Content-Type".to_owned(),
                |g| format!("`{}`", untrusted(&g, 100)),
            );
            return Some(format!(
                "expected a `{want}` answer, got {got}: {}",
                shown(answer.body)
            ));
        }
    }
    let format = rule.body?;
    let name = format.name();
    let body = answer.body.trim();
    if body.is_empty() {
        return Some(format!("expected a {name} body, got an empty one"));
    }
    let parses = match format {
        BodyFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok(),
        BodyFormat::Xml => {
            body.starts_with('<')
                && xml_to_json(body).is_some_and(|doc| {
                    doc.as_object()
                        .is_some_and(|roots| !roots.keys().any(|k| k.eq_ignore_ascii_case("html")))
                })
        }
    };
    (!parses).then(|| format!("expected a {name} body, got: {}", shown(body)))
}

/// `type/subtype` of a Content-Type value, lowercase, without parameters.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// An excerpt of an answer body, or a note that it was empty.
fn shown(body: &str) -> String {
    match excerpt(body) {
        e if e.is_empty() => "an empty body".to_owned(),
        e => format!("`{e}`"),
    }
}

/// The member ids an answer shows, or `None` when it does not show them. Items
/// without an id are left out: an echo is a check, not the record.
fn answered_members(rm: &ResponseMembers, doc: &Value) -> Option<BTreeSet<String>> {
    let (_, found) = member_list(rm, doc)?;
    let id = |item: &Value| member_id(rm.id.as_ref(), item);
    match found {
        Value::Array(items) => Some(items.iter().filter_map(id).collect()),
        Value::Null => Some(BTreeSet::new()),
        // XML makes a list of one a plain element.
        single => id(single).map(|m| BTreeSet::from([m])),
    }
}

/// The first of `rm`'s pointers that `doc` holds, and what it holds there.
fn member_list<'r, 'd>(rm: &'r ResponseMembers, doc: &'d Value) -> Option<(&'r str, &'d Value)> {
    rm.pointers.iter().find_map(|p| {
        let found = find(doc, p).or_else(|| {
            // XML writes an empty list as an empty element (`<Ids/>`), which has no
            // item element for the pointer's last step: that is an empty list too.
            let (parent, _) = p.rsplit_once('/')?;
            find(doc, parent)
                .filter(|v| v.is_null() || v.as_str() == Some(""))
                .map(|_| &Value::Null)
        })?;
        Some((p.as_str(), found))
    })
}

/// The member id of one item of a member list.
fn member_id(id: Option<&MemberId>, item: &Value) -> Option<String> {
    match (id, item) {
        (Some(MemberId::Field(f)), Value::Object(o)) => o.get(f).and_then(scalar),
        (Some(MemberId::Pointer(p)), item) => find(item, p).and_then(scalar),
        (None, v) => scalar(v),
        _ => None,
    }
}

/// Why an answer does not hold the members where `ResponseMembers` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("the answer is neither JSON nor XML: {0}")]
    NotParsed(String),
    #[error("the answer has nothing at {pointers}: {excerpt}")]
    NoList { pointers: String, excerpt: String },
    #[error("`{pointer}` holds {found}, not a list of members")]
    NotAList { pointer: String, found: &'static str },
    #[error("item {index} of `{pointer}` has no member id {at}: {item}")]
    NoId {
        pointer: String,
        /// Counted from 0, as a JSON pointer counts.
        index: usize,
        at: String,
        item: String,
    },
}

/// The members a group holds, read strictly from a `ReadGroup` answer: the list must
/// be where a pointer says and every item must hold an id, or the read is an error
/// that names the pointer (a partial list would be reported as members removed).
pub fn read_members(rm: &ResponseMembers, body: &str) -> Result<BTreeSet<String>, MembersError> {
    let doc = parse_body(body).ok_or_else(|| MembersError::NotParsed(shown(body)))?;
    let Some((pointer, found)) = member_list(rm, &doc) else {
        return Err(MembersError::NoList {
            pointers: rm
                .pointers
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            excerpt: shown(body),
        });
    };
    let xml = body.trim_start().starts_with('<');
    let items = match found {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        // XML makes a list of one a plain element; JSON has arrays for lists.
        single if xml => std::slice::from_ref(single),
        other => {
            return Err(MembersError::NotAList {
                pointer: pointer.to_owned(),
                found: kind_of(other),
            });
        }
    };
    let mut out = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let Some(id) = member_id(rm.id.as_ref(), item) else {
            return Err(MembersError::NoId {
                pointer: pointer.to_owned(),
                index,
                at: match &rm.id {
                    Some(id) => format!("at {}", id.describe()),
                    None => "(a string or a number)".to_owned(),
                },
                item: excerpt(&item.to_string()),
            });
        };
        out.insert(id);
    }
    Ok(out)
}

/// A JSON value's kind, for messages.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Echoed fields whose answered value differs from the sent one. A field the answer
/// leaves out is not drift: the answer just does not say.
fn echo_drift(echo: &ResponseEcho, sent_body: &str, got: &Value) -> BTreeMap<String, FieldDrift> {
    let mut out = BTreeMap::new();
    let sent_doc = parse_body(sent_body);
    let Some(sent) = sent_doc.as_ref().and_then(|d| find(d, &echo.request_pointer)) else {
        return out;
    };
    for field in &echo.fields {
        let (Some(s), Some(g)) = (sent.get(field), got.get(field)) else {
            continue;
        };
        let (s, g) = (text(s), text(g));
        let same_guid = matches!(
            (uuid::Uuid::parse_str(&s), uuid::Uuid::parse_str(&g)),
            (Ok(a), Ok(b)) if a == b
        );
        let same_text = s == g || (echo.ignore_case && s.to_lowercase() == g.to_lowercase());
        if !same_text && !same_guid {
            let answered = untrusted(&g, MAX_FIELD_LEN);
            out.insert(field.clone(), FieldDrift { sent: s, answered });
        }
    }
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON body as JSON; an XML body as JSON of its elements (`<A><B>x</B></A>` is
/// `{"A": {"B": "x"}}`), so that one pointer syntax serves both formats.
pub fn parse_body(body: &str) -> Option<Value> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('<') {
        xml_to_json(trimmed)
    } else if trimmed.is_empty() {
        None
    } else {
        serde_json::from_str(trimmed).ok()
    }
}

fn xml_to_json(body: &str) -> Option<Value> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    // Stack of (element name, children object, text).
    let mut stack: Vec<(String, serde_json::Map<String, Value>, String)> =
        vec![(String::new(), serde_json::Map::new(), String::new())];
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                stack.push((name, serde_json::Map::new(), String::new()));
            }
            Event::Empty(e) => {
                let name = e.local_name().as_ref().to_owned();
                insert_child(&mut stack.last_mut()?.1, name, Value::Null);
            }
            Event::Text(t) => stack.last_mut()?.2.push_str(&t.html_content()),
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().ok()? {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r.html_content())?.to_owned(),
                };
                stack.last_mut()?.2.push_str(&text);
            }
            Event::CData(c) => stack.last_mut()?.2.push_str(&c.html_content()),
            Event::End(_) => {
                let (name, children, text) = stack.pop()?;
                let value = if children.is_empty() {
                    Value::String(text.trim().to_owned())
                } else {
                    Value::Object(children)
                };
                insert_child(&mut stack.last_mut()?.1, name, value);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let (_, root, _) = stack.pop()?;
    Some(Value::Object(root))
}

/// Repeated elements become an array.
fn insert_child(map: &mut serde_json::Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn error_message(ep: &Endpoint, parsed: Option<&Value>) -> Option<String> {
    let doc = parsed?;
    let parts: Vec<String> = ep
        .error_message
        .iter()
        .filter_map(|p| find(doc, p))
        .map(text)
        .filter(|t| !t.is_empty())
        .collect();
    (!parts.is_empty()).then(|| untrusted(&parts.join(": "), MAX_MESSAGE_LEN))
}

/// The most of a target's error text kept in a message (log line, audit row).
pub const MAX_MESSAGE_LEN: usize = 2048;
/// The most of one answered field value kept in a drift record.
const MAX_FIELD_LEN: usize = 512;
/// The most of one answered member id kept in a drift record.
const MAX_ID_LEN: usize = 256;

/// The start of a response body, on one line, for error messages.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let short = match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    };
    untrusted(&short, MAX_MESSAGE_LEN)
}

pub(crate) use crate::text::untrusted;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::spec::EndpointKind;

    /// The snapshot keeps this text: a different one for the same request would push
    /// every group again after an upgrade.
    #[test]
    fn a_fingerprint_is_the_sha256_of_method_path_and_body_in_lowercase_hex() {
        let req = Request {
            method: reqwest::Method::PUT,
            path_and_query: "/api/2.0/group/g1/members".into(),
            headers: vec![("x-ignored".into(), "headers are not part of it".into())],
            content_type: "application/json".into(),
            accept: None,
            body: r#"{"members": ["u1"]}"#.into(),
        };
        // printf 'PUT /api/2.0/group/g1/members\n{"members": ["u1"]}' | sha256sum
        assert_eq!(
            fingerprint(&req),
            "9ab94affbcd384971b3e5c9850e6a4cfab457198311757e0f2403d745672785e"
        );
    }
    use crate::target::spec::SuccessRule;
    use serde_json::json;

    fn endpoint(conditions: Vec<Condition>, errors: &[&str]) -> Endpoint {
        Endpoint {
            kind: EndpointKind::GroupMembers,
            method: reqwest::Method::POST,
            query: vec![],
            headers: vec![],
            format: BodyFormat::Json,
            content_type: "application/json".into(),
            accept: None,
            success: SuccessRule {
                status: 200..=299,
                conditions,
                body: None,
                content_type: None,
            },
            error_message: errors.iter().map(|s| (*s).to_owned()).collect(),
            response_members: Some(ResponseMembers {
                pointers: vec!["/members".into()],
                id: Some(MemberId::Field("id".into())),
            }),
            response_echo: None,
            validations: vec![],
            uses_member_users: false,
        }
    }

    /// The contexts templates see, spelled out: the views must serialize to exactly
    /// this (a changed key or value would change every fingerprint, and every group
    /// would be pushed again once).
    #[test]
    fn contexts_hold_what_templates_read() {
        let spec = Spec {
            base_url: reqwest::Url::parse("http://127.0.0.1:1/").expect("a URL"),
            timeout: std::time::Duration::from_secs(1),
            concurrency: 1,
            concurrency_increase_after: 10,
            rate_limit: None,
            max_consecutive_failures: 1,
            max_members_per_request: 100,
            retry: crate::target::spec::Retry::default(),
            auth: crate::target::spec::Auth::None,
            secrets: [("key".to_owned(), crate::config::Secret::new("s3cret"))].into(),
            vars: json!({ "scope": 7 }).as_object().cloned().unwrap_or_default(),
            endpoints: BTreeMap::new(),
            scim: None,
        };
        let mut user = User::new("src-1", "ann");
        user.email = Some("ann@example.com".into());
        user.attrs.insert("dn".into(), "uid=ann".into());
        let users: BTreeMap<String, DesiredUser> = [(
            "t-1".to_owned(),
            DesiredUser {
                id: "t-1".into(),
                user,
            },
        )]
        .into();
        let mut attrs = Attrs::new();
        attrs.insert("dn".into(), "cn=staff".into());
        let group = DesiredGroup {
            id: "g-1".into(),
            name: "Staff".into(),
            source_id: "src-g".into(),
            source_name: "staff".into(),
            members: ["t-1".to_owned(), "t-2".to_owned()].into(),
            attrs,
        };
        let ann = json!({
            "id": "t-1", "source_id": "src-1", "username": "ann", "email": "ann@example.com",
            "display_name": null, "first_name": null, "last_name": null, "phone": null,
            "enabled": true, "attrs": { "dn": "uid=ann" },
        });
        let mut ep = endpoint(vec![], &[]);
        let ctx = |ep: &Endpoint, secrets| {
            serde_json::to_value(group_context(
                &spec,
                ep,
                "office",
                &group,
                &group.members,
                &users,
                secrets,
            ))
            .expect("serializes")
        };
        let common = json!({
            "group": { "id": "g-1", "name": "Staff", "source_id": "src-g", "source_name": "staff", "attrs": { "dn": "cn=staff" } },
            "members": ["t-1", "t-2"],
            "secrets": { "key": "<secret:key>" },
            "target": { "name": "office" },
            "vars": { "scope": 7 },
        });
        assert_eq!(ctx(&ep, Secrets::Masked), common);
        ep.uses_member_users = true;
        let mut with_users = common.clone();
        with_users["member_users"] = json!([ann]);
        with_users["secrets"] = json!({ "key": "s3cret" });
        assert_eq!(ctx(&ep, Secrets::Real), with_users);

        let desired = &users["t-1"];
        let got = serde_json::to_value(user_context(&spec, "office", desired, Secrets::Masked))
            .expect("serializes");
        assert_eq!(
            got,
            json!({ "user": ann, "secrets": { "key": "<secret:key>" }, "target": { "name": "office" }, "vars": { "scope": 7 } })
        );
    }

    fn check(ep: &Endpoint, status: u16, body: &str, expected: &str) {
        check_typed(ep, status, None, body, expected);
    }

    /// Like `check`, with the answer's Content-Type; a warning shows as `ok (warning: …)`.
    fn check_typed(ep: &Endpoint, status: u16, content_type: Option<&str>, body: &str, expected: &str) {
        let sent: BTreeSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        let sent = Sent {
            members: Some(&sent),
            body: None,
        };
        let answer = Answer {
            status,
            content_type,
            body,
        };
        let got = match judge(ep, &answer, sent) {
            Verdict::Success { drift: None, warning } => match warning {
                None => "ok".to_owned(),
                Some(w) => format!("ok (warning: {w})"),
            },
            Verdict::Success { drift: Some(d), .. } => format!("drift -{:?} +{:?}", d.missing, d.unexpected),
            Verdict::Failure { kind, message } => format!("{kind:?}: {message}"),
        };
        assert_eq!(got, expected, "status {status} body {body}");
    }

    /// Issue 15: a 2xx that does not parse as what the endpoint declares is a retried
    /// failure, never a confirmation; one that parses but lacks the echo is a warning.
    #[test]
    fn a_2xx_that_is_not_a_confirmation() {
        let mut ep = endpoint(vec![], &["/message"]);
        ep.success.body = Some(BodyFormat::Json);
        check(&ep, 200, r#"{"members":[{"id":"a"},{"id":"b"}]}"#, "ok");
        check(
            &ep,
            200,
            "<html>\n<body>Sign in</body></html>",
            "Retryable: HTTP 200 is not a confirmation: expected a JSON body, got: `<html> <body>Sign in</body></html>`",
        );
        check(
            &ep,
            200,
            "",
            "Retryable: HTTP 200 is not a confirmation: expected a JSON body, got an empty one",
        );
        check(
            &ep,
            200,
            r#"{"members": [}"#,
            "Retryable: HTTP 200 is not a confirmation: expected a JSON body, got: `{\"members\": [}`",
        );
        check(&ep, 204, "", "ok");
        check(
            &ep,
            200,
            r#"{"id": "g"}"#,
            "ok (warning: the answer confirmed but has no `/members` (the members), so drift cannot be checked: {\"id\": \"g\"})",
        );
        ep.success.body = Some(BodyFormat::Xml);
        check(
            &ep,
            200,
            "<G/>",
            "ok (warning: the answer confirmed but has no `/members` (the members), so drift cannot be checked: <G/>)",
        );
        check(
            &ep,
            200,
            "<HTML><body>proxy</body></HTML>",
            "Retryable: HTTP 200 is not a confirmation: expected a XML body, got: `<HTML><body>proxy</body></HTML>`",
        );
        ep.success.body = None;
        ep.success.content_type = Some("application/json".into());
        check_typed(
            &ep,
            200,
            Some("application/json; charset=utf-8"),
            r#"{"members":[{"id":"a"},{"id":"b"}]}"#,
            "ok",
        );
        check_typed(
            &ep,
            200,
            Some("text/html"),
            "<p>hi</p>",
            "Retryable: HTTP 200 is not a confirmation: expected a `application/json` answer, got `text/html`: `<p>hi</p>`",
        );
        check_typed(
            &ep,
            200,
            None,
            "",
            "Retryable: HTTP 200 is not a confirmation: expected a `application/json` answer, got no Content-Type: an empty body",
        );
    }

    /// The group-members API may wrap its answer in `{"status": 0, "response": …}`.
    #[test]
    fn members_echoed_inside_an_envelope() {
        let mut ep = endpoint(vec![], &[]);
        ep.response_members = Some(ResponseMembers {
            pointers: vec!["/members".into(), "/response/members".into()],
            id: Some(MemberId::Field("id".into())),
        });
        check(
            &ep,
            200,
            r#"{"status":0,"response":{"members":[{"id":"a"},{"id":"b"}]}}"#,
            "ok",
        );
        check(
            &ep,
            200,
            r#"{"status":0,"response":{"members":[{"id":"a"}]}}"#,
            r#"drift -{"b"} +{}"#,
        );
        check(&ep, 200, r#"{"members":[{"id":"a"},{"id":"b"}]}"#, "ok");
    }

    #[test]
    fn target_text_cannot_forge_lines_or_grow_without_bound() {
        let long = "é".repeat(3000);
        let kept = untrusted(&long, MAX_MESSAGE_LEN);
        assert!(kept.len() < MAX_MESSAGE_LEN + 40, "{}", kept.len());
        assert!(kept.ends_with("… (6000 bytes in all)"), "{kept}");
        let ep = endpoint(vec![], &["/message"]);
        let body = format!(r#"{{"message": "line one\nFORGED line\n{}"}}"#, "y".repeat(5000));
        let Verdict::Failure { message, .. } = judge(
            &ep,
            &Answer {
                status: 400,
                content_type: None,
                body: &body,
            },
            Sent::default(),
        ) else {
            panic!("a 400 is a failure")
        };
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.starts_with("HTTP 400: line one\\nFORGED line\\n"),
            "{message}"
        );
        assert!(message.len() < MAX_MESSAGE_LEN + 60, "{}", message.len());
    }

    #[test]
    fn statuses() {
        let mut ep = endpoint(vec![], &["/message"]);
        ep.response_members = None;
        check(&ep, 200, "", "ok");
        check(&ep, 204, "", "ok");
        check(&ep, 401, "", "Auth: HTTP 401");
        check(&ep, 403, r#"{"message":"no"}"#, "Rejected: HTTP 403: no");
        check(&ep, 429, "slow down", "Retryable: HTTP 429: slow down");
        check(&ep, 503, "", "Retryable: HTTP 503");
        check(&ep, 501, "", "Rejected: HTTP 501");
        check(&ep, 400, r#"{"message":"bad id"}"#, "Rejected: HTTP 400: bad id");
        check(&ep, 408, "", "Retryable: HTTP 408");
    }

    #[test]
    fn application_errors_in_a_200() {
        let mut ep = endpoint(
            vec![Condition::Equals {
                pointer: "/IsSuccess".into(),
                value: json!(true),
            }],
            &["/Code", "/ErrorMessage"],
        );
        ep.response_members = None;
        check(&ep, 200, r#"{"IsSuccess":true}"#, "ok");
        check(
            &ep,
            200,
            r#"{"IsSuccess":false,"ErrorMessage":"locked","Code":"E42"}"#,
            "Rejected: HTTP 200 but `/IsSuccess` says it failed: E42: locked",
        );
        let mut ep = endpoint(
            vec![Condition::Empty {
                pointer: "/Error/ErrorCode".into(),
            }],
            &["/Error/ErrorCode", "/Error/ErrorReason"],
        );
        ep.response_members = None;
        check(&ep, 200, r#"{"Error":null}"#, "ok");
        check(&ep, 200, r#"{"Error":{"ErrorCode":""}}"#, "ok");
        check(
            &ep,
            200,
            r#"{"Error":{"ErrorCode":"E1","ErrorReason":"no such user"}}"#,
            "Rejected: HTTP 200 but `/Error/ErrorCode` says it failed: E1: no such user",
        );
        check(
            &ep,
            200,
            "<ResponseOfUser><Error><ErrorCode>E2</ErrorCode><ErrorReason>bad &amp; worse</ErrorReason></Error></ResponseOfUser>",
            "ok",
        );
    }

    #[test]
    fn drift_from_echoed_members() {
        let ep = endpoint(vec![], &[]);
        check(&ep, 200, r#"{"members":[{"id":"a"},{"id":"b"}]}"#, "ok");
        check(
            &ep,
            200,
            r#"{"members":[{"id":"a"},{"id":"c"}]}"#,
            r#"drift -{"b"} +{"c"}"#,
        );
        check(
            &ep,
            200,
            r#"{"name":"no members echoed"}"#,
            "ok (warning: the answer confirmed but has no `/members` (the members), so drift cannot be checked: {\"name\":\"no members echoed\"})",
        );
    }

    /// A GUID echoed in another spelling (case, braces) is the member sent; any
    /// other id compares as it is.
    #[test]
    fn a_guid_echoed_in_another_spelling_is_no_drift() {
        let ep = endpoint(vec![], &[]);
        let sent: BTreeSet<String> = ["75A5F745-F697-4418-B38D-0FE0D277E258", "u1"]
            .into_iter()
            .map(String::from)
            .collect();
        let drift = |body: &str| {
            let answer = Answer {
                status: 200,
                content_type: Some("application/json"),
                body,
            };
            let sent = Sent {
                members: Some(&sent),
                body: None,
            };
            match judge(&ep, &answer, sent) {
                Verdict::Success { drift, .. } => drift.map(|d| (d.missing, d.unexpected)),
                Verdict::Failure { message, .. } => panic!("{message}"),
            }
        };
        let echoed = |a: &str, b: &str| format!(r#"{{"members":[{{"id":"{a}"}},{{"id":"{b}"}}]}}"#);
        assert_eq!(drift(&echoed("75a5f745-f697-4418-b38d-0fe0d277e258", "u1")), None);
        assert_eq!(
            drift(&echoed("{75A5F745-F697-4418-B38D-0FE0D277E258}", "u1")),
            None
        );
        let set = |id: &str| BTreeSet::from([id.to_owned()]);
        assert_eq!(
            drift(&echoed("75a5f745-f697-4418-b38d-0fe0d277e258", "U1")),
            Some((set("u1"), set("U1")))
        );
    }

    #[test]
    fn xml_pointers() {
        let doc = parse_body(
            "<R xmlns:i=\"x\"><Error><ErrorCode>E2</ErrorCode></Error><L><I>1</I><I>2</I></L></R>",
        )
        .expect("parses");
        assert_eq!(doc.pointer("/R/Error/ErrorCode"), Some(&json!("E2")));
        assert_eq!(doc.pointer("/R/L/I"), Some(&json!(["1", "2"])));
    }

    #[test]
    fn members_echoed_in_xml_or_as_null() {
        let mut ep = endpoint(vec![], &[]);
        ep.response_members = Some(ResponseMembers {
            pointers: vec!["/G/Ids/string".into()],
            id: None,
        });
        check(
            &ep,
            200,
            "<G><Ids><string>a</string><string>b</string></Ids></G>",
            "ok",
        );
        check(
            &ep,
            200,
            "<G><Ids><string>a</string></Ids></G>",
            r#"drift -{"b"} +{}"#,
        );
        check(&ep, 200, "<G><Ids/></G>", r#"drift -{"a", "b"} +{}"#);
        ep.response_members = Some(ResponseMembers {
            pointers: vec!["/members".into()],
            id: None,
        });
        check(&ep, 200, r#"{"members": null}"#, r#"drift -{"a", "b"} +{}"#);
    }

    /// A `ReadGroup` answer, read strictly: (pointers, id, body, expected members or error).
    #[test]
    fn members_read_back() {
        let field = || Some(MemberId::Field("id".into()));
        let pointer = || Some(MemberId::Pointer("/user/id".into()));
        let cases: [(&[&str], Option<MemberId>, &str, &str); 14] = [
            (
                &["/members"],
                None,
                r#"{"members": ["a", "b", 3]}"#,
                r#"{"3", "a", "b"}"#,
            ),
            (&["/members"], None, r#"{"members": []}"#, "{}"),
            (&["/members"], None, r#"{"members": null}"#, "{}"),
            (
                &["/members"],
                field(),
                r#"{"members": [{"id": "a"}, {"id": 7}]}"#,
                r#"{"7", "a"}"#,
            ),
            (
                &["/data/members", "/members"],
                pointer(),
                r#"{"members": [{"user": {"id": "a"}}]}"#,
                r#"{"a"}"#,
            ),
            (
                &["/G/Ids/string"],
                None,
                "<G><Ids><string>a</string></Ids></G>",
                r#"{"a"}"#,
            ),
            (&["/G/Ids/string"], None, "<G><Ids/></G>", "{}"),
            (
                &["/data/members", "/members"],
                None,
                r#"{"users": []}"#,
                r#"the answer has nothing at `/data/members` or `/members`: `{"users": []}`"#,
            ),
            (
                &["/members"],
                None,
                r#"{"members": {"a": 1}}"#,
                "`/members` holds an object, not a list of members",
            ),
            (
                &["/members"],
                None,
                r#"{"members": "a"}"#,
                "`/members` holds a string, not a list of members",
            ),
            (
                &["/members"],
                field(),
                r#"{"members": [{"id": "a"}, {"name": "b"}]}"#,
                r#"item 1 of `/members` has no member id at field `id`: {"name":"b"}"#,
            ),
            (
                &["/members"],
                pointer(),
                r#"{"members": [{"user": {}}]}"#,
                r#"item 0 of `/members` has no member id at `/user/id`: {"user":{}}"#,
            ),
            (
                &["/members"],
                None,
                r#"{"members": [{"id": "a"}]}"#,
                r#"item 0 of `/members` has no member id (a string or a number): {"id":"a"}"#,
            ),
            (
                &["/members"],
                None,
                "<html",
                "the answer is neither JSON nor XML: `<html`",
            ),
        ];
        for (pointers, id, body, expected) in cases {
            let rm = ResponseMembers {
                pointers: pointers.iter().map(|p| (*p).to_owned()).collect(),
                id,
            };
            let got = match read_members(&rm, body) {
                Ok(members) => format!("{members:?}"),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, expected, "{body}");
        }
    }

    /// (pointer, pattern, body, expected error or "ok")
    #[test]
    fn validations() {
        let phone = r"^(?=.*?\d.*?\d.*?\d.*?\d.*?\d)([+]?)([\d\s\(\)-]{5,20})$";
        let cases = [
            ("/P", phone, r#"{"P": "+1 (555) 123-45"}"#, "ok"),
            ("/P", phone, r#"{"P": "12345"}"#, "ok"),
            (
                "/P",
                phone,
                r#"{"P": "1234"}"#,
                "`/P` is \"1234\", which does not match",
            ),
            ("/P", phone, r#"{"P": "(((( ))))-"}"#, "`/P` is \"(((( ))))-\""),
            ("/P", phone, r#"{"P": "12345a"}"#, "which does not match"),
            (
                "/P",
                phone,
                r#"{"P": "123456789012345678901"}"#,
                "which does not match",
            ),
            ("/P", phone, r#"{"P": null}"#, "`/P` is missing"),
            ("/P", phone, r#"{}"#, "`/P` is missing"),
            ("/U/P", phone, "<U><P>+44 20 7946 0000</P></U>", "ok"),
            ("/*/N", r"\S", r#"[{"N": "a"}, {"N": "b"}]"#, "ok"),
            ("/*/N", r"\S", r#"[{"N": "a"}, {"N": ""}]"#, "`/1/N` is missing"),
            ("/*/N", r"\S", r#"[]"#, "ok"),
            ("/0/N", r".", r#"[]"#, "`/0/N` is missing"),
        ];
        for (pointer, pattern, body, expected) in cases {
            let v = Validation {
                pointer: pointer.into(),
                pattern: fancy_regex::Regex::new(pattern).expect("valid"),
                message: None,
            };
            let doc = parse_body(body).unwrap_or(Value::Null);
            match validate(&v, &doc) {
                Ok(()) => assert_eq!(expected, "ok", "{pointer} {body}"),
                Err(e) => assert!(e.contains(expected) && expected != "ok", "{pointer} {body}: {e}"),
            }
        }
        let v = Validation {
            pointer: "/0/G".into(),
            pattern: fancy_regex::Regex::new(".").expect("valid"),
            message: Some("an empty group cannot be sent".into()),
        };
        assert_eq!(
            validate(&v, &json!([])),
            Err("an empty group cannot be sent (`/0/G` is missing)".into())
        );
    }

    #[test]
    fn drift_of_echoed_fields() {
        let mut ep = endpoint(vec![], &[]);
        ep.response_members = None;
        ep.response_echo = Some(ResponseEcho {
            pointer: "/Data/Detail".into(),
            request_pointer: String::new(),
            fields: vec!["Name".into(), "On".into(), "Id".into(), "Gone".into()],
            fail: false,
            ignore_case: false,
        });
        let sent = r#"{"Name": "a", "On": true, "Id": "4a6008e9-c171-4dcb-bb8d-9912de902dc3", "Gone": 1}"#;
        let judge_with = |answer: &str| {
            let sent = Sent {
                members: None,
                body: Some(sent),
            };
            let answer = Answer {
                status: 200,
                content_type: None,
                body: answer,
            };
            match judge(&ep, &answer, sent) {
                Verdict::Success { drift, .. } => drift.map(|d| d.fields),
                other => panic!("{other:?}"),
            }
        };
        let same = r#"{"Data": {"Detail": {"Name": "a", "On": true, "Id": "4A6008E9-C171-4DCB-BB8D-9912DE902DC3"}}}"#;
        assert_eq!(judge_with(same), None);
        let differs = r#"{"Data": {"Detail": {"Name": "b", "On": false}}}"#;
        let fields = judge_with(differs).expect("drift");
        assert_eq!(
            fields.keys().map(String::as_str).collect::<Vec<_>>(),
            ["Name", "On"]
        );
        assert_eq!(
            fields["On"],
            FieldDrift {
                sent: "true".into(),
                answered: "false".into()
            }
        );
        assert_eq!(judge_with(r#"{"Data": null}"#), None);
    }

    /// A SCIM service that answers another `userName` than the one sent changed the
    /// user's identity: a failure, with both values, not a confirmation with drift.
    #[test]
    fn a_differing_identity_field_fails_when_the_echo_says_so() {
        let mut ep = endpoint(vec![], &["/scimType", "/detail"]);
        ep.response_members = None;
        ep.response_echo = Some(ResponseEcho {
            pointer: String::new(),
            request_pointer: String::new(),
            fields: vec!["userName".into()],
            fail: true,
            ignore_case: false,
        });
        let sent = Sent {
            members: None,
            body: Some(r#"{"userName": "ann", "active": true}"#),
        };
        let answer = |status, body| Answer {
            status,
            content_type: None,
            body,
        };
        let same = r#"{"id": "1", "userName": "ann", "active": true}"#;
        assert!(matches!(
            judge(&ep, &answer(200, same), sent),
            Verdict::Success { drift: None, .. }
        ));
        let other = r#"{"id": "1", "userName": "ann2", "active": true}"#;
        assert_eq!(
            judge(&ep, &answer(200, other), sent),
            Verdict::Failure {
                kind: Failure::Rejected,
                message: "HTTP 200 but the answer at `` differs: `userName` is \"ann2\", not \"ann\" as sent"
                    .into()
            }
        );
        // With `ignore_case` (as `scim2` compares `userName`), another case is the
        // same user.
        let lower = r#"{"id": "1", "userName": "ANN", "active": true}"#;
        assert!(matches!(
            judge(&ep, &answer(200, lower), sent),
            Verdict::Failure { .. }
        ));
        if let Some(echo) = ep.response_echo.as_mut() {
            echo.ignore_case = true;
        }
        assert!(matches!(
            judge(&ep, &answer(200, lower), sent),
            Verdict::Success { drift: None, .. }
        ));
        assert!(matches!(
            judge(&ep, &answer(200, other), sent),
            Verdict::Failure { .. }
        ));
        let error = r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "409", "scimType": "uniqueness", "detail": "userName taken"}"#;
        assert_eq!(
            judge(&ep, &answer(409, error), sent),
            Verdict::Failure {
                kind: Failure::Rejected,
                message: "HTTP 409: uniqueness: userName taken".into()
            }
        );
    }

    #[test]
    fn answer_pointers_take_wildcards() {
        let doc = parse_body("<AnyRoot><UserGroup><Name>n</Name></UserGroup></AnyRoot>").expect("parses");
        assert_eq!(find(&doc, "/*/UserGroup/Name"), Some(&json!("n")));
        assert_eq!(find(&doc, "/*/Nope"), None);
        assert_eq!(find(&doc, ""), Some(&doc));
    }

    #[test]
    fn excerpt_is_short_and_one_line() {
        assert_eq!(excerpt("a\n  b\tc"), "a b c");
        assert_eq!(excerpt(&"x".repeat(300)).chars().count(), 201);
    }
}
