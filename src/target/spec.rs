//! A target described as data: its endpoints, how each request is built, and how its
//! answer is judged. Presets and operator-described APIs are both values of this type,
//! built by the config layer; `target::request` and `target::http` interpret it.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::config::Secret;
use crate::template::Kind;

/// Which operation an endpoint serves. Also the template name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointKind {
    /// Replaces a group's whole member list.
    GroupMembers,
    UpdateUser,
    /// Adds the members it is given to a group (optional, beside `GroupMembers`).
    AddMembers,
    /// Removes the members it is given from a group (optional, beside `GroupMembers`).
    RemoveMembers,
    /// Deletes a user who left the source (`users.removed = "delete"`).
    DeleteUser,
    /// Reads the members a group holds (optional): `dirsync verify` compares them with
    /// the snapshot. Its templates see only `group.id` and `group.name`.
    ReadGroup,
}

impl EndpointKind {
    /// Every kind, in the order the config lists them.
    pub const ALL: [EndpointKind; 6] = [
        EndpointKind::GroupMembers,
        EndpointKind::UpdateUser,
        EndpointKind::AddMembers,
        EndpointKind::RemoveMembers,
        EndpointKind::DeleteUser,
        EndpointKind::ReadGroup,
    ];

    pub fn key(self) -> &'static str {
        match self {
            EndpointKind::GroupMembers => "group_members",
            EndpointKind::UpdateUser => "update_user",
            EndpointKind::AddMembers => "add_members",
            EndpointKind::RemoveMembers => "remove_members",
            EndpointKind::DeleteUser => "delete_user",
            EndpointKind::ReadGroup => "read_group",
        }
    }

    /// Whether the request may go without a body (a `DELETE`, a read): its body
    /// template may be left out, and a body that renders empty is sent empty.
    pub fn body_optional(self) -> bool {
        matches!(self, EndpointKind::DeleteUser | EndpointKind::ReadGroup)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Xml,
}

impl BodyFormat {
    pub fn template_kind(self) -> Kind {
        match self {
            BodyFormat::Json => Kind::Json,
            BodyFormat::Xml => Kind::Xml,
        }
    }

    /// The format's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            BodyFormat::Json => "JSON",
            BodyFormat::Xml => "XML",
        }
    }
}

/// One endpoint. Templates are compiled into the target's `Templates` under
/// `<kind>.path`, `<kind>.body`, `<kind>.query.<name>`, `<kind>.header.<name>`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub method: reqwest::Method,
    pub query: Vec<String>,
    pub headers: Vec<String>,
    pub format: BodyFormat,
    pub content_type: String,
    pub accept: Option<String>,
    pub success: SuccessRule,
    /// JSON pointers (or XML element paths) tried in order for a failure's message.
    pub error_message: Vec<String>,
    /// Where the answer echoes the resulting members, for drift detection.
    pub response_members: Option<ResponseMembers>,
    /// Where the answer echoes fields of what was sent (a user's details), for drift.
    pub response_echo: Option<ResponseEcho>,
    /// Checks on the rendered body; an entity that fails one is reported and skipped.
    pub validations: Vec<Validation>,
    /// Whether the body template reads `member_users` (so it is built only if needed).
    pub uses_member_users: bool,
}

impl Endpoint {
    pub fn template(&self, part: &str) -> String {
        format!("{}.{part}", self.kind.key())
    }
}

/// How a response is told to be a success.
#[derive(Debug, Clone)]
pub struct SuccessRule {
    pub status: RangeInclusive<u16>,
    pub conditions: Vec<Condition>,
    /// The format a success answer's body must parse as. A gateway or proxy that
    /// answers 200 with an HTML page, an empty body or truncated JSON has not
    /// forwarded the request, so such an answer is a (retried) failure, never a
    /// confirmation. `None`: the endpoint declares nothing and any 2xx confirms.
    pub body: Option<BodyFormat>,
    /// The media type a success answer must carry (`Content-Type` without parameters).
    pub content_type: Option<String>,
}

/// A condition on the parsed response body.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Equals {
        pointer: String,
        value: serde_json::Value,
    },
    Empty {
        pointer: String,
    },
}

