//! The config file's shape, as serde reads it: every key optional where a default or a
//! preset can fill it, unknown keys rejected. `config::load` validates these into the
//! typed config; presets are merged in here, key by key, before validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

/// `$mine` with every listed field it leaves out (`None`) taken from `$base`: how a
/// config table is laid over the one it overrides.
/// `fill!(v over mine: …)` is the reverse: `$v`'s fields win.
macro_rules! fill {
    ($mine:ident, $base:ident: $($field:ident),+ $(,)?) => {{
        $( $mine.$field = $mine.$field.or($base.$field); )+
        $mine
    }};
    ($over:ident over $mine:ident: $($field:ident),+ $(,)?) => {{
        $( $mine.$field = $over.$field.or($mine.$field); )+
        $mine
    }};
}
pub(crate) use fill;

/// A dirsync config file (default `/etc/dirsync/dirsync.toml`).
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dirsync config")]
pub struct RawConfig {
    /// The SQLite state database: snapshots, runs, audit log (relative to this file).
    pub state_db: Option<PathBuf>,
    /// Where the directory is read from: `kind = "csv"` or `kind = "ldap"`.
    pub source: Option<RawSource>,
    #[serde(default)]
    /// The APIs to keep in step, by name (`[targets.NAME]`).
    pub targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    /// Limits on removals and disables; each target may override them.
    pub safety: RawSafety,
    #[serde(default)]
    /// `dirsync run`: schedules, watch mode, /metrics.
    pub daemon: RawDaemon,
    /// A webhook that receives each run's events.
    pub notify: Option<RawNotify>,
}

/// `[notify]`: where run events are posted. The URL is a secret (it often carries a
/// token), so it is given the ways every secret is.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// The webhook URL written here (prefer `webhook_url_file`).
    pub webhook_url: Option<String>,
    /// A file holding the webhook URL.
    pub webhook_url_file: Option<PathBuf>,
    /// An environment variable holding the webhook URL.
    pub webhook_url_env: Option<String>,
    /// A systemd credential holding the webhook URL.
    pub webhook_url_credential: Option<String>,
    /// How long one delivery may take, retries included (default 10s).
    pub timeout: Option<String>,
}

/// `dirsync run`: schedules, shutdown, observability.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Cron expression for syncs (5 fields, or 6-7 with seconds).
    pub schedule: Option<String>,
    /// Cron expression for full resyncs.
    pub resync_schedule: Option<String>,
    /// Cron expression for `dirsync verify` (no repair): groups read back from every
    /// target that can, the drift exported as `dirsync_drift_members{target}`.
    pub verify_schedule: Option<String>,
    /// Sync once as soon as the service starts.
    pub run_at_start: Option<bool>,
    /// How long in-flight requests may take to finish on SIGTERM.
    pub shutdown_grace: Option<String>,
    /// `127.0.0.1:9187` serves /healthz and /metrics (off when absent).
    pub listen: Option<String>,
    /// /healthz stays healthy this long after the last successful run.
    pub healthy_within: Option<String>,
    /// Keep a content synchronisation search open (OpenLDAP), or poll the domain
    /// controller's USN (Active Directory), and sync soon after a change.
    pub watch: Option<bool>,
    /// How long after the first change seen a watched sync starts (default 2s).
    pub debounce: Option<String>,
    /// How often a watched Active Directory source's USN is polled (default 5s).
    pub watch_poll: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawSource {
    Csv(Box<RawCsv>),
    Ldap(crate::source::ldap::RawLdap),
}

