//! From entries to the directory: users and groups mapped field by field, members
//! resolved (DNs through the users' and groups' DNs, `memberUid` values through the
//! users' uids), nested groups flattened.
//!
//! Pure: entries go in one at a time, as the searches stream them, and are dropped
//! once mapped; nothing here knows about the network. Active Directory's ranged
//! `member;range=…` values come in through the same door as the first part.

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map, hash_map};

use super::ad;
use super::config::{EnabledRule, GroupSearch, UserSearch};
use super::dn;
use super::entry::{Entry, ValueError};
use super::error::{DataProblem, IdKind, RangeStop};
use super::nested::Graph;
use crate::model::{Attrs, Directory, Group, User};

/// How many examples of each kind of problem are kept for the log and `check`.
const EXAMPLES: usize = 5;

/// A user index that stands for "more than one user has this uid".
const AMBIGUOUS: u32 = u32::MAX;

/// An entry's data cannot be used: the entry's DN, the attribute when there is one,
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub dn: String,
    pub attribute: Option<String>,
    pub problem: DataProblem,
}

impl From<ValueError> for DataError {
    fn from(e: ValueError) -> Self {
        DataError {
            dn: e.dn,
            attribute: Some(e.attribute),
            problem: e.problem,
        }
    }
}

/// The users read so far, and the keys members are resolved through.
#[derive(Debug)]
pub struct Users<'c> {
    config: &'c UserSearch,
    uid_attribute: Option<&'c str>,
    list: Vec<User>,
    index: UserIndex,
}

/// The users' normalized DNs and lowercased uids, to their read index.
#[derive(Debug, Default)]
pub struct UserIndex {
    by_dn: HashMap<String, u32>,
    /// [`AMBIGUOUS`] for a uid that more than one user has.
    by_uid: HashMap<String, u32>,
}

impl<'c> Users<'c> {
    pub fn new(config: &'c UserSearch, uid_attribute: Option<&'c str>) -> Self {
        Users {
            config,
            uid_attribute,
            list: Vec::new(),
            index: UserIndex::default(),
        }
    }

    /// The users read, for [`key_users`], and the index of their DNs and uids.
    pub fn finish(self) -> (Vec<User>, UserIndex) {
        (self.list, self.index)
    }

    /// Maps one entry of the user search.
    pub fn add(&mut self, e: &Entry) -> Result<(), DataError> {
        let mut user = map_user(e, self.config)?;
        // u32 indexes: a directory of four billion users would not fit in memory.
        let index = self.list.len() as u32;
        if let Some(attr) = self.uid_attribute {
            for uid in e.all_text(attr)? {
                // A uid another user has already names neither; the same user listing
                // a uid twice (`Ann`, `ann`) is still that user.
                match self.index.by_uid.entry(uid.trim().to_lowercase()) {
                    hash_map::Entry::Occupied(mut known) if *known.get() != index => {
                        known.insert(AMBIGUOUS);
                    }
                    hash_map::Entry::Occupied(_) => {}
                    hash_map::Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                }
            }
        }
        self.index.by_dn.insert(dn::normalize(&e.dn), index);
        user.attrs.insert("dn".into(), e.dn.clone());
        self.list.push(user);
        Ok(())
    }
}

/// The trimmed first value of an attribute the `search`'s `key` names; absent or
/// blank is an error.
fn required(e: &Entry, search: &'static str, key: &'static str, attr: &str) -> Result<String, DataError> {
    match e.first_text(attr)? {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(DataError {
            dn: e.dn.clone(),
            attribute: Some(attr.to_owned()),
            problem: DataProblem::Missing { search, key },
        }),
    }
}

