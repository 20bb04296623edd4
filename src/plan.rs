//! The plan: the diff of a target's desired state against its snapshot.
//!
//! Pure. The snapshot is what the target last *confirmed*; every difference becomes one
//! operation, and an unchanged directory yields an empty plan. Each desired entity
//! carries the fingerprint of the request that would be sent for it (computed by the
//! target's request builder with secrets masked), so a change anywhere in what would be
//! sent, and only such a change, is pushed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::mapping::{DesiredGroup, DesiredState, DesiredUser, Unmapped};
use crate::model::{Attrs, User};

/// What a target last confirmed, as stored in the state database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) groups: BTreeMap<String, SnapshotGroup>,
    pub(crate) users: BTreeMap<String, SnapshotUser>,
}

impl Snapshot {
    pub(crate) fn membership_count(&self) -> usize {
        self.groups.values().map(|g| g.members.len()).sum()
    }

    pub(crate) fn enabled_users(&self) -> usize {
        self.users.values().filter(|u| u.enabled).count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotGroup {
    pub(crate) name: String,
    pub(crate) members: Members,
    pub(crate) fingerprint: String,
    /// For a target whose request gives each member's details: those details as the
    /// group was last confirmed, a JSON object of target user id → user, parsed only
    /// when a kept member needs describing.
    pub(crate) member_users: Option<String>,
    /// When the target confirmed `member_users` (RFC 3339, UTC; empty when none):
    /// of two groups' details of one member, the later are what the source said last.
    pub(crate) confirmed_at: String,
}

/// A confirmed member list as the store keeps it, a JSON array of ids, parsed only for
/// a group whose request changed: an unchanged directory never turns 300,000 stored
/// ids into strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Members {
    pub(crate) json: String,
    pub(crate) count: usize,
}

impl Members {
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The ids. Text that is not a JSON array of strings reads as no ids: the store
    /// checks what it writes, so that means a hand-edited database.
    pub(crate) fn ids(&self) -> BTreeSet<String> {
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// The ids `now` has and these lack (added), and those these have and `now`
    /// lacks (removed).
    pub(crate) fn diff(&self, now: &BTreeSet<String>) -> (BTreeSet<String>, BTreeSet<String>) {
        let before = self.ids();
        (
            now.difference(&before).cloned().collect(),
            before.difference(now).cloned().collect(),
        )
    }
}

impl From<BTreeSet<String>> for Members {
    fn from(set: BTreeSet<String>) -> Self {
        Members {
            json: serde_json::to_string(&set).unwrap_or_default(),
            count: set.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotUser {
    pub(crate) name: String,
    pub(crate) fingerprint: String,
    pub(crate) enabled: bool,
    /// The user as last pushed, so that a user who left can still be disabled.
    pub(crate) user: Option<User>,
}

/// Whether the snapshot is trusted (`sync`) or ignored (`resync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sync,
    Resync,
}

impl Mode {
    /// The word runs, logs and saved plans use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Resync => "resync",
        }
    }
}

/// What happens to a target group that was pushed before but is no longer mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RemovedGroups {
    /// Leave it as it is on the target (the safe default).
    #[default]
    Keep,
    /// Push it with no members.
    Empty,
}

/// What happens to a user who was pushed before but left the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RemovedUsers {
    #[default]
    Ignore,
    /// Push the user once more with `enabled = false`.
    Disable,
    /// Delete the user with the target's `delete_user` endpoint.
    Delete,
}

/// Why an operation is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Reason {
    /// Never confirmed by the target.
    New,
    /// What would be sent differs from what was confirmed.
    Changed,
    /// The group is no longer mapped: it is pushed empty.
    Removed,
    /// The user is still in the source, disabled there.
    #[serde(rename = "disabled_in_source")]
    Disabled,
    /// The user is no longer in the source (`users.removed = "disable"` or
    /// `"delete"`).
    #[serde(rename = "left_source")]
    LeftSource,
    /// `resync` pushes everything.
    Resync,
}

/// One request's worth of change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Operation {
    ReplaceMembers(GroupOp),
    UpdateUser(UserOp),
    /// A user who left the source, deleted (`users.removed = "delete"`): the user is
    /// the one last confirmed.
    DeleteUser(UserOp),
}

impl Operation {
    pub(crate) fn entity_id(&self) -> &str {
        match self {
            Operation::ReplaceMembers(g) => &g.group.id,
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => &u.user.id,
        }
    }

