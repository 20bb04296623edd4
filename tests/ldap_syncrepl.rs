//! Content synchronisation (RFC 4533, `refreshOnly`) against a real slapd with the
//! `syncprov` overlay: a refresh with the last cookie names exactly what changed,
//! through every shape the server answers in (changed entries, deletions in a sync id
//! set, a present phase after a restart), and a server that cannot serve it says so.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::slapd::{BASE, Options, READER_DN, Slapd, admin, people_ldif};
use common::{group_uuid, uuid};
use dirsync::source::ldap::{self, LdapConfig, LdapError, RawLdap, Refresh, SearchFailure, Synced};
use ldap3::Mod;

/// The openldap preset bound as `cn=reader`, users read from `ou=people` only.
fn config(server: &Slapd) -> LdapConfig {
    let text = format!(
        "preset = \"openldap\"\nurl = \"{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
         bind_password_file = \"{}\"\ntimeout = \"10s\"\n[users]\nbase_dn = \"ou=people,{BASE}\"\n",
        server.url(),
        server.password_file().display()
    );
    let raw: RawLdap = toml::from_str(&text).expect("config parses");
    LdapConfig::from_raw(raw, server.dir.path()).unwrap_or_else(|(k, m)| panic!("`{k}`: {m}"))
}

/// Five people and a group `staff` of user1 and user2.
fn directory() -> String {
    format!(
        "{}dn: cn=staff,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: staff\n\
         member: uid=user1,ou=people,{BASE}\nmember: uid=user2,ou=people,{BASE}\nentryUUID: {}\n",
        people_ldif(5),
        group_uuid(0)
    )
}

fn syncprov() -> Options {
    Options {
        syncprov: true,
        ..Options::default()
    }
}

async fn refresh(config: &LdapConfig, cookies: (Option<Vec<u8>>, Option<Vec<u8>>)) -> (Refresh, Refresh) {
    let r = ldap::sync_refresh(config, cookies.0, cookies.1)
        .await
        .unwrap_or_else(|e| panic!("refresh failed: {e}"));
    match (r.users, r.groups) {
        (Synced::Refreshed(users), Synced::Refreshed(groups)) => (users, groups),
        other => panic!("not refreshed: {other:?}"),
    }
}

/// The entries there are after `r`, given those there were before it.
fn live_after(before: &BTreeSet<String>, r: &Refresh) -> BTreeSet<String> {
    let changed = r.changed.iter().map(|(id, _)| id.clone());
    match &r.present {
        Some(present) => present.iter().cloned().chain(changed).collect(),
        None => before.difference(&r.deleted).cloned().chain(changed).collect(),
    }
}