fn map_user(e: &Entry, c: &UserSearch) -> Result<User, DataError> {
    let optional = |attr: &Option<String>| -> Result<Option<String>, DataError> {
        match attr {
            None => Ok(None),
            Some(a) => Ok(e
                .first_text(a)?
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())),
        }
    };
    let id = required(e, "users", "id", &c.id)?;
    let mut user = User::new(id, required(e, "users", "username", &c.username)?);
    user.email = optional(&c.email)?;
    user.display_name = match optional(&c.display_name)? {
        Some(name) => Some(name),
        None => optional(&c.display_name_fallback)?,
    };
    user.first_name = optional(&c.first_name)?;
    user.last_name = optional(&c.last_name)?;
    user.phone = optional(&c.phone)?;
    if let Some((attr, rule)) = &c.enabled {
        user.enabled = enabled(e, attr, *rule)?;
    }
    for attr in &c.extra {
        if let Some(v) = e.first_text(attr)? {
            user.attrs.insert(attr.clone(), v);
        }
    }
    user.changed_at = e.changed_at();
    // The entry's DN is moved in by the caller, once nothing else needs the entry.
    Ok(user)
}

fn enabled(e: &Entry, attr: &str, rule: EnabledRule) -> Result<bool, DataError> {
    let value = e.first_text(attr)?;
    let err = |problem: DataProblem| DataError {
        dn: e.dn.clone(),
        attribute: Some(attr.to_owned()),
        problem,
    };
    let boolean = |v: &str| match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(err(DataProblem::NotBoolean { value: v.to_owned() })),
    };
    match (rule, value.as_deref()) {
        (EnabledRule::PresentIsDisabled, v) => Ok(v.is_none()),
        (_, None) => Ok(true),
        (EnabledRule::AdUserAccountControl, Some(v)) => ad::uac_enabled(v).map_err(err),
        (EnabledRule::TrueIsEnabled, Some(v)) => boolean(v),
        (EnabledRule::TrueIsDisabled, Some(v)) => boolean(v).map(|b| !b),
    }
}

/// A group as read, before its members are flattened.
#[derive(Debug)]
struct Draft {
    group: Group,
    /// Users named directly.
    users: Vec<u32>,
    /// Normalized DNs that named no user: nested groups, or nothing dirsync read.
    other_dns: Vec<String>,
}

/// A ranged attribute that has more values on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRange {
    pub group: usize,
    pub dn: String,
    /// The member attribute (`member`).
    pub attribute: String,
    /// What to ask for next (`member;range=1500-*`).
    pub request: String,
}

/// The groups read so far.
#[derive(Debug)]
pub struct Groups<'c> {
    config: &'c GroupSearch,
    drafts: Vec<Draft>,
    /// Normalized DNs to the group's read index.
    by_dn: HashMap<String, u32>,
    ignored: Ignored,
}

/// Member values that named no user or group the searches returned.
#[derive(Debug, Default)]
struct Ignored {
    count: usize,
    examples: Vec<String>,
}

impl Ignored {
    fn add(&mut self, group: &str, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(format!("group `{group}`: {}", what()));
        }
    }
}

impl<'c> Groups<'c> {
    pub fn new(config: &'c GroupSearch) -> Self {
        Groups {
            config,
            drafts: Vec::new(),
            by_dn: HashMap::new(),
            ignored: Ignored::default(),
        }
    }

