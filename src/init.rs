//! `dirsync init`: a commented starting config for one source and one target.
//!
//! Pure: the text is cut from the commented examples in `config/` (compiled in), so
//! every key is documented in one place, and the target block of a preset is built
//! from the preset itself (`target::presets`): its auth kind, the values its
//! templates require and the endpoints it has. A preset added to the code is offered
//! here without more work; `tests/init.rs` checks that every combination passes
//! `dirsync check --offline`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::target::presets;

/// The directory sources `init` writes a config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Csv,
    OpenLdap,
    ActiveDirectory,
}

impl Source {
    /// The name `--source` takes.
    pub fn name(self) -> &'static str {
        match self {
            Source::Csv => "csv",
            Source::OpenLdap => "openldap",
            Source::ActiveDirectory => "active-directory",
        }
    }
}

/// `--target` for a REST API described in the config alone.
pub const HTTP: &str = "http";

/// Every name `--target` takes: the built-in presets, then `http`.
pub fn target_names() -> Vec<&'static str> {
    presets::NAMES.iter().copied().chain([HTTP]).collect()
}

/// What `init` writes and what the operator must provide before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Starter {
    /// The config text.
    pub text: String,
    /// Files the config names that `init` does not write: secrets, a CA, CSV files.
    pub files: Vec<PathBuf>,
    /// With `credentials`: each secret as a systemd credential, (name, file), for the
    /// units' `LoadCredential=NAME:FILE`.
    pub credentials: Vec<(String, PathBuf)>,
}

/// Why no config could be written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("--target `{0}`: not a preset nor `http`")]
    UnknownTarget(String),
    #[error("preset `{name}`: {source}")]
    Preset { name: String, source: toml::de::Error },
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    #[error(
        "--secrets-dir `{0}`: choose a directory whose path has no quote, backslash or control \
         character (it goes into the config's strings)"
    )]
    SecretsDir(String),
}

const EXAMPLE_CSV: &str = include_str!("../config/example/dirsync.toml");
const EXAMPLE_OPENLDAP: &str = include_str!("../config/ldap-openldap.toml");
const EXAMPLE_AD: &str = include_str!("../config/ldap-active-directory.toml");
const EXAMPLE_HTTP: &str = include_str!("../config/http-custom.toml");
const TEMPLATE: &str = include_str!("init/dirsync.toml.j2");

/// Where the examples keep secrets; `init` puts them under its own directory.
const EXAMPLE_SECRETS_DIR: &str = "/etc/dirsync/";

/// The name of the one target `init` writes.
const TARGET: &str = "app";