/// CSV files: one of users, one of groups (members in a column, or in a membership file).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCsv {
    /// How old the last full read may get before a run reads everything again, even
    /// when the files are unchanged (default 24h).
    pub full_read_every: Option<String>,
    /// The users file (relative to this file).
    pub users: PathBuf,
    /// The groups file (relative to this file).
    pub groups: PathBuf,
    /// A membership file (one group and one user a row) instead of a members column.
    pub memberships: Option<PathBuf>,
    /// The field delimiter, one ASCII character (default `,`; `\t` for tabs).
    pub delimiter: Option<String>,
    /// What separates user ids in the groups file's members column (default `;`).
    pub member_separator: Option<String>,
    /// `error` (default) or `skip`: a member id the users file lacks.
    pub unknown_members: Option<String>,
    #[serde(default)]
    /// Column headers of the users file.
    pub user_columns: crate::source::csv::UserColumns,
    #[serde(default)]
    /// Column headers of the groups file.
    pub group_columns: crate::source::csv::GroupColumns,
    #[serde(default)]
    /// Column headers of the membership file.
    pub membership_columns: crate::source::csv::MembershipColumns,
}

#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSafety {
    /// Membership removals in one run above which they are held.
    pub max_removed_memberships: Option<usize>,
    /// The same limit as a share of the target's memberships.
    pub max_removed_memberships_percent: Option<f64>,
    /// User disables in one run above which they are held.
    pub max_disabled_users: Option<usize>,
    /// The same limit as a share of the target's users.
    pub max_disabled_users_percent: Option<f64>,
    /// Share of users without a target id above which the run is refused.
    pub max_unmapped_users_percent: Option<f64>,
    /// Percent limits apply only from this many memberships or users on.
    pub percent_min_count: Option<usize>,
    /// Accept a source that reads no users at all (refused by default).
    pub allow_empty_source: Option<bool>,
    /// A group with at least `per_group_min_members` members may lose at most this
    /// share of them in one run; more is held.
    pub max_removed_members_per_group_percent: Option<f64>,
    pub per_group_min_members: Option<usize>,
    /// Removals are held when the users or memberships read fall by more than this
    /// share from the last accepted read.
    pub max_source_drop_percent: Option<f64>,
    /// Target user ids or source user ids never removed nor disabled.
    pub protected_members: Option<Vec<String>>,
    /// A member absent from the source is removed only after this long ("6h").
    pub removal_delay: Option<String>,
}

/// `[[targets.NAME.groups.map]] safety = {…}`: one mapped group's own limits.
#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGroupSafety {
    pub max_removed_members_per_group_percent: Option<f64>,
    pub per_group_min_members: Option<usize>,
    pub protected_members: Option<Vec<String>>,
}

impl RawSafety {
    /// A target's own limits, each falling back to the global one.
    /// Protected members add up: the global ones and the target's own.
    pub fn or(mut self, global: &RawSafety) -> RawSafety {
        if let Some(all) = &global.protected_members {
            self.protected_members
                .get_or_insert_default()
                .extend(all.iter().cloned());
        }
        fill!(self, global: max_removed_memberships, max_removed_memberships_percent,
            max_disabled_users, max_disabled_users_percent, max_unmapped_users_percent,
            percent_min_count, allow_empty_source, max_removed_members_per_group_percent,
            per_group_min_members, max_source_drop_percent)
    }
}

/// One target. With `preset`, the preset's table is the base and every key given here
/// overrides it (`Merge`).
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A built-in API (`dirsync init --help` lists them) whose keys this table overrides.
    pub preset: Option<String>,
    /// The API's base URL, e.g. `https://api.example.com`.
    pub base_url: Option<String>,
    /// How long one request may take ("30s").
    pub timeout: Option<String>,
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
    /// After a 429 or 503 halved the requests in flight, grow back by one after this
    /// many successes in a row (default 10).
    pub concurrency_increase_after: Option<usize>,
    /// Requests per second at most (no limit when absent).
    pub rate_limit: Option<f64>,
    /// Stop the target's run after this many failed operations in a row (and a
    /// verify's reads after this many failed reads in a row).
    pub max_consecutive_failures: Option<usize>,
    /// Members one `add_members` or `remove_members` request carries at most (100).
    pub max_members_per_request: Option<usize>,
    /// Retries of failed requests.
    pub retry: Option<RawRetry>,
    /// How requests authenticate: `kind` and its secret.
    pub auth: Option<RawAuth>,
    /// Secrets for templates, `NAME` / `NAME_file` / `NAME_env` / `NAME_credential`.
    pub secrets: Option<BTreeMap<String, String>>,
    /// Plain values for templates (defaults of required fields and the like).
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub vars: Option<toml::Table>,
    /// Which source groups map to which target groups.
    pub groups: Option<RawGroups>,
    /// Which source attribute holds the target's user id.
    pub users: Option<RawUsers>,
    /// The group-members and update-user requests (a preset fills them).
    pub endpoints: Option<RawEndpoints>,
    /// This target's own limits, over the global `[safety]`.
    pub safety: Option<RawSafety>,
    /// Entities the source data cannot build a request for fail the run (exit code
    /// 3) on every run, not only when they are first seen.
    pub strict: Option<bool>,
    /// What `dirsync check` sends to show the target answers (nothing when absent).
    pub probe: Option<RawProbe>,
    /// A SCIM 2.0 service: ids it assigns, found by a filter (the `scim2` preset).
    pub scim: Option<RawScim>,
}

