//! Blast-radius control: which of a plan's removals and disables wait for an
//! operator, and which are never made.
//!
//! Pure. A half-read directory, an emptied OU or a wrong filter looks like mass
//! removals. Instead of refusing a target's whole run, the removals and disables that
//! cross a limit are taken out of the plan and *held*; additions and attribute
//! updates still go out. A held group is pushed with its held members kept in its
//! list, so the target keeps them until an operator approves (or the source brings
//! them back, which needs no request at all). Protected members are never removed or
//! disabled, whatever the limits or flags say. With a removal delay, a member who
//! left a group is removed only once absent from every read for that long.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::{Operation, Plan, Snapshot};
use crate::safety::{self, Limits};

/// The per-group removal limit: a group with at least `min_members` members on the
/// target may lose at most `max_percent` of them in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupLimit {
    /// `None`: no per-group limit.
    pub(crate) max_percent: Option<f64>,
    pub(crate) min_members: usize,
}

impl GroupLimit {
    pub(crate) const DEFAULT: GroupLimit = GroupLimit {
        max_percent: Some(50.0),
        min_members: 10,
    };
}

/// A target's removal settings besides [`Limits`], from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub(crate) group_limit: GroupLimit,
    /// Per target group id: a mapped group's own limit.
    pub(crate) group_limits: BTreeMap<String, GroupLimit>,
    /// Target user ids or source user ids never removed nor disabled.
    pub(crate) protected: BTreeSet<String>,
    /// Per target group id: members never removed from that group.
    pub(crate) group_protected: BTreeMap<String, BTreeSet<String>>,
    pub(crate) max_source_drop_percent: Option<f64>,
    /// `removal_delay`: how long a member must be absent before being removed.
    pub(crate) removal_delay: Option<std::time::Duration>,
}

impl Settings {
    /// The default `safety.max_source_drop_percent`.
    pub(crate) const SOURCE_DROP: Option<f64> = Some(30.0);
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            group_limit: GroupLimit::DEFAULT,
            group_limits: BTreeMap::new(),
            protected: BTreeSet::new(),
            group_protected: BTreeMap::new(),
            max_source_drop_percent: Settings::SOURCE_DROP,
            removal_delay: None,
        }
    }
}

/// Everything that decides what waits, for one target and one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    pub(crate) limits: &'a Limits,
    /// The per-group limit of groups without their own.
    pub(crate) group_limit: GroupLimit,
    /// Per target group id: a mapped group's own limit.
    pub(crate) group_limits: &'a BTreeMap<String, GroupLimit>,
    /// Target user ids never removed from any group nor disabled.
    pub(crate) protected: &'a BTreeSet<String>,
    /// Per target group id: members never removed from that group.
    pub(crate) group_protected: &'a BTreeMap<String, BTreeSet<String>>,
    /// Why the source read looks too small to trust with removals, if it does.
    pub(crate) source_drop: Option<&'a str>,
    /// Removals an operator approved (`dirsync approve`): not held again.
    pub(crate) approved: Option<&'a Held>,
    /// `--allow-removals`: nothing is held this run (protected members still are).
    pub(crate) allow_removals: bool,
    /// Users read from the source, for the unmapped-users limit.
    pub(crate) source_users: usize,
    /// With `Some`, a removal waits until the member has been absent this long.
    pub(crate) removal_delay: Option<std::time::Duration>,
    /// Since when each (target group id, member) has been absent, as stored.
    pub(crate) absent_since: &'a BTreeMap<(String, String), DateTime<Utc>>,
    pub(crate) now: DateTime<Utc>,
}

/// A held set's size in words: "N membership removal(s), N disable(s)", and its
/// deletions when it has any.
pub fn counts_text(removed_memberships: usize, disabled_users: usize, deleted_users: usize) -> String {
    let mut text = format!("{removed_memberships} membership removal(s), {disabled_users} disable(s)");
    if deleted_users > 0 {
        text.push_str(&format!(", {deleted_users} deletion(s)"));
    }
    text
}

