//! The admin-user-group API (`adminuser-group`): the real binary against a mock that enforces the
//! document's contract and keeps the groups and their users.

mod common;

use common::adminuser_group::{AdminUserGroupApi, TOKEN};
use common::{Env, assert_no_leak, config_csv, expected_state, group_uuid, target_common, users_csv, uuid};

const GROUPS: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 4]), ("empty", &[])];

/// Groups CSV with a `description` column; `name` may need CSV quoting.
fn groups_csv(groups: &[(&str, &[u64])]) -> String {
    common::groups_csv_quoted(groups, Some(("description", |k| format!("The {k} team"))))
}

fn setup(mock: &AdminUserGroupApi, groups: &[(&str, &[u64])], extra: &str) -> Env {
    let target = target_common("platform", "preset = \"adminuser-group\"", &mock.uri());
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(groups));
    env.write(
        "dirsync.toml",
        &config_csv(&format!(
            "{target}\n[targets.platform.auth]\ntoken_env = \"TEST_JWT\"\n\
             [targets.platform.vars]\nscope_type_id = 3\nscope_id = 42\n{extra}"
        )),
    );
    env
}

const GOOD: &[(&str, &str)] = &[("TEST_JWT", TOKEN)];

#[tokio::test]
async fn first_sync_converges_then_nothing_then_one_request_per_change() {
    let mock = AdminUserGroupApi::start().await;
    let env = setup(&mock, GROUPS, "");

    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    assert_eq!(mock.request_count().await, GROUPS.len());
    assert_eq!(mock.lock().members(), expected_state(GROUPS));
    {
        let state = mock.lock();
        let eng = &state.groups[&group_uuid(0)];
        assert_eq!((eng.scope_type_id, eng.scope_id), (3, 42));
        assert_eq!(eng.name.as_deref(), Some("eng"));
        assert_eq!(eng.description.as_deref(), Some("The 0 team"));
        let user = &eng.users[&uuid(1)];
        assert_eq!(user["userName"], "user1");
        assert_eq!(user["emailAddress"], "user1@example.com");
        assert_eq!(user["isActive"], true);
        assert_eq!(
            state.response_fields,
            vec![None; GROUPS.len()],
            "no responseFields unless asked"
        );
    }

    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len(),
        "unchanged: nothing sent"
    );

    let changed: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 4]), ("empty", &[5])];
    env.write("groups.csv", &groups_csv(changed));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len() + 1,
        "one change, one request"
    );
    assert_eq!(mock.lock().members(), expected_state(changed));
    mock.assert_no_violations();
}

#[tokio::test]
async fn names_that_break_json_arrive_intact() {
    let mock = AdminUserGroupApi::start().await;
    let nasty = "R&D \"core\" <team>\nsecond line";
    let env = setup(&mock, &[(nasty, &[1])], "");
    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    assert_eq!(mock.lock().groups[&group_uuid(0)].name.as_deref(), Some(nasty));
}

#[tokio::test]
async fn response_fields_and_drift_from_the_users_answered() {
    let mock = AdminUserGroupApi::start().await;
    mock.lock().ignore_users.insert(uuid(3));
    let env = setup(&mock, GROUPS, "");
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("differs from what was sent"),
        "{}",
        run.stderr
    );
    assert!(
        env.audit_text()
            .await
            .contains(&format!("\"missing\":[\"{}\"]", uuid(3)))
    );

    // An answer limited to `groupCode` says nothing about users: no drift.
    let mock = AdminUserGroupApi::start().await;
    mock.lock().ignore_users.insert(uuid(3));
    let env = setup(&mock, GROUPS, "response_fields = \"groupCode\"\n");
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(0);
    assert!(
        !run.stderr.contains("differs from what was sent"),
        "{}",
        run.stderr
    );
    assert_eq!(
        mock.lock().response_fields,
        vec![Some("groupCode".to_owned()); GROUPS.len()]
    );
}

