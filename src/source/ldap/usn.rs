//! Active Directory read through its update sequence numbers: the domain
//! controller's `highestCommittedUSN` says whether anything changed, a search for
//! `uSNChanged` above the stored USN (with tombstones, through the show-deleted
//! control) names what did, and the configured searches read those objects again
//! by objectGUID. The entries are keyed by objectGUID in the entry cache.
//!
//! Which controller answered, and which copy of its database, is its
//! `dsServiceName` and `invocationId`: a USN means something only to the copy that
//! counted it, so the caller compares both before trusting a stored USN.
//!
//! A group's `member` values name its members by DN as they were when the group
//! was read; a member renamed, moved or deleted later leaves the group's
//! `uSNChanged` as it was. So the groups that list a renamed, moved or returning
//! object (its `memberOf`), and the cached groups that name a deleted one, are read
//! again with it.

use std::collections::{BTreeMap, BTreeSet};

use ldap3::controls::RawControl;

use super::cache::Cache;
use super::config::{LdapConfig, Scope, Search};
use super::conn::{Conn, Refresh, SHOW_DELETED_OID, SearchMode};
use super::entry::Entry;
use super::error::{DataProblem, LdapError, RangeStop, SearchFailure};
use super::{ad, dn};

/// The DN of the domain's Deleted Objects container.
fn deleted_objects(naming_context: &str) -> String {
    format!("CN=Deleted Objects,{naming_context}")
}

/// Why every read is full for a bind identity that cannot read the Deleted Objects
/// container of `naming_context`, and what to grant.
pub fn deletions_unseen(naming_context: &str) -> String {
    let container = crate::text::visible(&deleted_objects(naming_context)).into_owned();
    format!(
        "the bind identity cannot read `{container}`, so a read of what changed would not see \
         deletions, and every read is full; grant it List Contents and Read Property there \
         (`dsacls \"{container}\" /takeownership`, then `dsacls \"{container}\" /G <account>:LCRP`) \
         to read only what changed"
    )
}

/// Whether the bind identity of an Active Directory source sees deleted objects
/// (`Controller::sees_deleted_objects`), for `dirsync check`: with the naming
/// context, so that the caller can say what to grant. `None` for another server.
pub async fn probe_deleted_objects(config: &LdapConfig) -> Result<Option<(bool, String)>, LdapError> {
    if !config.domain_scope {
        return Ok(None);
    }
    let mut controller = Controller::open(config).await?;
    let seen = controller.sees_deleted_objects().await;
    let naming_context = controller.dc.naming_context.clone();
    controller.close().await;
    Ok(Some((seen?, naming_context)))
}

/// Object GUIDs per re-read search: short enough for any server's filter limits.
const GUIDS_PER_SEARCH: usize = 100;

/// Which domain controller answers, which copy of its database, and how far its
/// changes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcState {
    /// `highestCommittedUSN` of the root DSE when the read began.
    pub usn: u64,
    /// The controller's `invocationId` (a GUID); a restored database gets a new one.
    pub invocation_id: String,
    /// The DN of the controller's NTDS settings object.
    pub ds_service_name: String,
    /// `defaultNamingContext`: where the search for changes starts.
    pub naming_context: String,
}

/// What changed since a USN, as the configured searches see it.
#[derive(Debug, Default)]
pub struct UsnChanges {
    /// Users to write (changed) and to remove (deleted: gone, or out of the search).
    pub users: Refresh,
    pub groups: Refresh,
    /// Objects whose `uSNChanged` moved, tombstones included.
    pub changed: usize,
    pub tombstones: usize,
}

/// An open, bound connection to a domain controller and its state when it was
/// opened.
#[derive(Debug)]
pub struct Controller {
    conn: Conn,
    pub dc: DcState,
    url: String,
}

impl Controller {
    /// Connects, binds and reads the controller's state: the root DSE, then its
    /// NTDS settings object for the `invocationId`.
    pub async fn open(config: &LdapConfig) -> Result<Controller, LdapError> {
        let mut conn = Conn::open(config).await?;
        match Controller::state(&mut conn, config).await {
            Ok(dc) => Ok(Controller {
                conn,
                dc,
                url: config.url.clone(),
            }),
            Err(e) => {
                conn.close().await;
                Err(e)
            }
        }
    }

