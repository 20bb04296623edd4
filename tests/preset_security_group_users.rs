//! The security-group-users API (`security-group-users`): the real binary against a mock that enforces
//! the document's contract and keeps the security groups' users.

mod common;

use common::security_group_users::{SecurityGroupUsersApi, TOKEN};
use common::{
    Env, assert_no_leak, config_csv, expected_state, group_uuid, groups_csv, target_common, users_csv, uuid,
};

const GROUPS: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 4]), ("all", &[1, 2, 3, 4, 5])];

fn config(mock: &SecurityGroupUsersApi, extra: &str) -> String {
    let target = target_common("sgu", "preset = \"security-group-users\"", &mock.uri());
    config_csv(&format!(
        "{target}\n[targets.sgu.auth]\ntoken_env = \"TEST_SGU_TOKEN\"\n{extra}"
    ))
}

fn setup(mock: &SecurityGroupUsersApi, groups: &[(&str, &[u64])], extra: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(groups));
    env.write("dirsync.toml", &config(mock, extra));
    env
}

const GOOD: &[(&str, &str)] = &[("TEST_SGU_TOKEN", TOKEN)];

#[tokio::test]
async fn first_sync_converges_then_nothing_then_one_request_per_change() {
    let mock = SecurityGroupUsersApi::start().await;
    let env = setup(&mock, GROUPS, "");

    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    assert_eq!(mock.request_count().await, GROUPS.len());
    assert_eq!(mock.lock().members(), expected_state(GROUPS));
    {
        let state = mock.lock();
        let member = &state.groups[&group_uuid(0)][&uuid(2)];
        assert_eq!(member.user_name, "user2");
        assert!(member.booleans["CanLogIn"]);
        assert!(member.booleans["IsActive"]);
        assert!(!member.booleans["Locked"]);
    }

    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len(),
        "unchanged: nothing sent"
    );

    let changed: &[(&str, &[u64])] = &[
        ("eng", &[1, 2, 3]),
        ("ops", &[2, 4, 5]),
        ("all", &[1, 2, 3, 4, 5]),
    ];
    env.write("groups.csv", &groups_csv(changed));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len() + 1,
        "one change, one request"
    );
    assert_eq!(mock.lock().accepted.last(), Some(&group_uuid(1)));
    assert_eq!(mock.lock().members(), expected_state(changed));
    mock.assert_no_violations();
}

#[tokio::test]
async fn is_success_false_is_a_failure_with_message_and_code_and_is_retried() {
    let mock = SecurityGroupUsersApi::start().await;
    let env = setup(&mock, GROUPS, "");
    mock.lock().refuse.insert(group_uuid(1));

    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert!(run.stderr.contains("IsSuccess"), "{}", run.stderr);
    let rows = env.audit_rows().await;
    let failed: Vec<_> = rows.iter().filter(|r| r.2 == "failed").collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert_eq!(failed[0].1, group_uuid(1));
    let error = failed[0].3.clone().unwrap_or_default();
    assert!(
        error.contains("The security group is locked by another process") && error.contains("SG-LOCKED"),
        "ErrorMessage and Code in the audit row: {error}"
    );
    assert!(!env.snapshot().await.contains_key(&("sgu".into(), group_uuid(1))));
    let mut want = expected_state(GROUPS);
    want.remove(&group_uuid(1));
    assert_eq!(mock.lock().members(), want);

    mock.lock().refuse.clear();
    let before = mock.request_count().await;
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        before + 1,
        "only the failed group again"
    );
    assert_eq!(mock.lock().members(), expected_state(GROUPS));
}

#[tokio::test]
async fn a_group_without_members_is_reported_and_skipped_not_sent() {
    let mock = SecurityGroupUsersApi::start().await;
    let groups: &[(&str, &[u64])] = &[("eng", &[1, 2]), ("nobody", &[])];
    let env = setup(&mock, groups, "");

    let dry = env.run(&["sync", "--dry-run"], GOOD).await;
    dry.expect_code(3);
    let line = format!("skipped group \"nobody\" ({})", group_uuid(1));
    assert!(dry.stdout.contains(&line), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("a group without members cannot be sent"),
        "{}",
        dry.stdout
    );

    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert_eq!(mock.request_count().await, 1, "only the group with members");
    mock.assert_no_violations();
    let rows = env.audit_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.0 == "replace_members" && r.1 == group_uuid(1) && r.2 == "skipped"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn required_booleans_and_user_name_are_configurable() {
    let mock = SecurityGroupUsersApi::start().await;
    let env = setup(
        &mock,
        GROUPS,
        "[targets.sgu.vars]\nlocked = true\nuser_name_attribute = \"email\"\n",
    );
    // u3 is disabled in the source: IsActive follows.
    env.write(
        "users.csv",
        &users_csv(5)
            .replace("id,username,email,tid", "id,username,email,tid,enabled")
            .lines()
            .map(|l| match l {
                l if l.starts_with("id,") => l.to_owned(),
                l if l.starts_with("u3,") => format!("{l},false"),
                l => format!("{l},true"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    let state = mock.lock();
    let eng = &state.groups[&group_uuid(0)];
    assert_eq!(eng[&uuid(1)].user_name, "user1@example.com");
    assert!(eng[&uuid(1)].booleans["Locked"]);
    assert!(eng[&uuid(1)].booleans["IsActive"]);
    assert!(!eng[&uuid(3)].booleans["IsActive"]);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_naming_the_target() {
    let mock = SecurityGroupUsersApi::start().await;
    let env = setup(&mock, GROUPS, "");
    let wrong = "wrong-token-7f3a9c";
    let run = env.run(&["sync"], &[("TEST_SGU_TOKEN", wrong)]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("target `sgu` refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        mock.request_count().await <= 4,
        "no retries, no new requests after a 401"
    );
    assert!(env.snapshot().await.is_empty());
    // The 401 answer echoes the token presented; it is scrubbed everywhere.
    assert_no_leak(wrong, &env.everything_visible(&[("TEST_SGU_TOKEN", wrong)]).await);
}

#[tokio::test]
async fn the_token_never_leaks() {
    let mock = SecurityGroupUsersApi::start().await;
    let env = setup(&mock, GROUPS, "");
    mock.lock().refuse.insert(group_uuid(0));
    assert_no_leak(TOKEN, &env.everything_visible(GOOD).await);
    assert!(
        !mock.lock().accepted.is_empty(),
        "the runs did talk to the target"
    );
}
