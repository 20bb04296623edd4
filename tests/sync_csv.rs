//! End to end: a CSV directory synced by the real binary to a mock of the group-members API.

mod common;

use std::time::Duration;

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, expected_state, group_uuid, groups_csv, users_csv, uuid};

const GROUPS: &[(&str, &[u64])] = &[
    ("eng", &[1, 2, 3]),
    ("ops", &[2, 4]),
    ("empty", &[]),
    ("all", &[1, 2, 3, 4, 5]),
];

/// A setup with 5 users and the groups above, pointed at `mock`.
fn setup(mock: &GroupMembersApi, extra: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(GROUPS));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), extra));
    env
}

impl Env {
    async fn sync(&self, args: &[&str]) -> common::Run {
        let mut cmd = self.command(args);
        cmd.env("TEST_OFFICE_KEY", KEY);
        common::Run::from(cmd.output().await.expect("run dirsync"))
    }
}

#[tokio::test]
async fn first_sync_converges_then_nothing_then_one_request_per_change() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");

    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len(),
        "one request per mapped group"
    );
    assert_eq!(mock.groups(), expected_state(GROUPS));
    mock.assert_no_violations();

    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        GROUPS.len(),
        "an unchanged directory sends nothing"
    );

    // One membership changes: u5 joins ops.
    let changed: &[(&str, &[u64])] = &[
        ("eng", &[1, 2, 3]),
        ("ops", &[2, 4, 5]),
        ("empty", &[]),
        ("all", &[1, 2, 3, 4, 5]),
    ];
    env.write("groups.csv", &groups_csv(changed));
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, GROUPS.len() + 1);
    assert_eq!(mock.accepted().last(), Some(&group_uuid(1)));
    assert_eq!(mock.groups(), expected_state(changed));

    let audit = env.audit().await;
    assert_eq!(audit.len(), GROUPS.len() + 1);
    assert!(
        audit
            .iter()
            .all(|(op, _, outcome)| op == "replace_members" && outcome == "success")
    );
}

#[tokio::test]
async fn a_failing_group_is_the_only_one_pushed_next_run() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    mock.lock().fail.insert(group_uuid(1));

    let run = env.sync(&["sync"]).await;
    run.expect_code(3);
    assert!(run.stderr.contains("HTTP 500"), "{}", run.stderr);
    let mut want = expected_state(GROUPS);
    want.remove(&group_uuid(1));
    assert_eq!(mock.groups(), want, "the other groups succeeded");
    let snapshot = env.snapshot().await;
    assert!(
        !snapshot.contains_key(&("office".into(), group_uuid(1))),
        "failure not recorded as done"
    );

    mock.lock().fail.clear();
    let before = mock.request_count().await;
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.accepted().last(), Some(&group_uuid(1)));
    assert_eq!(mock.groups(), expected_state(GROUPS));
}

/// Starts `dirsync sync` and SIGKILLs it once `ready` holds (failing with `stuck`
/// after 20 s).
async fn kill_sync_once(env: &Env, ready: impl Fn() -> bool, stuck: &str) {
    let mut child = env
        .command(&["sync"])
        .env("TEST_OFFICE_KEY", KEY)
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "{stuck}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

#[tokio::test]
async fn sigkill_during_a_run_loses_nothing() {
    let mock = GroupMembersApi::start().await;
    let groups: Vec<(String, Vec<u64>)> = (0..120)
        .map(|k| (format!("team{k}"), vec![1 + k % 5, 1 + (k + 2) % 5]))
        .collect();
    let groups: Vec<(&str, &[u64])> = groups.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect();
    let env = Env::new();
    env.write("users.csv", &users_csv(5));
    env.write("groups.csv", &groups_csv(&groups));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    mock.lock().delay = Duration::from_millis(40);

    // Kill once some, but not all, groups were confirmed.
    kill_sync_once(&env, || mock.accepted().len() >= 20, "the run made no progress").await;
    let done_at_kill = mock.accepted().len();
    assert!(done_at_kill < groups.len(), "killed before the end");

    // Every success the audit log claims, the mock has.
    let accepted = mock.accepted();
    for (_, id, outcome) in env.audit().await {
        if outcome == "success" {
            assert!(
                accepted.contains(&id),
                "audit claims {id} but the target never got it"
            );
        }
    }

    mock.lock().delay = Duration::ZERO;
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&groups));
    // Groups confirmed and recorded before the kill were not pushed again: only those
    // in flight, queued for the writer or in its batch (each at most `concurrency`).
    let pushed_twice = mock.accepted().len() - groups.len();
    assert!(
        pushed_twice <= 3 * 4,
        "{pushed_twice} groups were pushed twice; concurrency is 4"
    );
}

