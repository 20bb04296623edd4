//! Configuration: one TOML file, read in two steps.
//!
//! `raw` is the file's shape (serde, unknown keys rejected with their line); `load`
//! then validates it into the typed `Config`: presets merged, templates compiled,
//! regexes built, secrets and id maps read. `dirsync check` runs exactly this, so a
//! config that loads is a config the run can use. Errors name the file and the key.

mod raw;
mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

pub(crate) use raw::{RawAuth, RawConfig, RawCsv, RawEndpoint, RawSafety, RawTarget, fill};
pub(crate) use secret::{Secret, SecretSource};

use crate::hold::{self, GroupLimit};
use crate::mapping::{ExplicitGroup, GroupIdMap, GroupMapping, GroupRule, UserIdSource};
use crate::plan::{RemovedGroups, RemovedUsers};
use crate::safety::Limits;
use crate::source::csv::CsvConfig;
use crate::source::ldap::LdapConfig;
use crate::target::presets;
use crate::target::spec::{
    Auth, BodyFormat, Condition, Endpoint, EndpointKind, MemberId, ResponseEcho, ResponseMembers, Retry,
    Spec, SuccessRule, Validation,
};
use crate::template::{Kind, Templates};

/// `source.full_read_every` when the config does not set it.
const DEFAULT_FULL_READ_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Where the config is read from when neither `--config` nor `DIRSYNC_CONFIG` is given.
pub(crate) const DEFAULT_PATH: &str = "/etc/dirsync/dirsync.toml";

/// The config could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub state_db: PathBuf,
    pub source: SourceConfig,
    /// SHA-256 of the validated source section (what is read and how): a change
    /// makes the next run read everything.
    pub(crate) source_hash: String,
    /// A run reads everything when the last full read is older than this.
    pub(crate) full_read_every: Duration,
    /// By name, sorted.
    pub targets: Vec<TargetConfig>,
    pub(crate) daemon: DaemonConfig,
    /// The webhook run events are posted to (`[notify]`), if any.
    pub(crate) notify: Option<NotifyConfig>,
    /// Things worth a warning at start (inline secrets, say), already worded.
    pub warnings: Vec<String>,
}

/// Settings of `dirsync run`.
#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    pub(crate) schedule: Option<cron::Schedule>,
    pub(crate) resync_schedule: Option<cron::Schedule>,
    /// When the service verifies (no repair) every target that reads groups back.
    pub(crate) verify_schedule: Option<cron::Schedule>,
    pub(crate) run_at_start: bool,
    pub(crate) shutdown_grace: Duration,
    /// Where /healthz and /metrics are served; loopback only.
    pub(crate) listen: Option<std::net::SocketAddr>,
    pub(crate) healthy_within: Duration,
    /// Sync `debounce` after a change the directory reports (`watch = true`).
    pub(crate) watch: bool,
    pub(crate) debounce: Duration,
    /// How often a watched Active Directory source's highest committed USN is read.
    pub(crate) watch_poll: Duration,
}

/// `[notify]`: a webhook that receives a JSON POST per run event (`crate::notify`).
#[derive(Debug, Clone)]
pub(crate) struct NotifyConfig {
    /// An http or https URL with a host, checked at load; a secret because a webhook
    /// URL often carries its token in the path or query.
    pub(crate) webhook_url: Secret,
    /// How long one delivery may take, retries included.
    pub(crate) timeout: Duration,
}

/// `notify.timeout` when the config does not set it.
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum SourceConfig {
    Csv(Box<CsvConfig>),
    Ldap(Box<LdapConfig>),
}

/// One target, ready to plan and push.
#[derive(Debug)]
pub struct TargetConfig {
    pub name: String,
    pub(crate) preset: Option<String>,
    pub spec: Spec,
    /// Mapping and request templates, compiled.
    pub templates: Arc<Templates>,
    pub groups: GroupMapping,
    pub(crate) removed_groups: RemovedGroups,
    pub users: UserIdSource,
    pub(crate) removed_users: RemovedUsers,
    pub limits: Limits,
    /// What holds removals besides `limits`, and who is never removed.
    pub(crate) removals: hold::Settings,
    /// Whether a source with no users or no groups may still be planned.
    pub(crate) allow_empty_source: bool,
    /// Whether entities the source data cannot build a request for fail every run,
    /// not only the run that first sees them.
    pub(crate) strict: bool,
    /// The request `dirsync check` sends; without one it only connects (TCP, TLS), so
    /// that no API sees a request its contract does not list.
    pub probe: Option<Probe>,
    /// SHA-256 of the target's section (preset and safety merged) and its group
    /// mapping (with an id-map file's content): a change re-plans the target even
    /// when the source is unchanged.
    pub(crate) config_hash: String,
}

/// An endpoint the target's API documents for health checks: `method` (GET or HEAD,
/// so it changes nothing) and `path` from the base URL. Sent without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub method: reqwest::Method,
    pub path: String,
}

/// The config path: the flag, else `DIRSYNC_CONFIG`, else the default.
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("DIRSYNC_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// The config file's JSON Schema, derived from the serde shapes so that it accepts
/// exactly the keys and types they do (values are checked by `load`): what editors
/// with a TOML language server use to complete and check keys.
pub fn schema() -> String {
    // Draft 7: the newest draft that TOML language servers (taplo) and most editors read.
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawConfig>()
        .to_value();
    drop_null(&mut schema);
    // Serializing a JSON value cannot fail.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Removes the `null` that schemars allows for every `Option`: TOML has no null, an
/// optional key is one left out, and an editor should not offer `null` as a value.
fn drop_null(schema: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(drop_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(alternatives)) = map.get("anyOf") {
        let kept: Vec<Value> = alternatives
            .iter()
            .filter(|a| a.get("type").is_none_or(|t| t != "null"))
            .cloned()
            .collect();
        if let [only] = kept.as_slice()
            && let Value::Object(inner) = only.clone()
        {
            map.remove("anyOf");
            map.extend(inner);
        }
    }
    map.values_mut().for_each(drop_null);
}

/// Reads and validates the config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read(path)?, path)
}

/// Validates config text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let (raw, ctx) = parse_raw(text, path)?;
    ctx.build(raw)
}

/// Only the state database's path: for `audit` and `status`, which read the state
/// and must work without the secrets (or the network) a run needs.
pub fn load_state_db(path: &Path) -> Result<PathBuf, ConfigError> {
    let (raw, ctx) = parse_raw(&read(path)?, path)?;
    Ok(ctx.state_db(raw.state_db))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_raw(text: &str, path: &Path) -> Result<(RawConfig, Ctx), ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: parse_message(text, &e),
    })?;
    let ctx = Ctx {
        path: path.to_owned(),
        base: path.parent().map(Path::to_owned).unwrap_or_default(),
        warnings: Default::default(),
    };
    Ok((raw, ctx))
}