/// Removals and disables that wait for an operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Held {
    /// Which limits held them, in words.
    pub reasons: Vec<String>,
    /// Target group id → the group's name and the members it keeps for now.
    pub groups: BTreeMap<String, HeldGroup>,
    /// Target user id → name: users not disabled (or deleted) for now.
    pub users: BTreeMap<String, String>,
    /// Of `users`, the ones whose held operation is a deletion (`users.removed = "delete"`).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub deleted: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldGroup {
    pub name: String,
    pub members: BTreeSet<String>,
}

impl Held {
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty()
    }

    pub(crate) fn removed_memberships(&self) -> usize {
        self.groups.values().map(|g| g.members.len()).sum()
    }

    /// Everything held: membership removals, disables and deletions.
    pub(crate) fn removals(&self) -> usize {
        self.removed_memberships() + self.users.len()
    }

    pub fn disabled_users(&self) -> usize {
        self.users.len() - self.deleted_users()
    }

    pub fn deleted_users(&self) -> usize {
        self.users.keys().filter(|id| self.deleted.contains(*id)).count()
    }

    /// Its size in words ([`counts_text`]).
    pub fn counts(&self) -> String {
        counts_text(
            self.removed_memberships(),
            self.disabled_users(),
            self.deleted_users(),
        )
    }

    /// What is held, without why: the row's `detail`.
    pub(crate) fn detail(&self) -> serde_json::Value {
        let mut what = serde_json::json!({ "groups": self.groups, "users": self.users });
        if !self.deleted.is_empty() {
            what["deleted"] = serde_json::json!(self.deleted);
        }
        what
    }

    /// SHA-256 of what is held (not why): the same removals held run after run are
    /// one held set.
    pub(crate) fn fingerprint(&self) -> String {
        crate::source::token::sha256_hex(&self.detail().to_string())
    }

    fn hold_member(&mut self, group: &str, name: &str, member: &str) {
        let g = self.groups.entry(group.to_owned()).or_insert_with(|| HeldGroup {
            name: name.to_owned(),
            members: BTreeSet::new(),
        });
        g.members.insert(member.to_owned());
    }

    fn is_approved_member(approved: Option<&Held>, group: &str, member: &str) -> bool {
        approved.is_some_and(|a| a.groups.get(group).is_some_and(|g| g.members.contains(member)))
    }

    fn is_approved_user(approved: Option<&Held>, user: &str) -> bool {
        approved.is_some_and(|a| a.users.contains_key(user))
    }
}

/// A removal or disable dirsync will not make: the member is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// The target group id, or `None` for a disable.
    pub(crate) group: Option<String>,
    pub(crate) member: String,
}

/// What [`apply`] did to a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) held: Held,
    pub(crate) kept: Vec<Kept>,
    /// Groups whose pushed member list changed (it keeps members): their request and
    /// fingerprint must be built again.
    pub(crate) changed_groups: BTreeSet<String>,
    /// Removals and disables an approval let through.
    pub(crate) approved: usize,
    /// The operations that carry them, as (`group` or `user`, target id).
    pub(crate) approved_ops: BTreeSet<(&'static str, String)>,
    /// Whether the source read's drop in size held anything, or found removals
    /// waiting out the removal delay.
    pub(crate) source_drop: bool,
    /// Whether removals of a read that dropped went ahead (an approval, or
    /// `--allow-removals`): the read is the target's baseline only once they are
    /// sent.
    pub(crate) drop_let_through: bool,
    /// With a removal delay: every member the source no longer has in a group, with
    /// since when (what the state database keeps for the next run).
    pub(crate) absent: BTreeMap<(String, String), DateTime<Utc>>,
    /// Of those, the ones not due yet: kept in the group for now.
    pub(crate) waiting: Vec<Waiting>,
}

/// A removal that waits for the removal delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) group: String,
    pub(crate) member: String,
    pub(crate) due: DateTime<Utc>,
}