    /// Maps one entry of the group search; returns the ranged attributes that have
    /// more values to fetch.
    pub fn add(&mut self, e: &Entry, users: &UserIndex) -> Result<Vec<PendingRange>, DataError> {
        let c = self.config;
        let id = required(e, "groups", "id", &c.id)?;
        let mut group = Group::new(id, required(e, "groups", "name", &c.name)?);
        for attr in &c.extra {
            if let Some(v) = e.first_text(attr)? {
                group.attrs.insert(attr.clone(), v);
            }
        }
        group.attrs.insert("dn".into(), e.dn.clone());
        group.changed_at = e.changed_at();
        let index = self.drafts.len();
        self.drafts.push(Draft {
            group,
            users: Vec::new(),
            other_dns: Vec::new(),
        });
        let mut pending = Vec::new();
        for attr in &c.members {
            for (desc, values) in &e.attrs {
                let range = ad::parse_range(desc, attr);
                if range.is_none() && !desc.eq_ignore_ascii_case(attr) {
                    continue;
                }
                self.add_members(index, e, desc, values, users)?;
                if let Some(request) = range.and_then(|r| r.next_request(attr)) {
                    pending.push(PendingRange {
                        group: index,
                        dn: e.dn.clone(),
                        attribute: attr.clone(),
                        request,
                    });
                }
            }
        }
        for attr in &c.member_uids {
            for uid in e.all_text(attr)? {
                match users.by_uid.get(&uid.trim().to_lowercase()).copied() {
                    Some(AMBIGUOUS) => {
                        let name = &self.drafts[index].group.name;
                        self.ignored
                            .add(name, || format!("`{attr}: {uid}` names more than one user"));
                    }
                    Some(u) => self.drafts[index].users.push(u),
                    None => {
                        let name = &self.drafts[index].group.name;
                        self.ignored
                            .add(name, || format!("`{attr}: {uid}` names no user"));
                    }
                }
            }
        }
        self.by_dn.insert(dn::normalize(&e.dn), index as u32);
        Ok(pending)
    }

    /// Adds one attribute's member DNs to group `index`: users by index, the rest
    /// (nested groups, outsiders) kept for [`Groups::finish`].
    fn add_members(
        &mut self,
        index: usize,
        e: &Entry,
        desc: &str,
        values: &[Vec<u8>],
        users: &UserIndex,
    ) -> Result<(), DataError> {
        let draft = &mut self.drafts[index];
        for v in values {
            let dn = dn::normalize(dn::strip_optional_uid(&e.text(desc, v)?));
            match users.by_dn.get(&dn) {
                Some(&u) => draft.users.push(u),
                None => draft.other_dns.push(dn),
            }
        }
        Ok(())
    }

    /// Takes the answer to a [`PendingRange`] request: its values, and the next
    /// request if the server has more. An answer without the ranged attribute is an
    /// error: the values that follow would be lost.
    pub fn add_range(
        &mut self,
        pending: &PendingRange,
        answer: Option<Entry>,
        users: &UserIndex,
    ) -> Result<Option<PendingRange>, DataError> {
        let missing = |why: RangeStop| DataError {
            dn: pending.dn.clone(),
            attribute: Some(pending.request.clone()),
            problem: DataProblem::RangeStopped(why),
        };
        let e = answer.ok_or_else(|| missing(RangeStop::NoEntry))?;
        let (desc, values) = e
            .attrs
            .iter()
            .find_map(|(desc, values)| ad::parse_range(desc, &pending.attribute).map(|r| ((desc, r), values)))
            .ok_or_else(|| missing(RangeStop::NoValues))?;
        let (desc, range) = desc;
        range
            .answers(&pending.request, &pending.attribute)
            .map_err(missing)?;
        self.add_members(pending.group, &e, desc, values, users)?;
        Ok(range
            .next_request(&pending.attribute)
            .map(|request| PendingRange {
                request,
                ..pending.clone()
            }))
    }