/// Where a TOML error is and what it says, without quoting the file: the line it
/// is on, or a string value in the message, may be an inline secret.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = without_strings(e.message().trim_end());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// `message` with each quoted string value (serde's `string "…"`) left out.
fn without_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at + "string".len()]);
        let quoted = &rest[at + "string \"".len()..];
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(i, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(i + 1)
        });
        rest = match end {
            Some(end) => &quoted[end..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Validation state: where relative paths start, and warnings collected on the way.
struct Ctx {
    path: PathBuf,
    base: PathBuf,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Ctx {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// A path from the config, relative to the config file's directory.
    pub(crate) fn file(&self, p: &Path) -> PathBuf {
        self.base.join(p)
    }

    fn state_db(&self, configured: Option<PathBuf>) -> PathBuf {
        match configured {
            Some(p) => self.file(&p),
            None => std::env::var_os("STATE_DIRECTORY")
                .map(|d| PathBuf::from(d).join("state.db"))
                .unwrap_or_else(|| PathBuf::from("/var/lib/dirsync/state.db")),
        }
    }

    fn build(self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_db = self.state_db(raw.state_db);
        let mut source = raw
            .source
            .ok_or_else(|| self.invalid("source", "missing: say where users and groups come from"))?;
        let every = match &mut source {
            raw::RawSource::Csv(csv) => csv.full_read_every.take(),
            raw::RawSource::Ldap(ldap) => ldap.0.full_read_every.take(),
        };
        let full_read_every = self.duration(
            "source.full_read_every",
            every.as_deref(),
            DEFAULT_FULL_READ_EVERY,
        )?;
        let source = match source {
            raw::RawSource::Csv(csv) => {
                CsvConfig::from_raw(*csv, &self.base).map(|c| SourceConfig::Csv(Box::new(c)))
            }
            raw::RawSource::Ldap(ldap) => {
                LdapConfig::from_raw(ldap, &self.base).map(|c| SourceConfig::Ldap(Box::new(c)))
            }
        }
        .map_err(|(k, m)| self.invalid(format!("source.{k}"), m))?;
        if raw.targets.is_empty() {
            return Err(self.invalid("targets", "no target is configured"));
        }
        let mut targets = Vec::new();
        for (name, target) in raw.targets {
            targets.push(self.target(&name, target, &raw.safety)?);
        }
        let daemon = self.daemon(raw.daemon)?;
        if daemon.watch_poll.is_zero() {
            return Err(self.invalid("daemon.watch_poll", "must be longer than zero"));
        }
        let reads_groups = |t: &TargetConfig| {
            t.spec.scim.is_some() || t.spec.endpoints.contains_key(&EndpointKind::ReadGroup)
        };
        if daemon.verify_schedule.is_some() && !targets.iter().any(reads_groups) {
            self.warnings.borrow_mut().push(
                "`daemon.verify_schedule` is set, but no target can read its groups back \
                 (give one an `endpoints.read_group`): the scheduled verify checks nothing"
                    .into(),
            );
        }
        let notify = raw.notify.map(|n| self.notify(n)).transpose()?;
        if daemon.watch && !matches!(&source, SourceConfig::Ldap(_)) {
            return Err(self.invalid(
                "daemon.watch",
                "needs an LDAP source: OpenLDAP with the syncprov overlay, or Active Directory; \
                 CSV sources run on the schedule",
            ));
        }
        // The validated form: paths resolved against the config's directory, defaults
        // filled in. `Secret`s print `***`, so no secret is part of the hash.
        let source_hash = crate::source::token::sha256_hex(&format!("{source:?}"));
        Ok(Config {
            path: self.path.clone(),
            state_db,
            source,
            source_hash,
            full_read_every,
            targets,
            daemon,
            notify,
            warnings: self.warnings.into_inner(),
        })
    }

    fn target(&self, name: &str, raw: RawTarget, safety: &RawSafety) -> Result<TargetConfig, ConfigError> {
        let key = |k: &str| format!("targets.{name}.{k}");
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || !name.chars().all(allowed) {
            return Err(self.invalid(
                format!("targets.{name}"),
                "a target name uses only letters, digits, `-` and `_`",
            ));
        }
        let preset = raw.preset.clone();
        let raw = match &preset {
            None => raw,
            Some(p) => {
                let text = presets::get(p).ok_or_else(|| {
                    let known = presets::NAMES.join(", ");
                    self.invalid(key("preset"), format!("unknown preset `{p}`; known: {known}"))
                })?;
                let base: RawTarget = toml::from_str(text)
                    .map_err(|e| self.invalid(key("preset"), format!("preset `{p}` is invalid: {e}")))?;
                raw.merge(base)
            }
        };
        let raw_text = format!("{raw:?}\n{safety:?}");

        let base_url = raw
            .base_url
            .ok_or_else(|| self.invalid(key("base_url"), "missing"))?;
        let base_url = reqwest::Url::parse(&base_url)
            .map_err(|e| self.invalid(key("base_url"), format!("not a URL: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(self.invalid(key("base_url"), "must start with http:// or https://"));
        }
        let timeout = self.duration(&key("timeout"), raw.timeout.as_deref(), Duration::from_secs(30))?;
        if timeout.is_zero() {
            return Err(self.invalid(key("timeout"), "must be above 0"));
        }
        let concurrency = raw.concurrency.unwrap_or(4);
        if concurrency == 0 {
            return Err(self.invalid(key("concurrency"), "must be at least 1"));
        }
        let concurrency_increase_after = raw.concurrency_increase_after.unwrap_or(10);
        if concurrency_increase_after == 0 {
            return Err(self.invalid(key("concurrency_increase_after"), "must be at least 1"));
        }
        let rate_limit = match raw.rate_limit {
            None => None,
            // At least one request a thousand seconds: a slower one is no rate.
            Some(r) if r.is_finite() && r >= 0.001 => Some(r),
            Some(_) => {
                return Err(self.invalid(key("rate_limit"), "requests per second, at least 0.001"));
            }
        };
        let max_consecutive_failures = raw.max_consecutive_failures.unwrap_or(10);
        if max_consecutive_failures == 0 {
            return Err(self.invalid(key("max_consecutive_failures"), "must be at least 1"));
        }
        let max_members_per_request = raw.max_members_per_request.unwrap_or(100);
        if max_members_per_request == 0 {
            return Err(self.invalid(key("max_members_per_request"), "must be at least 1"));
        }
        let retry = self.retry(&key("retry"), raw.retry.unwrap_or_default())?;
        let auth = self.auth(&key("auth"), raw.auth.unwrap_or_default())?;
        let secrets = self.template_secrets(&key("secrets"), raw.secrets.unwrap_or_default())?;
        let vars = match serde_json::to_value(raw.vars.unwrap_or_default()) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(self.invalid(key("vars"), "must be a table of plain values")),
        };

        let mut templates = Templates::new();
        let mut endpoints = BTreeMap::new();
        let raw_endpoints = raw.endpoints.unwrap_or_default();
        for (kind, ep) in [
            (EndpointKind::GroupMembers, raw_endpoints.group_members),
            (EndpointKind::UpdateUser, raw_endpoints.update_user),
            (EndpointKind::AddMembers, raw_endpoints.add_members),
            (EndpointKind::RemoveMembers, raw_endpoints.remove_members),
            (EndpointKind::DeleteUser, raw_endpoints.delete_user),
            (EndpointKind::ReadGroup, raw_endpoints.read_group),
        ] {
            let Some(ep) = ep else { continue };
            if ep.enabled == Some(false) {
                continue;
            }
            let ep = self.endpoint(
                &key(&format!("endpoints.{}", kind.key())),
                kind,
                ep,
                &mut templates,
            )?;
            self.check_references(name, &ep, &templates, &vars, &secrets)?;
            endpoints.insert(kind, ep);
        }
        if endpoints.keys().all(|k| *k == EndpointKind::ReadGroup) {
            return Err(self.invalid(
                key("endpoints"),
                "the target offers no endpoint (group_members or update_user)",
            ));
        }
        // A delta is sent only where a whole list can be sent instead: a new group, a
        // resync and a change larger than the group are full replaces.
        for kind in [EndpointKind::AddMembers, EndpointKind::RemoveMembers] {
            if endpoints.contains_key(&kind) && !endpoints.contains_key(&EndpointKind::GroupMembers) {
                return Err(self.invalid(
                    key(&format!("endpoints.{}", kind.key())),
                    "needs `endpoints.group_members` beside it (new groups and large changes send the whole list)",
                ));
            }
        }

        let raw_groups = raw.groups.unwrap_or_default();
        let mut groups = GroupMapping::default();
        let mut group_safety = Vec::new();
        for (i, g) in raw_groups.map.into_iter().enumerate() {
            if g.target_id.trim().is_empty() {
                return Err(self.invalid(key(&format!("groups.map[{i}].target_id")), "is empty"));
            }
            if let Some(gs) = g.safety {
                group_safety.push((i, g.target_id.clone(), gs));
            }
            groups.explicit.push(ExplicitGroup {
                source: g.source,
                target_id: g.target_id,
                name: g.name,
            });
        }
        for (i, r) in raw_groups.rules.into_iter().enumerate() {
            let pattern = Regex::new(&r.pattern).map_err(|e| {
                self.invalid(
                    key(&format!("groups.rules[{i}].match")),
                    format!("invalid regex: {e}"),
                )
            })?;
            let tname = format!("groups.rules.{i}");
            templates
                .add(&tname, Kind::Text, &r.target_id)
                .map_err(|e| self.invalid(key(&format!("groups.rules[{i}].target_id")), e.message))?;
            groups.rules.push(GroupRule {
                pattern,
                target_id_template: tname,
            });
        }
        if let Some(file) = raw_groups.id_map_file {
            let map = self.id_map(&key("groups.id_map_file"), &self.file(&file))?;
            groups.id_map = Some(GroupIdMap {
                key_attribute: raw_groups.id_map_key.unwrap_or_else(|| "id".into()),
                map,
            });
        } else if raw_groups.id_map_key.is_some() {
            return Err(self.invalid(key("groups.id_map_key"), "is only read with `groups.id_map_file`"));
        }
        if groups.explicit.is_empty()
            && groups.id_map.is_none()
            && groups.rules.is_empty()
            && endpoints.contains_key(&EndpointKind::GroupMembers)
        {
            return Err(self.invalid(
                key("groups"),
                "no group is mapped: add [[…groups.map]], `groups.id_map_file` or [[…groups.rules]]",
            ));
        }
        let removed_groups = match raw_groups.removed.as_deref() {
            None | Some("keep") => RemovedGroups::Keep,
            Some("empty") => RemovedGroups::Empty,
            Some(other) => {
                return Err(self.invalid(
                    key("groups.removed"),
                    format!("`{other}`: expected `keep` or `empty`"),
                ));
            }
        };

        let raw_users = raw.users.unwrap_or_default();
        let given = [
            raw_users.id_attribute.is_some(),
            raw_users.id_template.is_some(),
            raw_users.id_map_file.is_some(),
        ];
        if given.iter().filter(|b| **b).count() > 1 {
            return Err(self.invalid(
                key("users"),
                "give only one of `id_attribute`, `id_template`, `id_map_file`",
            ));
        }
        let users = if let Some(t) = raw_users.id_template {
            templates
                .add("users.id", Kind::Text, &t)
                .map_err(|e| self.invalid(key("users.id_template"), e.message))?;
            UserIdSource::Template("users.id".into())
        } else if let Some(file) = raw_users.id_map_file {
            let map = self.id_map(&key("users.id_map_file"), &self.file(&file))?;
            UserIdSource::IdMap {
                key_attribute: raw_users.id_map_key.unwrap_or_else(|| "id".into()),
                map,
            }
        } else {
            UserIdSource::Attribute(raw_users.id_attribute.unwrap_or_else(|| "id".into()))
        };
        let removed_users = match raw_users.removed.as_deref() {
            None | Some("ignore") => RemovedUsers::Ignore,
            Some("disable") => RemovedUsers::Disable,
            Some("delete") if !endpoints.contains_key(&EndpointKind::DeleteUser) => {
                return Err(self.invalid(
                    key("users.removed"),
                    format!(
                        "`delete`: target `{name}` has no way to delete a user: give it \
                         `endpoints.delete_user` (the scim2 preset has one)"
                    ),
                ));
            }
            // Only a user the target confirmed is in the snapshot, so only those
            // can be found to have left.
            Some("delete") if !endpoints.contains_key(&EndpointKind::UpdateUser) => {
                return Err(self.invalid(
                    key("users.removed"),
                    format!(
                        "`delete`: target `{name}` deletes only the users it updates: give it \
                         `endpoints.update_user`"
                    ),
                ));
            }
            Some("delete") => RemovedUsers::Delete,
            Some(other) => {
                return Err(self.invalid(
                    key("users.removed"),
                    format!("`{other}`: expected `ignore`, `disable` or `delete`"),
                ));
            }
        };

        let own = raw.safety.unwrap_or_default();
        let percentages = |s: &raw::RawSafety| {
            [
                (
                    "max_removed_memberships_percent",
                    s.max_removed_memberships_percent,
                ),
                ("max_disabled_users_percent", s.max_disabled_users_percent),
                ("max_unmapped_users_percent", s.max_unmapped_users_percent),
                (
                    "max_removed_members_per_group_percent",
                    s.max_removed_members_per_group_percent,
                ),
                ("max_source_drop_percent", s.max_source_drop_percent),
            ]
        };
        // The key named is the target's own when it sets the value, else `[safety]`'s.
        for ((k, mine), (_, global)) in percentages(&own).into_iter().zip(percentages(safety)) {
            let (place, v) = match mine {
                Some(v) => (key(&format!("safety.{k}")), Some(v)),
                None => (format!("safety.{k}"), global),
            };
            if v.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return Err(self.invalid(place, "a percentage between 0 and 100"));
            }
        }
        let safety = own.or(safety);
        // A limit not given keeps its default; `0` turns it off.
        let d = Limits::DEFAULTS;
        let count = |given: Option<usize>, default| given.or(default).filter(|n| *n != 0);
        let percent = |given: Option<f64>, default| given.or(default).filter(|p| *p != 0.0);
        let limits = Limits {
            max_removed_memberships: count(safety.max_removed_memberships, d.max_removed_memberships),
            max_removed_memberships_percent: percent(
                safety.max_removed_memberships_percent,
                d.max_removed_memberships_percent,
            ),
            max_disabled_users: count(safety.max_disabled_users, d.max_disabled_users),
            max_disabled_users_percent: percent(
                safety.max_disabled_users_percent,
                d.max_disabled_users_percent,
            ),
            max_unmapped_users_percent: percent(
                safety.max_unmapped_users_percent,
                d.max_unmapped_users_percent,
            ),
            percent_min_count: safety.percent_min_count.unwrap_or(d.percent_min_count),
        };
        let group_limit = GroupLimit {
            max_percent: percent(
                safety.max_removed_members_per_group_percent,
                GroupLimit::DEFAULT.max_percent,
            ),
            min_members: safety
                .per_group_min_members
                .unwrap_or(GroupLimit::DEFAULT.min_members),
        };
        // `0s` (or no key) turns the delay off.
        let removal_delay = self.duration(
            &key("safety.removal_delay"),
            safety.removal_delay.as_deref(),
            Duration::ZERO,
        )?;
        let mut removals = hold::Settings {
            group_limit,
            removal_delay: Some(removal_delay).filter(|d| !d.is_zero()),
            max_source_drop_percent: percent(safety.max_source_drop_percent, hold::Settings::SOURCE_DROP),
            protected: safety
                .protected_members
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            ..hold::Settings::default()
        };
        for (i, target_id, gs) in group_safety {
            let pct = gs.max_removed_members_per_group_percent;
            if pct.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return Err(self.invalid(
                    key(&format!(
                        "groups.map[{i}].safety.max_removed_members_per_group_percent"
                    )),
                    "a percentage between 0 and 100",
                ));
            }
            let limit = GroupLimit {
                max_percent: pct.map_or(group_limit.max_percent, |p| Some(p).filter(|p| *p != 0.0)),
                min_members: gs.per_group_min_members.unwrap_or(group_limit.min_members),
            };
            removals.group_limits.insert(target_id.clone(), limit);
            if let Some(members) = gs.protected_members {
                removals
                    .group_protected
                    .entry(target_id)
                    .or_default()
                    .extend(members);
            }
        }

        let scim = match raw.scim {
            None => None,
            Some(s) => {
                let pick = |k: &str, given: Option<String>, allowed: [&str; 2]| match given {
                    None => Ok(allowed[0].to_owned()),
                    Some(v) if allowed.contains(&v.as_str()) => Ok(v),
                    Some(v) => Err(self.invalid(
                        key(&format!("scim.{k}")),
                        format!("`{v}`: expected `{}` or `{}`", allowed[0], allowed[1]),
                    )),
                };
                let page_size = s.page_size.unwrap_or(100);
                if page_size == 0 {
                    return Err(self.invalid(key("scim.page_size"), "must be at least 1"));
                }
                Some(crate::target::spec::Scim {
                    user_filter: pick("user_filter", s.user_filter, ["userName", "externalId"])?,
                    group_filter: pick("group_filter", s.group_filter, ["displayName", "externalId"])?,
                    create_users: s.create_users.unwrap_or(false),
                    create_groups: s.create_groups.unwrap_or(false),
                    page_size,
                    bulk: s.bulk.unwrap_or(false),
                })
            }
        };
        let config_hash = crate::source::token::sha256_hex(&format!("{raw_text}\n{groups:?}\n{users:?}"));
        Ok(TargetConfig {
            config_hash,
            name: name.to_owned(),
            preset,
            spec: Spec {
                base_url,
                timeout,
                concurrency,
                concurrency_increase_after,
                rate_limit,
                max_consecutive_failures,
                max_members_per_request,
                retry,
                auth,
                secrets,
                vars,
                endpoints,
                scim,
            },
            templates: Arc::new(templates),
            groups,
            removed_groups,
            users,
            removed_users,
            limits,
            removals,
            allow_empty_source: safety.allow_empty_source.unwrap_or(false),
            strict: raw.strict.unwrap_or(false),
            probe: match raw.probe {
                None => None,
                Some(p) => {
                    let method = match p.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                        None | Some("GET") => reqwest::Method::GET,
                        Some("HEAD") => reqwest::Method::HEAD,
                        Some(_) => {
                            return Err(self.invalid(
                                key("probe.method"),
                                "expected `GET` or `HEAD` (a probe must change nothing)",
                            ));
                        }
                    };
                    let url = reqwest::Url::parse(&format!("http://probe.invalid{}", p.path));
                    if !p.path.starts_with('/')
                        || p.path.chars().any(|c| c.is_whitespace() || c.is_control())
                        || url.is_err()
                    {
                        return Err(
                            self.invalid(key("probe.path"), "a path below the base URL, starting with `/`")
                        );
                    }
                    Some(Probe { method, path: p.path })
                }
            },
        })
    }

    fn daemon(&self, raw: raw::RawDaemon) -> Result<DaemonConfig, ConfigError> {
        let schedule = |key: &str, expr: Option<String>| {
            expr.map(|e| crate::daemon::schedule::parse(&e).map_err(|m| self.invalid(key, m)))
                .transpose()
        };
        let listen = match raw.listen {
            None => None,
            Some(l) => {
                let addr: std::net::SocketAddr = l.parse().map_err(|_| {
                    self.invalid(
                        "daemon.listen",
                        format!("`{l}` is not an address like 127.0.0.1:9187"),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(self.invalid(
                        "daemon.listen",
                        "health and metrics are served on a loopback address only (127.0.0.1 or [::1])",
                    ));
                }
                Some(addr)
            }
        };
        Ok(DaemonConfig {
            schedule: schedule("daemon.schedule", raw.schedule)?,
            resync_schedule: schedule("daemon.resync_schedule", raw.resync_schedule)?,
            verify_schedule: schedule("daemon.verify_schedule", raw.verify_schedule)?,
            run_at_start: raw.run_at_start.unwrap_or(false),
            shutdown_grace: self.duration(
                "daemon.shutdown_grace",
                raw.shutdown_grace.as_deref(),
                Duration::from_secs(30),
            )?,
            listen,
            healthy_within: self.duration(
                "daemon.healthy_within",
                raw.healthy_within.as_deref(),
                Duration::from_secs(3600),
            )?,
            watch: raw.watch.unwrap_or(false),
            debounce: self.duration("daemon.debounce", raw.debounce.as_deref(), Duration::from_secs(2))?,
            watch_poll: self.duration(
                "daemon.watch_poll",
                raw.watch_poll.as_deref(),
                Duration::from_secs(5),
            )?,
        })
    }

    fn notify(&self, raw: raw::RawNotify) -> Result<NotifyConfig, ConfigError> {
        let key = "notify.webhook_url";
        let source = SecretSource::one_of(
            key,
            raw.webhook_url,
            raw.webhook_url_file,
            raw.webhook_url_env,
            raw.webhook_url_credential,
        )
        .map_err(|m| self.invalid(key, m))?;
        // Errors name the key the URL was given by, never the URL.
        let given = match &source {
            Some(SecretSource::Inline(_)) | None => key.to_owned(),
            Some(SecretSource::File(_)) => format!("{key}_file"),
            Some(SecretSource::Env(_)) => format!("{key}_env"),
            Some(SecretSource::Credential(_)) => format!("{key}_credential"),
        };
        let webhook_url = self.secret(key, source)?.ok_or_else(|| {
            self.invalid(
                key,
                "missing: set `webhook_url_file`, `webhook_url_env` or `webhook_url_credential`",
            )
        })?;
        // `url`'s parse errors describe the problem without quoting the input.
        let url = reqwest::Url::parse(webhook_url.expose())
            .map_err(|e| self.invalid(&given, format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.invalid(&given, "must start with http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.invalid(&given, "names no host"));
        }
        let timeout = self.duration("notify.timeout", raw.timeout.as_deref(), DEFAULT_NOTIFY_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(self.invalid("notify.timeout", "must be above 0"));
        }
        if timeout > Duration::from_secs(600) {
            return Err(self.invalid(
                "notify.timeout",
                "must be at most 10m: a run waits for its notifications before it ends",
            ));
        }
        Ok(NotifyConfig { webhook_url, timeout })
    }

    /// A duration of at most ten years: none of the config's needs more, and a
    /// longer one would overflow the clock it is added to.
    fn duration(&self, key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
        const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        let Some(v) = value else { return Ok(default) };
        let d = humantime::parse_duration(v).map_err(|e| {
            self.invalid(
                key,
                format!("`{v}` is not a duration like \"30s\" or \"2m\": {e}"),
            )
        })?;
        if d > LONGEST {
            return Err(self.invalid(key, format!("`{v}` is longer than ten years")));
        }
        Ok(d)
    }

    fn retry(&self, key: &str, raw: raw::RawRetry) -> Result<Retry, ConfigError> {
        let d = Retry::default();
        let retry = Retry {
            max_attempts: raw.max_attempts.unwrap_or(d.max_attempts),
            initial_delay: self.duration(
                &format!("{key}.initial_delay"),
                raw.initial_delay.as_deref(),
                d.initial_delay,
            )?,
            max_delay: self.duration(&format!("{key}.max_delay"), raw.max_delay.as_deref(), d.max_delay)?,
            max_retry_after: self.duration(
                &format!("{key}.max_retry_after"),
                raw.max_retry_after.as_deref(),
                d.max_retry_after,
            )?,
        };
        if retry.max_attempts == 0 {
            return Err(self.invalid(format!("{key}.max_attempts"), "must be at least 1"));
        }
        Ok(retry)
    }

    fn secret(&self, key: &str, source: Option<SecretSource>) -> Result<Option<Secret>, ConfigError> {
        let Some(source) = source else { return Ok(None) };
        if matches!(source, SecretSource::Inline(_)) {
            self.warnings.borrow_mut().push(format!(
                "{}: `{key}` holds a secret inline; prefer `{key}_file`, `{key}_env` or `{key}_credential`",
                self.path.display()
            ));
        }
        source
            .resolve(&self.base)
            .map(Some)
            .map_err(|m| self.invalid(key, m))
    }

    fn auth(&self, key: &str, raw: RawAuth) -> Result<Auth, ConfigError> {
        let k = |f: &str| format!("{key}.{f}");
        let one_of = |f: &str, inline, file, env, cred| {
            SecretSource::one_of(&k(f), inline, file, env, cred).map_err(|m| self.invalid(k(f), m))
        };
        let token = one_of(
            "token",
            raw.token,
            raw.token_file,
            raw.token_env,
            raw.token_credential,
        )?;
        let password = one_of(
            "password",
            raw.password,
            raw.password_file,
            raw.password_env,
            raw.password_credential,
        )?;
        let value = one_of(
            "value",
            raw.value,
            raw.value_file,
            raw.value_env,
            raw.value_credential,
        )?;
        let kind = raw.kind.as_deref().unwrap_or("none");
        // Keys that do not belong to the kind are mistakes, not things to ignore.
        let allowed: &[&str] = match kind {
            "none" => &[],
            "bearer" => &["token"],
            "basic" => &["username", "password"],
            "header" | "cookie" | "query" => &["name", "value"],
            other => {
                return Err(self.invalid(
                    k("kind"),
                    format!("`{other}`: expected none, bearer, basic, header, cookie or query"),
                ));
            }
        };
        for (field, present) in [
            ("name", raw.name.is_some()),
            ("username", raw.username.is_some()),
            ("token", token.is_some()),
            ("password", password.is_some()),
            ("value", value.is_some()),
        ] {
            if present && !allowed.contains(&field) {
                return Err(self.invalid(k(field), format!("not used with kind = \"{kind}\"")));
            }
        }
        let need = |s: Option<SecretSource>, f: &str| -> Result<Secret, ConfigError> {
            self.secret(&k(f), s)?.ok_or_else(|| {
                self.invalid(
                    k(f),
                    format!("missing: set `{f}_file`, `{f}_env` or `{f}_credential`"),
                )
            })
        };
        // What goes into a header must be able to: checked here, not on every request.
        let header_value = |f: &str, secret: Secret| -> Result<Secret, ConfigError> {
            match reqwest::header::HeaderValue::from_str(secret.expose()) {
                Ok(_) => Ok(secret),
                Err(_) => Err(self.invalid(
                    k(f),
                    "holds a character a header cannot carry (a line break or another control character)",
                )),
            }
        };
        // RFC 6265 cookie-name (a token) and cookie-octets.
        let cookie_safe = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | ',' | ';' | '\\');
        let token_safe = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        Ok(match kind {
            "bearer" => Auth::Bearer(header_value("token", need(token, "token")?)?),
            "basic" => {
                // Empty is a username too: some APIs take a token as the password of
                // an empty user.
                let username = raw
                    .username
                    .ok_or_else(|| self.invalid(k("username"), "missing"))?;
                if username.contains(':') || username.chars().any(char::is_control) {
                    return Err(self.invalid(k("username"), "must not hold a `:` or a control character"));
                }
                Auth::Basic {
                    username,
                    password: need(password, "password")?,
                }
            }
            "header" | "cookie" | "query" => {
                let name = raw.name.filter(|n| !n.is_empty());
                let name = name.ok_or_else(|| self.invalid(k("name"), "missing"))?;
                let value = need(value, "value")?;
                match kind {
                    "header" => {
                        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                            return Err(self.invalid(k("name"), format!("`{name}` is not a header name")));
                        }
                        Auth::Header {
                            name,
                            value: header_value("value", value)?,
                        }
                    }
                    "cookie" => {
                        if !name.chars().all(token_safe) {
                            return Err(self.invalid(k("name"), format!("`{name}` is not a cookie name")));
                        }
                        let v = value.expose();
                        // RFC 6265: cookie-octets, optionally between double quotes.
                        let bare = v.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or(v);
                        if !bare.chars().all(cookie_safe) {
                            return Err(self.invalid(
                                k("value"),
                                "holds a character a cookie value cannot carry (a space, `;`, `,`, `\"`, `\\` or a control character)",
                            ));
                        }
                        Auth::Cookie { name, value }
                    }
                    _ => Auth::Query { name, value },
                }
            }
            _ => Auth::None,
        })
    }

    /// `secrets` table: `NAME`, `NAME_file`, `NAME_env` or `NAME_credential` each.
    fn template_secrets(
        &self,
        key: &str,
        raw: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, ConfigError> {
        /// The ways one secret is given.
        #[derive(Default)]
        struct Ways {
            inline: Option<String>,
            file: Option<PathBuf>,
            env: Option<String>,
            credential: Option<String>,
        }
        let mut by_name: BTreeMap<String, Ways> = BTreeMap::new();
        for (k, v) in raw {
            let (name, how) = ["_file", "_env", "_credential"]
                .into_iter()
                .find_map(|s| k.strip_suffix(s).map(|n| (n.to_owned(), s)))
                .unwrap_or((k, ""));
            let ways = by_name.entry(name).or_default();
            match how {
                "_file" => ways.file = Some(PathBuf::from(v)),
                "_env" => ways.env = Some(v),
                "_credential" => ways.credential = Some(v),
                _ => ways.inline = Some(v),
            }
        }
        let mut out = BTreeMap::new();
        for (name, ways) in by_name {
            let k = format!("{key}.{name}");
            let Ways {
                inline,
                file,
                env,
                credential: cred,
            } = ways;
            let source =
                SecretSource::one_of(&k, inline, file, env, cred).map_err(|m| self.invalid(&k, m))?;
            if let Some(secret) = self.secret(&k, source)? {
                out.insert(name, secret);
            }
        }
        Ok(out)
    }

    fn endpoint(
        &self,
        key: &str,
        kind: EndpointKind,
        raw: RawEndpoint,
        templates: &mut Templates,
    ) -> Result<Endpoint, ConfigError> {
        let k = |f: &str| format!("{key}.{f}");
        let format = raw.format.clone();
        let raw = raw.select(format.as_deref());
        // A read changes nothing and sends nothing.
        let reads = kind == EndpointKind::ReadGroup;
        let method = raw.method.as_deref().unwrap_or(if reads { "GET" } else { "PUT" });
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| self.invalid(k("method"), format!("`{method}` is not an HTTP method")))?;
        let format = match raw.format.as_deref() {
            None | Some("json") => BodyFormat::Json,
            Some("xml") => BodyFormat::Xml,
            Some(other) => {
                return Err(self.invalid(k("format"), format!("`{other}`: expected `json` or `xml`")));
            }
        };
        let path = raw.path.ok_or_else(|| self.invalid(k("path"), "missing"))?;
        let body = match raw.body {
            Some(body) => body,
            None if kind.body_optional() => String::new(),
            None => return Err(self.invalid(k("body"), "missing")),
        };
        let prefix = kind.key();
        // A template named `<kind>.<part>`, from the endpoint's key `field`.
        let add = |templates: &mut Templates, part: &str, field: &str, tkind: Kind, src: &str| {
            templates
                .add(&format!("{prefix}.{part}"), tkind, src)
                .map_err(|e| self.invalid(k(field), e.message))
        };
        add(templates, "path", "path", Kind::Url, &path)?;
        add(templates, "body", "body", format.template_kind(), &body)?;
        let mut query = Vec::new();
        for (name, value) in raw.query.unwrap_or_default() {
            let part = format!("query.{name}");
            add(templates, &part, &part, Kind::Text, &value)?;
            query.push(name);
        }
        let mut headers = Vec::new();
        for (name, value) in raw.headers.unwrap_or_default() {
            let field = format!("headers.{name}");
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.invalid(k(&field), "not a valid header name"))?;
            add(templates, &format!("header.{name}"), &field, Kind::Text, &value)?;
            headers.push(name);
        }
        let success = raw.success.unwrap_or_default();
        let [lo, hi] = success.status.unwrap_or([200, 299]);
        if lo > hi || lo < 100 || hi > 599 {
            return Err(self.invalid(k("success.status"), "an inclusive range like [200, 299]"));
        }
        let mut conditions = Vec::new();
        for (i, c) in success.json.unwrap_or_default().into_iter().enumerate() {
            let ck = k(&format!("success.json[{i}]"));
            if !c.pointer.is_empty() && !c.pointer.starts_with('/') {
                return Err(self.invalid(format!("{ck}.pointer"), "a JSON pointer starts with `/`"));
            }
            conditions.push(match (c.equals, c.empty) {
                (Some(v), None) => Condition::Equals {
                    pointer: c.pointer,
                    value: serde_json::to_value(v)
                        .map_err(|e| self.invalid(format!("{ck}.equals"), e.to_string()))?,
                },
                (None, Some(true)) => Condition::Empty { pointer: c.pointer },
                _ => return Err(self.invalid(ck, "give either `equals = …` or `empty = true`")),
            });
        }
        let mut validations = Vec::new();
        for (i, v) in raw.validate.unwrap_or_default().into_iter().enumerate() {
            let vk = k(&format!("validate[{i}]"));
            if !v.pointer.is_empty() && !v.pointer.starts_with('/') {
                return Err(self.invalid(format!("{vk}.pointer"), "a JSON pointer starts with `/`"));
            }
            let pattern = fancy_regex::Regex::new(&v.pattern)
                .map_err(|e| self.invalid(format!("{vk}.pattern"), format!("invalid regex: {e}")))?;
            validations.push(Validation {
                pointer: v.pointer,
                pattern,
                message: v.message,
            });
        }
        let response_echo = match raw.response_echo {
            None => None,
            Some(r) => {
                for (f, p) in [("pointer", &r.pointer), ("request_pointer", &r.request_pointer)] {
                    if !p.is_empty() && !p.starts_with('/') {
                        return Err(
                            self.invalid(k(&format!("response_echo.{f}")), "a JSON pointer starts with `/`")
                        );
                    }
                }
                Some(ResponseEcho {
                    pointer: r.pointer,
                    request_pointer: r.request_pointer,
                    fields: r.fields,
                    fail: r.fail,
                    ignore_case: r.ignore_case,
                })
            }
        };
        let response_members = match raw.response_members {
            None if reads => {
                return Err(self.invalid(
                    k("response_members.pointer"),
                    "missing: a JSON pointer to the list of members in the answer",
                ));
            }
            None => None,
            Some(r) => {
                let pointers = r.pointer.into_vec();
                if pointers.is_empty() || pointers.iter().any(|p| !p.is_empty() && !p.starts_with('/')) {
                    return Err(self.invalid(
                        k("response_members.pointer"),
                        "a JSON pointer (starting with `/`) or a list of them",
                    ));
                }
                let id = match (r.id_field, r.id_pointer) {
                    (Some(_), Some(_)) => {
                        return Err(
                            self.invalid(k("response_members"), "give only one of `id_field`, `id_pointer`")
                        );
                    }
                    (Some(f), None) => Some(MemberId::Field(f)),
                    (None, Some(p)) if !p.is_empty() && !p.starts_with('/') => {
                        return Err(
                            self.invalid(k("response_members.id_pointer"), "a JSON pointer starts with `/`")
                        );
                    }
                    (None, Some(p)) => Some(MemberId::Pointer(p)),
                    (None, None) => None,
                };
                Some(ResponseMembers { pointers, id })
            }
        };
        let reads_answer = !conditions.is_empty() || response_members.is_some() || response_echo.is_some();
        let answer_body = match success.body.as_deref() {
            None if reads_answer => Some(format),
            None | Some("any") => None,
            Some("json") => Some(BodyFormat::Json),
            Some("xml") => Some(BodyFormat::Xml),
            Some(other) => {
                return Err(self.invalid(
                    k("success.body"),
                    format!("`{other}`: expected `json`, `xml` or `any`"),
                ));
            }
        };
        let answer_content_type = match success.content_type {
            Some(ct) if !ct.contains('/') || ct.contains(';') => {
                return Err(self.invalid(
                    k("success.content_type"),
                    "a media type like `application/json`, without parameters",
                ));
            }
            ct => ct.map(|c| c.trim().to_ascii_lowercase()),
        };
        let uses_member_users = body.contains("member_users");
        Ok(Endpoint {
            kind,
            method,
            query,
            headers,
            format,
            content_type: raw.content_type.unwrap_or_else(|| match format {
                BodyFormat::Json => "application/json".into(),
                BodyFormat::Xml => "application/xml".into(),
            }),
            accept: raw.accept,
            success: SuccessRule {
                status: lo..=hi,
                conditions,
                body: answer_body,
                content_type: answer_content_type,
            },
            error_message: raw.error_message.unwrap_or_default(),
            response_members,
            response_echo,
            validations,
            uses_member_users,
        })
    }

    /// Every name an endpoint's templates read must exist: `vars.X` and `secrets.X` in
    /// the target's tables, anything else in the endpoint's context. A preset's
    /// required value the operator has not given (`vars.scope_id`, say) is reported
    /// here, naming the key to set, instead of failing every request of every run.
    fn check_references(
        &self,
        target: &str,
        ep: &Endpoint,
        templates: &Templates,
        vars: &serde_json::Map<String, serde_json::Value>,
        secrets: &BTreeMap<String, Secret>,
    ) -> Result<(), ConfigError> {
        let context: &[&str] = match ep.kind {
            EndpointKind::UpdateUser | EndpointKind::DeleteUser => &["user"],
            // A group is read by what the snapshot keeps of it: its id and name.
            EndpointKind::ReadGroup => &["group.id", "group.name"],
            _ => &["group", "members", "member_users"],
        };
        // (template part, its key in the config, how it is rendered)
        let mut parts = vec![
            ("path".to_owned(), "path".to_owned(), Kind::Url),
            ("body".to_owned(), "body".to_owned(), ep.format.template_kind()),
        ];
        parts.extend(
            ep.query
                .iter()
                .map(|n| (format!("query.{n}"), format!("query.{n}"), Kind::Text)),
        );
        parts.extend(
            ep.headers
                .iter()
                .map(|n| (format!("header.{n}"), format!("headers.{n}"), Kind::Text)),
        );
        for (part, config_key, kind) in parts {
            let config_key = format!("endpoints.{}.{config_key}", ep.kind.key());
            let used_by = format!("`{config_key}`");
            for name in templates.undeclared(&ep.template(&part), kind) {
                let mut segments = name.split('.');
                let top = segments.next().unwrap_or_default();
                let field = segments.next();
                match (top, field) {
                    ("vars", Some(f)) if !vars.contains_key(f) => {
                        return Err(self.invalid(
                            format!("targets.{target}.vars.{f}"),
                            format!("missing: {used_by} uses it"),
                        ));
                    }
                    ("secrets", Some(f)) if !secrets.contains_key(f) => {
                        return Err(self.invalid(
                            format!("targets.{target}.secrets.{f}"),
                            format!(
                                "missing: {used_by} uses it; set `{f}_file`, `{f}_env` or `{f}_credential`"
                            ),
                        ));
                    }
                    ("vars" | "secrets" | "target", _) => {}
                    (other, _) if context.contains(&other) || context.contains(&name.as_str()) => {}
                    _ => {
                        return Err(self.invalid(
                            format!("targets.{target}.{config_key}"),
                            format!(
                                "unknown variable `{name}`; a {} template sees vars, secrets, target, {}",
                                ep.kind.key(),
                                context.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// An id map: CSV with a header, first column the key, second the target id;
    /// both trimmed, neither empty.
    fn id_map(&self, key: &str, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| self.invalid(key, format!("{}: {e}", path.display())))?;
        let mut map = BTreeMap::new();
        for (i, row) in reader.records().enumerate() {
            let row = row.map_err(|e| self.invalid(key, format!("{}: {e}", path.display())))?;
            let line = row.position().map_or(i as u64 + 2, csv::Position::line);
            let (Some(from), Some(to)) = (row.get(0), row.get(1)) else {
                return Err(self.invalid(key, format!("{}: line {line}: needs two columns", path.display())));
            };
            if from.is_empty() || to.is_empty() {
                let column = if from.is_empty() { "first" } else { "second" };
                return Err(self.invalid(
                    key,
                    format!("{}: line {line}: the {column} column is empty", path.display()),
                ));
            }
            if map.insert(from.to_owned(), to.to_owned()).is_some() {
                return Err(self.invalid(
                    key,
                    format!("{}: line {line}: `{from}` appears twice", path.display()),
                ));
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config with `notify` as its `[notify]` table.
    fn with_notify(notify: &str) -> Result<Config, ConfigError> {
        let text = format!(
            r#"
[source]
kind = "csv"
users = "users.csv"
groups = "groups.csv"

[targets.t]
preset = "onlyoffice-group-members"
base_url = "http://127.0.0.1:1"
auth = {{ value = "k" }}
groups.rules = [{{ match = ".*", target_id = "x" }}]

[notify]
{notify}
"#
        );
        parse(&text, Path::new("/etc/dirsync/dirsync.toml"))
    }

    /// A TOML error says where it is and what, never the text of the line: an inline
    /// secret on it, or in a value of the wrong type, stays out of the message.
    #[test]
    fn a_toml_error_quotes_no_value() {
        let path = Path::new("/etc/dirsync/dirsync.toml");
        for (text, place) in [
            (
                "[source]\nkind = \"csv\"\nusers = \"u\"\ngroups = \"g\"\n[targets.t]\n\
                 auth = { value = \"S3CRET\", vaule_env = \"X\" }\n",
                "line 6",
            ),
            ("[notify]\nwebhook_url = \"https://h/S3CRET\n", "line 2"),
            (
                "state_db = \"state.db\"\n[targets.t]\nconcurrency = \"S3CRET \\\" quoted\"\n",
                "line 3",
            ),
        ] {
            let err = parse(text, path).expect_err(text).to_string();
            assert!(!err.contains("S3CRET"), "{err}");
            assert!(!err.contains("quoted"), "{err}");
            assert!(err.contains(place), "{text}: {err}");
        }
    }

    /// An auth that no request could carry is refused at load, naming the key and
    /// never the secret: a header or cookie name that is not one, a value with a
    /// line break, a cookie value that would end the cookie, a Basic user with `:`.
    #[test]
    fn an_auth_no_request_could_carry_is_refused_naming_the_key() {
        let text = |auth: &str| one_target(&format!("auth = {auth}"));
        let path = Path::new("/etc/dirsync/dirsync.toml");
        for (auth, key, message) in [
            (
                r#"{ kind = "header", name = "X Api Key", value = "S3CRET" }"#,
                "name",
                "is not a header name",
            ),
            (
                r#"{ kind = "header", name = "X-Api-Key", value = "S3CRET\nX: y" }"#,
                "value",
                "cannot carry",
            ),
            (
                r#"{ kind = "bearer", token = "S3CRET\nX" }"#,
                "token",
                "cannot carry",
            ),
            (
                r#"{ kind = "cookie", name = "a=b;c", value = "S3CRET" }"#,
                "name",
                "is not a cookie name",
            ),
            (
                r#"{ kind = "cookie", name = "key", value = "S3CRET; admin=1" }"#,
                "value",
                "cookie value cannot carry",
            ),
            (
                r#"{ kind = "basic", username = "a:b", password = "S3CRET" }"#,
                "username",
                "`:`",
            ),
        ] {
            let err = parse(&text(auth), path).expect_err(auth).to_string();
            assert!(err.contains(&format!("`targets.t.auth.{key}`")), "{auth}: {err}");
            assert!(err.contains(message), "{auth}: {err}");
            assert!(!err.contains("S3CRET"), "{auth}: {err}");
        }
        for good in [
            r#"{ kind = "cookie", name = "asc_auth_key", value = "AbC/+=:123" }"#,
            r#"{ kind = "cookie", name = "session", value = "\"quoted\"" }"#,
            r#"{ kind = "basic", username = "", password = "personal-access-token" }"#,
        ] {
            assert!(parse(&text(good), path).is_ok(), "{good}");
        }
    }

    /// A percentage out of range names the table that set it: the target's own
    /// `[targets.NAME.safety]`, or the shared `[safety]`.
    #[test]
    fn a_bad_percentage_names_the_table_that_set_it() {
        let text = |global: &str, own: &str| {
            one_target("auth = { value = \"k\" }")
                + &format!("\n[safety]\n{global}\n\n[targets.t.safety]\n{own}\n")
        };
        let path = Path::new("/etc/dirsync/dirsync.toml");
        for (global, own, key) in [
            (
                "",
                "max_source_drop_percent = 300",
                "`targets.t.safety.max_source_drop_percent`",
            ),
            (
                "max_source_drop_percent = 300",
                "",
                "`safety.max_source_drop_percent`",
            ),
            (
                "max_source_drop_percent = 300",
                "max_disabled_users_percent = -1",
                "`targets.t.safety.max_disabled_users_percent`",
            ),
        ] {
            let err = parse(&text(global, own), path).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.contains("a percentage between 0 and 100"), "{err}");
        }
    }

    /// A target timeout of zero fails every request; one beyond ten years overflows
    /// the clock: both name the key.
    #[test]
    fn a_target_timeout_is_above_zero_and_at_most_ten_years() {
        let text =
            |timeout: &str| one_target(&format!("timeout = \"{timeout}\"\nauth = {{ value = \"k\" }}"));
        let path = Path::new("/etc/dirsync/dirsync.toml");
        let rate = one_target("auth = { value = \"k\" }\nrate_limit = 1e-20");
        let err = parse(&rate, path).expect_err("rate").to_string();
        assert!(
            err.contains("`targets.t.rate_limit`: requests per second, at least 0.001"),
            "{err}"
        );
        for (timeout, message) in [("0s", "must be above 0"), ("11years", "longer than ten years")] {
            let err = parse(&text(timeout), path).expect_err(timeout).to_string();
            assert!(err.contains("`targets.t.timeout`"), "{timeout}: {err}");
            assert!(err.contains(message), "{timeout}: {err}");
        }
        assert!(parse(&text("1h"), path).is_ok());
    }

    /// A minimal valid config of a CSV source and one target `t` of the
    /// group-members preset, with `keys` in the target's table (an auth among them).
    fn one_target(keys: &str) -> String {
        format!(
            "[source]\nkind = \"csv\"\nusers = \"u.csv\"\ngroups = \"g.csv\"\n\n\
             [targets.t]\npreset = \"onlyoffice-group-members\"\nbase_url = \"http://127.0.0.1:1\"\n\
             {keys}\ngroups.rules = [{{ match = \".*\", target_id = \"x\" }}]\n"
        )
    }

    /// `users.removed = "delete"` on a target with a `delete_user` endpoint (the
    /// scim2 preset), and on one without: an error that names the key and the target.
    #[test]
    fn removed_users_are_deleted_only_by_a_target_that_can_delete() {
        let config = |target: &str| {
            let text = format!(
                r#"
[source]
kind = "csv"
users = "users.csv"
groups = "groups.csv"

{target}
groups.rules = [{{ match = ".*", target_id = "x" }}]
users.removed = "delete"
"#
            );
            parse(&text, Path::new("/etc/dirsync/dirsync.toml"))
        };
        let scim = config(
            "[targets.scim]\npreset = \"scim2\"\nbase_url = \"http://127.0.0.1:1\"\nauth = { token = \"t\" }",
        )
        .expect("the scim2 preset deletes");
        let t = &scim.targets[0];
        assert_eq!(t.removed_users, RemovedUsers::Delete);
        assert!(t.spec.endpoints.contains_key(&EndpointKind::DeleteUser));
        // The preset's user id is kept beside the one key given.
        assert!(matches!(&t.users, UserIdSource::Template(_)), "{:?}", t.users);

        let err = config(
            "[targets.members]\npreset = \"onlyoffice-group-members\"\nbase_url = \"http://127.0.0.1:1\"\nauth = { value = \"k\" }",
        )
        .expect_err("no way to delete")
        .to_string();
        assert!(err.contains("`targets.members.users.removed`"), "{err}");
        assert!(
            err.contains("target `members` has no way to delete a user"),
            "{err}"
        );
        assert!(err.contains("endpoints.delete_user"), "{err}");

        let err = config(
            "[targets.scim]\npreset = \"scim2\"\nbase_url = \"http://127.0.0.1:1\"\nauth = { token = \"t\" }\nendpoints.update_user.enabled = false",
        )
        .expect_err("deletes only users it updates")
        .to_string();
        assert!(err.contains("`targets.scim.users.removed`"), "{err}");
        assert!(err.contains("give it `endpoints.update_user`"), "{err}");
    }

    #[test]
    fn a_webhook_url_is_a_secret_checked_at_load() {
        let token = "T0KEN-in-the-path";
        let ok = with_notify(&format!(
            "webhook_url = \"https://hooks.example/{token}\"\ntimeout = \"3s\""
        ))
        .expect("valid");
        let n = ok.notify.as_ref().expect("configured");
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert!(!format!("{ok:?}").contains(token), "Debug hides the URL");
        assert!(
            ok.warnings
                .iter()
                .any(|w| w.contains("`notify.webhook_url` holds a secret inline")),
            "{:?}",
            ok.warnings
        );
        let default = with_notify("webhook_url = \"http://127.0.0.1:9/x\"").expect("valid");
        assert_eq!(default.notify.map(|n| n.timeout), Some(DEFAULT_NOTIFY_TIMEOUT));

        // (table, key named, part of the message); no error quotes the URL.
        let cases = [
            (
                format!("webhook_url = \"ftp://hooks.example/{token}\""),
                "notify.webhook_url",
                "http:// or https://",
            ),
            (
                format!("webhook_url = \"hooks.example/{token}\""),
                "notify.webhook_url",
                "not a URL",
            ),
            ("timeout = \"3s\"".to_owned(), "notify.webhook_url", "missing"),
            (
                format!("webhook_url = \"https://h/{token}\"\nwebhook_url_env = \"HOOK\""),
                "notify.webhook_url",
                "give only one",
            ),
            (
                "webhook_url_env = \"DIRSYNC_TEST_UNSET_HOOK\"".to_owned(),
                "notify.webhook_url",
                "is not set",
            ),
            (
                "webhook_url = \"https://h/x\"\ntimeout = \"soon\"".to_owned(),
                "notify.timeout",
                "not a duration",
            ),
            (
                "webhook_url = \"https://h/x\"\ntimeout = \"0s\"".to_owned(),
                "notify.timeout",
                "above 0",
            ),
            (
                "webhook_url = \"https://h/x\"\ntimeout = \"11m\"".to_owned(),
                "notify.timeout",
                "at most 10m",
            ),
            (
                "webhook_url = \"https://h/x\"\ntimeout = \"300000000000years\"".to_owned(),
                "notify.timeout",
                "longer than ten years",
            ),
        ];
        for (table, key, message) in cases {
            let err = with_notify(&table).expect_err(&table).to_string();
            assert!(err.contains(&format!("`{key}`")), "{table}: {err}");
            assert!(err.contains(message), "{table}: {err}");
            assert!(!err.contains(token), "{table}: {err}");
        }
    }

    /// A target whose `read_group` table is `read`: (table, expected error part or "ok").
    #[test]
    fn read_group_needs_the_members_pointer_and_sees_only_the_group_id_and_name() {
        let target = |read: &str| {
            let text = format!(
                r#"
[source]
kind = "csv"
users = "users.csv"
groups = "groups.csv"

[targets.t]
base_url = "http://127.0.0.1:1"
groups.rules = [{{ match = ".*", target_id = "x" }}]
endpoints.group_members = {{ path = "/g/{{{{ group.id }}}}", body = "{{{{ members }}}}" }}

[targets.t.endpoints.read_group]
{read}
"#
            );
            parse(&text, Path::new("/etc/dirsync/dirsync.toml"))
        };
        let pointer = "response_members = { pointer = \"/members\" }";
        let cases = [
            (format!("path = \"/g/{{{{ group.id }}}}/{{{{ group.name }}}}\"\n{pointer}"), "ok"),
            (
                "path = \"/g\"".to_owned(),
                "`targets.t.endpoints.read_group.response_members.pointer`: missing",
            ),
            (
                format!("path = \"/g/{{{{ group.attrs.code }}}}\"\n{pointer}"),
                "unknown variable `group.attrs.code`; a read_group template sees vars, secrets, target, group.id, group.name",
            ),
            (
                format!("path = \"/g/{{{{ members }}}}\"\n{pointer}"),
                "unknown variable `members`",
            ),
            (
                "path = \"/g\"\nresponse_members = { pointer = \"/m\", id_field = \"id\", id_pointer = \"/id\" }"
                    .to_owned(),
                "give only one of `id_field`, `id_pointer`",
            ),
            (
                "path = \"/g\"\nresponse_members = { pointer = \"/m\", id_pointer = \"id\" }".to_owned(),
                "`targets.t.endpoints.read_group.response_members.id_pointer`: a JSON pointer starts with `/`",
            ),
        ];
        for (read, expected) in cases {
            match target(&read) {
                Ok(config) => {
                    assert_eq!(expected, "ok", "{read}");
                    let ep = &config.targets[0].spec.endpoints[&EndpointKind::ReadGroup];
                    assert_eq!(ep.method, reqwest::Method::GET);
                }
                Err(e) => assert!(e.to_string().contains(expected), "{read}: {e}"),
            }
        }
    }

    #[test]
    fn a_webhook_url_from_a_file_names_that_key_when_invalid() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hook.url"), "mailto:T0KEN@example\n").expect("write");
        let err = with_notify(&format!(
            "webhook_url_file = \"{}\"",
            dir.path().join("hook.url").display()
        ))
        .expect_err("not http")
        .to_string();
        assert!(err.contains("`notify.webhook_url_file`"), "{err}");
        assert!(!err.contains("T0KEN"), "{err}");
    }
}
