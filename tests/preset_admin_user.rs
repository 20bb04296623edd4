//! The admin-user API (`admin-user`): user updates by the real binary against a mock that
//! enforces the document's contract (Required fields, the MobilePhone pattern, the
//! XML form) and keeps the users.

mod common;

use std::collections::BTreeMap;

use common::admin_user::{AdminUserApi, TOKEN};
use common::{Env, assert_no_leak, config_csv, groups_csv, target_common, uuid};

const LANGUAGE: &str = "c2fd9942-2548-483b-875c-a724b208dcaa";

/// (n, display name, phone, enabled)
type Row = (u64, &'static str, &'static str, bool);

const USERS: &[Row] = &[
    (1, "Ann Archer", "+1 (555) 010-1001", true),
    (2, "Bob \"B\" <Baker> & Sons", "0044 20 7946 0002", true),
    (3, "Cid Cole", "555-0103-77", false),
    (4, "Dee Dunn", "(0)6 12345678", true),
];

fn users_csv(rows: &[Row]) -> String {
    let mut s = String::from("id,username,email,display_name,first_name,phone,enabled,tid\n");
    for (n, name, phone, enabled) in rows {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        s.push_str(&format!(
            "u{n},user{n},User{n}@Example.com,{quoted},First{n},{phone},{enabled},{}\n",
            uuid(*n)
        ));
    }
    s
}

/// Expected mock state: user id → (Username, Enabled).
fn expected(rows: &[Row]) -> BTreeMap<String, (String, bool)> {
    rows.iter()
        .map(|(n, _, _, enabled)| (uuid(*n), (format!("user{n}"), *enabled)))
        .collect()
}

/// `users` goes into `[targets.admin.users]`, `extra` after everything else.
fn setup(mock: &AdminUserApi, rows: &[Row], users: &str, extra: &str) -> Env {
    let target = target_common("admin", "preset = \"admin-user\"", &mock.uri());
    let env = Env::new();
    env.write("users.csv", &users_csv(rows));
    env.write("groups.csv", &groups_csv(&[("all", &[1])]));
    env.write(
        "dirsync.toml",
        &config_csv(&format!(
            "{target}{users}\n[targets.admin.auth]\ntoken_env = \"TEST_ADMIN_TOKEN\"\n\
             [targets.admin.vars]\nlanguage_id = \"{LANGUAGE}\"\ntime_zone = \"W. Europe Standard Time\"\n{extra}"
        )),
    );
    env
}

const GOOD: &[(&str, &str)] = &[("TEST_ADMIN_TOKEN", TOKEN)];
const XML: &str = "[targets.admin.endpoints.update_user]\nformat = \"xml\"\n";

#[tokio::test]
async fn first_sync_converges_then_nothing_then_one_request_per_change() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "", "");

    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    assert_eq!(mock.request_count().await, USERS.len());
    assert_eq!(mock.lock().summary(), expected(USERS));
    {
        let state = mock.lock();
        let bob = &state.users[&uuid(2)];
        assert_eq!(bob["DisplayName"], USERS[1].1);
        assert_eq!(bob["LanguageID"], LANGUAGE);
        assert_eq!(bob["TimeZone"], "W. Europe Standard Time");
        assert_eq!(bob["MobilePhone"], "0044 20 7946 0002");
    }

    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, USERS.len(), "unchanged: nothing sent");

    // A source attribute the body does not carry changes: nothing to send.
    env.write("users.csv", &users_csv(USERS).replace("First2", "Robert"));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, USERS.len(), "first_name is not sent");

    let mut changed = USERS.to_vec();
    changed[3].1 = "Dee Dunn-Smith";
    env.write("users.csv", &users_csv(&changed));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        USERS.len() + 1,
        "one change, one request"
    );
    assert_eq!(mock.lock().users[&uuid(4)]["DisplayName"], "Dee Dunn-Smith");
    mock.assert_no_violations();
}

#[tokio::test]
async fn a_phone_that_fails_the_pattern_is_reported_and_skipped() {
    let mock = AdminUserApi::start().await;
    let mut rows = USERS.to_vec();
    rows[2].2 = "12-34";
    let env = setup(&mock, &rows, "", "");

    let dry = env.run(&["sync", "--dry-run"], GOOD).await;
    let line = format!(
        "skipped user \"user3\" ({}): `/MobilePhone` is \"12-34\"",
        uuid(3)
    );
    assert!(dry.stdout.contains(&line), "{}", dry.stdout);
    assert_eq!(mock.request_count().await, 0);

    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert!(run.stderr.contains("MobilePhone"), "{}", run.stderr);
    assert_eq!(
        mock.request_count().await,
        USERS.len() - 1,
        "the user is not sent"
    );
    mock.assert_no_violations();
    let rows_audit = env.audit_rows().await;
    let skipped: Vec<_> = rows_audit.iter().filter(|r| r.2 == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{rows_audit:?}");
    assert_eq!(
        (skipped[0].0.as_str(), skipped[0].1.as_str()),
        ("update_user", uuid(3).as_str())
    );
    assert!(
        skipped[0]
            .3
            .as_deref()
            .unwrap_or_default()
            .contains("does not match")
    );
    let status = env.run(&["status"], GOOD).await;
    assert!(
        status.stdout.contains(&uuid(3)),
        "pending in status: {}",
        status.stdout
    );

    env.write("users.csv", &users_csv(USERS));
    let before = mock.request_count().await;
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.lock().summary(), expected(USERS));
}

