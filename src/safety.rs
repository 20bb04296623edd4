//! Safety limits: refuse a plan that would remove too much.
//!
//! Pure. A mistake upstream (an emptied OU, a wrong filter, a half-read directory)
//! looks like mass removals; these checks turn it into a refused run with counts and
//! the way to allow it, instead of an outage on the target.

use serde::Serialize;

use crate::plan::{Operation, Plan, Snapshot};

/// Per-target limits; `None` means no limit of that kind. `Default` is no limit at
/// all; the config starts from [`Limits::DEFAULTS`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    pub(crate) max_removed_memberships: Option<usize>,
    pub(crate) max_removed_memberships_percent: Option<f64>,
    pub(crate) max_disabled_users: Option<usize>,
    pub(crate) max_disabled_users_percent: Option<f64>,
    /// Share of the source's users left without a target id: a typo in the key that
    /// maps users to target ids leaves every user unmapped and every group empty.
    pub(crate) max_unmapped_users_percent: Option<f64>,
    /// The percentage limits apply only to plans that remove (or disable) more than
    /// this many, so that ordinary churn in a small directory is not refused.
    pub(crate) percent_min_count: usize,
}

impl Limits {
    /// What a target gets when the config says nothing: each can be changed, and
    /// turned off with `0`, in `[safety]` or `[targets.NAME.safety]`.
    pub(crate) const DEFAULTS: Limits = Limits {
        max_removed_memberships: Some(500),
        max_removed_memberships_percent: Some(10.0),
        max_disabled_users: Some(100),
        max_disabled_users_percent: Some(5.0),
        max_unmapped_users_percent: Some(50.0),
        percent_min_count: 10,
    };
}

/// The limits in words, for `dirsync check`: "removed memberships over 500 or over
/// 10% (when more than 10), …", or "off" for each kind turned off.
impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = |what: &str, max: Option<usize>, pct: Option<f64>| {
            let mut parts = Vec::new();
            if let Some(n) = max {
                parts.push(format!("over {n}"));
            }
            if let Some(p) = pct {
                parts.push(format!("over {p}% (when more than {})", self.percent_min_count));
            }
            if parts.is_empty() {
                format!("{what} off")
            } else {
                format!("{what} {}", parts.join(" or "))
            }
        };
        write!(
            f,
            "{}; {}; {}",
            kind(
                "removed memberships",
                self.max_removed_memberships,
                self.max_removed_memberships_percent
            ),
            kind(
                "disabled users",
                self.max_disabled_users,
                self.max_disabled_users_percent
            ),
            kind("users without a target id", None, self.max_unmapped_users_percent),
        )
    }
}

/// Why a target's plan was refused.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error(
    "the plan would {what} ({count} of {base}, {percent:.1}%), over the limit of {limit}; \
     pass --allow-removals to allow it once, or raise `{key}` in the config"
)]
pub struct Refusal {
    pub what: &'static str,
    pub count: usize,
    pub base: usize,
    pub percent: f64,
    pub limit: String,
    pub key: &'static str,
}

/// Checks a target's plan against its limits, relative to what the target has now
/// (removals, disables) and to the `source_users` read (unmapped users).
pub fn check(plan: &Plan, snapshot: &Snapshot, limits: &Limits, source_users: usize) -> Result<(), Refusal> {
    let checks = [
        // First: when users lost their target ids, that is the cause of any removals.
        Check {
            what: "leave users without a target id",
            count: plan.unmapped.len(),
            base: source_users,
            max: None,
            max_percent: limits.max_unmapped_users_percent,
            keys: ("", "safety.max_unmapped_users_percent"),
        },
        Check {
            what: "remove memberships",
            count: plan.removed_memberships(),
            base: snapshot.membership_count(),
            max: limits.max_removed_memberships,
            max_percent: limits.max_removed_memberships_percent,
            keys: (
                "safety.max_removed_memberships",
                "safety.max_removed_memberships_percent",
            ),
        },
        // A deletion is a removal of the user: counted with the disables, against
        // the users the target has that it would disable or delete.
        Check {
            what: match plan.deleted_users() {
                0 => "disable users",
                _ => "disable or delete users",
            },
            count: plan.disabled_users() + plan.deleted_users(),
            base: snapshot.enabled_users() + deleted_disabled_users(plan, snapshot),
            max: limits.max_disabled_users,
            max_percent: limits.max_disabled_users_percent,
            keys: ("safety.max_disabled_users", "safety.max_disabled_users_percent"),
        },
    ];
    checks
        .into_iter()
        .try_for_each(|c| c.run(limits.percent_min_count))
}

/// Users the plan deletes that the target holds disabled: not among its enabled
/// users, yet among those a deletion removes.
fn deleted_disabled_users(plan: &Plan, snapshot: &Snapshot) -> usize {
    plan.ops
        .iter()
        .filter(|op| matches!(op, Operation::DeleteUser(_)))
        .filter(|op| snapshot.users.get(op.entity_id()).is_some_and(|u| !u.enabled))
        .count()
}

/// What a plan would do, counted against what there is, and the limits of that kind
/// with the config keys that set them.
struct Check {
    what: &'static str,
    count: usize,
    base: usize,
    max: Option<usize>,
    max_percent: Option<f64>,
    keys: (&'static str, &'static str),
}

