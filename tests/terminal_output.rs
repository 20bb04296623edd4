//! What the terminal shows cannot be forged or misaligned by names and target text
//! (issue 15, item 9): the audit table, `status` and the dry-run plan print control
//! characters visibly, one row per entity, with columns aligned for wide (CJK) and
//! long names; JSON output keeps the text exact.

mod common;

use unicode_width::UnicodeWidthStr;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, group_uuid, groups_csv_quoted, users_csv};

const LONG: &str = "a group name far longer than any column of the table could ever hold";

/// Names the directory allows: a line break, a tab, CJK (two columns a character),
/// combining marks, a long name.
const GROUPS: &[(&str, &[u64])] = &[
    ("first\nsecond", &[1, 2]),
    ("東京\t開発チーム", &[2, 3]),
    ("Cafe\u{301} de\u{301}ja\u{300}", &[1]),
    (LONG, &[3]),
    ("plain", &[1, 3]),
];

async fn run(env: &Env, args: &[&str]) -> common::Run {
    env.run(args, &[("TEST_OFFICE_KEY", KEY)]).await
}

/// The display column at which `needle` starts in `line`.
fn column_of(line: &str, needle: &str) -> usize {
    let at = line
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` in {line:?}"));
    line[..at].width()
}

#[tokio::test]
async fn audit_rows_stay_one_line_each_and_aligned_with_line_breaks_wide_and_long_names() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(3));
    env.write("groups.csv", &groups_csv_quoted(GROUPS, None));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));

    let dry = run(&env, &["sync", "--dry-run"]).await;
    dry.expect_code(0);
    let plan_lines: Vec<&str> = dry.stdout.lines().collect();
    assert!(
        plan_lines
            .iter()
            .all(|l| l.starts_with("target ") || l.starts_with("  ")),
        "every plan line is a whole line:\n{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!(
            "replace members of group \"first\\nsecond\" ({})",
            group_uuid(0)
        )),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("\"東京\\t開発チーム\""), "{}", dry.stdout);
    assert!(!dry.stdout.contains('\t'), "{}", dry.stdout);

    run(&env, &["sync"]).await.expect_code(0);
    let audit = run(&env, &["audit"]).await;
    audit.expect_code(0);
    let lines: Vec<&str> = audit.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1 + GROUPS.len(),
        "a header and one line per row:\n{}",
        audit.stdout
    );
    assert!(!audit.stdout.contains('\t'), "{}", audit.stdout);
    let outcome = column_of(lines[0], "outcome");
    let http = column_of(lines[0], "http");
    for line in &lines[1..] {
        assert_eq!(
            column_of(line, " success ") + 1,
            outcome,
            "aligned:\n{}",
            audit.stdout
        );
        // Right-aligned under `http`.
        assert_eq!(
            column_of(line, " 200 ") + " 200".len(),
            http + "http".len(),
            "aligned:\n{}",
            audit.stdout
        );
    }
    let row = |k: u64| {
        *lines
            .iter()
            .find(|l| l.contains(&group_uuid(k)))
            .unwrap_or_else(|| panic!("group {k} in\n{}", audit.stdout))
    };
    assert!(
        row(0).contains(&format!("first\\nsec… ({})", group_uuid(0))),
        "{}",
        row(0)
    );
    assert!(
        row(1).contains("東京\\t開発…"),
        "a wide name is cut by width: {}",
        row(1)
    );
    assert!(
        row(3).contains(&format!("a group na… ({})", group_uuid(3))),
        "{}",
        row(3)
    );

    // JSON keeps every name exactly as the directory has it.
    let json = run(&env, &["audit", "--json"]).await;
    json.expect_code(0);
    let names: Vec<String> = json
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["entity_name"].as_str().expect("entity_name").to_owned()
        })
        .collect();
    for (name, _) in GROUPS {
        assert!(names.iter().any(|n| n == name), "{name:?} in {names:?}");
    }
}

#[tokio::test]
async fn a_targets_error_text_cannot_forge_rows_or_restyle_the_terminal() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_string("boom\u{1b}[2K\u{1b}[1A\u{202e}2026-01-01 fake row\u{7}"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    env.write("users.csv", &users_csv(3));
    env.write("groups.csv", &groups_csv_quoted(&GROUPS[..1], None));
    env.write("dirsync.toml", &config_group_members(&server.uri(), ""));

    run(&env, &["sync"]).await.expect_code(3);
    for args in [&["audit"][..], &["status"][..]] {
        let out = run(&env, args).await;
        out.expect_code(0);
        assert!(
            out.stdout
                .contains("boom\\u{1b}[2K\\u{1b}[1A\\u{202e}2026-01-01 fake row\\u{7}"),
            "{args:?}: the error, visibly escaped:\n{}",
            out.stdout
        );
        assert!(
            !out.stdout
                .chars()
                .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
            "{args:?}: no control character but line ends:\n{:?}",
            out.stdout
        );
    }
    let audit = run(&env, &["audit"]).await;
    assert_eq!(audit.stdout.lines().count(), 2, "{}", audit.stdout);
    let status = run(&env, &["status"]).await;
    assert!(
        status.stdout.contains(&format!(
            "office group \"first\\nsecond\" ({}) since ",
            group_uuid(0)
        )),
        "{}",
        status.stdout
    );
}

/// A reader that stops reading (`dirsync status | head -1`) is not an error: each
/// command that prints a report exits 0, as `audit` does, instead of panicking.
#[tokio::test]
async fn a_closed_pipe_ends_each_report_quietly() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(3));
    env.write("groups.csv", &groups_csv_quoted(&GROUPS[..2], None));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    run(&env, &["sync"]).await.expect_code(0);
    for args in [&["status"][..], &["held"], &["audit"]] {
        let mut child = env
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader is gone before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
