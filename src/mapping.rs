//! Per-target mapping: from the normalized directory to the state a target should have.
//!
//! Pure: takes the directory and a target's mapping rules, returns the desired groups
//! (keyed by target group id, members as target user ids) and users, plus the users
//! that could not be mapped. No I/O; id-map files are loaded by the config layer.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::{Attrs, Directory, Group, User};
use crate::template::{Kind, Templates};

/// How source groups become target groups. Only mapped groups are synced.
#[derive(Debug, Default)]
pub struct GroupMapping {
    /// One source group (by id or name) to one target group id.
    pub(crate) explicit: Vec<ExplicitGroup>,
    /// Source groups to target group ids from an id-map file (after `explicit`).
    pub(crate) id_map: Option<GroupIdMap>,
    /// Every source group whose name matches, with the target id from a template.
    pub(crate) rules: Vec<GroupRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct ExplicitGroup {
    /// Source group id, or its name.
    pub(crate) source: String,
    pub(crate) target_id: String,
    /// Name sent to the target; the source name when absent.
    pub(crate) name: Option<String>,
}

/// An id-map file for groups: the value of `key_attribute` (`id`, `name` or a group
/// attribute) → target group id. Thousands of groups need no `[[groups.map]]` each.
#[derive(Debug)]
pub(crate) struct GroupIdMap {
    pub(crate) key_attribute: String,
    pub(crate) map: BTreeMap<String, String>,
}

#[derive(Debug)]
pub(crate) struct GroupRule {
    pub(crate) pattern: Regex,
    /// Name of the `Text` template (in the target's `Templates`) giving the target id.
    pub(crate) target_id_template: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGroup {
    /// Target group id: the key of the snapshot row and the `{id}` of the request.
    pub(crate) id: String,
    pub(crate) name: String,
    /// The source group it comes from.
    pub(crate) source_id: String,
    pub(crate) source_name: String,
    /// Target user ids, sorted.
    pub(crate) members: BTreeSet<String>,
    /// The source group's extra attributes, for templates (`group.attrs.NAME`).
    pub(crate) attrs: Attrs,
}

/// A user as the target should have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredUser {
    /// Target user id.
    pub(crate) id: String,
    pub(crate) user: User,
}

/// A source user that has no target id and so is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmapped {
    pub(crate) source_id: String,
    pub(crate) username: String,
    pub(crate) reason: String,
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
}

/// What a target asks of the mapping besides its groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Map every user, not only the members of mapped groups: the target updates users.
    pub all_users: bool,
    /// Keep each mapped user in [`DesiredState::users`]: a request body reads member
    /// details. Implied by `all_users`; without either, a target that needs only
    /// member ids does not pay for a copy of every user.
    pub member_details: bool,
}

/// Applies one target's mapping to the directory.
///
/// Groups are taken in order (explicit mappings, then rules in the directory's key
/// order), and a user is mapped when a mapped group first names them (with
/// `all_users`, the rest then follow in key order): the first of two clashing ids is
/// the one a mapped group names first, and only users mapped here are checked for
/// clashes or reported unmapped.
/// The `groups.map` sources that name no group of `dir`, by id or by name: such a
/// group is not synced (a typo, or a group gone from the source). Pure.
pub fn unmatched_explicit<'m>(dir: &Directory, groups: &'m GroupMapping) -> Vec<&'m str> {
    groups
        .explicit
        .iter()
        .map(|e| e.source.as_str())
        .filter(|source| !dir.groups.contains_key(*source) && !dir.groups.values().any(|g| g.name == *source))
        .collect()
}

/// A target id as the target tells entities apart: a GUID in any spelling (case,
/// braces) is the one GUID the presets send (`| guid`), so two spellings of it name
/// one entity; any other id as it is.
pub(crate) fn same_entity(id: &str) -> Cow<'_, str> {
    match uuid::Uuid::parse_str(id.trim()) {
        Ok(guid) => Cow::Owned(guid.hyphenated().to_string()),
        Err(_) => Cow::Borrowed(id),
    }
}