/// The config for `source` and `target`, written to `config` (named in the text),
/// with every secret and file it needs under `dir`. With `credentials`, secrets are
/// named as systemd credentials (`X_credential = "NAME"`) loaded from those files,
/// which the service's dynamic user could not read itself.
pub fn render(
    source: Source,
    target: &str,
    config: &Path,
    dir: &Path,
    credentials: bool,
) -> Result<Starter, InitError> {
    let dir_text = format!("{}/", dir.display().to_string().trim_end_matches('/'));
    if dir_text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(InitError::SecretsDir(
            crate::text::visible(&dir_text).into_owned(),
        ));
    }
    let mut files = Vec::new();
    let source_section = match source {
        Source::Csv => {
            let base = config.parent().unwrap_or(Path::new("."));
            files.push(base.join("users.csv"));
            files.push(base.join("groups.csv"));
            section(EXAMPLE_CSV, "source")
        }
        Source::OpenLdap | Source::ActiveDirectory => {
            let example = if source == Source::OpenLdap {
                EXAMPLE_OPENLDAP
            } else {
                EXAMPLE_AD
            };
            // The system's CAs until the operator names a file: a CA path written here
            // would be one more file to provide before the first check.
            let text = section(example, "source")
                .lines()
                .map(|l| {
                    if l.starts_with("ca_file") {
                        format!("# {l}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            files.extend(named_files(&text, &dir_text));
            text.replace(EXAMPLE_SECRETS_DIR, &dir_text)
        }
    };
    // The example's values are suggestions; commented, the defaults apply (each
    // line says its default) until the operator chooses.
    let safety_section = comment_out(&section(EXAMPLE_CSV, "safety"));
    let daemon_section = section(EXAMPLE_CSV, "daemon").replace(EXAMPLE_SECRETS_DIR, &dir_text);
    let target_section = if target == HTTP {
        let secret = format!("{dir_text}{TARGET}.token");
        files.push(PathBuf::from(&secret));
        section(EXAMPLE_HTTP, "targets")
            .replace("[targets.teams", &format!("[targets.{TARGET}"))
            .replace("\"example/dummy.token\"", &format!("{secret:?}"))
    } else {
        let text = presets::get(target).ok_or_else(|| InitError::UnknownTarget(target.to_owned()))?;
        preset_section(target, text, &dir_text, &mut files)?
    };
    let env = minijinja::Environment::new();
    let text = env.render_str(
        TEMPLATE,
        minijinja::context! {
            source => source.name(),
            target,
            config => config.display().to_string(),
            files => files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            source_section => source_section.trim_end(),
            safety_section => safety_section.trim_end(),
            daemon_section => daemon_section.trim_end(),
            target_section => target_section.trim_end(),
        },
    )?;
    // minijinja drops the template's last newline.
    let text = format!("{}\n", text.trim_end());
    if !credentials {
        return Ok(Starter {
            text,
            files,
            credentials: Vec::new(),
        });
    }
    let (text, credentials) = as_credentials(&text, &dir_text);
    Ok(Starter {
        text,
        files,
        credentials,
    })
}

/// Every secret key `X_file = "<dir>NAME"` of `text` (a key line, not a comment, not
/// a CA file, which is no secret) as `X_credential = "NAME"`, with the credentials
/// it names.
fn as_credentials(text: &str, dir: &str) -> (String, Vec<(String, PathBuf)>) {
    let mut credentials = Vec::new();
    let lines = text.lines().map(|line| {
        let parsed = line.split_once("_file = \"").and_then(|(key, rest)| {
            let (path, tail) = rest.split_once('"')?;
            let name = path.strip_prefix(dir)?;
            let plain_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let tail_ok = tail.is_empty() || tail.starts_with(char::is_whitespace);
            (plain_key && tail_ok && key != "ca" && !name.contains('/')).then_some((key, name, tail))
        });
        match parsed {
            Some((key, name, tail)) => {
                credentials.push((name.to_owned(), PathBuf::from(format!("{dir}{name}"))));
                format!("{key}_credential = {name:?}{tail}")
            }
            None => line.to_owned(),
        }
    });
    let mut out = lines.collect::<Vec<_>>().join("\n");
    out.push('\n');
    (out, credentials)
}

/// The target block of a preset: its own notes, base URL, auth by its kind, the
/// values and secrets its templates read that it does not set, a group mapping when
/// it replaces group members, and the users' target id.
fn preset_section(name: &str, text: &str, dir: &str, files: &mut Vec<PathBuf>) -> Result<String, InitError> {
    let preset: toml::Table = toml::from_str(text).map_err(|source| InitError::Preset {
        name: name.to_owned(),
        source,
    })?;
    let table = |key: &str| preset.get(key).and_then(toml::Value::as_table);
    let mut out = String::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n[targets.{TARGET}]\npreset = \"{name}\"\nbase_url = \"https://CHANGE-ME.example.com\"\n\
         # `dirsync check` only connects (TCP, TLS) unless a health endpoint the API\n\
         # documents is named: probe = {{ method = \"GET\", path = \"/health\" }}.\n"
    ));
    let mut secret = |key: &str, file: &str| {
        let path = format!("{dir}{TARGET}.{file}");
        files.push(PathBuf::from(&path));
        format!("{key}_file = {}\n", toml::Value::String(path))
    };
    let kind = table("auth")
        .and_then(|a| a.get("kind"))
        .and_then(toml::Value::as_str)
        .unwrap_or("none");
    let auth = match kind {
        "bearer" => Some(secret("token", "token")),
        "basic" => Some(format!(
            "username = \"CHANGE-ME\"\n{}",
            secret("password", "password")
        )),
        "header" | "cookie" | "query" => Some(secret("value", "key")),
        _ => None,
    };
    if let Some(auth) = auth {
        out.push_str(&format!(
            "\n# The preset's auth is `{kind}`; another kind (and its keys) may be set here.\n\
             [targets.{TARGET}.auth]\n{auth}"
        ));
    }
    let given: BTreeSet<&str> = table("vars")
        .map(|v| v.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let vars: BTreeSet<&str> = references(text, "vars.")
        .into_iter()
        .filter(|v| !given.contains(v))
        .collect();
    if !vars.is_empty() {
        out.push_str(&format!(
            "\n# Required by the preset (see its notes above).\n[targets.{TARGET}.vars]\n"
        ));
        for v in vars {
            out.push_str(&format!("{v} = \"CHANGE-ME\"\n"));
        }
    }
    let secrets = references(text, "secrets.");
    if !secrets.is_empty() {
        out.push_str(&format!(
            "\n# Secrets the preset's requests carry.\n[targets.{TARGET}.secrets]\n"
        ));
        for s in secrets {
            out.push_str(&secret(s, s));
        }
    }
    let endpoints = table("endpoints");
    if endpoints.is_some_and(|e| e.contains_key("group_members")) {
        out.push_str(&format!(
            "\n# Which source groups go to which target group: one by one with\n\
             # [[targets.{TARGET}.groups.map]] (source, target_id), or many at once by a\n\
             # pattern on the name and a template for the target id (README, \"Mapping\").\n\
             [[targets.{TARGET}.groups.rules]]\n\
             match = \"^CHANGE-ME\"\n\
             target_id = \"{{{{ group.id }}}}\"\n"
        ));
    }
    out.push_str(&format!(
        "\n# Which source attribute holds the target's user id (\"id\": the source's id).\n\
         [targets.{TARGET}.users]\nid_attribute = \"id\"\n"
    ));
    Ok(out)
}

/// The names after `prefix` (`vars.`, `secrets.`) in a preset's text, in order.
fn references<'a>(text: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.insert(&rest[..end]);
        }
    }
    out
}

