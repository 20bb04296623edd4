//! The `[source]` table with `kind = "ldap"`: its serde shape, the two presets, and
//! validation into [`LdapConfig`].
//!
//! A preset (`openldap`, `active-directory`) fills every key the operator leaves
//! out; any key given overrides the preset's, one by one. Validation needs no network:
//! URLs, filters, durations, the CA file and the bind password are all checked here,
//! so `dirsync check` and the config loader catch mistakes by key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use schemars::JsonSchema;
use serde::Deserialize;

use super::entry::CHANGE_TIME_ATTRIBUTES;
use super::filter;
use crate::config::{Secret, SecretSource, fill};

/// The `[source]` table with `kind = "ldap"`, as written. Boxed, so that the
/// config's source enum stays small whichever kind it holds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(inline)]
pub struct RawLdap(pub(crate) Box<RawLdapTable>);

/// The keys of [`RawLdap`]: an LDAP directory (`kind = "ldap"`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Inlined into `[source]`'s schema, beside the `kind` key of `RawSource`.
#[schemars(inline, description = "An LDAP directory: OpenLDAP or Active Directory.")]
pub(crate) struct RawLdapTable {
    /// `openldap` or `active-directory`: defaults for every key below.
    pub(crate) preset: Option<String>,
    /// How old the last full read may get before a run reads every entry again,
    /// even when content synchronisation names no change (default 24h).
    pub(crate) full_read_every: Option<String>,
    /// `ldap://host:389` or `ldaps://host:636`.
    pub(crate) url: String,
    /// StartTLS on an `ldap://` URL.
    pub(crate) starttls: Option<bool>,
    /// PEM file of the CA that signed the server's certificate.
    pub(crate) ca_file: Option<PathBuf>,
    /// Skip certificate verification (never in production).
    pub(crate) tls_insecure_skip_verify: Option<bool>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) timeout: Option<String>,
    /// The DN dirsync binds as; without it, set `anonymous = true`.
    pub(crate) bind_dn: Option<String>,
    pub(crate) bind_password: Option<String>,
    /// A file holding the bind password.
    pub(crate) bind_password_file: Option<PathBuf>,
    /// An environment variable holding the bind password.
    pub(crate) bind_password_env: Option<String>,
    /// A systemd credential holding the bind password.
    pub(crate) bind_password_credential: Option<String>,
    pub(crate) anonymous: Option<bool>,
    /// Entries per page of a paged search.
    pub(crate) page_size: Option<u32>,
    pub(crate) domain_scope: Option<bool>,
    /// Default base DN of both searches.
    pub(crate) base_dn: Option<String>,
    #[serde(default)]
    /// The user search and its attributes (`[source.users]`).
    pub(crate) users: RawUsers,
    #[serde(default)]
    /// The group search and its member attributes (`[source.groups]`).
    pub(crate) groups: RawGroups,
}

/// `[source.users]`: the user search and which attribute fills which field.
#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUsers {
    pub(crate) base_dn: Option<String>,
    pub(crate) scope: Option<String>,
    /// LDAP filter of the user search.
    pub(crate) filter: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) display_name: Option<String>,
    /// Read for the display name when `display_name`'s attribute is absent or empty.
    pub(crate) display_name_fallback: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) enabled: Option<String>,
    pub(crate) enabled_rule: Option<String>,
    pub(crate) extra: Option<Vec<String>>,
}

/// `[source.groups]`: the group search, its id and name, and where members are.
#[derive(Debug, Deserialize, Default, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroups {
    pub(crate) base_dn: Option<String>,
    pub(crate) scope: Option<String>,
    /// LDAP filter of the group search.
    pub(crate) filter: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    /// Attributes whose values are member DNs (users or nested groups).
    pub(crate) members: Option<Vec<String>>,
    /// Attributes whose values are user names (posixGroup's `memberUid`).
    pub(crate) member_uids: Option<Vec<String>>,
    /// The user attribute that `member_uids` values name.
    pub(crate) member_uid_attribute: Option<String>,
    pub(crate) extra: Option<Vec<String>>,
}

/// The names `preset` accepts.
pub(crate) const PRESETS: &[&str] = &["openldap", "active-directory"];

