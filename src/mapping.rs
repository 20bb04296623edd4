//! Per-target mapping: from the normalized directory to the state a target should have.
//!
//! Pure: takes the directory and a target's mapping rules, returns the desired groups
//! (keyed by target group id, members as target user ids) and users, plus the users
//! that could not be mapped. No I/O; id-map files are loaded by the config layer.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use regex::Regex;
use serde::Serialize;

use crate::model::{Attrs, Directory, Group, User};
use crate::strindex::StrIndex;
use crate::template::{Kind, Templates};

/// How source groups become target groups. Only mapped groups are synced.
#[derive(Debug, Default)]
pub struct GroupMapping {
    /// One source group (by id or name) to one target group id.
    pub explicit: Vec<ExplicitGroup>,
    /// Source groups to target group ids from an id-map file (after `explicit`).
    pub id_map: Option<GroupIdMap>,
    /// Every source group whose name matches, with the target id from a template.
    pub rules: Vec<GroupRule>,
}

#[derive(Debug, Clone)]
pub struct ExplicitGroup {
    /// Source group id, or its name.
    pub source: String,
    pub target_id: String,
    /// Name sent to the target; the source name when absent.
    pub name: Option<String>,
}

/// An id-map file for groups: the value of `key_attribute` (`id`, `name` or a group
/// attribute) → target group id. Thousands of groups need no `[[groups.map]]` each.
#[derive(Debug)]
pub struct GroupIdMap {
    pub key_attribute: String,
    pub map: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct GroupRule {
    pub pattern: Regex,
    /// Name of the `Text` template (in the target's `Templates`) giving the target id.
    pub target_id_template: String,
}

/// How a source user's target id is found.
#[derive(Debug)]
pub enum UserIdSource {
    /// A user attribute (`id`, `username`, `email` or an extra attribute).
    Attribute(String),
    /// A `Text` template over `user`, by its name in the target's `Templates`.
    Template(String),
    /// An id-map file: the value of `key_attribute` → target id.
    IdMap {
        key_attribute: String,
        map: BTreeMap<String, String>,
    },
}

/// A group as the target should have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredGroup {
    /// Target group id: the key of the snapshot row and the `{id}` of the request.
    pub id: String,
    pub name: String,
    /// The source group it comes from.
    pub source_id: String,
    pub source_name: String,
    /// Target user ids, sorted.
    pub members: BTreeSet<String>,
    /// The source group's extra attributes, for templates (`group.attrs.NAME`).
    pub attrs: Attrs,
}

/// A user as the target should have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredUser {
    /// Target user id.
    pub id: String,
    pub user: User,
}

/// A source user that has no target id and so is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmapped {
    pub source_id: String,
    pub username: String,
    pub reason: String,
}

/// What one target should look like, derived from the directory.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub groups: BTreeMap<String, DesiredGroup>,
    /// Every mapped user (for targets that update users, and for member details).
    pub users: BTreeMap<String, DesiredUser>,
    /// Users in scope without a target id, by source id.
    pub unmapped: BTreeMap<String, Unmapped>,
}

/// The mapping could not be applied; the run stops before planning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("source groups `{first}` and `{second}` both map to target group `{target_id}`")]
    DuplicateTarget {
        target_id: String,
        first: String,
        second: String,
    },
    #[error("source users `{first}` and `{second}` both map to target user `{target_id}`")]
    DuplicateUser {
        target_id: String,
        first: String,
        second: String,
    },
    #[error("group `{group}`: {message}")]
    GroupTemplate { group: String, message: String },
    #[error("explicit group mapping `{group}`: {message}")]
    Explicit { group: String, message: String },
    #[error("the users' ids take more than 4 GiB, more than dirsync can index")]
    TooManyUsers,
}