    async fn state(conn: &mut Conn, config: &LdapConfig) -> Result<DcState, LdapError> {
        conn.bind(&config.bind).await?;
        let (usn, ds_service_name, naming_context) = root_dse(conn, &config.url).await?;
        let settings = conn
            .read_entry(&ds_service_name, &["invocationId".to_owned()])
            .await?;
        let invocation_id = settings
            .as_ref()
            .and_then(|e| e.values("invocationId"))
            .and_then(|v| v.first())
            .and_then(|b| ad::guid(b).ok())
            .ok_or_else(|| bad(&config.url, &ds_service_name, "no invocationId of 16 bytes"))?;
        Ok(DcState {
            usn,
            invocation_id,
            ds_service_name,
            naming_context,
        })
    }

    /// The controller's current `highestCommittedUSN`.
    pub async fn highest_usn(&mut self) -> Result<u64, LdapError> {
        Ok(root_dse(&mut self.conn, &self.url).await?.0)
    }

    /// Every entry of the user and group searches, keyed by objectGUID, with each
    /// ranged `member` attribute read to its end.
    pub async fn full(&mut self, config: &LdapConfig) -> Result<Cache, LdapError> {
        let users = self.read(config, Kind::Users, None).await?;
        let groups = self.read(config, Kind::Groups, None).await?;
        Ok(Cache {
            users: users.into_iter().collect(),
            groups: groups.into_iter().collect(),
        })
    }

