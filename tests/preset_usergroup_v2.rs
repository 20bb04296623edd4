//! The user-group API (`usergroup-v2`): the real binary against a mock that enforces the
//! document's contract (credentials in the body, the `format` query, the XML
//! namespace) and keeps the user groups.

mod common;

use common::usergroup_v2::{COMPANY_ID, KEY, UserGroupApi};
use common::{Env, assert_no_leak, config_csv, expected_state, group_uuid, target_common, users_csv, uuid};

const GROUPS: &[(&str, &[u64])] = &[("eng", &[1, 2, 3]), ("ops", &[2, 4]), ("empty", &[])];

/// Groups CSV whose names may need quoting.
fn groups_csv(groups: &[(&str, &[u64])]) -> String {
    common::groups_csv_quoted(groups, None)
}

fn setup(mock: &UserGroupApi, groups: &[(&str, &[u64])], extra: &str) -> Env {
    let target = target_common("forms", "preset = \"usergroup-v2\"", &mock.uri());
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(groups));
    env.write(
        "dirsync.toml",
        &config_csv(&format!(
            "{target}\n[targets.forms.secrets]\nintegration_key_env = \"TEST_INTEGRATION_KEY\"\n\
             [targets.forms.vars]\ncompany_id = {COMPANY_ID}\n{extra}"
        )),
    );
    env
}

const GOOD: &[(&str, &str)] = &[("TEST_INTEGRATION_KEY", KEY)];
const XML: &str = "[targets.forms.endpoints.group_members]\nformat = \"xml\"\n";

async fn converges(format: &str, extra: &str) {
    let mock = UserGroupApi::start().await;
    let env = setup(&mock, GROUPS, extra);

    env.run(&["sync"], GOOD).await.expect_code(0);
    mock.assert_no_violations();
    assert_eq!(mock.request_count().await, GROUPS.len());
    assert_eq!(mock.lock().members(), expected_state(GROUPS), "{format}");
    assert!(mock.lock().accepted.iter().all(|(_, f)| f == format));
    {
        let state = mock.lock();
        let eng = &state.groups[&group_uuid(0)];
        assert_eq!(eng.name, "eng");
        assert_eq!(eng.external_id.as_deref(), Some("g0"), "the source group id");
    }

    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len(),
        "{format}: unchanged, nothing sent"
    );

    let changed: &[(&str, &[u64])] = &[("eng", &[1, 3]), ("ops", &[2, 4]), ("empty", &[])];
    env.write("groups.csv", &groups_csv(changed));
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len() + 1,
        "{format}: one change, one request"
    );
    assert_eq!(mock.lock().members(), expected_state(changed));
    mock.assert_no_violations();
}

#[tokio::test]
async fn json_first_sync_converges_then_nothing_then_one_request_per_change() {
    converges("json", "").await;
}

#[tokio::test]
async fn xml_first_sync_converges_then_nothing_then_one_request_per_change() {
    converges("xml", XML).await;
}

#[tokio::test]
async fn names_that_break_json_or_xml_arrive_intact() {
    let nasty = "R&D \"core\" <team>\nsecond ' line";
    for extra in ["", XML] {
        let mock = UserGroupApi::start().await;
        let env = setup(&mock, &[(nasty, &[1, 2])], extra);
        env.run(&["sync"], GOOD).await.expect_code(0);
        mock.assert_no_violations();
        assert_eq!(mock.lock().groups[&group_uuid(0)].name, nasty, "{extra}");
    }
}

#[tokio::test]
async fn a_missing_external_id_is_null_in_json_and_nil_in_xml() {
    for format in ["", XML] {
        let mock = UserGroupApi::start().await;
        // `extra` starts inside `[targets.forms.vars]`.
        let extra = format!("external_id_attribute = \"no_such_column\"\n{format}");
        let env = setup(&mock, GROUPS, &extra);
        env.run(&["sync"], GOOD).await.expect_code(0);
        mock.assert_no_violations();
        assert_eq!(mock.lock().groups[&group_uuid(0)].external_id, None, "{format}");
    }
}

#[tokio::test]
async fn an_error_answer_is_a_failure_and_retried_next_run() {
    let mock = UserGroupApi::start().await;
    mock.lock().refuse.insert(group_uuid(1));
    let env = setup(&mock, GROUPS, "");
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    let rows = env.audit_rows().await;
    let failed: Vec<_> = rows.iter().filter(|r| r.2 == "failed").collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    let error = failed[0].3.clone().unwrap_or_default();
    assert!(
        error.contains("HTTP 400") && error.contains("is archived (key ***)"),
        "{error}"
    );

    mock.lock().refuse.clear();
    let before = mock.request_count().await;
    env.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.lock().members(), expected_state(GROUPS));
}

#[tokio::test]
async fn members_the_target_drops_are_drift_in_both_formats() {
    for extra in ["", XML] {
        let mock = UserGroupApi::start().await;
        mock.lock().ignore_users.insert(uuid(3));
        let env = setup(&mock, GROUPS, extra);
        let run = env.run(&["sync"], GOOD).await;
        run.expect_code(0);
        assert!(
            run.stderr.contains("differs from what was sent"),
            "{extra}: {}",
            run.stderr
        );
        let audit = env.audit_text().await;
        assert!(
            audit.contains(&format!("\"missing\":[\"{}\"]", uuid(3))),
            "{extra}: {audit}"
        );
    }
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error_naming_the_target() {
    let mock = UserGroupApi::start().await;
    let env = setup(&mock, GROUPS, "");
    let wrong = "not-the-integration-key-99";
    let run = env.run(&["sync"], &[("TEST_INTEGRATION_KEY", wrong)]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("target `forms` refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(mock.request_count().await <= 4);
    assert!(env.snapshot().await.is_empty());
    // The 401 quotes the key presented; it is scrubbed everywhere.
    assert_no_leak(
        wrong,
        &env.everything_visible(&[("TEST_INTEGRATION_KEY", wrong)]).await,
    );

    let text = std::fs::read_to_string(env.config())
        .expect("config")
        .replace(&format!("company_id = {COMPANY_ID}"), "company_id = 1");
    env.write("dirsync.toml", &text);
    let run = env.run(&["sync"], GOOD).await;
    run.expect_code(3);
    assert!(run.stderr.contains("refused the credentials"), "{}", run.stderr);
}

#[tokio::test]
async fn the_integration_key_never_leaks() {
    for extra in ["", XML] {
        let mock = UserGroupApi::start().await;
        mock.lock().refuse.insert(group_uuid(0));
        let env = setup(&mock, GROUPS, extra);
        assert_no_leak(KEY, &env.everything_visible(GOOD).await);
        assert!(!mock.lock().accepted.is_empty());
    }
}
