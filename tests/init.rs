//! `dirsync init` end to end: for every source and every target it offers, the config
//! it writes passes `dirsync check --offline` once the files it names exist; it
//! never overwrites a file.

use std::path::Path;
use std::process::{Command, Output};

fn dirsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(args)
        .env_remove("DIRSYNC_CONFIG")
        .output()
        .expect("run dirsync")
}

fn text(o: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The files `init` says to write, created with content a check accepts.
fn write_named_files(stdout: &str) -> usize {
    let mut n = 0;
    for line in stdout.lines() {
        let Some(path) = line.strip_prefix("  write ") else {
            continue;
        };
        let content = match Path::new(path).file_name().and_then(|f| f.to_str()) {
            Some("users.csv") => "id,username\n1,ann\n",
            Some("groups.csv") => "id,name,members\ng1,team-a,1\n",
            _ => "not-a-real-secret\n",
        };
        std::fs::write(path, content).expect("write a named file");
        n += 1;
    }
    n
}

#[test]
fn every_source_and_target_passes_the_offline_check() {
    for source in ["csv", "openldap", "active-directory"] {
        for target in dirsync::init::target_names() {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("dirsync.toml");
            let secrets = dir.path().join("secrets");
            std::fs::create_dir(&secrets).expect("secrets dir");
            let config_s = config.to_str().expect("utf-8 path");
            let out = dirsync(&[
                "init",
                "--source",
                source,
                "--target",
                target,
                "--out",
                config_s,
                "--secrets-dir",
                secrets.to_str().expect("utf-8 path"),
            ]);
            assert_eq!(out.status.code(), Some(0), "{source} {target}: {}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(write_named_files(&stdout) >= 1, "{source} {target}: {stdout}");
            assert!(stdout.contains("check --offline"), "{stdout}");

            let written = std::fs::read_to_string(&config).expect("config written");
            assert!(written.contains("[daemon]\nschedule = "), "{written}");
            assert!(written.contains("# [safety]"), "{written}");
            assert!(!written.contains("/etc/dirsync"), "{source} {target}: {written}");
            let check = dirsync(&["--config", config_s, "check", "--offline"]);
            assert_eq!(
                check.status.code(),
                Some(0),
                "{source} {target}:\n{written}\n{}",
                text(&check)
            );
        }
    }
}

/// `--credentials`: every secret is a systemd credential named after its file, the
/// printed `LoadCredential=` lines load exactly those, and the config passes the
/// offline check with the secrets directory as the credentials directory.
#[test]
fn with_credentials_every_secret_is_a_credential_the_printed_drop_in_loads() {
    for source in ["csv", "openldap", "active-directory"] {
        for target in dirsync::init::target_names() {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("dirsync.toml");
            let secrets = dir.path().join("secrets");
            std::fs::create_dir(&secrets).expect("secrets dir");
            let (config_s, secrets_s) = (config.to_str().expect("utf-8"), secrets.to_str().expect("utf-8"));
            let out = dirsync(&[
                "init",
                "--source",
                source,
                "--target",
                target,
                "--out",
                config_s,
                "--secrets-dir",
                secrets_s,
                "--credentials",
            ]);
            assert_eq!(out.status.code(), Some(0), "{source} {target}: {}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            write_named_files(&stdout);
            let written = std::fs::read_to_string(&config).expect("config written");
            let named: Vec<&str> = written
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| Some(l.split_once("_credential = \"")?.1.split_once('"')?.0))
                .collect();
            let loaded: Vec<String> = stdout
                .lines()
                .filter_map(|l| l.trim().strip_prefix("LoadCredential="))
                .map(|l| {
                    let (name, file) = l.split_once(':').expect("NAME:FILE");
                    assert_eq!(Path::new(file), secrets.join(name), "{l}");
                    name.to_owned()
                })
                .collect();
            assert!(
                !named.is_empty(),
                "{source} {target}: no credential in\n{written}"
            );
            assert_eq!(named, loaded, "{source} {target}:\n{stdout}");
            assert!(
                !written.lines().any(|l| !l.starts_with('#')
                    && l.contains(&format!("_file = \"{secrets_s}"))
                    && !l.starts_with("ca_file")),
                "{source} {target}: a secret is still a file:\n{written}"
            );
            let check = Command::new(env!("CARGO_BIN_EXE_dirsync"))
                .args(["--config", config_s, "check", "--offline"])
                .env_remove("DIRSYNC_CONFIG")
                .env("CREDENTIALS_DIRECTORY", &secrets)
                .output()
                .expect("run dirsync");
            assert_eq!(
                check.status.code(),
                Some(0),
                "{source} {target}:\n{written}\n{}",
                text(&check)
            );
        }
    }
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dirsync.toml");
    std::fs::write(&config, "# mine\n").expect("write");
    let config_s = config.to_str().expect("utf-8 path");
    // The default path is the --config path.
    let out = dirsync(&[
        "--config", config_s, "init", "--source", "csv", "--target", "http",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: {config_s}: already exists; not overwritten")),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read"), "# mine\n");

    let unknown = dirsync(&["init", "--source", "csv", "--target", "nope", "--out", config_s]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("onlyoffice-group-members"),
        "the presets are offered: {stderr}"
    );
}

/// A relative `--secrets-dir` is taken from where `init` runs, as the printed steps
/// say, not from the config's directory; a directory name with a combining accent
/// goes into the config as valid TOML; one with a quote is refused, naming it.
#[test]
fn secrets_dirs_relative_accented_or_quoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let here = dir.path().join("here");
    let cfg = dir.path().join("cfg");
    for d in [&here, &cfg] {
        std::fs::create_dir(d).expect("dir");
    }
    let accented = "se\u{301}crets";
    for secrets in ["sec", accented] {
        std::fs::create_dir(here.join(secrets)).expect("secrets dir");
        let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .current_dir(&here)
            .args([
                "init",
                "--source",
                "openldap",
                "--target",
                "adminuser-group",
                "--out",
            ])
            .arg(format!("../cfg/{secrets}.toml"))
            .args(["--secrets-dir", secrets])
            .env_remove("DIRSYNC_CONFIG")
            .output()
            .expect("run dirsync");
        assert_eq!(out.status.code(), Some(0), "{secrets}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("  write {}", here.join(secrets).display())),
            "{stdout}"
        );
        assert!(write_named_files(&stdout) >= 1, "{stdout}");
        let config = cfg.join(format!("{secrets}.toml"));
        let check = dirsync(&["--config", config.to_str().expect("utf-8"), "check", "--offline"]);
        assert_eq!(check.status.code(), Some(0), "{secrets}: {}", text(&check));
    }

    let quoted = dir.path().join("my\"secrets");
    let out = dirsync(&[
        "init",
        "--source",
        "openldap",
        "--target",
        "adminuser-group",
        "--out",
        cfg.join("quoted.toml").to_str().expect("utf-8"),
        "--secrets-dir",
        quoted.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("choose a directory whose path has no quote"),
        "{}",
        text(&out)
    );
    assert!(!cfg.join("quoted.toml").exists());
}
