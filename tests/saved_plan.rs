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