/// `[targets.NAME.scim]`: how a SCIM service's users and groups are found and made.
#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScim {
    /// The attribute users are found by: `userName` (default) or `externalId`; it
    /// holds the target user id the mapping gives.
    pub user_filter: Option<String>,
    /// The attribute groups are found by: `displayName` (default) or `externalId`.
    pub group_filter: Option<String>,
    /// Create a user the service does not have (POST /Users); default false.
    pub create_users: Option<bool>,
    /// Create a group the service does not have (POST /Groups); default false.
    pub create_groups: Option<bool>,
    /// Resources per page of a search (`count`), default 100.
    pub page_size: Option<usize>,
    /// Send group member changes in `/Bulk` requests when the service's
    /// `/ServiceProviderConfig` says it takes them (up to its `maxOperations` and
    /// `maxPayloadSize`); default false.
    pub bulk: Option<bool>,
}

/// `probe = { method = "GET", path = "/health" }`: an endpoint the API documents.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub method: Option<String>,
    pub path: String,
}

#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts per request, the first included.
    pub max_attempts: Option<u32>,
    /// Backoff before the first retry ("500ms").
    pub initial_delay: Option<String>,
    /// Longest backoff between attempts.
    pub max_delay: Option<String>,
    /// Longest `Retry-After` waited for within a run.
    pub max_retry_after: Option<String>,
}

