//! LDAP source: OpenLDAP and Active Directory, read completely or not at all.
//!
//! One read, on one connection through ldap3's client: connect (TLS as configured)
//! → bind → paged user search → paged group search → ranged retrieval of any group
//! too large for one answer → members resolved and nested groups flattened. Entries
//! are mapped as they stream in and dropped; only the users, the groups and the
//! DN/uid indexes are held.
//!
//! - `config`: the `[source]` table, presets, validation (no network).
//! - `conn`: ldap3's connection, TLS, bind, paged search; every early end is an error.
//! - `error`: why a read failed, as data, with the text and hints users read.
//! - `entry`: an entry's DN and raw values; binary attributes rendered as text.
//! - `cache`: pure; the searches' entries as last read, moved on by a refresh.
//! - `build`: pure; entries → users and groups, members resolved, groups flattened.
//! - `nested`: pure; cycle-safe flattening of nested groups.
//! - `ad`: pure; objectGUID, objectSid, userAccountControl, `member;range=…`.
//! - `dn`: pure; DNs normalized for comparison.
//! - `filter`: pure; RFC 4515 filter checks (ldap3's).
//! - `usn`: Active Directory read by `uSNChanged`, entries keyed by objectGUID.
//!
//! Architecture Invariant: `read` returns the whole directory or an error. A bind
//! failure, a lost connection, a timeout, a size or time limit, a referral, a failed
//! range step or an unusable value ends the read; a partial read is never returned.

pub(crate) mod ad;
mod build;
pub(crate) mod cache;
mod config;
mod conn;
pub(crate) mod dn;
mod entry;
mod error;
pub(crate) mod filter;
pub(crate) mod nested;
pub(crate) mod usn;

use crate::model::Directory;

pub(crate) use config::Bind;
pub use config::{LdapConfig, RawLdap};
pub(crate) use error::Interrupted;
pub use error::{
    BindFailure, ConnectFailure, DataProblem, LdapError, SearchFailure, ServerResult, TlsFailure, TlsHint,
};

use build::{DataError, Groups, Users};
use cache::Cache;
use conn::{Conn, SearchMode};
pub use conn::{Refresh, Synced};
pub use entry::Entry;
pub use usn::{deletions_unseen, probe_deleted_objects};

impl LdapError {
    fn data(url: &str, e: DataError) -> LdapError {
        LdapError::Data {
            url: url.to_owned(),
            dn: e.dn,
            attribute: e.attribute,
            problem: e.problem,
        }
    }
}

/// What a read did and found, for logs and `dirsync check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// `cn=…` or `(anonymous)`.
    pub bound_as: String,
    /// `ldaps`, `StartTLS` or `plain`.
    pub transport: &'static str,
    pub user_pages: usize,
    pub(crate) group_pages: usize,
    /// Extra requests made for `member;range=…` values.
    pub(crate) range_requests: usize,
    /// Member values that named no user or group the searches returned.
    pub ignored_members: usize,
    pub ignored_examples: Vec<String>,
    /// Nested groups that contain each other, by name, each cycle once.
    pub cycles: Vec<Vec<String>>,
    /// Group names used by more than one group.
    pub(crate) duplicate_names: Vec<String>,
    /// Config warnings (inline password, no TLS verification, cleartext bind).
    pub warnings: Vec<String>,
}

