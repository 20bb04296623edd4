//! The read of an OpenLDAP source through content synchronisation (RFC 4533
//! `refreshOnly`): the user and group searches refreshed from the stored cookies,
//! the refresh applied to the entry cache, and the directory built from the cache.
//!
//! A refresh without cookies (no cookie stored, `resync`, `full_read_every`, a
//! changed source config, a failed last read, or the server asking for it) reads
//! every entry and replaces the cache. A server without content synchronisation, or
//! a bind identity whose size limit stops an unpaged refresh, is read in full
//! through paged searches and no cache is kept.
//!
//! An Active Directory source (`domain_scope`) is read through its update sequence
//! numbers instead (`usn`): the controller's highest committed USN against the
//! stored one, then the objects changed since, read again through the configured
//! searches. Its answer takes the same shape, so the rest of the run is the same.

use std::collections::BTreeSet;

use crate::config::SourceConfig;
use crate::source::ldap::cache::{Cache, Delta, Kind};
use crate::source::ldap::{self, LdapConfig, LdapError, SearchFailure, ServerResult, Synced};
use crate::source::token::{self, Decision, Facts, ReadMode, Token};
use crate::source::{self, SourceError};
use crate::store::{EntryWrite, Store};

use super::SyncError;

mod usn;

/// The entry cache kept in memory between runs of the service with `watch = true`,
/// with the source generation it was committed under: a watched change then costs a
/// refresh and a build, not a load of every kept entry from the state database. Any
/// doubt (another generation, a failed run that took it) means a load.
#[derive(Clone, Default)]
pub struct Warm(std::sync::Arc<std::sync::Mutex<Option<(i64, Cache)>>>);

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warm")
    }
}

impl Warm {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(i64, Cache)>> {
        // A kept cache is whole or absent; a panic while it was held loses nothing.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the kept cache if it is the one committed under `generation`.
    fn take(&self, generation: i64) -> Option<Cache> {
        match self.lock().take() {
            Some((g, cache)) if g == generation => Some(cache),
            _ => None,
        }
    }

    /// Keeps `cache`, committed under `generation`, for the next run.
    pub(super) fn put(&self, generation: i64, cache: Cache) {
        *self.lock() = Some((generation, cache));
    }

    /// Drops the kept cache (the service no longer watches).
    pub(crate) fn clear(&self) {
        *self.lock() = None;
    }
}

/// The kept entries: from memory when `warm` holds the stored generation's, else from
/// the state database.
async fn kept(
    store: &Store,
    warm: Option<&Warm>,
    stored: Option<&token::Stored>,
) -> Result<Cache, SyncError> {
    if let (Some(w), Some(s)) = (warm, stored)
        && let Some(cache) = w.take(s.generation)
    {
        tracing::debug!(generation = s.generation, "Took the kept entries from memory.");
        return Ok(cache);
    }
    let loading = std::time::Instant::now();
    let cache = store.source_entries().await?;
    tracing::debug!(
        users = cache.users.len(),
        groups = cache.groups.len(),
        elapsed_ms = loading.elapsed().as_millis() as u64,
        "Loaded the kept entries from the state database."
    );
    Ok(cache)
}

/// Where the directory of this run comes from.
#[derive(Debug)]
pub(super) enum Entries {
    /// The cache, moved on by the refresh.
    Cache(Cache),
    /// The cache as stored: the refresh changed nothing, and it is loaded only if a
    /// target needs planning.
    Stored,
    /// An ordinary paged read of every entry; no cache is kept.
    FullRead,
}

/// What the refresh found, and what the run commits.
#[derive(Debug)]
pub(super) struct CachedRead {
    pub(super) decision: Decision,
    /// The cookies to store; `None` when no cache is kept.
    pub(super) token: Option<Token>,
    pub(super) entries: Entries,
    /// What changed in the cache (for `ReadMode::Incremental`).
    pub(super) delta: Delta,
}

impl CachedRead {
    /// What the run writes to the entry cache.
    pub(super) fn write(&self) -> EntryWrite<'_> {
        match (&self.entries, self.decision.mode) {
            (Entries::FullRead, _) => EntryWrite::Clear,
            (Entries::Stored, _) => EntryWrite::Keep,
            (Entries::Cache(cache), ReadMode::Incremental) => EntryWrite::Apply {
                cache,
                delta: &self.delta,
            },
            (Entries::Cache(_), ReadMode::Unchanged) => EntryWrite::Keep,
            (Entries::Cache(cache), ReadMode::Full) => EntryWrite::Replace(cache),
        }
    }