/// Takes out of `plan` the removals and disables that must wait or never happen.
///
/// In order: protected members are kept; then, unless removals are allowed this
/// run, a group losing more than its per-group limit keeps those members; then if
/// what is left crosses a target-wide limit, or the source read dropped too much,
/// every remaining removal and disable waits. Approved ones are not held again.
pub(crate) fn apply(plan: &mut Plan, snapshot: &Snapshot, policy: &Policy<'_>) -> Outcome {
    let mut out = Outcome::default();
    let no_group_protected = BTreeSet::new();
    plan.ops.retain_mut(|op| match op {
        Operation::ReplaceMembers(g) => {
            let protected = policy
                .group_protected
                .get(&g.group.id)
                .unwrap_or(&no_group_protected);
            let keep: Vec<String> = g
                .removed
                .iter()
                .filter(|m| policy.protected.contains(*m) || protected.contains(*m))
                .cloned()
                .collect();
            for member in keep {
                g.removed.remove(&member);
                g.group.members.insert(member.clone());
                out.changed_groups.insert(g.group.id.clone());
                out.kept.push(Kept {
                    group: Some(g.group.id.clone()),
                    member,
                });
            }
            true
        }
        other => match other.removed_user() {
            Some(u) if policy.protected.contains(&u.user.id) => {
                out.kept.push(Kept {
                    group: None,
                    member: u.user.id.clone(),
                });
                false
            }
            _ => true,
        },
    });
    if let Some(delay) = policy.removal_delay {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        for op in &mut plan.ops {
            let Operation::ReplaceMembers(g) = op else {
                continue;
            };
            let id = g.group.id.clone();
            let mut waiting = Vec::new();
            for member in &g.removed {
                let key = (id.clone(), member.clone());
                let since = policy.absent_since.get(&key).copied().unwrap_or(policy.now);
                out.absent.insert(key, since);
                let due = since
                    .checked_add_signed(delay)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if due > policy.now {
                    waiting.push(member.clone());
                    out.waiting.push(Waiting {
                        group: id.clone(),
                        member: member.clone(),
                        due,
                    });
                }
            }
            if !waiting.is_empty() {
                out.changed_groups.insert(id);
            }
            for member in waiting {
                g.removed.remove(&member);
                g.group.members.insert(member);
            }
        }
    }
    // A deletion takes the user out of every group: a user kept in a group (protected
    // there) is not deleted, and one whose removal waits out the delay waits with it.
    let kept_in_group: BTreeSet<String> = out
        .kept
        .iter()
        .filter(|k| k.group.is_some())
        .map(|k| k.member.clone())
        .collect();
    let waiting: BTreeSet<&String> = out.waiting.iter().map(|w| &w.member).collect();
    plan.ops.retain(|op| match op {
        Operation::DeleteUser(u) if kept_in_group.contains(&u.user.id) => {
            out.kept.push(Kept {
                group: None,
                member: u.user.id.clone(),
            });
            false
        }
        Operation::DeleteUser(u) => !waiting.contains(&u.user.id),
        _ => true,
    });
    // Removals kept waiting on a read that dropped: the read is no baseline yet, so
    // once due they are judged against the drop. An approval vouches for the read.
    out.source_drop = policy.source_drop.is_some() && !out.waiting.is_empty() && policy.approved.is_none();
    if policy.allow_removals {
        out.drop_let_through = policy.source_drop.is_some();
        return out;
    }

    let approved = policy.approved;
    let mut held = Held::default();
    // Per group: what the group would lose, beside what an approval lets through.
    for g in plan.group_ops() {
        let Some(base) = snapshot.groups.get(&g.group.id).map(|s| s.members.len()) else {
            continue;
        };
        let limit = policy
            .group_limits
            .get(&g.group.id)
            .copied()
            .unwrap_or(policy.group_limit);
        let losing: Vec<&String> = g
            .removed
            .iter()
            .filter(|m| !Held::is_approved_member(approved, &g.group.id, m))
            .collect();
        let Some(max) = limit.max_percent else { continue };
        if base == 0 || base < limit.min_members || losing.is_empty() {
            continue;
        }
        let percent = losing.len() as f64 * 100.0 / base as f64;
        if percent > max {
            held.reasons.push(format!(
                "group `{}` would lose {} of its {base} members ({percent:.1}%), over the per-group limit of {max}% \
                 (`safety.max_removed_members_per_group_percent`)",
                g.group.name,
                losing.len()
            ));
            for m in losing {
                held.hold_member(&g.group.id, &g.group.name, m);
            }
        }
    }
    // The deletion of a user held in a group is held with the set.
    for op in &plan.ops {
        if let Operation::DeleteUser(u) = op
            && !Held::is_approved_user(approved, &u.user.id)
            && held.groups.values().any(|h| h.members.contains(&u.user.id))
        {
            held.users.insert(u.user.id.clone(), u.user.user.username.clone());
            held.deleted.insert(u.user.id.clone());
        }
    }

    // Target-wide: every removal not approved counts, held per group or not: a deep
    // cut is one event, held whole.
    // Only an approval needs a copy without what it lets through: a plan of 10,000
    // new groups is not copied to be counted.
    let rest = match approved {
        None => std::borrow::Cow::Borrowed(&*plan),
        Some(_) => {
            let mut rest = plan.clone();
            rest.ops.retain_mut(|op| match op {
                Operation::ReplaceMembers(g) => {
                    let id = g.group.id.clone();
                    g.removed.retain(|m| !Held::is_approved_member(approved, &id, m));
                    true
                }
                other => !other
                    .removed_user()
                    .is_some_and(|u| Held::is_approved_user(approved, &u.user.id)),
            });
            std::borrow::Cow::Owned(rest)
        }
    };
    let mut hold_rest = Vec::new();
    if let Err(r) = safety::check(&rest, snapshot, policy.limits, policy.source_users) {
        hold_rest.push(format!(
            "the plan would {} ({} of {}, {:.1}%), over the limit of {} (`{}`)",
            r.what, r.count, r.base, r.percent, r.limit, r.key
        ));
    }
    if let Some(why) = policy.source_drop {
        hold_rest.push(why.to_owned());
    }
    if !hold_rest.is_empty() {
        for op in &rest.ops {
            match op {
                Operation::ReplaceMembers(g) => {
                    for m in &g.removed {
                        held.hold_member(&g.group.id, &g.group.name, m);
                    }
                }
                other => {
                    if let Some(u) = other.removed_user() {
                        held.users.insert(u.user.id.clone(), u.user.user.username.clone());
                        if matches!(other, Operation::DeleteUser(_)) {
                            held.deleted.insert(u.user.id.clone());
                        }
                    }
                }
            }
        }
        // Removals the per-group limit held already are held for these reasons
        // too: a dropped read is then no baseline. Without removals, none applies.
        if held.removals() == 0 {
            hold_rest.clear();
        }
        out.source_drop |= policy.source_drop.is_some() && !hold_rest.is_empty();
        held.reasons.extend(hold_rest);
    }

    // What an approval let through, for the audit.
    for op in &plan.ops {
        match op {
            Operation::ReplaceMembers(g) => {
                let n = g
                    .removed
                    .iter()
                    .filter(|m| Held::is_approved_member(approved, &g.group.id, m))
                    .count();
                if n > 0 {
                    out.approved += n;
                    out.approved_ops.insert(("group", g.group.id.clone()));
                }
            }
            other => {
                if let Some(u) = other
                    .removed_user()
                    .filter(|u| Held::is_approved_user(approved, &u.user.id))
                {
                    out.approved += 1;
                    out.approved_ops.insert(("user", u.user.id.clone()));
                }
            }
        }
    }

    out.drop_let_through = policy.source_drop.is_some() && out.approved > 0;

    // Held removals stay in the pushed list; held disables and deletions are not sent.
    plan.ops.retain_mut(|op| match op {
        Operation::ReplaceMembers(g) => {
            if let Some(h) = held.groups.get(&g.group.id) {
                for m in &h.members {
                    g.removed.remove(m);
                    g.group.members.insert(m.clone());
                }
                out.changed_groups.insert(g.group.id.clone());
            }
            true
        }
        Operation::UpdateUser(u) | Operation::DeleteUser(u) => !held.users.contains_key(&u.user.id),
    });
    out.held = held;
    out
}

