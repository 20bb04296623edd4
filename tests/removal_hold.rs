//! Blast-radius control end to end against the group-members API mock: removals
//! over a limit are held while additions go out, `held` lists them, `approve` sends
//! those still planned, `discard` drops them; the per-group limit, the source drop
//! guard and protected members.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, as_refs, config_group_members, expected_state, groups_csv, users_csv, uuid};

fn groups() -> Vec<(String, Vec<u64>)> {
    common::four_groups()
}

/// `groups()` with `eng` replaced.
fn with_eng(eng: Vec<u64>) -> Vec<(String, Vec<u64>)> {
    let mut g = groups();
    g[0].1 = eng;
    g
}

fn state(groups: &[(String, Vec<u64>)]) -> BTreeMap<String, BTreeSet<String>> {
    expected_state(&as_refs(groups))
}

fn setup(mock: &GroupMembersApi, extra: &str) -> Env {
    common::four_groups_env(&mock.uri(), extra)
}

async fn dirsync(env: &Env, args: &[&str]) -> common::Run {
    env.run(
        args,
        &[("TEST_OFFICE_KEY", KEY), ("USER", "alice"), ("SUDO_USER", "")],
    )
    .await
}

/// Safety limits that leave the source drop guard alone to judge (drops of more
/// than 5 are judged in this small directory, not the default 10).
const DROP_JUDGED: &str = "[safety]\nmax_removed_memberships_percent = 0\nmax_removed_members_per_group_percent = 0\n\
                           percent_min_count = 5\n";

/// Users 13..=20 leave the files (40% of them): the groups as they are then.
fn drop_to_12_users(env: &Env) -> Vec<(String, Vec<u64>)> {
    env.write("users.csv", &users_csv(12));
    let shrunk: Vec<(String, Vec<u64>)> = groups()
        .into_iter()
        .map(|(n, m)| (n, m.into_iter().filter(|i| *i <= 12).collect()))
        .collect();
    env.write("groups.csv", &groups_csv(&as_refs(&shrunk)));
    shrunk
}

/// A sync that holds removals for the source's drop from `from` users.
async fn sync_held_for_the_drop(env: &Env, from: usize) {
    let run = dirsync(env, &["sync"]).await;
    run.expect_code(4);
    let why = format!("fewer than the {from} of the last accepted read");
    assert!(run.stderr.contains(&why), "{}", run.stderr);
}

/// The held sets, as `dirsync held --json` prints them.
async fn held(env: &Env) -> Vec<serde_json::Value> {
    let run = dirsync(env, &["held", "--json"]).await;
    run.expect_code(0);
    serde_json::from_str(&run.stdout).expect("held --json")
}

#[tokio::test]
async fn removals_over_a_limit_wait_for_approval_while_additions_go_out() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);

    // eng loses 9 of its 12 members (75%) and gains users 13 and 14.
    env.write(
        "groups.csv",
        &groups_csv(&as_refs(&with_eng(vec![1, 2, 3, 13, 14]))),
    );
    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("group `eng` would lose 9 of its 12 members (75.0%), over the per-group limit of 50%"),
        "{}",
        run.stderr
    );
    let kept_and_added: Vec<u64> = (1..=14).collect();
    assert_eq!(
        mock.groups(),
        state(&with_eng(kept_and_added.clone())),
        "additions confirmed, removals not sent"
    );

    let sets = held(&env).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let id = sets[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(sets[0]["target"], "office");
    assert_eq!(sets[0]["removed_memberships"], 9);
    let eng = &sets[0]["groups"][common::group_uuid(0)];
    assert_eq!(eng["members"].as_array().map(Vec::len), Some(9), "{eng}");

    // Held again by the next run: the same set, nothing sent.
    let before = mock.request_count().await;
    dirsync(&env, &["sync"]).await.expect_code(4);
    assert_eq!(mock.request_count().await, before);
    assert_eq!(held(&env).await[0]["id"], id.as_str());
    let status = dirsync(&env, &["status"]).await;
    assert!(
        status
            .stdout
            .contains(&format!("{id} office: 9 membership removal(s)")),
        "{}",
        status.stdout
    );

    // User 4 comes back before the approval: only the other 8 are removed.
    env.write(
        "groups.csv",
        &groups_csv(&as_refs(&with_eng(vec![1, 2, 3, 4, 13, 14]))),
    );
    let approved = dirsync(&env, &["approve", &id]).await;
    approved.expect_code(0);
    assert_eq!(mock.groups(), state(&with_eng(vec![1, 2, 3, 4, 13, 14])));
    assert!(held(&env).await.is_empty());

    let audit = dirsync(&env, &["audit", "--json", "--entity", "eng"]).await;
    audit.expect_code(0);
    // One JSON object a line, newest first.
    let newest: serde_json::Value =
        serde_json::from_str(audit.stdout.lines().next().expect("an audit row")).expect("audit --json");
    assert_eq!(newest["summary"]["approved"]["held"], id.as_str(), "{newest}");
    assert_eq!(newest["summary"]["approved"]["by"], "alice", "{newest}");
    let why = newest["summary"]["approved"]["reasons"][0]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("over the per-group limit of 50%"), "{newest}");
    assert_eq!(
        newest["summary"]["removed"].as_array().map(Vec::len),
        Some(8),
        "{newest}"
    );

    // An approved set cannot be approved twice; an unknown id is a usage error.
    dirsync(&env, &["approve", &id]).await.expect_code(2);
    dirsync(&env, &["approve", "h0000000000"]).await.expect_code(2);
    let before = mock.request_count().await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, before, "converged");
}

