//! Propagation latency: how long a directory change took to be confirmed by a
//! target, from the time the source gives the entry (LDAP `modifyTimestamp` or
//! `whenChanged`, a CSV file's mtime) to the confirming answer.
//!
//! Only changes after the target's `changed_through` are measured: the latest
//! change time of the last read whose plan the target confirmed whole. A first sync
//! (nothing confirmed yet) measures nothing, so entries changed years ago do not
//! count as years of delay; a change whose push failed is measured when a later run
//! confirms it, because the failure kept `changed_through` where it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::Serialize;

use crate::model::Directory;
use crate::plan::{Operation, Plan, Reason};

/// The change time each planned operation carries, by entity.
#[derive(Debug, Default)]
pub(crate) struct ChangeTimes {
    /// A group's change time, and how many of the operations it went as (member
    /// deltas of at most N members) are not confirmed yet: the change is measured
    /// once, when the last is.
    groups: HashMap<String, (SystemTime, AtomicUsize)>,
    users: HashMap<String, SystemTime>,
}

impl ChangeTimes {
    /// For each operation of `plan`: a user's own change time; for a group, the
    /// latest among the group entry and its members, since a member's change (a new
    /// member's details, say) is what may have caused the request. Only times after
    /// `since` count, to the millisecond it is kept in; `None` measures nothing, and
    /// so does a resync's operation, which need not stem from a change.
    pub(crate) fn of_plan(plan: &Plan, dir: &Directory, since: Option<SystemTime>) -> ChangeTimes {
        let mut times = ChangeTimes::default();
        let Some(since) = since else { return times };
        let millis = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        };
        let after = |t: Option<SystemTime>| t.filter(|t| millis(*t) > millis(since));
        // The users changed since then, once: usually few, so a group's members are
        // checked against them instead of each looked up in the whole directory.
        let changed: HashMap<&str, SystemTime> = dir
            .users
            .iter()
            .filter_map(|(id, u)| Some((id.as_str(), after(u.changed_at)?)))
            .collect();
        for op in &plan.ops {
            match op {
                Operation::ReplaceMembers(g) if g.reason == Reason::Resync => {}
                Operation::UpdateUser(u) if u.reason == Reason::Resync => {}
                Operation::ReplaceMembers(g) => {
                    let Some(group) = dir.groups.get(&g.group.source_id) else {
                        continue;
                    };
                    let members = group
                        .members
                        .iter()
                        .filter_map(|id| changed.get(id.as_str()).copied());
                    let latest = members.chain(after(group.changed_at)).max();
                    if let Some(t) = latest {
                        let (_, parts) = times
                            .groups
                            .entry(g.group.id.clone())
                            .or_insert_with(|| (t, AtomicUsize::new(0)));
                        parts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Operation::UpdateUser(u) => {
                    if let Some(t) = after(u.user.user.changed_at) {
                        times.users.insert(u.user.id.clone(), t);
                    }
                }
                // The source keeps no time for an entry it no longer has.
                Operation::DeleteUser(_) => {}
            }
        }
        times
    }

    /// Seconds from the change `op` carries to now, its confirmation; for a group
    /// whose change went as several operations, only at the last one's.
    pub(crate) fn seconds_to_now(&self, op: &Operation) -> Option<f64> {
        let at = match op {
            Operation::ReplaceMembers(g) => {
                let (at, parts) = self.groups.get(&g.group.id)?;
                Some(at).filter(|_| parts.fetch_sub(1, Ordering::Relaxed) == 1)
            }
            Operation::UpdateUser(u) => self.users.get(&u.user.id),
            Operation::DeleteUser(_) => None,
        }?;
        // A source clock ahead of this host's makes a change look newer than now.
        Some(
            SystemTime::now()
                .duration_since(*at)
                .map_or(0.0, |d| d.as_secs_f64()),
        )
    }
}

/// A target's propagation latencies in one run, as stored with the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Summary {
    /// Confirmed changes measured.
    pub(crate) count: usize,
    pub(crate) p50_seconds: f64,
    pub(crate) p95_seconds: f64,
    pub(crate) max_seconds: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `seconds`; `None` when there are none.
    pub(crate) fn of(seconds: &[f64]) -> Option<Summary> {
        let mut sorted = seconds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        (!sorted.is_empty()).then(|| Summary {
            count: sorted.len(),
            p50_seconds: rank(0.5),
            p95_seconds: rank(0.95),
            max_seconds: rank(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mapping::{DesiredGroup, DesiredUser};
    use crate::model::{Group, User};
    use crate::plan::{GroupOp, UserOp};

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[4.0]).expect("one");
        assert_eq!(
            (one.count, one.p50_seconds, one.p95_seconds, one.max_seconds),
            (1, 4.0, 4.0, 4.0)
        );
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Summary::of(&hundred).expect("a hundred");
        assert_eq!(
            (s.count, s.p50_seconds, s.p95_seconds, s.max_seconds),
            (100, 50.0, 95.0, 100.0)
        );
    }

    #[test]
    fn only_changes_after_the_confirmed_time_are_measured() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut dir = Directory::default();
        for (id, at) in [("u1", 100), ("u2", 300), ("u3", 500)] {
            let mut u = User::new(id, id);
            u.changed_at = Some(t(at));
            dir.users.insert(id.into(), u);
        }
        let mut g = Group::new("g1", "team");
        g.members = ["u1".to_owned(), "u2".to_owned()].into();
        g.changed_at = Some(t(200));
        dir.groups.insert("g1".into(), g);
        let group_op = |target_id: &str| {
            Operation::ReplaceMembers(GroupOp {
                group: DesiredGroup {
                    id: target_id.into(),
                    name: "team".into(),
                    source_id: "g1".into(),
                    source_name: "team".into(),
                    members: Default::default(),
                    attrs: Default::default(),
                },
                fingerprint: String::new(),
                reason: Reason::Changed,
                added: Default::default(),
                removed: Default::default(),
                delta: None,
            })
        };
        let user_op = |id: &str| {
            Operation::UpdateUser(UserOp {
                user: DesiredUser {
                    id: format!("T-{id}"),
                    user: dir.users[id].clone(),
                },
                fingerprint: String::new(),
                reason: Reason::Changed,
                disables: false,
            })
        };
        let plan = Plan {
            ops: vec![group_op("G1"), user_op("u1"), user_op("u3")],
            ..Plan::default()
        };
        let times = ChangeTimes::of_plan(&plan, &dir, Some(t(150)));
        // The group: its own change (200) and u2's (300); u3 is not a member.
        assert_eq!(times.groups.get("G1").map(|(at, _)| at), Some(&t(300)));
        assert_eq!(times.users.get("T-u1"), None, "changed before the confirmed time");
        assert_eq!(times.users.get("T-u3"), Some(&t(500)));
        assert!(times.seconds_to_now(&plan.ops[2]).is_some_and(|s| s > 1e9));
        assert!(times.seconds_to_now(&plan.ops[1]).is_none());

        let nothing = ChangeTimes::of_plan(&plan, &dir, None);
        assert!(nothing.groups.is_empty() && nothing.users.is_empty());

        // A change sent as two member deltas is measured once, at the second.
        let halves = Plan {
            ops: vec![group_op("G1"), group_op("G1")],
            ..Plan::default()
        };
        let times = ChangeTimes::of_plan(&halves, &dir, Some(t(150)));
        assert_eq!(times.seconds_to_now(&halves.ops[0]), None);
        assert!(times.seconds_to_now(&halves.ops[1]).is_some());

        // The confirmed time is kept in whole milliseconds: a change within the
        // millisecond it names (a file's mtime, in nanoseconds) is not after it.
        let mut plan = Plan {
            ops: vec![user_op("u3")],
            ..Plan::default()
        };
        if let Operation::UpdateUser(u) = &mut plan.ops[0] {
            u.user.user.changed_at = Some(t(500) + Duration::from_nanos(700_000));
        }
        let confirmed = ChangeTimes::of_plan(&plan, &dir, Some(t(500)));
        assert!(confirmed.users.is_empty(), "the same millisecond");

        // A resync pushes what did not change as well: it measures nothing.
        let mut resync = plan;
        if let Operation::UpdateUser(u) = &mut resync.ops[0] {
            u.reason = Reason::Resync;
        }
        assert!(ChangeTimes::of_plan(&resync, &dir, Some(t(100))).users.is_empty());
    }
}