#[tokio::test]
async fn error_code_in_a_200_is_a_failure_and_retried() {
    let mock = AdminUserApi::start().await;
    mock.lock().refuse.insert(uuid(2));
    let env = setup(&mock, USERS, "", "");
    env.run(&["sync"], GOOD).await.expect_code(3);
    let rows = env.audit_rows().await;
    let failed: Vec<_> = rows.iter().filter(|r| r.2 == "failed").collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    let error = failed[0].3.clone().unwrap_or_default();
    assert!(
        error.contains("USR-LOCKED") && error.contains("The user is locked for editing"),
        "{error}"
    );
    assert!(!mock.lock().users.contains_key(&uuid(2)));

    mock.lock().refuse.clear();
    let before = mock.request_count().await;
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        before + 1,
        "only the failed user again"
    );
    assert_eq!(mock.lock().summary(), expected(USERS));
}

#[tokio::test]
async fn xml_is_one_key_away_and_behaves_the_same() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "", XML);
    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    assert_eq!(mock.lock().summary(), expected(USERS));
    assert!(mock.lock().accepted.iter().all(|(_, f)| f == "xml"));
    assert_eq!(mock.lock().users[&uuid(2)]["DisplayName"], USERS[1].1);

    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, USERS.len());

    let mut changed = USERS.to_vec();
    changed[0].2 = "+1 (555) 010-9999";
    changed[1].2 = "bad";
    env.write("users.csv", &users_csv(&changed));
    mock.lock().refuse.insert(uuid(1));
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert_eq!(
        mock.request_count().await,
        USERS.len() + 1,
        "user2 skipped, user1 sent"
    );
    let rows = env.audit_rows().await;
    assert!(
        rows.iter().any(|r| r.1 == uuid(1)
            && r.2 == "failed"
            && r.3.as_deref().unwrap_or_default().contains("USR-LOCKED")),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.1 == uuid(2)
            && r.2 == "skipped"
            && r.3.as_deref().unwrap_or_default().contains("/User/MobilePhone")),
        "{rows:?}"
    );
    mock.assert_no_violations();
}

#[tokio::test]
async fn a_user_who_leaves_is_disabled_once_within_the_safety_limits() {
    let mock = AdminUserApi::start().await;
    let env = setup(
        &mock,
        USERS,
        "removed = \"disable\"\n",
        "[targets.admin.safety]\nmax_disabled_users_percent = 1\npercent_min_count = 0\n",
    );
    env.run(&["sync"], GOOD).await.expect_code(0);
    let before = mock.request_count().await;

    env.write("users.csv", &users_csv(&USERS[..3]));
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(4);
    assert_eq!(mock.request_count().await, before, "refused: nothing sent");

    env.run(&["sync", "--allow-removals"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1, "exactly the one disable");
    let mut want = expected(USERS);
    want.insert(uuid(4), ("user4".into(), false));
    assert_eq!(mock.lock().summary(), want);

    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1, "disabled once");
}

/// A user protected by source id stays protected once they leave the source: the
/// user as last pushed says which target id they had. Not even `--allow-removals`
/// disables them.
#[tokio::test]
async fn a_user_protected_by_source_id_is_not_disabled_after_leaving_the_source() {
    let mock = AdminUserApi::start().await;
    let env = setup(
        &mock,
        USERS,
        "removed = \"disable\"\n",
        "[targets.admin.safety]\nprotected_members = [\"u4\"]\n",
    );
    env.run(&["sync"], GOOD).await.expect_code(0);
    let before = mock.request_count().await;

    env.write("users.csv", &users_csv(&USERS[..3]));
    let run = env.run(&["sync", "--allow-removals"], GOOD).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("Left a protected user as they are"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, before, "nothing disabled");
    assert_eq!(mock.lock().summary(), expected(USERS));
}