    pub(crate) fn entity_name(&self) -> &str {
        match self {
            Operation::ReplaceMembers(g) => &g.group.name,
            Operation::UpdateUser(u) | Operation::DeleteUser(u) => &u.user.user.username,
        }
    }

    /// The user this operation disables or deletes, if it does: what the safety
    /// limits count, protected members are kept from, and an operator approves.
    pub(crate) fn removed_user(&self) -> Option<&UserOp> {
        match self {
            Operation::UpdateUser(u) if u.disables => Some(u),
            Operation::DeleteUser(u) => Some(u),
            Operation::ReplaceMembers(_) | Operation::UpdateUser(_) => None,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Operation::ReplaceMembers(g) => match g.delta {
                None => "replace_members",
                Some(Delta::Add) => "add_members",
                Some(Delta::Remove) => "remove_members",
            },
            Operation::UpdateUser(_) => "update_user",
            Operation::DeleteUser(_) => "delete_user",
        }
    }

    /// Whether this operation is one of a group's delta requests, which are sent in
    /// order, each only once the one before it was confirmed.
    pub(crate) fn is_delta(&self) -> bool {
        matches!(self, Operation::ReplaceMembers(g) if g.delta.is_some())
    }
}

/// Which part of a group's change an operation sends, when not the whole list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Delta {
    /// Sends `added` to the add-members endpoint.
    Add,
    /// Sends `removed` to the remove-members endpoint.
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupOp {
    pub(crate) group: DesiredGroup,
    pub(crate) fingerprint: String,
    pub(crate) reason: Reason,
    /// Members the target gains, relative to the snapshot.
    pub(crate) added: BTreeSet<String>,
    /// Members the target loses, relative to the snapshot.
    pub(crate) removed: BTreeSet<String>,
    /// `None`: the whole list (`group.members`) is sent. Otherwise only `added` or
    /// `removed`, and `group.members` with `fingerprint` are the list the target holds
    /// once this operation and the group's earlier ones are confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) delta: Option<Delta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserOp {
    pub(crate) user: DesiredUser,
    pub(crate) fingerprint: String,
    pub(crate) reason: Reason,
    /// True when this push turns an enabled user into a disabled one.
    pub(crate) disables: bool,
}

/// Everything one target needs to converge, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Plan {
    pub(crate) ops: Vec<Operation>,
    pub(crate) unchanged_groups: usize,
    pub(crate) unchanged_users: usize,
    pub(crate) unmapped: Vec<Unmapped>,
}

impl Plan {
    pub(crate) fn removed_memberships(&self) -> usize {
        self.group_ops().map(|g| g.removed.len()).sum()
    }

    pub(crate) fn added_memberships(&self) -> usize {
        self.group_ops().map(|g| g.added.len()).sum()
    }

    pub(crate) fn disabled_users(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| matches!(op, Operation::UpdateUser(u) if u.disables))
            .count()
    }

    pub(crate) fn deleted_users(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| matches!(op, Operation::DeleteUser(_)))
            .count()
    }

    pub(crate) fn group_ops(&self) -> impl Iterator<Item = &GroupOp> {
        self.ops.iter().filter_map(|op| match op {
            Operation::ReplaceMembers(g) => Some(g),
            Operation::UpdateUser(_) | Operation::DeleteUser(_) => None,
        })
    }
}