/// What a preset fills in; `Default` is no preset at all.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Preset {
    page_size: Option<u32>,
    domain_scope: Option<bool>,
    users: RawUsers,
    groups: RawGroups,
}

fn preset(name: &str) -> Option<Preset> {
    let text = match name {
        "openldap" => include_str!("presets/openldap.toml"),
        "active-directory" => include_str!("presets/active-directory.toml"),
        _ => return None,
    };
    // Built in and parsed by a unit test: a failure here is a bug in dirsync.
    Some(toml::from_str(text).expect("a built-in LDAP preset parses"))
}

/// Validated LDAP source settings.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub url: String,
    /// StartTLS on an `ldap://` URL.
    pub(crate) starttls: bool,
    pub(crate) tls: TlsVerify,
    /// For the TCP connection and the TLS handshake (StartTLS included).
    pub(crate) connect_timeout: Duration,
    /// For every operation: the bind, and each answer of a search.
    pub(crate) timeout: Duration,
    pub(crate) bind: Bind,
    /// The password is written in the config file: warned about on every run.
    pub(crate) inline_password: bool,
    /// Entries per page (RFC 2696); 0 reads without paging.
    pub page_size: u32,
    /// Sends Active Directory's LDAP_SERVER_DOMAIN_SCOPE control, so that a search
    /// from a domain root gets no continuation references to other partitions.
    pub(crate) domain_scope: bool,
    pub(crate) users: UserSearch,
    pub(crate) groups: GroupSearch,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone)]
pub(crate) enum TlsVerify {
    /// Against the system's CA store.
    System,
    /// Against the CAs in this file only.
    CaFile {
        path: PathBuf,
        certs: Vec<CertificateDer<'static>>,
    },
    /// Not at all (`tls_insecure_skip_verify = true`), warned about on every run.
    Skip,
}

/// Who dirsync binds as.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Anonymous,
    Simple { dn: String, password: Secret },
}

/// Base DN, scope and filter of one search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Search {
    pub(crate) base_dn: String,
    pub(crate) scope: Scope,
    pub(crate) filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Base,
    One,
    Sub,
}

/// How an attribute says whether a user is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnabledRule {
    /// Active Directory: disabled when bit 0x2 (ACCOUNTDISABLE) is set.
    AdUserAccountControl,
    /// Enabled when TRUE (true/1/yes), disabled when FALSE.
    TrueIsEnabled,
    /// Disabled when TRUE (say, `nsAccountLock`).
    TrueIsDisabled,
    /// Disabled when the attribute is present at all (say, `pwdAccountLockedTime`).
    PresentIsDisabled,
}

/// The user search and the attribute behind each field. Optional fields are
/// `None` when not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserSearch {
    pub(crate) search: Search,
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) email: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) display_name_fallback: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) enabled: Option<(String, EnabledRule)>,
    /// Copied into `attrs` under their own names.
    pub(crate) extra: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSearch {
    pub(crate) search: Search,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) members: Vec<String>,
    pub(crate) member_uids: Vec<String>,
    /// The user attribute `member_uids` values name; `None` when there are none.
    pub(crate) member_uid_attribute: Option<String>,
    pub(crate) extra: Vec<String>,
}