    /// Whether the bind identity sees deleted objects: the Deleted Objects
    /// container, read with the show-deleted control, shows it `isDeleted: TRUE`. By
    /// default only administrators may read it (Microsoft KB 892806); for any other
    /// account a search for what changed returns no tombstone and no error, and
    /// deletions would go unseen.
    pub async fn sees_deleted_objects(&mut self) -> Result<bool, LdapError> {
        let search = Search {
            base_dn: deleted_objects(&self.dc.naming_context),
            scope: Scope::Base,
            filter: "(isDeleted=TRUE)".to_owned(),
        };
        let mode = SearchMode {
            page_size: 0,
            domain_scope: true,
        };
        let show_deleted = RawControl {
            ctype: SHOW_DELETED_OID.to_owned(),
            crit: true,
            val: None,
        };
        let mut seen = false;
        let read = self
            .conn
            .search_with(
                &search,
                &["isDeleted".to_owned()],
                mode,
                vec![show_deleted],
                |e| {
                    // Without the right to read it, the container comes back with no
                    // attribute at all (Samba matches the filter all the same).
                    seen |= e
                        .values("isDeleted")
                        .and_then(|v| v.first())
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"TRUE"));
                    Ok(())
                },
            )
            .await;
        match read {
            Ok(_) => Ok(seen),
            Err(LdapError::Search {
                reason: SearchFailure::NoSuchBase { .. } | SearchFailure::AccessDenied { .. },
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The users, contacts and groups (of the whole domain), and whatever else the
    /// configured searches take, whose `uSNChanged` is above `since`, the USN
    /// stored by the last read, tombstones included (a tombstone keeps its
    /// objectClass); and the organizational units and containers whose own
    /// `uSNChanged` is: renaming or moving one moves the entries under it without
    /// changing theirs.
    pub async fn changed_since(&mut self, config: &LdapConfig, since: u64) -> Result<Found, LdapError> {
        let search = Search {
            base_dn: self.dc.naming_context.clone(),
            scope: Scope::Sub,
            filter: format!(
                "(&(uSNChanged>={})(|(objectClass=user)(objectClass=contact)(objectClass=group)\
                 (objectClass=organizationalUnit)(objectClass=container){}{}))",
                since.saturating_add(1),
                config.users.search.filter,
                config.groups.search.filter,
            ),
        };
        let attrs = ["objectGUID", "isDeleted", "memberOf", "objectClass"].map(str::to_owned);
        // Always scoped to the domain: at the naming context's root a controller
        // refers to its other partitions otherwise.
        let mode = SearchMode {
            page_size: config.page_size,
            domain_scope: true,
        };
        let show_deleted = RawControl {
            ctype: SHOW_DELETED_OID.to_owned(),
            crit: true,
            val: None,
        };
        let mut live: Vec<(String, Entry)> = Vec::new();
        let mut tombstones = BTreeSet::new();
        let mut containers = Vec::new();
        let url = self.url.clone();
        self.conn
            .search_with(&search, &attrs, mode, vec![show_deleted], |e| {
                let guid = entry_guid(e)
                    .ok_or_else(|| bad(&url, &e.dn, "an entry without an objectGUID of 16 bytes"))?;
                let deleted = e
                    .values("isDeleted")
                    .and_then(|v| v.first())
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"TRUE"));
                if is_container(e) {
                    // A container is deleted only once what it held is: their own
                    // tombstones say so.
                    if !deleted {
                        containers.push(e.dn.clone());
                    }
                } else if deleted {
                    tombstones.insert(guid);
                } else {
                    live.push((guid, e.clone()));
                }
                Ok(())
            })
            .await?;
        // A user in more groups than the controller names at once gets a ranged
        // `memberOf;range=0-1499`: read to its end, as a group's `member` is.
        let mut changed = Vec::with_capacity(live.len());
        for (guid, mut e) in live {
            self.complete_range(&mut e, "memberOf").await?;
            let member_of = e
                .values("memberOf")
                .unwrap_or_default()
                .iter()
                .map(|v| dn::normalize(&String::from_utf8_lossy(v)))
                .collect();
            changed.push(Changed {
                guid,
                dn: e.dn,
                member_of,
            });
        }
        let live = changed;
        Ok(Found {
            live,
            tombstones,
            containers,
        })
    }

    /// Whether the changed container `dn` moved with entries the user and group
    /// searches return (`cache::moved_with`): renamed or moved out with kept
    /// entries, or moved into a base with entries not kept. A container gone since
    /// the change search moved nothing.
    pub async fn moved_with(
        &mut self,
        config: &LdapConfig,
        dn: &str,
        cache: &Cache,
        found: &Found,
    ) -> Result<bool, LdapError> {
        let mode = SearchMode {
            page_size: config.page_size,
            domain_scope: config.domain_scope,
        };
        let (users, groups) = (&config.users.search, &config.groups.search);
        let filters = [users.filter.as_str(), groups.filter.as_str()];
        let Some([in_users, in_groups]) = self
            .conn
            .ids_under(dn, filters, "objectGUID", mode, entry_guid)
            .await?
        else {
            return Ok(false);
        };
        let changed: BTreeSet<&str> = found.live.iter().map(|c| c.guid.as_str()).collect();
        let under = [(users, in_users.as_slice()), (groups, in_groups.as_slice())];
        Ok(super::cache::moved_with(cache, &under, |guid| {
            changed.contains(guid)
        }))
    }

    /// The DN of the object `guid` now (not deleted), anywhere in the domain.
    pub async fn dn_of(&mut self, config: &LdapConfig, guid: &str) -> Result<Option<String>, LdapError> {
        let Some(bytes) = ad::guid_bytes(guid) else {
            return Ok(None);
        };
        let search = Search {
            base_dn: self.dc.naming_context.clone(),
            scope: Scope::Sub,
            filter: ad::guid_filter(&bytes),
        };
        let mode = SearchMode {
            page_size: config.page_size,
            domain_scope: true,
        };
        let mut found = None;
        self.conn
            .search(&search, &["1.1".to_owned()], mode, |e| {
                found = Some(e.dn.clone());
                Ok(())
            })
            .await?;
        Ok(found)
    }

    /// What `found` changed against the entries of `cache`: each object read again
    /// through the configured searches; what they no longer return, and every
    /// tombstone, is removed.
    pub async fn changes(
        &mut self,
        config: &LdapConfig,
        found: Found,
        cache: &Cache,
    ) -> Result<UsnChanges, LdapError> {
        let Found { live, tombstones, .. } = found;
        let changed = live.len() + tombstones.len();
        let mut again: BTreeSet<String> = live.iter().map(|c| c.guid.clone()).collect();
        again.extend(groups_naming_moved(cache, &live));
        again.extend(groups_naming_deleted(cache, &tombstones, &config.groups.members));
        let users = self.read(config, Kind::Users, Some(&again)).await?;
        let groups = self.read(config, Kind::Groups, Some(&again)).await?;
        let gone = |found: &BTreeMap<String, Entry>| -> BTreeSet<String> {
            again
                .iter()
                .chain(&tombstones)
                .filter(|g| !found.contains_key(*g))
                .cloned()
                .collect()
        };
        let (users_gone, groups_gone) = (gone(&users), gone(&groups));
        Ok(UsnChanges {
            users: Refresh {
                changed: users.into_iter().collect(),
                deleted: users_gone,
                ..Refresh::default()
            },
            groups: Refresh {
                changed: groups.into_iter().collect(),
                deleted: groups_gone,
                ..Refresh::default()
            },
            changed,
            tombstones: tombstones.len(),
        })
    }

    /// The entries of one configured search, keyed by objectGUID: all of them, or
    /// only those of `guids` (in chunks, each ANDed with the search's filter).
    async fn read(
        &mut self,
        config: &LdapConfig,
        kind: Kind,
        guids: Option<&BTreeSet<String>>,
    ) -> Result<BTreeMap<String, Entry>, LdapError> {
        let (search, mut attrs, members) = match kind {
            Kind::Users => {
                let uid = config.groups.member_uid_attribute.as_deref();
                (&config.users.search, config.users.attributes(uid), &[][..])
            }
            Kind::Groups => (
                &config.groups.search,
                config.groups.attributes(),
                config.groups.members.as_slice(),
            ),
        };
        if !attrs.iter().any(|a| a.eq_ignore_ascii_case("objectGUID")) {
            attrs.push("objectGUID".to_owned());
        }
        let mode = SearchMode {
            page_size: config.page_size,
            domain_scope: config.domain_scope,
        };
        let filters: Vec<String> = match guids {
            None => vec![search.filter.clone()],
            Some(guids) => {
                let parts: Vec<String> = guids
                    .iter()
                    .filter_map(|g| ad::guid_bytes(g))
                    .map(|b| ad::guid_filter(&b))
                    .collect();
                parts
                    .chunks(GUIDS_PER_SEARCH)
                    .map(|chunk| format!("(&{}(|{}))", search.filter, chunk.concat()))
                    .collect()
            }
        };
        let mut found = BTreeMap::new();
        let url = self.url.clone();
        for filter in filters {
            let search = Search {
                filter,
                ..search.clone()
            };
            self.conn
                .search(&search, &attrs, mode, |e| {
                    let guid = entry_guid(e)
                        .ok_or_else(|| bad(&url, &e.dn, "an entry without an objectGUID of 16 bytes"))?;
                    found.insert(guid, e.clone());
                    Ok(())
                })
                .await?;
        }
        for e in found.values_mut() {
            for attr in members {
                self.complete_range(e, attr).await?;
            }
        }
        Ok(found)
    }

    /// Reads the rest of a ranged attribute (`member;range=0-1499`) and keeps every
    /// value under the attribute's own name, so a cached entry is whole.
    async fn complete_range(&mut self, e: &mut Entry, attribute: &str) -> Result<(), LdapError> {
        let Some((at, range)) = e
            .attrs
            .iter()
            .enumerate()
            .find_map(|(i, (desc, _))| ad::parse_range(desc, attribute).map(|r| (i, r)))
        else {
            return Ok(());
        };
        let mut values = std::mem::take(&mut e.attrs[at].1);
        let mut next = range.next_request(attribute);
        while let Some(request) = next {
            let stopped = |why| LdapError::Data {
                url: self.url.clone(),
                dn: e.dn.clone(),
                attribute: Some(request.clone()),
                problem: DataProblem::RangeStopped(why),
            };
            let answer = self
                .conn
                .read_entry(&e.dn, std::slice::from_ref(&request))
                .await?
                .ok_or_else(|| stopped(RangeStop::NoEntry))?;
            let (range, more) = answer
                .attrs
                .into_iter()
                .find_map(|(desc, v)| ad::parse_range(&desc, attribute).map(|r| (r, v)))
                .ok_or_else(|| stopped(RangeStop::NoValues))?;
            range.answers(&request, attribute).map_err(stopped)?;
            values.extend(more);
            next = range.next_request(attribute);
        }
        e.attrs[at] = (attribute.to_owned(), values);
        Ok(())
    }

    /// Ends the connection; a failure here changes nothing that was read.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Users,
    Groups,
}