impl ReadReport {
    /// Everything an operator should look at, one sentence each, most serious first.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.warnings.clone();
        for c in &self.cycles {
            p.push(format!(
                "nested groups contain each other: {} (each gets the members of all)",
                c.join(" ⊃ ")
            ));
        }
        if self.ignored_members > 0 {
            p.push(format!(
                "{} member value(s) name no user or group the searches returned and were left \
                 out, e.g. {}",
                self.ignored_members,
                self.ignored_examples.join("; ")
            ));
        }
        if !self.duplicate_names.is_empty() {
            p.push(format!(
                "more than one group is named {}; map these by id",
                self.duplicate_names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        p
    }
}

/// Reads the whole directory, logging what an operator should know.
pub(crate) async fn read(config: &LdapConfig) -> Result<Directory, LdapError> {
    let (dir, report) = read_with_report(config).await?;
    log_report(&report);
    tracing::debug!(
        url = %config.url,
        user_pages = report.user_pages,
        group_pages = report.group_pages,
        range_requests = report.range_requests,
        "Read the LDAP directory."
    );
    Ok(dir)
}

/// Builds the directory from the cached entries of both searches, through the same
/// builders as a read, logging what an operator should know.
pub(crate) fn build_from_cache(config: &LdapConfig, cache: &Cache) -> Result<Directory, LdapError> {
    let url = config.url.as_str();
    let uid_attribute = config.groups.member_uid_attribute.as_deref();
    let mut users = Users::new(&config.users, uid_attribute);
    for e in cache.users.values() {
        users.add(e).map_err(|e| LdapError::data(url, e))?;
    }
    let (list, users) = users.finish();
    let mut groups = Groups::new(&config.groups);
    for e in cache.groups.values() {
        let pending = groups.add(e, &users).map_err(|e| LdapError::data(url, e))?;
        if let Some(p) = pending.first() {
            return Err(LdapError::Data {
                url: url.to_owned(),
                dn: p.dn.clone(),
                attribute: Some(p.attribute.clone()),
                problem: DataProblem::RangeStopped(error::RangeStop::Synchronised),
            });
        }
    }
    let (dir, resolution) = groups.finish(list).map_err(|e| LdapError::data(url, e))?;
    let mut report = ReadReport {
        warnings: config.warnings(),
        ..ReadReport::default()
    };
    report.ignored_members = resolution.ignored_members;
    report.ignored_examples = resolution.ignored_examples;
    report.cycles = resolution.cycles;
    report.duplicate_names = resolution.duplicate_names;
    log_report(&report);
    Ok(dir)
}

/// Logs what an operator should know about a read.
fn log_report(report: &ReadReport) {
    for w in &report.warnings {
        tracing::warn!("{w}.");
    }
    for c in &report.cycles {
        tracing::warn!(groups = %c.join(", "), "Nested groups contain each other; each gets the members of all.");
    }
    if report.ignored_members > 0 {
        tracing::info!(
            ignored = report.ignored_members,
            examples = %report.ignored_examples.join("; "),
            "Left out member values that name no user or group the searches returned."
        );
    }
}

/// Reads the whole directory and reports what the read found.
pub async fn read_with_report(config: &LdapConfig) -> Result<(Directory, ReadReport), LdapError> {
    let mut report = ReadReport {
        bound_as: match &config.bind {
            Bind::Anonymous => "(anonymous)".to_owned(),
            Bind::Simple { dn, .. } => dn.clone(),
        },
        transport: if config.ldaps() {
            "ldaps"
        } else if config.starttls {
            "StartTLS"
        } else {
            "plain"
        },
        warnings: config.warnings(),
        ..ReadReport::default()
    };
    let mut conn = Conn::open(config).await?;
    let read = read_on(&mut conn, config, &mut report).await;
    conn.close().await;
    Ok((read?, report))
}

/// What a content synchronisation refresh of the user and group searches said.
#[derive(Debug)]
pub struct SyncRefresh {
    pub users: Synced,
    pub groups: Synced,
}

/// Refreshes the user and group searches (RFC 4533 `refreshOnly`) from the cookies
/// of the last refresh; without a cookie, a search's every entry comes as changed.
pub async fn sync_refresh(
    config: &LdapConfig,
    users_cookie: Option<Vec<u8>>,
    groups_cookie: Option<Vec<u8>>,
) -> Result<SyncRefresh, LdapError> {
    let mut conn = Conn::open(config).await?;
    let refreshed = async {
        conn.bind(&config.bind).await?;
        let uid_attribute = config.groups.member_uid_attribute.as_deref();
        let attrs = config.users.attributes(uid_attribute);
        let users = conn
            .sync_refresh(&config.users.search, &attrs, users_cookie)
            .await?;
        let attrs = config.groups.attributes();
        let groups = conn
            .sync_refresh(&config.groups.search, &attrs, groups_cookie)
            .await?;
        Ok(SyncRefresh { users, groups })
    }
    .await;
    conn.close().await;
    refreshed
}

/// Groups per search that [`groups_by_id`] asks for, so a filter stays short.
const GROUPS_PER_SEARCH: usize = 100;

/// The groups of the group search with these entryUUIDs, each whole, as a refresh
/// names them: a refresh without a cookie of the group search narrowed to them. A
/// group the search no longer returns is left out. `None` when the server asks for
/// a full refresh instead.
pub async fn groups_by_id(
    config: &LdapConfig,
    ids: &[String],
) -> Result<Option<Vec<(String, Entry)>>, LdapError> {
    let groups = &config.groups;
    let mut conn = Conn::open(config).await?;
    let read = async {
        conn.bind(&config.bind).await?;
        let attrs = groups.attributes();
        let mut found = Vec::new();
        for chunk in ids.chunks(GROUPS_PER_SEARCH) {
            let search = config::Search {
                filter: format!("(&{}{})", groups.search.filter, any_uuid(chunk)),
                ..groups.search.clone()
            };
            match conn.sync_refresh(&search, &attrs, None).await? {
                Synced::Refreshed(r) => found.extend(r.changed),
                Synced::RefreshRequired(_) | Synced::Unsupported(_) => return Ok(None),
            }
        }
        Ok(Some(found))
    }
    .await;
    conn.close().await;
    read
}

/// The entryUUIDs of the groups the groups' search returns whose member values, as
/// the server holds them now, name any of `dns`. An entry new to the cache may be
/// named by groups the cache holds under another DN: with referential integrity,
/// moving it into a search rewrites those values without the refresh naming them.
pub async fn groups_naming(config: &LdapConfig, dns: &[String]) -> Result<Vec<String>, LdapError> {
    let groups = &config.groups;
    let mut conn = Conn::open(config).await?;
    let read = async {
        conn.bind(&config.bind).await?;
        let mode = SearchMode {
            page_size: config.page_size,
            domain_scope: false,
        };
        let mut ids = Vec::new();
        for chunk in dns.chunks(GROUPS_PER_SEARCH) {
            let any: String = chunk
                .iter()
                .flat_map(|dn| {
                    let dn = ldap3::ldap_escape(dn.as_str());
                    groups.members.iter().map(move |m| format!("({m}={dn})"))
                })
                .collect();
            let search = config::Search {
                filter: format!("(&{}(|{any}))", groups.search.filter),
                ..groups.search.clone()
            };
            conn.search(&search, &["entryUUID".to_owned()], mode, |e| {
                ids.extend(entry_uuid(e));
                Ok(())
            })
            .await?;
        }
        Ok(ids)
    }
    .await;
    conn.close().await;
    read
}

/// An entry's entryUUID, lowercased as the cache keys it.
fn entry_uuid(e: &Entry) -> Option<String> {
    let id = e.values("entryUUID").and_then(|v| v.first());
    id.map(|id| String::from_utf8_lossy(id).to_ascii_lowercase())
}

/// A filter for the entries with any of these entryUUIDs.
fn any_uuid(ids: &[String]) -> String {
    let any: String = ids
        .iter()
        .map(|id| format!("(entryUUID={})", ldap3::ldap_escape(id.as_str())))
        .collect();
    format!("(|{any})")
}

/// For entries a refresh names as gone that neither search returned: the ones that
/// still exist and may have entries under them, each with the entries (entryUUID,
/// DN) the user and group searches' filters match under it. A refresh names an
/// entry gone when it no longer matches the search, filter or base, so most are
/// entries the searches never returned (a modified entry of another kind, one added
/// and deleted between two runs); an organizational unit moved out of or into the
/// base is named alone, without the entries under it.
///
/// They are looked up in the naming context that holds the users' base, or in the
/// search bases when that search fails (an entry the bind identity cannot read, a
/// referral);
/// `None` when the server lists none, so where they went cannot be seen. An entry at or
/// above a search base is left out: moving it would move the base itself.
pub async fn entries_under(config: &LdapConfig, ids: &[String]) -> Result<Option<Lookup>, LdapError> {
    let mut conn = Conn::open(config).await?;
    let read = async {
        conn.bind(&config.bind).await?;
        let base = dn::normalize(&config.users.search.base_dn);
        let contexts = conn.read_entry("", &["namingContexts".to_owned()]).await?;
        let root = contexts
            .as_ref()
            .and_then(|e| e.values("namingContexts"))
            .unwrap_or_default()
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|nc| {
                let nc = dn::normalize(nc);
                base == nc || base.ends_with(&format!(",{nc}"))
            })
            .max_by_key(String::len);
        let Some(root) = root else {
            return Ok(None);
        };
        let (users_base, groups_base) = (&config.users.search.base_dn, &config.groups.search.base_dn);
        // Whether `inner` is `outer` or lies under it.
        let within = |inner: &str, outer: &str| {
            let (inner, outer) = (dn::normalize(inner), dn::normalize(outer));
            inner == outer || inner.ends_with(&format!(",{outer}"))
        };
        let above_a_base = |dn: &str| within(users_base, dn) || within(groups_base, dn);
        let mode = SearchMode {
            page_size: config.page_size,
            domain_scope: false,
        };
        // A bind identity that cannot read the naming context's entry, or a naming
        // context that refers elsewhere, looks in the search bases instead: what it
        // cannot read is not found either way.
        let own_bases = if within(users_base, groups_base) {
            vec![groups_base.clone()]
        } else if within(groups_base, users_base) {
            vec![users_base.clone()]
        } else {
            vec![users_base.clone(), groups_base.clone()]
        };
        let mut roots = vec![root];
        let mut parents = Vec::new();
        let mut seen = 0;
        'roots: while let Some(base) = roots.pop() {
            for chunk in ids.chunks(GROUPS_PER_SEARCH) {
                let search = config::Search {
                    base_dn: base.clone(),
                    scope: config::Scope::Sub,
                    filter: any_uuid(chunk),
                };
                let read = conn
                    .search(&search, &["hasSubordinates".to_owned()], mode, |e| {
                        seen += 1;
                        // Without the attribute, it may have entries under it.
                        let leaf = e
                            .values("hasSubordinates")
                            .and_then(|v| v.first())
                            .is_some_and(|v| v.eq_ignore_ascii_case(b"FALSE"));
                        if !leaf && !above_a_base(&e.dn) {
                            parents.push(e.dn.clone());
                        }
                        Ok(())
                    })
                    .await;
                match read {
                    Err(e) if unreadable(&e) && !own_bases.contains(&base) => {
                        (parents, seen) = (Vec::new(), 0);
                        roots = own_bases.clone();
                        continue 'roots;
                    }
                    read => read?,
                };
            }
        }
        let filters = [
            config.users.search.filter.as_str(),
            config.groups.search.filter.as_str(),
        ];
        let mut found = Vec::new();
        for dn in parents {
            // Gone since it was looked up: it holds nothing.
            if let Some([users, groups]) = conn
                .ids_under(&dn, filters, "entryUUID", mode, entry_uuid)
                .await?
            {
                found.push(EntriesUnder { dn, users, groups });
            }
        }
        Ok(Some(Lookup {
            under: found,
            unseen: seen < ids.len(),
        }))
    }
    .await;
    conn.close().await;
    read
}