/// Adds to `desired` what the removal policies ask for: previously pushed groups that
/// are no longer mapped (pushed empty) and users who left (pushed disabled). A user
/// still in the source without a target id (reported unmapped) has not left. Returns
/// the target ids of the users who left, for [`diff`] to tell them from users the
/// source disabled, or, with [`RemovedUsers::Delete`], for [`add_deletions`] (those
/// are not added to `desired`: no update is sent for them).
///
/// Runs before fingerprinting, so that these entities are diffed like any other.
pub(crate) fn add_removals(
    desired: &mut DesiredState,
    snapshot: &Snapshot,
    groups: RemovedGroups,
    users: RemovedUsers,
) -> BTreeSet<String> {
    let mut left = BTreeSet::new();
    if groups == RemovedGroups::Empty {
        for (id, snap) in &snapshot.groups {
            if !desired.groups.contains_key(id) {
                desired.groups.insert(
                    id.clone(),
                    DesiredGroup {
                        id: id.clone(),
                        name: snap.name.clone(),
                        source_id: String::new(),
                        source_name: String::new(),
                        members: BTreeSet::new(),
                        attrs: Attrs::new(),
                    },
                );
            }
        }
    }
    let unmapped = |snap: &SnapshotUser| {
        snap.user
            .as_ref()
            .is_some_and(|u| desired.unmapped.contains_key(&u.id))
    };
    if users == RemovedUsers::Delete {
        left.extend(
            snapshot
                .users
                .iter()
                .filter(|(id, snap)| !desired.users.contains_key(*id) && !unmapped(snap))
                .map(|(id, _)| id.clone()),
        );
    }
    if users == RemovedUsers::Disable {
        for (id, snap) in &snapshot.users {
            if desired.users.contains_key(id) || unmapped(snap) {
                continue;
            }
            if let Some(last) = &snap.user {
                let mut user = last.clone();
                user.enabled = false;
                desired
                    .users
                    .insert(id.clone(), DesiredUser { id: id.clone(), user });
                left.insert(id.clone());
            }
        }
    }
    left
}

/// Adds a [`Operation::DeleteUser`] for each user of `left` (from [`add_removals`]
/// with [`RemovedUsers::Delete`]) the snapshot holds, after every other operation:
/// a group still lists a member until its own request removes it.
pub(crate) fn add_deletions(plan: &mut Plan, snapshot: &Snapshot, left: &BTreeSet<String>) {
    for id in left {
        let Some(snap) = snapshot.users.get(id) else {
            continue;
        };
        // A row written before the user itself was kept has only the name.
        let user = snap
            .user
            .clone()
            .unwrap_or_else(|| User::new(String::new(), snap.name.clone()));
        plan.ops.push(Operation::DeleteUser(UserOp {
            user: DesiredUser { id: id.clone(), user },
            fingerprint: snap.fingerprint.clone(),
            reason: Reason::LeftSource,
            disables: false,
        }));
    }
}

/// What a target accepts besides whole member lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaRules {
    /// The target has an add-members endpoint.
    pub(crate) add: bool,
    /// The target has a remove-members endpoint.
    pub(crate) remove: bool,
    /// Members one delta request carries at most.
    pub(crate) max_per_request: usize,
}

/// Turns each group operation whose change can be sent as deltas into add and then
/// remove operations of at most `rules.max_per_request` members each.
///
/// A group is sent whole when it is new or resynced, when its confirmed list is not
/// known, when the change is larger than the group, when the target lacks the
/// endpoint a side of the change needs, or when more than the members changed
/// (`fingerprint` of the request for the confirmed list differs from the confirmed
/// fingerprint: a new name, say). Each delta operation carries the list the target
/// holds once it and the group's earlier ones are confirmed, and `fingerprint` of the
/// whole request for that list, so that the snapshot is true after any prefix of
/// them and the last one leaves the group unchanged for the next plan.
pub(crate) fn split_deltas(
    plan: &mut Plan,
    snapshot: &Snapshot,
    rules: DeltaRules,
    fingerprint: impl Fn(&DesiredGroup) -> Option<String>,
) {
    if !rules.add && !rules.remove {
        return;
    }
    let max = rules.max_per_request.max(1);
    let ops = std::mem::take(&mut plan.ops);
    for op in ops {
        match op {
            Operation::ReplaceMembers(g) if g.delta.is_none() => {
                match deltas(&g, snapshot, rules, max, &fingerprint) {
                    Some(parts) => plan.ops.extend(parts.into_iter().map(Operation::ReplaceMembers)),
                    None => plan.ops.push(Operation::ReplaceMembers(g)),
                }
            }
            other => plan.ops.push(other),
        }
    }
}