#[tokio::test]
async fn a_discarded_set_is_held_again_and_allow_removals_sends_it_once() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    // Before any run, no id names a held set.
    let run = dirsync(&env, &["discard", "hdeadbeef00"]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("hdeadbeef00"), "{}", run.stderr);
    dirsync(&env, &["sync"]).await.expect_code(0);
    env.write("groups.csv", &groups_csv(&as_refs(&with_eng(vec![1, 2]))));
    dirsync(&env, &["sync"]).await.expect_code(4);
    let id = held(&env).await[0]["id"].as_str().expect("id").to_owned();
    // Not while a run holds the lock: an approval run decides the set at its end.
    {
        let mut lock_path = env.db().into_os_string();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .expect("open the lock file");
        lock.try_lock().expect("take the lock");
        let run = dirsync(&env, &["discard", &id]).await;
        run.expect_code(7);
        assert!(run.stderr.contains("another sync is running"), "{}", run.stderr);
        assert_eq!(held(&env).await[0]["id"], id.as_str());
    }
    dirsync(&env, &["discard", &id]).await.expect_code(0);
    assert!(held(&env).await.is_empty());
    dirsync(&env, &["sync"]).await.expect_code(4);
    let again = held(&env).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["id"], id.as_str(), "a new set");
    assert_eq!(mock.groups(), state(&groups()), "nothing removed");

    dirsync(&env, &["sync", "--allow-removals"]).await.expect_code(0);
    assert_eq!(mock.groups(), state(&with_eng(vec![1, 2])));
    assert!(
        held(&env).await.is_empty(),
        "a run that holds nothing clears the set"
    );
}

/// A 1,000-member group losing 600 members, with target-wide limits far away.
#[tokio::test]
async fn one_group_losing_most_of_its_members_is_held_by_the_per_group_limit() {
    let mock = GroupMembersApi::start().await;
    let env = Env::new();
    env.write("users.csv", &users_csv(1000));
    let all: Vec<u64> = (1..=1000).collect();
    // The group's loss is also a drop in the memberships read: the drop guard is off
    // here, so that the per-group limit alone decides.
    env.write("groups.csv", &groups_csv(&[("everyone", &all)]));
    env.write(
        "dirsync.toml",
        &config_group_members(
            &mock.uri(),
            "[targets.office.safety]\nmax_removed_memberships = 100000\nmax_removed_memberships_percent = 90\n\
             max_source_drop_percent = 0\n",
        ),
    );
    dirsync(&env, &["sync"]).await.expect_code(0);
    let rest: Vec<u64> = (601..=1000).collect();
    env.write("groups.csv", &groups_csv(&[("everyone", &rest)]));
    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(4);
    assert!(
        run.stderr.contains(
            "group `everyone` would lose 600 of its 1000 members (60.0%), over the per-group limit of 50%"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("safety.max_removed_memberships`"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.groups(), expected_state(&[("everyone", &all)]));

    // A mapped group of its own limit: this one may lose up to 70%.
    env.write(
        "dirsync.toml",
        &config_group_members(
            &mock.uri(),
            &format!(
                "[targets.office.safety]\nmax_removed_memberships = 100000\nmax_removed_memberships_percent = 90\n\
                 max_source_drop_percent = 0\n[[targets.office.groups.map]]\nsource = \"everyone\"\ntarget_id = \"{}\"\n\
                 safety = {{ max_removed_members_per_group_percent = 70 }}\n",
                common::group_uuid(0)
            ),
        ),
    );
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), expected_state(&[("everyone", &rest)]));
}