/// Applies one target's mapping to the directory.
///
/// `all_users` asks for every mapped user (targets with a user endpoint); otherwise
/// only members of mapped groups are mapped. `DesiredState::users` is filled only with
/// `all_users` or `keep_users` (a body that reads member details): a target that only
/// needs member ids does not pay for a copy of every user.
pub fn desired_state(
    dir: &Directory,
    groups: &GroupMapping,
    users: &UserIdSource,
    templates: &Templates,
    all_users: bool,
) -> Result<DesiredState, MappingError> {
    desired_state_in(Dir::Shared(dir), groups, users, templates, all_users, true)
}

/// The directory as one target's mapping sees it. The last target to map it may
/// move what it maps (the groups' attributes, and their member sets when those are
/// the target's) out of it instead of copying; a group mapped twice is copied for
/// all but one.
#[derive(Debug)]
pub enum Dir<'d> {
    Shared(&'d Directory),
    Last(&'d mut Directory),
}

/// `desired_state`, saying whether `DesiredState::users` is needed, and moving out of
/// the directory when this is its `Last` use.
pub fn desired_state_in(
    dir: Dir<'_>,
    groups: &GroupMapping,
    users: &UserIdSource,
    templates: &Templates,
    all_users: bool,
    keep_users: bool,
) -> Result<DesiredState, MappingError> {
    let dir = match dir {
        Dir::Shared(dir) => {
            return Ok(copy_groups(map(
                dir, groups, users, templates, all_users, keep_users,
            )?));
        }
        Dir::Last(dir) => dir,
    };
    let (mut state, mapped, members) = {
        let m = map(dir, groups, users, templates, all_users, keep_users)?;
        let mapped: Vec<(String, String, String)> = m
            .groups
            .into_iter()
            .map(|(key, _, target_id, name)| (key.to_owned(), target_id, name))
            .collect();
        (m.state, mapped, m.members)
    };
    let take_members = members.is_none();
    // A group mapped twice is copied for all but its last entry.
    let last: Vec<bool> = {
        let mut seen = HashSet::with_capacity(mapped.len());
        let mut last: Vec<bool> = mapped
            .iter()
            .rev()
            .map(|(key, _, _)| seen.insert(key.as_str()))
            .collect();
        last.reverse();
        last
    };
    let mut computed = members.map(Vec::into_iter);
    for ((key, target_id, name), last) in mapped.into_iter().zip(last) {
        let computed = computed.as_mut().map(|sets| sets.next().unwrap_or_default());
        // The keys came from the directory.
        let Some(group) = dir.groups.get_mut(&key) else {
            debug_assert!(false, "a mapped key is not the directory's");
            continue;
        };
        let own = match (take_members, last) {
            (false, _) => BTreeSet::new(),
            (true, true) => std::mem::take(&mut group.members),
            (true, false) => group.members.clone(),
        };
        let attrs = if last {
            std::mem::take(&mut group.attrs)
        } else {
            group.attrs.clone()
        };
        let source = (group.id.clone(), group.name.clone(), attrs);
        insert_group(&mut state, target_id, name, source, computed.unwrap_or(own));
    }
    Ok(state)
}

/// The desired state with each mapped group's member set and attributes copied.
fn copy_groups(mapped: Mapped<'_>) -> DesiredState {
    let Mapped {
        mut state,
        groups,
        members,
    } = mapped;
    let members =
        members.unwrap_or_else(|| crate::par::map(&groups, |(_, group, _, _)| group.members.clone()));
    for ((_, group, target_id, name), members) in groups.into_iter().zip(members) {
        let source = (group.id.clone(), group.name.clone(), group.attrs.clone());
        insert_group(&mut state, target_id, name, source, members);
    }
    state
}

/// The mapped groups in order, and the rest of the desired state.
struct Mapped<'d> {
    /// Users and unmapped users; no groups yet.
    state: DesiredState,
    /// Each mapped source group with its key in the directory, target id and name.
    groups: Vec<(&'d str, &'d Group, String, String)>,
    /// Each mapped group's target members, or `None` when they are its source members
    /// as they are.
    members: Option<Vec<BTreeSet<String>>>,
}