/// The delta operations of one group, or `None` when it is sent whole.
fn deltas(
    g: &GroupOp,
    snapshot: &Snapshot,
    rules: DeltaRules,
    max: usize,
    fingerprint: &impl Fn(&DesiredGroup) -> Option<String>,
) -> Option<Vec<GroupOp>> {
    let snap = snapshot.groups.get(&g.group.id)?;
    let size = g.added.len() + g.removed.len();
    let possible = g.reason != Reason::Resync
        && size > 0
        && size <= g.group.members.len()
        && (g.added.is_empty() || rules.add)
        && (g.removed.is_empty() || rules.remove);
    if !possible {
        return None;
    }
    let mut current = g.group.clone();
    current.members = snap.members.ids();
    if fingerprint(&current).as_deref() != Some(snap.fingerprint.as_str()) {
        return None;
    }
    let mut out = Vec::new();
    let count = g.added.len().div_ceil(max) + g.removed.len().div_ceil(max);
    let sides = [(Delta::Add, &g.added), (Delta::Remove, &g.removed)];
    for (delta, side) in sides {
        let ids: Vec<&String> = side.iter().collect();
        for chunk in ids.chunks(max) {
            let chunk: BTreeSet<String> = chunk.iter().map(|id| (*id).clone()).collect();
            match delta {
                Delta::Add => current.members.extend(chunk.iter().cloned()),
                Delta::Remove => current.members.retain(|m| !chunk.contains(m)),
            }
            let (added, removed) = match delta {
                Delta::Add => (chunk, BTreeSet::new()),
                Delta::Remove => (BTreeSet::new(), chunk),
            };
            // The last one leaves the desired list (checked below), whose request
            // is already hashed: a one-request change renders no list again.
            let fingerprint = match out.len() + 1 == count {
                true => g.fingerprint.clone(),
                false => fingerprint(&current)?,
            };
            out.push(GroupOp {
                group: current.clone(),
                fingerprint,
                reason: g.reason,
                added,
                removed,
                delta: Some(delta),
            });
        }
    }
    // The sides must lead from the confirmed list to the desired one; when they do
    // not (a hand-edited database), the whole list is the safe request.
    (current.members == g.group.members).then_some(out)
}