/// Whether a search failed because its base cannot be read by the bind identity: it
/// does not exist, access is refused, or the server refers elsewhere.
fn unreadable(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Search {
            reason: SearchFailure::NoSuchBase { .. }
                | SearchFailure::AccessDenied { .. }
                | SearchFailure::ReferralResult { .. }
                | SearchFailure::Referral { .. },
            ..
        }
    )
}

/// What [`entries_under`] found.
#[derive(Debug)]
pub struct Lookup {
    pub under: Vec<EntriesUnder>,
    /// Whether some entries were not found: deleted, or moved where the bind
    /// identity cannot read.
    pub unseen: bool,
}

/// The first of `containers` (DNs) that no longer exists, or that the bind identity
/// can no longer read. An organizational unit moved where it cannot read is named
/// as gone and then not found, like a deleted entry; the entries it held are named
/// by nothing, and their container's DN is gone.
pub async fn missing_container(
    config: &LdapConfig,
    containers: &[String],
) -> Result<Option<String>, LdapError> {
    let mut conn = Conn::open(config).await?;
    let read = async {
        conn.bind(&config.bind).await?;
        for dn in containers {
            // What cannot be read counts as gone: the read is full, which is safe.
            match conn.read_entry(dn, &["1.1".to_owned()]).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Some(dn.clone())),
                Err(e) if unreadable(&e) => return Ok(Some(dn.clone())),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
    .await;
    conn.close().await;
    read
}

/// An entry a refresh named as gone, and the entries the user and the group
/// searches' filters match under it (entryUUID, DN).
#[derive(Debug)]
pub struct EntriesUnder {
    pub dn: String,
    pub users: Vec<(String, String)>,
    pub groups: Vec<(String, String)>,
}

/// What `dirsync check` says of a server that does not offer content synchronisation.
pub const NO_CONTENT_SYNC: &str = "the server does not offer content synchronisation (RFC 4533), so every \
     run reads the whole directory: enable OpenLDAP's syncprov overlay on the database (slapd.conf: \
     `moduleload syncprov`, then `overlay syncprov` after the database's directives; cn=config: an \
     `olcOverlay=syncprov` entry with objectClass olcSyncProvConfig under the database) and give \
     the bind identity no size limit";

/// Whether the server lists content synchronisation among its controls; `None` for
/// Active Directory (`domain_scope`), which offers its own ways instead.
pub async fn offers_content_sync(config: &LdapConfig) -> Result<Option<bool>, LdapError> {
    if config.domain_scope {
        return Ok(None);
    }
    let mut conn = Conn::open(config).await?;
    let offered = async {
        conn.bind(&config.bind).await?;
        let root = conn.read_entry("", &["supportedControl".to_owned()]).await?;
        let listed = root
            .as_ref()
            .and_then(|e| e.values("supportedControl"))
            .unwrap_or_default();
        Ok(Some(
            listed.iter().any(|oid| oid == conn::SYNC_REQUEST_OID.as_bytes()),
        ))
    }
    .await;
    conn.close().await;
    offered
}

/// Watches the user and group searches for changes (RFC 4533 `refreshAndPersist`,
/// one connection each) and calls `changed` for each change the server reports; an
/// Active Directory source (`domain_scope`) is watched by reading its domain
/// controller's highest committed USN every `poll`. Returns only with the error
/// that ended a watch.
pub async fn watch(
    config: &LdapConfig,
    poll: std::time::Duration,
    changed: impl Fn() + Clone + Send,
) -> Result<(), LdapError> {
    if config.domain_scope {
        return watch_usn(config, poll, changed).await;
    }
    let (users, groups) = (changed.clone(), changed);
    tokio::try_join!(
        watch_one(config, &config.users.search, users),
        watch_one(config, &config.groups.search, groups),
    )
    .map(|_| ())
}

/// Reads the domain controller's highest committed USN every `poll` on one
/// connection, and calls `changed` when it moved, and once when the watch is
/// open: what changed before is not known.
async fn watch_usn(
    config: &LdapConfig,
    poll: std::time::Duration,
    changed: impl Fn(),
) -> Result<(), LdapError> {
    let mut controller = usn::Controller::open(config).await?;
    let mut last = controller.dc.usn;
    changed();
    let ended = loop {
        tokio::time::sleep(poll).await;
        match controller.highest_usn().await {
            Ok(usn) if usn != last => {
                last = usn;
                changed();
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    controller.close().await;
    Err(ended)
}

async fn watch_one(
    config: &LdapConfig,
    search: &config::Search,
    changed: impl Fn(),
) -> Result<(), LdapError> {
    let mut conn = Conn::open(config).await?;
    conn.bind(&config.bind).await?;
    let ended = conn.persist(search, changed).await;
    conn.close().await;
    ended
}

/// Binds on `conn` and reads the users, the groups and the rest of any ranged
/// member values.
async fn read_on(
    conn: &mut Conn,
    config: &LdapConfig,
    report: &mut ReadReport,
) -> Result<Directory, LdapError> {
    let url = config.url.as_str();
    let started = std::time::Instant::now();
    conn.bind(&config.bind).await?;
    let mode = SearchMode {
        page_size: config.page_size,
        domain_scope: config.domain_scope,
    };
    let uid_attribute = config.groups.member_uid_attribute.as_deref();
    let mut users = Users::new(&config.users, uid_attribute);
    let stats = conn
        .search(
            &config.users.search,
            &config.users.attributes(uid_attribute),
            mode,
            |e| users.add(e).map_err(|e| LdapError::data(url, e)),
        )
        .await?;
    report.user_pages = stats.pages;
    let user_entries = stats.entries;
    let users_read = started.elapsed();
    let (list, users) = users.finish();

    let mut groups = Groups::new(&config.groups);
    let mut pending = Vec::new();
    let stats = conn
        .search(&config.groups.search, &config.groups.attributes(), mode, |e| {
            pending.extend(groups.add(e, &users).map_err(|e| LdapError::data(url, e))?);
            Ok(())
        })
        .await?;
    report.group_pages = stats.pages;
    let group_entries = stats.entries;

    // Active Directory answers at most 1,500 values of `member` at a time: keep
    // asking for the next range until the server answers with `*`.
    for first in pending {
        let mut next = Some(first);
        while let Some(p) = next {
            let answer = conn.read_entry(&p.dn, std::slice::from_ref(&p.request)).await?;
            report.range_requests += 1;
            next = groups
                .add_range(&p, answer, &users)
                .map_err(|e| LdapError::data(url, e))?;
        }
    }
    let entries_read = started.elapsed();
    let (dir, resolution) = groups.finish(list).map_err(|e| LdapError::data(url, e))?;
    tracing::debug!(
        user_entries,
        group_entries,
        users_ms = users_read.as_millis(),
        groups_ms = (entries_read - users_read).as_millis(),
        finish_ms = (started.elapsed() - entries_read).as_millis(),
        "Read the entries and resolved the members."
    );
    report.ignored_members = resolution.ignored_members;
    report.ignored_examples = resolution.ignored_examples;
    report.cycles = resolution.cycles;
    report.duplicate_names = resolution.duplicate_names;
    Ok(dir)
}
