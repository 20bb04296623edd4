//! A private OpenLDAP server per test: `slapd` as a child process on a free
//! 127.0.0.1 port, its config and mdb database in a temporary directory, data loaded
//! with `slapadd` before it starts (fast: no overlays, no network), killed on drop.
//!
//! The bind identity tests use, `cn=reader`, has the server's size limit (500 unless
//! a test says otherwise), so only paged searches can read more than that. With
//! `tls`, a CA and a server certificate for 127.0.0.1/localhost are made with the
//! `openssl` CLI, and slapd also listens for LDAPS on a second port.
//!
//! [`Proxy`] sits between a client and slapd and stops passing the server's bytes
//! after a given amount, so a test can kill slapd in the middle of a read
//! deterministically.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

pub const BASE: &str = "dc=example,dc=com";
pub const READER_DN: &str = "cn=reader,dc=example,dc=com";
pub const READER_PASSWORD: &str = "reader-secret";
/// The member value `refint` leaves in a group whose last member it removes.
pub const NOBODY: &str = "cn=nobody,dc=example,dc=com";

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The size limit of `cn=reader` (and everyone else).
    pub size_limit: u32,
    /// Whether `cn=reader` may page past the size limit (`size.prtotal=unlimited`)
    /// or may not page at all (`size.prtotal=disabled`).
    pub paging: bool,
    /// Listen for LDAPS too, and offer StartTLS, with a CA made for this server.
    pub tls: bool,
    /// Content synchronisation (RFC 4533): the `syncprov` overlay with a session log.
    /// A sync refresh is not paged: with it, `size_limit` applies to a refresh whole.
    pub syncprov: bool,
    /// Referential integrity (the `refint` overlay on `member` and `uniqueMember`):
    /// renaming or deleting an entry rewrites the member values naming it, without
    /// changing the groups' entryCSN; a group it leaves without members names
    /// [`NOBODY`].
    pub refint: bool,
    /// The `memberof` overlay: a group's `member` values kept as `memberOf` on the
    /// entries they name, written without changing their entryCSN. Entries loaded
    /// before the server starts get none.
    pub memberof: bool,
    /// Everyone but the root DN reads only the root DSE, `ou=people` and `ou=groups`.
    pub confined: bool,
    /// With `confined`: the suffix entry is disclosed (a search of it is refused
    /// with insufficientAccess rather than answered noSuchObject).
    pub disclose_suffix: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size_limit: 500,
            paging: true,
            tls: false,
            syncprov: false,
            refint: false,
            memberof: false,
            confined: false,
            disclose_suffix: false,
        }
    }
}