/// A user still in the source who loses their target id (the id column cleared) has
/// not left: they are reported unmapped, not disabled.
#[tokio::test]
async fn a_user_without_a_target_id_any_more_is_not_disabled_as_gone() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "removed = \"disable\"\n", "");
    env.run(&["sync"], GOOD).await.expect_code(0);
    let before = mock.request_count().await;

    let cleared = users_csv(USERS).replace(&format!(",{}\n", uuid(2)), ",\n");
    assert_ne!(cleared, users_csv(USERS));
    env.write("users.csv", &cleared);
    let run = env.run(&["sync", "--allow-removals"], GOOD).await;
    assert!(run.stderr.contains("unmapped=1"), "{}", run.stderr);
    assert_eq!(mock.request_count().await, before, "{}", run.stderr);
    assert_eq!(mock.lock().summary(), expected(USERS));
}

/// A 403 is about the one request (this user may not be edited by the caller): the
/// other users still go out, and later runs do not stop at that user either.
#[tokio::test]
async fn a_user_the_caller_may_not_edit_does_not_stop_the_others() {
    let mock = AdminUserApi::start().await;
    mock.lock().forbid.insert(uuid(1));
    let env = setup(&mock, USERS, "", "");
    let config = std::fs::read_to_string(env.config()).expect("config");
    env.write(
        "dirsync.toml",
        &config.replace("concurrency = 4", "concurrency = 1"),
    );
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert!(!run.stderr.contains("refused the credentials"), "{}", run.stderr);
    let mut want = expected(USERS);
    want.remove(&uuid(1));
    assert_eq!(mock.lock().summary(), want);
}

/// A token refused for every user (it lacks the rights) stops the target's run
/// after `max_consecutive_failures` requests, and says what the 403s suggest.
#[tokio::test]
async fn a_token_refused_for_every_user_stops_the_target_with_a_hint() {
    let mock = AdminUserApi::start().await;
    mock.lock().forbid.extend(USERS.iter().map(|row| uuid(row.0)));
    let env = setup(&mock, USERS, "", "");
    let config = std::fs::read_to_string(env.config()).expect("config");
    env.write(
        "dirsync.toml",
        &config.replace("concurrency = 4", "concurrency = 1\nmax_consecutive_failures = 2"),
    );
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert_eq!(mock.request_count().await, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "2 operations in a row were refused with 403 Forbidden (do the credentials have the rights these requests need?)"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_user_who_leaves_is_left_alone_by_default() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "", "");
    env.run(&["sync"], GOOD).await.expect_code(0);
    env.write("users.csv", &users_csv(&USERS[..3]));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, USERS.len());
    assert_eq!(mock.lock().summary(), expected(USERS));
}

