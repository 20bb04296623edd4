//! LDAP source: OpenLDAP and Active Directory, read completely or not at all.
//!
//! One read: connect (TLS as configured) → bind → paged user search → paged group
//! search → ranged retrieval of any group too large for one answer → members
//! resolved and nested groups flattened. Entries are mapped as they stream in and
//! dropped; only the users, the groups and the DN/uid indexes are held.
//!
//! - `config`: the `[source]` table, presets, validation (no network).
//! - `conn`: connection, TLS, bind, paged search; every early end is an error.
//! - `proto`: pure; requests encoded, answers framed and decoded from bytes.
//! - `entry`: entries parsed from the protocol without panics; binary attributes.
//! - `build`: pure; entries → users and groups, members resolved, groups flattened.
//! - `nested`: pure; cycle-safe flattening of nested groups.
//! - `ad`: pure; objectGUID, objectSid, userAccountControl, `member;range=…`.
//! - `dn`: pure; DNs normalized for comparison.
//! - `filter`: pure; RFC 4515 escaping and filter checks.
//!
//! Architecture Invariant: [`read`] returns the whole directory or an error. A bind
//! failure, a lost connection, a timeout, a size or time limit, a referral, a failed
//! range step or an unusable value ends the read; a partial read is never returned.

pub mod ad;
mod build;
mod config;
mod conn;
pub mod dn;
mod entry;
pub mod filter;
pub mod nested;
mod proto;

use crate::model::Directory;

pub use config::{
    Bind, EnabledRule, GroupSearch, LdapConfig, PRESETS, RawGroups, RawLdap, RawLdapTable, RawUsers, Scope,
    Search, TlsVerify, UserSearch,
};

use build::{DataError, Groups, Users};
use conn::{Conn, SearchMode};

/// The directory could not be read completely. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("ldap {url}: cannot connect: {message}")]
    Connect { url: String, message: String },
    #[error("ldap {url}: tls: {message}")]
    Tls { url: String, message: String },
    #[error("ldap {url}: bind as `{dn}` failed: {message}")]
    Bind {
        url: String,
        dn: String,
        message: String,
    },
    #[error("ldap {url}: search of `{base}` with {filter}: {message}")]
    Search {
        url: String,
        base: String,
        filter: String,
        message: String,
    },
    #[error("ldap {url}: {dn}{}: {message}", attribute.as_ref().map(|a| format!(": attribute `{a}`")).unwrap_or_default())]
    Data {
        url: String,
        dn: String,
        attribute: Option<String>,
        message: String,
    },
}

impl LdapError {
    fn data(url: &str, e: DataError) -> LdapError {
        LdapError::Data {
            url: url.to_owned(),
            dn: e.dn,
            attribute: e.attribute,
            message: e.message,
        }
    }
}

/// What a read did and found, for logs and `dirsync check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// `cn=…` or `(anonymous)`.
    pub bound_as: String,
    /// `ldaps`, `StartTLS` or `plain`.
    pub transport: &'static str,
    pub user_pages: usize,
    pub group_pages: usize,
    /// Extra requests made for `member;range=…` values.
    pub range_requests: usize,
    /// Member values that named no user or group the searches returned.
    pub ignored_members: usize,
    pub ignored_examples: Vec<String>,
    /// Nested groups that contain each other, by name, each cycle once.
    pub cycles: Vec<Vec<String>>,
    /// Group names used by more than one group.
    pub duplicate_names: Vec<String>,
    /// Config warnings (inline password, no TLS verification, cleartext bind).
    pub warnings: Vec<String>,
}

