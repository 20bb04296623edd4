//! The connection: TCP, TLS (ldaps:// or StartTLS, rustls), the simple bind, and
//! paged searches (RFC 2696) that hand each entry to the caller as it arrives.
//!
//! The socket is read in the caller's own task: answers are framed and decoded
//! ([`proto`]) straight from the read buffer, with no task, channel or copy between
//! the socket and the entry. One request is in flight at a time, but for paged
//! searches: as soon as the result that ends a page is in the buffer, the next page
//! is asked for, so the server works on it while the entries before that result are
//! still being mapped.
//!
//! Every way a read can end early is an error here: a lost connection, a timeout,
//! a size or time limit, a referral, a server that refuses paging. A search either
//! delivered every entry or it failed; there is no third outcome.

use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::LdapError;
use super::config::{Bind, LdapConfig, Scope, Search, TlsVerify};
use super::entry::Entry;
use super::proto::{self, Control, Frame, LdapResult, Message, Op, SearchScope};

/// How much is read from the socket at a time, at least.
const READ_CHUNK: usize = 256 << 10;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Messages over a byte stream: requests written whole, answers framed from a
/// buffer that is refilled as they are consumed.
struct Wire<S> {
    io: S,
    buf: Vec<u8>,
    /// Where the next unread message starts in `buf`.
    start: usize,
    /// How far [`Wire::buffered_done`] has looked through whole messages in `buf`.
    scanned: usize,
    /// Socket reads so far: new bytes to look through since the last look.
    reads: u64,
    /// The last search result entry, its buffers reused for the next.
    entry: Entry,
}

/// Why no answer came.
#[derive(Debug)]
enum WireError {
    Closed,
    Io(io::Error),
    Malformed(proto::Malformed),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Closed => f.write_str("the server closed it"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Malformed(m) => write!(f, "the server sent {m}"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(io: S) -> Self {
        Wire {
            io,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            reads: 0,
            entry: Entry::default(),
        }
    }

    async fn send(&mut self, request: &[u8]) -> Result<(), WireError> {
        self.io.write_all(request).await.map_err(WireError::Io)?;
        self.io.flush().await.map_err(WireError::Io)
    }

    /// The next answer, read as far as it needs; an entry is left in `self.entry`.
    async fn receive(&mut self) -> Result<Message, WireError> {
        loop {
            let total = match proto::frame(&self.buf[self.start..]).map_err(WireError::Malformed)? {
                Frame::Whole(n) => {
                    let message = &self.buf[self.start..self.start + n];
                    self.start += n;
                    return proto::decode(message, &mut self.entry).map_err(WireError::Malformed);
                }
                Frame::Partial(total) => total.unwrap_or(0),
            };
            // Keep only the unread part, then make room for the rest of the message
            // and at least one more chunk.
            self.buf.drain(..self.start);
            self.scanned = self.scanned.saturating_sub(self.start);
            self.start = 0;
            let want = total.max(self.buf.len() + READ_CHUNK);
            self.buf.reserve(want - self.buf.len());
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(WireError::Closed),
                Ok(_) => self.reads += 1,
                Err(e) => return Err(WireError::Io(e)),
            }
        }
    }

    /// The result that ends search `id`, if it is already in the buffer, whole;
    /// nothing is consumed. Each message is looked at once, for its ID and
    /// operation only; one that does not frame is left for [`Wire::receive`] to
    /// report.
    fn buffered_done(&mut self, id: i32) -> Option<LdapResult> {
        let mut at = self.scanned.max(self.start);
        while let Ok(Frame::Whole(n)) = proto::frame(&self.buf[at..]) {
            let message = &self.buf[at..at + n];
            at += n;
            if let Some(res) = proto::search_done(message, id) {
                self.scanned = at;
                return Some(res);
            }
        }
        self.scanned = at;
        None
    }
}

/// An open, bound connection.
pub struct Conn {
    wire: Wire<Box<dyn Stream>>,
    /// The last search read failed because the server dropped the connection or
    /// answered that it would not finish it now (time limit, busy, unavailable).
    gave_up: bool,
    last_id: i32,
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("url", &self.url).finish()
    }
}

/// What one search read.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchStats {
    pub entries: usize,
    pub pages: usize,
}

/// A search whose first page has been asked for, to be read with [`Conn::read_search`]
/// on the connection that sent it.
#[derive(Debug)]
#[must_use]
pub struct SentSearch<'a> {
    id: i32,
    search: &'a Search,
    attrs: &'a [String],
    mode: SearchMode,
}

fn search_error(url: &str, search: &Search, message: String) -> LdapError {
    LdapError::Search {
        url: url.to_owned(),
        base: search.base_dn.clone(),
        filter: search.filter.clone(),
        message,
    }
}