/// A run killed after the target applied a request but before its answer came
/// back: the next run sends the group again, even though the source went back to
/// what the snapshot holds (the target holds the killed run's list).
#[tokio::test]
async fn a_request_under_way_when_the_run_is_killed_is_sent_again_after_the_source_goes_back() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    let changed: Vec<(&str, &[u64])> = vec![
        ("eng", &[1, 2, 4]),
        ("ops", &[2, 4]),
        ("empty", &[]),
        ("all", &[1, 2, 3, 4, 5]),
    ];
    env.write("groups.csv", &groups_csv(&changed));
    mock.lock().delay = Duration::from_secs(30);
    kill_sync_once(
        &env,
        || mock.groups() == expected_state(&changed),
        "the target never got the change",
    )
    .await;

    mock.lock().delay = Duration::ZERO;
    env.write("groups.csv", &groups_csv(GROUPS));
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(
        mock.groups(),
        expected_state(GROUPS),
        "the target is back to the source"
    );
    let again = mock.request_count().await;
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        again,
        "and nothing is sent after that"
    );
}

#[tokio::test]
async fn dry_run_sends_nothing_and_writes_nothing() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let run = env.sync(&["sync", "--dry-run"]).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("target office (preset onlyoffice-group-members): 4 operation(s)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("+ {}, {}, {}", uuid(1), uuid(2), uuid(3))),
        "{}",
        run.stdout
    );
    assert_eq!(mock.request_count().await, 0);
    assert!(!env.db().exists(), "a dry run creates no state database");

    env.sync(&["sync"]).await.expect_code(0);
    let snapshot = env.snapshot().await;
    env.write(
        "groups.csv",
        &groups_csv(&[
            ("eng", &[1]),
            ("ops", &[2, 4]),
            ("empty", &[]),
            ("all", &[1, 2, 3, 4, 5]),
        ]),
    );
    let run = env.sync(&["sync", "--dry-run"]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!("- {}, {}", uuid(2), uuid(3))),
        "{}",
        run.stdout
    );
    assert_eq!(mock.request_count().await, GROUPS.len());
    assert_eq!(env.snapshot().await, snapshot);
}

#[tokio::test]
async fn resync_pushes_everything_and_rebuilds_the_snapshot() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    // Someone changed the target by hand; the snapshot cannot know.
    mock.lock().groups.insert(group_uuid(0), Default::default());
    env.sync(&["resync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, 2 * GROUPS.len());
    assert_eq!(mock.groups(), expected_state(GROUPS));
}

#[tokio::test]
async fn bearer_auth_and_wrong_credentials() {
    let mock = GroupMembersApi::start().await;
    let bearer = "[targets.office.auth]\nkind = \"bearer\"\ntoken_env = \"TEST_OFFICE_KEY\"\n";
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config");
    let config = config.replace("[targets.office.auth]\nvalue_env = \"TEST_OFFICE_KEY\"\n", bearer);
    env.write("dirsync.toml", &config);
    env.sync(&["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(GROUPS));

    let wrong = GroupMembersApi::start().await;
    let env = setup(&wrong, "");
    let mut cmd = env.command(&["sync"]);
    cmd.env("TEST_OFFICE_KEY", "not-the-key-123");
    let run = common::Run::from(cmd.output().await.expect("run"));
    run.expect_code(3);
    assert!(
        run.stderr.contains("target `office` refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-key-123"));
    // After the first 401 no further requests are started (up to the in-flight ones).
    assert!(
        wrong.request_count().await <= 4,
        "{}",
        wrong.request_count().await
    );
    assert!(env.snapshot().await.is_empty());
}

#[tokio::test]
async fn drift_and_unmapped_users_are_recorded() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    // u5 has no target id; u3 is silently dropped by the target.
    env.write(
        "users.csv",
        &users_csv(5).replace(&format!(",{}\n", uuid(5)), ",\n"),
    );
    mock.lock().ignore_members.insert(uuid(3));
    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("differs from what was sent"),
        "{}",
        run.stderr
    );
    let audit = env.audit().await;
    assert!(
        audit.contains(&("unmapped".into(), "u5".into(), "skipped".into())),
        "{audit:?}"
    );
    assert!(
        env.audit_text()
            .await
            .contains(&format!("\"missing\":[\"{}\"]", uuid(3)))
    );
}

#[tokio::test]
async fn secrets_never_reach_logs_audit_or_dry_run() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    mock.lock().fail.insert(group_uuid(2));
    let dry = env.sync(&["sync", "--dry-run"]).await;
    let run = env.sync(&["--log-level", "debug", "sync"]).await;
    let json = env.sync(&["--log-format", "json", "sync"]).await;
    let audit = env.dirsync(&["audit", "--json"]).await;
    for text in [
        &dry.stdout,
        &dry.stderr,
        &run.stdout,
        &run.stderr,
        &json.stderr,
        &audit.stdout,
        &env.audit_text().await,
    ] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}

