//! The LDAP source against a real slapd (tests/common/slapd.rs): paging past the
//! size limit, every member style with nesting and a cycle, TLS (StartTLS, LDAPS, a
//! wrong CA), and each way a read fails, with the message an operator sees.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use common::slapd::{self, BASE, Options, READER_DN, READER_PASSWORD, Slapd, fixture, people_ldif};
use common::{group_uuid, uuid};
use dirsync::model::Directory;
use dirsync::source::ldap::{
    self, BindFailure, ConnectFailure, DataProblem, LdapConfig, LdapError, RawLdap, ReadReport,
    SearchFailure, TlsFailure, TlsHint,
};

/// A config for `url` bound as `cn=reader` with the openldap preset, plus `extra` keys.
fn config(server: &Slapd, url: &str, extra: &str) -> LdapConfig {
    let text = format!(
        "preset = \"openldap\"\nurl = \"{url}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
         bind_password_file = \"{}\"\ntimeout = \"10s\"\n{extra}",
        server.password_file().display()
    );
    parse(&text, server.dir.path())
}

fn parse(text: &str, base: &Path) -> LdapConfig {
    let raw: RawLdap = toml::from_str(text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    LdapConfig::from_raw(raw, base).unwrap_or_else(|(k, m)| panic!("`{k}`: {m}"))
}

async fn read(config: &LdapConfig) -> (Directory, ReadReport) {
    ldap::read_with_report(config)
        .await
        .unwrap_or_else(|e| panic!("read failed: {e}"))
}

async fn read_err(config: &LdapConfig) -> LdapError {
    match ldap::read_with_report(config).await {
        Ok((dir, _)) => panic!("read succeeded with {} users", dir.users.len()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn paging_reads_2500_users_past_a_size_limit_of_500() {
    let mut ldif = people_ldif(2500);
    ldif.push_str("dn: cn=everyone,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: everyone\n");
    for i in 1..=2500 {
        ldif.push_str(&format!("member: uid=user{i},ou=people,dc=example,dc=com\n"));
    }
    ldif.push_str(&format!("entryUUID: {}\n", group_uuid(0)));
    let server = Slapd::start(&ldif, Options::default());

    let started = Instant::now();
    let (dir, report) = read(&config(&server, &server.url(), "page_size = 200")).await;
    eprintln!("read 2,500 users and a group of 2,500 in {:?}", started.elapsed());
    assert_eq!(dir.users.len(), 2500);
    assert!((1..=2500).all(|i| dir.users.contains_key(&uuid(i))));
    assert_eq!(dir.users[&uuid(7)].username, "user7");
    assert_eq!(dir.users[&uuid(7)].email.as_deref(), Some("user7@example.com"));
    assert_eq!(dir.groups[&group_uuid(0)].members.len(), 2500);
    assert_eq!(report.user_pages, 13, "2,500 users in pages of 200");

    // The limit is real: without paging the same read stops at 500, and says so.
    let err = read_err(&config(&server, &server.url(), "page_size = 0")).await;
    assert!(
        matches!(
            &err,
            LdapError::Search {
                reason: SearchFailure::SizeLimit { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("sizeLimitExceeded (4)"), "{msg}");
    assert!(msg.contains("`page_size`"), "{msg}");
}

#[tokio::test]
async fn a_server_that_refuses_paging_says_so() {
    let server = Slapd::start(
        &people_ldif(3),
        Options {
            paging: false,
            ..Options::default()
        },
    );
    let err = read_err(&config(&server, &server.url(), "")).await;
    assert!(
        matches!(
            &err,
            LdapError::Search {
                reason: SearchFailure::PagingRefused { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("refuses paged results (RFC 2696)"), "{msg}");
    assert!(msg.contains("`page_size = 0`"), "{msg}");
}

/// Flattened members by group: what tests/fixtures/ldap-groups.ldif means.
fn expected_groups() -> BTreeMap<String, Vec<String>> {
    let people = |ns: &[u64]| ns.iter().map(|n| uuid(*n)).collect::<Vec<_>>();
    [
        (0, people(&[1, 2, 3, 4, 5, 10])), // company ⊃ engineering ⊃ platform ⊃ sre, + judy
        (1, people(&[1, 2, 3, 4, 5])),     // engineering
        (2, people(&[3, 4, 5])),           // platform (uniqueMember)
        (3, people(&[4, 5])),              // sre (uniqueMember, one with #'0101'B)
        (4, people(&[6, 7])),              // admins (memberUid frank, GRACE; ghost left out)
        (5, people(&[8, 9])),              // ring-a ⊃ ring-b ⊃ ring-a
        (6, people(&[8, 9])),              // ring-b
        (7, people(&[1])),                 // outsiders: cn=reader left out, alice spelled oddly
    ]
    .into_iter()
    .map(|(k, m)| (group_uuid(k), m))
    .collect()
}

fn members(dir: &Directory) -> BTreeMap<String, Vec<String>> {
    dir.groups
        .values()
        .map(|g| (g.id.clone(), g.members.iter().cloned().collect()))
        .collect()
}

#[tokio::test]
async fn every_member_style_nesting_and_a_cycle() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), Options::default());
    let (dir, report) = read(&config(&server, &server.url(), "")).await;

    assert_eq!(dir.users.len(), 10);
    assert_eq!(members(&dir), expected_groups());
    let alice = &dir.users[&uuid(1)];
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.display_name.as_deref(), Some("Alice Example"));
    assert_eq!(alice.first_name.as_deref(), Some("Alice"));
    assert_eq!(alice.last_name.as_deref(), Some("Example"));
    assert_eq!(&alice.attrs["dn"], "uid=alice,ou=people,dc=example,dc=com");
    assert_eq!(dir.groups[&group_uuid(4)].name, "admins");

    assert_eq!(report.cycles, [["ring-a", "ring-b"]]);
    assert_eq!(report.ignored_members, 2, "{:?}", report.ignored_examples);
    let problems = report.problems().join("\n");
    assert!(problems.contains("ring-a ⊃ ring-b"), "{problems}");
    assert!(problems.contains("memberUid: ghost"), "{problems}");
    assert!(problems.contains("cn=reader,dc=example,dc=com"), "{problems}");
}

#[tokio::test]
async fn anonymous_bind_when_configured() {
    let server = Slapd::start(&fixture("ldap-groups.ldif"), Options::default());
    let text = format!(
        "preset = \"openldap\"\nurl = \"{}\"\nbase_dn = \"{BASE}\"\nanonymous = true\n",
        server.url()
    );
    let (dir, report) = read(&parse(&text, server.dir.path())).await;
    assert_eq!(report.bound_as, "(anonymous)");
    assert_eq!(members(&dir), expected_groups());
}

#[tokio::test]
async fn starttls_and_ldaps_with_a_ca_made_at_test_time() {
    let server = Slapd::start(
        &fixture("ldap-groups.ldif"),
        Options {
            tls: true,
            ..Options::default()
        },
    );
    let ca = server.ca_file();
    let starttls = config(
        &server,
        &server.url(),
        &format!("starttls = true\nca_file = \"{}\"", ca.display()),
    );
    let (dir, report) = read(&starttls).await;
    assert_eq!(report.transport, "StartTLS");
    assert_eq!(members(&dir), expected_groups());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let ldaps = config(
        &server,
        &server.ldaps_url(),
        &format!("ca_file = \"{}\"", ca.display()),
    );
    let (dir, report) = read(&ldaps).await;
    assert_eq!(report.transport, "ldaps");
    assert_eq!(members(&dir), expected_groups());

    // Verification off: it works, and every read says it is off.
    let insecure = config(&server, &server.ldaps_url(), "tls_insecure_skip_verify = true");
    let (_, report) = read(&insecure).await;
    assert!(
        report.warnings.iter().any(|w| w.contains("verification is off")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn the_wrong_ca_is_a_clear_tls_error() {
    let server = Slapd::start(
        &people_ldif(2),
        Options {
            tls: true,
            ..Options::default()
        },
    );
    let other = slapd::make_ca(server.dir.path(), "other", false);
    for (url, starttls) in [(server.ldaps_url(), ""), (server.url(), "starttls = true\n")] {
        let c = config(
            &server,
            &url,
            &format!("{starttls}ca_file = \"{}\"", other.display()),
        );
        let err = read_err(&c).await;
        assert!(
            matches!(
                &err,
                LdapError::Tls {
                    reason: TlsFailure::Handshake {
                        hint: TlsHint::NotInCaFile(path),
                        ..
                    },
                    ..
                } if *path == other
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("UnknownIssuer"), "{msg}");
        assert!(
            msg.contains(&format!("not signed by a CA in {}", other.display())),
            "{msg}"
        );
    }
    // Without `ca_file`, the system's CAs do not know the test CA either.
    let err = read_err(&config(&server, &server.ldaps_url(), "")).await;
    assert!(
        matches!(
            &err,
            LdapError::Tls {
                reason: TlsFailure::Handshake {
                    hint: TlsHint::NotInSystemStore,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("set `ca_file`"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_bind_error() {
    let server = Slapd::start(&people_ldif(2), Options::default());
    let wrong = server.dir.path().join("wrong.pw");
    std::fs::write(&wrong, "not-the-password").expect("write");
    let text = format!(
        "preset = \"openldap\"\nurl = \"{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
         bind_password_file = \"{}\"\n",
        server.url(),
        wrong.display()
    );
    let err = read_err(&parse(&text, server.dir.path())).await;
    assert!(
        matches!(
            &err,
            LdapError::Bind {
                reason: BindFailure::InvalidCredentials { result },
                ..
            } if result.code == 49
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("bind as `{READER_DN}` failed: invalidCredentials (49)")),
        "{msg}"
    );
    assert!(
        !msg.contains("not-the-password") && !msg.contains(READER_PASSWORD),
        "{msg}"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_clear_connect_error() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let text = format!(
        "preset = \"openldap\"\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"{BASE}\"\n\
         anonymous = true\nconnect_timeout = \"2s\"\n"
    );
    let err = read_err(&parse(&text, Path::new("/"))).await;
    assert!(
        matches!(
            &err,
            LdapError::Connect {
                reason: ConnectFailure::Io(e),
                ..
            } if e.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("ldap ldap://127.0.0.1:{port}: cannot connect: ")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // The kernel completes the handshake; nothing ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let text = format!(
        "preset = \"openldap\"\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"{BASE}\"\n\
         anonymous = true\ntimeout = \"1s\"\n"
    );
    let err = read_err(&parse(&text, Path::new("/"))).await;
    assert!(
        matches!(
            &err,
            LdapError::Bind {
                reason: BindFailure::Timeout { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no answer within 1s (`timeout`)"),
        "{err}"
    );
    drop(silent);
}

#[tokio::test]
async fn an_invalid_utf8_value_names_the_dn_and_attribute() {
    let mut ldif = people_ldif(2);
    ldif.push_str(
        "dn: uid=binary,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: binary\n\
         cn: Binary\nsn: B\naudio:: /w==\n",
    );
    let server = Slapd::start(&ldif, Options::default());
    // Unmapped, the attribute is never asked for and does no harm.
    let (dir, _) = read(&config(&server, &server.url(), "")).await;
    assert_eq!(dir.users.len(), 3);

    let err = read_err(&config(&server, &server.url(), "[users]\nextra = [\"audio\"]")).await;
    assert!(
        matches!(
            &err,
            LdapError::Data {
                attribute: Some(a),
                problem: DataProblem::NotUtf8 { .. },
                ..
            } if a == "audio"
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(
            "uid=binary,ou=people,dc=example,dc=com: attribute `audio`: the value is not valid UTF-8"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_base_dn_is_named() {
    let server = Slapd::start(&people_ldif(2), Options::default());
    let c = config(
        &server,
        &server.url(),
        "[users]\nbase_dn = \"ou=nowhere,dc=example,dc=com\"",
    );
    let err = read_err(&c).await;
    assert!(
        matches!(
            &err,
            LdapError::Search {
                base,
                reason: SearchFailure::NoSuchBase { result },
                ..
            } if base == "ou=nowhere,dc=example,dc=com" && result.code == 32
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("search of `ou=nowhere,dc=example,dc=com`"), "{msg}");
    assert!(msg.contains("noSuchObject (32)"), "{msg}");
}

#[tokio::test]
async fn a_referral_ends_the_read_instead_of_skipping_part_of_the_tree() {
    let mut ldif = people_ldif(3);
    ldif.push_str(
        "dn: ou=partners,ou=people,dc=example,dc=com\nobjectClass: referral\n\
         objectClass: extensibleObject\nou: partners\n\
         ref: ldap://127.0.0.1:9/ou=partners,dc=example,dc=com\n",
    );
    let server = Slapd::start(&ldif, Options::default());
    // Searching the subtree that holds the referral: a continuation reference.
    let err = read_err(&config(&server, &server.url(), "")).await;
    assert!(
        matches!(
            &err,
            LdapError::Search {
                reason: SearchFailure::Referral { urls, .. },
                ..
            } if urls.iter().any(|u| u.starts_with("ldap://127.0.0.1:9/ou=partners,dc=example,dc=com"))
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("returned a referral to ldap://127.0.0.1:9/ou=partners,dc=example,dc=com"),
        "{msg}"
    );
    // Searching at the referral itself: a referral result.
    let c = config(
        &server,
        &server.url(),
        "[users]\nbase_dn = \"ou=partners,ou=people,dc=example,dc=com\"",
    );
    let err = read_err(&c).await;
    assert!(
        matches!(
            &err,
            LdapError::Search {
                reason: SearchFailure::ReferralResult { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("referral (10)"), "{msg}");
    assert!(msg.contains("does not follow referrals"), "{msg}");
}

#[test]
fn the_example_configs_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = slapd::make_ca(dir.path(), "example", false);
    for name in ["ldap-ca.pem", "corp-root-ca.pem"] {
        std::fs::copy(&ca, dir.path().join(name)).expect("copy ca");
    }
    for name in ["ldap.password", "ad.password", "office.key"] {
        std::fs::write(dir.path().join(name), "example-secret\n").expect("write secret");
    }
    for example in ["ldap-openldap.toml", "ldap-active-directory.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(example);
        let text = std::fs::read_to_string(&path)
            .expect("read example")
            .replace("/etc/dirsync/", &format!("{}/", dir.path().display()));
        let config = dirsync::config::parse(&text, &path).unwrap_or_else(|e| panic!("{example}: {e}"));
        let dirsync::config::SourceConfig::Ldap(ldap) = &config.source else {
            panic!("{example}: not an LDAP source");
        };
        assert!(ldap.warnings().is_empty(), "{example}: {:?}", ldap.warnings());
        assert_eq!(ldap.page_size, 500);
    }
}
