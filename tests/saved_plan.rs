//! Saved plans end to end against the group-members API mock: `sync --dry-run --out`
//! writes the exact plan without secrets, `apply` sends exactly it while the target
//! is unchanged, and refuses (naming what changed) once it is not.

mod common;

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, expected_state, group_uuid, groups_csv, users_csv};

fn groups(eng: &[u64]) -> Vec<(&'static str, Vec<u64>)> {
    vec![("eng", eng.to_vec()), ("ops", (8..=20).collect())]
}

fn csv(groups: &[(&str, Vec<u64>)]) -> String {
    let refs: Vec<(&str, &[u64])> = groups.iter().map(|(n, m)| (*n, m.as_slice())).collect();
    groups_csv(&refs)
}

fn state(
    groups: &[(&str, Vec<u64>)],
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let refs: Vec<(&str, &[u64])> = groups.iter().map(|(n, m)| (*n, m.as_slice())).collect();
    expected_state(&refs)
}

async fn dirsync(env: &Env, args: &[&str]) -> common::Run {
    env.run(args, &[("TEST_OFFICE_KEY", KEY)]).await
}

async fn setup(mock: &GroupMembersApi) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(20));
    env.write("groups.csv", &csv(&groups(&[1, 2, 3])));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    dirsync(&env, &["sync"]).await.expect_code(0);
    env
}

#[tokio::test]
async fn a_saved_plan_applies_exactly_and_a_following_sync_sends_nothing() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock).await;
    let plan = env.path("plan.json").display().to_string();
    env.write("groups.csv", &csv(&groups(&[1, 2, 4, 5])));
    let before = mock.request_count().await;
    let dry = dirsync(&env, &["sync", "--dry-run", "--out", &plan]).await;
    dry.expect_code(0);
    assert_eq!(mock.request_count().await, before, "a dry run sends nothing");
    let text = std::fs::read_to_string(env.path("plan.json")).expect("plan.json");
    assert!(!text.contains(KEY), "no secret in the plan");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("json");
    let ops = saved["targets"][0]["operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 1, "{text}");
    assert_eq!(ops[0]["op"], "replace_members");
    assert_eq!(ops[0]["group"]["id"], group_uuid(0).as_str());

    // The source moves on after the plan was made: apply still sends the plan, not the source.
    env.write("groups.csv", &csv(&groups(&[1, 2, 4, 5, 6])));
    dirsync(&env, &["apply", &plan]).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.groups(), state(&groups(&[1, 2, 4, 5])));

    // Back to the source the plan was made from: the next sync has nothing to send.
    env.write("groups.csv", &csv(&groups(&[1, 2, 4, 5])));
    let after = mock.request_count().await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        after,
        "the applied plan was the source's"
    );
}