/// The objects whose `uSNChanged` moved.
#[derive(Debug, Default)]
pub struct Found {
    live: Vec<Changed>,
    /// Deleted objects, by objectGUID.
    tombstones: BTreeSet<String>,
    /// The DNs of organizational units and containers (not deleted).
    containers: Vec<String>,
}

impl Found {
    /// No user or group changed: the USN moved for other objects only.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.tombstones.is_empty()
    }

    /// Whether an organizational unit or container changed.
    pub fn has_containers(&self) -> bool {
        !self.containers.is_empty()
    }

    /// The changed organizational units and containers, each with a cached entry
    /// under it that did not change itself (nor was deleted), or none. A container with none was
    /// renamed or moved (the entries under it kept their `uSNChanged` and their
    /// cached DNs are stale), or is new, or holds nothing the searches return (a
    /// Group Policy container, an OU of computers). A container with one was edited
    /// in place, or took the name of another that moved (two OUs that swapped
    /// names): the entry's DN on the server tells which.
    pub fn containers<'f>(&'f self, cache: &'f Cache) -> Vec<(&'f str, Option<Held<'f>>)> {
        let under: Vec<String> = self
            .containers
            .iter()
            .map(|c| format!(",{}", dn::normalize(c)))
            .collect();
        let changed: BTreeSet<&str> = self
            .live
            .iter()
            .map(|c| c.guid.as_str())
            .chain(self.tombstones.iter().map(String::as_str))
            .collect();
        let mut held: Vec<Option<Held<'f>>> = vec![None; under.len()];
        let entries = cache.users.iter().chain(&cache.groups);
        for (guid, e) in entries.filter(|(guid, _)| !changed.contains(guid.as_str())) {
            let entry = dn::normalize(&e.dn);
            for (i, suffix) in under.iter().enumerate() {
                if held[i].is_none() && entry.ends_with(suffix.as_str()) {
                    held[i] = Some(Held { guid, dn: &e.dn });
                }
            }
        }
        self.containers.iter().map(String::as_str).zip(held).collect()
    }
}