fn map<'d>(
    dir: &'d Directory,
    groups: &GroupMapping,
    users: &UserIdSource,
    templates: &Templates,
    all_users: bool,
    keep_users: bool,
) -> Result<Mapped<'d>, MappingError> {
    let keep_users = keep_users || all_users;
    let mut state = DesiredState::default();
    let mapped = mapped_groups(dir, groups, templates)?;

    // The pure parts run on every core: each user's target id (most users are a
    // member somewhere), then each mapped group's members.
    let keyed: Vec<(&str, &User)> = dir.users.iter().map(|(key, u)| (key.as_str(), u)).collect();
    let resolved = crate::par::map(&keyed, |&(key, user)| {
        let id = target_user_id(user, users, templates);
        let same = id.as_ref().is_ok_and(|id| id == key);
        (id, same)
    });
    // The directory's keys are unique: when every target id is its user's key (the
    // default `id_attribute = "id"`), no two can clash and nothing needs checking.
    let ids_are_source_ids = resolved.iter().all(|(id, same)| *same || id.is_err());
    // And when, besides, every user has a target id and no user needs mapping for
    // itself, a group's target members are its source members: nothing to look up.
    let direct = ids_are_source_ids && !keep_users && resolved.iter().all(|(id, _)| id.is_ok());
    let resolved: Vec<Result<Cow<'_, str>, String>> = resolved.into_iter().map(|(id, _)| id).collect();

    let mut owner: HashMap<&str, &str> = HashMap::with_capacity(mapped.len());
    let member_sets = if direct {
        for (_, group, target_id, _) in &mapped {
            claim(&mut owner, group, target_id)?;
        }
        debug_assert!(
            mapped
                .iter()
                .all(|(_, g, _, _)| g.members.iter().all(|m| dir.users.contains_key(m))),
            "a source named a member that is not one of its users"
        );
        None
    } else {
        let member_indexes = member_indexes(&keyed, &mapped)?;
        // Then in order, as before: groups in source order, each user taken when a
        // mapped group first names them, so which of two clashing ids is "first" never
        // depends on threads. Only users taken here are checked for clashes or
        // reported unmapped.
        let mut taken: HashMap<&str, &str> =
            HashMap::with_capacity(if ids_are_source_ids { 0 } else { keyed.len() });
        let mut seen = vec![false; keyed.len()];
        let mut take = |i: usize, state: &mut DesiredState| -> Result<(), MappingError> {
            if std::mem::replace(&mut seen[i], true) {
                return Ok(());
            }
            let user = keyed[i].1;
            match &resolved[i] {
                Ok(id) => {
                    if !ids_are_source_ids && let Some(first) = taken.insert(id, &user.id) {
                        return Err(MappingError::DuplicateUser {
                            target_id: id.to_string(),
                            first: first.to_owned(),
                            second: user.id.clone(),
                        });
                    }
                    if keep_users {
                        state.users.insert(
                            id.to_string(),
                            DesiredUser {
                                id: id.to_string(),
                                user: user.clone(),
                            },
                        );
                    }
                }
                Err(reason) => {
                    state.unmapped.insert(
                        user.id.clone(),
                        Unmapped {
                            source_id: user.id.clone(),
                            username: user.username.clone(),
                            reason: reason.clone(),
                        },
                    );
                }
            }
            Ok(())
        };
        for ((_, group, target_id, _), members) in mapped.iter().zip(&member_indexes) {
            claim(&mut owner, group, target_id)?;
            for &i in members {
                take(i, &mut state)?;
            }
        }
        if all_users {
            for i in 0..keyed.len() {
                take(i, &mut state)?;
            }
        }
        // Member sets, on every core. A set built from a list (sorted inside
        // `collect`) has full nodes; one built by inserts about half-full nodes.
        Some(crate::par::map(&member_indexes, |members| {
            members
                .iter()
                .filter_map(|&i| resolved[i].as_ref().ok().map(|id| id.to_string()))
                .collect::<BTreeSet<String>>()
        }))
    };
    Ok(Mapped {
        state,
        groups: mapped,
        members: member_sets,
    })
}

