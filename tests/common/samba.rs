//! A Samba AD DC from Debian's packages, provisioned into a temporary directory and
//! loaded with tests/fixtures/ad-samba.ldif.
//!
//! Samba's LDAP port cannot be moved off 389, so a DC runs in a private network
//! namespace (loopback only), which needs root, as installing the test packages
//! does. Either a script runs the DC and dirsync together under `unshare -n`, or a
//! test runs itself again under it ([`in_private_network`]): the DC, the mock
//! targets and dirsync then share the namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::slapd::fixture;

pub const ADMIN_PASSWORD: &str = "Dirsync-Test-1";
pub const ADMIN_DN: &str = "Administrator@corp.example.com";
pub const DOMAIN: &str = "DC=corp,DC=example,DC=com";
pub const STAFF: &str = "OU=Staff,DC=corp,DC=example,DC=com";

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Provisions a DC in `dir/dc`, LDAP only, simple binds allowed without TLS, its
/// pid file in `dir` (the default, /run/samba, would keep a second DC from
/// starting while one runs), and loads tests/fixtures/ad-samba.ldif. Returns sAMAccountName → objectGUID as Samba
/// renders it.
pub fn provision(dir: &Path) -> BTreeMap<String, String> {
    let dc = dir.join("dc");
    run(Command::new("samba-tool")
        .args([
            "domain",
            "provision",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
        ])
        .args(["--realm=CORP.EXAMPLE.COM", "--domain=CORP", "--host-name=dc1"])
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg(format!("--targetdir={}", dc.display())));
    let conf = dc.join("etc/smb.conf");
    let text = std::fs::read_to_string(&conf).expect("smb.conf");
    let mut patched = String::new();
    for line in text.lines() {
        let key = line.trim_start().split('=').next().unwrap_or("").trim();
        if [
            "server services",
            "log file",
            "interfaces",
            "bind interfaces only",
            "pid directory",
        ]
        .contains(&key)
        {
            continue;
        }
        patched.push_str(line);
        patched.push('\n');
        if line.trim() == "[global]" {
            patched.push_str(&format!(
                "\tserver services = ldap\n\tldap server require strong auth = no\n\
                 \tinterfaces = lo\n\tbind interfaces only = yes\n\tlog file = {dir}/log.%m\n\
                 \tpid directory = {dir}\n",
                dir = dir.display()
            ));
        }
    }
    std::fs::write(&conf, patched).expect("write smb.conf");

    let sam = dc.join("private/sam.ldb");
    std::fs::write(dir.join("data.ldif"), fixture("ad-samba.ldif")).expect("write ldif");
    run(Command::new("ldbmodify")
        .arg("-H")
        .arg(&sam)
        .arg(dir.join("data.ldif")));
    let listing = run(Command::new("ldbsearch")
        .arg("-H")
        .arg(&sam)
        .args(["-b", STAFF, "(|(objectClass=user)(objectClass=group))"])
        .args(["sAMAccountName", "objectGUID"]));
    let mut guids = BTreeMap::new();
    for record in listing.split("\n\n") {
        let field = |name: &str| {
            record
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        if let (Some(name), Some(guid)) = (field("sAMAccountName"), field("objectGUID")) {
            guids.insert(name, guid);
        }
    }
    assert_eq!(guids.len(), 10, "{listing}");
    std::fs::write(dir.join("admin.pw"), ADMIN_PASSWORD).expect("write password");
    guids
}

/// Set in the copy of a test binary that runs inside its own network namespace.
const INSIDE: &str = "DIRSYNC_TEST_PRIVATE_NETWORK";

/// Whether this process runs in a private network namespace (loopback only, up).
/// When it does not, runs the test named `test` again in a copy of this binary
/// under `unshare -n`, asserts that it passed, and returns false: the caller then
/// returns. Everything the copy starts (the DC, the mocks, dirsync) shares its
/// namespace.
pub fn in_private_network(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .arg("-n")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run unshare");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stderr}");
    assert!(out.status.success(), "{test} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{test} did not run:\n{stdout}");
    false
}

/// A running DC on 127.0.0.1:389 of the calling thread's network namespace; stopped
/// on drop.
pub struct Dc {
    child: Child,
    pub dir: PathBuf,
    /// sAMAccountName → objectGUID of the fixture's objects.
    pub guids: BTreeMap<String, String>,
}

impl Dc {
    /// Provisions a DC into `dir` and starts it; waits (up to 2 minutes: a loaded
    /// machine starts it slowly) until it answers on its LDAP port.
    pub fn start(dir: &Path) -> Dc {
        let guids = provision(dir);
        Dc::spawn(dir, guids)
    }

    fn spawn(dir: &Path, guids: BTreeMap<String, String>) -> Dc {
        let log = std::fs::File::create(dir.join("samba.out")).expect("samba log");
        let child = Command::new("samba")
            .args(["-i", "-M", "single", "-s"])
            .arg(dir.join("dc/etc/smb.conf"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start samba");
        let mut dc = Dc {
            child,
            dir: dir.to_owned(),
            guids,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect("127.0.0.1:389").is_err() {
            let log = || std::fs::read_to_string(dir.join("samba.out")).unwrap_or_default();
            if let Ok(Some(status)) = dc.child.try_wait() {
                panic!("the DC ended ({status}) before it answered:\n{}", log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the DC does not answer on port 389:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dc
    }

    /// Stops the DC; [`Dc::restart`] starts it again on the same database.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        let (dir, guids) = (self.dir.clone(), std::mem::take(&mut self.guids));
        *self = Dc::spawn(&dir, guids);
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.join("admin.pw")
    }
}

impl Drop for Dc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection bound as the domain's Administrator, for tests that change the
/// directory.
pub async fn admin() -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new("ldap://127.0.0.1")
        .await
        .expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind(ADMIN_DN, ADMIN_PASSWORD)
        .await
        .and_then(|r| r.success())
        .expect("bind as Administrator");
    ldap
}
