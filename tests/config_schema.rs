//! The config's JSON Schema (config/dirsync.schema.json): it is what `dirsync schema`
//! prints, every example in `config/` and every config `dirsync init` writes
//! validates against it, and it reports a misspelled key or a wrong type, as the
//! config loader does.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn printed_schema() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .arg("schema")
        .env_remove("DIRSYNC_CONFIG")
        .output()
        .expect("run dirsync schema");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8 schema")
}

fn validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(root().join("config/dirsync.schema.json")).expect("the committed schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// TOML text as the JSON value a TOML language server checks against the schema.
fn as_json(toml_text: &str, what: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{what}: {e}"));
    serde_json::to_value(value).expect("TOML as JSON")
}

/// Every error the validator reports, one a line with where it is.
fn errors(v: &jsonschema::Validator, instance: &serde_json::Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_what_the_binary_prints() {
    let committed = std::fs::read_to_string(root().join("config/dirsync.schema.json")).unwrap_or_default();
    assert!(
        committed == printed_schema(),
        "config/dirsync.schema.json is not current: regenerate it with \
         `cargo run -- schema > config/dirsync.schema.json`"
    );
}

#[test]
fn every_example_config_validates() {
    let v = validator();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("config"))
        .expect("config/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    examples.push(root().join("config/example/dirsync.toml"));
    // The config the Debian package installs as /etc/dirsync/dirsync.toml.
    examples.push(root().join("packaging/deb/dirsync.toml"));
    assert!(examples.len() >= 8, "{examples:?}");
    for path in examples {
        let text = std::fs::read_to_string(&path).expect("read an example");
        let instance = as_json(&text, &path.display().to_string());
        let found = errors(&v, &instance);
        assert!(found.is_empty(), "{}:\n{}", path.display(), found.join("\n"));
    }
}

#[test]
fn every_config_init_writes_validates() {
    let v = validator();
    for source in ["csv", "openldap", "active-directory"] {
        for target in dirsync::init::target_names() {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("dirsync.toml");
            let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
                .args(["init", "--source", source, "--target", target, "--out"])
                .arg(&config)
                .arg("--secrets-dir")
                .arg(dir.path())
                .env_remove("DIRSYNC_CONFIG")
                .output()
                .expect("run dirsync init");
            assert_eq!(out.status.code(), Some(0), "{source} {target}: {out:?}");
            let text = std::fs::read_to_string(&config).expect("config written");
            let found = errors(&v, &as_json(&text, &format!("{source} {target}")));
            assert!(
                found.is_empty(),
                "{source} {target}:\n{text}\n{}",
                found.join("\n")
            );
        }
    }
}

#[test]
fn misspelled_keys_and_wrong_types_are_reported() {
    let v = validator();
    let base = r#"
        state_db = "state.db"
        [source]
        kind = "csv"
        users = "users.csv"
        groups = "groups.csv"
        [targets.office]
        preset = "onlyoffice-group-members"
        base_url = "https://office.example.com"
        auth = { value_file = "office.key" }
        [[targets.office.groups.map]]
        source = "engineering"
        target_id = "g-1"
    "#;
    assert_eq!(errors(&v, &as_json(base, "base")), Vec::<String>::new());
    // (what is changed, the text that replaces it, where the validator must point)
    let cases = [
        ("state_db", "stat_db", ""),
        (
            "[source]\n",
            "[source]\nuser_columns = { login = \"x\" }\n",
            "/source",
        ),
        ("users = \"users.csv\"", "userz = \"users.csv\"", "/source"),
        ("kind = \"csv\"", "kind = \"cvs\"", "/source"),
        (
            "base_url = \"https://office.example.com\"",
            "base_url = 8080",
            "/targets/office/base_url",
        ),
        (
            "auth = { value_file",
            "auth = { valu_file",
            "/targets/office/auth",
        ),
        (
            "target_id = \"g-1\"",
            "target_id = \"g-1\"\ntarget = \"x\"",
            "/targets/office/groups/map/0",
        ),
        (
            "[targets.office]\n",
            "[targets.office]\nconcurrency = \"four\"\n",
            "/targets/office/concurrency",
        ),
        (
            "state_db = \"state.db\"",
            "state_db = \"state.db\"\n[daemon]\nwatch = \"yes\"",
            "/daemon/watch",
        ),
    ];
    let ldap = "[source]\nkind = \"ldap\"\npreset = \"openldap\"\nurl = \"ldap://127.0.0.1\"\n";
    assert_eq!(errors(&v, &as_json(ldap, "ldap")), Vec::<String>::new());
    for (text, path) in [
        (format!("{ldap}bind_dnn = \"cn=x\""), "/source"),
        (format!("{ldap}[source.users]\nfilter = [\"(uid=*)\"]"), "/source"),
    ] {
        let found = errors(&v, &as_json(&text, &text));
        assert!(
            found.iter().any(|e| e.split(": ").next() == Some(path)),
            "`{text}` is not reported at `{path}`: {found:?}"
        );
    }
    for (from, to, path) in cases {
        assert!(base.contains(from), "{from}");
        let text = base.replacen(from, to, 1);
        let found = errors(&v, &as_json(&text, to));
        assert!(
            found.iter().any(|e| e.split(": ").next() == Some(path)),
            "`{to}` is not reported at `{path}`: {found:?}"
        );
    }
}