/// Where a group answer holds the members: the ones a request resulted in (an
/// echo, for drift), or the ones a `ReadGroup` answer says the group holds.
#[derive(Debug, Clone)]
pub struct ResponseMembers {
    /// Pointers tried in order: an API may wrap the same answer in an envelope
    /// (`{"status": 0, "response": {…}}`) on some deployments and not on others.
    pub pointers: Vec<String>,
    /// Where each item holds the member id, for a list of objects; `None` for a list
    /// of plain ids.
    pub id: Option<MemberId>,
}

/// Where an item of a member list holds the member id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberId {
    /// A field of the item (`id_field = "id"`).
    Field(String),
    /// A JSON pointer into the item (`id_pointer = "/user/id"`).
    Pointer(String),
}

impl MemberId {
    /// How the config names it, for messages.
    pub fn describe(&self) -> String {
        match self {
            MemberId::Field(f) => format!("field `{f}`"),
            MemberId::Pointer(p) => format!("`{p}`"),
        }
    }
}

/// Fields the answer echoes: `fields` of the object at `pointer` in the answer are
/// compared with the same fields of the object at `request_pointer` in the body sent.
#[derive(Debug, Clone)]
pub struct ResponseEcho {
    pub pointer: String,
    pub request_pointer: String,
    pub fields: Vec<String>,
    /// A field answered differently makes the answer a failure, not drift: the
    /// target changed what identifies the entity (a SCIM `userName`).
    pub fail: bool,
    /// Values that differ only in letter case are the same.
    pub ignore_case: bool,
}

/// A check on the rendered body, before anything is sent: every value at `pointer`
/// (JSON pointer into the body, XML parsed like answers; a `*` segment means every
/// item) must match `pattern`. A missing or null value is checked as "".
#[derive(Debug, Clone)]
pub struct Validation {
    pub pointer: String,
    /// `fancy_regex`, so a document's pattern with look-around can be used verbatim.
    pub pattern: fancy_regex::Regex,
    /// Says why, in the report of a skipped entity.
    pub message: Option<String>,
}

/// How requests prove who they are.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
    Header { name: String, value: Secret },
    Cookie { name: String, value: Secret },
    Query { name: String, value: Secret },
}

impl Auth {
    /// The secret values this auth sends, for redaction.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            Auth::None => vec![],
            Auth::Bearer(s) => vec![s],
            Auth::Basic { password, .. } => vec![password],
            Auth::Header { value, .. } | Auth::Cookie { value, .. } | Auth::Query { value, .. } => {
                vec![value]
            }
        }
    }
}

/// Retry policy for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; longer waits end the attempt as failed.
    pub max_retry_after: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// Everything needed to talk to one target, secrets included.
#[derive(Debug, Clone)]
pub struct Spec {
    pub base_url: reqwest::Url,
    pub timeout: Duration,
    /// Requests in flight at most.
    pub(crate) concurrency: usize,
    /// Successes in a row after which a window lowered by 429/503 grows by one.
    pub(crate) concurrency_increase_after: usize,
    /// Requests per second at most.
    pub(crate) rate_limit: Option<f64>,
    /// Members one add or remove request carries at most: a larger change is split.
    pub(crate) max_members_per_request: usize,
    /// Failed operations in a row after which the target's run stops (an outage).
    pub(crate) max_consecutive_failures: usize,
    pub(crate) retry: Retry,
    pub(crate) auth: Auth,
    /// Secrets for templates, exposed as `secrets.NAME`.
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Plain values for templates, exposed as `vars.NAME`.
    pub(crate) vars: serde_json::Map<String, serde_json::Value>,
    pub(crate) endpoints: BTreeMap<EndpointKind, Endpoint>,
    /// A SCIM service: the ids in requests are the ones it assigned.
    pub(crate) scim: Option<Scim>,
}

impl Spec {
    /// Whether a group request gives each member's details (`member_users`).
    pub(crate) fn lists_member_details(&self) -> bool {
        self.endpoints.values().any(|e| e.uses_member_users)
    }
}

/// How a SCIM 2.0 service's users and groups are found and created. The target ids
/// the mapping gives are the values searched by; the service's own ids replace them
/// in each request as it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scim {
    /// `userName` or `externalId`.
    pub user_filter: String,
    /// `displayName` or `externalId`.
    pub group_filter: String,
    pub create_users: bool,
    pub create_groups: bool,
    /// `count` of each page of a search.
    pub page_size: usize,
    /// Group member changes go in `/Bulk` requests when the service takes them.
    pub bulk: bool,
}