/// The ids of `ids` that name no entity of `others` ([`same_entity`]): a target that
/// answers a GUID in another spelling than the one sent (case, braces) holds it.
pub(crate) fn entities_not_in<'a>(
    ids: &'a BTreeSet<String>,
    others: &BTreeSet<String>,
) -> impl Iterator<Item = &'a String> {
    let others: HashSet<String> = others.iter().map(|id| same_entity(id).into_owned()).collect();
    ids.iter()
        .filter(move |id| !others.contains(same_entity(id).as_ref()))
}

pub fn desired_state(
    dir: &Directory,
    groups: &GroupMapping,
    users: &UserIdSource,
    templates: &Templates,
    options: MapOptions,
) -> Result<DesiredState, MappingError> {
    let keep_users = options.all_users || options.member_details;
    let mapped = mapped_groups(dir, groups, templates)?;

    let keyed: Vec<(&str, &User)> = dir.users.iter().map(|(key, u)| (key.as_str(), u)).collect();
    let resolved: Vec<Result<Cow<'_, str>, String>> = keyed
        .iter()
        .map(|&(_, user)| target_user_id(user, users, templates))
        .collect();
    let index: HashMap<&str, usize> = keyed.iter().enumerate().map(|(i, &(key, _))| (key, i)).collect();

    let mut state = DesiredState::default();
    let mut taken: HashMap<Cow<'_, str>, &str> = HashMap::with_capacity(keyed.len());
    let mut seen = vec![false; keyed.len()];
    let mut take = |i: usize, state: &mut DesiredState| -> Result<(), MappingError> {
        if std::mem::replace(&mut seen[i], true) {
            return Ok(());
        }
        let user = keyed[i].1;
        match &resolved[i] {
            Ok(id) => {
                if let Some(first) = taken.insert(same_entity(id), &user.id) {
                    return Err(MappingError::DuplicateUser {
                        target_id: id.to_string(),
                        first: first.to_owned(),
                        second: user.id.clone(),
                    });
                }
                if keep_users {
                    let user = DesiredUser {
                        id: id.to_string(),
                        user: user.clone(),
                    };
                    state.users.insert(user.id.clone(), user);
                }
            }
            Err(reason) => {
                let unmapped = Unmapped {
                    source_id: user.id.clone(),
                    username: user.username.clone(),
                    reason: reason.clone(),
                };
                state.unmapped.insert(user.id.clone(), unmapped);
            }
        }
        Ok(())
    };
    let mut groups_taken: HashMap<Cow<'_, str>, &str> = HashMap::with_capacity(mapped.len());
    for m in mapped {
        if let Some(first) = groups_taken.insert(same_entity(&m.target_id).into_owned().into(), &m.group.id) {
            return Err(MappingError::DuplicateTarget {
                target_id: m.target_id,
                first: first.to_owned(),
                second: m.group.id.clone(),
            });
        }
        let mut members = Vec::with_capacity(m.group.members.len());
        for member in &m.group.members {
            // Sources guarantee every member is a user ([`Group::members`]); one that
            // is not has no target id and is left out.
            let Some(&i) = index.get(member.as_str()) else {
                continue;
            };
            take(i, &mut state)?;
            if let Ok(id) = &resolved[i] {
                members.push(id.to_string());
            }
        }
        let group = DesiredGroup {
            id: m.target_id,
            name: m.name,
            source_id: m.group.id.clone(),
            source_name: m.group.name.clone(),
            // A set collected from a list (sorted inside `collect`) has full nodes;
            // one built by inserts about half-full ones.
            members: members.into_iter().collect(),
            attrs: m.group.attrs.clone(),
        };
        state.groups.insert(group.id.clone(), group);
    }
    if options.all_users {
        for i in 0..keyed.len() {
            take(i, &mut state)?;
        }
    }
    Ok(state)
}