/// Why a source read is too small to trust with removals: the users or memberships
/// read fell by more than `max_percent` from the last read that was accepted, and by
/// more than `min_count` (as the percentage limits, so that ordinary churn in a small
/// directory is not held).
pub(crate) fn source_drop(
    before: (usize, usize),
    now: (usize, usize),
    max_percent: Option<f64>,
    min_count: usize,
) -> Option<String> {
    let max = max_percent?;
    let drop = |before: usize, now: usize| {
        (now < before && before - now > min_count).then(|| (before - now) as f64 * 100.0 / before as f64)
    };
    for (what, b, n) in [("users", before.0, now.0), ("memberships", before.1, now.1)] {
        if let Some(pct) = drop(b, n).filter(|p| *p > max) {
            return Some(format!(
                "the source returned {n} {what}, {pct:.1}% fewer than the {b} of the last accepted read, over the \
                 limit of {max}% (`safety.max_source_drop_percent`)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::DesiredGroup;
    use crate::mapping::DesiredUser;
    use crate::model::Attrs;
    use crate::model::User;
    use crate::plan::{GroupOp, Members, Reason, SnapshotGroup, SnapshotUser, UserOp};

    fn ids(n: std::ops::Range<usize>) -> BTreeSet<String> {
        n.map(|i| format!("u{i:04}")).collect()
    }

    /// A snapshot where group `g` has `before` members, and a plan that leaves it `now`.
    fn case(before: BTreeSet<String>, now: BTreeSet<String>) -> (Plan, Snapshot) {
        let snapshot = Snapshot {
            groups: [(
                "g".to_owned(),
                SnapshotGroup {
                    name: "staff".into(),
                    members: Members::from(before.clone()),
                    fingerprint: "old".into(),
                    member_users: None,
                    confirmed_at: String::new(),
                },
            )]
            .into(),
            users: BTreeMap::new(),
        };
        let op = GroupOp {
            group: DesiredGroup {
                id: "g".into(),
                name: "staff".into(),
                source_id: "s".into(),
                source_name: "staff".into(),
                members: now.clone(),
                attrs: Attrs::new(),
            },
            fingerprint: "new".into(),
            reason: Reason::Changed,
            added: now.difference(&before).cloned().collect(),
            removed: before.difference(&now).cloned().collect(),
            delta: None,
        };
        let plan = Plan {
            ops: vec![Operation::ReplaceMembers(op)],
            ..Plan::default()
        };
        (plan, snapshot)
    }

    struct Fixture {
        limits: Limits,
        group_limits: BTreeMap<String, GroupLimit>,
        protected: BTreeSet<String>,
        group_protected: BTreeMap<String, BTreeSet<String>>,
        absent_since: BTreeMap<(String, String), DateTime<Utc>>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                limits: Limits::default(),
                group_limits: BTreeMap::new(),
                protected: BTreeSet::new(),
                group_protected: BTreeMap::new(),
                absent_since: BTreeMap::new(),
            }
        }

        fn policy(&self) -> Policy<'_> {
            Policy {
                limits: &self.limits,
                group_limit: GroupLimit::DEFAULT,
                group_limits: &self.group_limits,
                protected: &self.protected,
                group_protected: &self.group_protected,
                source_drop: None,
                approved: None,
                allow_removals: false,
                source_users: 1000,
                removal_delay: None,
                absent_since: &self.absent_since,
                now: DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
                    .expect("time")
                    .to_utc(),
            }
        }
    }

    fn members(plan: &Plan) -> &BTreeSet<String> {
        &plan.group_ops().next().expect("a group op").group.members
    }

    #[test]
    fn a_group_losing_most_of_its_members_keeps_them_and_still_gains() {
        // 1,000 members, 600 leave and 5 join: the 5 go out, the 600 wait.
        let before = ids(0..1000);
        let now: BTreeSet<String> = ids(600..1005);
        let (mut plan, snapshot) = case(before.clone(), now);
        let f = Fixture::new();
        let out = apply(&mut plan, &snapshot, &f.policy());
        assert_eq!(out.held.removed_memberships(), 600);
        assert!(
            out.held.reasons[0].contains("would lose 600 of its 1000 members (60.0%)"),
            "{:?}",
            out.held.reasons
        );
        assert_eq!(members(&plan), &ids(0..1005));
        let g = plan.group_ops().next().expect("a group op");
        assert!(g.removed.is_empty());
        assert_eq!(g.added.len(), 5);
        assert!(out.changed_groups.contains("g"));
    }

    /// A snapshot of `n + 10` enabled users and a plan deleting the first `n`.
    fn deletions(n: usize) -> (Plan, Snapshot) {
        let mut snapshot = Snapshot::default();
        let mut plan = Plan::default();
        for i in 0..n + 10 {
            let id = format!("u{i:04}");
            snapshot.users.insert(
                id.clone(),
                SnapshotUser {
                    name: id.clone(),
                    fingerprint: "f".into(),
                    enabled: true,
                    user: None,
                },
            );
            if i < n {
                plan.ops.push(Operation::DeleteUser(UserOp {
                    user: DesiredUser {
                        id: id.clone(),
                        user: User::new(format!("src-{id}"), id.clone()),
                    },
                    fingerprint: "f".into(),
                    reason: Reason::LeftSource,
                    disables: false,
                }));
            }
        }
        (plan, snapshot)
    }

    #[test]
    fn deletions_are_counted_held_approved_and_kept_like_disables() {
        let mut f = Fixture::new();
        f.limits.max_disabled_users = Some(3);
        let (mut plan, snapshot) = deletions(3);
        assert!(apply(&mut plan, &snapshot, &f.policy()).held.is_empty());
        assert_eq!(plan.deleted_users(), 3);

        // One more than the limit: every deletion waits.
        let (mut plan, snapshot) = deletions(4);
        let out = apply(&mut plan, &snapshot, &f.policy());
        assert_eq!((out.held.deleted_users(), out.held.disabled_users()), (4, 0));
        // What an empty source refuses counts them too.
        assert_eq!(out.held.removals(), 4);
        assert!(
            out.held.reasons[0]
                .contains("the plan would disable or delete users (4 of 14, 28.6%), over the limit of 3"),
            "{:?}",
            out.held.reasons
        );
        assert!(plan.ops.is_empty());

        // Approved, the same deletions go out.
        let approved = out.held;
        let (mut plan, snapshot) = deletions(4);
        let policy = Policy {
            approved: Some(&approved),
            ..f.policy()
        };
        let out = apply(&mut plan, &snapshot, &policy);
        assert!(out.held.is_empty());
        assert_eq!((out.approved, plan.deleted_users()), (4, 4));

        // A protected user is never deleted.
        f.protected.insert("u0000".into());
        let (mut plan, snapshot) = deletions(2);
        let out = apply(&mut plan, &snapshot, &f.policy());
        assert_eq!(
            out.kept,
            [Kept {
                group: None,
                member: "u0000".into()
            }]
        );
        let left: Vec<&str> = plan.ops.iter().map(Operation::entity_id).collect();
        assert_eq!(left, ["u0001"]);
    }

    #[test]
    fn small_groups_and_small_losses_pass() {
        let f = Fixture::new();
        // Under the minimum size: 9 members may all go.
        let (mut plan, snapshot) = case(ids(0..9), BTreeSet::new());
        assert!(apply(&mut plan, &snapshot, &f.policy()).held.is_empty());
        // At the limit exactly (50 of 100) is not over it.
        let (mut plan, snapshot) = case(ids(0..100), ids(50..100));
        assert!(apply(&mut plan, &snapshot, &f.policy()).held.is_empty());
        assert_eq!(plan.removed_memberships(), 50);
    }

    #[test]
    fn a_group_of_its_own_limit_uses_it() {
        let mut f = Fixture::new();
        f.group_limits.insert(
            "g".into(),
            GroupLimit {
                max_percent: Some(90.0),
                min_members: 10,
            },
        );
        let (mut plan, snapshot) = case(ids(0..100), ids(40..100));
        assert!(apply(&mut plan, &snapshot, &f.policy()).held.is_empty());
        f.group_limits.insert(
            "g".into(),
            GroupLimit {
                max_percent: Some(10.0),
                min_members: 10,
            },
        );
        let (mut plan, snapshot) = case(ids(0..100), ids(40..100));
        assert_eq!(
            apply(&mut plan, &snapshot, &f.policy())
                .held
                .removed_memberships(),
            40
        );
    }

    #[test]
    fn the_target_wide_limit_holds_every_removal_and_names_its_key() {
        let mut f = Fixture::new();
        f.limits.max_removed_memberships = Some(3);
        let (mut plan, snapshot) = case(ids(0..100), ids(4..100));
        let out = apply(&mut plan, &snapshot, &f.policy());
        assert_eq!(out.held.removed_memberships(), 4);
        assert_eq!(
            out.held.reasons,
            [
                "the plan would remove memberships (4 of 100, 4.0%), over the limit of 3 (`safety.max_removed_memberships`)"
            ]
        );
        assert_eq!(plan.removed_memberships(), 0);
    }

    #[test]
    fn protected_members_stay_even_when_removals_are_allowed() {
        let mut f = Fixture::new();
        f.protected.insert("u0001".into());
        f.group_protected.insert("g".into(), ["u0002".to_owned()].into());
        let (mut plan, snapshot) = case(ids(0..10), ids(3..10));
        let mut policy = f.policy();
        policy.allow_removals = true;
        let out = apply(&mut plan, &snapshot, &policy);
        assert_eq!(out.kept.len(), 2);
        assert!(out.held.is_empty());
        let g = plan.group_ops().next().expect("a group op");
        assert_eq!(g.removed, ["u0000".to_owned()].into());
        assert!(g.group.members.contains("u0001") && g.group.members.contains("u0002"));
    }

    #[test]
    fn approved_removals_go_through_and_new_ones_are_still_counted() {
        let f = Fixture::new();
        let (mut plan, snapshot) = case(ids(0..1000), ids(600..1000));
        let held = apply(&mut plan.clone(), &snapshot, &f.policy()).held;
        let mut policy = f.policy();
        policy.approved = Some(&held);
        let out = apply(&mut plan, &snapshot, &policy);
        assert!(out.held.is_empty(), "{:?}", out.held.reasons);
        assert_eq!(out.approved, 600);
        assert_eq!(plan.removed_memberships(), 600);
        // Approved for 600, but 700 leave: the 100 more are judged on their own (10%).
        let (mut plan, snapshot) = case(ids(0..1000), ids(700..1000));
        let out = apply(&mut plan, &snapshot, &policy);
        assert!(out.held.is_empty());
        assert_eq!(plan.removed_memberships(), 700);
    }

    #[test]
    fn a_removal_waits_for_the_delay_from_when_the_member_was_first_absent() {
        let mut f = Fixture::new();
        let hour = std::time::Duration::from_secs(3600);
        let now = f.policy().now;
        // u0001 has been absent for two hours, u0002 for half an hour, u0003 is new.
        f.absent_since
            .insert(("g".into(), "u0001".into()), now - chrono::Duration::hours(2));
        f.absent_since
            .insert(("g".into(), "u0002".into()), now - chrono::Duration::minutes(30));
        let (mut plan, snapshot) = case(
            ids(0..20),
            ids(4..20).into_iter().chain(["u0000".to_owned()]).collect(),
        );
        let mut policy = f.policy();
        policy.removal_delay = Some(hour);
        let out = apply(&mut plan, &snapshot, &policy);
        let g = plan.group_ops().next().expect("a group op");
        assert_eq!(
            g.removed,
            ["u0001".to_owned()].into(),
            "only the one absent past the delay"
        );
        let due: Vec<(&str, DateTime<Utc>)> =
            out.waiting.iter().map(|w| (w.member.as_str(), w.due)).collect();
        assert_eq!(
            due,
            [
                ("u0002", now + chrono::Duration::minutes(30)),
                ("u0003", now + chrono::Duration::hours(1))
            ]
        );
        assert_eq!(out.absent.len(), 3, "all three stay recorded");
        assert_eq!(out.absent[&("g".to_owned(), "u0003".to_owned())], now);
    }

    #[test]
    fn a_source_drop_holds_removals_not_additions() {
        let f = Fixture::new();
        let why = source_drop((1000, 3000), (600, 1800), Some(30.0), 10).expect("a 40% drop");
        assert!(
            why.starts_with("the source returned 600 users, 40.0% fewer than the 1000"),
            "{why}"
        );
        let (mut plan, snapshot) = case(ids(0..10), ids(2..12));
        let mut policy = f.policy();
        policy.source_drop = Some(&why);
        let out = apply(&mut plan, &snapshot, &policy);
        assert_eq!(out.held.removed_memberships(), 2);
        assert_eq!(out.held.reasons, [why]);
        assert_eq!(plan.added_memberships(), 2);
        assert_eq!(source_drop((1000, 3000), (800, 3000), Some(30.0), 10), None);
        assert_eq!(source_drop((1000, 3000), (0, 0), None, 10), None);
        // 5 users down to 3 is 40%, but no more than `percent_min_count` users.
        assert_eq!(source_drop((5, 8), (3, 6), Some(30.0), 10), None);
    }
}
