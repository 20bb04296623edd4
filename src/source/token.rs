//! A source's sync token (what identifies the data a read returned) and the choice
//! between a full read and an unchanged one, so a run can skip parsing and mapping
//! a source that did not change.
//!
//! CSV: each file's path, size, mtime and SHA-256. Size and mtime alone are not
//! trusted (a copy can keep both), so an unchanged read still hashes every file; it
//! never parses one. `decide` is pure: the caller gathers the stored state and now.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::csv::{CsvConfig, CsvError};

/// What a read saw, stored so the next run can compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Token {
    Csv { files: Vec<CsvFile> },
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
    /// Whether both describe the same data: every file's path, size and content hash
    /// agree (mtimes may differ: a `touch` changes nothing that is read).
    pub(crate) fn same_content(&self, other: &Token) -> bool {
        let (Token::Csv { files: a }, Token::Csv { files: b }) = (self, other);
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
}

/// How this run reads the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// Parse everything and plan every target.
    Full,
    /// The source is as last read: plan only targets whose last plan was not confirmed.
    Unchanged,
}

impl ReadMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReadMode::Full => "full",
            ReadMode::Unchanged => "unchanged",
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
