//! Safety limits: refuse a plan that would remove too much.
//!
//! Pure. A mistake upstream (an emptied OU, a wrong filter, a half-read directory)
//! looks like mass removals; these checks turn it into a refused run with counts and
//! the way to allow it, instead of an outage on the target.

use serde::Serialize;

use crate::plan::{Plan, Snapshot};

/// Per-target limits; `None` means no limit of that kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    pub max_removed_memberships: Option<usize>,
    pub max_removed_memberships_percent: Option<f64>,
    pub max_disabled_users: Option<usize>,
    pub max_disabled_users_percent: Option<f64>,
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

/// Checks a target's plan against its limits, relative to what the target has now.
pub fn check(plan: &Plan, snapshot: &Snapshot, limits: &Limits) -> Result<(), Refusal> {
    check_one(
        "remove memberships",
        plan.removed_memberships(),
        snapshot.membership_count(),
        limits.max_removed_memberships,
        limits.max_removed_memberships_percent,
        (
            "safety.max_removed_memberships",
            "safety.max_removed_memberships_percent",
        ),
    )?;
    check_one(
        "disable users",
        plan.disabled_users(),
        snapshot.enabled_users(),
        limits.max_disabled_users,
        limits.max_disabled_users_percent,
        ("safety.max_disabled_users", "safety.max_disabled_users_percent"),
    )
}

fn check_one(
    what: &'static str,
    count: usize,
    base: usize,
    max: Option<usize>,
    max_percent: Option<f64>,
    keys: (&'static str, &'static str),
) -> Result<(), Refusal> {
    if count == 0 {
        return Ok(());
    }
    let percent = if base == 0 {
        100.0
    } else {
        count as f64 * 100.0 / base as f64
    };
    let refusal = |limit: String, key| Refusal {
        what,
        count,
        base,
        percent,
        limit,
        key,
    };
    if let Some(max) = max.filter(|max| count > *max) {
        return Err(refusal(max.to_string(), keys.0));
    }
    if let Some(max) = max_percent.filter(|max| percent > *max) {
        return Err(refusal(format!("{max}%"), keys.1));
    }
    Ok(())
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
            })],
            ..Plan::default()
        };
        check(&plan, &snap, &limits)
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
        let cases: &[(usize, usize, Limits, bool)] = &[
            (100, 10, abs(10), true),
            (100, 11, abs(10), false),
            (100, 10, pct(10.0), true),
            (100, 11, pct(10.0), false),
            (100, 50, Limits::default(), true),
            (100, 0, abs(0), true),
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