/// A cached entry under a changed container, with the DN it was cached under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'c> {
    pub guid: &'c str,
    pub dn: &'c str,
}

/// The first configured search base that is not under `naming_context`, the
/// partition the change search covers: what changes there is never seen, so the
/// read must be full (a global catalog answering for another domain, say).
pub fn base_outside<'c>(config: &'c LdapConfig, naming_context: &str) -> Option<&'c str> {
    let nc = dn::normalize(naming_context);
    [&config.users.search.base_dn, &config.groups.search.base_dn]
        .into_iter()
        .find(|base| {
            let base = dn::normalize(base);
            base != nc && !base.ends_with(&format!(",{nc}"))
        })
        .map(String::as_str)
}

/// An organizational unit or container, and not a user or group (a user is a
/// container of nothing, but some classes derive from both).
fn is_container(e: &Entry) -> bool {
    let classes = e.values("objectClass").unwrap_or_default();
    let has = |class: &str| classes.iter().any(|v| v.eq_ignore_ascii_case(class.as_bytes()));
    (has("organizationalUnit") || has("container")) && !has("user") && !has("group")
}

/// An object whose `uSNChanged` moved and that is not deleted.
#[derive(Debug)]
struct Changed {
    guid: String,
    dn: String,
    /// Normalized DNs of the groups that list it.
    member_of: Vec<String>,
}

/// The cached groups whose `member` values name an object by a DN it no longer
/// has: the groups (`memberOf`) of every changed object that the cache holds under
/// another DN, or does not hold (new, or back in the searches).
fn groups_naming_moved(cache: &Cache, changed: &[Changed]) -> BTreeSet<String> {
    let moved: Vec<&Changed> = changed
        .iter()
        .filter(|c| {
            let cached = cache.users.get(&c.guid).or_else(|| cache.groups.get(&c.guid));
            cached.is_none_or(|e| dn::normalize(&e.dn) != dn::normalize(&c.dn))
        })
        .filter(|c| !c.member_of.is_empty())
        .collect();
    if moved.is_empty() {
        return BTreeSet::new();
    }
    let by_dn: BTreeMap<String, &String> = cache
        .groups
        .iter()
        .map(|(guid, e)| (dn::normalize(&e.dn), guid))
        .collect();
    moved
        .iter()
        .flat_map(|c| &c.member_of)
        .filter_map(|group| by_dn.get(group).map(|g| (*g).clone()))
        .collect()
}

/// The cached groups whose `member` values name a deleted object: a controller
/// removes a deleted object's links without moving the groups' `uSNChanged`, so
/// the cache would keep naming it, and its DN, if used again, would name another.
/// For a deleted object the cache never held, every group with a member value that
/// names no cached entry.
fn groups_naming_deleted(
    cache: &Cache,
    tombstones: &BTreeSet<String>,
    members: &[String],
) -> BTreeSet<String> {
    let gone: BTreeSet<String> = tombstones
        .iter()
        .filter_map(|g| cache.users.get(g).or_else(|| cache.groups.get(g)))
        .map(|e| dn::normalize(&e.dn))
        .collect();
    // A deleted object the cache never held (outside the bases, or left out by a
    // filter) leaves no DN to look for: any member value that names no cached entry
    // may have been its, so the groups holding such values are read again.
    let unkept = tombstones
        .iter()
        .any(|g| !cache.users.contains_key(g) && !cache.groups.contains_key(g));
    let kept: BTreeSet<String> = if unkept {
        cache
            .users
            .values()
            .chain(cache.groups.values())
            .map(|e| dn::normalize(&e.dn))
            .collect()
    } else {
        BTreeSet::new()
    };
    if gone.is_empty() && !unkept {
        return BTreeSet::new();
    }
    let stale = |dn: &String| gone.contains(dn) || (unkept && !kept.contains(dn));
    cache
        .groups
        .iter()
        .filter(|(_, e)| {
            members.iter().any(|attr| {
                e.values(attr)
                    .unwrap_or_default()
                    .iter()
                    .any(|v| stale(&dn::normalize(&String::from_utf8_lossy(v))))
            })
        })
        .map(|(guid, _)| guid.clone())
        .collect()
}