#[tokio::test]
async fn a_failed_group_is_retried_next_run() {
    let mock = AdminUserGroupApi::start().await;
    mock.lock().fail.insert(group_uuid(1));
    let env = setup(&mock, GROUPS, "");
    env.run(&["sync"], GOOD).await.expect_code(3);
    mock.lock().fail.clear();
    let before = mock.request_count().await;
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.lock().members(), expected_state(GROUPS));
}

#[tokio::test]
async fn missing_scope_is_a_config_error_naming_the_key() {
    let mock = AdminUserGroupApi::start().await;
    let env = setup(&mock, GROUPS, "");
    let text = std::fs::read_to_string(env.config())
        .expect("config")
        .replace("scope_id = 42\n", "");
    env.write("dirsync.toml", &text);
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(5);
    assert!(
        run.stderr.contains("`targets.platform.vars.scope_id`: missing"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, 0);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_naming_the_target() {
    let mock = AdminUserGroupApi::start().await;
    let env = setup(&mock, GROUPS, "");
    let run = env.run(&["sync"], &[("TEST_JWT", "eyJ.wrong.token")]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("target `platform` refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(mock.request_count().await <= 4);
    assert!(env.snapshot().await.is_empty());
}

#[tokio::test]
async fn the_token_never_leaks() {
    let mock = AdminUserGroupApi::start().await;
    mock.lock().fail.insert(group_uuid(0));
    let env = setup(&mock, GROUPS, "");
    assert_no_leak(TOKEN, &env.everything_visible(GOOD).await);
    assert!(!mock.lock().accepted.is_empty());
}

/// The users of `users_csv(n)` whose number is in `keep`.
fn users_csv_only(n: u64, keep: &[u64]) -> String {
    let mut users = String::from("id,username,email,tid\n");
    for line in users_csv(n).lines().skip(1) {
        let number: u64 = line
            .split(',')
            .next()
            .and_then(|id| id.trim_start_matches('u').parse().ok())
            .unwrap_or(0);
        if keep.contains(&number) {
            users.push_str(line);
            users.push('\n');
        }
    }
    users
}

/// This API replaces a group's users with the ones its body names, with their
/// details: members a per-group limit holds stay in that list. A held member still
/// in the source (in no mapped group) is described from the source; one who left
/// the source is described as the group was last confirmed, so the group's other
/// changes still go out.
#[tokio::test]
async fn members_held_by_a_group_limit_stay_in_the_pushed_list() {
    let mock = AdminUserGroupApi::start().await;
    let all: Vec<u64> = (1..=12).collect();
    let limit =
        "[targets.platform.safety]\nmax_removed_members_per_group_percent = 50\nper_group_min_members = 10\n";
    let env = setup(&mock, &[("ops", &all)], limit);
    env.write("users.csv", &users_csv(14));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.lock().members(), expected_state(&[("ops", &all)]));

    // Seven of twelve leave the group (they stay in the source); one joins.
    let kept: &[u64] = &[1, 2, 3, 4, 5, 13];
    env.write("groups.csv", &groups_csv(&[("ops", kept)]));
    let run = env.run(&["sync"], GOOD).await;
    assert!(run.stderr.contains("Held removals back"), "{}", run.stderr);
    let with_held: Vec<u64> = (1..=13).collect();
    assert_eq!(mock.lock().members(), expected_state(&[("ops", &with_held)]));
    assert_eq!(
        mock.lock().groups[&group_uuid(0)].users[&uuid(9)]["userName"],
        "user9"
    );

    // They leave the source: the list as confirmed still describes them, and it is
    // what the target has, so nothing is sent.
    env.write("users.csv", &users_csv_only(14, &[1, 2, 3, 4, 5, 13, 14]));
    let before = mock.request_count().await;
    let run = env.run(&["sync"], GOOD).await;
    assert!(run.stderr.contains("Held removals back"), "{}", run.stderr);
    assert!(!run.stderr.contains("no longer describes"), "{}", run.stderr);
    assert_eq!(mock.request_count().await, before, "{}", run.stderr);

    // One more joins: the group goes out with them, the held members described as
    // last confirmed.
    let joined: &[u64] = &[1, 2, 3, 4, 5, 13, 14];
    env.write("groups.csv", &groups_csv(&[("ops", joined)]));
    let run = env.run(&["sync"], GOOD).await;
    assert!(run.stderr.contains("Held removals back"), "{}", run.stderr);
    assert!(!run.stderr.contains("no longer describes"), "{}", run.stderr);
    let with_held: Vec<u64> = (1..=14).collect();
    assert_eq!(mock.lock().members(), expected_state(&[("ops", &with_held)]));
    {
        let state = mock.lock();
        let user9 = &state.groups[&group_uuid(0)].users[&uuid(9)];
        assert_eq!(user9["userName"], "user9");
        assert_eq!(user9["emailAddress"], "user9@example.com");
    }
    mock.assert_no_violations();
}

/// A group confirmed with no member details kept (by a version that kept none)
/// cannot describe a held member who left the source: it is not sent at all rather
/// than sent without them.
#[tokio::test]
async fn a_group_that_cannot_describe_a_held_member_is_not_sent() {
    let mock = AdminUserGroupApi::start().await;
    let all: Vec<u64> = (1..=12).collect();
    let limit =
        "[targets.platform.safety]\nmax_removed_members_per_group_percent = 50\nper_group_min_members = 10\n";
    let env = setup(&mock, &[("ops", &all)], limit);
    env.write("users.csv", &users_csv(13));
    env.run(&["sync"], GOOD).await.expect_code(0);
    env.alter_db("UPDATE snapshot_groups SET member_users = NULL")
        .await;

    // Seven leave the source and the group; one joins.
    let kept: &[u64] = &[1, 2, 3, 4, 5, 13];
    env.write("users.csv", &users_csv_only(13, kept));
    env.write("groups.csv", &groups_csv(&[("ops", kept)]));
    let before = mock.request_count().await;
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("the source no longer describes"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, before, "{}", run.stderr);
    assert_eq!(mock.lock().members(), expected_state(&[("ops", &all)]));
    mock.assert_no_violations();
}

/// An approval of a set whose group keeps a protected member who left the source:
/// the group goes out with that member described as last confirmed, and the set is
/// done. Without those details the group cannot be sent, and the set stays held.
#[tokio::test]
async fn an_approval_keeps_a_protected_member_who_left_the_source() {
    for details_kept in [true, false] {
        let mock = AdminUserGroupApi::start().await;
        let all: Vec<u64> = (1..=12).collect();
        let limit = format!(
            "[targets.platform.safety]\nmax_removed_members_per_group_percent = 50\nper_group_min_members = 10\n\
             protected_members = [\"{}\"]\n",
            uuid(12)
        );
        let env = setup(&mock, &[("ops", &all)], &limit);
        env.write("users.csv", &users_csv(12));
        env.run(&["sync"], GOOD).await.expect_code(0);
        if !details_kept {
            env.alter_db("UPDATE snapshot_groups SET member_users = NULL")
                .await;
        }

        // Users 5 to 12 leave the source; 12 is protected.
        env.write("users.csv", &users_csv(4));
        env.write("groups.csv", &groups_csv(&[("ops", &[1, 2, 3, 4])]));
        let run = env.run(&["sync"], GOOD).await;
        assert!(run.stderr.contains("Held removals back"), "{}", run.stderr);
        let held = env.run(&["held", "--json"], GOOD).await;
        let id = serde_json::from_str::<serde_json::Value>(&held.stdout).expect("JSON")[0]["id"]
            .as_str()
            .expect("a held set")
            .to_owned();
        let before = mock.request_count().await;
        let run = env.run(&["approve", &id], GOOD).await;
        let held = env.run(&["held", "--json"], GOOD).await;
        let sets: serde_json::Value = serde_json::from_str(&held.stdout).expect("JSON");
        if details_kept {
            run.expect_code(0);
            assert_eq!(mock.request_count().await, before + 1, "{}", run.stderr);
            assert_eq!(
                mock.lock().members(),
                expected_state(&[("ops", &[1, 2, 3, 4, 12])])
            );
            assert_eq!(
                mock.lock().groups[&group_uuid(0)].users[&uuid(12)]["userName"],
                "user12"
            );
            assert_eq!(sets, serde_json::json!([]), "{sets}");
        } else {
            assert!(run.stderr.contains("the set stays held"), "{}", run.stderr);
            assert_eq!(mock.request_count().await, before, "{}", run.stderr);
            assert_eq!(sets[0]["id"], id.as_str(), "{sets}");
            assert_eq!(mock.lock().members(), expected_state(&[("ops", &all)]));
        }
        mock.assert_no_violations();
    }
}

/// A saved plan of groups whose request lists each member's details applies as
/// made: the plan carries those details, and `apply` builds each request again
/// from them and finds it is what was reviewed.
#[tokio::test]
async fn a_saved_plan_with_member_details_applies() {
    let mock = AdminUserGroupApi::start().await;
    let env = setup(&mock, GROUPS, "");
    env.run(&["sync"], GOOD).await.expect_code(0);
    let changed: &[(&str, &[u64])] = &[("eng", &[1, 2, 3, 5]), ("ops", &[2, 4]), ("empty", &[])];
    env.write("groups.csv", &groups_csv(changed));
    let plan = env.path("plan.json").display().to_string();
    env.run(&["sync", "--dry-run", "--out", &plan], GOOD)
        .await
        .expect_code(0);
    let run = env.run(&["apply", &plan], GOOD).await;
    run.expect_code(0);
    assert_eq!(mock.request_count().await, GROUPS.len() + 1, "{}", run.stderr);
    assert_eq!(mock.lock().members(), expected_state(changed));
    assert_eq!(
        mock.lock().groups[&group_uuid(0)].users[&uuid(5)]["userName"],
        "user5"
    );
    mock.assert_no_violations();
}

/// A kept member who left the source is described as last confirmed: when two
/// groups were last confirmed with different details of them (one group's push
/// failed after the details changed), the later confirmed details describe both.
#[tokio::test]
async fn a_kept_member_is_described_by_the_latest_confirmed_details() {
    let mock = AdminUserGroupApi::start().await;
    let protect = format!(
        "[targets.platform.safety]\nprotected_members = [\"{}\"]\n",
        uuid(1)
    );
    let groups: &[(&str, &[u64])] = &[("ga", &[1, 2]), ("gb", &[1, 3])];
    let env = setup(&mock, groups, &protect);
    env.write("users.csv", &users_csv(3));
    env.run(&["sync"], GOOD).await.expect_code(0);

    // user1's email changes; ga's push fails, gb confirms the new email.
    let changed = users_csv(3).replace("user1@example.com", "new1@example.com");
    assert_ne!(changed, users_csv(3));
    env.write("users.csv", &changed);
    mock.lock().fail.insert(group_uuid(0));
    env.run(&["sync"], GOOD).await.expect_code(3);
    mock.lock().fail.clear();
    assert_eq!(
        mock.lock().groups[&group_uuid(1)].users[&uuid(1)]["emailAddress"],
        "new1@example.com"
    );

    // A verify marking ga as drifted later does not make ga's details newer.
    env.alter_db("UPDATE snapshot_groups SET updated_at = '2999-01-01T00:00:00.000Z'")
        .await;

    // user1 leaves the source; protected, they stay in both groups, described by
    // gb's later details: ga gets them, gb is not sent back to the old ones.
    env.write("users.csv", &users_csv_only(3, &[2, 3]));
    env.write("groups.csv", &groups_csv(&[("ga", &[2]), ("gb", &[3])]));
    env.run(&["sync"], GOOD).await.expect_code(0);
    let state = mock.lock();
    for g in [0, 1] {
        assert_eq!(
            state.groups[&group_uuid(g)].users[&uuid(1)]["emailAddress"],
            "new1@example.com",
            "group {g}"
        );
    }
    drop(state);
    mock.assert_no_violations();
}