#[tokio::test]
async fn safety_limit_refuses_then_flag_allows() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "[targets.office.safety]\nmax_removed_memberships = 2\n");
    env.sync(&["sync"]).await.expect_code(0);
    let before = mock.request_count().await;
    env.write(
        "groups.csv",
        &groups_csv(&[("eng", &[]), ("ops", &[2, 4]), ("empty", &[]), ("all", &[1])]),
    );
    let run = env.sync(&["sync"]).await;
    run.expect_code(4);
    assert!(run.stderr.contains("remove memberships (7 of"), "{}", run.stderr);
    assert!(run.stderr.contains("--allow-removals"), "{}", run.stderr);
    assert_eq!(mock.request_count().await, before, "nothing sent");

    env.sync(&["sync", "--allow-removals"]).await.expect_code(0);
    assert_eq!(mock.groups()[&group_uuid(0)].len(), 0);
}

#[tokio::test]
async fn a_second_sync_while_one_runs_exits_with_the_lock_code() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.path("state.db.lock"))
        .expect("lock file");
    lock.lock().expect("hold the lock");
    let run = env.sync(&["sync"]).await;
    run.expect_code(7);
    assert!(run.stderr.contains("another sync is running"), "{}", run.stderr);
    assert_eq!(mock.request_count().await, 0);
    drop(lock);
    env.sync(&["sync"]).await.expect_code(0);
}

#[tokio::test]
async fn memberships_file_and_bom() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config").replace(
        "groups = \"groups.csv\"",
        "groups = \"groups.csv\"\nmemberships = \"members.csv\"",
    );
    env.write("dirsync.toml", &config);
    env.write("users.csv", &format!("\u{feff}{}", users_csv(3)));
    env.write(
        "groups.csv",
        &format!(
            "\u{feff}id,name,tid\ng0,eng,{}\ng1,ops,{}\n",
            group_uuid(0),
            group_uuid(1)
        ),
    );
    env.write("members.csv", "group,user\ng0,u1\ng0,u2\ng1,u3\n");
    env.sync(&["sync"]).await.expect_code(0);
    let state = expected_state(&[("eng", &[1, 2]), ("ops", &[3])]);
    assert_eq!(mock.groups(), state);

    // A memberships file with only its header is refused, as the other files are:
    // it would take every member out of every group.
    let requests = mock.request_count().await;
    env.write("members.csv", "group,user\n");
    let run = env.sync(&["sync"]).await;
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("members.csv: no memberships: the file has only a header"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, requests);

    // A `members` column in the groups file is not read as members: said so.
    env.write("members.csv", "group,user\ng0,u1\ng0,u2\ng1,u3\n");
    env.write(
        "groups.csv",
        &format!(
            "id,name,members,tid\ng0,eng,u3,{}\ng1,ops,,{}\n",
            group_uuid(0),
            group_uuid(1)
        ),
    );
    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("has a `members` column, which is read as an attribute"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.groups(), state);
}