fn insert_group(
    state: &mut DesiredState,
    target_id: String,
    name: String,
    (source_id, source_name, attrs): (String, String, Attrs),
    members: BTreeSet<String>,
) {
    state.groups.insert(
        target_id.clone(),
        DesiredGroup {
            id: target_id,
            name,
            source_id,
            source_name,
            members,
            attrs,
        },
    );
}

/// Records `group` as the source of `target_id`; a second source group is an error.
fn claim<'a>(
    owner: &mut HashMap<&'a str, &'a str>,
    group: &'a Group,
    target_id: &'a str,
) -> Result<(), MappingError> {
    match owner.insert(target_id, &group.id) {
        Some(first) => Err(MappingError::DuplicateTarget {
            target_id: target_id.to_owned(),
            first: first.to_owned(),
            second: group.id.clone(),
        }),
        None => Ok(()),
    }
}

/// Each mapped group's members as indexes into `keyed` (the directory's users in
/// key order), on every core. Sources guarantee members exist ([`Group::members`]); a
/// dangling id would not be mapped here, while the direct path would pass it on.
fn member_indexes(
    keyed: &[(&str, &User)],
    mapped: &[(&str, &Group, String, String)],
) -> Result<Vec<Vec<usize>>, MappingError> {
    u32::try_from(keyed.len()).map_err(|_| MappingError::TooManyUsers)?;
    let bytes = keyed.iter().map(|(_, user)| user.id.len()).sum();
    let mut index = StrIndex::with_capacity(keyed.len(), bytes);
    index
        .insert_each(
            keyed.iter().zip(0..).map(|(&(_, user), i)| (user.id.as_str(), i)),
            |_, new, _| new,
        )
        .map_err(|_| MappingError::TooManyUsers)?;
    Ok(crate::par::map(mapped, |(_, group, _, _)| {
        let mut found = Vec::with_capacity(group.members.len());
        index.get_each(group.members.iter().map(String::as_str), |_, i| {
            found.extend(i.map(|i| i as usize));
        });
        found
    }))
}

/// Source groups that are mapped, with their key in the directory, target id and
/// name: explicit ones first, then by rule in key order.
fn mapped_groups<'d>(
    dir: &'d Directory,
    mapping: &GroupMapping,
    templates: &Templates,
) -> Result<Vec<(&'d str, &'d Group, String, String)>, MappingError> {
    let mut out = Vec::new();
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    for explicit in &mapping.explicit {
        let (key, group) = match dir.groups.get_key_value(&explicit.source) {
            Some(found) => found,
            None => {
                let mut by_name = dir.groups.iter().filter(|(_, g)| g.name == explicit.source);
                match (by_name.next(), by_name.next()) {
                    (Some(found), None) => found,
                    (Some(_), Some(_)) => {
                        return Err(MappingError::Explicit {
                            group: explicit.source.clone(),
                            message: "several source groups have this name; use the group id".into(),
                        });
                    }
                    // A mapped group missing from the source is not synced this run; a
                    // removal would need the group to disappear from the snapshot too.
                    (None, _) => continue,
                }
            }
        };
        taken.insert(&group.id);
        let name = explicit.name.clone().unwrap_or_else(|| group.name.clone());
        out.push((key.as_str(), group, explicit.target_id.clone(), name));
    }
    if let Some(id_map) = &mapping.id_map {
        for (key, group) in &dir.groups {
            if taken.contains(group.id.as_str()) {
                continue;
            }
            let value = match id_map.key_attribute.as_str() {
                "id" => Some(group.id.as_str()),
                "name" => Some(group.name.as_str()),
                other => group.attrs.get(other),
            };
            if let Some(target_id) = value.and_then(|v| id_map.map.get(v)) {
                taken.insert(&group.id);
                out.push((key.as_str(), group, target_id.clone(), group.name.clone()));
            }
        }
    }
    // Matching the rules and rendering each group's target id are independent from
    // group to group: on every core, then taken in source order, so the error
    // reported is the first group's.
    let groups: Vec<(&str, &Group)> = dir
        .groups
        .iter()
        .filter(|(_, g)| !taken.contains(g.id.as_str()))
        .map(|(key, g)| (key.as_str(), g))
        .collect();
    let rendered = crate::par::map(&groups, |&(_, group)| {
        let rule = mapping.rules.iter().find(|r| r.pattern.is_match(&group.name))?;
        Some(rule_target_id(group, rule, templates))
    });
    for ((key, group), target_id) in groups.into_iter().zip(rendered) {
        if let Some(target_id) = target_id {
            out.push((key, group, target_id?, group.name.clone()));
        }
    }
    Ok(out)
}

