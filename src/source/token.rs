//! A source's sync token (what identifies the data a read returned) and the choice
//! between a full read and an unchanged one, so a run can skip parsing and mapping
//! a source that did not change.
//!
//! CSV: each file's path, size, mtime and SHA-256. Size and mtime alone are not
//! trusted (a copy can keep both), so an unchanged read still hashes every file; it
//! never parses one. OpenLDAP: the content synchronisation cookies of the user and
//! group searches; whether anything changed is known only after the refresh. Active
//! Directory: the domain controller's highest committed USN, invocationId and
//! dsServiceName. `decide`, `decide_refresh` and `decide_usn` are pure: the caller
//! gathers the stored state and now.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::csv::{CsvConfig, CsvError};
use super::ldap::cache::StoredValue;

/// What a read saw, stored so the next run can compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Token {
    Csv {
        files: Vec<CsvFile>,
    },
    /// The cookies of the last refresh of each search (RFC 4533).
    Ldap {
        users_cookie: StoredValue,
        groups_cookie: StoredValue,
    },
    /// The Active Directory domain controller's USN when the last read began, and
    /// which controller (and copy of its database) counted it.
    #[serde(rename = "active_directory")]
    ActiveDirectory(UsnPoint),
}

/// A domain controller's highest committed USN, and the controller that counted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsnPoint {
    pub(crate) usn: u64,
    pub(crate) invocation_id: String,
    pub(crate) ds_service_name: String,
}

/// One CSV file as it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CsvFile {
    pub(crate) path: String,
    pub(crate) size: u64,
    /// Nanoseconds since the Unix epoch.
    pub(crate) mtime_ns: i64,
    /// Lowercase hex.
    pub(crate) sha256: String,
}

impl Token {
    /// Whether this token's files hash to what was parsed (`sha256` of each, in the
    /// token's order): a file rewritten between the token and the read was parsed
    /// as another content than the token says.
    pub(crate) fn describes(&self, parsed: &[String]) -> bool {
        let Token::Csv { files } = self else {
            return false;
        };
        files.len() == parsed.len() && files.iter().zip(parsed).all(|(f, sha)| f.sha256 == *sha)
    }

    /// Whether both describe the same data: every file's path, size and content hash
    /// agree (mtimes may differ: a `touch` changes nothing that is read).
    pub(crate) fn same_content(&self, other: &Token) -> bool {
        let (Token::Csv { files: a }, Token::Csv { files: b }) = (self, other) else {
            return false;
        };
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.path == y.path && x.size == y.size && x.sha256 == y.sha256)
    }
}

/// The token of the configured CSV files, as they are now. Reads every file once.
pub(crate) fn csv(config: &CsvConfig) -> Result<Token, CsvError> {
    let mut files = Vec::new();
    for path in [
        Some(&config.users),
        Some(&config.groups),
        config.memberships.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        files.push(csv_file(path)?);
    }
    Ok(Token::Csv { files })
}

fn csv_file(path: &Path) -> Result<CsvFile, CsvError> {
    let err = |e: std::io::Error| CsvError {
        file: path.to_owned(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(CsvFile {
        path: path.display().to_string(),
        size,
        mtime_ns,
        sha256: hex(&hasher.finalize()),
    })
}

/// SHA-256 of `bytes`, lowercase hex, as the token keeps a file's.
pub(crate) fn sha256_bytes_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of `text`, lowercase hex: how config sections are compared between runs.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The source's state as the last run that wrote it left it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub(crate) kind: String,
    pub(crate) config_hash: String,
    pub(crate) token: Option<Token>,
    pub(crate) generation: i64,
    /// Time since the last full read; `None` if there was none.
    pub(crate) since_full: Option<Duration>,
    pub(crate) users: usize,
    pub(crate) groups: usize,
    /// Why the next read must be full (a failed refresh); `None` otherwise.
    pub(crate) force_full: Option<String>,
}

/// How this run reads the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// Parse everything and plan every target.
    Full,
    /// The source is as last read: plan only targets whose last plan was not confirmed.
    Unchanged,
    /// Only what changed since the stored token was read; every target is planned.
    Incremental,
}