#[tokio::test]
async fn a_source_with_40_percent_fewer_users_holds_removals_not_additions() {
    let mock = GroupMembersApi::start().await;
    // A small directory: drops of more than 5 are judged (not the default 10).
    let env = setup(&mock, DROP_JUDGED);
    dirsync(&env, &["sync"]).await.expect_code(0);

    // Users 13..=20 vanish from the file (40%), and sales gains user 11.
    env.write("users.csv", &users_csv(12));
    let mut shrunk: Vec<(String, Vec<u64>)> = groups()
        .into_iter()
        .map(|(n, m)| (n, m.into_iter().filter(|i| *i <= 12).collect()))
        .collect();
    shrunk[2].1.push(11);
    env.write("groups.csv", &groups_csv(&as_refs(&shrunk)));
    let run = dirsync(&env, &["sync"]).await;
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("the source returned 12 users, 40.0% fewer than the 20 of the last accepted read"),
        "{}",
        run.stderr
    );
    let mut expected = groups();
    expected[2].1.push(11);
    assert_eq!(
        mock.groups(),
        state(&expected),
        "sales gained user 11; ops kept everyone"
    );

    // Still held on the next run: the baseline does not move with a held read.
    dirsync(&env, &["sync"]).await.expect_code(4);
    assert_eq!(held(&env).await.len(), 1);
}

#[tokio::test]
async fn a_protected_member_is_never_removed_even_with_allow_removals() {
    let mock = GroupMembersApi::start().await;
    // User 1 by target id, user 2 by source id; user 3 only in eng.
    let extra = format!(
        "[targets.office.safety]\nprotected_members = [\"{}\", \"u2\"]\n\
         [[targets.office.groups.map]]\nsource = \"eng\"\ntarget_id = \"{}\"\n\
         safety = {{ protected_members = [\"{}\"] }}\n",
        uuid(1),
        common::group_uuid(0),
        uuid(3)
    );
    let env = setup(&mock, &extra);
    dirsync(&env, &["sync"]).await.expect_code(0);
    // Everyone but 5..=12 leaves eng; 1, 2 and 3 leave sales too.
    env.write(
        "groups.csv",
        &groups_csv(&as_refs(&{
            let mut g = with_eng((5..=12).collect());
            g[2].1 = (4..=10).collect();
            g
        })),
    );
    let run = dirsync(&env, &["sync", "--allow-removals"]).await;
    run.expect_code(0);
    assert!(run.stderr.contains("Kept a protected member"), "{}", run.stderr);
    let mut expected = with_eng(vec![1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]);
    // In sales user 3 is not protected (its protection is eng's own).
    expected[2].1 = vec![1, 2, 4, 5, 6, 7, 8, 9, 10];
    assert_eq!(mock.groups(), state(&expected));
}

#[tokio::test]
async fn with_a_removal_delay_a_member_who_returns_costs_nothing_and_one_who_stays_away_is_removed() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "[targets.office.safety]\nremoval_delay = \"3s\"\n");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let baseline = mock.request_count().await;

    // User 5 leaves eng and comes back within the delay: no request at all.
    let without_5: Vec<u64> = (1..=12).filter(|i| *i != 5).collect();
    env.write("groups.csv", &groups_csv(&as_refs(&with_eng(without_5.clone()))));
    dirsync(&env, &["sync"]).await.expect_code(0);
    let status = dirsync(&env, &["status"]).await;
    assert!(
        status.stdout.contains(&format!("{} absent since", uuid(5))),
        "{}",
        status.stdout
    );
    env.write("groups.csv", &groups_csv(&as_refs(&groups())));
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(
        mock.request_count().await,
        baseline,
        "no request for a member who came back"
    );
    let status = dirsync(&env, &["status"]).await;
    assert!(!status.stdout.contains("absent since"), "{}", status.stdout);

    // User 5 leaves again, and user 13 joins: the addition goes out, the removal waits.
    let mut changed = without_5.clone();
    changed.push(13);
    env.write("groups.csv", &groups_csv(&as_refs(&with_eng(changed.clone()))));
    dirsync(&env, &["sync"]).await.expect_code(0);
    let kept: Vec<u64> = (1..=13).collect();
    assert_eq!(mock.groups(), state(&with_eng(kept)));
    let before = mock.request_count().await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, before, "not due yet");

    // Past the delay, the first run removes it.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, before + 1);
    assert_eq!(mock.groups(), state(&with_eng(changed)));
    let after = mock.request_count().await;
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.request_count().await, after, "converged");
}