    /// The directory to plan from.
    pub(super) async fn directory(
        &self,
        store: &Store,
        config: &SourceConfig,
        ldap: &LdapConfig,
        warm: Option<&Warm>,
        stored: Option<&token::Stored>,
    ) -> Result<crate::model::Directory, SyncError> {
        match &self.entries {
            Entries::Cache(cache) => Ok(ldap::build_from_cache(ldap, cache).map_err(SourceError::from)?),
            Entries::Stored => {
                let cache = kept(store, warm, stored).await?;
                let dir = ldap::build_from_cache(ldap, &cache).map_err(SourceError::from)?;
                // Unchanged: what is kept stays valid for the same generation.
                if let (Some(w), Some(s)) = (warm, stored) {
                    w.put(s.generation, cache);
                }
                Ok(dir)
            }
            Entries::FullRead => Ok(source::read(config).await?),
        }
    }
}

/// Refreshes the source as `decide_refresh` says, on a runtime worker.
pub(super) async fn read(
    store: &Store,
    config: &LdapConfig,
    stored: Option<&token::Stored>,
    facts: Facts<'_>,
    warm: Option<&Warm>,
) -> Result<CachedRead, SyncError> {
    if config.domain_scope {
        return usn::read(store, config, stored, facts, warm).await;
    }
    let cookies = match token::decide_refresh(stored, facts) {
        token::Refresh::WithCookies { users, groups } => (users, groups),
        token::Refresh::Full { reason } => return full_refresh(config, reason).await,
    };
    let refreshing = std::time::Instant::now();
    let r = refresh(config, Some(cookies)).await;
    tracing::debug!(
        elapsed_ms = refreshing.elapsed().as_millis() as u64,
        "Refreshed the searches from the stored cookies."
    );
    let (users, groups) = match r {
        Err(e) if size_limited(&e) => return Ok(size_limit_fallback(config, &e)),
        Err(e) => return Err(SourceError::from(e).into()),
        Ok(r) => match (r.users, r.groups) {
            (Synced::Unsupported(result), _) | (_, Synced::Unsupported(result)) => {
                return Ok(unsupported(&result));
            }
            (Synced::RefreshRequired(result), _) | (_, Synced::RefreshRequired(result)) => {
                let reason = format!("the server cannot refresh from the stored cookies ({result})");
                return full_refresh(config, reason).await;
            }
            (Synced::Refreshed(users), Synced::Refreshed(groups)) => (users, groups),
        },
    };
    let cookies = token_of(&users, &groups);
    let quiet = |r: &ldap::Refresh| r.changed.is_empty() && r.deleted.is_empty() && r.present.is_none();
    if quiet(&users) && quiet(&groups) {
        return Ok(CachedRead {
            decision: unchanged(),
            token: Some(cookies),
            entries: Entries::Stored,
            delta: Delta::default(),
        });
    }
    if let Some(reason) = config.back_link_reason() {
        return full_refresh(config, reason).await;
    }
    let mut cache = kept(store, warm, stored).await?;
    let moved = Moved::by(&cache, &users, &groups);
    if let Some(reason) = moved_unnamed(config, &cache, &users, &groups, &moved).await? {
        return full_refresh(config, reason).await;
    }
    let members = &config.groups.members;
    let mut stale = groups_naming(cache.groups.iter(), members, &moved.all());
    if !moved.arrived.is_empty() && !members.is_empty() {
        let (c, dns) = (config.clone(), moved.arrived.clone());
        let named = on_worker(config, async move { ldap::groups_naming(&c, &dns).await })
            .await
            .map_err(SourceError::from)?;
        // Groups the refresh sent too: refint may have rewritten them since.
        let known: BTreeSet<&String> = stale.iter().collect();
        let named: BTreeSet<String> = named
            .into_iter()
            .filter(|id| cache.groups.contains_key(id) && !known.contains(id))
            .collect();
        stale.extend(named);
    }
    let mut delta = Delta::default();
    cache.apply(Kind::User, users, &mut delta);
    cache.apply(Kind::Group, groups, &mut delta);
    if !stale.is_empty() {
        if let Some(reason) = read_again(config, &mut cache, &mut delta, stale.clone()).await? {
            return full_refresh(config, reason).await;
        }
        // refint rewrites the member values in the background, after the answer to
        // the rename or delete: a group read again that still names an old DN may
        // have been read before it did. Such a group is read once more, a moment on
        // (on a server without refint it names the old DN for good).
        let read = stale.iter().filter_map(|id| cache.groups.get_key_value(id));
        let lagging = groups_naming(read, members, &moved.old);
        if !lagging.is_empty() {
            tokio::time::sleep(REFINT_LAG).await;
            if let Some(reason) = read_again(config, &mut cache, &mut delta, lagging).await? {
                return full_refresh(config, reason).await;
            }
        }
    }
    let decision = if delta.is_empty() {
        unchanged()
    } else {
        Decision {
            mode: ReadMode::Incremental,
            reason: format!(
                "the directory names {} changed and {} removed entries since the stored cookies",
                delta.upserted.len(),
                delta.removed.len()
            ),
            changed: true,
        }
    };
    Ok(CachedRead {
        decision,
        token: Some(cookies),
        entries: Entries::Cache(cache),
        delta,
    })
}

