//! `dirsync audit` as an auditor uses it: CSV with a header row for a time range
//! given as RFC 3339 times, JSON through `--format json` and its alias `--json`, and
//! ranges that cannot hold a row refused with the flags named.

mod common;

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, groups_csv_quoted, users_csv};

/// A group name a CSV writer must quote: a comma and a double quote.
const AWKWARD: &str = "eng, \"core\" team";

fn groups(eng: &[u64]) -> String {
    let ops: Vec<u64> = (5..=8).collect();
    groups_csv_quoted(&[(AWKWARD, eng), ("ops", &ops)], None)
}

async fn dirsync(env: &Env, args: &[&str]) -> common::Run {
    env.run(args, &[("TEST_OFFICE_KEY", KEY)]).await
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Audit rows carry millisecond times: make sure the next one is later than `now()`.
async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

/// A CSV export parsed back: its header and its records as column → value maps.
fn parse_csv(text: &str) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            header.iter().cloned().zip(r.iter().map(str::to_owned)).collect()
        })
        .collect();
    (header, rows)
}

#[tokio::test]
async fn a_time_range_exports_as_csv_with_names_intact() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(8));
    env.write("groups.csv", &groups(&[1, 2, 3]));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));

    dirsync(&env, &["sync"]).await.expect_code(0);
    tick().await;
    let since = now();
    tick().await;
    env.write("groups.csv", &groups(&[1, 2, 3, 4]));
    dirsync(&env, &["sync"]).await.expect_code(0);
    tick().await;
    let until = now();
    tick().await;
    env.write("groups.csv", &groups(&[1, 2, 3, 4, 5]));
    dirsync(&env, &["sync"]).await.expect_code(0);

    let run = dirsync(
        &env,
        &["audit", "--format", "csv", "--since", &since, "--until", &until],
    )
    .await;
    run.expect_code(0);
    let (header, rows) = parse_csv(&run.stdout);
    assert_eq!(
        header,
        [
            "at",
            "run_id",
            "target",
            "operation",
            "entity_id",
            "entity_name",
            "outcome",
            "http_status",
            "attempts",
            "summary",
            "drift",
            "error",
            "warning"
        ]
    );
    assert_eq!(rows.len(), 1, "only the second run's push:\n{}", run.stdout);
    let row = &rows[0];
    assert_eq!(row["entity_name"], AWKWARD, "{}", run.stdout);
    assert_eq!(row["entity_id"], common::group_uuid(0));
    assert_eq!(row["target"], "office");
    assert_eq!(row["outcome"], "success", "{row:?}");
    assert!(row["at"].as_str() >= since.as_str() && row["at"].as_str() < until.as_str());
    let summary: serde_json::Value = serde_json::from_str(&row["summary"]).expect("summary is JSON");
    assert_eq!(
        summary["added"],
        serde_json::json!([common::uuid(4)]),
        "{summary}"
    );

    // Without a range, every row of the three runs (two groups, then one, then one).
    let all = dirsync(&env, &["audit", "--format", "csv"]).await;
    all.expect_code(0);
    let (_, all_rows) = parse_csv(&all.stdout);
    assert_eq!(all_rows.len(), 4, "{}", all.stdout);
    assert!(all_rows.iter().any(|r| r["run_id"] == row["run_id"]));

    // An age covers all of them; JSON lines the same rows, by either spelling.
    let json = dirsync(&env, &["audit", "--format", "json", "--since", "1h"]).await;
    json.expect_code(0);
    let alias = dirsync(&env, &["audit", "--json", "--since", "1h"]).await;
    alias.expect_code(0);
    assert_eq!(json.stdout.lines().count(), 4, "{}", json.stdout);
    assert_eq!(
        json.stdout
            .lines()
            .map(|l| l.contains(r#""entity_name":"eng, \"core\" team""#))
            .filter(|x| *x)
            .count(),
        3,
        "{}",
        json.stdout
    );
    assert_eq!(json.stdout, alias.stdout);
}

#[tokio::test]
async fn a_range_that_ends_before_it_starts_is_refused() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(8));
    env.write("groups.csv", &groups(&[1, 2, 3]));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    dirsync(&env, &["sync"]).await.expect_code(0);

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--since",
                "2026-12-01T00:00:00Z",
                "--until",
                "2026-11-01T00:00:00Z",
            ],
            "error: --until `2026-11-01T00:00:00Z` is before --since `2026-12-01T00:00:00Z`",
        ),
        (
            &["--since", "1h", "--until", "2h"],
            "error: --until `2h` is before --since `1h`",
        ),
        (
            &["--until", "last tuesday"],
            "error: --until `last tuesday`: neither an RFC 3339 time",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["audit", "--format", "csv"];
        all.extend_from_slice(args);
        let run = dirsync(&env, &all).await;
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
    }
    let both = dirsync(&env, &["audit", "--json", "--format", "csv"]).await;
    both.expect_code(2);
}

/// Two runs a moment apart show apart in the table's `run` column (the end of the
/// id; its start is a timestamp), and `--run` takes that column's value.
#[tokio::test]
async fn the_run_column_tells_runs_apart_and_filters_by_it() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(8));
    env.write("groups.csv", &groups(&[1, 2, 3]));
    env.write("dirsync.toml", &config_group_members(&mock.uri(), ""));
    dirsync(&env, &["sync"]).await.expect_code(0);
    env.write("groups.csv", &groups(&[1, 2, 3, 4]));
    dirsync(&env, &["sync"]).await.expect_code(0);

    let lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let json = dirsync(&env, &["audit", "--json"]).await;
    let rows = lines(&json.stdout);
    let newest = rows[0]["run_id"].as_str().expect("a run id").to_owned();
    let oldest = rows[rows.len() - 1]["run_id"]
        .as_str()
        .expect("a run id")
        .to_owned();
    assert_ne!(newest, oldest);
    let (new_tail, old_tail) = (&newest[newest.len() - 8..], &oldest[oldest.len() - 8..]);
    assert_ne!(new_tail, old_tail);
    let table = dirsync(&env, &["audit"]).await;
    assert!(table.stdout.contains(new_tail), "{}", table.stdout);
    assert!(table.stdout.contains(old_tail), "{}", table.stdout);

    let only = dirsync(&env, &["audit", "--json", "--run", new_tail]).await;
    let rows = lines(&only.stdout);
    assert_eq!(rows.len(), 1, "{}", only.stdout);
    assert_eq!(rows[0]["run_id"], newest.as_str());
    let whole = dirsync(&env, &["audit", "--json", "--run", &newest]).await;
    assert_eq!(whole.stdout, only.stdout);
    dirsync(&env, &["audit", "--run", ""]).await.expect_code(2);
}
