//! Secrets: where they come from, and a type that never prints them.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print `***`, so a secret that ends up in a
/// log line, an error or an audit row by mistake shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[cfg(test)]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it: the request on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the config says a secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config file itself (allowed, warned about).
    Inline(String),
    /// A file; surrounding whitespace and the trailing newline are trimmed.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/NAME` (`LoadCredential=`).
    Credential(String),
}

impl SecretSource {
    /// Picks the one source given among `KEY`, `KEY_file`, `KEY_env`, `KEY_credential`.
    /// `Ok(None)` when none is given; an error message when more than one is.
    pub fn one_of(
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
        env: Option<String>,
        credential: Option<String>,
    ) -> Result<Option<SecretSource>, String> {
        let given = [
            inline.is_some(),
            file.is_some(),
            env.is_some(),
            credential.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            return Err(format!(
                "give only one of `{key}`, `{key}_file`, `{key}_env`, `{key}_credential`"
            ));
        }
        Ok(inline
            .map(SecretSource::Inline)
            .or(file.map(SecretSource::File))
            .or(env.map(SecretSource::Env))
            .or(credential.map(SecretSource::Credential)))
    }

    /// Reads the secret. `base` resolves relative file paths (the config's directory).
    /// Errors name where the secret was looked for, never what it is.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Inline(v) => v.clone(),
            SecretSource::File(path) => {
                let path = base.join(path);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
            }
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?
            }
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "credential `{name}` needs $CREDENTIALS_DIRECTORY \
                         (set by systemd's LoadCredential=)"
                    )
                })?;
                let path = Path::new(&dir).join(name);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read credential {}: {e}", path.display()))?
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Secret(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }

    #[test]
    fn only_one_source() {
        let err = SecretSource::one_of("token", Some("a".into()), None, Some("B".into()), None)
            .expect_err("two sources");
        assert!(err.contains("`token_env`"), "{err}");
        assert_eq!(SecretSource::one_of("token", None, None, None, None), Ok(None));
    }

    #[test]
    fn file_is_trimmed_and_relative_to_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "abc\n").expect("write");
        let s = SecretSource::File("tok".into())
            .resolve(dir.path())
            .expect("reads");
        assert_eq!(s.expose(), "abc");
        let err = SecretSource::File("nope".into())
            .resolve(dir.path())
            .expect_err("missing");
        assert!(err.contains("cannot read secret file"), "{err}");
    }
}