/// Why the read must be full when the refresh names something that moved entries
/// without naming them: after a present phase, an entry present that the cache
/// lacks (an organizational unit moved in); or an entry named as gone that neither
/// search returned and that moved with entries they return (an organizational unit
/// moved out of or into the base), looked up on the server. Mostly, such an entry
/// is one the searches never matched.
async fn moved_unnamed(
    config: &LdapConfig,
    cache: &Cache,
    users: &ldap::Refresh,
    groups: &ldap::Refresh,
    moved: &Moved,
) -> Result<Option<String>, SyncError> {
    let changed: BTreeSet<&str> = users
        .changed
        .iter()
        .chain(&groups.changed)
        .map(|(id, _)| id.as_str())
        .collect();
    let held = |id: &String| {
        cache.users.contains_key(id) || cache.groups.contains_key(id) || changed.contains(id.as_str())
    };
    let present = users.present.iter().chain(&groups.present).flatten();
    if let Some(id) = present.into_iter().find(|id| !held(id)) {
        return Ok(Some(format!(
            "the directory names entry {id} as present, which the kept entries lack"
        )));
    }
    // A present phase names unchanged entries by entryUUID alone, so an
    // organizational unit renamed inside a base moved the kept entries under it
    // unseen: its old DN is gone.
    let deleted: BTreeSet<&str> = users
        .deleted
        .iter()
        .chain(&groups.deleted)
        .map(String::as_str)
        .collect();
    let listed = |id: &str| {
        let present = if cache.users.contains_key(id) {
            &users.present
        } else {
            &groups.present
        };
        present.as_ref().is_none_or(|p| p.contains(id))
    };
    let named = |id: &str| deleted.contains(id) || changed.contains(id);
    let unnamed = |id: &str| !named(id) && listed(id);
    let present_phase = users.present.is_some() || groups.present.is_some();
    if present_phase && let Some(dn) = gone_container(config, cache, unnamed).await? {
        return Ok(Some(format!(
            "after a present phase, `{}`, which holds kept entries, is gone or can no longer be read",
            crate::text::visible(&dn)
        )));
    }
    if let Some(dn) = renamed_holder(cache, &moved.renamed, |id| !named(id)) {
        return Ok(Some(format!(
            "`{}` was renamed or moved with kept entries under it, which the server does not name",
            crate::text::visible(&dn)
        )));
    }
    // An entry with entries under it cannot be deleted alone: named as gone, it
    // moved out of the searches (a subtree move) with them, unnamed.
    if let Some(dn) = renamed_holder(cache, &moved.gone, |id| !named(id)) {
        return Ok(Some(format!(
            "`{}` is named as gone with kept entries under it, which the server does not name",
            crate::text::visible(&dn)
        )));
    }
    let unknown: Vec<String> = users
        .deleted
        .iter()
        .chain(&groups.deleted)
        .filter(|id| !held(id))
        .cloned()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    if unknown.is_empty() {
        return Ok(None);
    }
    let c = config.clone();
    let under = on_worker(config, async move { ldap::entries_under(&c, &unknown).await })
        .await
        .map_err(SourceError::from)?;
    let why = match under {
        None => Some(
            "no naming context the server lists holds the users' base, so where they went is not known"
                .to_owned(),
        ),
        Some(lookup) => match moved_with_found(cache, &lookup.under, config, &changed) {
            Some(why) => Some(why),
            // After a present phase the containers were read above.
            None if lookup.unseen && !present_phase => {
                gone_container(config, cache, unnamed).await?.map(|dn| {
                    format!(
                        "`{}`, which holds kept entries, is gone or can no longer be read, so an entry \
                         not found (deleted, or moved where the bind identity cannot read) may have moved them",
                        crate::text::visible(&dn)
                    )
                })
            }
            None => None,
        },
    };
    Ok(why.map(|why| format!("the directory names as gone entries that neither search returned: {why}")))
}