/// Diffs fingerprinted desired entities against the snapshot.
///
/// `groups` and `users` pair each desired entity with the fingerprint of its request;
/// `left` holds the users who left the source (from [`add_removals`]).
pub(crate) fn diff(
    groups: Vec<(DesiredGroup, String)>,
    users: Vec<(DesiredUser, String)>,
    unmapped: Vec<Unmapped>,
    left: &BTreeSet<String>,
    snapshot: &Snapshot,
    mode: Mode,
) -> Plan {
    let mut plan = Plan {
        unmapped,
        ..Plan::default()
    };
    for (group, fingerprint) in groups {
        let snap = snapshot.groups.get(&group.id);
        let reason = match (snap, mode) {
            (_, Mode::Resync) => Reason::Resync,
            (None, Mode::Sync) => Reason::New,
            (Some(s), Mode::Sync) if s.fingerprint == fingerprint => {
                plan.unchanged_groups += 1;
                continue;
            }
            (Some(_), Mode::Sync) if group.source_id.is_empty() => Reason::Removed,
            (Some(_), Mode::Sync) => Reason::Changed,
        };
        // What the group gains and loses; the stored list is read only here.
        let (added, removed) = match snap {
            Some(s) => s.members.diff(&group.members),
            None => (group.members.clone(), BTreeSet::new()),
        };
        plan.ops.push(Operation::ReplaceMembers(GroupOp {
            group,
            fingerprint,
            reason,
            added,
            removed,
            delta: None,
        }));
    }
    for (user, fingerprint) in users {
        let snap = snapshot.users.get(&user.id);
        let reason = match (snap, mode) {
            (_, Mode::Resync) => Reason::Resync,
            (None, Mode::Sync) => Reason::New,
            (Some(s), Mode::Sync) if s.fingerprint == fingerprint => {
                plan.unchanged_users += 1;
                continue;
            }
            (Some(s), Mode::Sync) if s.enabled && !user.user.enabled && left.contains(&user.id) => {
                Reason::LeftSource
            }
            (Some(s), Mode::Sync) if s.enabled && !user.user.enabled => Reason::Disabled,
            (Some(_), Mode::Sync) => Reason::Changed,
        };
        let disables = !user.user.enabled && snap.is_some_and(|s| s.enabled);
        plan.ops.push(Operation::UpdateUser(UserOp {
            user,
            fingerprint,
            reason,
            disables,
        }));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `diff` of a stored list against sets built by hand: escapes, an unsorted list,
    /// repeats, non-ASCII, an empty side, and text that is not a list of strings.
    #[test]
    fn stored_members_diff_like_sets() {
        let now: BTreeSet<String> = ["a", "b\"q", "d", "é", "z"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let set = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<String>>();
        for (text, before) in [
            (r#"["a","b\"q","c","é"]"#, set(&["a", "b\"q", "c", "é"])),
            (r#"["é","c","a","a","b\"q"]"#, set(&["a", "b\"q", "c", "é"])),
            (r#"["\u0061","y"]"#, set(&["a", "y"])),
            ("[]", set(&[])),
            (r#"["a","b\"q","d","é","z"]"#, now.clone()),
            (r#"{"not": "a list"}"#, set(&[])),
            (r#"["a", 1]"#, set(&[])),
            ("not json", set(&[])),
        ] {
            let stored = Members {
                json: text.to_owned(),
                count: 0,
            };
            assert_eq!(stored.ids(), before, "{text}");
            let want: (BTreeSet<String>, BTreeSet<String>) = (
                now.difference(&before).cloned().collect(),
                before.difference(&now).cloned().collect(),
            );
            assert_eq!(stored.diff(&now), want, "{text}");
            assert_eq!(Members::from(before.clone()).diff(&now), want, "{text} written");
        }
    }

    fn group(id: &str, members: &[&str]) -> DesiredGroup {
        DesiredGroup {
            id: id.into(),
            name: format!("name-{id}"),
            source_id: format!("src-{id}"),
            source_name: format!("name-{id}"),
            members: members.iter().map(|s| (*s).to_owned()).collect(),
            attrs: Attrs::new(),
        }
    }

    /// The fingerprint stands in for the rendered request: here, the member list.
    fn fp(g: &DesiredGroup) -> String {
        g.members.iter().cloned().collect::<Vec<_>>().join(",")
    }

    fn snapshot(groups: &[(&str, &[&str])]) -> Snapshot {
        let mut s = Snapshot::default();
        for (id, members) in groups {
            let g = group(id, members);
            s.groups.insert(
                g.id.clone(),
                SnapshotGroup {
                    name: g.name.clone(),
                    fingerprint: fp(&g),
                    members: g.members.into(),
                    member_users: None,
                    confirmed_at: String::new(),
                },
            );
        }
        s
    }

    /// (group id, reason, added, removed) for every operation.
    type Row = (
        &'static str,
        Reason,
        &'static [&'static str],
        &'static [&'static str],
    );

    fn check(desired: &[(&str, &[&str])], snap: &[(&str, &[&str])], mode: Mode, expected: &[Row]) {
        let groups = desired
            .iter()
            .map(|(id, m)| {
                let g = group(id, m);
                let f = fp(&g);
                (g, f)
            })
            .collect();
        let plan = diff(groups, vec![], vec![], &BTreeSet::new(), &snapshot(snap), mode);
        let got: Vec<(String, Reason, Vec<String>, Vec<String>)> = plan
            .group_ops()
            .map(|g| {
                (
                    g.group.id.clone(),
                    g.reason,
                    g.added.iter().cloned().collect(),
                    g.removed.iter().cloned().collect(),
                )
            })
            .collect();
        let want: Vec<(String, Reason, Vec<String>, Vec<String>)> = expected
            .iter()
            .map(|(id, r, a, d)| {
                (
                    (*id).to_owned(),
                    *r,
                    a.iter().map(|s| (*s).to_owned()).collect(),
                    d.iter().map(|s| (*s).to_owned()).collect(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn first_sync_pushes_every_group() {
        check(
            &[("a", &["1", "2"]), ("b", &[])],
            &[],
            Mode::Sync,
            &[("a", Reason::New, &["1", "2"], &[]), ("b", Reason::New, &[], &[])],
        );
    }

    #[test]
    fn unchanged_directory_pushes_nothing() {
        check(&[("a", &["1", "2"])], &[("a", &["1", "2"])], Mode::Sync, &[]);
    }

    #[test]
    fn one_membership_change_is_one_operation() {
        check(
            &[("a", &["1", "3"]), ("b", &["2"])],
            &[("a", &["1", "2"]), ("b", &["2"])],
            Mode::Sync,
            &[("a", Reason::Changed, &["3"], &["2"])],
        );
    }

    #[test]
    fn resync_pushes_everything() {
        check(
            &[("a", &["1"]), ("b", &["2"])],
            &[("a", &["1"])],
            Mode::Resync,
            &[
                ("a", Reason::Resync, &[], &[]),
                ("b", Reason::Resync, &["2"], &[]),
            ],
        );
    }

    #[test]
    fn unmapped_group_is_kept_by_default() {
        let mut desired = DesiredState::default();
        let snap = snapshot(&[("gone", &["1"])]);
        add_removals(&mut desired, &snap, RemovedGroups::Keep, RemovedUsers::Ignore);
        assert!(desired.groups.is_empty());
    }

    #[test]
    fn unmapped_group_is_emptied_when_asked() {
        let mut desired = DesiredState::default();
        let snap = snapshot(&[("gone", &["1", "2"])]);
        add_removals(&mut desired, &snap, RemovedGroups::Empty, RemovedUsers::Ignore);
        let groups = desired
            .groups
            .into_values()
            .map(|g| {
                let f = fp(&g);
                (g, f)
            })
            .collect();
        let plan = diff(groups, vec![], vec![], &BTreeSet::new(), &snap, Mode::Sync);
        assert_eq!(plan.removed_memberships(), 2);
        assert_eq!(plan.group_ops().next().map(|g| g.reason), Some(Reason::Removed));
    }

    #[test]
    fn user_who_left_is_disabled_once() {
        let mut snap = Snapshot::default();
        let user = User::new("src-1", "ann");
        snap.users.insert(
            "t-1".into(),
            SnapshotUser {
                name: "ann".into(),
                fingerprint: "enabled".into(),
                enabled: true,
                user: Some(user),
            },
        );
        let mut desired = DesiredState::default();
        let left = add_removals(&mut desired, &snap, RemovedGroups::Keep, RemovedUsers::Disable);
        assert_eq!(left, BTreeSet::from(["t-1".to_owned()]));
        let users: Vec<_> = desired
            .users
            .into_values()
            .map(|u| (u, "disabled".to_owned()))
            .collect();
        let plan = diff(vec![], users.clone(), vec![], &left, &snap, Mode::Sync);
        assert_eq!(plan.disabled_users(), 1);
        assert!(matches!(&plan.ops[..], [Operation::UpdateUser(u)] if u.reason == Reason::LeftSource));
        // The same user disabled in the source, still there, is told apart.
        let plan = diff(vec![], users.clone(), vec![], &BTreeSet::new(), &snap, Mode::Sync);
        assert!(matches!(&plan.ops[..], [Operation::UpdateUser(u)] if u.reason == Reason::Disabled));

        // Once the disable is confirmed, the next run has nothing to do.
        if let Some(s) = snap.users.get_mut("t-1") {
            s.enabled = false;
            s.fingerprint = "disabled".into();
        }
        let plan = diff(vec![], users, vec![], &left, &snap, Mode::Sync);
        assert!(plan.ops.is_empty());
    }

    #[test]
    fn user_who_left_is_deleted_after_every_other_operation() {
        let mut snap = snapshot(&[("g", &["t-1", "t-2"])]);
        for (id, name, enabled) in [("t-1", "ann", true), ("t-2", "bob", false), ("t-3", "cy", true)] {
            snap.users.insert(
                id.into(),
                SnapshotUser {
                    name: name.into(),
                    fingerprint: format!("fp-{id}"),
                    enabled,
                    user: (id != "t-2").then(|| User::new(format!("src-{id}"), name)),
                },
            );
        }
        let mut desired = DesiredState::default();
        let cy = DesiredUser {
            id: "t-3".into(),
            user: User::new("src-t-3", "cy"),
        };
        desired.users.insert(cy.id.clone(), cy.clone());
        let left = add_removals(&mut desired, &snap, RemovedGroups::Keep, RemovedUsers::Delete);
        assert_eq!(left, BTreeSet::from(["t-1".to_owned(), "t-2".to_owned()]));
        // Nothing is rendered for them: they are not updated, only deleted.
        assert_eq!(desired.users.keys().collect::<Vec<_>>(), ["t-3"]);

        let g = group("g", &[]);
        let f = fp(&g);
        let users = vec![(cy, "fp-t-3".to_owned())];
        let mut plan = diff(vec![(g, f)], users, vec![], &left, &snap, Mode::Sync);
        add_deletions(&mut plan, &snap, &left);
        let got: Vec<(&str, &str, &str)> = plan
            .ops
            .iter()
            .map(|op| (op.kind(), op.entity_id(), op.entity_name()))
            .collect();
        assert_eq!(
            got,
            [
                ("replace_members", "g", "name-g"),
                ("delete_user", "t-1", "ann"),
                ("delete_user", "t-2", "bob"),
            ]
        );
        assert_eq!((plan.deleted_users(), plan.disabled_users()), (2, 0));
        assert!(plan.ops[1..].iter().all(|op| op.removed_user().is_some()));
    }

    /// An operation's kind and the members it sends.
    type Sent = (String, Vec<String>);

    /// Desired members, confirmed members, the target's rules, whether the group was
    /// renamed, and what should be sent.
    type DeltaCase<'a> = (&'a [&'a str], &'a [&'a str], DeltaRules, bool, Vec<Sent>);

    /// What each operation `split_deltas` leaves for one group sends.
    fn split(desired: &[&str], confirmed: &[&str], rules: DeltaRules, renamed: bool) -> Vec<Sent> {
        let snap = snapshot(&[("g", confirmed)]);
        let mut g = group("g", desired);
        if renamed {
            g.name = "new name".into();
        }
        // The fingerprint stands for the whole request: the name and the members.
        let fp = |g: &DesiredGroup| Some(format!("{}:{}", g.name, fp(g)));
        let f = fp(&g).unwrap_or_default();
        let mut plan = diff(vec![(g, f)], vec![], vec![], &BTreeSet::new(), &snap, Mode::Sync);
        if let Some(s) = snap.groups.get("g") {
            let base = group("g", confirmed);
            assert_eq!(
                fp(&base).as_deref(),
                Some(format!("name-g:{}", s.fingerprint).as_str())
            );
        }
        let mut snap = snap;
        for s in snap.groups.values_mut() {
            s.fingerprint = format!("name-g:{}", s.fingerprint);
        }
        split_deltas(&mut plan, &snap, rules, fp);
        let last = plan
            .group_ops()
            .last()
            .map(|g| (g.group.members.clone(), fp(&g.group)));
        if let Some((members, f)) = last {
            // The last operation leaves the group as desired, with its fingerprint.
            assert_eq!(members, desired.iter().map(|s| (*s).to_owned()).collect());
            assert_eq!(f, plan.group_ops().last().map(|g| g.fingerprint.clone()));
        }
        plan.ops
            .iter()
            .map(|op| {
                let Operation::ReplaceMembers(g) = op else {
                    return (op.kind().to_owned(), vec![]);
                };
                let sent = match g.delta {
                    None => &g.group.members,
                    Some(Delta::Add) => &g.added,
                    Some(Delta::Remove) => &g.removed,
                };
                (op.kind().to_owned(), sent.iter().cloned().collect())
            })
            .collect()
    }

    #[test]
    fn deltas_are_split_by_the_limit_and_fall_back_to_the_whole_list() {
        let both = DeltaRules {
            add: true,
            remove: true,
            max_per_request: 2,
        };
        let row = |kind: &str, ids: &[&str]| {
            (
                kind.to_owned(),
                ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        };
        let cases: Vec<DeltaCase<'_>> = vec![
            (
                &["1", "2", "3", "4", "5", "6"],
                &["1", "2", "7"],
                both,
                false,
                vec![
                    row("add_members", &["3", "4"]),
                    row("add_members", &["5", "6"]),
                    row("remove_members", &["7"]),
                ],
            ),
            // Five changes to a group of three: the whole list.
            (
                &["1", "2", "3"],
                &["4", "5"],
                both,
                false,
                vec![row("replace_members", &["1", "2", "3"])],
            ),
            // A renamed group: the delta would not carry the name.
            (
                &["1", "2", "3"],
                &["1", "2"],
                both,
                true,
                vec![row("replace_members", &["1", "2", "3"])],
            ),
            // No remove endpoint: a change that removes is sent whole.
            (
                &["1", "2", "3"],
                &["1", "2", "4"],
                DeltaRules {
                    remove: false,
                    ..both
                },
                false,
                vec![row("replace_members", &["1", "2", "3"])],
            ),
            (
                &["1", "2", "3"],
                &["1", "2"],
                DeltaRules {
                    remove: false,
                    ..both
                },
                false,
                vec![row("add_members", &["3"])],
            ),
        ];
        for (desired, confirmed, rules, renamed, want) in cases {
            assert_eq!(
                split(desired, confirmed, rules, renamed),
                want,
                "{desired:?} from {confirmed:?}"
            );
        }
    }
}
