//! The normalized directory every source produces and every target mapping reads.
//!
//! A `Directory` is plain data: users and groups keyed by their stable source id, in
//! sorted maps so that everything derived from it (plans, snapshots, test expectations)
//! is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One person as the source describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable source identifier (entryUUID, objectGUID, CSV id column). Never reused.
    pub(crate) id: String,
    /// Login name (uid, sAMAccountName, CSV username column).
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub(crate) phone: Option<String>,
    /// Disabled accounts stay in the directory; targets decide what that means.
    pub(crate) enabled: bool,
    /// Every other attribute the source read, for mappings and templates.
    pub attrs: Attrs,
    /// When the source last changed the entry (LDAP `modifyTimestamp` or
    /// `whenChanged`, a CSV file's mtime), for the propagation latency only: never
    /// rendered, fingerprinted nor saved.
    #[serde(skip)]
    pub(crate) changed_at: Option<SystemTime>,
}

impl User {
    /// A user with only the required fields set; the rest empty and enabled.
    pub(crate) fn new(id: impl Into<String>, username: impl Into<String>) -> Self {
        User {
            id: id.into(),
            username: username.into(),
            email: None,
            display_name: None,
            first_name: None,
            last_name: None,
            phone: None,
            enabled: true,
            attrs: Attrs::new(),
            changed_at: None,
        }
    }

    /// Looks an attribute up by the name a mapping uses: a well-known field first
    /// (`id`, `username`, `email`, …), then the extra attributes.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some(&self.id),
            "username" => Some(&self.username),
            "email" => self.email.as_deref(),
            "display_name" => self.display_name.as_deref(),
            "first_name" => self.first_name.as_deref(),
            "last_name" => self.last_name.as_deref(),
            "phone" => self.phone.as_deref(),
            _ => self.attrs.get(name),
        }
    }
}

/// One group with its members already flattened to user ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Stable source identifier.
    pub id: String,
    /// Human name; group mapping rules match on it.
    pub name: String,
    /// Source ids of the users in the group, nested groups already resolved. Every
    /// one is a key of [`Directory::users`]: sources guarantee it (the CSV reader
    /// refuses an unknown member, the LDAP reader keeps only members it resolved),
    /// and the mapping relies on it.
    pub members: BTreeSet<String>,
    /// Every other attribute the source read.
    pub(crate) attrs: Attrs,
    /// When the source last changed the entry, as for [`User::changed_at`].
    #[serde(skip)]
    pub(crate) changed_at: Option<SystemTime>,
}

impl Group {
    pub(crate) fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Group {
            id: id.into(),
            name: name.into(),
            members: BTreeSet::new(),
            attrs: Attrs::new(),
            changed_at: None,
        }
    }
}

/// What a source read: all users and all groups, complete or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Directory {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
}

impl Directory {
    /// The latest change time of any entry: how far the source's changes reach.
    pub(crate) fn changed_through(&self) -> Option<SystemTime> {
        let users = self.users.values().filter_map(|u| u.changed_at);
        users
            .chain(self.groups.values().filter_map(|g| g.changed_at))
            .max()
    }

    /// Total number of (group, user) membership pairs.
    pub fn membership_count(&self) -> usize {
        self.groups.values().map(|g| g.members.len()).sum()
    }
}

/// A user's or group's extra attributes: name → value, sorted by name.
///
/// A sorted vector rather than a `BTreeMap`: entities carry a handful of attributes
/// (often one, the LDAP `dn`), and a B-tree allocates a node for eleven on the first
/// insert: 54 MB for 100,000 users with only their DN (see BENCHMARKS.md). Lookups are
/// binary searches; it serializes as a map, in the same order a `BTreeMap` would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(Vec<(String, String)>);

impl Attrs {
    pub(crate) fn new() -> Self {
        Attrs(Vec::new())
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// Sets `name`; returns the value it replaces.
    pub(crate) fn insert(&mut self, name: String, value: String) -> Option<String> {
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                // Exactly as many slots as attributes: most entities never get another.
                self.0.reserve_exact(1);
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.0[i].1.as_str())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Name and value pairs, sorted by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut attrs = Attrs::new();
        for (k, v) in iter {
            attrs.insert(k.into(), v.into());
        }
        attrs
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Attrs {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Attrs {
    type Output = str;

    /// Panics when `name` is missing, as `BTreeMap` does.
    fn index(&self, name: &str) -> &str {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no attribute `{name}`"),
        }
    }
}

impl Serialize for Attrs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_stay_sorted_and_unique() {
        let mut a = Attrs::new();
        assert_eq!(a.insert("sn".into(), "Doe".into()), None);
        assert_eq!(a.insert("dn".into(), "uid=x".into()), None);
        assert_eq!(a.insert("cn".into(), "X".into()), None);
        assert_eq!(a.insert("dn".into(), "uid=y".into()).as_deref(), Some("uid=x"));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("cn", "X"), ("dn", "uid=y"), ("sn", "Doe")]
        );
        assert_eq!(a.get("dn"), Some("uid=y"));
        assert_eq!(a.get("DN"), None);
        assert_eq!(&a["sn"], "Doe");
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn attrs_serialize_as_the_sorted_map() {
        let a = Attrs::from([("b", "2"), ("a", "1")]);
        let map: BTreeMap<&str, &str> = BTreeMap::from([("a", "1"), ("b", "2")]);
        assert_eq!(
            serde_json::to_string(&a).expect("serializes"),
            serde_json::to_string(&map).expect("serializes")
        );
        let back: Attrs = serde_json::from_str(r#"{"b":"2","a":"1"}"#).expect("a map");
        assert_eq!(back, a);
    }
}