    /// Resolves nested groups and builds the directory.
    pub fn finish(self, users: Vec<User>) -> Result<(Directory, Resolution), DataError> {
        let (users, ids) = key_users(users)?;
        let Groups {
            drafts,
            by_dn,
            mut ignored,
            ..
        } = self;
        let mut graph = Graph::with_groups(drafts.len());
        let mut groups = Vec::with_capacity(drafts.len());
        for (g, draft) in drafts.into_iter().enumerate() {
            graph.users[g] = draft.users;
            for other in draft.other_dns {
                match by_dn.get(&other) {
                    Some(&child) => graph.children[g].push(child),
                    None => ignored.add(&draft.group.name, || {
                        format!("member `{other}` is not a user or group the searches returned")
                    }),
                }
            }
            groups.push(draft.group);
        }
        let flat = graph.flatten();

        let members: Vec<BTreeSet<String>> = flat
            .members
            .iter()
            .map(|m| m.iter().map(|&u| ids[u as usize].clone()).collect())
            .collect();
        drop(ids);
        let mut dir = Directory {
            users,
            ..Directory::default()
        };
        // By name, so that logs and `check` say the same thing every run.
        let mut cycles: Vec<Vec<String>> = flat
            .cycles
            .iter()
            .map(|c| {
                let mut names: Vec<String> = c.iter().map(|&g| groups[g as usize].name.clone()).collect();
                names.sort();
                names
            })
            .collect();
        cycles.sort();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (mut group, members) in groups.into_iter().zip(members) {
            group.members = members;
            *names.entry(group.name.clone()).or_default() += 1;
            match dir.groups.entry(group.id.clone()) {
                btree_map::Entry::Occupied(first) => {
                    let dn = group.attrs.get("dn").unwrap_or_default().to_owned();
                    let first = first.get();
                    return Err(duplicate(IdKind::Group, &first.id, &first.attrs, dn));
                }
                btree_map::Entry::Vacant(slot) => {
                    slot.insert(group);
                }
            }
        }
        let duplicate_names = names
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(name, _)| name)
            .collect();
        Ok((
            dir,
            Resolution {
                ignored_members: ignored.count,
                ignored_examples: ignored.examples,
                cycles,
                duplicate_names,
            },
        ))
    }
}

/// The users keyed by id, and each user's id by read index (what members resolve to).
///
/// Two users with one id are an error naming the earliest-read second user and the
/// first user read with that id.
fn key_users(list: Vec<User>) -> Result<(BTreeMap<String, User>, Vec<String>), DataError> {
    let mut seen: HashMap<&str, &User> = HashMap::with_capacity(list.len());
    for user in &list {
        if let Some(first) = seen.insert(&user.id, user) {
            let dn = user.attrs.get("dn").unwrap_or_default().to_owned();
            return Err(duplicate(IdKind::User, &first.id, &first.attrs, dn));
        }
    }
    drop(seen);
    let ids = list.iter().map(|u| u.id.clone()).collect();
    Ok((list.into_iter().map(|u| (u.id.clone(), u)).collect(), ids))
}

fn duplicate(kind: IdKind, id: &str, first: &Attrs, dn: String) -> DataError {
    DataError {
        dn,
        attribute: None,
        problem: DataProblem::DuplicateId {
            kind,
            id: id.into(),
            first_dn: first.get("dn").unwrap_or_default().into(),
        },
    }
}