/// A running slapd. Killed (SIGKILL) and its directory removed on drop.
pub struct Slapd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ldaps_port: Option<u16>,
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA (`NAME-ca.pem`) and, when `server` is set, a certificate it signs for
/// 127.0.0.1 and localhost (`server.pem`, `server.key`), in `dir`.
pub fn make_ca(dir: &Path, name: &str, server: bool) -> PathBuf {
    let p = |f: &str| dir.join(f);
    let ca = p(&format!("{name}-ca.pem"));
    let ca_key = p(&format!("{name}-ca.key"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", &format!("/CN=dirsync test {name} CA")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    if server {
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "1"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.pem")));
    }
    ca
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until every port answers; false if slapd exited first.
fn wait_ready(child: &mut Child, ports: &[u16]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    for &port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    true
}

/// Starts slapd from the config in `d` on `port` (and `ldaps_port`); `None` when it
/// does not come up (a port taken meanwhile).
fn launch(d: &Path, port: u16, ldaps_port: Option<u16>) -> Option<Child> {
    let mut urls = format!("ldap://127.0.0.1:{port}/");
    if let Some(p) = ldaps_port {
        urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
    }
    let log = std::fs::File::create(d.join("slapd.log")).expect("slapd.log");
    // `-d 0` keeps slapd in the foreground, our child, logging nothing.
    let mut child = Command::new("slapd")
        .arg("-f")
        .arg(d.join("slapd.conf"))
        .args(["-h", &urls, "-d", "0"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn slapd (scripts/install-test-deps installs it)");
    let ports: Vec<u16> = std::iter::once(port).chain(ldaps_port).collect();
    if wait_ready(&mut child, &ports) {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Slapd {
    /// Starts a server holding `tests/fixtures/ldap-base.ldif` plus `ldif`.
    pub fn start(ldif: &str, opts: Options) -> Slapd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        let tls = if opts.tls {
            make_ca(d, "server", true);
            format!(
                "TLSCACertificateFile {0}/server-ca.pem\nTLSCertificateFile {0}/server.pem\n\
                 TLSCertificateKeyFile {0}/server.key\n",
                d.display()
            )
        } else {
            String::new()
        };
        let limit = opts.size_limit.to_string();
        let (syncprov_module, syncprov) = if opts.syncprov {
            (
                "moduleload syncprov\n",
                "index entryCSN,entryUUID eq\noverlay syncprov\nsyncprov-checkpoint 100 10\n\
                 syncprov-sessionlog 10000\n",
            )
        } else {
            ("", "")
        };
        let (refint_module, refint) = if opts.refint {
            (
                "moduleload refint\n",
                "overlay refint\nrefint_attributes member uniqueMember\nrefint_nothing \"cn=nobody,dc=example,dc=com\"\n",
            )
        } else {
            ("", "")
        };
        let (memberof_module, memberof) = if opts.memberof {
            (
                "moduleload memberof\n",
                "overlay memberof\nmemberof-group-oc groupOfNames\nmemberof-member-ad member\n\
                 memberof-memberof-ad memberOf\nmemberof-refint TRUE\n",
            )
        } else {
            ("", "")
        };
        let prtotal = if opts.paging { "unlimited" } else { "disabled" };
        let suffix = if opts.disclose_suffix { "disclose" } else { "none" };
        let access = if opts.confined {
            format!(
                "access to dn.base=\"\" by * read\n\
                 access to dn.base=\"{BASE}\" by * {suffix}\n\
                 access to dn.subtree=\"ou=people,{BASE}\" by * read\n\
                 access to dn.subtree=\"ou=groups,{BASE}\" by * read\n\
                 access to * by * none\n"
            )
        } else {
            "access to * by * read\n".to_owned()
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             pidfile {dir}/slapd.pid\n\
             argsfile {dir}/slapd.args\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             {syncprov_module}\
             {refint_module}\
             {memberof_module}\
             {tls}\
             sizelimit {limit}\n\
             database mdb\n\
             maxsize 268435456\n\
             suffix \"{BASE}\"\n\
             rootdn \"cn=admin,{BASE}\"\n\
             rootpw admin-secret\n\
             directory {dir}/db\n\
             limits dn.exact=\"{READER_DN}\" size.soft={limit} size.hard={limit} size.prtotal={prtotal}\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             {access}\
             {memberof}\
             {syncprov}\
             {refint}",
            dir = d.display(),
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("write slapd.conf");
        std::fs::write(
            d.join("data.ldif"),
            format!("{}\n{ldif}", fixture("ldap-base.ldif")),
        )
        .expect("write data.ldif");
        // `-w`: the overlay's context CSN, so that the first refresh hands out a cookie.
        let slapadd_flags: &[&str] = if opts.syncprov {
            &["-q", "-w", "-f"]
        } else {
            &["-q", "-f"]
        };
        run(Command::new("slapadd")
            .args(slapadd_flags)
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif")));

        // A port that was free a moment ago can be taken by a parallel test: retry.
        for _ in 0..5 {
            let port = free_port();
            let ldaps_port = opts.tls.then(free_port);
            if let Some(child) = launch(d, port, ldaps_port) {
                return Slapd {
                    child: Some(child),
                    dir,
                    port,
                    ldaps_port,
                };
            }
        }
        panic!(
            "slapd did not start: {}",
            std::fs::read_to_string(d.join("slapd.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port.expect("started with tls"))
    }

    /// A file holding `cn=reader`'s password, for `bind_password_file`.
    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("reader.pw");
        std::fs::write(&path, format!("{READER_PASSWORD}\n")).expect("write password file");
        path
    }

    /// The CA that signed the server's certificate (with `tls`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server-ca.pem")
    }

    /// Kills the server and starts it again on the same ports and database.
    pub fn restart(&mut self) {
        self.kill();
        let child = launch(self.dir.path(), self.port, self.ldaps_port).unwrap_or_else(|| {
            panic!(
                "slapd did not start again: {}",
                std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
            )
        });
        self.child = Some(child);
    }

    /// SIGTERM, and wait until it is gone: slapd writes its state on the way out.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until no group under `ou=groups` names `old` in `member` or
/// `uniqueMember`: refint rewrites them in the background, after the answer to the
/// rename or delete.
pub async fn refint_settled(ldap: &mut ldap3::Ldap, old: &str) {
    let old = ldap3::ldap_escape(old);
    let filter = format!("(|(member={old})(uniqueMember={old}))");
    let started = Instant::now();
    loop {
        let (naming, _) = ldap
            .search(
                &format!("ou=groups,{BASE}"),
                ldap3::Scope::OneLevel,
                &filter,
                vec!["1.1"],
            )
            .await
            .and_then(|r| r.success())
            .expect("groups naming the old DN");
        if naming.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refint did not rewrite {old}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A connection bound as the directory's administrator (`cn=admin`), for tests that
/// change the directory while dirsync reads it.
pub async fn admin(server: &Slapd) -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&server.url()).await.expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind(&format!("cn=admin,{BASE}"), "admin-secret")
        .await
        .and_then(|r| r.success())
        .expect("bind as admin");
    ldap
}

/// `n` people `user1…userN` with ids `uuid(1…N)`, as LDIF.
pub fn people_ldif(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 240);
    for i in 1..=n {
        s.push_str(&format!(
            "dn: uid=user{i},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: user{i}\n\
             cn: User {i}\nsn: {i}\nmail: user{i}@example.com\nentryUUID: {}\n\n",
            super::uuid(i)
        ));
    }
    s
}

/// A TCP proxy to `upstream` that passes the client's bytes freely but stops
/// passing the server's after `limit` bytes on each connection; once
/// [`Proxy::paused`] has returned (a connection stopped), a test can act (kill the
/// server), then [`Proxy::release`] closes the client's connections as the server's
/// death would have.
pub struct Proxy {
    pub port: u16,
    paused: watch::Receiver<bool>,
    release: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: u16, limit: usize) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let paused_tx = std::sync::Arc::new(watch::channel(false).0);
        let paused = paused_tx.subscribe();
        let (release, released) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (paused_tx, mut released) = (paused_tx.clone(), released.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                    });
                    let mut passed = 0;
                    let mut buf = vec![0u8; 16 * 1024];
                    while passed < limit {
                        let n = match server_rx.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let take = n.min(limit - passed);
                        if client_tx.write_all(&buf[..take]).await.is_err() {
                            break;
                        }
                        passed += take;
                    }
                    if passed >= limit {
                        let _ = paused_tx.send(true);
                    }
                    let _ = released.wait_for(|r| *r).await;
                    up.abort();
                    // Dropping both halves closes the client's connection.
                });
            }
        });
        Proxy {
            port,
            paused,
            release,
        }
    }

    /// Returns once the proxy stopped passing the server's bytes.
    pub async fn paused(&mut self) {
        let _ = self.paused.wait_for(|p| *p).await;
    }

    /// Closes the client's connections.
    pub fn release(&mut self) {
        let _ = self.release.send(true);
    }
}