#[tokio::test]
async fn a_stale_plan_is_refused_with_what_changed_and_sends_nothing() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock).await;
    let plan = env.path("plan.json").display().to_string();
    env.write("groups.csv", &csv(&groups(&[1, 2, 4])));
    dirsync(&env, &["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    // A sync confirms another change first.
    env.write("groups.csv", &csv(&groups(&[1, 9])));
    dirsync(&env, &["sync"]).await.expect_code(0);
    let before = mock.request_count().await;
    let run = dirsync(&env, &["apply", &plan]).await;
    run.expect_code(4);
    assert!(
        run.stderr.contains(&format!(
            "the saved plan no longer applies to target `office`: the target confirmed other changes since the plan \
             was made: group {}",
            group_uuid(0)
        )),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, before, "nothing sent");

    // A changed target config makes a plan stale too.
    dirsync(&env, &["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    let config = std::fs::read_to_string(env.config()).expect("config");
    env.write(
        "dirsync.toml",
        &config.replace("concurrency = 4", "concurrency = 3"),
    );
    let run = dirsync(&env, &["apply", &plan]).await;
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("the target's config changed since the plan was made"),
        "{}",
        run.stderr
    );

    // A target the config no longer has.
    env.write("dirsync.toml", &config);
    dirsync(&env, &["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    env.write("dirsync.toml", &config.replace("targets.office", "targets.other"));
    let run = dirsync(&env, &["apply", &plan]).await;
    run.expect_code(4);
    assert!(
        run.stderr.contains(
            "the saved plan no longer applies to target `office`: the config has no target of that name any more"
        ),
        "{}",
        run.stderr
    );
    env.write("dirsync.toml", &config);
    assert_eq!(mock.request_count().await, before, "nothing sent");

    // Not a plan at all: a usage error naming the file.
    env.write("plan.json", "{}");
    let run = dirsync(&env, &["apply", &plan]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("plan.json: not a saved plan"),
        "{}",
        run.stderr
    );
}

/// An apply marks its targets for planning before its first request: killed part way
/// through its push, the next sync of the unchanged source plans the target again
/// and takes back what the plan sent, instead of skipping a target it takes for clean.
#[tokio::test]
async fn an_apply_killed_during_its_push_is_undone_by_the_next_sync() {
    let mock = GroupMembersApi::start().await;
    // 60 teams of two, and of three in the plan.
    let teams = |third: bool| -> Vec<(String, Vec<u64>)> {
        (0..60)
            .map(|k| {
                let mut members = vec![1 + k % 5, 6 + k % 5];
                members.extend(third.then_some(11 + k % 2));
                (format!("team{k}"), members)
            })
            .collect()
    };
    let write = |env: &Env, groups: &[(String, Vec<u64>)]| {
        let refs: Vec<(&str, &[u64])> = groups.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect();
        env.write("groups.csv", &groups_csv(&refs));
        expected_state(&refs)
    };
    let env = Env::new();
    env.write("users.csv", &users_csv(12));
    let source = write(&env, &teams(false));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), source);

    // A plan for another source, made and then left: the source goes back, and the
    // target, unchanged, is clean for it.
    let plan = env.path("plan.json").display().to_string();
    write(&env, &teams(true));
    dirsync(&env, &["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    write(&env, &teams(false));
    dirsync(&env, &["sync"]).await.expect_code(0);

    // The apply changes four teams; the others hang, and it is killed meanwhile.
    mock.lock().hang = (4..60).map(group_uuid).collect();
    let before = mock.accepted().len();
    let mut child = env
        .command(&["apply", &plan])
        .env("TEST_OFFICE_KEY", KEY)
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while mock.accepted().len() < before + 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the apply made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Until the apply has recorded what the target confirmed.
    let db = common::sqlite(&env.db()).await;
    loop {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit JOIN runs ON runs.id = audit.run_id
             WHERE runs.command = 'apply' AND audit.outcome = 'success'",
        )
        .fetch_one(&db)
        .await
        .expect("count the apply's confirmations");
        if recorded >= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the apply recorded nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    db.close().await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    mock.lock().hang.clear();
    assert_ne!(mock.groups(), source, "the apply changed four teams");

    let next = dirsync(&env, &["sync", "--allow-removals"]).await;
    next.expect_code(0);
    assert!(
        mock.groups() == source,
        "the sync takes back what the apply sent: {}",
        next.stderr
    );
    mock.assert_no_violations();
}

/// A plan edited after it was made (a member taken out of a group's list) is not
/// what its own data builds: `apply` refuses it, naming the operation, and sends
/// nothing.
#[tokio::test]
async fn an_edited_plan_is_refused_naming_the_operation() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock).await;
    let plan = env.path("plan.json").display().to_string();
    env.write("groups.csv", &csv(&groups(&[1, 2, 4])));
    dirsync(&env, &["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(0);
    let text = std::fs::read_to_string(env.path("plan.json")).expect("plan.json");
    let mut saved: serde_json::Value = serde_json::from_str(&text).expect("json");
    let members = saved["targets"][0]["operations"][0]["group"]["members"]
        .as_array_mut()
        .expect("members");
    members.pop();
    env.write("plan.json", &saved.to_string());

    let before = mock.request_count().await;
    let run = dirsync(&env, &["apply", &plan]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!(
            "plan.json: target `office`: replace_members {} is not what the plan's own data builds",
            group_uuid(0)
        )),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, before, "nothing sent");
}

/// A plan whose dry run held removals back: `apply` holds them too, exits 4 as the
/// sync would, and records the set, which `dirsync approve` then sends.
#[tokio::test]
async fn removals_a_saved_plan_held_are_held_by_apply_and_can_be_approved() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock).await;
    let plan = env.path("plan.json").display().to_string();
    // eng gains user 4; ops loses 11 of its 13 members, over the default limits.
    let next = vec![("eng", vec![1, 2, 3, 4]), ("ops", vec![8, 9])];
    env.write("groups.csv", &csv(&next));
    let dry = dirsync(&env, &["sync", "--dry-run", "--out", &plan]).await;
    dry.expect_code(4);

    let applied = dirsync(&env, &["apply", &plan]).await;
    applied.expect_code(4);
    assert!(
        applied.stderr.contains("Held removals back"),
        "{}",
        applied.stderr
    );
    let added = vec![("eng", vec![1, 2, 3, 4]), ("ops", (8..=20).collect())];
    assert_eq!(
        mock.groups(),
        state(&added),
        "the addition went out, the removals did not"
    );
    let held = dirsync(&env, &["held", "--json"]).await;
    held.expect_code(0);
    let sets: Vec<serde_json::Value> = serde_json::from_str(&held.stdout).expect("held --json");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0]["removed_memberships"], 11, "{sets:?}");
    let id = sets[0]["id"].as_str().expect("id").to_owned();

    env.run(
        &["approve", &id],
        &[("TEST_OFFICE_KEY", KEY), ("USER", "alice"), ("SUDO_USER", "")],
    )
    .await
    .expect_code(0);
    assert_eq!(mock.groups(), state(&next));
}

/// A plan that lists no held removals (its dry run held none, or it was written
/// before plans listed them) leaves the target's held set as it is.
#[tokio::test]
async fn a_plan_without_held_removals_leaves_the_held_set_alone() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock).await;
    let plan = env.path("plan.json").display().to_string();
    env.write("groups.csv", &csv(&[("eng", vec![1, 2, 3]), ("ops", vec![8, 9])]));
    dirsync(&env, &["sync"]).await.expect_code(4);
    let held = || async {
        let run = dirsync(&env, &["held", "--json"]).await;
        run.expect_code(0);
        serde_json::from_str::<Vec<serde_json::Value>>(&run.stdout).expect("held --json")
    };
    let before = held().await;
    assert_eq!(before.len(), 1, "{before:?}");

    env.write(
        "groups.csv",
        &csv(&[("eng", vec![1, 2, 3, 4]), ("ops", vec![8, 9])]),
    );
    dirsync(&env, &["sync", "--dry-run", "--out", &plan])
        .await
        .expect_code(4);
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).expect("plan")).expect("json");
    let target = saved["targets"][0].as_object_mut().expect("a target");
    assert!(
        target.remove("held").is_some(),
        "the plan lists its held removals"
    );
    std::fs::write(&plan, saved.to_string()).expect("write the plan");
    dirsync(&env, &["apply", &plan]).await.expect_code(0);
    assert_eq!(held().await, before, "the held set is untouched");
}