/// The first entry found under which a container moved with entries the searches
/// return, as the reason for a full read.
fn moved_with_found(
    cache: &Cache,
    under: &[ldap::EntriesUnder],
    config: &LdapConfig,
    changed: &BTreeSet<&str>,
) -> Option<String> {
    let (users_search, groups_search) = (&config.users.search, &config.groups.search);
    under
        .iter()
        .find(|u| {
            let found = [
                (users_search, u.users.as_slice()),
                (groups_search, u.groups.as_slice()),
            ];
            ldap::cache::moved_with(cache, &found, |id| changed.contains(id))
        })
        .map(|u| {
            format!(
                "`{}` moved with entries the searches return, which the server does not name",
                crate::text::visible(&u.dn)
            )
        })
}

/// The first container of the kept entries the refresh does not name (`kept`),
/// other than the search bases (a search of a base that is gone fails), that is gone
/// or can no longer be read.
async fn gone_container(
    config: &LdapConfig,
    cache: &Cache,
    kept: impl Fn(&str) -> bool,
) -> Result<Option<String>, SyncError> {
    use ldap::dn::normalize;
    let bases = [&config.users.search.base_dn, &config.groups.search.base_dn].map(|b| normalize(b));
    let containers: BTreeSet<String> = parents(cache, kept)
        .into_iter()
        .map(normalize)
        .filter(|c| !bases.contains(c))
        .collect();
    if containers.is_empty() {
        return Ok(None);
    }
    let c = config.clone();
    let containers: Vec<String> = containers.into_iter().collect();
    Ok(on_worker(
        config,
        async move { ldap::missing_container(&c, &containers).await },
    )
    .await
    .map_err(SourceError::from)?)
}

/// The parents of the kept entries `kept` selects, as the server spelled them: a few
/// distinct ones, to be normalized once each.
fn parents(cache: &Cache, kept: impl Fn(&str) -> bool) -> BTreeSet<&str> {
    cache
        .users
        .iter()
        .chain(&cache.groups)
        .filter(|(id, _)| kept(id))
        .filter_map(|(_, e)| ldap::dn::parent(&e.dn))
        .collect()
}

/// Of the old DNs of kept entries the refresh names under new ones (`renamed`,
/// normalized), the first under which kept entries it does not name (`kept`) lie (a
/// group holding a group): they moved too.
fn renamed_holder(cache: &Cache, renamed: &[String], kept: impl Fn(&str) -> bool) -> Option<String> {
    use ldap::dn::{normalize, parent};
    if renamed.is_empty() {
        return None;
    }
    let mut holders = BTreeSet::new();
    for spelled in parents(cache, kept) {
        let mut above = Some(spelled);
        while let Some(p) = above {
            if !holders.insert(normalize(p)) {
                break;
            }
            above = parent(p);
        }
    }
    renamed.iter().find(|dn| holders.contains(*dn)).cloned()
}

/// How long refint may take to rewrite member values after a rename or delete.
const REFINT_LAG: std::time::Duration = std::time::Duration::from_millis(250);

/// The normalized DNs of the entries a refresh renamed, deleted or added: before
/// (renamed, deleted) and after (renamed, added). The cached groups naming any are
/// read again: a server with referential integrity rewrites those member values
/// without the refresh naming the groups, so a renamed member would drop out, and a
/// deleted one's DN, used again, would name the new entry.
struct Moved {
    old: BTreeSet<String>,
    new: BTreeSet<String>,
    /// The DNs, as the server sent them, of the entries new to the cache: groups the
    /// cache holds may name them by a DN it never saw (one they had outside the
    /// searches, rewritten by referential integrity when they moved in), so the
    /// server is asked which groups name them.
    arrived: Vec<String>,
    /// The old DNs (normalized) of the kept entries the refresh names under new ones.
    renamed: Vec<String>,
    /// The DNs (normalized) of the kept entries the refresh names as gone.
    gone: Vec<String>,
}