/// A column the config names for an optional field (`user_columns.email`) must be
/// in the header: a misspelt one would leave every email empty without a word.
#[tokio::test]
async fn a_configured_column_missing_from_the_header_is_an_error() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config").replacen(
        "[targets.office]",
        "[source.user_columns]\nemail = \"E-Mail\"\n\n[targets.office]",
        1,
    );
    env.write("dirsync.toml", &config);
    let run = env.sync(&["sync"]).await;
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("users.csv: line 1: missing column `E-Mail` (set `source.user_columns.email`"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, 0);
}

/// Each bad input: its message (file, line, column), exit 6, no request, snapshot kept.
#[tokio::test]
async fn bad_csv_is_a_clear_error_and_pushes_nothing() {
    let good_users = users_csv(3);
    let good_groups = "id,name,members,tid\ng0,eng,u1;u2,00000000-0000-4000-8000-0000000f4240\n".to_owned();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "missing column",
            good_users.replace("username", "login"),
            good_groups.clone(),
            "users.csv: line 1: missing column `username`",
        ),
        (
            "duplicate user",
            format!("{good_users}u2,again,a@x,{}\n", uuid(9)),
            good_groups.clone(),
            "users.csv: line 5, column `id`: duplicate user id `u2` (first on line 3)",
        ),
        (
            "duplicate user, lines ending in a carriage return alone",
            format!("{good_users}u2,again,a@x,{}\n", uuid(9)).replace('\n', "\r"),
            good_groups.clone(),
            "users.csv: line 5, column `id`: duplicate user id `u2` (first on line 3)",
        ),
        (
            "duplicate group",
            good_users.clone(),
            format!("{good_groups}g0,other,u1,{}\n", uuid(7)),
            "groups.csv: line 3, column `id`: duplicate group id `g0`",
        ),
        (
            "empty group name",
            good_users.clone(),
            good_groups.replace("g0,eng,", "g0, ,"),
            "groups.csv: line 2, column `name`: is empty",
        ),
        (
            "unknown member",
            good_users.clone(),
            good_groups.replace("u1;u2", "u1;u9"),
            "groups.csv: line 2, column `members`: unknown user `u9`",
        ),
        (
            "bare quote",
            good_users.replace("user2@example.com", "us\"er2@example.com"),
            good_groups.clone(),
            "users.csv: line 3, column `email`: a quote inside an unquoted field",
        ),
        (
            "unclosed quote",
            good_users.replace("u3,user3", "u3,\"user3"),
            good_groups.clone(),
            "users.csv: line 4, column `username`: a quoted field is never closed",
        ),
        (
            "empty file",
            String::new(),
            good_groups.clone(),
            "users.csv: the file is empty",
        ),
        (
            "header only",
            "id,username\n".into(),
            good_groups.clone(),
            "users.csv: no users",
        ),
        (
            "ragged row",
            good_users.replace("u2,user2,", "u2,user2,x,"),
            good_groups.clone(),
            "users.csv: line 3: expected 4 fields",
        ),
    ];
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.write("users.csv", &good_users);
    env.write("groups.csv", &good_groups);
    env.sync(&["sync"]).await.expect_code(0);
    let requests = mock.request_count().await;
    let snapshot = env.snapshot().await;
    for (name, users, groups, message) in cases {
        env.write("users.csv", &users);
        env.write("groups.csv", &groups);
        // Make the run want to push something, so "nothing pushed" means something.
        let run = env.sync(&["sync"]).await;
        assert_eq!(run.code, 6, "{name}: exit code\n{}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{name}: expected `{message}` in\n{}",
            run.stderr
        );
        assert_eq!(mock.request_count().await, requests, "{name}: nothing sent");
        assert_eq!(env.snapshot().await, snapshot, "{name}: snapshot unchanged");
    }
    // Invalid UTF-8 needs bytes, not a String.
    std::fs::write(
        env.path("users.csv"),
        b"id,username,email,tid\nu1,ann\xff,a@x,x\n",
    )
    .expect("write");
    let run = env.sync(&["sync"]).await;
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("users.csv: line 2, column `username`: invalid UTF-8"),
        "{}",
        run.stderr
    );
}