/// Reads the root DSE: `highestCommittedUSN` (given only when asked for by name),
/// `dsServiceName` and `defaultNamingContext`.
async fn root_dse(conn: &mut Conn, url: &str) -> Result<(u64, String, String), LdapError> {
    let attrs = ["highestCommittedUSN", "dsServiceName", "defaultNamingContext"].map(str::to_owned);
    let root = conn.read_entry("", &attrs).await?;
    let text = |name: &str| {
        root.as_ref()
            .and_then(|e| e.values(name))
            .and_then(|v| v.first())
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(|s| s.trim().to_owned())
    };
    let usn = text("highestCommittedUSN")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(url, "", "no highestCommittedUSN in the root DSE"))?;
    let service = text("dsServiceName").ok_or_else(|| bad(url, "", "no dsServiceName in the root DSE"))?;
    let naming_context = text("defaultNamingContext")
        .ok_or_else(|| bad(url, "", "no defaultNamingContext in the root DSE"))?;
    Ok((usn, service, naming_context))
}

fn entry_guid(e: &Entry) -> Option<String> {
    e.values("objectGUID")
        .and_then(|v| v.first())
        .and_then(|b| ad::guid(b).ok())
}

fn bad(url: &str, base: &str, what: &'static str) -> LdapError {
    LdapError::Search {
        url: url.to_owned(),
        base: base.to_owned(),
        filter: "(objectClass=*)".to_owned(),
        reason: SearchFailure::BadUsn { what },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::conn::tests::{Answer, done, entry_with, scripted};
    use crate::source::ldap::entry::tests::entry;

    /// Attribute names and values of one scripted entry.
    type Attrs = Vec<(&'static str, Vec<Vec<u8>>)>;

    /// One search's answer: these entries (DN, attributes), then success.
    fn answer(entries: Vec<(&'static str, Attrs)>) -> Answer {
        Box::new(move |id| {
            let mut out = Vec::new();
            for (dn, attrs) in &entries {
                let values: Vec<Vec<&[u8]>> = attrs
                    .iter()
                    .map(|(_, v)| v.iter().map(Vec::as_slice).collect())
                    .collect();
                let attrs: Vec<(&str, &[&[u8]])> = attrs
                    .iter()
                    .zip(&values)
                    .map(|((name, _), v)| (*name, v.as_slice()))
                    .collect();
                out.extend(entry_with(id, dn, &attrs));
            }
            out.extend(done(id, 0, &[]));
            out
        })
    }

    /// The change search covers the default naming context: a search base outside
    /// it is named, one at or under it is not.
    #[tokio::test]
    async fn a_search_base_outside_the_naming_context_is_named() {
        let mut config = scripted(Vec::new(), false).await;
        let set = |config: &mut LdapConfig, users: &str, groups: &str| {
            config.users.search.base_dn = users.into();
            config.groups.search.base_dn = groups.into();
        };
        set(&mut config, "DC=corp,DC=example", "OU=Staff, DC=Corp,DC=example");
        assert_eq!(base_outside(&config, "dc=corp,dc=example"), None);
        set(&mut config, "OU=Staff,DC=corp,DC=example", "DC=emea,DC=example");
        assert_eq!(
            base_outside(&config, "DC=corp,DC=example"),
            Some("DC=emea,DC=example")
        );
        set(&mut config, "DC=xcorp,DC=example", "DC=corp,DC=example");
        assert_eq!(
            base_outside(&config, "DC=corp,DC=example"),
            Some("DC=xcorp,DC=example")
        );
    }

    /// A changed container is checked through a cached entry under it that did not
    /// change itself (edited in place, or swapped names with another); one without
    /// such an entry was renamed, moved or holds nothing read.
    #[test]
    fn a_changed_container_is_checked_through_an_unchanged_entry_under_it() {
        let mut cache = Cache::default();
        let tom = "CN=Tom,OU=Team,OU=Staff,DC=x";
        cache.users.insert("u".into(), entry(tom, &[]));
        let found = |dn: &str| Found {
            containers: vec![dn.to_owned()],
            ..Found::default()
        };
        let held = Some((String::from("u"), String::from(tom)));
        let checks = |f: &Found| -> Vec<Option<(String, String)>> {
            let held = |h: Held<'_>| (h.guid.to_owned(), h.dn.to_owned());
            f.containers(&cache)
                .into_iter()
                .map(|(_, h)| h.map(held))
                .collect()
        };
        assert_eq!(
            checks(&found("ou=team, ou=staff,dc=x")),
            std::slice::from_ref(&held)
        );
        assert_eq!(checks(&found("OU=Staff,DC=x")), [held]);
        assert_eq!(checks(&found("OU=Crew,OU=Staff,DC=x")), [None]);
        // A container named like the tail of another is not above it.
        assert_eq!(checks(&found("OU=eam,OU=Staff,DC=x")), [None]);
        // An entry that changed itself is read again: it tells nothing of its container.
        let mut changed = found("OU=Team,OU=Staff,DC=x");
        changed.live.push(Changed {
            guid: "u".into(),
            dn: tom.into(),
            member_of: Vec::new(),
        });
        assert_eq!(checks(&changed), [None]);
        // Nor does one deleted since: it is found nowhere.
        let mut deleted = found("OU=Team,OU=Staff,DC=x");
        deleted.tombstones.insert("u".into());
        assert_eq!(checks(&deleted), [None]);
        assert!(!Found::default().has_containers());
    }

    /// The answers to `Controller::open`: the root DSE (USN 4003, naming context
    /// `dc=x`) and the NTDS settings object.
    fn opening() -> Vec<Answer> {
        let v = |s: &str| vec![s.as_bytes().to_vec()];
        vec![
            answer(vec![(
                "",
                vec![
                    ("highestCommittedUSN", v("4003")),
                    ("dsServiceName", v("CN=NTDS Settings,CN=DC1")),
                    ("defaultNamingContext", v("dc=x")),
                ],
            )]),
            answer(vec![(
                "CN=NTDS Settings,CN=DC1",
                vec![("invocationId", vec![vec![9; 16]])],
            )]),
        ]
    }

    /// A group whose `member` comes in two ranges is read to the end and cached
    /// whole under `member`; the controller's state comes from the root DSE and its
    /// NTDS settings object.
    #[tokio::test]
    async fn a_ranged_member_attribute_is_cached_whole() {
        let v = |s: &str| vec![s.as_bytes().to_vec()];
        let mut answers = opening();
        answers.extend([
            answer(vec![("uid=a,dc=x", vec![("objectGUID", vec![vec![1; 16]])])]),
            answer(vec![(
                "cn=g,dc=x",
                vec![
                    ("objectGUID", vec![vec![2; 16]]),
                    ("member;range=0-0", v("uid=a,dc=x")),
                ],
            )]),
            answer(vec![("cn=g,dc=x", vec![("member;range=1-1", v("uid=b,dc=x"))])]),
            answer(vec![("cn=g,dc=x", vec![("member;range=2-*", v("uid=c,dc=x"))])]),
        ]);
        let config = scripted(answers, true).await;
        let mut controller = Controller::open(&config).await.expect("opens");
        assert_eq!(
            controller.dc,
            DcState {
                usn: 4003,
                invocation_id: "09090909-0909-0909-0909-090909090909".into(),
                ds_service_name: "CN=NTDS Settings,CN=DC1".into(),
                naming_context: "dc=x".into(),
            }
        );
        let cache = controller.full(&config).await.expect("reads");
        controller.close().await;
        let group = &cache.groups["02020202-0202-0202-0202-020202020202"];
        let member: Vec<&[u8]> = group
            .values("member")
            .expect("member")
            .iter()
            .map(Vec::as_slice)
            .collect();
        assert_eq!(member, [&b"uid=a,dc=x"[..], b"uid=b,dc=x", b"uid=c,dc=x"]);
        assert!(group.attrs.iter().all(|(d, _)| !d.contains(';')), "{group:?}");
        assert!(cache.users.contains_key("01010101-0101-0101-0101-010101010101"));
    }

    /// A changed user in more groups than one answer names gets a ranged
    /// `memberOf`, read to its end; a changed OU is kept apart from users and groups.
    #[tokio::test]
    async fn a_ranged_member_of_is_read_to_its_end() {
        let v = |s: &str| vec![s.as_bytes().to_vec()];
        let mut answers = opening();
        answers.extend([
            answer(vec![
                (
                    "uid=a,dc=x",
                    vec![
                        ("objectGUID", vec![vec![1; 16]]),
                        ("objectClass", vec![b"top".to_vec(), b"user".to_vec()]),
                        ("memberOf;range=0-0", v("cn=g1,dc=x")),
                    ],
                ),
                (
                    "ou=team,dc=x",
                    vec![
                        ("objectGUID", vec![vec![3; 16]]),
                        ("objectClass", v("organizationalUnit")),
                    ],
                ),
            ]),
            answer(vec![(
                "uid=a,dc=x",
                vec![("memberOf;range=1-*", v("cn=g2,dc=x"))],
            )]),
        ]);
        let config = scripted(answers, true).await;
        let mut controller = Controller::open(&config).await.expect("opens");
        let found = controller.changed_since(&config, 4000).await.expect("reads");
        controller.close().await;
        assert_eq!(found.live.len(), 1, "{found:?}");
        let want: Vec<String> = ["cn=g1,dc=x", "cn=g2,dc=x"].map(dn::normalize).into();
        assert_eq!(found.live[0].member_of, want);
        assert_eq!(found.containers, ["ou=team,dc=x"]);
    }

    fn changed(guid: &str, dn: &str, member_of: &[&str]) -> Changed {
        Changed {
            guid: guid.to_owned(),
            dn: dn.to_owned(),
            member_of: member_of.iter().map(|d| dn::normalize(d)).collect(),
        }
    }

    /// The groups read again with a changed object: only those listing an object
    /// whose DN moved, or that the cache does not hold, and only cached groups.
    #[test]
    fn groups_that_name_a_moved_object_are_read_again() {
        let cache = Cache {
            users: [("u1", "CN=Ann,OU=Staff,DC=x"), ("u2", "CN=Bob,OU=Staff,DC=x")]
                .into_iter()
                .map(|(g, d)| (g.to_owned(), entry(d, &[])))
                .collect(),
            groups: [("g1", "CN=Eng,OU=Groups,DC=x"), ("g2", "CN=Ops,OU=Groups,DC=x")]
                .into_iter()
                .map(|(g, d)| (g.to_owned(), entry(d, &[])))
                .collect(),
        };
        let check = |changes: &[Changed], want: &[&str]| {
            let got = groups_naming_moved(&cache, changes);
            let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(got, want, "{changes:?}");
        };
        // Same DN (case aside): an attribute change, nothing more to read.
        check(
            &[changed("u1", "cn=ann,ou=staff,dc=x", &["CN=Eng,OU=Groups,DC=x"])],
            &[],
        );
        // Renamed: its groups, as far as the cache holds them.
        check(
            &[changed(
                "u1",
                "CN=Anne,OU=Staff,DC=x",
                &["cn=eng,ou=groups,dc=x", "CN=Other,DC=x"],
            )],
            &["g1"],
        );
        // Not cached (new, or back in the searches), and a renamed group in a group.
        check(
            &[
                changed("u9", "CN=Kim,OU=Staff,DC=x", &["CN=Ops,OU=Groups,DC=x"]),
                changed("g1", "CN=Engineering,OU=Groups,DC=x", &["CN=Ops,OU=Groups,DC=x"]),
            ],
            &["g2"],
        );
        check(&[changed("u2", "CN=Bob,OU=Gone,DC=x", &[])], &[]);
    }

    /// The cached groups that name a deleted object by its cached DN, or, for one
    /// the cache never held, any DN no cached entry has.
    #[test]
    fn groups_that_name_a_deleted_object_are_read_again() {
        let group = |dn: &str, members: &[&str]| entry(dn, &[("member", members)]);
        let cache = Cache {
            users: [("u1".to_owned(), entry("CN=Ann,OU=Staff,DC=x", &[]))].into(),
            groups: [
                ("g1".to_owned(), group("CN=Eng,DC=x", &["cn=ann,ou=staff,dc=x"])),
                ("g2".to_owned(), group("CN=Ops,DC=x", &["CN=Bob,OU=Staff,DC=x"])),
                ("g3".to_owned(), group("CN=All,DC=x", &["CN=Eng,DC=x"])),
            ]
            .into(),
        };
        let members = ["member".to_owned()];
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(
            groups_naming_deleted(&cache, &ids(&["u1"]), &members),
            ids(&["g1"])
        );
        assert_eq!(
            groups_naming_deleted(&cache, &ids(&["g1"]), &members),
            ids(&["g3"])
        );
        // One the cache never held: the groups naming a DN no cached entry has.
        assert_eq!(
            groups_naming_deleted(&cache, &ids(&["unknown"]), &members),
            ids(&["g2"])
        );
    }
}