/// A source drop let through for one target (`--target`, `--allow-removals`) is not
/// the new baseline: the other target still holds its removals for the drop.
#[tokio::test]
async fn a_source_drop_let_through_for_one_target_stays_held_for_the_other() {
    let mock = GroupMembersApi::start().await;
    let other = GroupMembersApi::start().await;
    let second = format!(
        r#"
[targets.second]
preset = "onlyoffice-group-members"
base_url = "{}"
timeout = "5s"

[targets.second.auth]
value_env = "TEST_OFFICE_KEY"

[[targets.second.groups.rules]]
match = ".*"
target_id = "{{{{ group.attrs.tid }}}}"

[targets.second.users]
id_attribute = "tid"
"#,
        other.uri()
    );
    let env = setup(
        &mock,
        &format!(
            "[safety]\nmax_removed_memberships_percent = 0\nmax_removed_members_per_group_percent = 0\n\
             percent_min_count = 5\n{second}"
        ),
    );
    dirsync(&env, &["sync"]).await.expect_code(0);
    let before = state(&groups());
    assert_eq!(other.groups(), before);

    // Users 13..=20 vanish from the file (40%).
    let shrunk = drop_to_12_users(&env);
    dirsync(&env, &["sync"]).await.expect_code(4);
    dirsync(&env, &["sync", "--target", "office", "--allow-removals"])
        .await
        .expect_code(0);
    assert_eq!(mock.groups(), state(&shrunk));

    sync_held_for_the_drop(&env, 20).await;
    assert_eq!(other.groups(), before, "the second target keeps everyone");
}

/// An approval the target fails leaves the set held, to be approved again.
#[tokio::test]
async fn an_approval_the_target_fails_leaves_the_set_held() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let shrunk = with_eng(vec![1, 2, 3]);
    env.write("groups.csv", &groups_csv(&as_refs(&shrunk)));
    dirsync(&env, &["sync"]).await.expect_code(4);
    let id = held(&env).await[0]["id"].as_str().expect("id").to_owned();

    mock.lock().fail.insert(common::group_uuid(0));
    let run = dirsync(&env, &["approve", &id]).await;
    run.expect_code(3);
    assert!(run.stderr.contains("the set stays held"), "{}", run.stderr);
    assert_eq!(held(&env).await[0]["id"], id.as_str());

    mock.lock().fail.clear();
    dirsync(&env, &["approve", &id]).await.expect_code(0);
    assert_eq!(mock.groups(), state(&shrunk));
    assert!(held(&env).await.is_empty());
}

/// An approval the target fails, in a run that holds other removals as well: the
/// new set replaces the approved one, and the run says so rather than that the
/// approved set stays held.
#[tokio::test]
async fn an_approval_the_target_fails_while_other_removals_are_held_says_what_holds_them() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    let mut shrunk = with_eng(vec![1, 2, 3]);
    env.write("groups.csv", &groups_csv(&as_refs(&shrunk)));
    dirsync(&env, &["sync"]).await.expect_code(4);
    let id = held(&env).await[0]["id"].as_str().expect("id").to_owned();

    // Another group loses most of its members before the approval runs.
    let other = shrunk
        .iter()
        .position(|(name, _)| name != "eng")
        .expect("another group");
    shrunk[other].1.truncate(1);
    env.write("groups.csv", &groups_csv(&as_refs(&shrunk)));
    mock.lock().fail.insert(common::group_uuid(0));
    let run = dirsync(&env, &["approve", &id]).await;
    assert!(!run.stderr.contains("the set stays held"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("this run held other removals as a new set, which replaced this one"),
        "{}",
        run.stderr
    );
    let now = held(&env).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0]["id"], id.as_str());
}

/// A source drop approved but not sent whole stays the drop it was: the read is not
/// the new baseline, and the next sync holds the removals again.
#[tokio::test]
async fn a_source_drop_approved_but_not_sent_is_held_again() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, DROP_JUDGED);
    dirsync(&env, &["sync"]).await.expect_code(0);
    let before = mock.groups();
    drop_to_12_users(&env);
    dirsync(&env, &["sync"]).await.expect_code(4);
    let id = held(&env).await[0]["id"].as_str().expect("id").to_owned();

    // Every group's request fails: nothing is removed.
    mock.lock().fail = (0..4).map(common::group_uuid).collect();
    dirsync(&env, &["approve", &id]).await.expect_code(3);
    mock.lock().fail.clear();
    assert_eq!(mock.groups(), before);

    sync_held_for_the_drop(&env, 20).await;
    assert_eq!(mock.groups(), before, "the removals are held again");
}