/// The request for one page of `search`, as message `id`.
fn page_request(
    search: &Search,
    attrs: &[String],
    mode: SearchMode,
    id: i32,
    cookie: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let scope = match search.scope {
        Scope::Base => SearchScope::Base,
        Scope::One => SearchScope::OneLevel,
        Scope::Sub => SearchScope::Subtree,
    };
    let mut controls = Vec::new();
    if mode.page_size > 0 {
        controls.push(Control::paged(mode.page_size, cookie));
    }
    if mode.domain_scope {
        controls.push(Control::domain_scope());
    }
    proto::search_request(id, &search.base_dn, scope, &search.filter, attrs, &controls)
        .map_err(|_| "the filter is not valid".to_owned())
}

/// How a search is run: paging and controls.
#[derive(Debug, Clone, Copy)]
pub struct SearchMode {
    /// Entries per page; 0 sends no paged results control.
    pub page_size: u32,
    pub domain_scope: bool,
}

impl Conn {
    /// Connects, with TLS and StartTLS as configured, within `connect_timeout`.
    pub async fn open(c: &LdapConfig) -> Result<Conn, LdapError> {
        let connect = |message: String| LdapError::Connect {
            url: c.url.clone(),
            message,
        };
        let tls_error = |message: String| LdapError::Tls {
            url: c.url.clone(),
            message,
        };
        let url = reqwest::Url::parse(&c.url).map_err(|e| connect(format!("not a valid URL: {e}")))?;
        let ldaps = url.scheme() == "ldaps";
        let host = url
            .host()
            .ok_or_else(|| connect("the URL names no host".to_owned()))?;
        let port = url.port().unwrap_or(if ldaps { 636 } else { 389 });
        let server_name = match &host {
            url::Host::Domain(d) => ServerName::try_from(d.to_string())
                .map_err(|e| tls_error(format!("the host is not a valid TLS server name: {e}"))),
            url::Host::Ipv4(ip) => Ok(ServerName::IpAddress((*ip).into())),
            url::Host::Ipv6(ip) => Ok(ServerName::IpAddress((*ip).into())),
        };
        let opened = timeout(c.connect_timeout, async {
            let tcp = match &host {
                url::Host::Domain(d) => TcpStream::connect((*d, port)).await,
                url::Host::Ipv4(ip) => TcpStream::connect((*ip, port)).await,
                url::Host::Ipv6(ip) => TcpStream::connect((*ip, port)).await,
            }
            .map_err(|e| connect(e.to_string()))?;
            // Requests are written whole; nothing gains from Nagle's delay.
            let _ = tcp.set_nodelay(true);
            if !ldaps && !c.starttls {
                return Ok(Box::new(tcp) as Box<dyn Stream>);
            }
            let mut wire = Wire::new(tcp);
            if c.starttls {
                start_tls(&mut wire).await.map_err(|m| match m {
                    StartTls::Refused(m) => tls_error(m),
                    StartTls::Wire(WireError::Closed) => {
                        tls_error("the server closed the connection during StartTLS".to_owned())
                    }
                    StartTls::Wire(WireError::Malformed(m)) => {
                        tls_error(format!("the server sent {m} in answer to StartTLS"))
                    }
                    StartTls::Wire(WireError::Io(e)) => connect(e.to_string()),
                })?;
            }
            let config = client_config(&c.tls).map_err(tls_error)?;
            let name = server_name?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, wire.io)
                .await
                .map_err(|e| handshake_error(c, e))?;
            Ok(Box::new(tls) as Box<dyn Stream>)
        })
        .await
        .unwrap_or_else(|_| {
            Err(connect(format!(
                "no connection within {} (`connect_timeout`)",
                humantime::format_duration(c.connect_timeout)
            )))
        })?;
        Ok(Conn {
            wire: Wire::new(opened),
            gave_up: false,
            last_id: 0,
            url: c.url.clone(),
            timeout: c.timeout,
        })
    }

    fn next_id(&mut self) -> i32 {
        self.last_id = if self.last_id == i32::MAX {
            1
        } else {
            self.last_id + 1
        };
        self.last_id
    }

    /// Sends a request within `timeout`; [`Conn::answer`] waits for what comes back.
    async fn call(&mut self, request: &[u8]) -> Result<(), Failure> {
        match timeout(self.timeout, self.wire.send(request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Wire(e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The next answer to request `id` within `timeout`; a notice of disconnection
    /// or an answer to another request is a failure.
    async fn answer(&mut self, id: i32) -> Result<Op, Failure> {
        let msg = match timeout(self.timeout, self.wire.receive()).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => return Err(Failure::Wire(e)),
            Err(_) => return Err(Failure::Timeout),
        };
        match msg {
            Message { id: got, op } if got == id => Ok(op),
            Message {
                id: 0,
                op: Op::Extended(res),
            } => Err(Failure::Notice(describe(&res))),
            Message { id: got, .. } => Err(Failure::Foreign(got)),
        }
    }

    /// Words a failure, with how far a search got.
    fn failure(&self, f: Failure, entries: Option<usize>) -> String {
        let after = entries.map(|n| format!(" after {n} entries")).unwrap_or_default();
        match f {
            Failure::Timeout => format!(
                "no answer within {} (`timeout`){after}",
                humantime::format_duration(self.timeout)
            ),
            Failure::Wire(WireError::Malformed(m)) => format!("the server sent {m}{after}"),
            Failure::Wire(e) => format!("the connection was lost{after}: {e}"),
            Failure::Notice(text) => {
                format!("the connection was lost{after}: the server ended the session: {text}")
            }
            Failure::Foreign(got) => {
                format!("the server answered message {got}, which dirsync did not send{after}")
            }
        }
    }

    /// Binds as configured; anonymous is an empty DN and password.
    pub async fn bind(&mut self, bind: &Bind) -> Result<(), LdapError> {
        let (dn, password) = match bind {
            Bind::Anonymous => ("", ""),
            Bind::Simple { dn, password } => (dn.as_str(), password.expose()),
        };
        let shown = if dn.is_empty() { "(anonymous)" } else { dn };
        let url = self.url.clone();
        let fail = |message: String| LdapError::Bind {
            url: url.clone(),
            dn: shown.to_owned(),
            message,
        };
        let id = self.next_id();
        let answer = match self.call(&proto::bind_request(id, dn, password)).await {
            Ok(()) => self.answer(id).await,
            Err(f) => Err(f),
        };
        let res = match answer {
            Ok(Op::Bind(res)) => res,
            Ok(other) => {
                return Err(fail(format!(
                    "the server answered the bind with {}",
                    other.describe()
                )));
            }
            Err(f) => return Err(fail(self.failure(f, None))),
        };
        match res.rc {
            0 => Ok(()),
            49 => Err(fail(format!(
                "{}: check `bind_dn` and the password",
                describe(&res)
            ))),
            8 | 13 => Err(fail(format!(
                "{}: the server wants TLS first: use ldaps:// or `starttls = true`",
                describe(&res)
            ))),
            _ => Err(fail(describe(&res))),
        }
    }

    /// Runs one search to the end, paged when `mode.page_size > 0`, calling `each`
    /// for every entry as it arrives. An error from `each` stops the search.
    pub async fn search(
        &mut self,
        search: &Search,
        attrs: &[String],
        mode: SearchMode,
        each: impl FnMut(&Entry) -> Result<(), LdapError>,
    ) -> Result<SearchStats, LdapError> {
        let sent = self.send_search(search, attrs, mode).await?;
        self.read_search(sent, each).await
    }

    /// Asks for the first page of a search, so that the server can work on it while
    /// the caller reads something else; [`Conn::read_search`] reads it to the end.
    pub async fn send_search<'a>(
        &mut self,
        search: &'a Search,
        attrs: &'a [String],
        mode: SearchMode,
    ) -> Result<SentSearch<'a>, LdapError> {
        let id = self.next_id();
        let request = page_request(search, attrs, mode, id, Vec::new())
            .map_err(|m| search_error(&self.url, search, m))?;
        if let Err(f) = self.call(&request).await {
            return Err(search_error(&self.url, search, self.failure(f, Some(0))));
        }
        Ok(SentSearch {
            id,
            search,
            attrs,
            mode,
        })
    }

    /// Reads the search [`Conn::send_search`] asked for on this connection to the
    /// end. After an error, [`Conn::server_gave_up`] says whether asking again may
    /// succeed.
    pub async fn read_search(
        &mut self,
        sent: SentSearch<'_>,
        mut each: impl FnMut(&Entry) -> Result<(), LdapError>,
    ) -> Result<SearchStats, LdapError> {
        let SentSearch {
            mut id,
            search,
            attrs,
            mode,
        } = sent;
        let url = self.url.clone();
        let fail = |message: String| search_error(&url, search, message);
        let mut stats = SearchStats::default();
        let mut last_cookie: Vec<u8> = Vec::new();
        let request = |id: i32, cookie: Vec<u8>| page_request(search, attrs, mode, id, cookie).map_err(fail);
        self.gave_up = false;
        loop {
            let entries_before = stats.entries;
            // The next page's message ID, once asked for ahead.
            let mut ahead: Option<i32> = None;
            // Looked through once now: the page's end may have come with the last read.
            let mut looked_at = self.wire.reads.wrapping_sub(1);
            let res = loop {
                if mode.page_size > 0 && ahead.is_none() && self.wire.reads != looked_at {
                    looked_at = self.wire.reads;
                    if let Some(next) = self
                        .wire
                        .buffered_done(id)
                        .and_then(|res| next_cookie(&res, &last_cookie))
                    {
                        let next_id = self.next_id();
                        if let Err(f) = self.call(&request(next_id, next)?).await {
                            return Err(fail(self.search_failure(f, stats.entries)));
                        }
                        ahead = Some(next_id);
                    }
                }
                match self.answer(id).await {
                    Ok(Op::Entry) => {
                        each(&self.wire.entry)?;
                        stats.entries += 1;
                    }
                    Ok(Op::SearchDone(res)) => break res,
                    Ok(Op::Intermediate) => {}
                    Ok(Op::Reference(urls)) => {
                        return Err(fail(format!(
                            "the server returned a referral to {} instead of entries; dirsync does \
                             not follow referrals: narrow `base_dn`, or point `url` at the server \
                             that holds them{}",
                            urls.join(", "),
                            if mode.domain_scope {
                                ""
                            } else {
                                " (Active Directory: `domain_scope = true`)"
                            }
                        )));
                    }
                    Ok(other) => {
                        return Err(fail(format!(
                            "the server answered the search with {} after {} entries",
                            other.describe(),
                            stats.entries
                        )));
                    }
                    Err(f) => return Err(fail(self.search_failure(f, stats.entries))),
                }
            };
            stats.pages += 1;
            if res.rc != 0 {
                // timeLimitExceeded, busy, unavailable: asked again, it may succeed.
                self.gave_up = matches!(res.rc, 3 | 51 | 52);
                return Err(fail(search_result_error(&res, mode, stats.pages == 1)));
            }
            if mode.page_size == 0 {
                return Ok(stats);
            }
            match res.paged_cookie() {
                // The server ignored the control and answered in one go, complete.
                None => return Ok(stats),
                Some(Err(_)) => {
                    return Err(fail(
                        "the server's paged results control cannot be parsed".to_owned(),
                    ));
                }
                Some(Ok(c)) if c.is_empty() => return Ok(stats),
                Some(Ok(c)) if c == last_cookie && stats.entries == entries_before => {
                    return Err(fail(format!(
                        "the server's paged results do not advance: page {} brought no entries \
                         and the same cookie as the page before",
                        stats.pages
                    )));
                }
                Some(Ok(c)) => {
                    tracing::debug!(
                        base = %search.base_dn,
                        page = stats.pages,
                        entries = stats.entries,
                        asked_ahead = ahead.is_some(),
                        "Read a page of search results."
                    );
                    // Asked ahead with this very result's cookie, or asked now.
                    id = match ahead {
                        Some(next_id) => next_id,
                        None => {
                            let next_id = self.next_id();
                            if let Err(f) = self.call(&request(next_id, c.clone())?).await {
                                return Err(fail(self.search_failure(f, stats.entries)));
                            }
                            next_id
                        }
                    };
                    last_cookie = c;
                }
            }
        }
    }

    /// Words a failure of the search being read, and notes whether the server let
    /// the connection go (closed, reset, or a notice of disconnection), as a server
    /// does with a connection left waiting too long.
    fn search_failure(&mut self, f: Failure, entries: usize) -> String {
        self.gave_up = matches!(
            f,
            Failure::Wire(WireError::Closed | WireError::Io(_)) | Failure::Notice(_)
        );
        self.failure(f, Some(entries))
    }

    /// Whether the last search read failed because the server let it go (see
    /// [`Conn::read_search`]); not after a timeout, a refusal that would be repeated,
    /// or bad data.
    pub fn server_gave_up(&self) -> bool {
        self.gave_up
    }

    /// Reads one entry's attributes (a base-scope search), for ranged retrieval.
    pub async fn read_entry(&mut self, dn: &str, attrs: &[String]) -> Result<Option<Entry>, LdapError> {
        let search = Search {
            base_dn: dn.to_owned(),
            scope: Scope::Base,
            filter: "(objectClass=*)".to_owned(),
        };
        let mut found = None;
        let mode = SearchMode {
            page_size: 0,
            domain_scope: false,
        };
        self.search(&search, attrs, mode, |e| {
            found = Some(e.clone());
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// Ends the session politely; a failure here changes nothing that was read.
    pub async fn close(mut self) {
        let id = self.next_id();
        let bye = proto::unbind_request(id);
        let _ = timeout(self.timeout, async {
            let _ = self.wire.send(&bye).await;
            let _ = self.wire.io.shutdown().await;
        })
        .await;
    }
}

/// A request that got no usable answer.
#[derive(Debug)]
enum Failure {
    Timeout,
    Wire(WireError),
    /// The server's notice of disconnection, described.
    Notice(String),
    /// An answer to a message ID dirsync has not sent (or no longer waits for).
    Foreign(i32),
}

enum StartTls {
    Refused(String),
    Wire(WireError),
}

/// The StartTLS exchange (RFC 4511 §4.14) on a plain connection; TLS starts next.
async fn start_tls(wire: &mut Wire<TcpStream>) -> Result<(), StartTls> {
    wire.send(&proto::start_tls_request(1))
        .await
        .map_err(StartTls::Wire)?;
    let msg = wire.receive().await.map_err(StartTls::Wire)?;
    if msg.id != 1 {
        return Err(StartTls::Refused(format!(
            "the server answered message {}, which dirsync did not send, instead of StartTLS",
            msg.id
        )));
    }
    match msg.op {
        Op::Extended(res) if res.rc == 0 => {
            if wire.start < wire.buf.len() {
                return Err(StartTls::Refused(
                    "the server sent more after accepting StartTLS".to_owned(),
                ));
            }
            Ok(())
        }
        Op::Extended(res) => Err(StartTls::Refused(format!(
            "the server refused StartTLS: {}",
            describe(&res)
        ))),
        other => Err(StartTls::Refused(format!(
            "the server answered StartTLS with {}",
            other.describe()
        ))),
    }
}

/// The rustls client config for `tls`: the system's roots, only the given CAs, or
/// no verification of the certificate (signatures are still checked).
fn client_config(tls: &TlsVerify) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let config = match tls {
        TlsVerify::System => builder
            .with_root_certificates(SYSTEM_ROOTS.clone())
            .with_no_client_auth(),
        TlsVerify::CaFile { certs, .. } => builder
            .with_root_certificates(roots(certs)?)
            .with_no_client_auth(),
        TlsVerify::Skip => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The system's trusted CAs, loaded once; unreadable ones are left out.
static SYSTEM_ROOTS: LazyLock<Arc<rustls::RootCertStore>> = LazyLock::new(|| {
    let mut store = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    tracing::debug!(
        added,
        ignored,
        errors = found.errors.len(),
        "Loaded the system's CA certificates."
    );
    Arc::new(store)
});

fn roots(certs: &[CertificateDer<'static>]) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("`ca_file` holds a certificate rustls refuses: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// `tls_verify = false`: any certificate is accepted, but the handshake's
/// signatures are still verified, so the session is at least bound to that key.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A failed TLS handshake, with a hint where one helps.
fn handshake_error(c: &LdapConfig, e: io::Error) -> LdapError {
    let message = match e.get_ref().and_then(|s| s.downcast_ref::<rustls::Error>()) {
        Some(err) => tls_message(err, c),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("the server closed the connection during the handshake: {e}")
        }
        None => format!("handshake failed: {e}"),
    };
    LdapError::Tls {
        url: c.url.clone(),
        message,
    }
}

fn tls_message(err: &rustls::Error, c: &LdapConfig) -> String {
    use rustls::CertificateError as CE;
    let hint = match err {
        rustls::Error::InvalidCertificate(CE::UnknownIssuer) => match &c.tls {
            TlsVerify::CaFile { path, .. } => format!(
                ": the server's certificate is not signed by a CA in {}",
                path.display()
            ),
            _ => ": the server's certificate is not signed by a CA this system trusts; set \
                  `ca_file` to the CA that signed it"
                .to_owned(),
        },
        rustls::Error::InvalidCertificate(CE::NotValidForName)
        | rustls::Error::InvalidCertificate(CE::NotValidForNameContext { .. }) => {
            ": the certificate does not name the host in `url`".to_owned()
        }
        rustls::Error::InvalidCertificate(CE::Expired)
        | rustls::Error::InvalidCertificate(CE::ExpiredContext { .. }) => {
            ": the server's certificate has expired".to_owned()
        }
        // No CA is checked then, but rustls still verifies the handshake's signature
        // with the certificate's key, and refuses what it cannot verify.
        _ if matches!(c.tls, TlsVerify::Skip) => ": with `tls_insecure_skip_verify = true` no CA is \
             checked, but the handshake's signature still is, and rustls refuses X.509 v1 \
             certificates, RSA keys under 2048 bits and SHA-1 signatures"
            .to_owned(),
        _ => String::new(),
    };
    format!("handshake failed: {err}{hint}")
}

/// The cookie to ask for the next page with, ahead of time: only from a successful
/// page that names a next one, and not one that repeats the last cookie (whether
/// that is an error depends on the entries not read yet, so it is left for when the
/// result is reached).
fn next_cookie(res: &LdapResult, last_cookie: &[u8]) -> Option<Vec<u8>> {
    if res.rc != 0 {
        return None;
    }
    match res.paged_cookie()? {
        Ok(c) if !c.is_empty() && c != last_cookie => Some(c),
        _ => None,
    }
}

/// Why a search result that is not success ends the read.
fn search_result_error(res: &LdapResult, mode: SearchMode, first_page: bool) -> String {
    let d = describe(res);
    let paging_refused = mode.page_size > 0
        && (res.rc == 12
            || (first_page && matches!(res.rc, 11 | 53) && res.text.to_lowercase().contains("paged")));
    if paging_refused {
        return format!(
            "the server refuses paged results (RFC 2696): {d}; allow paging for the bind \
             identity, or set `page_size = 0` to read without paging (the server's size limit \
             then applies)"
        );
    }
    match res.rc {
        4 if mode.page_size > 0 => format!(
            "{d}: the server's size limit ended the search before every entry was read; \
             raise the limit for paged searches of the bind identity (OpenLDAP: \
             `limits … size.prtotal=unlimited`)"
        ),
        4 => format!(
            "{d}: the server's size limit ended the search before every entry was read; \
             turn paging on with `page_size`"
        ),
        3 => format!("{d}: the server's time limit ended the search"),
        10 => format!(
            "{d}: the server refers to {}; dirsync does not follow referrals: point `url` at \
             the server that holds the base DN",
            if res.refs.is_empty() {
                "another server".to_owned()
            } else {
                res.refs.join(", ")
            }
        ),
        32 => format!("{d}: the base DN does not exist"),
        50 => format!("{d}: the bind identity may not read here"),
        8 | 13 => format!("{d}: the server wants TLS: use ldaps:// or `starttls = true`"),
        _ => d,
    }
}

/// `name (code): text`, the way an operator can look the code up.
pub fn describe(res: &LdapResult) -> String {
    let name = match res.rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "error",
    };
    let text = res.text.trim();
    if text.is_empty() {
        format!("{name} ({})", res.rc)
    } else {
        format!("{name} ({}): {text}", res.rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::config::RawLdap;
    use crate::source::ldap::proto::tests::{done_message, entry_message, result_message};
    use tokio::net::TcpListener;

    /// A server that answers each request it reads with the next scripted answer,
    /// written in `chunk`-byte pieces: enough to reach what slapd never sends.
    /// With `hold`, the connection then stays open; without, the server closes it.
    async fn scripted(answers: Vec<Vec<u8>>, chunk: usize, hold: bool) -> LdapConfig {
        scripted_counting(answers, chunk, hold).await.0
    }

    /// [`scripted`], and how many requests the server has read so far.
    async fn scripted_counting(
        answers: Vec<Vec<u8>>,
        chunk: usize,
        hold: bool,
    ) -> (LdapConfig, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0; 65536];
            for answer in answers {
                if matches!(sock.read(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                for piece in answer.chunks(chunk) {
                    if sock.write_all(piece).await.is_err() {
                        return;
                    }
                    let _ = sock.flush().await;
                }
            }
            if hold {
                // Silent until the client goes.
                let _ = sock.read(&mut buf).await;
            }
        });
        let raw: RawLdap = toml::from_str(&format!(
            "preset = \"openldap\"\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"dc=x\"\nanonymous = true\ntimeout = \"500ms\"\n"
        ))
        .expect("toml");
        let config = LdapConfig::from_raw(raw, std::path::Path::new("/nonexistent")).expect("valid");
        (config, requests)
    }

    /// Binds anonymously and runs one unpaged search; the entries' DNs or the error.
    async fn search_once(config: &LdapConfig) -> Result<Vec<String>, String> {
        search_paged(config, 0).await
    }

    async fn search_paged(config: &LdapConfig, page_size: u32) -> Result<Vec<String>, String> {
        let mut conn = Conn::open(config).await.map_err(|e| e.to_string())?;
        conn.bind(&Bind::Anonymous).await.map_err(|e| e.to_string())?;
        let mut dns = Vec::new();
        let mode = SearchMode {
            page_size,
            domain_scope: false,
        };
        conn.search(&config.users.search, &[], mode, |e| {
            dns.push(e.dn.clone());
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
        conn.close().await;
        Ok(dns)
    }

    fn bind_ok() -> Vec<u8> {
        result_message(1, 1, 0, "", &[], &[])
    }

    /// The next page is asked for as soon as the page's end is in the buffer: the
    /// server has the request while the client still maps that page's last entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_page_is_asked_for_before_the_page_is_mapped() {
        use std::sync::atomic::Ordering;
        // Each page whole in one write, so its end arrives with its first entry.
        let answers = vec![
            bind_ok(),
            page_answer(2, &["uid=a,dc=x", "uid=b,dc=x"], 0, Some(b"p2")),
            page_answer(3, &["uid=c,dc=x", "uid=d,dc=x"], 0, Some(b"")),
        ];
        let (config, requests) = scripted_counting(answers, usize::MAX, true).await;
        let mut conn = Conn::open(&config).await.expect("open");
        conn.bind(&Bind::Anonymous).await.expect("bind");
        let mode = SearchMode {
            page_size: 2,
            domain_scope: false,
        };
        let mut dns = Vec::new();
        let mut asked_before_b = false;
        let stats = conn
            .search(&config.users.search, &[], mode, |e| {
                if e.dn == "uid=b,dc=x" {
                    // Bind, page 1, and page 2 asked for before `b` is handed over.
                    let deadline = std::time::Instant::now() + Duration::from_secs(2);
                    while requests.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    asked_before_b = requests.load(Ordering::SeqCst) == 3;
                }
                dns.push(e.dn.clone());
                Ok(())
            })
            .await
            .expect("search");
        assert!(
            asked_before_b,
            "page 2 was asked for only after page 1 was mapped"
        );
        assert_eq!((stats.entries, stats.pages), (4, 2));
        assert_eq!(dns, ["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x", "uid=d,dc=x"]);
    }

    #[tokio::test]
    async fn answers_split_into_small_pieces_are_reassembled() {
        let mut answer = entry_message(2, "uid=a,dc=x", &[("uid", &[b"a"])]);
        answer.extend(entry_message(2, "uid=b,dc=x", &[("uid", &[b"b"])]));
        answer.extend(done_message(2, 0, "", &[], &[]));
        let config = scripted(vec![bind_ok(), answer], 3, true).await;
        assert_eq!(
            search_once(&config).await,
            Ok(vec!["uid=a,dc=x".to_owned(), "uid=b,dc=x".to_owned()])
        );
    }

    #[tokio::test]
    async fn what_slapd_never_sends_is_a_clear_error() {
        let mut one_entry = entry_message(2, "uid=a,dc=x", &[("uid", &[b"a"])]);
        let notice = result_message(0, 24, 52, "server shutting down", &[], &[]);
        one_entry.extend(notice.clone());
        let cases = [
            (
                one_entry,
                "the connection was lost after 1 entries: the server ended the session: unavailable (52): server shutting down",
            ),
            (
                vec![0x04, 0x00],
                "the server sent a message that is not an LDAPMessage SEQUENCE after 0 entries",
            ),
            (
                done_message(7, 0, "", &[], &[]),
                "the server answered message 7, which dirsync did not send",
            ),
            (
                result_message(2, 1, 0, "", &[], &[]),
                "the server answered the search with a bind response after 0 entries",
            ),
        ];
        for (answer, want) in cases {
            let config = scripted(vec![bind_ok(), answer], 64, true).await;
            let err = search_once(&config).await.expect_err("fails");
            assert!(err.contains(want), "{err}\nwanted: {want}");
            assert!(err.contains("search of `dc=x`"), "{err}");
        }
        // Paged results whose cookie does not move would be asked for forever.
        let stuck = |id| done_message(id, 0, "", &[], &[Control::paged(0, b"c".to_vec())]);
        let config = scripted(vec![bind_ok(), stuck(2), stuck(3)], 64, true).await;
        let err = search_paged(&config, 500).await.expect_err("fails");
        assert!(err.contains("paged results do not advance: page 2"), "{err}");
        // A server that closes mid-message, and one that stays silent.
        let mut cut = entry_message(2, "uid=a,dc=x", &[("uid", &[b"a"])]);
        cut.truncate(cut.len() - 3);
        let config = scripted(vec![bind_ok(), cut], 64, false).await;
        let err = search_once(&config).await.expect_err("fails");
        assert!(
            err.contains("the connection was lost after 0 entries: the server closed it"),
            "{err}"
        );
        let config = scripted(vec![bind_ok(), Vec::new()], 64, true).await;
        let err = search_once(&config).await.expect_err("fails");
        assert!(
            err.contains("no answer within 500ms (`timeout`) after 0 entries"),
            "{err}"
        );
    }

    fn page_answer(id: i32, dns: &[&str], rc: i64, cookie: Option<&[u8]>) -> Vec<u8> {
        let mut answer = Vec::new();
        for dn in dns {
            answer.extend(entry_message(id, dn, &[("uid", &[b"x"])]));
        }
        let ctrls: Vec<Control> = cookie
            .map(|c| vec![Control::paged(0, c.to_vec())])
            .unwrap_or_default();
        answer.extend(done_message(id, rc, "", &[], &ctrls));
        answer
    }

    /// Asking for the next page ahead changes no outcome: failed pages, a server that
    /// ignores paging, a notice, a cookie that repeats with entries, an unparsable
    /// cookie, and two searches on one connection, with answers in pieces of any size.
    #[tokio::test]
    async fn paged_searches_end_as_before_with_pages_asked_ahead() {
        for chunk in [3usize, 7, 64, usize::MAX] {
            // A: page 2 fails with sizeLimitExceeded after page 1 was asked ahead.
            let config = scripted(
                vec![
                    bind_ok(),
                    page_answer(2, &["uid=a,dc=x"], 0, Some(b"p2")),
                    page_answer(3, &["uid=b,dc=x"], 4, None),
                ],
                chunk,
                true,
            )
            .await;
            let err = search_paged(&config, 1).await.expect_err("A");
            assert!(err.contains("sizeLimitExceeded") || err.contains("(4)"), "{err}");
            // A2: first page rc != 0 but with a cookie.
            let config = scripted(
                vec![bind_ok(), page_answer(2, &["uid=a,dc=x"], 11, Some(b"p2"))],
                chunk,
                true,
            )
            .await;
            let err = search_paged(&config, 1).await.expect_err("A2");
            assert!(err.contains("(11)"), "{err}");
            let abc = || vec!["uid=a,dc=x".to_owned(), "uid=b,dc=x".into(), "uid=c,dc=x".into()];
            // B: server ignores paging.
            let config = scripted(
                vec![
                    bind_ok(),
                    page_answer(2, &["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x"], 0, None),
                ],
                chunk,
                true,
            )
            .await;
            assert_eq!(search_paged(&config, 1).await, Ok(abc()));
            // C: notice of disconnection right after page 1's done.
            let mut p1 = page_answer(2, &["uid=a,dc=x", "uid=b,dc=x"], 0, Some(b"p2"));
            p1.extend(result_message(0, 24, 52, "server shutting down", &[], &[]));
            let config = scripted(vec![bind_ok(), p1], chunk, true).await;
            let err = search_paged(&config, 2).await.expect_err("C");
            assert!(
                err.contains("the connection was lost after 2 entries: the server ended the session"),
                "{err}"
            );
            // D: constant cookie with entries, three pages.
            let config = scripted(
                vec![
                    bind_ok(),
                    page_answer(2, &["uid=a,dc=x"], 0, Some(b"c")),
                    page_answer(3, &["uid=b,dc=x"], 0, Some(b"c")),
                    page_answer(4, &["uid=c,dc=x"], 0, Some(b"")),
                ],
                chunk,
                true,
            )
            .await;
            assert_eq!(search_paged(&config, 1).await, Ok(abc()));
            // F: unparsable cookie on page 2.
            let mut bad = entry_message(3, "uid=b,dc=x", &[("uid", &[b"x"])]);
            bad.extend(done_message(
                3,
                0,
                "",
                &[],
                &[Control {
                    oid: proto::PAGED_RESULTS_OID.into(),
                    critical: false,
                    value: Some(vec![1, 2, 3]),
                }],
            ));
            let config = scripted(
                vec![bind_ok(), page_answer(2, &["uid=a,dc=x"], 0, Some(b"p2")), bad],
                chunk,
                true,
            )
            .await;
            let err = search_paged(&config, 1).await.expect_err("F");
            assert!(err.contains("cannot be parsed"), "{err}");
            // G: many pages, and then a second search on the same connection.
            let mut answers = vec![bind_ok()];
            let mut want = Vec::new();
            for p in 0..5 {
                let dn = format!("uid=u{p},dc=x");
                want.push(dn.clone());
                let cookie = if p == 4 {
                    b"".to_vec()
                } else {
                    format!("k{p}").into_bytes()
                };
                answers.push(page_answer(2 + p, &[&dn], 0, Some(&cookie)));
            }
            for p in 0..3 {
                let dn = format!("uid=g{p},dc=x");
                let cookie = if p == 2 {
                    b"".to_vec()
                } else {
                    format!("g{p}").into_bytes()
                };
                answers.push(page_answer(7 + p, &[&dn], 0, Some(&cookie)));
            }
            let config = scripted(answers, chunk, true).await;
            let mut conn = Conn::open(&config).await.expect("open");
            conn.bind(&Bind::Anonymous).await.expect("bind");
            let mode = SearchMode {
                page_size: 1,
                domain_scope: false,
            };
            let mut got = Vec::new();
            let st = conn
                .search(&config.users.search, &[], mode, |e| {
                    got.push(e.dn.clone());
                    Ok(())
                })
                .await
                .expect("G1");
            assert_eq!((got.clone(), st.pages), (want.clone(), 5));
            got.clear();
            let st = conn
                .search(&config.users.search, &[], mode, |e| {
                    got.push(e.dn.clone());
                    Ok(())
                })
                .await
                .expect("G2");
            assert_eq!(
                (got, st.pages),
                (
                    vec![
                        "uid=g0,dc=x".to_string(),
                        "uid=g1,dc=x".into(),
                        "uid=g2,dc=x".into()
                    ],
                    3
                )
            );
        }
    }

    fn result(rc: u32, text: &str) -> LdapResult {
        LdapResult {
            rc,
            matched: String::new(),
            text: text.to_owned(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    #[test]
    fn result_messages_say_what_to_do() {
        let paged = SearchMode {
            page_size: 500,
            domain_scope: false,
        };
        let unpaged = SearchMode {
            page_size: 0,
            domain_scope: false,
        };
        let cases = [
            (result(4, ""), paged, true, "size.prtotal"),
            (result(4, ""), unpaged, true, "`page_size`"),
            (
                result(11, "pagedResults control not allowed"),
                paged,
                true,
                "refuses paged results",
            ),
            (result(12, ""), paged, false, "refuses paged results"),
            (
                result(11, "too many"),
                paged,
                false,
                "adminLimitExceeded (11): too many",
            ),
            (result(32, ""), paged, true, "does not exist"),
            (result(3, ""), paged, true, "time limit"),
        ];
        for (res, mode, first, want) in cases {
            let got = search_result_error(&res, mode, first);
            assert!(got.contains(want), "{got}");
        }
        assert_eq!(
            describe(&result(49, "80090308: LdapErr: DSID-0C09044E, data 52e")),
            "invalidCredentials (49): 80090308: LdapErr: DSID-0C09044E, data 52e"
        );
    }
}