/// Files a spreadsheet or a careless export produces: control characters in a field
/// (issue 15, item 8), UTF-16, another delimiter. Each is an error naming the file,
/// line and column, exit 6 as any source error, nothing sent.
#[tokio::test]
async fn control_characters_utf16_and_another_delimiter_are_refused_with_the_place() {
    let fixture = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .expect("read fixture")
    };
    let users = users_csv(3);
    let groups = "id,name,members,tid\ng0,eng,u1;u2,00000000-0000-4000-8000-0000000f4240\n".to_owned();
    let cases: Vec<(&str, Vec<u8>, String, &str)> = vec![
        (
            "NUL byte",
            users.replace("user2@example", "user2\0@example").into_bytes(),
            groups.clone(),
            "users.csv: line 3, column `email`: the field holds the control character U+0000 (a NUL byte) \
             at character 6",
        ),
        (
            "escape sequence in a group name",
            users.clone().into_bytes(),
            groups.replace("g0,eng,", "g0,\"e\nn\u{1b}[2Kg\","),
            "groups.csv: line 3, column `name`: the field holds the control character U+001B",
        ),
        (
            "control character after a multi-line field",
            users.clone().into_bytes(),
            groups.replace("g0,eng,u1;u2,", "g0,\"two\nlines\",u1;u2\u{7},"),
            "groups.csv: line 3, column `members`: the field holds the control character U+0007",
        ),
        (
            "control character in the header",
            users.replacen("email", "e\u{8}mail", 1).into_bytes(),
            groups.clone(),
            "users.csv: line 1, column `#3`: the header holds the control character U+0008",
        ),
        (
            "UTF-16 little endian",
            fixture("users-utf16le.csv"),
            groups.clone(),
            "users.csv: line 1: the file is UTF-16 (byte order mark FF FE): save it as UTF-8",
        ),
        (
            "UTF-16 big endian",
            {
                let mut b = vec![0xFE, 0xFF];
                b.extend(users.encode_utf16().flat_map(u16::to_be_bytes));
                b
            },
            groups.clone(),
            "users.csv: line 1: the file is UTF-16 (byte order mark FE FF): save it as UTF-8",
        ),
        (
            "semicolons",
            fixture("users-semicolon.csv"),
            groups.clone(),
            "users.csv: line 1: the header is one column holding `;`: if the file is separated by `;`, \
             set `source.delimiter = \";\"`",
        ),
        (
            "tabs",
            users.replace(',', "\t").into_bytes(),
            groups.clone(),
            "users.csv: line 1: the header is one column holding a tab: if the file is separated by a tab, \
             set `source.delimiter = \"\\t\"`",
        ),
        (
            "text after a closing quote",
            users.clone().into_bytes(),
            groups.replace(",eng,", ",\"eng\"x,"),
            "groups.csv: line 2, column `name`: text after a closing quote",
        ),
    ];
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.write("users.csv", &users);
    env.write("groups.csv", &groups);
    env.sync(&["sync"]).await.expect_code(0);
    let requests = mock.request_count().await;
    let snapshot = env.snapshot().await;
    for (name, users, groups, message) in cases {
        std::fs::write(env.path("users.csv"), users).expect("write users");
        env.write("groups.csv", &groups);
        let run = env.sync(&["sync"]).await;
        assert_eq!(run.code, 6, "{name}: exit code\n{}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{name}: expected `{message}` in\n{}",
            run.stderr
        );
        assert_eq!(mock.request_count().await, requests, "{name}: nothing sent");
        assert_eq!(env.snapshot().await, snapshot, "{name}: snapshot unchanged");
    }
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let good = std::fs::read_to_string(env.config()).expect("config");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("concurrency = 4", "concurency = 4"),
            "unknown field `concurency`",
        ),
        (
            good.replace("timeout = \"5s\"", "timeout = \"5 parsecs\""),
            "`targets.office.timeout`",
        ),
        (
            good.replace("match = \".*\"", "match = \"(\""),
            "`targets.office.groups.rules[0].match`: invalid regex",
        ),
        (
            good.replace("preset = \"onlyoffice-group-members\"", "preset = \"nope\""),
            "unknown preset `nope`",
        ),
        (
            good.replace(
                "value_env = \"TEST_OFFICE_KEY\"",
                "value_env = \"TEST_UNSET_VAR_X\"",
            ),
            "`targets.office.auth.value`: environment variable `TEST_UNSET_VAR_X` is not set",
        ),
    ];
    for (text, message) in cases {
        env.write("dirsync.toml", &text);
        let run = env.sync(&["sync"]).await;
        assert_eq!(run.code, 5, "{message}: {}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "expected `{message}` in\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("dirsync.toml"),
            "names the file: {}",
            run.stderr
        );
    }
    assert_eq!(mock.request_count().await, 0);
}