fn ids(r: &Refresh) -> BTreeSet<String> {
    r.changed.iter().map(|(id, _)| id.clone()).collect()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

fn person(n: u64) -> String {
    format!("uid=user{n},ou=people,{BASE}")
}

#[tokio::test]
async fn a_refresh_names_exactly_what_changed_since_its_cookie() {
    let server = Slapd::start(&directory(), syncprov());
    let config = config(&server);

    // Without cookies, every entry comes as changed, and each search gets a cookie.
    let (users, groups) = refresh(&config, (None, None)).await;
    let all_users = set(&(1..=5).map(uuid).collect::<Vec<_>>());
    assert_eq!(ids(&users), all_users);
    assert_eq!(ids(&groups), set(&[group_uuid(0)]));
    assert!(!users.cookie.is_empty() && !groups.cookie.is_empty());
    let user3 = &users
        .changed
        .iter()
        .find(|(id, _)| *id == uuid(3))
        .expect("user3")
        .1;
    assert_eq!(user3.dn, person(3));

    // Nothing changed: nothing named, a cookie again.
    let (users, groups) = refresh(&config, (Some(users.cookie), Some(groups.cookie))).await;
    assert!(
        users.changed.is_empty() && groups.changed.is_empty(),
        "{users:?} {groups:?}"
    );
    assert_eq!(live_after(&all_users, &users), all_users);
    assert!(!users.cookie.is_empty());

    // A modify, a delete, a rename, a move out of the users' base, an add, and a
    // group's members changed.
    let mut admin = admin(&server).await;
    admin
        .modify(
            &person(3),
            vec![Mod::Replace("mail", HashSet::from(["new3@example.com"]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("modify user3");
    admin
        .delete(&person(4))
        .await
        .and_then(|r| r.success())
        .expect("delete user4");
    admin
        .modifydn(&person(5), "uid=user5b", true, None)
        .await
        .and_then(|r| r.success())
        .expect("rename user5");
    admin
        .modifydn(&person(2), "uid=user2", true, Some(&format!("ou=groups,{BASE}")))
        .await
        .and_then(|r| r.success())
        .expect("move user2 out of ou=people");
    admin
        .add(
            &person(6),
            vec![
                ("objectClass", HashSet::from(["inetOrgPerson"])),
                ("uid", HashSet::from(["user6"])),
                ("cn", HashSet::from(["User 6"])),
                ("sn", HashSet::from(["6"])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .expect("add user6");
    admin
        .modify(
            &format!("cn=staff,ou=groups,{BASE}"),
            vec![Mod::Add("member", HashSet::from([person(3).as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .expect("add user3 to staff");
    admin.unbind().await.expect("unbind");

    let (after, groups) = refresh(&config, (Some(users.cookie), Some(groups.cookie))).await;
    // The server gives the added entry its entryUUID.
    let six = after
        .changed
        .iter()
        .find(|(_, e)| e.dn == person(6))
        .map(|(id, _)| id.clone())
        .expect("user6 comes as changed");
    assert_eq!(ids(&after), set(&[uuid(3), uuid(5), six.clone()]), "{after:?}");
    let changed = |id: &str| &after.changed.iter().find(|(i, _)| i == id).expect("changed").1;
    assert_eq!(
        changed(&uuid(3)).first_text("mail").expect("text").as_deref(),
        Some("new3@example.com")
    );
    assert_eq!(changed(&uuid(5)).dn, format!("uid=user5b,ou=people,{BASE}"));
    assert_eq!(
        live_after(&all_users, &after),
        set(&[uuid(1), uuid(3), uuid(5), six]),
        "user2 left the base and user4 was deleted: {after:?}"
    );
    assert_eq!(ids(&groups), set(&[group_uuid(0)]));
}

#[tokio::test]
async fn after_a_restart_the_server_names_what_is_still_there() {
    let mut server = Slapd::start(&directory(), syncprov());
    let config = config(&server);
    let (users, groups) = refresh(&config, (None, None)).await;
    let all_users = set(&(1..=5).map(uuid).collect::<Vec<_>>());

    let mut admin = admin(&server).await;
    admin
        .delete(&person(1))
        .await
        .and_then(|r| r.success())
        .expect("delete user1");
    admin.unbind().await.expect("unbind");
    // The session log is in memory: after a restart the server can only say what is
    // present, and the deletion must still come out right.
    server.stop();
    server.restart();

    let (users, _) = refresh(&config, (Some(users.cookie), Some(groups.cookie))).await;
    assert!(
        users.present.is_some(),
        "a present phase after the restart: {users:?}"
    );
    assert_eq!(
        live_after(&all_users, &users),
        set(&[uuid(2), uuid(3), uuid(4), uuid(5)]),
        "{users:?}"
    );
}

#[tokio::test]
async fn a_server_without_syncprov_says_it_cannot_synchronise() {
    let server = Slapd::start(&directory(), Options::default());
    let r = ldap::sync_refresh(&config(&server), None, None)
        .await
        .unwrap_or_else(|e| panic!("refresh failed: {e}"));
    match r.users {
        Synced::Unsupported(result) => {
            assert_eq!(result.code, 12, "{result}");
            assert!(
                result.to_string().contains("unavailableCriticalExtension"),
                "{result}"
            );
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cookie_the_server_cannot_use_is_an_error_not_a_full_content() {
    let server = Slapd::start(&directory(), syncprov());
    let err = ldap::sync_refresh(&config(&server), Some(b"not a cookie".to_vec()), None)
        .await
        .expect_err("a refresh from a cookie the server does not know");
    assert!(
        matches!(
            &err,
            LdapError::Search {
                reason: SearchFailure::BadSync { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("holds no cookie"), "{err}");
}

#[tokio::test]
async fn check_says_whether_the_server_offers_content_synchronisation() {
    for (options, offered) in [(syncprov(), true), (Options::default(), false)] {
        let server = Slapd::start(&directory(), options);
        let got = ldap::offers_content_sync(&config(&server))
            .await
            .unwrap_or_else(|e| panic!("root DSE: {e}"));
        assert_eq!(got, Some(offered));
    }
}