impl ReadMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReadMode::Full => "full",
            ReadMode::Unchanged => "unchanged",
            ReadMode::Incremental => "incremental",
        }
    }
}

/// The read this run does, why, and whether what is read differs from the stored read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) mode: ReadMode,
    pub(crate) reason: String,
    /// What is read is not what the stored state describes: the generation moves.
    pub(crate) changed: bool,
}

/// What this run knows before it reads anything.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) kind: &'a str,
    pub(crate) config_hash: &'a str,
    /// `None`: the source kind has no token (every read is full).
    pub(crate) token: Option<&'a Token>,
    pub(crate) resync: bool,
    pub(crate) full_read_every: Duration,
}

/// Chooses between a full read and an unchanged one. Any doubt reads everything.
pub(crate) fn decide(stored: Option<&Stored>, now: Facts<'_>) -> Decision {
    let full = |reason: &str, changed: bool| Decision {
        mode: ReadMode::Full,
        reason: reason.to_owned(),
        changed,
    };
    let Some(stored) = stored else {
        return full("no earlier read is recorded", true);
    };
    let config_changed = stored.kind != now.kind || stored.config_hash != now.config_hash;
    let content_changed = match (now.token, &stored.token) {
        (Some(a), Some(b)) => !a.same_content(b),
        _ => true,
    };
    let changed = config_changed || content_changed;
    if now.resync {
        return full("a resync reads and plans everything", changed);
    }
    let Some(token) = now.token else {
        return full(
            "incremental reads are not implemented for this source kind",
            changed,
        );
    };
    if config_changed {
        return full("the source configuration changed", true);
    }
    if stored.token.is_none() {
        return full("no sync token is stored", true);
    }
    if content_changed {
        return full("the files changed", true);
    }
    match stored.since_full {
        Some(age) if age <= now.full_read_every => {}
        _ => {
            return full(
                &format!(
                    "the last full read is older than source.full_read_every ({})",
                    humantime::format_duration(now.full_read_every)
                ),
                false,
            );
        }
    }
    let touched = stored.token.as_ref() != Some(token);
    Decision {
        mode: ReadMode::Unchanged,
        reason: if touched {
            "the files were touched but their content is unchanged".to_owned()
        } else {
            "the files are unchanged".to_owned()
        },
        changed: false,
    }
}

/// How an OpenLDAP source is refreshed this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// From the stored cookies (users, groups): only what changed.
    WithCookies { users: Vec<u8>, groups: Vec<u8> },
    /// Without cookies: every entry, replacing the cache. Why, for the log.
    Full { reason: String },
}

/// Chooses between a refresh from the stored cookies and one that reads every entry.
/// Any doubt about the cookies reads everything.
pub(crate) fn decide_refresh(stored: Option<&Stored>, now: Facts<'_>) -> Refresh {
    let full = |reason: &str| Refresh::Full {
        reason: reason.to_owned(),
    };
    let Some(stored) = stored else {
        return full("no earlier read is recorded");
    };
    if now.resync {
        return full("a resync reads and plans everything");
    }
    if stored.kind != now.kind || stored.config_hash != now.config_hash {
        return full("the source configuration changed");
    }
    if let Some(why) = &stored.force_full {
        return full(&format!("the last read failed: {why}"));
    }
    let Some(Token::Ldap {
        users_cookie,
        groups_cookie,
    }) = &stored.token
    else {
        return full("no sync cookie is stored");
    };
    let (Ok(users), Ok(groups)) = (users_cookie.bytes(), groups_cookie.bytes()) else {
        return full("the stored sync cookies cannot be read");
    };
    match stored.since_full {
        Some(age) if age <= now.full_read_every => Refresh::WithCookies { users, groups },
        _ => full(&format!(
            "the last full read is older than source.full_read_every ({})",
            humantime::format_duration(now.full_read_every)
        )),
    }
}

/// How an Active Directory source is read this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UsnRead {
    /// The controller's USN is the stored one: nothing changed.
    Unchanged,
    /// Only the objects changed after this (stored) USN.
    Since(u64),
    /// Every entry, replacing the cache. Why, for the log and `dirsync status`.
    Full { reason: String },
}