impl UserSearch {
    /// Every attribute the user search asks for.
    pub(crate) fn attributes(&self, uid_attribute: Option<&str>) -> Vec<String> {
        let mut a = vec![self.id.clone(), self.username.clone()];
        a.extend(
            [
                &self.email,
                &self.display_name,
                &self.display_name_fallback,
                &self.first_name,
                &self.last_name,
                &self.phone,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
        a.extend(self.enabled.iter().map(|(attr, _)| attr.clone()));
        a.extend(uid_attribute.map(str::to_owned));
        a.extend(self.extra.iter().cloned());
        a.extend(CHANGE_TIME_ATTRIBUTES.map(str::to_owned));
        dedup_ignore_case(a)
    }
}

impl GroupSearch {
    /// Every attribute the group search asks for.
    pub(crate) fn attributes(&self) -> Vec<String> {
        let mut a = vec![self.id.clone(), self.name.clone()];
        a.extend(self.members.iter().cloned());
        a.extend(self.member_uids.iter().cloned());
        a.extend(self.extra.iter().cloned());
        a.extend(CHANGE_TIME_ATTRIBUTES.map(str::to_owned));
        dedup_ignore_case(a)
    }
}

fn dedup_ignore_case(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for a in list {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

type Invalid = (String, String);

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    (key.to_owned(), message.into())
}

impl LdapConfig {
    /// Whether the URL is `ldaps://` (TLS from the first byte), in any case.
    pub(crate) fn ldaps(&self) -> bool {
        self.url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("ldaps://"))
    }

    /// Validates the raw table; errors are `(key, message)` with the key relative to
    /// `source.`, for the config layer to prefix and name the file.
    pub fn from_raw(raw: RawLdap, base: &Path) -> Result<LdapConfig, Invalid> {
        let raw = *raw.0;
        let preset = match raw.preset.as_deref() {
            None => Preset::default(),
            Some(name) => preset(name).ok_or_else(|| {
                invalid(
                    "preset",
                    format!("unknown preset `{name}`; known: {}", PRESETS.join(", ")),
                )
            })?,
        };

        let url = raw.url.trim().to_owned();
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| invalid("url", format!("`{url}` is not a URL: {e}")))?;
        let tls_url = match parsed.scheme() {
            "ldap" => false,
            "ldaps" => true,
            other => {
                return Err(invalid(
                    "url",
                    format!("`{other}://`: expected ldap:// or ldaps://"),
                ));
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("url", "names no host"));
        }
        // The URL is printed in every error and warning: no credentials in it.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "url",
                "holds a user name or password; give them as `bind_dn` and `bind_password_file` \
                 (or `bind_password_env`)",
            ));
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(invalid(
                "url",
                "only scheme, host and port: set the base DN with `base_dn`",
            ));
        }
        let starttls = raw.starttls.unwrap_or(false);
        if starttls && tls_url {
            return Err(invalid(
                "starttls",
                "ldaps:// is already TLS; StartTLS is for ldap:// URLs",
            ));
        }
        let uses_tls = tls_url || starttls;
        let skip = raw.tls_insecure_skip_verify.unwrap_or(false);
        if !uses_tls && (skip || raw.ca_file.is_some()) {
            let key = if skip {
                "tls_insecure_skip_verify"
            } else {
                "ca_file"
            };
            return Err(invalid(
                key,
                "only used with TLS: use an ldaps:// URL or `starttls = true`",
            ));
        }
        let tls = match (&raw.ca_file, skip) {
            (Some(_), true) => {
                return Err(invalid(
                    "tls_insecure_skip_verify",
                    "give either `ca_file` or `tls_insecure_skip_verify`, not both",
                ));
            }
            (Some(path), false) => {
                let path = base.join(path);
                let certs = read_ca_file(&path).map_err(|m| invalid("ca_file", m))?;
                TlsVerify::CaFile { path, certs }
            }
            (None, true) => TlsVerify::Skip,
            (None, false) => TlsVerify::System,
        };

        let connect_timeout = duration(
            "connect_timeout",
            raw.connect_timeout.as_deref(),
            Duration::from_secs(10),
        )?;
        let timeout = duration("timeout", raw.timeout.as_deref(), Duration::from_secs(60))?;

        let password = SecretSource::one_of(
            "bind_password",
            raw.bind_password,
            raw.bind_password_file,
            raw.bind_password_env,
            raw.bind_password_credential,
        )
        .map_err(|m| invalid("bind_password", m))?;
        let anonymous = raw.anonymous.unwrap_or(false);
        let inline_password = matches!(password, Some(SecretSource::Inline(_)));
        let bind = match (raw.bind_dn, password, anonymous) {
            (Some(_), _, true) | (None, Some(_), true) => {
                return Err(invalid(
                    "anonymous",
                    "an anonymous bind takes no `bind_dn` and no password",
                ));
            }
            (None, None, true) => Bind::Anonymous,
            (Some(dn), Some(source), false) => {
                if dn.trim().is_empty() {
                    return Err(invalid("bind_dn", "is empty"));
                }
                let password = source.resolve(base).map_err(|m| invalid("bind_password", m))?;
                Bind::Simple { dn, password }
            }
            (Some(_), None, false) => {
                return Err(invalid(
                    "bind_password",
                    "missing: set `bind_password_file`, `bind_password_env` or `bind_password_credential`",
                ));
            }
            (None, _, false) => {
                return Err(invalid(
                    "bind_dn",
                    "missing: set `bind_dn` and a password, or `anonymous = true`",
                ));
            }
        };

        let page_size = raw.page_size.or(preset.page_size).unwrap_or(500);
        let domain_scope = raw.domain_scope.or(preset.domain_scope).unwrap_or(false);
        let base_dn = raw.base_dn;
        let users = users(raw.users, preset.users, base_dn.as_deref())?;
        let groups = groups(raw.groups, preset.groups, base_dn.as_deref())?;

        Ok(LdapConfig {
            url,
            starttls,
            tls,
            connect_timeout,
            timeout,
            bind,
            inline_password,
            page_size,
            domain_scope,
            users,
            groups,
        })
    }

    /// Things an operator should hear about on every run, already worded.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.inline_password {
            w.push(
                "`source.bind_password` holds the password inline; prefer `bind_password_file`, \
                 `bind_password_env` or `bind_password_credential`"
                    .to_owned(),
            );
        }
        if matches!(self.tls, TlsVerify::Skip) {
            w.push(format!(
                "TLS certificate verification is off for {} (`tls_insecure_skip_verify = true`): \
                 anyone on the path can read the bind password and change what is read",
                self.url
            ));
        }
        let tls = self.ldaps() || self.starttls;
        if !tls && matches!(self.bind, Bind::Simple { .. }) {
            w.push(format!(
                "the bind password goes to {} unencrypted: use ldaps:// or `starttls = true`",
                self.url
            ));
        }
        if let Some(key) = self.back_link_key() {
            // A content synchronisation refresh names changes to the searches' own
            // entries only; a controller's USN moves for the whole domain.
            let seen = if self.domain_scope {
                ""
            } else {
                "; a change to a group the groups search does not return is seen only at the \
                 next full read (`full_read_every`)"
            };
            w.push(format!(
                "`{key}` names memberOf, which the server keeps on the user without changing the \
                 user's entry (Active Directory's uSNChanged, OpenLDAP's entryCSN): every read \
                 that finds a change is a full one{seen}"
            ));
        }
        w
    }

    /// Why every read that finds a change is full: [`LdapConfig::back_link_key`].
    pub(crate) fn back_link_reason(&self) -> Option<String> {
        self.back_link_key()
            .map(|key| format!("`{key}` names memberOf, whose changes do not change the users' entries"))
    }

    /// The key of a search that names `memberOf` (its filter or extra attributes):
    /// a group's member change moves the group's USN or entryCSN, not the users'
    /// (OpenLDAP's memberof overlay writes `memberOf` without one, and dynlist
    /// computes it), so reading the changed entries cannot tell what such a search
    /// returns.
    pub(crate) fn back_link_key(&self) -> Option<&'static str> {
        let names = |filter: &str| filter_attributes(filter).any(is_member_of);
        let extra = |attrs: &[String]| attrs.iter().any(|a| is_member_of(a));
        if names(&self.users.search.filter) {
            Some("source.users.filter")
        } else if names(&self.groups.search.filter) {
            Some("source.groups.filter")
        } else if extra(&self.users.extra) {
            Some("source.users.extra")
        } else if extra(&self.groups.extra) {
            Some("source.groups.extra")
        } else {
            None
        }
    }
}