/// The target id a group-mapping rule gives `group`.
fn rule_target_id(group: &Group, rule: &GroupRule, templates: &Templates) -> Result<String, MappingError> {
    // The members are left out: a target id never depends on them, and copying a
    // 20,000-member list into every template context was most of a run's cost.
    #[derive(Serialize)]
    struct Context<'a> {
        group: GroupFields<'a>,
    }
    #[derive(Serialize)]
    struct GroupFields<'a> {
        id: &'a str,
        name: &'a str,
        attrs: &'a Attrs,
    }
    let ctx = Context {
        group: GroupFields {
            id: &group.id,
            name: &group.name,
            attrs: &group.attrs,
        },
    };
    let target_id = templates
        .render(&rule.target_id_template, Kind::Text, &ctx)
        .map_err(|e| MappingError::GroupTemplate {
            group: group.name.clone(),
            message: e.message,
        })?;
    let target_id = target_id.trim();
    if target_id.is_empty() {
        return Err(MappingError::GroupTemplate {
            group: group.name.clone(),
            message: "the target id template rendered an empty id".into(),
        });
    }
    Ok(target_id.to_owned())
}

/// The user's target id, or why there is none. An attribute or id-map id is borrowed.
fn target_user_id<'a>(
    user: &'a User,
    source: &'a UserIdSource,
    templates: &Templates,
) -> Result<Cow<'a, str>, String> {
    let id: Cow<'a, str> = match source {
        UserIdSource::Attribute(attr) => user
            .attr(attr)
            .map(Cow::Borrowed)
            .ok_or_else(|| format!("no `{attr}` attribute"))?,
        UserIdSource::Template(name) => templates
            .render(name, Kind::Text, &serde_json::json!({ "user": user }))
            .map(Cow::Owned)
            .map_err(|e| e.message)?,
        UserIdSource::IdMap { key_attribute, map } => {
            let key = user
                .attr(key_attribute)
                .ok_or_else(|| format!("no `{key_attribute}` attribute"))?;
            map.get(key)
                .map(|id| Cow::Borrowed(id.as_str()))
                .ok_or_else(|| format!("`{key}` is not in the id map"))?
        }
    };
    if id.trim().is_empty() {
        return Err("empty target id".into());
    }
    Ok(match id {
        Cow::Borrowed(id) => Cow::Borrowed(id.trim()),
        Cow::Owned(id) if id.trim().len() == id.len() => Cow::Owned(id),
        Cow::Owned(id) => Cow::Owned(id.trim().to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        let mut d = Directory::default();
        for (id, name, office) in [
            ("u1", "ann", Some("o-1")),
            ("u2", "bob", Some("o-2")),
            ("u3", "cid", None),
        ] {
            let mut u = User::new(id, name);
            if let Some(o) = office {
                u.attrs.insert("office_id".into(), o.into());
            }
            d.users.insert(id.into(), u);
        }
        for (id, name, members) in [
            ("g1", "Engineering", vec!["u1", "u2", "u3"]),
            ("g2", "team-red", vec!["u2"]),
            ("g3", "team-blue", vec![]),
            ("g4", "Sales", vec!["u1"]),
        ] {
            let mut g = Group::new(id, name);
            g.members = members.into_iter().map(String::from).collect();
            g.attrs.insert("code".into(), format!("T-{id}"));
            d.groups.insert(id.into(), g);
        }
        d
    }

    fn templates() -> Templates {
        let mut t = Templates::new();
        t.add("rule0", Kind::Text, "{{ group.attrs.code }}")
            .expect("compiles");
        t.add("uid", Kind::Text, "{{ user.username }}@x")
            .expect("compiles");
        t
    }

    fn mapping(explicit: &[(&str, &str)], rules: &[&str]) -> GroupMapping {
        GroupMapping {
            explicit: explicit
                .iter()
                .map(|(s, t)| ExplicitGroup {
                    source: (*s).into(),
                    target_id: (*t).into(),
                    name: None,
                })
                .collect(),
            rules: rules
                .iter()
                .map(|p| GroupRule {
                    pattern: Regex::new(p).expect("valid"),
                    target_id_template: "rule0".into(),
                })
                .collect(),
            id_map: None,
        }
    }

    /// Issue 15: thousands of groups from an id-map file, keyed by id, name or an
    /// attribute; explicit entries come first and rules take what is left.
    #[test]
    fn group_id_map_file() {
        let with_map = |key: &str, pairs: &[(&str, &str)], rules: &[&str]| {
            let mut m = mapping(&[("g4", "explicit-sales")], rules);
            m.id_map = Some(GroupIdMap {
                key_attribute: key.into(),
                map: pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            });
            m
        };
        let ids = || UserIdSource::Attribute("id".into());
        check(
            with_map("id", &[("g1", "t-eng"), ("g4", "ignored"), ("g9", "t-none")], &[]),
            ids(),
            &[("explicit-sales", &["u1"]), ("t-eng", &["u1", "u2", "u3"])],
            &[],
        );
        check(
            with_map("name", &[("team-red", "t-red")], &["^team-"]),
            ids(),
            &[("T-g3", &[]), ("explicit-sales", &["u1"]), ("t-red", &["u2"])],
            &[],
        );
        check(
            with_map("code", &[("T-g2", "t-red")], &[]),
            ids(),
            &[("explicit-sales", &["u1"]), ("t-red", &["u2"])],
            &[],
        );
    }

    /// Target group id → sorted members, and the unmapped source ids.
    fn check(groups: GroupMapping, users: UserIdSource, expected: &[(&str, &[&str])], unmapped: &[&str]) {
        let state = desired_state(&dir(), &groups, &users, &templates(), false).expect("maps");
        let got: Vec<(String, Vec<String>)> = state
            .groups
            .values()
            .map(|g| (g.id.clone(), g.members.iter().cloned().collect()))
            .collect();
        let want: Vec<(String, Vec<String>)> = expected
            .iter()
            .map(|(id, m)| ((*id).into(), m.iter().map(|s| (*s).into()).collect()))
            .collect();
        assert_eq!(got, want);
        let got_unmapped: Vec<&str> = state.unmapped.keys().map(String::as_str).collect();
        assert_eq!(got_unmapped, unmapped);
    }

    /// A target that needs only member ids and names users by their source ids takes
    /// the members as they are: the same groups as the path that looks each one up
    /// (taken when the users are kept).
    #[test]
    fn member_ids_taken_as_they_are_match_the_looked_up_ones() {
        let ids = UserIdSource::Attribute("id".into());
        let m = mapping(&[("g2", "RED")], &["^(Eng|Sales|team-blue)"]);
        let direct =
            desired_state_in(Dir::Shared(&dir()), &m, &ids, &templates(), false, false).expect("maps");
        let looked_up =
            desired_state_in(Dir::Shared(&dir()), &m, &ids, &templates(), false, true).expect("maps");
        assert!(direct.users.is_empty());
        assert_eq!(looked_up.users.len(), 3);
        assert_eq!(direct.groups, looked_up.groups);
        assert_eq!(direct.groups.len(), 4);
        let members: Vec<&str> = direct.groups["T-g1"].members.iter().map(String::as_str).collect();
        assert_eq!(members, ["u1", "u2", "u3"]);
        assert!(direct.groups["T-g3"].members.is_empty());
    }

    /// Moving the member sets and attributes out of the directory gives the state that
    /// copying them gives, on both paths, with a group mapped twice and one unmapped.
    #[test]
    fn taking_from_the_directory_gives_what_copying_gives() {
        let ids = UserIdSource::Attribute("id".into());
        let m = mapping(&[("g2", "RED"), ("team-red", "RED-2")], &["^(Eng|team-blue)"]);
        for keep_users in [false, true] {
            let copied = desired_state_in(Dir::Shared(&dir()), &m, &ids, &templates(), false, keep_users)
                .expect("maps");
            let mut d = dir();
            let taken =
                desired_state_in(Dir::Last(&mut d), &m, &ids, &templates(), false, keep_users).expect("maps");
            assert_eq!(taken, copied);
            assert_eq!(taken.groups.len(), 4);
            assert_eq!(taken.groups["RED"].members, taken.groups["RED-2"].members);
            assert_eq!(taken.groups["RED"].attrs, taken.groups["RED-2"].attrs);
            assert!(!taken.groups["RED"].members.is_empty());
            // Moved out of the directory: the attributes, and the member sets when
            // they are the target's as they are (no user kept); the unmapped group
            // keeps what it had.
            assert!(d.groups["g2"].attrs.is_empty() && d.groups["g1"].attrs.is_empty());
            assert_eq!(d.groups["g1"].members.is_empty(), !keep_users);
            assert_eq!(d.groups["g4"], dir().groups["g4"]);
        }
        // A clash is the same error either way.
        let clash = mapping(&[("g1", "X"), ("g2", "X")], &[]);
        let copied = desired_state_in(Dir::Shared(&dir()), &clash, &ids, &templates(), false, false);
        let taken = desired_state_in(Dir::Last(&mut dir()), &clash, &ids, &templates(), false, false);
        assert!(matches!(copied, Err(MappingError::DuplicateTarget { .. })));
        assert_eq!(taken, copied);
    }

    #[test]
    fn explicit_by_name_and_id() {
        check(
            mapping(&[("Engineering", "T-ENG"), ("g4", "T-SALES")], &[]),
            UserIdSource::Attribute("office_id".into()),
            &[("T-ENG", &["o-1", "o-2"]), ("T-SALES", &["o-1"])],
            &["u3"],
        );
    }

    #[test]
    fn rules_take_id_from_template_and_skip_unmatched() {
        check(
            mapping(&[], &["^team-"]),
            UserIdSource::Attribute("username".into()),
            &[("T-g2", &["bob"]), ("T-g3", &[])],
            &[],
        );
    }

    #[test]
    fn explicit_wins_over_rule() {
        check(
            mapping(&[("team-red", "RED")], &["^team-"]),
            UserIdSource::Template("uid".into()),
            &[("RED", &["bob@x"]), ("T-g3", &[])],
            &[],
        );
    }

    #[test]
    fn id_map_file() {
        let map = [("ann", "100"), ("cid", "300")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        check(
            mapping(&[("g1", "E")], &[]),
            UserIdSource::IdMap {
                key_attribute: "username".into(),
                map,
            },
            &[("E", &["100", "300"])],
            &["u2"],
        );
    }

    #[test]
    fn missing_explicit_group_is_skipped() {
        check(
            mapping(&[("Nope", "X")], &[]),
            UserIdSource::Attribute("id".into()),
            &[],
            &[],
        );
    }

    #[test]
    fn two_groups_on_one_target_is_an_error() {
        // Both paths: members looked up (users kept) and taken as they are.
        for keep_users in [true, false] {
            let err = desired_state_in(
                Dir::Shared(&dir()),
                &mapping(&[("g1", "SAME"), ("g4", "SAME")], &[]),
                &UserIdSource::Attribute("id".into()),
                &templates(),
                false,
                keep_users,
            )
            .expect_err("conflict");
            assert_eq!(
                err,
                MappingError::DuplicateTarget {
                    target_id: "SAME".into(),
                    first: "g1".into(),
                    second: "g4".into()
                }
            );
        }
    }

    #[test]
    fn all_users_maps_users_outside_groups() {
        let state = desired_state(
            &dir(),
            &mapping(&[], &[]),
            &UserIdSource::Attribute("office_id".into()),
            &templates(),
            true,
        )
        .expect("maps");
        assert_eq!(state.users.keys().collect::<Vec<_>>(), ["o-1", "o-2"]);
        assert_eq!(state.unmapped.keys().collect::<Vec<_>>(), ["u3"]);
    }

    /// 1,000 users and 600 groups: enough for the parallel parts to split. The
    /// result, and which clashing user is "first", are those of a walk in group order.
    #[test]
    fn large_directories_map_as_in_group_order() {
        let mut d = Directory::default();
        for i in 0..1000 {
            let id = format!("u{i:04}");
            let mut u = User::new(id.clone(), format!("n{i}"));
            // Every 7th user has no office, so is unmapped if a group names them.
            if i % 7 != 0 {
                u.attrs.insert("office_id".into(), format!("o-{i}"));
            }
            d.users.insert(id, u);
        }
        for g in 0..600 {
            let mut group = Group::new(format!("g{g:03}"), format!("team-{g}"));
            // Users 0..300 only: the others are never named, so never reported.
            group.members = (0..5)
                .map(|k| format!("u{:04}", (g * 13 + k * 61) % 300))
                .collect();
            group.attrs.insert("code".into(), format!("T-g{g:03}"));
            d.groups.insert(group.id.clone(), group);
        }
        let users = UserIdSource::Attribute("office_id".into());
        let state = desired_state(&d, &mapping(&[], &["^team-"]), &users, &templates(), false).expect("maps");
        assert_eq!(state.groups.len(), 600);
        let first = &state.groups["T-g000"];
        let want: BTreeSet<String> = (0..5)
            .map(|k| k * 61 % 300)
            .filter(|i| i % 7 != 0)
            .map(|i| format!("o-{i}"))
            .collect();
        assert_eq!(first.members, want);
        assert_eq!(state.unmapped.len(), (0..300).filter(|i| i % 7 == 0).count());
        assert!(state.unmapped.keys().all(|id| id.as_str() < "u0300"));

        // u0244 (named by g000) and u0013 (named by g001) share an office: u0244 is
        // taken first, though u0013 comes first by id.
        d.users
            .get_mut("u0013")
            .expect("user")
            .attrs
            .insert("office_id".into(), "o-244".into());
        let err = desired_state(&d, &mapping(&[], &["^team-"]), &users, &templates(), false)
            .expect_err("two users, one target id");
        assert_eq!(
            err,
            MappingError::DuplicateUser {
                target_id: "o-244".into(),
                first: "u0244".into(),
                second: "u0013".into(),
            }
        );
    }

    /// Target ids that are the source ids cannot clash and are not checked; ids
    /// that only trim to the source ids still are.
    #[test]
    fn source_ids_that_trim_alike_clash_under_the_id_attribute() {
        let mut d = Directory::default();
        for id in ["a", " a"] {
            d.users.insert(id.into(), User::new(id, format!("user{id}")));
        }
        let mut group = Group::new("g", "team-g");
        group.attrs.insert("code".into(), "T-g".into());
        group.members = ["a".to_owned(), " a".to_owned()].into();
        d.groups.insert("g".into(), group);
        let ids = UserIdSource::Attribute("id".into());
        let err = desired_state(&d, &mapping(&[], &["^team-"]), &ids, &templates(), false)
            .expect_err("two users, one target id");
        assert_eq!(
            err,
            MappingError::DuplicateUser {
                target_id: "a".into(),
                first: " a".into(),
                second: "a".into(),
            }
        );
        d.users.remove(" a");
        d.groups.get_mut("g").expect("group").members.remove(" a");
        let state = desired_state(&d, &mapping(&[], &["^team-"]), &ids, &templates(), false).expect("maps");
        assert_eq!(state.groups["T-g"].members, BTreeSet::from(["a".to_owned()]));
    }
}