/// What resolving members found that an operator may want to know.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Member values naming no user or group the searches returned.
    pub ignored_members: usize,
    pub ignored_examples: Vec<String>,
    /// Groups that contain each other, by name, each cycle once.
    pub cycles: Vec<Vec<String>>,
    /// Names more than one group has (mappings by name would be ambiguous).
    pub duplicate_names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::config::{Scope, Search};
    use crate::source::ldap::entry::tests::entry;

    fn search() -> Search {
        Search {
            base_dn: "dc=x".into(),
            scope: Scope::Sub,
            filter: "(objectClass=*)".into(),
        }
    }

    fn openldap_users() -> UserSearch {
        UserSearch {
            search: search(),
            id: "entryUUID".into(),
            username: "uid".into(),
            email: Some("mail".into()),
            display_name: Some("displayName".into()),
            display_name_fallback: Some("cn".into()),
            first_name: None,
            last_name: None,
            phone: None,
            enabled: None,
            extra: vec!["employeeNumber".into()],
        }
    }

    fn openldap_groups() -> GroupSearch {
        GroupSearch {
            search: search(),
            id: "entryUUID".into(),
            name: "cn".into(),
            members: vec!["member".into(), "uniqueMember".into()],
            member_uids: vec!["memberUid".into()],
            member_uid_attribute: Some("uid".into()),
            extra: vec![],
        }
    }

    fn person(uid: &str, id: &str) -> Entry {
        entry(
            &format!("uid={uid},ou=people,dc=x"),
            &[
                ("entryUUID", &[id]),
                ("uid", &[uid]),
                ("cn", &[&uid.to_uppercase()]),
            ],
        )
    }

    /// The users read from `person` entries, in this order: (uid, entryUUID).
    fn people<'c>(uc: &'c UserSearch, read: &[(&str, &str)]) -> Users<'c> {
        let mut users = Users::new(uc, Some("uid"));
        for (uid, id) in read {
            users.add(&person(uid, id)).expect("user");
        }
        users
    }

    #[test]
    fn a_uid_is_ambiguous_only_across_users() {
        let uc = openldap_users();
        let gc = openldap_groups();
        let mut users = Users::new(&uc, Some("uid"));
        // Ann lists her uid twice, in two spellings; two others share `Kim`.
        let ann = entry(
            "uid=ann,ou=people,dc=x",
            &[("entryUUID", &["u1"]), ("uid", &["Ann", "ann"]), ("cn", &["Ann"])],
        );
        users.add(&ann).expect("ann");
        users.add(&person("Kim", "u2")).expect("kim");
        let other_kim = entry(
            "uid=kim2,ou=people,dc=x",
            &[("entryUUID", &["u3"]), ("uid", &["kim"]), ("cn", &["Kim"])],
        );
        users.add(&other_kim).expect("other kim");
        let mut groups = Groups::new(&gc);
        let group = entry(
            "cn=posix,ou=groups,dc=x",
            &[
                ("entryUUID", &["g1"]),
                ("cn", &["posix"]),
                ("memberUid", &["ANN", "kim"]),
            ],
        );
        let (list, users) = users.finish();
        groups.add(&group, &users).expect("group");
        let (dir, resolution) = groups.finish(list).expect("directory");
        let members: Vec<&str> = dir.groups["g1"].members.iter().map(String::as_str).collect();
        assert_eq!(members, ["u1"]);
        assert_eq!(resolution.ignored_members, 1);
        assert_eq!(
            resolution.ignored_examples,
            ["group `posix`: `memberUid: kim` names more than one user"]
        );
    }

    #[test]
    fn members_are_named_by_id_whatever_the_read_order() {
        let uc = openldap_users();
        let gc = openldap_groups();
        // Read in an order unlike the ids' (and ids of different lengths).
        let read = [
            ("eve", "u5"),
            ("bob", "u10"),
            ("dave", "u4"),
            ("al", "u1"),
            ("cy", "u30"),
        ];
        let (list, users) = people(&uc, &read).finish();
        let mut groups = Groups::new(&gc);
        let member_dns: Vec<String> = ["cy", "al", "eve", "bob"]
            .iter()
            .map(|u| format!("uid={u},ou=people,dc=x"))
            .collect();
        let member_refs: Vec<&str> = member_dns.iter().map(String::as_str).collect();
        let group = entry(
            "cn=g,ou=groups,dc=x",
            &[("entryUUID", &["g1"]), ("cn", &["g"]), ("member", &member_refs)],
        );
        groups.add(&group, &users).expect("group");
        let (dir, _) = groups.finish(list).expect("directory");
        let members: Vec<&str> = dir.groups["g1"].members.iter().map(String::as_str).collect();
        assert_eq!(members, ["u1", "u10", "u30", "u5"]);
        let ids: Vec<&str> = dir.users.keys().map(String::as_str).collect();
        assert_eq!(ids, ["u1", "u10", "u30", "u4", "u5"]);
        assert_eq!(&dir.users["u30"].attrs["dn"], "uid=cy,ou=people,dc=x");
    }

    #[test]
    fn two_users_with_one_id_are_an_error_naming_both() {
        let uc = openldap_users();
        let gc = openldap_groups();
        let users = people(
            &uc,
            &[("bob", "u2"), ("alice", "u1"), ("carol", "u2"), ("dave", "u1")],
        );
        let (list, _) = users.finish();
        let err = Groups::new(&gc).finish(list).expect_err("duplicate ids");
        // In read order, carol is the first to repeat an id: bob's.
        assert_eq!(err.dn, "uid=carol,ou=people,dc=x");
        assert_eq!(
            err.problem,
            DataProblem::DuplicateId {
                kind: IdKind::User,
                id: "u2".into(),
                first_dn: "uid=bob,ou=people,dc=x".into(),
            }
        );
    }

    #[test]
    fn member_styles_nesting_and_a_cycle() {
        let uc = openldap_users();
        let gc = openldap_groups();
        let (list, users) = people(
            &uc,
            &[("alice", "u1"), ("bob", "u2"), ("carol", "u3"), ("dave", "u4")],
        )
        .finish();
        let mut groups = Groups::new(&gc);
        let g = |dn: &str, id: &str, attrs: &[(&str, &[&str])]| {
            let mut all: Vec<(&str, &[&str])> = vec![("entryUUID", std::slice::from_ref(&id))];
            let cn = dn
                .split(',')
                .next()
                .and_then(|r| r.strip_prefix("cn="))
                .unwrap_or("");
            let cn_values = [cn];
            all.push(("cn", &cn_values));
            all.extend_from_slice(attrs);
            entry(dn, &all)
        };
        let entries = [
            // groupOfNames, with odd spelling of the DN and one outsider.
            g(
                "cn=names,ou=groups,dc=x",
                "g1",
                &[(
                    "member",
                    &["UID=Alice, OU=People, DC=X", "uid=nobody,ou=people,dc=x"],
                )],
            ),
            // groupOfUniqueNames with an optional uid suffix; nests `names`.
            g(
                "cn=unique,ou=groups,dc=x",
                "g2",
                &[(
                    "uniqueMember",
                    &["uid=bob,ou=people,dc=x#'0101'B", "cn=names,ou=groups,dc=x"],
                )],
            ),
            // posixGroup by uid, one unknown.
            g(
                "cn=posix,ou=groups,dc=x",
                "g3",
                &[("memberUid", &["Carol", "zed"])],
            ),
            // Three levels: top ⊃ unique ⊃ names.
            g(
                "cn=top,ou=groups,dc=x",
                "g4",
                &[("member", &["cn=unique,ou=groups,dc=x"])],
            ),
            // A cycle: a ⊃ b ⊃ a, with dave in b.
            g(
                "cn=a,ou=groups,dc=x",
                "g5",
                &[("member", &["cn=b,ou=groups,dc=x"])],
            ),
            g(
                "cn=b,ou=groups,dc=x",
                "g6",
                &[("member", &["cn=a,ou=groups,dc=x", "uid=dave,ou=people,dc=x"])],
            ),
        ];
        for e in entries {
            assert_eq!(groups.add(&e, &users), Ok(vec![]));
        }
        let (dir, res) = groups.finish(list).expect("builds");
        let members = |id: &str| dir.groups[id].members.iter().cloned().collect::<Vec<_>>();
        assert_eq!(members("g1"), ["u1"]);
        assert_eq!(members("g2"), ["u1", "u2"]);
        assert_eq!(members("g3"), ["u3"]);
        assert_eq!(members("g4"), ["u1", "u2"]);
        assert_eq!(members("g5"), ["u4"]);
        assert_eq!(members("g6"), ["u4"]);
        assert_eq!(res.cycles, vec![vec!["a".to_owned(), "b".to_owned()]]);
        assert_eq!(res.ignored_members, 2);
        assert_eq!(&dir.users["u1"].attrs["dn"], "uid=alice,ou=people,dc=x");
        assert_eq!(dir.users["u1"].display_name.as_deref(), Some("ALICE"));
    }

    /// Issue 15: the OpenLDAP preset reads inetOrgPerson's `displayName`, and `cn`
    /// only when an entry has none.
    #[test]
    fn display_name_then_its_fallback() {
        type Attrs<'a> = &'a [(&'a str, &'a [&'a str])];
        let c = openldap_users();
        let cases: &[(Attrs<'_>, Option<&str>)] = &[
            (
                &[("displayName", &["Ann Archer"]), ("cn", &["ann"])],
                Some("Ann Archer"),
            ),
            (&[("cn", &["ann"])], Some("ann")),
            (&[("displayName", &["  "]), ("cn", &["ann"])], Some("ann")),
            (&[], None),
        ];
        for (attrs, want) in cases {
            let mut all: Vec<(&str, &[&str])> = vec![("entryUUID", &["u1"]), ("uid", &["ann"])];
            all.extend_from_slice(attrs);
            let e = entry("uid=ann,dc=x", &all);
            let user = map_user(&e, &c).expect("maps");
            assert_eq!(user.display_name.as_deref(), *want, "{attrs:?}");
        }
    }

    /// Recorded Active Directory entries (values as a DC returns them).
    fn ad_users() -> UserSearch {
        UserSearch {
            search: search(),
            id: "objectGUID".into(),
            username: "sAMAccountName".into(),
            email: Some("mail".into()),
            display_name: Some("displayName".into()),
            display_name_fallback: None,
            first_name: None,
            last_name: None,
            phone: None,
            enabled: Some(("userAccountControl".into(), EnabledRule::AdUserAccountControl)),
            extra: vec!["userPrincipalName".into(), "objectSid".into()],
        }
    }

    fn ad_user(n: u8, uac: &str) -> Entry {
        let mut e = entry(
            &format!("CN=User {n},OU=Staff,DC=corp,DC=example,DC=com"),
            &[
                ("sAMAccountName", &[&format!("user{n}")]),
                ("userPrincipalName", &[&format!("user{n}@corp.example.com")]),
                ("userAccountControl", &[uac]),
            ],
        );
        let mut guid = vec![
            0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        ];
        guid.push(n);
        e.attrs.push(("objectGUID".into(), vec![guid]));
        let mut sid = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, 1000 + u32::from(n)] {
            sid.extend_from_slice(&sub.to_le_bytes());
        }
        e.attrs.push(("objectSid".into(), vec![sid]));
        e
    }

    #[test]
    fn active_directory_users() {
        let uc = ad_users();
        let mut users = Users::new(&uc, None);
        users.add(&ad_user(1, "512")).expect("enabled user");
        users.add(&ad_user(2, "514")).expect("disabled user");
        let gc = GroupSearch {
            member_uids: vec![],
            member_uid_attribute: None,
            members: vec!["member".into()],
            id: "objectGUID".into(),
            ..openldap_groups()
        };
        let (list, _) = users.finish();
        let (dir, _) = Groups::new(&gc).finish(list).expect("builds");
        let u1 = &dir.users["01234567-89ab-cdef-0123-456789abcd01"];
        assert_eq!(u1.username, "user1");
        assert!(u1.enabled);
        assert_eq!(&u1.attrs["userPrincipalName"], "user1@corp.example.com");
        assert_eq!(&u1.attrs["objectSid"], "S-1-5-21-1-2-3-1001");
        assert!(!dir.users["01234567-89ab-cdef-0123-456789abcd02"].enabled);
    }

    #[test]
    fn bad_entries_name_the_dn_and_attribute() {
        let uc = ad_users();
        let mut users = Users::new(&uc, None);
        let mut e = ad_user(1, "512");
        e.attrs.retain(|(a, _)| a != "objectGUID");
        let err = users.add(&e).expect_err("no id");
        assert_eq!(err.attribute.as_deref(), Some("objectGUID"));
        assert_eq!(
            err.problem,
            DataProblem::Missing {
                search: "users",
                key: "id"
            }
        );

        let err = users.add(&ad_user(1, "lots")).expect_err("bad uac");
        assert_eq!(err.dn, "CN=User 1,OU=Staff,DC=corp,DC=example,DC=com");
        assert_eq!(err.attribute.as_deref(), Some("userAccountControl"));
        assert_eq!(
            err.problem,
            DataProblem::NotAccountControl { value: "lots".into() }
        );

        let mut e = ad_user(1, "512");
        e.attrs.push(("displayName".into(), vec![vec![0xc3, 0x28]]));
        let err = users.add(&e).expect_err("invalid UTF-8");
        assert_eq!(err.attribute.as_deref(), Some("displayName"));

        users.add(&ad_user(1, "512")).expect("first");
        users
            .add(&ad_user(1, "512"))
            .expect("mapped; duplicate found at the end");
        let gc = openldap_groups();
        let (list, _) = users.finish();
        let err = Groups::new(&gc).finish(list).expect_err("duplicate id");
        // Both DNs named: the second as the error's, the first in the problem.
        assert_eq!(err.dn, "CN=User 1,OU=Staff,DC=corp,DC=example,DC=com");
        assert!(
            matches!(
                &err.problem,
                DataProblem::DuplicateId { kind: IdKind::User, first_dn, .. }
                    if &**first_dn == "CN=User 1,OU=Staff,DC=corp,DC=example,DC=com"
            ),
            "{:?}",
            err.problem
        );
    }

    #[test]
    fn ranged_member_values_are_collected_until_the_star() {
        // A group of 4,000 members, as a DC returns it: 1,500 values per answer.
        let uc = openldap_users();
        let mut users = Users::new(&uc, None);
        let dns: Vec<String> = (0..4000).map(|i| format!("uid=u{i},ou=people,dc=x")).collect();
        for i in 0..4000 {
            users
                .add(&person(&format!("u{i}"), &format!("id{i:04}")))
                .expect("user");
        }
        let gc = GroupSearch {
            members: vec!["member".into()],
            member_uids: vec![],
            member_uid_attribute: None,
            ..openldap_groups()
        };
        let mut groups = Groups::new(&gc);
        let part = |start: usize, last: bool| -> (String, Vec<Vec<u8>>) {
            let end = if last { 4000 } else { start + 1500 };
            let desc = if last {
                format!("member;range={start}-*")
            } else {
                format!("member;range={start}-{}", end - 1)
            };
            (
                desc,
                dns[start..end].iter().map(|d| d.as_bytes().to_vec()).collect(),
            )
        };
        let mut first = entry("cn=big,dc=x", &[("entryUUID", &["g"]), ("cn", &["big"])]);
        first.attrs.push(part(0, false));
        let (list, users) = users.finish();
        let pending = groups.add(&first, &users).expect("group");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].request, "member;range=1500-*");

        let answer = |p: (String, Vec<Vec<u8>>)| Entry {
            dn: "cn=big,dc=x".into(),
            attrs: vec![p],
        };
        let next = groups
            .add_range(&pending[0], Some(answer(part(1500, false))), &users)
            .expect("second part")
            .expect("more");
        assert_eq!(next.request, "member;range=3000-*");
        // A missing answer or one without values is an error, not a short group.
        assert!(groups.add_range(&next, None, &users).is_err());
        let empty = Entry {
            dn: "cn=big,dc=x".into(),
            attrs: vec![],
        };
        let err = groups
            .add_range(&next, Some(empty), &users)
            .expect_err("no values");
        assert_eq!(err.problem, DataProblem::RangeStopped(RangeStop::NoValues));

        let done = groups
            .add_range(&next, Some(answer(part(3000, true))), &users)
            .expect("last part");
        assert_eq!(done, None);
        let (dir, res) = groups.finish(list).expect("builds");
        assert_eq!(dir.groups["g"].members.len(), 4000);
        assert_eq!(res.ignored_members, 0);
    }
}