#[tokio::test]
async fn echoed_fields_that_differ_are_drift() {
    let mock = AdminUserApi::start().await;
    mock.lock().lowercase_email = true;
    let env = setup(&mock, USERS, "", "");
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("differs from what was sent"),
        "{}",
        run.stderr
    );
    let audit = env.audit_text().await;
    assert!(
        audit.contains(r#""EmailAddress":{"answered":"user1@example.com","sent":"User1@Example.com"}"#),
        "{audit}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_naming_the_target() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "", "");
    let run = env.run(&["sync"], &[("TEST_ADMIN_TOKEN", "nope-0000")]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("target `admin` refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(mock.request_count().await <= 4);
    assert!(mock.lock().users.is_empty());
}

#[tokio::test]
async fn the_token_never_leaks() {
    let mock = AdminUserApi::start().await;
    mock.lock().refuse.insert(uuid(1));
    let mut rows = USERS.to_vec();
    rows[3].2 = "x";
    let env = setup(&mock, &rows, "", "");
    assert_no_leak(TOKEN, &env.everything_visible(GOOD).await);
    assert!(!mock.lock().accepted.is_empty());
}

/// Issue 15: a user whose data the API refuses (a phone number that fails its
/// pattern) is reported once per change of that data, listed by `status` in its own
/// section, and does not fail every later run; fixed data is pushed at the next run.
#[tokio::test]
async fn invalid_source_data_is_reported_once_per_change_then_quiet() {
    let mock = AdminUserApi::start().await;
    let mut rows = USERS.to_vec();
    rows[1].2 = "call me";
    let env = setup(&mock, &rows, "", "");
    let skipped = |audit: &[(String, String, String, Option<String>)]| {
        audit
            .iter()
            .filter(|r| r.1 == uuid(2) && r.2 == "skipped")
            .count()
    };

    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert!(run.stderr.contains("until the data changes"), "{}", run.stderr);
    assert_eq!(skipped(&env.audit_rows().await), 1);
    let status = env.dirsync(&["status"]).await;
    let section = status
        .stdout
        .split("invalid source data")
        .nth(1)
        .unwrap_or_default();
    assert!(
        section.contains("user2") && section.contains("call me"),
        "{}",
        status.stdout
    );
    let pending = status.stdout.split("pending").nth(1).unwrap_or_default();
    assert!(
        pending.trim_start().starts_with("(last attempt failed):\n  none"),
        "{}",
        status.stdout
    );

    // The same data again: no new audit row, no warning, exit 0.
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(0);
    assert!(!run.stderr.contains("until the data changes"), "{}", run.stderr);
    assert_eq!(skipped(&env.audit_rows().await), 1);

    // Unchanged again: the target is not planned, and the run still counts the
    // invalid user (`dirsync_invalid_entities` comes from it).
    env.run(&["sync"], GOOD).await.expect_code(0);
    let pool = common::sqlite(&env.db()).await;
    let summary: String = sqlx::query_scalar("SELECT summary FROM runs ORDER BY id DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("the last run");
    pool.close().await;
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("JSON");
    assert_eq!(summary["targets"][0]["planned"], 0, "{summary}");
    assert_eq!(summary["targets"][0]["invalid"], 1, "{summary}");

    // Other invalid data for the same user is reported again.
    rows[1].2 = "still not a phone";
    env.write("users.csv", &users_csv(&rows));
    env.run(&["sync"], GOOD).await.expect_code(3);
    assert_eq!(skipped(&env.audit_rows().await), 2);

    // Fixed: pushed, and gone from the section.
    rows[1].2 = "0044 20 7946 0002";
    env.write("users.csv", &users_csv(&rows));
    let before = mock.request_count().await;
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.lock().users[&uuid(2)]["MobilePhone"], "0044 20 7946 0002");
    let status = env.dirsync(&["status"]).await;
    let section = status
        .stdout
        .split("invalid source data")
        .nth(1)
        .unwrap_or_default();
    assert!(section.contains("none"), "{}", status.stdout);
    mock.assert_no_violations();
}

/// With `strict = true` the same invalid data fails every run.
#[tokio::test]
async fn strict_targets_fail_every_run_on_invalid_data() {
    let mock = AdminUserApi::start().await;
    let mut rows = USERS.to_vec();
    rows[1].2 = "call me";
    let env = setup(&mock, &rows, "", "");
    let config = std::fs::read_to_string(env.config()).expect("config");
    env.write(
        "dirsync.toml",
        &config.replace(
            "preset = \"admin-user\"",
            "preset = \"admin-user\"\nstrict = true",
        ),
    );
    env.run(&["sync"], GOOD).await.expect_code(3);
    env.run(&["sync"], GOOD).await.expect_code(3);
}

/// Issue 15: a user still in the directory but disabled there is labelled as such,
/// not as removed; the audit reason tells the two apart.
#[tokio::test]
async fn a_disabled_user_is_labelled_disabled_not_removed() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "removed = \"disable\"\n", "");
    env.run(&["sync"], GOOD).await.expect_code(0);
    let mut rows = USERS[..3].to_vec();
    rows[0].3 = false;
    env.write("users.csv", &users_csv(&rows));
    let dry = env.run(&["sync", "--dry-run"], GOOD).await;
    assert!(
        dry.stdout
            .contains(&format!("disable user \"user1\" ({}) [Disabled]", uuid(1))),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains(&format!("disable user \"user4\" ({}) [LeftSource]", uuid(4))),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("[Removed]"), "{}", dry.stdout);
    env.run(&["sync", "--allow-removals"], GOOD).await.expect_code(0);
    let audit = env.audit_text().await;
    assert!(audit.contains(r#""reason":"disabled_in_source""#), "{audit}");
    assert!(audit.contains(r#""reason":"left_source""#), "{audit}");
}

/// A saved plan of user updates applies as made: `apply` builds each request again
/// from the plan's own data and finds it is what was reviewed.
#[tokio::test]
async fn a_saved_plan_of_user_updates_applies() {
    let mock = AdminUserApi::start().await;
    let env = setup(&mock, USERS, "", "");
    env.run(&["sync"], GOOD).await.expect_code(0);
    let mut changed = USERS.to_vec();
    changed[3].1 = "Dee Dunn-Smith";
    env.write("users.csv", &users_csv(&changed));
    let plan = env.path("plan.json").display().to_string();
    env.run(&["sync", "--dry-run", "--out", &plan], GOOD)
        .await
        .expect_code(0);
    let run = env.run(&["apply", &plan], GOOD).await;
    run.expect_code(0);
    assert_eq!(mock.request_count().await, USERS.len() + 1, "{}", run.stderr);
    assert_eq!(mock.lock().users[&uuid(4)]["DisplayName"], "Dee Dunn-Smith");
    mock.assert_no_violations();
}
