//! The safety limits a target has when the config says nothing, end to end against
//! the group-members API mock: a deep cut in the memberships and a user id key that
//! maps nobody are refused (exit 4, nothing sent); an explicit `0` turns a limit off
//! (issue 15).

mod common;

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, as_refs, expected_state, groups_csv};

fn groups() -> Vec<(String, Vec<u64>)> {
    common::four_groups()
}

fn setup(mock: &GroupMembersApi, extra: &str) -> Env {
    common::four_groups_env(&mock.uri(), extra)
}

async fn sync(env: &Env, args: &[&str]) -> common::Run {
    env.run(args, &[("TEST_OFFICE_KEY", KEY)]).await
}

/// Most of every group's members leave: 32 of 44 memberships, over 10%.
fn cut() -> Vec<(String, Vec<u64>)> {
    groups()
        .into_iter()
        .map(|(n, m)| (n, m.into_iter().take(3).collect()))
        .collect()
}

#[tokio::test]
async fn a_deep_cut_is_refused_without_any_safety_table() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    sync(&env, &["sync"]).await.expect_code(0);
    let before = mock.request_count().await;

    env.write("groups.csv", &groups_csv(&as_refs(&cut())));
    let run = sync(&env, &["sync"]).await;
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("remove memberships (32 of 44, 72.7%), over the limit of 10%"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("safety.max_removed_memberships_percent"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, before, "nothing sent");

    sync(&env, &["sync", "--allow-removals"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&as_refs(&cut())));
}

#[tokio::test]
async fn a_zero_turns_a_limit_off() {
    let mock = GroupMembersApi::start().await;
    let env = setup(
        &mock,
        "[targets.office.safety]\nmax_removed_memberships = 0\nmax_removed_memberships_percent = 0\n\
         max_removed_members_per_group_percent = 0\nmax_source_drop_percent = 0\n",
    );
    sync(&env, &["sync"]).await.expect_code(0);
    env.write("groups.csv", &groups_csv(&as_refs(&cut())));
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&as_refs(&cut())));
}

/// A typo in the attribute that holds the target user id leaves every user unmapped:
/// without a limit, every group would be pushed empty.
#[tokio::test]
async fn a_user_id_key_that_maps_nobody_is_refused() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    sync(&env, &["sync"]).await.expect_code(0);
    let before = mock.request_count().await;
    let good = std::fs::read_to_string(env.config()).expect("config");
    env.write(
        "dirsync.toml",
        &good.replace("id_attribute = \"tid\"", "id_attribute = \"tdi\""),
    );
    let run = sync(&env, &["sync"]).await;
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("leave users without a target id (20 of 20, 100.0%)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("safety.max_unmapped_users_percent"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, before, "nothing sent");
    assert_eq!(
        mock.groups(),
        expected_state(&as_refs(&groups())),
        "nothing emptied"
    );
}

/// Ordinary churn in a small directory stays under the defaults: a few removals are
/// never judged by percentage.
#[tokio::test]
async fn a_few_removals_pass_the_defaults() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    sync(&env, &["sync"]).await.expect_code(0);
    let mut fewer = groups();
    fewer[0].1.truncate(9);
    env.write("groups.csv", &groups_csv(&as_refs(&fewer)));
    sync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&as_refs(&fewer)));
}
