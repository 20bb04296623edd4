//! The normalized directory every source produces and every target mapping reads.
//!
//! A `Directory` is plain data: users and groups keyed by their stable source id, in
//! sorted maps so that everything derived from it (plans, snapshots, test expectations)
//! is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One person as the source describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable source identifier (entryUUID, objectGUID, CSV id column). Never reused.
    pub id: String,
    /// Login name (uid, sAMAccountName, CSV username column).
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    /// Disabled accounts stay in the directory; targets decide what that means.
    pub enabled: bool,
    /// Every other attribute the source read, for mappings and templates.
    pub attrs: BTreeMap<String, String>,
}

impl User {
    /// A user with only the required fields set; the rest empty and enabled.
    pub fn new(id: impl Into<String>, username: impl Into<String>) -> Self {
        User {
            id: id.into(),
            username: username.into(),
            email: None,
            display_name: None,
            first_name: None,
            last_name: None,
            phone: None,
            enabled: true,
            attrs: BTreeMap::new(),
        }
    }

    /// Looks an attribute up by the name a mapping uses: a well-known field first
    /// (`id`, `username`, `email`, …), then the extra attributes.
    pub fn attr(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some(&self.id),
            "username" => Some(&self.username),
            "email" => self.email.as_deref(),
            "display_name" => self.display_name.as_deref(),
            "first_name" => self.first_name.as_deref(),
            "last_name" => self.last_name.as_deref(),
            "phone" => self.phone.as_deref(),
            _ => self.attrs.get(name).map(String::as_str),
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
    /// Source ids of the users in the group, nested groups already resolved.
    pub members: BTreeSet<String>,
    /// Every other attribute the source read.
    pub attrs: BTreeMap<String, String>,
}

impl Group {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Group {
            id: id.into(),
            name: name.into(),
            members: BTreeSet::new(),
            attrs: BTreeMap::new(),
        }
    }

    /// Looks an attribute up by the name a mapping uses (`id`, `name`, then extras).
    pub fn attr(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some(&self.id),
            "name" => Some(&self.name),
            _ => self.attrs.get(name).map(String::as_str),
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
    /// Total number of (group, user) membership pairs.
    pub fn membership_count(&self) -> usize {
        self.groups.values().map(|g| g.members.len()).sum()
    }
}