/// Removals waiting out the removal delay on a read that dropped leave the baseline
/// where it was: once due, they are held for the drop.
#[tokio::test]
async fn removals_that_waited_out_the_delay_on_a_dropped_read_are_held_for_the_drop() {
    let mock = GroupMembersApi::start().await;
    let env = setup(
        &mock,
        &format!("{DROP_JUDGED}\n[targets.office.safety]\nremoval_delay = \"2s\"\n"),
    );
    dirsync(&env, &["sync"]).await.expect_code(0);
    let before = mock.groups();
    drop_to_12_users(&env);
    dirsync(&env, &["sync"]).await.expect_code(0);
    assert_eq!(mock.groups(), before, "the removals wait");

    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    sync_held_for_the_drop(&env, 20).await;
    assert_eq!(mock.groups(), before, "held for the drop");
}

/// A read that did not drop is the new baseline even when a request of its push
/// failed: a later drop is measured from it.
#[tokio::test]
async fn a_failed_request_does_not_keep_an_old_baseline() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, DROP_JUDGED);
    dirsync(&env, &["sync"]).await.expect_code(0);

    // 40 users: eng takes 21..=40; sales takes 21, and its request fails.
    let grown = |last: u64| {
        let mut g = groups();
        g[0].1.extend(21..=last);
        g[2].1.push(21);
        g
    };
    env.write("users.csv", &users_csv(40));
    env.write("groups.csv", &groups_csv(&as_refs(&grown(40))));
    mock.lock().fail.insert(common::group_uuid(2));
    dirsync(&env, &["sync"]).await.expect_code(3);
    mock.lock().fail.clear();

    // Down to 22 users (45% fewer than 40): held for the drop.
    env.write("users.csv", &users_csv(22));
    env.write("groups.csv", &groups_csv(&as_refs(&grown(22))));
    sync_held_for_the_drop(&env, 40).await;
}

/// A source drop whose removals a per-group limit already holds still counts: its
/// reason is in the held set, and the dropped read does not become the baseline.
#[tokio::test]
async fn a_drop_whose_removals_the_group_limit_holds_is_still_a_drop() {
    let mock = GroupMembersApi::start().await;
    let per_group = "[safety]\nmax_removed_memberships_percent = 0\nmax_removed_members_per_group_percent = 10\n\
                     per_group_min_members = 1\npercent_min_count = 5\n";
    let env = setup(&mock, per_group);
    dirsync(&env, &["sync"]).await.expect_code(0);

    drop_to_12_users(&env);
    sync_held_for_the_drop(&env, 20).await;
    let sets = held(&env).await;
    assert_eq!(sets.len(), 1);
    let reasons = sets[0]["reasons"].to_string();
    assert!(
        reasons.contains("fewer than the 20 of the last accepted read"),
        "{reasons}"
    );
    assert!(reasons.contains("per-group limit"), "{reasons}");
    // The next run still judges the read against the 20 users before the drop.
    sync_held_for_the_drop(&env, 20).await;
}

/// An approval run killed while its removals are under way leaves the set held,
/// to approve again; the approval then sends what the target still needs.
#[tokio::test]
async fn an_approval_killed_part_way_leaves_the_set_to_approve_again() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "");
    dirsync(&env, &["sync"]).await.expect_code(0);
    env.write("groups.csv", &groups_csv(&as_refs(&with_eng(vec![1, 2, 3]))));
    dirsync(&env, &["sync"]).await.expect_code(4);
    let id = held(&env).await[0]["id"].as_str().expect("id").to_owned();

    mock.lock().delay = std::time::Duration::from_secs(30);
    let before = mock.request_count().await;
    let mut child = env
        .command(&["approve", &id])
        .env("TEST_OFFICE_KEY", KEY)
        .env("USER", "alice")
        .env("SUDO_USER", "")
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while mock.request_count().await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the approval sent nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");

    mock.lock().delay = std::time::Duration::ZERO;
    let sets = held(&env).await;
    assert_eq!(sets.len(), 1, "the set is still held: {sets:?}");
    assert_eq!(sets[0]["id"], id.as_str());
    dirsync(&env, &["approve", &id]).await.expect_code(0);
    assert_eq!(mock.groups(), state(&with_eng(vec![1, 2, 3])));
    assert!(held(&env).await.is_empty());
}
