//! Groups mapped from an id-map file (`groups.id_map_file` + `groups.id_map_key`),
//! as users already can be, so that thousands of groups need no `[[groups.map]]`
//! entry each (issue 15); end to end against the group-members API mock.

mod common;

use common::group_members::{GroupMembersApi, KEY};
use common::{Env, config_group_members, group_uuid, users_csv, uuid};

/// 200 groups named `team-K` with members u1..u3; the map file covers every other one.
fn setup(mock: &GroupMembersApi, key: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(3));
    let mut groups = String::from("id,name,members,tid\n");
    let mut map = String::from("source,target\n");
    for k in 0..200u64 {
        groups.push_str(&format!("g{k},team-{k},u1;u2;u3,\n"));
        if k % 2 == 0 {
            let from = if key == "name" {
                format!("team-{k}")
            } else {
                format!("g{k}")
            };
            map.push_str(&format!("{from},{}\n", group_uuid(k)));
        }
    }
    env.write("groups.csv", &groups);
    env.write("group-ids.csv", &map);
    let config = config_group_members(&mock.uri(), "").replace(
        "[[targets.office.groups.rules]]\nmatch = \".*\"\ntarget_id = \"{{ group.attrs.tid }}\"\n",
        &format!("[targets.office.groups]\nid_map_file = \"group-ids.csv\"\nid_map_key = \"{key}\"\n"),
    );
    assert!(config.contains("id_map_file"), "{config}");
    env.write("dirsync.toml", &config);
    env
}

#[tokio::test]
async fn groups_map_from_an_id_map_file_by_id_or_name() {
    for key in ["id", "name"] {
        let mock = GroupMembersApi::start().await;
        let env = setup(&mock, key);
        env.run(&["sync"], &[("TEST_OFFICE_KEY", KEY)])
            .await
            .expect_code(0);
        let groups = mock.groups();
        assert_eq!(groups.len(), 100, "every mapped group, no other ({key})");
        let members = [uuid(1), uuid(2), uuid(3)].into_iter().collect();
        for k in (0..200).step_by(2) {
            assert_eq!(groups.get(&group_uuid(k)), Some(&members), "team-{k} ({key})");
        }
        mock.assert_no_violations();
    }
}

#[tokio::test]
async fn a_bad_group_id_map_names_the_key_file_and_line() {
    let mock = GroupMembersApi::start().await;
    let env = setup(&mock, "id");
    env.write("group-ids.csv", "source,target\ng0,a\ng0,b\n");
    let run = env.run(&["sync"], &[("TEST_OFFICE_KEY", KEY)]).await;
    run.expect_code(5);
    assert!(
        run.stderr.contains("targets.office.groups.id_map_file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 3: `g0` appears twice"),
        "{}",
        run.stderr
    );
    assert_eq!(mock.request_count().await, 0);

    // An empty or blank target id would name no group (`/group//members`).
    for (map, line) in [
        ("source,target\ng0,a\ng2,\n", 3),
        ("source,target\ng0,\" \"\n", 2),
    ] {
        env.write("group-ids.csv", map);
        let run = env.run(&["sync"], &[("TEST_OFFICE_KEY", KEY)]).await;
        run.expect_code(5);
        assert!(
            run.stderr
                .contains(&format!("line {line}: the second column is empty")),
            "{}",
            run.stderr
        );
        assert_eq!(mock.request_count().await, 0);
    }
    // Spaces around an id are not part of it.
    env.write(
        "group-ids.csv",
        &format!("source,target\n g0 , {} \n", group_uuid(0)),
    );
    env.run(&["sync"], &[("TEST_OFFICE_KEY", KEY)])
        .await
        .expect_code(0);
    assert!(mock.groups().contains_key(&group_uuid(0)), "{:?}", mock.groups());
}