impl Moved {
    fn by(cache: &Cache, users: &ldap::Refresh, groups: &ldap::Refresh) -> Moved {
        use ldap::dn::normalize;
        let mut moved = Moved {
            old: BTreeSet::new(),
            new: BTreeSet::new(),
            arrived: Vec::new(),
            renamed: Vec::new(),
            gone: Vec::new(),
        };
        for (cached, refresh) in [(&cache.users, users), (&cache.groups, groups)] {
            for (id, e) in &refresh.changed {
                match cached.get(id) {
                    Some(before) if normalize(&before.dn) == normalize(&e.dn) => {}
                    Some(before) => {
                        let old = normalize(&before.dn);
                        moved.old.insert(old.clone());
                        moved.renamed.push(old);
                        moved.new.insert(normalize(&e.dn));
                    }
                    None => {
                        moved.new.insert(normalize(&e.dn));
                        moved.arrived.push(e.dn.clone());
                    }
                }
            }
            let changed: BTreeSet<&String> = refresh.changed.iter().map(|(id, _)| id).collect();
            let gone = cached.iter().filter(|(id, _)| {
                !changed.contains(id)
                    && (refresh.deleted.contains(*id)
                        || refresh.present.as_ref().is_some_and(|p| !p.contains(*id)))
            });
            for (_, e) in gone {
                let dn = normalize(&e.dn);
                moved.old.insert(dn.clone());
                moved.gone.push(dn);
            }
        }
        moved
    }

    fn all(&self) -> BTreeSet<String> {
        self.old.union(&self.new).cloned().collect()
    }
}

