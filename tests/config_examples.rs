//! Every commented example in `config/` loads and plans: a dry run of each (no
//! server needed) builds every request its preset or template describes.

use std::path::{Path, PathBuf};

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("config/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        // LDAP examples need a directory server; tests/ldap_read.rs loads them.
        .filter(|p| !std::fs::read_to_string(p).is_ok_and(|t| t.contains("kind = \"ldap\"")))
        .collect();
    out.push(root.join("example").join("dirsync.toml"));
    out.sort();
    out
}

#[test]
fn every_example_plans_without_a_server() {
    let examples = examples();
    assert!(examples.len() >= 5, "{examples:?}");
    for path in examples {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .arg("--config")
            .arg(&path)
            .args(["sync", "--dry-run"])
            .env_remove("DIRSYNC_CONFIG")
            .output()
            .expect("run dirsync");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{stdout}\n{stderr}",
            path.display()
        );
        assert!(stdout.contains("operation(s)"), "{}: {stdout}", path.display());
        assert!(!stdout.contains("skipped"), "{}: {stdout}", path.display());
    }
}