/// The target ids of the directory's users whose source id is among `ids`; a user
/// without a target id is left out.
pub(crate) fn target_ids_of(
    dir: &Directory,
    ids: &BTreeSet<String>,
    users: &UserIdSource,
    templates: &Templates,
) -> BTreeSet<String> {
    dir.users
        .values()
        .filter(|u| ids.contains(&u.id))
        .filter_map(|u| target_user_id(u, users, templates).ok())
        .map(Cow::into_owned)
        .collect()
}

/// The directory's users whose target id is among `ids`, as the target should have
/// them.
pub(crate) fn users_with_target_ids(
    dir: &Directory,
    ids: &BTreeSet<String>,
    users: &UserIdSource,
    templates: &Templates,
) -> BTreeMap<String, DesiredUser> {
    dir.users
        .values()
        .filter_map(|u| {
            let id = target_user_id(u, users, templates).ok()?;
            ids.contains(id.as_ref()).then(|| {
                let id = id.into_owned();
                (id.clone(), DesiredUser { id, user: u.clone() })
            })
        })
        .collect()
}

/// A source group that is mapped, and the target group it becomes.
struct MappedGroup<'d> {
    group: &'d Group,
    target_id: String,
    /// The name sent to the target.
    name: String,
}

/// The source groups that are mapped: explicit ones first, then by rule in key order.
fn mapped_groups<'d>(
    dir: &'d Directory,
    mapping: &GroupMapping,
    templates: &Templates,
) -> Result<Vec<MappedGroup<'d>>, MappingError> {
    let mut out = Vec::new();
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    for explicit in &mapping.explicit {
        let group = match dir.groups.get(&explicit.source) {
            Some(found) => found,
            None => {
                let mut by_name = dir.groups.values().filter(|g| g.name == explicit.source);
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
        out.push(MappedGroup {
            group,
            target_id: explicit.target_id.clone(),
            name: explicit.name.clone().unwrap_or_else(|| group.name.clone()),
        });
    }
    if let Some(id_map) = &mapping.id_map {
        for group in dir.groups.values().filter(|g| !taken.contains(g.id.as_str())) {
            let value = match id_map.key_attribute.as_str() {
                "id" => Some(group.id.as_str()),
                "name" => Some(group.name.as_str()),
                other => group.attrs.get(other),
            };
            if let Some(target_id) = value.and_then(|v| id_map.map.get(v)) {
                out.push(MappedGroup {
                    group,
                    target_id: target_id.clone(),
                    name: group.name.clone(),
                });
            }
        }
        taken.extend(out.iter().map(|m| m.group.id.as_str()));
    }
    for group in dir.groups.values().filter(|g| !taken.contains(g.id.as_str())) {
        if let Some(rule) = mapping.rules.iter().find(|r| r.pattern.is_match(&group.name)) {
            out.push(MappedGroup {
                group,
                target_id: rule_target_id(group, rule, templates)?,
                name: group.name.clone(),
            });
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
        UserIdSource::Template(name) => {
            // `user.id` is the source id here; `source_id` names it as the request
            // templates do.
            let mut ctx = serde_json::json!({ "user": user });
            ctx["user"]["source_id"] = serde_json::Value::String(user.id.clone());
            templates
                .render(name, Kind::Text, &ctx)
                .map(Cow::Owned)
                .map_err(|e| e.message)?
        }
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
            ("u4", "dan", Some("o-4")),
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
            ("g5", "twin", vec!["u1"]),
            ("g6", "twin", vec!["u2"]),
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
        t.add("blank", Kind::Text, "  ").expect("compiles");
        t
    }

    /// Explicit mappings (`source=target`), then rules (`pattern` with the `rule0`
    /// template, or `pattern=>template`).
    fn mapping(explicit: &[&str], rules: &[&str]) -> GroupMapping {
        GroupMapping {
            explicit: explicit
                .iter()
                .map(|e| {
                    let (source, target) = e.split_once('=').expect("source=target");
                    ExplicitGroup {
                        source: source.into(),
                        target_id: target.into(),
                        name: None,
                    }
                })
                .collect(),
            rules: rules
                .iter()
                .map(|r| {
                    let (pattern, template) = r.split_once("=>").unwrap_or((r, "rule0"));
                    GroupRule {
                        pattern: Regex::new(pattern).expect("valid"),
                        target_id_template: template.into(),
                    }
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
            let mut m = mapping(&["g4=explicit-sales"], rules);
            m.id_map = Some(GroupIdMap {
                key_attribute: key.into(),
                map: pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            });
            m
        };
        check(
            with_map("id", &[("g1", "t-eng"), ("g4", "ignored"), ("g9", "t-none")], &[]),
            attribute("id"),
            GROUPS_ONLY,
            "
explicit-sales Sales <- g4: u1
t-eng Engineering <- g1: u1 u2 u3
users:
unmapped:",
        );
        check(
            with_map("name", &[("team-red", "t-red")], &["^team-"]),
            attribute("id"),
            GROUPS_ONLY,
            "
T-g3 team-blue <- g3:
explicit-sales Sales <- g4: u1
t-red team-red <- g2: u2
users:
unmapped:",
        );
        check(
            with_map("code", &[("T-g2", "t-red")], &[]),
            attribute("id"),
            GROUPS_ONLY,
            "
explicit-sales Sales <- g4: u1
t-red team-red <- g2: u2
users:
unmapped:",
        );
    }

    fn attribute(name: &str) -> UserIdSource {
        UserIdSource::Attribute(name.into())
    }

    const GROUPS_ONLY: MapOptions = MapOptions {
        all_users: false,
        member_details: false,
    };
    const MEMBER_DETAILS: MapOptions = MapOptions {
        all_users: false,
        member_details: true,
    };
    const ALL_USERS: MapOptions = MapOptions {
        all_users: true,
        member_details: false,
    };

    /// The desired state as lines: each target group (`id name <- source: members`),
    /// then the kept users and the unmapped source users; or the error.
    fn render(result: Result<DesiredState, MappingError>) -> String {
        let state = match result {
            Ok(state) => state,
            Err(e) => return format!("error: {e}"),
        };
        let mut out = String::new();
        for g in state.groups.values() {
            let members: Vec<&str> = g.members.iter().map(String::as_str).collect();
            let line = format!("{} {} <- {}: {}", g.id, g.name, g.source_id, members.join(" "));
            out += line.trim_end();
            out.push('\n');
        }
        let users: Vec<&str> = state.users.keys().map(String::as_str).collect();
        let unmapped: Vec<&str> = state.unmapped.keys().map(String::as_str).collect();
        out += format!("users: {}", users.join(" ")).trim_end();
        out += format!("\nunmapped: {}", unmapped.join(" ")).trim_end();
        out
    }

    fn check_in(
        dir: &Directory,
        groups: GroupMapping,
        users: UserIdSource,
        options: MapOptions,
        expected: &str,
    ) {
        let got = render(desired_state(dir, &groups, &users, &templates(), options));
        assert_eq!(got.trim(), expected.trim(), "\n--- got ---\n{got}\n");
    }

    fn check(groups: GroupMapping, users: UserIdSource, options: MapOptions, expected: &str) {
        check_in(&dir(), groups, users, options, expected);
    }

    #[test]
    fn explicit_by_name_and_id() {
        check(
            mapping(&["Engineering=T-ENG", "g4=T-SALES"], &[]),
            attribute("office_id"),
            GROUPS_ONLY,
            "
T-ENG Engineering <- g1: o-1 o-2
T-SALES Sales <- g4: o-1
users:
unmapped: u3",
        );
    }

    #[test]
    fn explicit_target_name() {
        let mut groups = mapping(&["g2=RED"], &[]);
        groups.explicit[0].name = Some("Red team".into());
        check(
            groups,
            attribute("id"),
            GROUPS_ONLY,
            "
RED Red team <- g2: u2
users:
unmapped:",
        );
    }

    #[test]
    fn rules_take_id_from_template_and_skip_unmatched() {
        check(
            mapping(&[], &["^team-"]),
            attribute("username"),
            GROUPS_ONLY,
            "
T-g2 team-red <- g2: bob
T-g3 team-blue <- g3:
users:
unmapped:",
        );
    }

    #[test]
    fn explicit_wins_over_rule() {
        check(
            mapping(&["team-red=RED"], &["^team-"]),
            UserIdSource::Template("uid".into()),
            GROUPS_ONLY,
            "
RED team-red <- g2: bob@x
T-g3 team-blue <- g3:
users:
unmapped:",
        );
    }

    #[test]
    fn id_map_file() {
        let map = [("ann", "100"), ("cid", "300")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        check(
            mapping(&["g1=E"], &[]),
            UserIdSource::IdMap {
                key_attribute: "username".into(),
                map,
            },
            GROUPS_ONLY,
            "
E Engineering <- g1: 100 300
users:
unmapped: u2",
        );
    }

    #[test]
    fn missing_explicit_group_is_skipped() {
        check(
            mapping(&["Nope=X"], &[]),
            attribute("id"),
            GROUPS_ONLY,
            "users:\nunmapped:",
        );
    }

    #[test]
    fn a_name_two_groups_share_is_an_error() {
        check(
            mapping(&["twin=T"], &[]),
            attribute("id"),
            GROUPS_ONLY,
            "error: explicit group mapping `twin`: several source groups have this name; use the group id",
        );
    }

    #[test]
    fn an_empty_rendered_group_id_is_an_error() {
        check(
            mapping(&[], &["^Sales$=>blank"]),
            attribute("id"),
            GROUPS_ONLY,
            "error: group `Sales`: the target id template rendered an empty id",
        );
    }

    #[test]
    fn two_groups_on_one_target_is_an_error() {
        for options in [GROUPS_ONLY, MEMBER_DETAILS, ALL_USERS] {
            check(
                mapping(&["g1=SAME", "g4=SAME"], &[]),
                attribute("id"),
                options,
                "error: source groups `g1` and `g4` both map to target group `SAME`",
            );
        }
    }

    /// Two spellings of one GUID (case, braces) name one entity once the presets send
    /// it (`| guid`): two groups or two users on them clash.
    #[test]
    fn two_spellings_of_one_guid_clash() {
        check(
            mapping(
                &[
                    "g1=4a6008e9-c171-4dcb-bb8d-9912de902dc3",
                    "g4={4A6008E9-C171-4DCB-BB8D-9912DE902DC3}",
                ],
                &[],
            ),
            attribute("id"),
            GROUPS_ONLY,
            "error: source groups `g1` and `g4` both map to target group `{4A6008E9-C171-4DCB-BB8D-9912DE902DC3}`",
        );
        let mut d = Directory::default();
        for (id, guid) in [
            ("a", "75a5f745-0000-4000-8000-000000000001"),
            ("b", "75A5F745-0000-4000-8000-000000000001"),
        ] {
            let mut user = User::new(id, format!("user{id}"));
            user.attrs.insert("guid".into(), guid.into());
            d.users.insert(id.into(), user);
        }
        let mut group = Group::new("g", "team-g");
        group.attrs.insert("code".into(), "T-g".into());
        group.members = ["a".to_owned(), "b".to_owned()].into();
        d.groups.insert("g".into(), group);
        check_in(
            &d,
            mapping(&[], &["^team-"]),
            attribute("guid"),
            GROUPS_ONLY,
            "error: source users `a` and `b` both map to target user `75A5F745-0000-4000-8000-000000000001`",
        );
    }

    /// One source group under two target ids: each gets the members and attributes.
    #[test]
    fn a_group_mapped_twice_is_in_both() {
        let groups = mapping(&["g2=RED", "team-red=RED-2"], &[]);
        check(
            groups,
            attribute("id"),
            GROUPS_ONLY,
            "
RED team-red <- g2: u2
RED-2 team-red <- g2: u2
users:
unmapped:",
        );
        let groups = mapping(&["g2=RED", "team-red=RED-2"], &[]);
        let state =
            desired_state(&dir(), &groups, &attribute("id"), &templates(), GROUPS_ONLY).expect("maps");
        assert_eq!(state.groups["RED"].attrs, state.groups["RED-2"].attrs);
        assert_eq!(state.groups["RED"].attrs.get("code"), Some("T-g2"));
    }

    /// Member details keep the mapped members only; all users adds the rest, and
    /// reports those without a target id even when no mapped group names them.
    #[test]
    fn which_users_are_kept_and_reported() {
        let groups = || mapping(&["g2=RED"], &[]);
        check(
            groups(),
            attribute("office_id"),
            MEMBER_DETAILS,
            "
RED team-red <- g2: o-2
users: o-2
unmapped:",
        );
        check(
            groups(),
            attribute("office_id"),
            ALL_USERS,
            "
RED team-red <- g2: o-2
users: o-1 o-2 o-4
unmapped: u3",
        );
        check(
            mapping(&[], &[]),
            attribute("office_id"),
            ALL_USERS,
            "
users: o-1 o-2 o-4
unmapped: u3",
        );
    }

    /// The options choose which users are kept, never the groups.
    #[test]
    fn options_never_change_the_groups() {
        let groups = || mapping(&["g2=RED"], &["^(Eng|Sales|team-blue)"]);
        let want =
            desired_state(&dir(), &groups(), &attribute("id"), &templates(), GROUPS_ONLY).expect("maps");
        assert_eq!(want.groups.len(), 4);
        for options in [MEMBER_DETAILS, ALL_USERS] {
            let got =
                desired_state(&dir(), &groups(), &attribute("id"), &templates(), options).expect("maps");
            assert_eq!(got.groups, want.groups, "{options:?}");
        }
    }

    /// Sources never name a member that is not a user; if one did, it would have no
    /// target id and be left out, whatever the options.
    #[test]
    fn a_member_that_is_not_a_user_is_left_out() {
        let mut d = dir();
        d.groups
            .get_mut("g2")
            .expect("group")
            .members
            .insert("ghost".into());
        for options in [GROUPS_ONLY, MEMBER_DETAILS] {
            check_in(
                &d,
                mapping(&["g2=RED"], &[]),
                attribute("id"),
                options,
                if options.member_details {
                    "RED team-red <- g2: u2\nusers: u2\nunmapped:"
                } else {
                    "RED team-red <- g2: u2\nusers:\nunmapped:"
                },
            );
        }
    }

    /// Target ids that are the source ids cannot clash; ids that only trim to the same
    /// id do, and the first is the one a mapped group names first.
    #[test]
    fn source_ids_that_trim_alike_clash() {
        let mut d = Directory::default();
        for id in ["a", " a"] {
            d.users.insert(id.into(), User::new(id, format!("user{id}")));
        }
        let mut group = Group::new("g", "team-g");
        group.attrs.insert("code".into(), "T-g".into());
        group.members = ["a".to_owned(), " a".to_owned()].into();
        d.groups.insert("g".into(), group);
        check_in(
            &d,
            mapping(&[], &["^team-"]),
            attribute("id"),
            GROUPS_ONLY,
            "error: source users ` a` and `a` both map to target user `a`",
        );
        d.users.remove(" a");
        d.groups.get_mut("g").expect("group").members.remove(" a");
        check_in(
            &d,
            mapping(&[], &["^team-"]),
            attribute("id"),
            GROUPS_ONLY,
            "
T-g team-g <- g: a
users:
unmapped:",
        );
    }

    /// 1,000 users and 600 groups. The result, and which clashing user is "first", are
    /// those of a walk in group order.
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
        let users = attribute("office_id");
        let state =
            desired_state(&d, &mapping(&[], &["^team-"]), &users, &templates(), GROUPS_ONLY).expect("maps");
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
        let err = desired_state(&d, &mapping(&[], &["^team-"]), &users, &templates(), GROUPS_ONLY)
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
}