/// The ids of `groups` whose member values name any of `dns` (normalized).
fn groups_naming<'g>(
    groups: impl Iterator<Item = (&'g String, &'g ldap::Entry)>,
    members: &[String],
    dns: &BTreeSet<String>,
) -> Vec<String> {
    use ldap::dn::{normalize, strip_optional_uid};
    if dns.is_empty() {
        return Vec::new();
    }
    groups
        .filter(|(_, g)| {
            g.attrs
                .iter()
                .filter(|(desc, _)| members.iter().any(|m| m.eq_ignore_ascii_case(desc)))
                .flat_map(|(_, values)| values)
                .any(|v| dns.contains(&normalize(strip_optional_uid(&String::from_utf8_lossy(v)))))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Reads the groups `ids` again and applies them to the cache; why the read must be
/// full instead, when the server asks for that.
async fn read_again(
    config: &LdapConfig,
    cache: &mut Cache,
    delta: &mut Delta,
    ids: Vec<String>,
) -> Result<Option<String>, SyncError> {
    let c = config.clone();
    let again = on_worker(config, async move { ldap::groups_by_id(&c, &ids).await });
    match again.await.map_err(SourceError::from)? {
        Some(changed) => {
            let refresh = ldap::Refresh {
                changed,
                ..ldap::Refresh::default()
            };
            cache.apply(Kind::Group, refresh, delta);
            Ok(None)
        }
        None => Ok(Some(
            "the server asked for a full refresh of the groups that name a renamed, deleted or added entry"
                .into(),
        )),
    }
}

/// The token that stores the cookies of a refresh of both searches.
fn token_of(users: &ldap::Refresh, groups: &ldap::Refresh) -> Token {
    Token::Ldap {
        users_cookie: ldap::cache::StoredValue::new(&users.cookie),
        groups_cookie: ldap::cache::StoredValue::new(&groups.cookie),
    }
}

fn unchanged() -> Decision {
    Decision {
        mode: ReadMode::Unchanged,
        reason: "the directory names no change since the stored cookies".to_owned(),
        changed: false,
    }
}

/// A refresh without cookies: every entry, replacing the cache.
async fn full_refresh(config: &LdapConfig, reason: String) -> Result<CachedRead, SyncError> {
    tracing::info!(reason, "Refreshing every entry of the source.");
    let r = match refresh(config, None).await {
        Err(e) if size_limited(&e) => return Ok(size_limit_fallback(config, &e)),
        r => r.map_err(SourceError::from)?,
    };
    let (users, groups) = match (r.users, r.groups) {
        (Synced::Unsupported(result), _) | (_, Synced::Unsupported(result)) => {
            return Ok(unsupported(&result));
        }
        (Synced::RefreshRequired(result), _) | (_, Synced::RefreshRequired(result)) => {
            return Err(SourceError::from(refused(config, result)).into());
        }
        (Synced::Refreshed(users), Synced::Refreshed(groups)) => (users, groups),
    };
    let token = token_of(&users, &groups);
    Ok(CachedRead {
        decision: Decision {
            mode: ReadMode::Full,
            reason,
            changed: true,
        },
        token: Some(token),
        entries: Entries::Cache(Cache::from_full(users, groups)),
        delta: Delta::default(),
    })
}

async fn refresh(
    config: &LdapConfig,
    cookies: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<ldap::SyncRefresh, LdapError> {
    let (users, groups) = cookies.unzip();
    let c = config.clone();
    on_worker(config, async move { ldap::sync_refresh(&c, users, groups).await }).await
}

/// Runs a read of the server on a runtime worker, beside ldap3's connection task,
/// like a full read.
async fn on_worker<T: Send + 'static>(
    config: &LdapConfig,
    read: impl Future<Output = Result<T, LdapError>> + Send + 'static,
) -> Result<T, LdapError> {
    tokio::spawn(read).await.map_err(|e| LdapError::Interrupted {
        url: config.url.clone(),
        how: source::interrupted(e),
    })?
}

/// The server offers no content synchronisation: one warning, a full paged read.
fn unsupported(result: &ServerResult) -> CachedRead {
    tracing::warn!(
        %result,
        "The server does not offer content synchronisation; every run reads the whole directory: enable the syncprov overlay \
         (OpenLDAP: `moduleload syncprov` and `overlay syncprov` on the database) to read only what changed."
    );
    full_read("the server does not offer content synchronisation")
}

/// A refresh is not paged, so the bind identity's size limit applies to it whole.
fn size_limited(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Search {
            reason: SearchFailure::SizeLimit { .. } | SearchFailure::SizeLimitPaged { .. },
            ..
        }
    )
}

fn size_limit_fallback(config: &LdapConfig, e: &LdapError) -> CachedRead {
    let bind_dn = match &config.bind {
        ldap::Bind::Simple { dn, .. } => dn.as_str(),
        ldap::Bind::Anonymous => "anonymous",
    };
    tracing::warn!(
        error = %e,
        bind_dn,
        "The server's size limit stops a content synchronisation refresh, which is not paged; every run reads the whole \
         directory through paged searches until the limit is lifted for the bind identity (OpenLDAP: \
         `limits dn.exact=\"<bind dn>\" size=unlimited`)."
    );
    full_read("the server's size limit stops a content synchronisation refresh")
}

fn full_read(reason: &str) -> CachedRead {
    CachedRead {
        decision: Decision {
            mode: ReadMode::Full,
            reason: reason.to_owned(),
            changed: true,
        },
        token: None,
        entries: Entries::FullRead,
        delta: Delta::default(),
    }
}

/// A refresh without cookies that the server still refuses.
fn refused(config: &LdapConfig, result: ServerResult) -> LdapError {
    LdapError::Search {
        url: config.url.clone(),
        base: config.users.search.base_dn.clone(),
        filter: config.users.search.filter.clone(),
        reason: SearchFailure::Refused { result },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(mail: &str) -> Cache {
        let mut c = Cache::default();
        let entry = crate::source::ldap::Entry {
            dn: "uid=a,ou=people,dc=example,dc=com".into(),
            attrs: vec![("mail".into(), vec![mail.as_bytes().to_vec()])],
        };
        c.users.insert("a".into(), entry);
        c
    }

    /// The kept cache is handed out once, and only for the generation it was kept
    /// under: a run that takes it and fails leaves nothing stale behind.
    #[test]
    fn a_kept_cache_serves_only_its_own_generation_once() {
        let warm = Warm::default();
        warm.put(4, cache("a@x"));
        assert_eq!(warm.take(5), None, "another generation: loaded from the database");
        assert_eq!(warm.take(4), None, "a mismatch drops it");
        warm.put(4, cache("a@x"));
        assert_eq!(warm.take(4), Some(cache("a@x")));
        assert_eq!(warm.take(4), None, "taken");
        warm.put(4, cache("a@x"));
        warm.clear();
        assert_eq!(warm.take(4), None);
    }
}