impl Check {
    fn run(self, percent_min_count: usize) -> Result<(), Refusal> {
        if self.count == 0 {
            return Ok(());
        }
        let percent = if self.base == 0 {
            100.0
        } else {
            self.count as f64 * 100.0 / self.base as f64
        };
        let refusal = |limit: String, key| Refusal {
            what: self.what,
            count: self.count,
            base: self.base,
            percent,
            limit,
            key,
        };
        if let Some(max) = self.max.filter(|max| self.count > *max) {
            return Err(refusal(max.to_string(), self.keys.0));
        }
        if let Some(max) = self
            .max_percent
            .filter(|max| percent > *max && self.count > percent_min_count)
        {
            return Err(refusal(format!("{max}%"), self.keys.1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::DesiredGroup;
    use crate::plan::{GroupOp, Operation, Reason, SnapshotGroup};
    use std::collections::BTreeSet;

    fn ids(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("u{i}")).collect()
    }

    /// A snapshot of one group with `base` members and a plan removing `removed`.
    fn check_removals(base: usize, removed: usize, limits: Limits) -> Result<(), Refusal> {
        let mut snap = Snapshot::default();
        snap.groups.insert(
            "g".into(),
            SnapshotGroup {
                name: "g".into(),
                members: ids(base).into(),
                fingerprint: String::new(),
                member_users: None,
                confirmed_at: String::new(),
            },
        );
        let group = DesiredGroup {
            id: "g".into(),
            name: "g".into(),
            source_id: "g".into(),
            source_name: "g".into(),
            members: BTreeSet::new(),
            attrs: Default::default(),
        };
        let plan = Plan {
            ops: vec![Operation::ReplaceMembers(GroupOp {
                group,
                fingerprint: String::new(),
                reason: Reason::Changed,
                added: BTreeSet::new(),
                removed: ids(removed),
                delta: None,
            })],
            ..Plan::default()
        };
        check(&plan, &snap, &limits, 0)
    }

    #[test]
    fn limits() {
        let abs = |n| Limits {
            max_removed_memberships: Some(n),
            ..Limits::default()
        };
        let pct = |p| Limits {
            max_removed_memberships_percent: Some(p),
            ..Limits::default()
        };
        let small = |p, min| Limits {
            max_removed_memberships_percent: Some(p),
            percent_min_count: min,
            ..Limits::default()
        };
        let cases: &[(usize, usize, Limits, bool)] = &[
            (100, 10, abs(10), true),
            (100, 11, abs(10), false),
            (100, 10, pct(10.0), true),
            (100, 11, pct(10.0), false),
            (100, 50, Limits::default(), true),
            (100, 0, abs(0), true),
            // A percentage is not judged on a handful of removals.
            (20, 3, small(10.0, 10), true),
            (20, 11, small(10.0, 10), false),
            (20, 3, small(10.0, 0), false),
            // The defaults: 500 or 10% (over 10 removals).
            (40, 10, Limits::DEFAULTS, true),
            (40, 11, Limits::DEFAULTS, false),
            (100_000, 500, Limits::DEFAULTS, true),
            (100_000, 501, Limits::DEFAULTS, false),
        ];
        for (base, removed, limits, ok) in cases {
            let got = check_removals(*base, *removed, limits.clone());
            assert_eq!(
                got.is_ok(),
                *ok,
                "base {base} removed {removed} {limits:?}: {got:?}"
            );
        }
    }

    /// Issue 15: a typo in the user id key leaves most users unmapped.
    #[test]
    fn most_users_unmapped_is_refused_by_default() {
        let unmapped = |n: usize| Plan {
            unmapped: (0..n)
                .map(|i| crate::mapping::Unmapped {
                    source_id: format!("s{i}"),
                    username: format!("u{i}"),
                    reason: "no `mail`".into(),
                })
                .collect(),
            ..Plan::default()
        };
        let snap = Snapshot::default();
        assert!(check(&unmapped(50), &snap, &Limits::DEFAULTS, 100).is_ok());
        let err = check(&unmapped(51), &snap, &Limits::DEFAULTS, 100).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "the plan would leave users without a target id (51 of 100, 51.0%), over the limit of 50%; \
             pass --allow-removals to allow it once, or raise `safety.max_unmapped_users_percent` in the config"
        );
        assert!(check(&unmapped(51), &snap, &Limits::default(), 100).is_ok());
    }

    #[test]
    fn the_defaults_in_words() {
        assert_eq!(
            Limits::DEFAULTS.to_string(),
            "removed memberships over 500 or over 10% (when more than 10); \
             disabled users over 100 or over 5% (when more than 10); \
             users without a target id over 50% (when more than 10)"
        );
        assert_eq!(
            Limits::default().to_string(),
            "removed memberships off; disabled users off; users without a target id off"
        );
    }

    #[test]
    fn message_names_counts_flag_and_key() {
        let err = check_removals(
            200,
            50,
            Limits {
                max_removed_memberships_percent: Some(10.0),
                ..Limits::default()
            },
        )
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "the plan would remove memberships (50 of 200, 25.0%), over the limit of 10%; \
             pass --allow-removals to allow it once, or raise \
             `safety.max_removed_memberships_percent` in the config"
        );
    }
}