/// Chooses how an Active Directory source is read from the stored state and the
/// domain controller's state (`dc`) as this run's first request found it. A USN
/// from another controller, or from another copy of its database (a restore), or
/// above the controller's own, is in doubt: everything is read.
pub(crate) fn decide_usn(stored: Option<&Stored>, now: Facts<'_>, dc: &UsnPoint) -> UsnRead {
    let full = |reason: String| UsnRead::Full { reason };
    let Some(stored) = stored else {
        return full("no earlier read is recorded".into());
    };
    if now.resync {
        return full("a resync reads and plans everything".into());
    }
    if stored.kind != now.kind || stored.config_hash != now.config_hash {
        return full("the source configuration changed".into());
    }
    if let Some(why) = &stored.force_full {
        return full(format!("the last read failed: {why}"));
    }
    let Some(Token::ActiveDirectory(last)) = &stored.token else {
        return full("no USN is stored".into());
    };
    if last.ds_service_name != dc.ds_service_name {
        return full(format!(
            "another domain controller answers ({}, the stored USN was counted by {})",
            dc.ds_service_name, last.ds_service_name
        ));
    }
    if last.invocation_id != dc.invocation_id {
        return full(format!(
            "the domain controller's invocationId changed ({} to {}): its database was restored",
            last.invocation_id, dc.invocation_id
        ));
    }
    if dc.usn < last.usn {
        return full(format!(
            "the domain controller's highest committed USN ({}) is below the stored one ({}): its database was restored",
            dc.usn, last.usn
        ));
    }
    match stored.since_full {
        Some(age) if age <= now.full_read_every => {}
        _ => {
            return full(format!(
                "the last full read is older than source.full_read_every ({})",
                humantime::format_duration(now.full_read_every)
            ));
        }
    }
    if dc.usn == last.usn {
        UsnRead::Unchanged
    } else {
        UsnRead::Since(last.usn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(files: &[(&str, u64, i64, &str)]) -> Token {
        Token::Csv {
            files: files
                .iter()
                .map(|&(path, size, mtime_ns, sha256)| CsvFile {
                    path: path.into(),
                    size,
                    mtime_ns,
                    sha256: sha256.into(),
                })
                .collect(),
        }
    }

    fn stored(token: Option<Token>, since_full: Option<u64>) -> Option<Stored> {
        Some(Stored {
            kind: "csv".into(),
            config_hash: "h".into(),
            token,
            generation: 7,
            since_full: since_full.map(Duration::from_secs),
            users: 1,
            groups: 1,
            force_full: None,
        })
    }

    /// One case: the stored state, this run's token and config hash, resync, and the
    /// expected (mode, reason fragment, changed).
    fn check(
        stored: Option<Stored>,
        now_token: Option<Token>,
        config_hash: &str,
        resync: bool,
        expected: (ReadMode, &str, bool),
    ) {
        let d = decide(
            stored.as_ref(),
            Facts {
                kind: "csv",
                config_hash,
                token: now_token.as_ref(),
                resync,
                full_read_every: Duration::from_secs(3600),
            },
        );
        assert_eq!(d.mode, expected.0, "{d:?}");
        assert!(d.reason.contains(expected.1), "{d:?}");
        assert_eq!(d.changed, expected.2, "{d:?}");
    }

    #[test]
    fn a_token_describes_the_files_only_as_they_were_parsed() {
        let t = token(&[("u.csv", 10, 1, "aa"), ("g.csv", 20, 2, "bb")]);
        assert!(t.describes(&["aa".into(), "bb".into()]));
        assert!(!t.describes(&["aa".into(), "cc".into()]), "rewritten while read");
        assert!(!t.describes(&["aa".into()]));
        // The token hashes a file as it streams it; the read hashes what it parsed.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.csv");
        let text = "\u{feff}id,name\n".to_owned() + &"1,a\n".repeat(100_000);
        std::fs::write(&path, &text).expect("write");
        assert_eq!(
            csv_file(&path).expect("hash").sha256,
            sha256_bytes_hex(text.as_bytes())
        );
    }

    #[test]
    fn decisions() {
        let a = token(&[("u.csv", 10, 1, "aa"), ("g.csv", 5, 1, "bb")]);
        let touched = token(&[("u.csv", 10, 2, "aa"), ("g.csv", 5, 1, "bb")]);
        let edited = token(&[("u.csv", 10, 2, "ac"), ("g.csv", 5, 1, "bb")]);
        let fresh = Some(60);
        use ReadMode::*;
        check(None, Some(a.clone()), "h", false, (Full, "no earlier read", true));
        check(
            stored(Some(a.clone()), fresh),
            Some(a.clone()),
            "h",
            false,
            (Unchanged, "unchanged", false),
        );
        check(
            stored(Some(a.clone()), fresh),
            Some(touched),
            "h",
            false,
            (Unchanged, "touched", false),
        );
        check(
            stored(Some(a.clone()), fresh),
            Some(edited.clone()),
            "h",
            false,
            (Full, "files changed", true),
        );
        check(
            stored(Some(a.clone()), fresh),
            Some(a.clone()),
            "other",
            false,
            (Full, "configuration changed", true),
        );
        check(
            stored(Some(a.clone()), fresh),
            Some(a.clone()),
            "h",
            true,
            (Full, "resync", false),
        );
        check(
            stored(Some(a.clone()), fresh),
            Some(edited),
            "h",
            true,
            (Full, "resync", true),
        );
        check(
            stored(Some(a.clone()), Some(7200)),
            Some(a.clone()),
            "h",
            false,
            (Full, "older than source.full_read_every (1h)", false),
        );
        check(
            stored(Some(a.clone()), None),
            Some(a.clone()),
            "h",
            false,
            (Full, "older than", false),
        );
        check(
            stored(None, fresh),
            Some(a.clone()),
            "h",
            false,
            (Full, "no sync token", true),
        );
        check(
            stored(Some(a), fresh),
            None,
            "h",
            false,
            (Full, "not implemented", true),
        );
    }

    #[test]
    fn refresh_decisions() {
        let cookies = Token::Ldap {
            users_cookie: StoredValue::new(b"rid=000,csn=1"),
            groups_cookie: StoredValue::new(b"rid=000,csn=2"),
        };
        let ldap = |token: Option<Token>, since_full: Option<u64>, force_full: Option<&str>| Stored {
            kind: "ldap".into(),
            config_hash: "h".into(),
            token,
            generation: 3,
            since_full: since_full.map(Duration::from_secs),
            users: 1,
            groups: 1,
            force_full: force_full.map(Into::into),
        };
        let check = |stored: Option<Stored>, config_hash: &str, resync: bool, expected: &str| {
            let r = decide_refresh(
                stored.as_ref(),
                Facts {
                    kind: "ldap",
                    config_hash,
                    token: None,
                    resync,
                    full_read_every: Duration::from_secs(3600),
                },
            );
            match r {
                Refresh::WithCookies { users, groups } => {
                    assert_eq!(expected, "cookies", "{users:?} {groups:?}");
                    assert_eq!(
                        (users, groups),
                        (b"rid=000,csn=1".to_vec(), b"rid=000,csn=2".to_vec())
                    );
                }
                Refresh::Full { reason } => assert!(reason.contains(expected), "{reason}"),
            }
        };
        let fresh = Some(60);
        check(
            Some(ldap(Some(cookies.clone()), fresh, None)),
            "h",
            false,
            "cookies",
        );
        check(None, "h", false, "no earlier read");
        check(
            Some(ldap(Some(cookies.clone()), fresh, None)),
            "h",
            true,
            "resync",
        );
        check(
            Some(ldap(Some(cookies.clone()), fresh, None)),
            "other",
            false,
            "configuration changed",
        );
        check(
            Some(ldap(Some(cookies.clone()), fresh, Some("a bad cookie"))),
            "h",
            false,
            "the last read failed: a bad cookie",
        );
        check(Some(ldap(None, fresh, None)), "h", false, "no sync cookie");
        check(
            Some(ldap(Some(token(&[("u.csv", 1, 1, "a")])), fresh, None)),
            "h",
            false,
            "no sync cookie",
        );
        check(
            Some(ldap(Some(cookies.clone()), Some(7200), None)),
            "h",
            false,
            "older than source.full_read_every (1h)",
        );
        check(Some(ldap(Some(cookies), None, None)), "h", false, "older than");
    }

    #[test]
    fn usn_decisions() {
        let point = |usn: u64, invocation_id: &str, ds: &str| UsnPoint {
            usn,
            invocation_id: invocation_id.into(),
            ds_service_name: ds.into(),
        };
        let stored_at = |token: Option<Token>, since_full: Option<u64>, force_full: Option<&str>| Stored {
            kind: "ldap".into(),
            config_hash: "h".into(),
            token,
            generation: 3,
            since_full: since_full.map(Duration::from_secs),
            users: 1,
            groups: 1,
            force_full: force_full.map(Into::into),
        };
        let dc1 = Token::ActiveDirectory(point(4000, "i1", "CN=NTDS Settings,CN=DC1"));
        let check =
            |stored: Option<Stored>, config_hash: &str, resync: bool, now: UsnPoint, expected: &str| {
                let facts = Facts {
                    kind: "ldap",
                    config_hash,
                    token: None,
                    resync,
                    full_read_every: Duration::from_secs(3600),
                };
                match decide_usn(stored.as_ref(), facts, &now) {
                    UsnRead::Unchanged => assert_eq!(expected, "unchanged"),
                    UsnRead::Since(usn) => assert_eq!(expected, format!("since {usn}")),
                    UsnRead::Full { reason } => assert!(reason.contains(expected), "{reason} / {expected}"),
                }
            };
        let fresh = Some(60);
        let same = || Some(stored_at(Some(dc1.clone()), fresh, None));
        check(
            same(),
            "h",
            false,
            point(4000, "i1", "CN=NTDS Settings,CN=DC1"),
            "unchanged",
        );
        check(
            same(),
            "h",
            false,
            point(4010, "i1", "CN=NTDS Settings,CN=DC1"),
            "since 4000",
        );
        check(None, "h", false, point(4000, "i1", "x"), "no earlier read");
        check(
            same(),
            "h",
            true,
            point(4000, "i1", "CN=NTDS Settings,CN=DC1"),
            "resync",
        );
        check(
            same(),
            "other",
            false,
            point(4000, "i1", "CN=NTDS Settings,CN=DC1"),
            "configuration changed",
        );
        check(
            Some(stored_at(Some(dc1.clone()), fresh, Some("lost"))),
            "h",
            false,
            point(4000, "i1", "CN=NTDS Settings,CN=DC1"),
            "the last read failed: lost",
        );
        check(
            same(),
            "h",
            false,
            point(4000, "i1", "CN=NTDS Settings,CN=DC2"),
            "another domain controller answers (CN=NTDS Settings,CN=DC2",
        );
        check(
            same(),
            "h",
            false,
            point(4000, "i2", "CN=NTDS Settings,CN=DC1"),
            "invocationId changed (i1 to i2)",
        );
        check(
            same(),
            "h",
            false,
            point(3999, "i1", "CN=NTDS Settings,CN=DC1"),
            "highest committed USN (3999) is below the stored one (4000)",
        );
        check(
            Some(stored_at(Some(dc1.clone()), Some(7200), None)),
            "h",
            false,
            point(4000, "i1", "CN=NTDS Settings,CN=DC1"),
            "older than source.full_read_every (1h)",
        );
        check(
            Some(stored_at(None, fresh, None)),
            "h",
            false,
            point(4000, "i1", "CN=NTDS Settings,CN=DC1"),
            "no USN is stored",
        );
        let json = serde_json::to_value(&dc1).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"kind": "active_directory", "usn": 4000, "invocation_id": "i1",
                "ds_service_name": "CN=NTDS Settings,CN=DC1"})
        );
        assert_eq!(serde_json::from_value::<Token>(json).expect("parses"), dc1);
    }

    #[test]
    fn a_file_missing_from_the_token_is_a_change() {
        let two = token(&[("u.csv", 1, 1, "a"), ("g.csv", 1, 1, "b")]);
        let three = token(&[("u.csv", 1, 1, "a"), ("g.csv", 1, 1, "b"), ("m.csv", 1, 1, "c")]);
        assert!(!two.same_content(&three));
        assert!(two.same_content(&two.clone()));
    }

    #[test]
    fn csv_token_hashes_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("u.csv");
        std::fs::write(&path, "abc").expect("write");
        let f = csv_file(&path).expect("token");
        assert_eq!(f.size, 3);
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
