//! The entries of the user and group searches as last read, keyed by entryUUID, and
//! how a content synchronisation refresh moves them on. Pure: the state database
//! stores and loads them (`store`), a refresh comes from `conn`.
//!
//! Values are stored compactly as JSON: a UTF-8 value as a string, any other as
//! `{"b64": "…"}`.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::config::{Scope, Search};
use super::conn::Refresh;
use super::dn;
use super::entry::Entry;

/// Which search an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    /// The word stored in the state database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }

    pub fn parse(word: &str) -> Option<Kind> {
        match word {
            "user" => Some(Kind::User),
            "group" => Some(Kind::Group),
            _ => None,
        }
    }
}

/// The entries of both searches, by entryUUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cache {
    pub users: BTreeMap<String, Entry>,
    pub groups: BTreeMap<String, Entry>,
}

/// What a refresh changed in the cache: the entries to write and the ones to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub upserted: Vec<(Kind, String)>,
    pub removed: Vec<(Kind, String)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

impl Cache {
    pub fn entries(&self, kind: Kind) -> &BTreeMap<String, Entry> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn entries_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Entry> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    /// The cache of a refresh sent without a cookie: every entry it named.
    pub fn from_full(users: Refresh, groups: Refresh) -> Cache {
        Cache {
            users: users.changed.into_iter().collect(),
            groups: groups.changed.into_iter().collect(),
        }
    }

    /// Applies a refresh sent with this cache's cookie: changed entries are written
    /// (a renamed entry comes as changed, under its new DN), deleted ones removed,
    /// and after a present phase every entry neither present nor changed is removed.
    /// An entry named as changed but equal to the cached one is no change.
    pub fn apply(&mut self, kind: Kind, refresh: Refresh, delta: &mut Delta) {
        let entries = self.entries_mut(kind);
        let changed_ids: BTreeSet<String> = refresh.changed.iter().map(|(id, _)| id.clone()).collect();
        let mut gone: BTreeSet<String> = refresh.deleted;
        if let Some(present) = &refresh.present {
            gone.extend(
                entries
                    .keys()
                    .filter(|id| !present.contains(*id) && !changed_ids.contains(*id))
                    .cloned(),
            );
        }
        for id in gone {
            if !changed_ids.contains(&id) && entries.remove(&id).is_some() {
                delta.removed.push((kind, id));
            }
        }
        for (id, entry) in refresh.changed {
            if entries.get(&id) != Some(&entry) {
                entries.insert(id.clone(), entry);
                delta.upserted.push((kind, id));
            }
        }
    }
}

/// Whether what the user and group searches' filters match under a changed
/// container (each search with its entries' ids and DNs) shows the container moved
/// with entries the searches return: one cached under another DN (renamed, or moved
/// out), or one in a search's base and scope that the cache lacks (moved in). An
/// entry `known` names is read by this run anyway. A container edited in place, or
/// holding only entries outside the searches, moved nothing.
pub fn moved_with(
    cache: &Cache,
    under: &[(&Search, &[(String, String)])],
    known: impl Fn(&str) -> bool,
) -> bool {
    under.iter().any(|(search, entries)| {
        entries.iter().any(|(id, dn)| {
            if known(id) {
                return false;
            }
            let dn = dn::normalize(dn);
            match cache.users.get(id).or_else(|| cache.groups.get(id)) {
                Some(cached) => dn::normalize(&cached.dn) != dn,
                None => in_scope(&dn, search),
            }
        })
    })
}

/// Whether the normalized `dn` is in the base and scope of `search`.
fn in_scope(dn: &str, search: &Search) -> bool {
    let base = dn::normalize(&search.base_dn);
    let under = dn
        .strip_suffix(base.as_str())
        .and_then(|rest| rest.strip_suffix(','));
    match search.scope {
        Scope::Base => dn == base,
        Scope::Sub => dn == base || under.is_some(),
        // One RDN above the base: no separator outside an escape.
        Scope::One => under.is_some_and(|rdn| {
            let mut escaped = false;
            !rdn.chars().any(|c| {
                let separator = c == ',' && !escaped;
                escaped = c == '\\' && !escaped;
                separator
            })
        }),
    }
}

/// An entry's attribute descriptions and raw values, as [`Entry::attrs`] holds them.
pub type RawAttrs = Vec<(String, Vec<Vec<u8>>)>;

/// A stored entry or cookie that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not the stored form: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a value is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// One value as stored: text when it is UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredValue {
    Text(String),
    Bytes { b64: String },
}

impl StoredValue {
    pub fn new(bytes: &[u8]) -> StoredValue {
        match std::str::from_utf8(bytes) {
            Ok(text) => StoredValue::Text(text.to_owned()),
            Err(_) => StoredValue::Bytes {
                b64: STANDARD.encode(bytes),
            },
        }
    }

    /// The bytes; what is wrong when the stored base64 is not.
    pub fn bytes(&self) -> Result<Vec<u8>, DecodeError> {
        match self {
            StoredValue::Text(text) => Ok(text.as_bytes().to_vec()),
            StoredValue::Bytes { b64 } => Ok(STANDARD.decode(b64)?),
        }
    }
}

/// An entry's attributes as stored.
pub fn encode_attrs(attrs: &[(String, Vec<Vec<u8>>)]) -> String {
    let stored: Vec<(&str, Vec<StoredValue>)> = attrs
        .iter()
        .map(|(name, values)| {
            let values = values.iter().map(|v| StoredValue::new(v)).collect();
            (name.as_str(), values)
        })
        .collect();
    // A list of strings and maps of strings always serializes.
    serde_json::to_string(&stored).unwrap_or_default()
}