#[tokio::test]
async fn unknown_members_can_be_skipped_with_a_warning() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config").replace(
        "groups = \"groups.csv\"",
        "groups = \"groups.csv\"\nunknown_members = \"skip\"",
    );
    env.write("dirsync.toml", &config);
    env.write(
        "groups.csv",
        &groups_csv(GROUPS).replace("u1;u2;u3,", "u1;u2;u3;u99,"),
    );
    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("Skipped a member that names no known user"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("unknown user `u99`"), "{}", run.stderr);
    assert_eq!(mock.groups(), expected_state(GROUPS));
}

/// A `groups.map` entry that names no group of the source (a typo, or a group gone)
/// is not synced, and both `check` and the run say so, naming it.
#[tokio::test]
async fn a_group_map_entry_that_matches_no_group_is_named() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config").replacen(
        "[[targets.office.groups.rules]]",
        "[[targets.office.groups.map]]\nsource = \"engineerign\"\ntarget_id = \"x\"\n\n[[targets.office.groups.rules]]",
        1,
    );
    env.write("dirsync.toml", &config);
    let check = env.sync(&["check"]).await;
    assert!(
        check.stdout.contains(
            "target office: `groups.map` names `engineerign`, which is no group of the source (by id or name)"
        ),
        "{}\n{}",
        check.stdout,
        check.stderr
    );
    let run = env.sync(&["sync"]).await;
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("`groups.map` names groups the source does not have")
            && run.stderr.contains("engineerign"),
        "{}",
        run.stderr
    );
}

/// Each run starts from the configured window of requests in flight: a run that
/// plans nothing reports that window, so the gauge a 429 lowered comes back up.
#[tokio::test]
async fn a_run_with_nothing_to_plan_reports_the_configured_window() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    env.sync(&["sync"]).await.expect_code(0);
    env.sync(&["sync"]).await.expect_code(0);
    let status = env.sync(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    let last = &v["runs"][0]["summary"]["targets"][0];
    assert_eq!(last["name"], "office", "{v:#}");
    assert_eq!(last["planned"], 0, "{v:#}");
    assert_eq!(last["concurrency_limit"], 4, "{v:#}");
}

/// A user id made by a filter over a missing value (`{{ user.email | lower }}` for
/// a user without an email) is no id: the user is unmapped, not mapped to `none`.
#[tokio::test]
async fn a_filtered_missing_value_is_no_user_id() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config").replace(
        "id_attribute = \"tid\"",
        "id_template = \"{{ user.email | lower }}\"",
    );
    assert!(config.contains("id_template"), "{config}");
    env.write("dirsync.toml", &config);
    env.write("users.csv", &users_csv(5).replace("user1@example.com", ""));
    let run = env.sync(&["sync", "--dry-run"]).await;
    assert!(!run.stdout.contains("none"), "{}", run.stdout);
    assert!(run.stdout.contains("user2@example.com"), "{}", run.stdout);
    assert!(run.stdout.contains("unmapped"), "{}", run.stdout);
}

/// A user id template reads the source id as `user.source_id`, as the request
/// templates name it (the scim2 preset suggests it for `externalId`).
#[tokio::test]
async fn a_user_id_template_reads_the_source_id() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    let config = std::fs::read_to_string(env.config()).expect("config").replace(
        "id_attribute = \"tid\"",
        "id_template = \"ext-{{ user.source_id }}\"",
    );
    env.write("dirsync.toml", &config);
    let run = env.sync(&["sync", "--dry-run"]).await;
    assert!(run.stdout.contains("ext-u1"), "{}", run.stdout);
    assert!(run.stdout.contains("0 unmapped user(s)"), "{}", run.stdout);
}