/// Files under `dir` that an example section names (`"…"` values starting there).
fn named_files(text: &str, dir: &str) -> Vec<PathBuf> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let start = l.find(&format!("\"{EXAMPLE_SECRETS_DIR}"))? + 1;
            let end = start + l[start..].find('"')?;
            Some(PathBuf::from(l[start..end].replacen(EXAMPLE_SECRETS_DIR, dir, 1)))
        })
        .collect()
}

/// The lines of `text` from the comments above the table `[name]` up to the comments
/// above the next table that is not `[name.…]`.
fn section(text: &str, name: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let is_header = |l: &str| l.starts_with('[');
    let ours = |l: &str| {
        let l = l.trim_start_matches('[');
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(']') || rest.starts_with('.'))
    };
    let Some(header) = lines.iter().position(|l| is_header(l) && ours(l)) else {
        return String::new();
    };
    let comments_above = |at: usize| {
        let mut start = at;
        while start > 0 && lines[start - 1].starts_with('#') {
            start -= 1;
        }
        start
    };
    let start = comments_above(header);
    let end = lines[header + 1..]
        .iter()
        .position(|l| is_header(l) && !ours(l))
        .map_or(lines.len(), |i| comments_above(header + 1 + i));
    let mut out = lines[start..end].join("\n");
    out.push('\n');
    out
}

/// Every key line of `text` commented out; comments and blank lines kept.
fn comment_out(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() || l.starts_with('#') {
                l.to_owned()
            } else {
                format!("# {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_runs_from_its_comments_to_the_next_table_s_comments() {
        let text = "# top\nkey = 1\n\n# about a\n[a]\nx = 1\n[a.b]\ny = 2\n\n# about c\n[c]\nz = 3\n";
        assert_eq!(section(text, "a"), "# about a\n[a]\nx = 1\n[a.b]\ny = 2\n\n");
        assert_eq!(section(text, "c"), "# about c\n[c]\nz = 3\n");
        assert_eq!(section(text, "ab"), "");
    }

    #[test]
    fn references_are_the_names_after_the_prefix() {
        let text = "{{ vars.a }} {{vars.b_c}} x.vars.d myvars.e vars. secrets.k";
        assert_eq!(references(text, "vars."), BTreeSet::from(["a", "b_c"]));
        assert_eq!(references(text, "secrets."), BTreeSet::from(["k"]));
    }

    #[test]
    fn every_preset_and_source_renders_with_its_secrets_under_the_directory() {
        let dir = Path::new("/srv/dirsync-secrets");
        for source in [Source::Csv, Source::OpenLdap, Source::ActiveDirectory] {
            for target in target_names() {
                let got = render(source, target, Path::new("/srv/config/dirsync.toml"), dir, false)
                    .unwrap_or_else(|e| panic!("{source:?} {target}: {e}"));
                assert!(!got.text.contains(EXAMPLE_SECRETS_DIR), "{}", got.text);
                assert!(!got.text.contains("example/"), "{}", got.text);
                for f in &got.files {
                    let shown = f.display().to_string();
                    assert!(got.text.contains(&shown), "{shown} named in the text");
                }
            }
        }
    }

    #[test]
    fn credentials_name_every_secret_file_and_nothing_else() {
        let text = "bind_password_file = \"/s/reader.pw\"\n\
                    ca_file = \"/s/ca.pem\"\n\
                    # token_file = \"/s/old.token\"\n\
                    users = \"/s/users.csv\"\n\
                    token_file = \"/elsewhere/app.token\"\n\
                    value_file = \"/s/app.token\"   # a comment\n\
                    integration_key_file = \"/s/app.integration_key\"\n";
        let (out, creds) = as_credentials(text, "/s/");
        assert_eq!(
            out,
            "bind_password_credential = \"reader.pw\"\n\
             ca_file = \"/s/ca.pem\"\n\
             # token_file = \"/s/old.token\"\n\
             users = \"/s/users.csv\"\n\
             token_file = \"/elsewhere/app.token\"\n\
             value_credential = \"app.token\"   # a comment\n\
             integration_key_credential = \"app.integration_key\"\n"
        );
        assert_eq!(
            creds,
            vec![
                ("reader.pw".to_owned(), PathBuf::from("/s/reader.pw")),
                ("app.token".to_owned(), PathBuf::from("/s/app.token")),
                (
                    "app.integration_key".to_owned(),
                    PathBuf::from("/s/app.integration_key")
                ),
            ]
        );
    }

    #[test]
    fn an_unknown_target_is_refused() {
        let err =
            render(Source::Csv, "nope", Path::new("/x.toml"), Path::new("/x"), false).expect_err("unknown");
        assert_eq!(err.to_string(), "--target `nope`: not a preset nor `http`");
    }
}