/// An entry's attributes from their stored form; what is wrong otherwise.
pub fn decode_attrs(text: &str) -> Result<RawAttrs, DecodeError> {
    let stored: Vec<(String, Vec<StoredValue>)> = serde_json::from_str(text)?;
    stored
        .into_iter()
        .map(|(name, values)| {
            let values = values.iter().map(StoredValue::bytes).collect::<Result<_, _>>()?;
            Ok((name, values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::entry::tests::entry;

    /// Renamed or moved out (cached under another DN) and moved in (in a search's
    /// base and scope, not cached) move; the same DN, an entry outside the search
    /// that found it, or one this read names, do not.
    #[test]
    fn a_container_moved_with_entries_the_searches_return() {
        let cache = Cache {
            users: [("u1".to_owned(), entry("uid=a,ou=sub,ou=people,dc=x", &[]))].into(),
            groups: BTreeMap::new(),
        };
        let search = |base: &str, scope: Scope| Search {
            base_dn: base.into(),
            scope,
            filter: "(objectClass=*)".into(),
        };
        let people = search("ou=people,dc=x", Scope::Sub);
        let moved = |s: &Search, under: &[(&str, &str)]| {
            let under: Vec<(String, String)> =
                under.iter().map(|(i, d)| ((*i).into(), (*d).into())).collect();
            moved_with(&cache, &[(s, under.as_slice())], |id| id == "named")
        };
        assert!(
            !moved(&people, &[("u1", "UID=a, ou=sub,ou=people,dc=x")]),
            "edited in place"
        );
        assert!(
            moved(&people, &[("u1", "uid=a,ou=sub2,ou=people,dc=x")]),
            "renamed"
        );
        assert!(moved(&people, &[("u1", "uid=a,ou=sub,dc=x")]), "moved out");
        assert!(
            moved(&people, &[("u2", "uid=b,ou=staging,ou=people,dc=x")]),
            "moved in"
        );
        assert!(
            !moved(&people, &[("u2", "uid=b,ou=staging,dc=x")]),
            "outside the base"
        );
        assert!(
            !moved(&people, &[("named", "uid=n,ou=people,dc=x")]),
            "named by the read"
        );
        let one = search("ou=people,dc=x", Scope::One);
        assert!(
            moved(&one, &[("u2", "uid=b\\,c,ou=people,dc=x")]),
            "a child, with an escaped comma"
        );
        assert!(
            !moved(&one, &[("u2", "uid=b,ou=staging,ou=people,dc=x")]),
            "below the one level"
        );
        let base = search("uid=b,ou=people,dc=x", Scope::Base);
        assert!(moved(&base, &[("u2", "uid=b,ou=people,dc=x")]));
        assert!(!moved(&base, &[]));
    }

    fn cache(users: &[(&str, &str)]) -> Cache {
        Cache {
            users: users
                .iter()
                .map(|(id, mail)| (id.to_string(), entry(&format!("uid={id}"), &[("mail", &[mail])])))
                .collect(),
            groups: BTreeMap::new(),
        }
    }

    fn refresh(changed: &[(&str, &str)], deleted: &[&str], present: Option<&[&str]>) -> Refresh {
        Refresh {
            changed: cache(changed).users.into_iter().collect(),
            deleted: deleted.iter().map(|s| s.to_string()).collect(),
            present: present.map(|p| p.iter().map(|s| s.to_string()).collect()),
            cookie: b"c".to_vec(),
        }
    }

    /// One case: the cache before, a refresh of the users, the cache after and the
    /// (upserted, removed) user ids.
    fn check(before: &[(&str, &str)], r: Refresh, after: &[(&str, &str)], delta: (&[&str], &[&str])) {
        let mut c = cache(before);
        let mut d = Delta::default();
        c.apply(Kind::User, r, &mut d);
        assert_eq!(c, cache(after));
        let ids = |v: &[(Kind, String)]| v.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&d.upserted), delta.0, "upserted");
        assert_eq!(ids(&d.removed), delta.1, "removed");
    }

    #[test]
    fn refreshes_move_the_cache_on() {
        let two = [("a", "a@x"), ("b", "b@x")];
        check(&two, refresh(&[], &[], None), &two, (&[], &[]));
        check(
            &two,
            refresh(&[("b", "b2@x"), ("c", "c@x")], &["a"], None),
            &[("b", "b2@x"), ("c", "c@x")],
            (&["b", "c"], &["a"]),
        );
        // A present phase: `b` is neither present nor changed, so it is gone.
        check(
            &two,
            refresh(&[("c", "c@x")], &[], Some(&["a"])),
            &[("a", "a@x"), ("c", "c@x")],
            (&["c"], &["b"]),
        );
        // Everything present and an unchanged entry named as added: no change.
        check(
            &two,
            refresh(&[("b", "b@x")], &[], Some(&["a"])),
            &two,
            (&[], &[]),
        );
        // Deleting an entry the cache does not hold changes nothing.
        check(&two, refresh(&[], &["z"], None), &two, (&[], &[]));
    }

    #[test]
    fn values_round_trip_as_text_or_base64() {
        let attrs = vec![
            (
                "mail".to_owned(),
                vec![b"ann@x".to_vec(), "Zoë".as_bytes().to_vec()],
            ),
            ("jpegPhoto".to_owned(), vec![vec![0xff, 0x00, 0x80]]),
            ("empty".to_owned(), vec![]),
        ];
        let text = encode_attrs(&attrs);
        assert_eq!(
            text,
            r#"[["mail",["ann@x","Zoë"]],["jpegPhoto",[{"b64":"/wCA"}]],["empty",[]]]"#
        );
        assert_eq!(decode_attrs(&text).expect("decodes"), attrs);
        assert!(decode_attrs(r#"[["x",[{"b64":"!!"}]]]"#).is_err());
        assert!(decode_attrs("not json").is_err());
    }
}