impl ReadReport {
    /// Everything an operator should look at, one sentence each, most serious first.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.warnings.clone();
        for c in &self.cycles {
            p.push(format!(
                "nested groups contain each other: {} (each gets the members of all)",
                c.join(" ⊃ ")
            ));
        }
        if self.ignored_members > 0 {
            p.push(format!(
                "{} member value(s) name no user or group the searches returned and were left \
                 out, e.g. {}",
                self.ignored_members,
                self.ignored_examples.join("; ")
            ));
        }
        if !self.duplicate_names.is_empty() {
            p.push(format!(
                "more than one group is named {}; map these by id",
                self.duplicate_names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        p
    }
}

/// Reads the whole directory, logging what an operator should know.
pub async fn read(config: &LdapConfig) -> Result<Directory, LdapError> {
    let (dir, report) = read_with_report(config).await?;
    for w in &report.warnings {
        tracing::warn!("{w}.");
    }
    for c in &report.cycles {
        tracing::warn!(groups = %c.join(", "), "Nested groups contain each other; each gets the members of all.");
    }
    if report.ignored_members > 0 {
        tracing::info!(
            ignored = report.ignored_members,
            examples = %report.ignored_examples.join("; "),
            "Left out member values that name no user or group the searches returned."
        );
    }
    tracing::debug!(
        url = %config.url,
        user_pages = report.user_pages,
        group_pages = report.group_pages,
        range_requests = report.range_requests,
        "Read the LDAP directory."
    );
    Ok(dir)
}

/// A connection, bound as configured.
async fn connect(config: &LdapConfig) -> Result<Conn, LdapError> {
    let mut conn = Conn::open(config).await?;
    conn.bind(&config.bind).await?;
    Ok(conn)
}

/// Reads the whole directory and reports what the read found.
pub async fn read_with_report(config: &LdapConfig) -> Result<(Directory, ReadReport), LdapError> {
    let url = config.url.as_str();
    let mut report = ReadReport {
        bound_as: match &config.bind {
            Bind::Anonymous => "(anonymous)".to_owned(),
            Bind::Simple { dn, .. } => dn.clone(),
        },
        transport: if url.starts_with("ldaps://") {
            "ldaps"
        } else if config.starttls {
            "StartTLS"
        } else {
            "plain"
        },
        warnings: config.warnings(),
        ..ReadReport::default()
    };
    let started = std::time::Instant::now();
    let mode = SearchMode {
        page_size: config.page_size,
        domain_scope: config.domain_scope,
    };
    // The bind is checked on one connection before a second one binds: a wrong
    // password costs one failed bind, not two (account lockout policies count them).
    let mut conn = connect(config).await?;
    let uid_attribute = config.groups.member_uid_attribute.as_deref();
    let user_attrs = config.users.attributes(uid_attribute);
    let user_search = conn.send_search(&config.users.search, &user_attrs, mode).await?;
    // The group search is asked for on a second connection while the server starts
    // on the users: its setup of a paged search (35-55 ms of slapd's time for 10,000
    // groups without an objectClass index) then overlaps the user search instead of
    // following it. The answer waits in that connection until it is read. Without a
    // second connection the groups are read after the users on the first.
    let group_attrs = config.groups.attributes();
    let ahead = async {
        let mut ahead = connect(config).await?;
        let sent = ahead
            .send_search(&config.groups.search, &group_attrs, mode)
            .await?;
        Ok::<_, LdapError>((ahead, sent))
    };
    let mut asked_ahead = match ahead.await {
        Ok(ahead) => Some(ahead),
        Err(e) => {
            tracing::debug!(error = %e, "Cannot ask for the group search ahead; it follows the user search.");
            None
        }
    };
    let mut users = Users::new(&config.users, uid_attribute);
    let read = conn
        .read_search(user_search, |e| users.add(e).map_err(|e| LdapError::data(url, e)))
        .await;
    let stats = match read {
        Ok(stats) => stats,
        Err(e) => {
            if let Some((ahead, _)) = asked_ahead {
                ahead.close().await;
            }
            return Err(e);
        }
    };
    report.user_pages = stats.pages;
    let users_read = started.elapsed();
    // Sorting the users into the directory's map needs only the user search: it
    // runs on a blocking thread while the server answers the group search.
    let (list, users) = users.finish().map_err(|e| LdapError::data(url, e))?;
    let sorting = tokio::task::spawn_blocking(move || build::sort_users(list));

    // A server may let a search go that waited as long as the user search took (an
    // idle timeout; Active Directory's MaxQueryDuration is a time limit): it is then
    // asked again from the start on the first connection, with what was read of it
    // dropped. Any other error is the read's.
    let search = &config.groups.search;
    let (mut groups, pending, stats) = loop {
        let mut groups = Groups::new(&config.groups);
        let mut pending = Vec::new();
        let each = |e: &entry::Entry| {
            pending.extend(groups.add(e, &users).map_err(|e| LdapError::data(url, e))?);
            Ok(())
        };
        let read = match asked_ahead.take() {
            Some((mut ahead, sent)) => {
                let read = ahead.read_search(sent, each).await;
                let gave_up = ahead.server_gave_up();
                ahead.close().await;
                match read {
                    Err(e) if gave_up => {
                        tracing::debug!(error = %e, "The server let the group search asked for ahead go; asking again.");
                        continue;
                    }
                    read => read,
                }
            }
            None => conn.search(search, &group_attrs, mode, each).await,
        };
        match read {
            Ok(stats) => break (groups, pending, stats),
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        }
    };
    report.group_pages = stats.pages;

    // Active Directory answers at most 1,500 values of `member` at a time: keep
    // asking for the next range until the server answers with `*`.
    for first in pending {
        let mut next = Some(first);
        while let Some(p) = next {
            let answer = conn.read_entry(&p.dn, std::slice::from_ref(&p.request)).await?;
            report.range_requests += 1;
            next = groups
                .add_range(&p, answer, &users)
                .map_err(|e| LdapError::data(url, e))?;
        }
    }
    conn.close().await;

    let entries_read = started.elapsed();
    let sorted = crate::source::joined(sorting.await)
        .map_err(|e| LdapError::Data {
            url: url.to_owned(),
            dn: config.users.search.base_dn.clone(),
            attribute: None,
            message: format!("sorting the users was cancelled: {e}"),
        })?
        .map_err(|e| LdapError::data(url, e))?;
    let (dir, resolution) = groups
        .finish_sorted(sorted)
        .map_err(|e| LdapError::data(url, e))?;
    tracing::debug!(
        users_ms = users_read.as_millis(),
        groups_ms = (entries_read - users_read).as_millis(),
        finish_ms = (started.elapsed() - entries_read).as_millis(),
        "Read the entries and resolved the members."
    );
    report.ignored_members = resolution.ignored_members;
    report.ignored_examples = resolution.ignored_examples;
    report.cycles = resolution.cycles;
    report.duplicate_names = resolution.duplicate_names;
    Ok((dir, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::config::RawLdap;
    use crate::source::ldap::proto::tests::{done_message, entry_message, result_message};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the scripted server saw.
    #[derive(Default)]
    struct Seen {
        binds: AtomicUsize,
        group_searches: AtomicUsize,
        /// A group search came in before the user search was answered.
        groups_first: std::sync::atomic::AtomicBool,
    }

    /// A server for any number of connections: binds are answered `bind_rc`; a user
    /// search finds one user, answered once a group search came in (or after a
    /// second); a group search finds one group with that user, but the first
    /// `refused` group searches are answered `refused_rc`.
    async fn server(bind_rc: i64, refused: usize, refused_rc: i64) -> (LdapConfig, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let counted = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = Arc::clone(&counted);
                tokio::spawn(async move {
                    let has = |req: &[u8], part: &[u8]| req.windows(part.len()).any(|w| w == part);
                    let mut buf = vec![0; 65536];
                    loop {
                        let n = match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let req = &buf[..n];
                        // SEQUENCE, its length (short or long form), INTEGER id (one byte).
                        let at = 2 + if req[1] < 0x80 {
                            0
                        } else {
                            usize::from(req[1] & 0x7f)
                        };
                        let id = i32::from(req[at + 2]);
                        let answer = if has(req, b"inetOrgPerson") {
                            for _ in 0..100 {
                                if seen.group_searches.load(Ordering::SeqCst) > 0 {
                                    seen.groups_first.store(true, Ordering::SeqCst);
                                    break;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            }
                            let mut a = entry_message(
                                id,
                                "uid=ann,dc=x",
                                &[("entryUUID", &[b"u-1"]), ("uid", &[b"ann"])],
                            );
                            a.extend(done_message(id, 0, "", &[], &[]));
                            a
                        } else if has(req, b"groupOfNames") {
                            if seen.group_searches.fetch_add(1, Ordering::SeqCst) < refused {
                                done_message(id, refused_rc, "not now", &[], &[])
                            } else {
                                let mut a = entry_message(
                                    id,
                                    "cn=eng,dc=x",
                                    &[
                                        ("entryUUID", &[b"g-1"]),
                                        ("cn", &[b"eng"]),
                                        ("member", &[b"uid=ann,dc=x"]),
                                    ],
                                );
                                a.extend(done_message(id, 0, "", &[], &[]));
                                a
                            }
                        } else if has(req, &[0x42, 0x00]) {
                            return; // unbind
                        } else {
                            seen.binds.fetch_add(1, Ordering::SeqCst);
                            result_message(id, 1, bind_rc, "", &[], &[])
                        };
                        if sock.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let raw: RawLdap = toml::from_str(&format!(
            "preset = \"openldap\"\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"dc=x\"\nanonymous = true\ntimeout = \"2s\"\n"
        ))
        .expect("toml");
        let config = LdapConfig::from_raw(raw, std::path::Path::new("/nonexistent")).expect("valid");
        (config, seen)
    }

    fn members(dir: &Directory) -> Vec<(String, Vec<String>)> {
        dir.groups
            .values()
            .map(|g| (g.id.clone(), g.members.iter().cloned().collect()))
            .collect()
    }

    /// The group search is asked for on a second connection before the user search
    /// is answered, once; the bind is checked on one connection before the other.
    #[tokio::test]
    async fn groups_asked_for_ahead_are_read_once() {
        let (config, seen) = server(0, 0, 0).await;
        let (dir, report) = read_with_report(&config).await.expect("reads");
        assert_eq!(members(&dir), [("g-1".to_owned(), vec!["u-1".to_owned()])]);
        assert_eq!((report.user_pages, report.group_pages), (1, 1));
        assert_eq!(seen.group_searches.load(Ordering::SeqCst), 1);
        assert!(seen.groups_first.load(Ordering::SeqCst));
        assert_eq!(seen.binds.load(Ordering::SeqCst), 2);

        let (config, seen) = server(49, 0, 0).await;
        let err = read_with_report(&config).await.expect_err("refused").to_string();
        assert!(err.contains("invalidCredentials (49)"), "{err}");
        assert_eq!(seen.binds.load(Ordering::SeqCst), 1, "one failed bind, not two");
    }

    /// A group search asked for ahead that the server let go (busy) is asked again
    /// from the start; a second refusal is the read's error, and so is a first
    /// refusal that asking again would not change.
    #[tokio::test]
    async fn a_group_search_the_server_let_go_is_asked_again() {
        let (config, seen) = server(0, 1, 51).await;
        let (dir, _) = read_with_report(&config).await.expect("reads");
        assert_eq!(members(&dir), [("g-1".to_owned(), vec!["u-1".to_owned()])]);
        assert_eq!(seen.group_searches.load(Ordering::SeqCst), 2);

        let (config, seen) = server(0, 2, 51).await;
        let err = read_with_report(&config).await.expect_err("fails").to_string();
        assert!(err.contains("busy (51): not now"), "{err}");
        assert_eq!(seen.group_searches.load(Ordering::SeqCst), 2);

        let (config, seen) = server(0, 1, 32).await;
        let err = read_with_report(&config).await.expect_err("fails").to_string();
        assert!(err.contains("(32): not now"), "{err}");
        assert_eq!(seen.group_searches.load(Ordering::SeqCst), 1, "not asked again");
    }
}