/// `memberOf` by name or OID, with or without options (`memberOf;binary`).
fn is_member_of(description: &str) -> bool {
    let attr = description.split(';').next().unwrap_or_default().trim();
    attr.eq_ignore_ascii_case("memberOf") || attr == "1.2.840.113556.1.2.102"
}

/// The attribute descriptions a filter tests (`(memberOf=…)`, `(cn>=…)`,
/// `(memberOf:1.2.840.113556.1.4.1941:=…)`), not the values: a value cannot hold
/// a parenthesis unescaped (RFC 4515), so each one opens a component.
fn filter_attributes(filter: &str) -> impl Iterator<Item = &str> {
    filter.split('(').skip(1).filter_map(|component| {
        let end = component.find(['=', '~', '<', '>', ':', ')'])?;
        let attr = component[..end].trim();
        (!attr.is_empty() && !attr.starts_with(['&', '|', '!'])).then_some(attr)
    })
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM file of certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, Invalid> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(v).map_err(|e| {
        invalid(
            key,
            format!("`{v}` is not a duration like \"30s\" or \"2m\": {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, "must be more than zero"));
    }
    Ok(d)
}

/// The search of `[source.users]` or `[source.groups]`.
fn search(
    section: &str,
    base_dn: Option<String>,
    scope: Option<String>,
    filter: Option<String>,
    default_base: Option<&str>,
) -> Result<Search, Invalid> {
    let key = |k: &str| format!("{section}.{k}");
    let base_dn = base_dn.or(default_base.map(str::to_owned)).ok_or_else(|| {
        invalid(
            &key("base_dn"),
            "missing: set it here or `base_dn` for both searches",
        )
    })?;
    let scope = match scope.as_deref().unwrap_or("sub") {
        "sub" | "subtree" => Scope::Sub,
        "one" | "onelevel" => Scope::One,
        "base" => Scope::Base,
        other => {
            return Err(invalid(
                &key("scope"),
                format!("`{other}`: expected sub, one or base"),
            ));
        }
    };
    let filter = filter.unwrap_or_else(|| "(objectClass=*)".to_owned());
    if !filter::is_valid(&filter) {
        return Err(invalid(
            &key("filter"),
            format!("`{filter}` is not an LDAP filter (RFC 4515), e.g. `(objectClass=person)`"),
        ));
    }
    // A bare item (`objectClass=user`) is a filter too; parenthesized, it can be
    // combined with others.
    let filter = if filter.starts_with('(') {
        filter
    } else {
        format!("({filter})")
    };
    Ok(Search {
        base_dn,
        scope,
        filter,
    })
}

/// A required attribute name.
fn required(key: &str, attribute: Option<String>) -> Result<String, Invalid> {
    match attribute {
        Some(a) if !a.trim().is_empty() => attribute_name(key, a),
        _ => Err(invalid(key, "missing: name the attribute, or choose a `preset`")),
    }
}

/// An optional attribute name; `""` turns off what a preset set.
fn optional(key: &str, attribute: Option<String>) -> Result<Option<String>, Invalid> {
    match attribute {
        Some(a) if a.trim().is_empty() => Ok(None),
        Some(a) => attribute_name(key, a).map(Some),
        None => Ok(None),
    }
}

fn list(key: &str, attributes: Option<Vec<String>>) -> Result<Vec<String>, Invalid> {
    attributes
        .unwrap_or_default()
        .into_iter()
        .map(|a| attribute_name(key, a))
        .collect()
}

/// An attribute description dirsync asks for: a name, no options (ranges are
/// dirsync's business).
fn attribute_name(key: &str, a: String) -> Result<String, Invalid> {
    let a = a.trim().to_owned();
    let ok = a.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(a)
    } else {
        Err(invalid(
            key,
            format!("`{a}` is not an attribute name (letters, digits, `-`; no options)"),
        ))
    }
}

fn users(mut raw: RawUsers, p: RawUsers, default_base: Option<&str>) -> Result<UserSearch, Invalid> {
    let raw = fill!(raw, p: base_dn, scope, filter, id, username, email, display_name,
        display_name_fallback, first_name, last_name, phone, enabled, enabled_rule, extra);
    let k = |f: &str| format!("users.{f}");
    let search = search("users", raw.base_dn, raw.scope, raw.filter, default_base)?;
    let enabled_attr = optional(&k("enabled"), raw.enabled)?;
    let rule = match raw.enabled_rule.as_deref() {
        None | Some("true-is-enabled") => EnabledRule::TrueIsEnabled,
        Some("true-is-disabled") => EnabledRule::TrueIsDisabled,
        Some("present-is-disabled") => EnabledRule::PresentIsDisabled,
        Some("ad-user-account-control") => EnabledRule::AdUserAccountControl,
        Some(other) => {
            return Err(invalid(
                &k("enabled_rule"),
                format!(
                    "`{other}`: expected ad-user-account-control, true-is-enabled, \
                     true-is-disabled or present-is-disabled"
                ),
            ));
        }
    };
    Ok(UserSearch {
        search,
        id: required(&k("id"), raw.id)?,
        username: required(&k("username"), raw.username)?,
        email: optional(&k("email"), raw.email)?,
        display_name: optional(&k("display_name"), raw.display_name)?,
        display_name_fallback: optional(&k("display_name_fallback"), raw.display_name_fallback)?,
        first_name: optional(&k("first_name"), raw.first_name)?,
        last_name: optional(&k("last_name"), raw.last_name)?,
        phone: optional(&k("phone"), raw.phone)?,
        enabled: enabled_attr.map(|a| (a, rule)),
        extra: list(&k("extra"), raw.extra)?,
    })
}

fn groups(mut raw: RawGroups, p: RawGroups, default_base: Option<&str>) -> Result<GroupSearch, Invalid> {
    let raw = fill!(raw, p: base_dn, scope, filter, id, name, members, member_uids,
        member_uid_attribute, extra);
    let k = |f: &str| format!("groups.{f}");
    let search = search("groups", raw.base_dn, raw.scope, raw.filter, default_base)?;
    let members = list(&k("members"), raw.members)?;
    let member_uids = list(&k("member_uids"), raw.member_uids)?;
    if members.is_empty() && member_uids.is_empty() {
        return Err(invalid(
            &k("members"),
            "no member attribute: set `members` (DN values, e.g. [\"member\"]) or \
             `member_uids` (user names, e.g. [\"memberUid\"])",
        ));
    }
    let member_uid_attribute = if member_uids.is_empty() {
        None
    } else {
        Some(required(&k("member_uid_attribute"), raw.member_uid_attribute)?)
    };
    Ok(GroupSearch {
        search,
        id: required(&k("id"), raw.id)?,
        name: required(&k("name"), raw.name)?,
        members,
        member_uids,
        member_uid_attribute,
        extra: list(&k("extra"), raw.extra)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LdapConfig, Invalid> {
        let raw: RawLdap = toml::from_str(text).expect("toml");
        LdapConfig::from_raw(raw, Path::new("/nonexistent"))
    }

    const MINIMAL: &str = r#"
        preset = "openldap"
        url = "ldap://127.0.0.1:389"
        base_dn = "dc=example,dc=com"
        anonymous = true
    "#;

    #[test]
    fn the_config_file_reaches_this_table_by_kind() {
        let text = format!("[source]\nkind = \"ldap\"\n{MINIMAL}");
        let raw: crate::config::RawConfig = toml::from_str(&text).expect("parses");
        assert!(raw.source.is_some());
        let err = toml::from_str::<crate::config::RawConfig>(&format!("{text}\nbogus = 1"))
            .expect_err("unknown key");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    /// memberOf is found where a filter tests it (by name or OID, in an
    /// extensible match too) or among the extra attributes, not in values or other
    /// attribute names.
    #[test]
    fn a_search_names_member_of_where_it_tests_the_attribute() {
        let with = |section: &str, key: &str, value: &str| {
            load(&format!("{MINIMAL}\n[{section}]\n{key} = {value}")).expect("valid")
        };
        let users_filter = |f: &str| with("users", "filter", &format!("\"{f}\"")).back_link_key();
        assert_eq!(
            users_filter("(&(objectClass=person)(memberOf=cn=vpn,dc=x))"),
            Some("source.users.filter")
        );
        assert_eq!(
            users_filter("(MEMBEROF:1.2.840.113556.1.4.1941:=cn=vpn,dc=x)"),
            Some("source.users.filter")
        );
        assert_eq!(
            users_filter("(1.2.840.113556.1.2.102=cn=vpn,dc=x)"),
            Some("source.users.filter")
        );
        assert_eq!(
            users_filter("(!(memberOf;binary=*))"),
            Some("source.users.filter")
        );
        assert_eq!(users_filter("(cn=memberof-admins)"), None);
        assert_eq!(users_filter("(description=*memberOf*)"), None);
        assert_eq!(users_filter("(memberOfTeam=a)"), None);
        let groups = with(
            "groups",
            "filter",
            "\"(&(objectClass=group)(memberOf=cn=all,dc=x))\"",
        );
        assert_eq!(groups.back_link_key(), Some("source.groups.filter"));
        assert_eq!(
            with("users", "extra", "[\"memberof\"]").back_link_key(),
            Some("source.users.extra")
        );
        assert_eq!(with("users", "extra", "[\"memberOfTeam\"]").back_link_key(), None);
    }

    /// A bare item is a filter; it is kept parenthesized, so that a read by id
    /// or a change search can combine it with others.
    #[test]
    fn a_bare_filter_is_parenthesized() {
        let c = load(&format!("{MINIMAL}\n[users]\nfilter = \"objectClass=person\"")).expect("valid");
        assert_eq!(c.users.search.filter, "(objectClass=person)");
        assert!(filter::is_valid(&format!("(&{}(uid=a))", c.users.search.filter)));
        let err =
            load(&format!("{MINIMAL}\n[users]\nfilter = \"objectClass=person)\"")).expect_err("unbalanced");
        assert_eq!(err.0, "users.filter");
        assert!(err.1.contains("not an LDAP filter"), "{err:?}");
    }

    #[test]
    fn openldap_preset_fills_everything() {
        let c = load(MINIMAL).expect("valid");
        assert_eq!(c.users.id, "entryUUID");
        assert_eq!(c.users.username, "uid");
        assert_eq!(c.users.search.base_dn, "dc=example,dc=com");
        assert_eq!(c.groups.members, ["member", "uniqueMember"]);
        assert_eq!(c.groups.member_uids, ["memberUid"]);
        assert_eq!(c.groups.member_uid_attribute.as_deref(), Some("uid"));
        assert_eq!(c.page_size, 500);
        assert!(!c.domain_scope);
        assert!(matches!(c.bind, Bind::Anonymous));
        assert_eq!(
            c.users.attributes(c.groups.member_uid_attribute.as_deref()),
            [
                "entryUUID",
                "uid",
                "mail",
                "displayName",
                "cn",
                "givenName",
                "sn",
                "telephoneNumber",
                "modifyTimestamp",
                "whenChanged"
            ]
        );
    }

    #[test]
    fn active_directory_preset_and_key_by_key_overrides() {
        let c = load(
            r#"
            preset = "active-directory"
            url = "ldaps://dc1.corp.example.com"
            base_dn = "DC=corp,DC=example,DC=com"
            bind_dn = "CN=dirsync,OU=Service,DC=corp,DC=example,DC=com"
            bind_password_env = "PATH"
            [users]
            base_dn = "OU=Staff,DC=corp,DC=example,DC=com"
            email = ""
            extra = ["employeeID"]
            [groups]
            name = "sAMAccountName"
        "#,
        )
        .expect("valid");
        assert_eq!(c.users.id, "objectGUID");
        assert_eq!(c.users.username, "sAMAccountName");
        assert_eq!(c.users.email, None);
        assert_eq!(c.users.search.base_dn, "OU=Staff,DC=corp,DC=example,DC=com");
        assert_eq!(c.groups.search.base_dn, "DC=corp,DC=example,DC=com");
        assert_eq!(
            c.users.enabled,
            Some(("userAccountControl".into(), EnabledRule::AdUserAccountControl))
        );
        assert_eq!(c.users.extra, ["employeeID"]);
        assert_eq!(c.groups.name, "sAMAccountName");
        assert_eq!(c.groups.members, ["member"]);
        assert_eq!(c.groups.member_uid_attribute, None);
        assert!(c.domain_scope);
        assert!(!c.inline_password);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"preset = "novell""#, "preset", "unknown preset"),
            (r#"url = "http://x""#, "url", "expected ldap://"),
            (r#"url = "ldap://x/dc=example""#, "url", "base_dn"),
            (r#"url = "ldap://reader:s3cret@x""#, "url", "bind_dn"),
            (r#"url = "ldaps://x" "#, "", ""),
            ("starttls = true\nurl = \"ldaps://x\"", "starttls", "already TLS"),
            (r#"ca_file = "ca.pem""#, "ca_file", "only used with TLS"),
            (
                "starttls = true\nca_file = \"ca.pem\"",
                "ca_file",
                "cannot read /nonexistent/ca.pem",
            ),
            (r#"timeout = "soon""#, "timeout", "not a duration"),
            (r#"connect_timeout = "0s""#, "connect_timeout", "more than zero"),
            (r#"bind_dn = "cn=x""#, "anonymous", "takes no `bind_dn`"),
            ("anonymous = false", "bind_dn", "missing"),
            ("[users]\nscope = \"deep\"", "users.scope", "expected sub"),
            (
                "[users]\nfilter = \"(&(uid=*)\"",
                "users.filter",
                "not an LDAP filter",
            ),
            ("[users]\nid = \"\"", "users.id", "missing"),
            ("[users]\nmail = \"x\"", "", "unknown field"),
            (
                "[users]\nemail = \"mail;lang-en\"",
                "users.email",
                "not an attribute name",
            ),
            (
                "[users]\nenabled = \"x\"\nenabled_rule = \"maybe\"",
                "users.enabled_rule",
                "expected",
            ),
            (
                "[groups]\nmembers = []\nmember_uids = []",
                "groups.members",
                "no member attribute",
            ),
        ];
        for (extra, key, message) in cases {
            let mut text = String::new();
            for (k, line) in [
                ("preset =", "preset = \"openldap\""),
                ("url =", "url = \"ldap://127.0.0.1:389\""),
                ("base_dn =", "base_dn = \"dc=example,dc=com\""),
                ("anonymous =", "anonymous = true"),
            ] {
                if !extra.contains(k) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            text.push_str(extra);
            match toml::from_str::<RawLdap>(&text) {
                Err(e) => {
                    assert!(key.is_empty() && e.to_string().contains(message), "{extra}: {e}");
                }
                Ok(raw) => match LdapConfig::from_raw(raw, Path::new("/nonexistent")) {
                    Ok(_) => assert!(key.is_empty() && message.is_empty(), "{extra}: accepted"),
                    Err((k, m)) => {
                        assert_eq!(&k, key, "{extra}: {m}");
                        assert!(m.contains(message), "{extra}: {m}");
                        assert!(
                            !m.contains("s3cret"),
                            "{extra}: the error repeats the password: {m}"
                        );
                    }
                },
            }
        }
    }

    #[test]
    fn bind_needs_a_password_or_anonymous() {
        let base = r#"
            preset = "openldap"
            url = "ldap://127.0.0.1"
            base_dn = "dc=x"
        "#;
        let err = |extra: &str| {
            let raw: RawLdap = toml::from_str(&format!("{base}\n{extra}")).expect("toml");
            LdapConfig::from_raw(raw, Path::new("/")).expect_err("invalid")
        };
        assert_eq!(err("").0, "bind_dn");
        assert_eq!(err("bind_dn = \"cn=r,dc=x\"").0, "bind_password");
        let (k, m) = err("bind_dn = \"cn=r,dc=x\"\nbind_password = \"a\"\nbind_password_env = \"B\"");
        assert_eq!(k, "bind_password");
        assert!(m.contains("only one of"), "{m}");
        let (k, m) = err("bind_dn = \"cn=r,dc=x\"\nbind_password_env = \"DIRSYNC_TEST_UNSET_VARIABLE\"");
        assert_eq!(k, "bind_password");
        assert!(m.contains("DIRSYNC_TEST_UNSET_VARIABLE"), "{m}");

        let raw: RawLdap = toml::from_str(&format!(
            "{base}\nbind_dn = \"cn=r,dc=x\"\nbind_password = \"hunter2\""
        ))
        .expect("toml");
        let c = LdapConfig::from_raw(raw, Path::new("/")).expect("valid");
        assert!(c.inline_password);
        let warnings = c.warnings().join("\n");
        assert!(warnings.contains("inline"), "{warnings}");
        assert!(warnings.contains("unencrypted"), "{warnings}");
        assert!(!format!("{c:?} {warnings}").contains("hunter2"));

        // A scheme in capitals is TLS all the same: no warning of a plain bind.
        let raw: RawLdap = toml::from_str(
            &format!("{base}\nbind_dn = \"cn=r,dc=x\"\nbind_password = \"hunter2\"")
                .replace("ldap://", "LDAPS://"),
        )
        .expect("toml");
        let c = LdapConfig::from_raw(raw, Path::new("/")).expect("valid");
        assert!(c.ldaps());
        let warnings = c.warnings().join("\n");
        assert!(!warnings.contains("unencrypted"), "{warnings}");
    }
}