/// Auth, flat so that a preset's defaults (say, the cookie name) merge with the
/// operator's secret; validation rejects keys that do not belong to the `kind`.
#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `none` (default), `bearer`, `basic`, `header`, `cookie` or `query`.
    pub kind: Option<String>,
    /// Header, cookie or query parameter name.
    pub name: Option<String>,
    /// The user name of `basic` auth.
    pub username: Option<String>,
    pub token: Option<String>,
    /// A file holding the `bearer` token.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub token_credential: Option<String>,
    pub password: Option<String>,
    /// A file holding the `basic` password.
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub password_credential: Option<String>,
    pub value: Option<String>,
    /// A file holding the header, cookie or query parameter value.
    pub value_file: Option<PathBuf>,
    pub value_env: Option<String>,
    pub value_credential: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGroups {
    #[serde(default)]
    /// Source groups mapped one by one (`[[targets.NAME.groups.map]]`).
    pub map: Vec<RawExplicitGroup>,
    #[serde(default)]
    /// Source groups mapped by a pattern on their name.
    pub rules: Vec<RawGroupRule>,
    /// A two-column CSV file: source group key → target group id.
    pub id_map_file: Option<PathBuf>,
    /// Which group field the file's first column holds: `id` (default), `name`, or
    /// the name of a group attribute.
    pub id_map_key: Option<String>,
    /// `keep` (default) or `empty`.
    pub removed: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExplicitGroup {
    /// The source group's id or name.
    pub source: String,
    /// The target's group id.
    pub target_id: String,
    /// The target group's name, for APIs whose request carries it.
    pub name: Option<String>,
    pub safety: Option<RawGroupSafety>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGroupRule {
    /// A regex on source group names.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The target group id, a template over `group` (`{{ group.name | upper }}`).
    pub target_id: String,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    /// The user field or attribute holding the target's user id.
    pub id_attribute: Option<String>,
    /// A template over `user` building the target's user id.
    pub id_template: Option<String>,
    /// A two-column CSV file: source user key → target user id.
    pub id_map_file: Option<PathBuf>,
    /// Which user field the file's first column holds (default `id`).
    pub id_map_key: Option<String>,
    /// What happens to a user who left the source: `ignore` (default), `disable`
    /// (sent once more, disabled) or `delete` (the `delete_user` endpoint).
    pub removed: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoints {
    /// The request that replaces a group's members.
    pub group_members: Option<RawEndpoint>,
    /// The request that updates one user.
    pub update_user: Option<RawEndpoint>,
    /// Adds members to a group; with `remove_members`, a changed group sends only
    /// its added and removed members.
    pub add_members: Option<RawEndpoint>,
    /// Removes members from a group.
    pub remove_members: Option<RawEndpoint>,
    /// Deletes a user who left the source (`users.removed = "delete"`); its body
    /// may be left out.
    pub delete_user: Option<RawEndpoint>,
    /// Reads the members a group holds, for `dirsync verify` (`method` defaults to
    /// GET, `body` to none); `response_members` says where the answer lists them.
    /// Its templates see `group.id` and `group.name`.
    pub read_group: Option<RawEndpoint>,
}

#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// `false` turns off an endpoint a preset offers.
    pub enabled: Option<bool>,
    /// HTTP method, e.g. `PUT`.
    pub method: Option<String>,
    /// Path under `base_url`, a template (`/groups/{{ group.id }}`).
    pub path: Option<String>,
    pub query: Option<BTreeMap<String, String>>,
    pub headers: Option<BTreeMap<String, String>>,
    /// `json` or `xml`.
    pub format: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The request body, a template.
    pub body: Option<String>,
    pub success: Option<RawSuccess>,
    /// JSON pointers tried in order for the error message of a failed response.
    pub error_message: Option<Vec<String>>,
    pub response_members: Option<RawResponseMembers>,
    pub response_echo: Option<RawResponseEcho>,
    /// Checks on the rendered body; a list given here replaces the preset's list.
    pub validate: Option<Vec<RawValidation>>,
    /// Keys that apply only when `format = "json"` (`[….json]`) or `"xml"` (`[….xml]`),
    /// so that one `format` key switches body, content type, query and answer pointers.
    pub json: Option<RawFormatVariant>,
    pub xml: Option<RawFormatVariant>,
}

/// The keys of an endpoint that may differ between its JSON and XML forms.
#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFormatVariant {
    pub query: Option<BTreeMap<String, String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: Option<String>,
    pub success: Option<RawSuccess>,
    pub error_message: Option<Vec<String>>,
    pub response_members: Option<RawResponseMembers>,
    pub response_echo: Option<RawResponseEcho>,
    pub validate: Option<Vec<RawValidation>>,
}

impl RawEndpoint {
    /// Applies the variant of the chosen format (`json` when none is chosen) over the
    /// endpoint's own keys, and drops both variants. Idempotent.
    pub fn select(mut self, format: Option<&str>) -> RawEndpoint {
        let variant = match format.unwrap_or("json") {
            "json" => self.json.take(),
            "xml" => self.xml.take(),
            _ => None,
        };
        self.json = None;
        self.xml = None;
        let Some(v) = variant else { return self };
        self.query = merge_maps(v.query, self.query);
        self.headers = merge_maps(v.headers, self.headers);
        fill!(v over self: content_type, accept, body, success, error_message, response_members,
            response_echo, validate)
    }
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResponseEcho {
    /// Where the answer holds the echoed object.
    pub pointer: String,
    /// Where the body sent holds the same object ("" for the whole body).
    #[serde(default)]
    pub request_pointer: String,
    pub fields: Vec<String>,
    /// `true`: an echoed field that differs fails the operation instead of being
    /// recorded as drift.
    #[serde(default)]
    pub fail: bool,
    /// `true`: values that differ only in letter case are the same (a SCIM
    /// `userName`, which the service may store in another case).
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawValidation {
    pub pointer: String,
    pub pattern: String,
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSuccess {
    /// Inclusive range of success statuses, `[200, 299]` by default.
    pub status: Option<[u16; 2]>,
    pub json: Option<Vec<RawCondition>>,
    /// What a success answer's body must be: `json`, `xml` or `any`. Default: the
    /// endpoint's format when it reads its answer (`json` conditions,
    /// `response_members`, `response_echo`), else `any`.
    pub body: Option<String>,
    /// The media type a success answer must carry, e.g. `application/json`.
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    pub pointer: String,
    /// The value the answer must hold at `pointer`.
    #[schemars(with = "Option<serde_json::Value>")]
    pub equals: Option<toml::Value>,
    /// `true`: the value must be absent, null or "" (an error code field, say).
    pub empty: Option<bool>,
}

/// A string, or a list of them.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResponseMembers {
    /// One pointer, or several tried in order (an answer with or without an envelope).
    pub pointer: OneOrMany,
    /// For a list of objects: the field holding the member id.
    pub id_field: Option<String>,
    /// For a list of objects: a JSON pointer into each item to the member id
    /// (`/user/id`), instead of `id_field`.
    pub id_pointer: Option<String>,
}

impl RawTarget {
    /// Fills every key not given here from the preset.
    pub fn merge(mut self, mut preset: RawTarget) -> RawTarget {
        self.auth = match (self.auth, preset.auth) {
            (Some(mine), Some(base)) if mine.kind.is_none() || mine.kind == base.kind => {
                Some(mine.merge(base))
            }
            (mine, base) => mine.or(base),
        };
        self.secrets = merge_maps(self.secrets, preset.secrets);
        self.vars = merge_maps(self.vars, preset.vars);
        self.endpoints = merge_with(self.endpoints, preset.endpoints, |mine, base| RawEndpoints {
            group_members: merge_endpoint(mine.group_members, base.group_members),
            update_user: merge_endpoint(mine.update_user, base.update_user),
            add_members: merge_endpoint(mine.add_members, base.add_members),
            remove_members: merge_endpoint(mine.remove_members, base.remove_members),
            delete_user: merge_endpoint(mine.delete_user, base.delete_user),
            read_group: merge_endpoint(mine.read_group, base.read_group),
        });
        // A table given here is laid over the preset's key by key, as endpoints are:
        // `[targets.NAME.users] removed = "disable"` keeps the preset's `id_template`.
        self.retry = merge_with(
            self.retry,
            preset.retry.take(),
            |mut mine, base| fill!(mine, base: max_attempts, initial_delay, max_delay, max_retry_after),
        );
        self.groups = merge_with(self.groups, preset.groups.take(), RawGroups::merge);
        self.users = merge_with(self.users, preset.users.take(), RawUsers::merge);
        self.safety = merge_with(self.safety, preset.safety.take(), |mut mine, base| {
            fill!(mine, base: max_removed_memberships, max_removed_memberships_percent,
                max_disabled_users, max_disabled_users_percent, max_unmapped_users_percent,
                percent_min_count, allow_empty_source, max_removed_members_per_group_percent,
                per_group_min_members, max_source_drop_percent, protected_members, removal_delay)
        });
        self.probe = merge_with(self.probe, preset.probe.take(), |mut mine, base| {
            mine.method = mine.method.or(base.method);
            mine
        });
        self.scim = merge_with(
            self.scim,
            preset.scim.take(),
            |mut mine, base| fill!(mine, base: user_filter, group_filter, create_users, create_groups, page_size, bulk),
        );
        fill!(self, preset: base_url, timeout, concurrency, concurrency_increase_after, rate_limit, max_consecutive_failures,
            max_members_per_request, strict)
    }
}

impl RawGroups {
    /// `self` over `base`, key by key; the groups mapped come from one side only, so
    /// that a mapping given here is never mixed with a preset's.
    fn merge(mut self, base: RawGroups) -> RawGroups {
        let own_mapping = !self.map.is_empty() || !self.rules.is_empty() || self.id_map_file.is_some();
        if !own_mapping {
            self.map = base.map;
            self.rules = base.rules;
            self.id_map_file = base.id_map_file;
            self.id_map_key = self.id_map_key.or(base.id_map_key);
        }
        fill!(self, base: removed)
    }
}

impl RawUsers {
    /// `self` over `base`, key by key; the target user id comes from one source
    /// (`id_attribute`, `id_template` or `id_map_file`), so one given here replaces
    /// the preset's.
    fn merge(mut self, base: RawUsers) -> RawUsers {
        let own_source =
            self.id_attribute.is_some() || self.id_template.is_some() || self.id_map_file.is_some();
        if !own_source {
            self = fill!(self, base: id_attribute, id_template, id_map_file, id_map_key);
        }
        fill!(self, base: removed)
    }
}

impl RawAuth {
    fn merge(mut self, base: RawAuth) -> RawAuth {
        fill!(self, base: kind, name, username, token, token_file, token_env, token_credential,
            password, password_file, password_env, password_credential, value, value_file,
            value_env, value_credential)
    }
}

/// `merge(mine, base)` when both sides are given, else the side that is.
fn merge_with<T>(mine: Option<T>, base: Option<T>, merge: impl FnOnce(T, T) -> T) -> Option<T> {
    match (mine, base) {
        (Some(mine), Some(base)) => Some(merge(mine, base)),
        (mine, base) => mine.or(base),
    }
}

/// Every key of both maps, with `mine`'s value where both have it.
fn merge_maps<M: IntoIterator + Extend<M::Item>>(mine: Option<M>, base: Option<M>) -> Option<M> {
    merge_with(mine, base, |mine, mut base| {
        base.extend(mine);
        base
    })
}

fn merge_endpoint(mine: Option<RawEndpoint>, base: Option<RawEndpoint>) -> Option<RawEndpoint> {
    merge_with(mine, base, |mine, base| {
        // Each side's variant of the chosen format is applied before the sides are
        // merged, so that the operator's own `body` beats the preset's `[….xml] body`.
        let format = mine.format.clone().or_else(|| base.format.clone());
        let (mut mine, mut base) = (mine.select(format.as_deref()), base.select(format.as_deref()));
        mine.query = merge_maps(mine.query, base.query.take());
        mine.headers = merge_maps(mine.headers, base.headers.take());
        mine.success = merge_with(
            mine.success,
            base.success.take(),
            |mut mine, base| fill!(mine, base: status, json, body, content_type),
        );
        fill!(mine, base: enabled, method, path, format, content_type, accept, body, success,
            error_message, response_members, response_echo, validate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> RawEndpoint {
        toml::from_str(text).expect("parses")
    }

    fn target(text: &str) -> RawTarget {
        toml::from_str(text).expect("parses")
    }

    /// A preset's table overridden by one key keeps the preset's other keys.
    #[test]
    fn a_one_key_override_keeps_the_presets_other_keys() {
        let preset = || {
            target(
                r#"
                [scim]
                user_filter = "userName"
                group_filter = "displayName"
                page_size = 50
                [users]
                id_template = "{{ user.username }}"
                [retry]
                max_attempts = 5
                initial_delay = "1s"
                [safety]
                max_disabled_users = 7
                removal_delay = "1h"
                [groups]
                removed = "empty"
                [[groups.rules]]
                match = ".*"
                target_id = "{{ group.name }}"
                "#,
            )
        };
        let merged = target(
            r#"
            [scim]
            create_users = true
            [users]
            removed = "disable"
            [retry]
            max_attempts = 1
            [safety]
            removal_delay = "0s"
            [groups]
            removed = "keep"
            "#,
        )
        .merge(preset());
        let scim = merged.scim.unwrap_or_default();
        assert_eq!(scim.create_users, Some(true));
        assert_eq!(scim.user_filter.as_deref(), Some("userName"));
        assert_eq!(scim.group_filter.as_deref(), Some("displayName"));
        assert_eq!(scim.page_size, Some(50));
        let users = merged.users.unwrap_or_default();
        assert_eq!(users.removed.as_deref(), Some("disable"));
        assert_eq!(users.id_template.as_deref(), Some("{{ user.username }}"));
        let retry = merged.retry.unwrap_or_default();
        assert_eq!(retry.max_attempts, Some(1));
        assert_eq!(retry.initial_delay.as_deref(), Some("1s"));
        let safety = merged.safety.unwrap_or_default();
        assert_eq!(safety.max_disabled_users, Some(7));
        assert_eq!(safety.removal_delay.as_deref(), Some("0s"));
        let groups = merged.groups.unwrap_or_default();
        assert_eq!(groups.removed.as_deref(), Some("keep"));
        assert_eq!(groups.rules.len(), 1);

        // The user id and the group mapping each come from one side: one given here
        // replaces the preset's, so the two never mix.
        let merged = target(
            r#"
            [users]
            id_attribute = "email"
            [[groups.map]]
            source = "staff"
            target_id = "g1"
            "#,
        )
        .merge(preset());
        let users = merged.users.unwrap_or_default();
        assert_eq!(users.id_attribute.as_deref(), Some("email"));
        assert_eq!(users.id_template, None);
        let groups = merged.groups.unwrap_or_default();
        assert_eq!((groups.map.len(), groups.rules.len()), (1, 0));
        assert_eq!(groups.removed.as_deref(), Some("empty"));
    }

    #[test]
    fn format_variant_is_applied_per_side_before_merging() {
        let preset = endpoint(
            r#"
            body = "json body"
            content_type = "application/json"
            query = { format = "json", keep = "k" }
            [xml]
            body = "xml body"
            content_type = "application/xml"
            query = { format = "xml" }
            "#,
        );
        let check = |mine: &str, body: &str, ctype: &str, format: &str| {
            let merged = merge_endpoint(Some(endpoint(mine)), Some(preset.clone())).expect("merged");
            assert_eq!(merged.body.as_deref(), Some(body), "{mine}");
            assert_eq!(merged.content_type.as_deref(), Some(ctype), "{mine}");
            let query = merged.query.unwrap_or_default();
            assert_eq!(query.get("format").map(String::as_str), Some(format), "{mine}");
            assert_eq!(query.get("keep").map(String::as_str), Some("k"), "{mine}");
        };
        check("", "json body", "application/json", "json");
        check(r#"format = "xml""#, "xml body", "application/xml", "xml");
        check(
            "format = \"xml\"\nbody = \"mine\"",
            "mine",
            "application/xml",
            "xml",
        );
        check(
            "format = \"xml\"\n[xml]\nbody = \"my xml\"",
            "my xml",
            "application/xml",
            "xml",
        );
    }

    /// `success` merges key by key: an operator's own `status` keeps the preset's
    /// conditions (an answer `IsSuccess: false` stays a failure); `json = []` drops
    /// them.
    #[test]
    fn success_keys_override_one_by_one() {
        let preset = endpoint(
            r#"
            [success]
            status = [200, 200]
            body = "json"
            json = [{ pointer = "/IsSuccess", equals = true }]
            "#,
        );
        let merged = merge_endpoint(
            Some(endpoint("[success]\nstatus = [200, 299]")),
            Some(preset.clone()),
        )
        .and_then(|e| e.success)
        .expect("success");
        assert_eq!(merged.status, Some([200, 299]));
        assert_eq!(merged.body.as_deref(), Some("json"));
        assert_eq!(merged.json.map(|j| j.len()), Some(1));
        let dropped = merge_endpoint(Some(endpoint("[success]\njson = []")), Some(preset))
            .and_then(|e| e.success)
            .expect("success");
        assert_eq!(dropped.json.map(|j| j.len()), Some(0));
    }
}
