//! The connection, through ldap3's async client: TCP, TLS (ldaps:// or StartTLS, with
//! rustls), the simple bind, and searches read to the end, paged (RFC 2696) by
//! ldap3's `PagedResults` adapter, each entry handed to the caller as it arrives.
//!
//! Every way a search can end early is an error here: a lost connection, a timeout,
//! a size or time limit, a referral, a server that refuses paging, a page that fails
//! after others succeeded. A search either delivered every entry or it failed.
//!
//! Two small pieces go around ldap3. [`PageCheck`], an adapter under `PagedResults`,
//! sees each page's result: `PagedResults` goes on to the next page after a failed
//! page that still carries a cookie, forever on a cookie that does not move, and
//! panics on a paged results control it cannot parse. [`read_entry_into`] takes an
//! entry's DN and values from ldap3's decoded message as bytes:
//! `SearchEntry::construct` panics on a DN that is not UTF-8 and moves whole
//! attributes aside when one value is not UTF-8.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::adapters::{Adapter, PagedResults};
use ldap3::asn1::{PL, StructureTag};
use ldap3::controls::{
    Control, ControlParser, ControlType, EntryState, MakeCritical, RawControl, RefreshMode, SyncDone,
    SyncInfo, SyncRequest, SyncState, parse_syncinfo,
};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, SearchStream, StdStream};

use super::config::{Bind, LdapConfig, Scope, Search, TlsVerify};
use super::entry::Entry;
use super::error::{
    BindFailure, ConnectFailure, LdapError, LostCause, SearchFailure, ServerResult, TlsFailure, TlsHint, rc,
};

/// LDAP_SERVER_DOMAIN_SCOPE_OID: no continuation references to other partitions.
const DOMAIN_SCOPE_OID: &str = "1.2.840.113556.1.4.1339";

/// LDAP_SERVER_SHOW_DELETED_OID: deleted objects (tombstones) among the entries.
pub const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

/// The name of RFC 4533's Sync Info intermediate response.
const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";
/// The content synchronisation request control (RFC 4533), as the root DSE lists it.
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";

/// An open, bound connection. ldap3's connection task runs beside it.
pub struct Conn {
    ldap: Ldap,
    /// The task that reads and writes the socket; its error says why a connection
    /// was lost.
    /// `None` once awaited.
    driver: Option<tokio::task::JoinHandle<ldap3::result::Result<()>>>,
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
        let mut settings = LdapConnSettings::new().set_starttls(c.starttls);
        let tls_error = |reason| LdapError::Tls {
            url: c.url.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        match &c.tls {
            // Built here rather than by ldap3, which leaves the store empty when the
            // system's store reports any error, so every handshake would fail with a
            // misleading "unknown issuer". Unparsable system certificates are skipped,
            // as the HTTP client skips them.
            TlsVerify::System if !(c.starttls || c.ldaps()) => {}
            TlsVerify::System => {
                let (added, _) =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err(tls_error(TlsFailure::NoSystemRoots));
                }
            }
            TlsVerify::CaFile { certs, .. } => {
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| tls_error(TlsFailure::CaFile(Box::new(e))))?;
                }
            }
            TlsVerify::Skip => settings = settings.set_no_tls_verify(true),
        }
        if !roots.is_empty() {
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            settings = settings.set_config(Arc::new(config));
        }
        // One `connect_timeout` for the TCP connection and the TLS handshake together.
        let connecting = std::time::Instant::now();
        let stream = tcp(&c.url, c.connect_timeout)
            .await
            .map_err(|reason| LdapError::Connect {
                url: c.url.clone(),
                reason,
            })?;
        let left = c.connect_timeout.saturating_sub(connecting.elapsed());
        let settings = settings
            .set_conn_timeout(left.max(Duration::from_millis(1)))
            .set_std_stream(StdStream::Tcp(stream));
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &c.url)
            .await
            .map_err(|e| open_error(c, e))?;
        let driver = tokio::spawn(conn.drive());
        Ok(Conn {
            ldap,
            driver: Some(driver),
            url: c.url.clone(),
            timeout: c.timeout,
        })
    }

    /// What is known of a connection that went away: the connection task's error,
    /// if it ended with one. The task is ending already: an operation sees the
    /// connection gone when the task drops its channels, on its way out.
    async fn lost(&mut self) -> LostCause {
        let Some(driver) = self.driver.take() else {
            return LostCause::Closed;
        };
        match tokio::time::timeout(Duration::from_secs(1), driver).await {
            Ok(Ok(Err(e))) => LostCause::Client(Box::new(e)),
            _ => LostCause::Closed,
        }
    }

    /// Binds as configured; anonymous is an empty DN and password.
    pub async fn bind(&mut self, bind: &Bind) -> Result<(), LdapError> {
        let (dn, password) = match bind {
            Bind::Anonymous => ("", ""),
            Bind::Simple { dn, password } => (dn.as_str(), password.expose()),
        };
        let answer = self
            .ldap
            .with_timeout(self.timeout)
            .simple_bind(dn, password)
            .await;
        let reason = match answer {
            Ok(res) if res.rc == rc::SUCCESS => return Ok(()),
            Ok(res) => {
                let result = ServerResult::from(&res);
                match res.rc {
                    rc::INVALID_CREDENTIALS => BindFailure::InvalidCredentials { result },
                    rc::STRONGER_AUTH_REQUIRED | rc::CONFIDENTIALITY_REQUIRED => {
                        BindFailure::TlsRequired { result }
                    }
                    _ => BindFailure::Refused { result },
                }
            }
            Err(ldap3::LdapError::Timeout { .. }) => BindFailure::Timeout { after: self.timeout },
            Err(e) => BindFailure::Lost {
                cause: match e {
                    ldap3::LdapError::ResultRecv { .. } | ldap3::LdapError::OpSend { .. } => {
                        self.lost().await
                    }
                    other => LostCause::Client(Box::new(other)),
                },
            },
        };
        Err(LdapError::Bind {
            url: self.url.clone(),
            dn: if dn.is_empty() { "(anonymous)" } else { dn }.to_owned(),
            reason,
        })
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
        self.search_with(search, attrs, mode, Vec::new(), each).await
    }

    /// The entries each of the two `filters` matches in the subtree under `dn`, as
    /// (id, DN) with the id read by `id_of` from the `id` attribute; `None` when `dn`
    /// is gone (it then holds nothing).
    pub async fn ids_under(
        &mut self,
        dn: &str,
        filters: [&str; 2],
        id: &str,
        mode: SearchMode,
        id_of: impl Fn(&Entry) -> Option<String>,
    ) -> Result<Option<[Vec<(String, String)>; 2]>, LdapError> {
        let mut found = [Vec::new(), Vec::new()];
        for (filter, entries) in filters.into_iter().zip(found.iter_mut()) {
            let search = Search {
                base_dn: dn.to_owned(),
                scope: Scope::Sub,
                filter: filter.to_owned(),
            };
            let read = self
                .search(&search, &[id.to_owned()], mode, |e| {
                    entries.extend(id_of(e).map(|id| (id, e.dn.clone())));
                    Ok(())
                })
                .await;
            match read {
                Err(LdapError::Search {
                    reason: SearchFailure::NoSuchBase { .. },
                    ..
                }) => return Ok(None),
                r => r?,
            };
        }
        Ok(Some(found))
    }

    /// [`Conn::search`] with more request controls (Active Directory's show-deleted).
    pub async fn search_with(
        &mut self,
        search: &Search,
        attrs: &[String],
        mode: SearchMode,
        controls: Vec<RawControl>,
        mut each: impl FnMut(&Entry) -> Result<(), LdapError>,
    ) -> Result<SearchStats, LdapError> {
        let each = |item: Item<'_>| match item {
            Item::Entry(e, _) => each(e),
            Item::Intermediate(_) => Ok(()),
        };
        let (stats, res) = self.stream(search, attrs, mode, controls, each).await?;
        if res.rc != rc::SUCCESS {
            let reason = SearchFailure::from_result(&res, mode.page_size > 0, stats.pages <= 1);
            return Err(self.search_error(search, reason));
        }
        Ok(stats)
    }

    fn search_error(&self, search: &Search, reason: SearchFailure) -> LdapError {
        LdapError::Search {
            url: self.url.clone(),
            base: search.base_dn.clone(),
            filter: search.filter.clone(),
            reason,
        }
    }

    /// Runs one search to the end with `controls`, handing each entry (with its
    /// controls) and each intermediate response to `each`; returns the final result,
    /// whatever its code.
    async fn stream(
        &mut self,
        search: &Search,
        attrs: &[String],
        mode: SearchMode,
        mut controls: Vec<RawControl>,
        mut each: impl FnMut(Item<'_>) -> Result<(), LdapError>,
    ) -> Result<(SearchStats, ldap3::LdapResult), LdapError> {
        let check = PageCheck::default();
        let pages = Arc::clone(&check.log);
        let mut adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = Vec::new();
        if mode.page_size > 0 {
            let size = i32::try_from(mode.page_size).unwrap_or(i32::MAX);
            adapters.push(Box::new(PagedResults::new(size)));
        }
        // Only a paged search has pages whose results need a look before the next.
        if mode.page_size > 0 {
            adapters.push(Box::new(check));
        }
        if mode.domain_scope {
            controls.push(RawControl {
                ctype: DOMAIN_SCOPE_OID.to_owned(),
                crit: false,
                val: None,
            });
        }
        if !controls.is_empty() {
            self.ldap.with_controls(controls);
        }
        let scope = ldap_scope(search.scope);
        let started = self
            .ldap
            .with_timeout(self.timeout)
            .streaming_search_with(adapters, &search.base_dn, scope, &search.filter, attrs.to_vec())
            .await;
        let mut stream = match started {
            Ok(stream) => stream,
            Err(e) => {
                let reason = self.search_failure(e, &pages, mode, 0).await;
                return Err(self.search_error(search, reason));
            }
        };
        let mut entries = 0;
        let mut entry = Entry::default();
        loop {
            match stream.next().await {
                Ok(Some(re)) if re.is_intermediate() => each(Item::Intermediate(re))?,
                Ok(Some(re)) if re.is_ref() => {
                    let reason = SearchFailure::Referral {
                        urls: referrals(re.0),
                        domain_scope: mode.domain_scope,
                    };
                    return Err(self.search_error(search, reason));
                }
                Ok(Some(re)) => {
                    let (tag, controls) = (re.0, re.1);
                    if let Err(what) = read_entry_into(tag, &mut entry) {
                        return Err(self.search_error(search, SearchFailure::Malformed { what, entries }));
                    }
                    each(Item::Entry(&entry, controls))?;
                    entries += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    drop(stream);
                    let reason = self.search_failure(e, &pages, mode, entries).await;
                    return Err(self.search_error(search, reason));
                }
            }
        }
        let res = stream.finish().await;
        let pages = match mode.page_size {
            0 => 1,
            _ => pages.lock().unwrap_or_else(PoisonError::into_inner).pages,
        };
        Ok((SearchStats { entries, pages }, res))
    }

    /// A content synchronisation refresh (RFC 4533, `refreshOnly`) of one search:
    /// what changed since `cookie`, or every entry without one. Never paged: the
    /// bind identity needs a size limit above the search's entries.
    pub async fn sync_refresh(
        &mut self,
        search: &Search,
        attrs: &[String],
        cookie: Option<Vec<u8>>,
    ) -> Result<Synced, LdapError> {
        let cookie_sent = cookie.is_some();
        // A server with nothing new to say may leave the cookie out: the one sent stays.
        let mut refresh = Refresh {
            cookie: cookie.clone().unwrap_or_default(),
            ..Refresh::default()
        };
        let request = SyncRequest {
            mode: RefreshMode::RefreshOnly,
            cookie,
            reload_hint: false,
        }
        .critical();
        let mode = SearchMode {
            page_size: 0,
            domain_scope: false,
        };
        let url = self.url.clone();
        let bad_sync = |what| LdapError::Search {
            url: url.clone(),
            base: search.base_dn.clone(),
            filter: search.filter.clone(),
            reason: SearchFailure::BadSync { what },
        };
        let each = |item: Item<'_>| refresh.take(item).map_or(Ok(()), |what| Err(bad_sync(what)));
        let (_, res) = self
            .stream(search, attrs, mode, vec![request.into()], each)
            .await?;
        match res.rc {
            rc::SUCCESS => {}
            rc::E_SYNC_REFRESH_REQUIRED => return Ok(Synced::RefreshRequired(ServerResult::from(&res))),
            // slapd's answer to a cookie from another server or from ahead of its own
            // state ("consumer state is newer than provider").
            rc::UNWILLING_TO_PERFORM if cookie_sent => {
                let result = ServerResult::from(&res);
                return Err(self.search_error(search, SearchFailure::CookieRefused { result }));
            }
            rc::UNAVAILABLE_CRITICAL_EXTENSION => return Ok(Synced::Unsupported(ServerResult::from(&res))),
            _ => {
                let reason = SearchFailure::from_result(&res, false, true);
                return Err(self.search_error(search, reason));
            }
        }
        let done = res
            .ctrls
            .into_iter()
            .find(|c| matches!(c.0, Some(ControlType::SyncDone)))
            .and_then(|c| parse_control::<SyncDone>(c.1));
        let Some(done) = done else {
            let what = "a result without a readable sync done control";
            return Err(self.search_error(search, SearchFailure::BadSync { what }));
        };
        // The last cookie the server sent is the one to send next time. A server that
        // did not understand the cookie it was sent starts over and hands out an empty
        // one: what it sent is then every entry, not what changed.
        if let Some(cookie) = done.cookie {
            refresh.cookie = cookie;
        }
        if refresh.cookie.is_empty() {
            let what = "no cookie";
            return Err(self.search_error(search, SearchFailure::BadSync { what }));
        }
        // RFC 4533 §3.3.2: without refreshDeletes the server ran a present phase, and
        // an entry it named neither present nor changed is gone.
        if !done.refresh_deletes {
            refresh.present.get_or_insert_default();
        }
        Ok(Synced::Refreshed(refresh))
    }

    /// Words an error of ldap3's search stream: the page check's verdict if it
    /// stopped the search, else what ldap3 saw.
    async fn search_failure(
        &mut self,
        e: ldap3::LdapError,
        log: &Mutex<PageLog>,
        mode: SearchMode,
        entries: usize,
    ) -> SearchFailure {
        let (stop, pages) = {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            (log.stop.take(), log.pages)
        };
        match (stop, e) {
            (Some(PageStop::Failed(res)), _) => {
                SearchFailure::from_result(&res, mode.page_size > 0, pages <= 1)
            }
            (Some(PageStop::NotAdvancing), _) => SearchFailure::PagesDoNotAdvance { page: pages },
            (Some(PageStop::BadControl), _) => SearchFailure::BadPagedControl,
            (None, ldap3::LdapError::FilterParsing) => SearchFailure::BadFilter,
            (None, ldap3::LdapError::Timeout { .. }) => SearchFailure::Timeout {
                after: self.timeout,
                entries,
            },
            (None, ldap3::LdapError::EndOfStream | ldap3::LdapError::OpSend { .. }) => SearchFailure::Lost {
                entries,
                cause: self.lost().await,
            },
            (None, other) => SearchFailure::Lost {
                entries,
                cause: LostCause::Client(Box::new(other)),
            },
        }
    }

    /// Keeps a content synchronisation search (RFC 4533 `refreshAndPersist`) open on
    /// `search`, asking for no attributes, and calls `changed` once its initial
    /// content is through and then for every change the server reports. Returns only
    /// when the search ends (an error, or the server ending it); waits without a
    /// timeout.
    pub async fn persist(&mut self, search: &Search, mut changed: impl FnMut()) -> Result<(), LdapError> {
        let request = SyncRequest {
            mode: RefreshMode::RefreshAndPersist,
            cookie: None,
            reload_hint: false,
        }
        .critical();
        self.ldap.with_controls(vec![RawControl::from(request)]);
        let scope = ldap_scope(search.scope);
        let started = self
            .ldap
            .streaming_search(&search.base_dn, scope, &search.filter, vec!["1.1"])
            .await;
        let mut stream = match started {
            Ok(stream) => stream,
            Err(e) => {
                let reason = SearchFailure::Lost {
                    entries: 0,
                    cause: LostCause::Client(Box::new(e)),
                };
                return Err(self.search_error(search, reason));
            }
        };
        // The initial content ends with a Sync Info message whose refreshDone is set.
        let mut refreshed = false;
        loop {
            match stream.next().await {
                Ok(Some(re)) if re.is_intermediate() => match parse_guarded(|| parse_syncinfo(re)) {
                    Some(
                        SyncInfo::RefreshDelete { refresh_done, .. }
                        | SyncInfo::RefreshPresent { refresh_done, .. },
                    ) if !refreshed && refresh_done => {
                        // What changed before the watch was through is not reported:
                        // a sync now covers it.
                        refreshed = true;
                        changed();
                    }
                    Some(SyncInfo::SyncIdSet { .. }) if refreshed => changed(),
                    _ => {}
                },
                Ok(Some(_)) if refreshed => changed(),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    drop(stream);
                    let cause = match e {
                        ldap3::LdapError::EndOfStream | ldap3::LdapError::OpSend { .. } => self.lost().await,
                        other => LostCause::Client(Box::new(other)),
                    };
                    return Err(self.search_error(search, SearchFailure::Lost { entries: 0, cause }));
                }
            }
        }
        let res = stream.finish().await;
        let reason = match res.rc {
            rc::SUCCESS => SearchFailure::Lost {
                entries: 0,
                cause: LostCause::Closed,
            },
            rc::UNAVAILABLE_CRITICAL_EXTENSION => SearchFailure::NoContentSync {
                result: ServerResult::from(&res),
            },
            _ => SearchFailure::from_result(&res, false, true),
        };
        Err(self.search_error(search, reason))
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
        let _ = tokio::time::timeout(self.timeout, self.ldap.unbind()).await;
        if let Some(driver) = self.driver {
            let _ = tokio::time::timeout(self.timeout, driver).await;
        }
    }
}

fn ldap_scope(scope: Scope) -> ldap3::Scope {
    match scope {
        Scope::Base => ldap3::Scope::Base,
        Scope::One => ldap3::Scope::OneLevel,
        Scope::Sub => ldap3::Scope::Subtree,
    }
}

/// What a search hands its caller.
enum Item<'e> {
    /// An entry, with the controls it came with.
    Entry(&'e Entry, Vec<Control>),
    /// An intermediate response (RFC 4511 §4.13).
    Intermediate(ResultEntry),
}

/// The outcome of a content synchronisation refresh.
#[derive(Debug)]
pub enum Synced {
    Refreshed(Refresh),
    /// The server cannot serve the cookie (`e-syncRefreshRequired`): read everything
    /// again.
    RefreshRequired(ServerResult),
    /// The server does not offer content synchronisation (OpenLDAP without the
    /// `syncprov` overlay).
    Unsupported(ServerResult),
}

/// What a refresh said about one search's entries, keyed by entryUUID.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Entries added or changed, with the attributes asked for (a renamed or moved
    /// entry comes as added, under its new DN).
    pub changed: Vec<(String, Entry)>,
    /// Entries deleted, or no longer in the search's base or filter.
    pub deleted: BTreeSet<String>,
    /// After a present phase: the entries still there and unchanged. Every entry
    /// neither here nor in `changed` is gone.
    pub present: Option<BTreeSet<String>>,
    /// What to send next time.
    pub cookie: Vec<u8>,
}

impl Refresh {
    /// Takes one item of the refresh; what is wrong with it when it cannot be read.
    fn take(&mut self, item: Item<'_>) -> Option<&'static str> {
        match item {
            Item::Entry(entry, controls) => {
                let state = controls
                    .into_iter()
                    .find(|c| matches!(c.0, Some(ControlType::SyncState)))
                    .and_then(|c| parse_control::<SyncState>(c.1));
                let Some(state) = state else {
                    return Some("an entry without a readable sync state control");
                };
                let Ok(id) = uuid::Uuid::from_slice(&state.entry_uuid) else {
                    return Some("a sync state control whose entryUUID is not 16 bytes");
                };
                let id = id.to_string();
                if let Some(cookie) = state.cookie {
                    self.cookie = cookie;
                }
                match state.state {
                    EntryState::Add | EntryState::Modify => self.changed.push((id, entry.clone())),
                    EntryState::Delete => {
                        self.deleted.insert(id);
                    }
                    EntryState::Present => {
                        self.present.get_or_insert_default().insert(id);
                    }
                }
            }
            Item::Intermediate(re) => {
                let is_sync_info = match &re.0.payload {
                    PL::C(parts) => parts.iter().any(|t| {
                        t.id == 0 && matches!(&t.payload, PL::P(name) if name == SYNC_INFO_OID.as_bytes())
                    }),
                    PL::P(_) => false,
                };
                if !is_sync_info {
                    return None;
                }
                let Some(info) = parse_guarded(|| parse_syncinfo(re)) else {
                    return Some("a sync info message that cannot be parsed");
                };
                let cookie = match &info {
                    SyncInfo::NewCookie(cookie) => Some(cookie),
                    SyncInfo::RefreshDelete { cookie, .. }
                    | SyncInfo::RefreshPresent { cookie, .. }
                    | SyncInfo::SyncIdSet { cookie, .. } => cookie.as_ref(),
                };
                if let Some(cookie) = cookie {
                    self.cookie = cookie.clone();
                }
                if let SyncInfo::SyncIdSet {
                    refresh_deletes,
                    sync_uuids,
                    ..
                } = info
                {
                    let mut ids = Vec::with_capacity(sync_uuids.len());
                    for raw in sync_uuids {
                        match uuid::Uuid::from_slice(&raw) {
                            Ok(id) => ids.push(id.to_string()),
                            Err(_) => return Some("a sync id set whose entryUUIDs are not 16 bytes"),
                        }
                    }
                    if refresh_deletes {
                        self.deleted.extend(ids);
                    } else {
                        self.present.get_or_insert_default().extend(ids);
                    }
                }
            }
        }
        None
    }
}

/// ldap3's parsers of the content synchronisation messages panic on a value they
/// cannot read; a server's malformed answer is an error here, not a crash.
fn parse_guarded<T>(parse: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).ok()
}

fn parse_control<T: ControlParser>(raw: RawControl) -> Option<T> {
    raw.val.as_ref()?;
    parse_guarded(|| raw.parse::<T>())
}

/// The error of a connection that could not be opened.
/// Probes on an idle connection: the first after a minute of silence, then every 10
/// seconds; after 6 unanswered the connection fails. A watch search waits on one
/// connection for as long as nothing changes, and a firewall or NAT that drops idle
/// connections without a word would otherwise leave it waiting forever.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);

/// The TCP connection to the host and port of `url` (389, or 636 for ldaps://),
/// within `timeout`, with keepalive probes on. Opened here because ldap3 sets no
/// socket options; it takes the stream and does the rest (TLS, StartTLS).
async fn tcp(url: &str, timeout: Duration) -> Result<std::net::TcpStream, ConnectFailure> {
    let parsed = url::Url::parse(url).map_err(|e| ConnectFailure::Client(Box::new(e.into())))?;
    let port = parsed.port().unwrap_or(match parsed.scheme() {
        "ldaps" => 636,
        _ => 389,
    });
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => "localhost".to_string(),
    };
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| ConnectFailure::Timeout { after: timeout })?
        .map_err(ConnectFailure::Io)?;
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&KEEPALIVE)
        .map_err(ConnectFailure::Io)?;
    stream.into_std().map_err(ConnectFailure::Io)
}

fn open_error(c: &LdapConfig, e: ldap3::LdapError) -> LdapError {
    let connect = |reason| LdapError::Connect {
        url: c.url.clone(),
        reason,
    };
    let tls = |reason| LdapError::Tls {
        url: c.url.clone(),
        reason,
    };
    let encrypted = c.starttls || c.ldaps();
    match e {
        ldap3::LdapError::Timeout { .. } => connect(ConnectFailure::Timeout {
            after: c.connect_timeout,
        }),
        ldap3::LdapError::LdapResult { result } => {
            tls(TlsFailure::StartTlsRefused(ServerResult::from(&result)))
        }
        e @ ldap3::LdapError::DNSName { .. } => tls(TlsFailure::ServerName(Box::new(e))),
        ldap3::LdapError::Rustls { source } => tls(handshake(c, source)),
        ldap3::LdapError::Io { source } => {
            let rustls_error = source
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .cloned();
            match rustls_error {
                Some(err) => tls(handshake(c, err)),
                None if encrypted
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    tls(TlsFailure::Closed(source))
                }
                None => connect(ConnectFailure::Io(source)),
            }
        }
        other => connect(ConnectFailure::Client(Box::new(other))),
    }
}

/// A failed TLS handshake, with a hint where one helps.
fn handshake(c: &LdapConfig, err: rustls::Error) -> TlsFailure {
    use rustls::CertificateError as CE;
    let hint = match &err {
        rustls::Error::InvalidCertificate(CE::UnknownIssuer) => match &c.tls {
            TlsVerify::CaFile { path, .. } => TlsHint::NotInCaFile(path.clone()),
            _ => TlsHint::NotInSystemStore,
        },
        rustls::Error::InvalidCertificate(CE::NotValidForName | CE::NotValidForNameContext { .. }) => {
            TlsHint::NotForHost
        }
        rustls::Error::InvalidCertificate(CE::Expired | CE::ExpiredContext { .. }) => TlsHint::Expired,
        _ => TlsHint::None,
    };
    TlsFailure::Handshake {
        source: Box::new(err),
        hint,
    }
}

/// The URLs of a continuation reference; a URL that is not UTF-8 is shown lossily.
fn referrals(tag: StructureTag) -> Vec<String> {
    tag.expect_constructed()
        .unwrap_or_default()
        .into_iter()
        .filter_map(StructureTag::expect_primitive)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// A SearchResultEntry's DN and attribute values, as bytes, into `e` (its vectors
/// reused). What is wrong with a malformed entry, instead of ldap3's panic.
fn read_entry_into(tag: StructureTag, e: &mut Entry) -> Result<(), &'static str> {
    let malformed = "a search result entry that is not one";
    let mut parts = tag.expect_constructed().ok_or(malformed)?.into_iter();
    let dn = parts
        .next()
        .and_then(StructureTag::expect_primitive)
        .ok_or(malformed)?;
    e.dn = String::from_utf8(dn).map_err(|_| "a DN that is not UTF-8")?;
    e.attrs.clear();
    for attr in parts
        .next()
        .and_then(StructureTag::expect_constructed)
        .ok_or(malformed)?
    {
        let mut pair = attr.expect_constructed().ok_or(malformed)?.into_iter();
        let name = pair
            .next()
            .and_then(StructureTag::expect_primitive)
            .ok_or(malformed)?;
        let name = String::from_utf8(name).map_err(|_| "an attribute name that is not UTF-8")?;
        let values = pair
            .next()
            .and_then(StructureTag::expect_constructed)
            .ok_or(malformed)?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<Vec<_>>>()
            .ok_or(malformed)?;
        e.attrs.push((name, values));
    }
    Ok(())
}

/// Why [`PageCheck`] stopped a search.
#[derive(Debug)]
enum PageStop {
    /// A page ended with this result, not success.
    Failed(ldap3::LdapResult),
    /// A page brought no entries and the cookie of the page before.
    NotAdvancing,
    /// The paged results control has no value or one that does not parse.
    BadControl,
}

/// What [`PageCheck`] saw, shared with the search that reads the stream.
#[derive(Debug, Default)]
struct PageLog {
    pages: usize,
    stop: Option<PageStop>,
}

/// Sees the result of every page before `PagedResults` asks for the next one, and
/// stops the search on a failed page, on a cookie that does not move, and on a
/// paged results control that does not parse (see the module doc).
#[derive(Debug, Clone, Default)]
struct PageCheck {
    log: Arc<Mutex<PageLog>>,
    last_cookie: Vec<u8>,
    entries_in_page: usize,
}

impl PageCheck {
    fn stop(&self, why: PageStop) -> ldap3::LdapError {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).stop = Some(why);
        ldap3::LdapError::AdapterInit("the page check stopped the search".to_owned())
    }
}

/// The cookie of a paged results response control, if the value parses as ldap3's
/// `PagedResults` parser, which panics otherwise, expects it: a sequence of an
/// INTEGER and a primitive.
fn paged_cookie(control: &RawControl) -> Option<Vec<u8>> {
    use ldap3::asn1::{TagClass, Types};
    let (_, tag) = ldap3::asn1::parse_tag(control.val.as_deref()?).ok()?;
    let mut parts = tag.expect_constructed()?.into_iter();
    parts
        .next()?
        .match_class(TagClass::Universal)
        .and_then(|t| t.match_id(Types::Integer as u64))?
        .expect_primitive()?;
    parts.next()?.expect_primitive()
}

#[async_trait]
impl<'a> Adapter<'a, String, Vec<String>> for PageCheck {
    async fn start(
        &mut self,
        stream: &mut SearchStream<'a, String, Vec<String>>,
        base: &str,
        scope: ldap3::Scope,
        filter: &str,
        attrs: Vec<String>,
    ) -> ldap3::result::Result<()> {
        stream.start(base, scope, filter, attrs).await
    }

    async fn next(
        &mut self,
        stream: &mut SearchStream<'a, String, Vec<String>>,
    ) -> ldap3::result::Result<Option<ResultEntry>> {
        let item = stream.next().await?;
        if item.is_some() {
            self.entries_in_page += 1;
            return Ok(item);
        }
        let Some(res) = stream.res.as_ref() else {
            return Ok(None);
        };
        self.log.lock().unwrap_or_else(PoisonError::into_inner).pages += 1;
        if res.rc != rc::SUCCESS {
            return Err(self.stop(PageStop::Failed(res.clone())));
        }
        let paged = res.ctrls.iter().find_map(|c| match c {
            Control(Some(ControlType::PagedResults), raw) => Some(raw),
            _ => None,
        });
        if let Some(raw) = paged {
            let Some(cookie) = paged_cookie(raw) else {
                return Err(self.stop(PageStop::BadControl));
            };
            if !cookie.is_empty() && cookie == self.last_cookie && self.entries_in_page == 0 {
                return Err(self.stop(PageStop::NotAdvancing));
            }
            self.last_cookie = cookie;
        }
        self.entries_in_page = 0;
        Ok(None)
    }

    async fn finish(&mut self, stream: &mut SearchStream<'a, String, Vec<String>>) -> ldap3::LdapResult {
        stream.finish().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::ldap::config::RawLdap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn the_connection_sends_keepalive_probes_after_a_minute_of_silence() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let url = format!("ldap://{}", listener.local_addr().expect("address"));
        let stream = tcp(&url, Duration::from_secs(5)).await.expect("connect");
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(60)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 6);

        // A port nobody listens on: the error the connection has always given.
        drop(listener);
        let refused = tcp(&url, Duration::from_secs(5)).await.expect_err("refused");
        assert!(
            matches!(&refused, ConnectFailure::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
    }

    /// BER type, length (definite, short or long form) and contents.
    pub(crate) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = contents.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(contents);
        out
    }

    pub(crate) fn octets(b: &[u8]) -> Vec<u8> {
        tlv(0x04, b)
    }

    /// An LDAPMessage: message ID, protocol operation, controls.
    pub(crate) fn message(id: i32, op: Vec<u8>, controls: &[Vec<u8>]) -> Vec<u8> {
        let mut body = tlv(0x02, &[id as u8]);
        body.extend(op);
        if !controls.is_empty() {
            body.extend(tlv(0xa0, &controls.concat()));
        }
        tlv(0x30, &body)
    }

    /// A paged results response control with `cookie`; `None`: a value that is not one.
    fn paged(cookie: Option<&[u8]>) -> Vec<u8> {
        paged_value(match cookie {
            Some(c) => tlv(0x30, &[tlv(0x02, &[0]), octets(c)].concat()),
            None => vec![1, 2, 3],
        })
    }

    /// A paged results response control with this value.
    fn paged_value(value: Vec<u8>) -> Vec<u8> {
        tlv(
            0x30,
            &[octets(b"1.2.840.113556.1.4.319"), octets(&value)].concat(),
        )
    }

    /// A search result entry with these attributes and values.
    pub(crate) fn entry_with(id: i32, dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
        let attrs: Vec<u8> = attrs
            .iter()
            .flat_map(|(name, values)| {
                let values: Vec<u8> = values.iter().flat_map(|v| octets(v)).collect();
                tlv(0x30, &[octets(name.as_bytes()), tlv(0x31, &values)].concat())
            })
            .collect();
        message(
            id,
            tlv(0x64, &[octets(dn.as_bytes()), tlv(0x30, &attrs)].concat()),
            &[],
        )
    }

    fn entry(id: i32, dn: &[u8]) -> Vec<u8> {
        let attr = tlv(0x30, &[octets(b"uid"), tlv(0x31, &octets(b"x"))].concat());
        message(id, tlv(0x64, &[octets(dn), tlv(0x30, &attr)].concat()), &[])
    }

    pub(crate) fn done(id: i32, rc: u8, controls: &[Vec<u8>]) -> Vec<u8> {
        let result = [tlv(0x0a, &[rc]), octets(b""), octets(b"")].concat();
        message(id, tlv(0x65, &result), controls)
    }

    /// One page: its entries and its end, with a paged results control if `cookie`.
    fn page(dns: &[&str], rc: u8, cookie: Option<Option<&[u8]>>) -> Answer {
        let dns: Vec<String> = dns.iter().map(|d| (*d).to_owned()).collect();
        let controls: Vec<Vec<u8>> = cookie.map(paged).into_iter().collect();
        Box::new(move |id| {
            let mut out: Vec<u8> = dns.iter().flat_map(|d| entry(id, d.as_bytes())).collect();
            out.extend(done(id, rc, &controls));
            out
        })
    }

    /// The bytes that answer a request with this message ID.
    pub(crate) type Answer = Box<dyn Fn(i32) -> Vec<u8> + Send>;

    /// A server that answers the bind, then each search request it reads with the
    /// next scripted answer; when the script ends it stays silent, or closes the
    /// connection without `hold`. Enough to reach what slapd never sends.
    pub(crate) async fn scripted(answers: Vec<Answer>, hold: bool) -> LdapConfig {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut answers = answers.into_iter();
            let mut buf = vec![0; 65536];
            loop {
                let n = match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // SEQUENCE and its length, then the one-byte INTEGER message ID.
                let at = 2 + if buf[1] < 0x80 {
                    0
                } else {
                    usize::from(buf[1] & 0x7f)
                };
                let id = i32::from(buf[at + 2]);
                let reply = match buf[at + 3] {
                    0x60 => message(
                        id,
                        tlv(0x61, &[tlv(0x0a, &[0]), octets(b""), octets(b"")].concat()),
                        &[],
                    ),
                    0x63 => match answers.next() {
                        Some(answer) => answer(id),
                        None if hold => continue,
                        None => return,
                    },
                    _ => continue,
                };
                if n == buf.len() || sock.write_all(&reply).await.is_err() {
                    return;
                }
                if answers.len() == 0 && !hold {
                    return;
                }
            }
        });
        let raw: RawLdap = toml::from_str(&format!(
            "preset = \"openldap\"\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"dc=x\"\nanonymous = true\ntimeout = \"500ms\"\n"
        ))
        .expect("toml");
        LdapConfig::from_raw(raw, std::path::Path::new("/nonexistent")).expect("valid")
    }

    /// Binds anonymously and runs one search of `page_size`: the entries' DNs and
    /// the pages, or the error.
    async fn search(config: &LdapConfig, page_size: u32) -> Result<(Vec<String>, usize), LdapError> {
        let mut conn = Conn::open(config).await?;
        conn.bind(&Bind::Anonymous).await?;
        let mut dns = Vec::new();
        let mode = SearchMode {
            page_size,
            domain_scope: false,
        };
        let read = conn
            .search(&config.users.search, &[], mode, |e| {
                dns.push(e.dn.clone());
                Ok(())
            })
            .await;
        conn.close().await;
        Ok((dns, read?.pages))
    }

    fn reason(e: LdapError) -> SearchFailure {
        match e {
            LdapError::Search { reason, .. } => reason,
            other => panic!("not a search error: {other}"),
        }
    }

    fn abc() -> Vec<String> {
        ["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x"]
            .map(str::to_owned)
            .to_vec()
    }

    /// Pages that end well, whatever the server does with the control: a read of
    /// three pages, a cookie that repeats while entries still come, and a server
    /// that ignores paging and answers in one go.
    #[tokio::test]
    async fn paged_searches_that_end_well_deliver_every_entry() {
        let cases: [(Vec<Answer>, usize); 3] = [
            (
                vec![
                    page(&["uid=a,dc=x"], 0, Some(Some(b"p2"))),
                    page(&["uid=b,dc=x"], 0, Some(Some(b"p3"))),
                    page(&["uid=c,dc=x"], 0, Some(Some(b""))),
                ],
                3,
            ),
            (
                vec![
                    page(&["uid=a,dc=x"], 0, Some(Some(b"c"))),
                    page(&["uid=b,dc=x"], 0, Some(Some(b"c"))),
                    page(&["uid=c,dc=x"], 0, Some(Some(b""))),
                ],
                3,
            ),
            (
                vec![page(&["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x"], 0, None)],
                1,
            ),
        ];
        for (answers, pages) in cases {
            let config = scripted(answers, true).await;
            let (dns, got_pages) = search(&config, 1).await.expect("reads");
            assert_eq!((dns, got_pages), (abc(), pages));
        }
    }

    /// A page that fails ends the search with its result, even after pages that
    /// succeeded and even when it still names a next page: never a partial read.
    #[tokio::test]
    async fn a_failed_page_is_the_search_error() {
        let config = scripted(
            vec![
                page(&["uid=a,dc=x"], 0, Some(Some(b"p2"))),
                page(&["uid=b,dc=x"], 4, None),
            ],
            true,
        )
        .await;
        let err = reason(search(&config, 1).await.expect_err("size limit"));
        assert!(
            matches!(&err, SearchFailure::SizeLimitPaged { result } if result.code == rc::SIZE_LIMIT_EXCEEDED),
            "{err:?}"
        );
        let config = scripted(vec![page(&["uid=a,dc=x"], 11, Some(Some(b"p2")))], true).await;
        let err = reason(search(&config, 1).await.expect_err("admin limit"));
        assert!(
            matches!(&err, SearchFailure::Refused { result } if result.code == rc::ADMIN_LIMIT_EXCEEDED),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("adminLimitExceeded (11)"), "{err}");
    }

    /// Paged results that would be asked for forever, and a control that does not
    /// parse, end the search with an error instead of a loop or a panic.
    /// A search done whose result code is `rc` (a BER INTEGER's content bytes).
    fn done_rc(id: i32, rc: &[u8]) -> Vec<u8> {
        let result = [tlv(0x0a, rc), octets(b""), octets(b"")].concat();
        message(id, tlv(0x65, &result), &[])
    }

    /// Binds anonymously and refreshes the user search from `cookie`.
    async fn refresh(config: &LdapConfig, cookie: &[u8]) -> Result<Synced, LdapError> {
        let mut conn = Conn::open(config).await?;
        conn.bind(&Bind::Anonymous).await?;
        let r = conn
            .sync_refresh(&config.users.search, &[], Some(cookie.to_vec()))
            .await;
        conn.close().await;
        r
    }

    /// `e-syncRefreshRequired` (4096), which slapd did not produce in any test:
    /// the cookie cannot be served, so the read must be full.
    #[tokio::test]
    async fn a_server_that_cannot_serve_the_cookie_asks_for_a_full_refresh() {
        let answers: Vec<Answer> = vec![Box::new(|id| done_rc(id, &[0x10, 0x00]))];
        let config = scripted(answers, true).await;
        let r = refresh(&config, b"rid=000,csn=20261203000000.000000Z#000000#000#000000").await;
        assert!(
            matches!(&r, Ok(Synced::RefreshRequired(res)) if res.code == 4096),
            "{r:?}"
        );
    }

    /// An entry whose sync state control cannot be read ends the refresh with a typed
    /// error (the next run reads everything), not a panic in ldap3's parser.
    #[tokio::test]
    async fn a_malformed_sync_state_control_is_an_error_not_a_crash() {
        let sync_state = |value: &[u8]| {
            tlv(
                0x30,
                &[octets(b"1.3.6.1.4.1.4203.1.9.1.2"), octets(value)].concat(),
            )
        };
        for value in [
            &[0x30, 0x03, 0x0a, 0x01][..],
            &[0x30, 0x00][..],
            &[0x04, 0x01, 0x00][..],
        ] {
            let control = sync_state(value);
            let answers: Vec<Answer> = vec![Box::new(move |id| {
                let entry = tlv(0x64, &[octets(b"uid=a,dc=x"), tlv(0x30, &[])].concat());
                let mut out = message(id, entry, std::slice::from_ref(&control));
                out.extend(done(id, 0, &[]));
                out
            })];
            let config = scripted(answers, true).await;
            let r = refresh(&config, b"rid=000").await;
            assert!(
                matches!(
                    &r,
                    Err(LdapError::Search {
                        reason: SearchFailure::BadSync { .. },
                        ..
                    })
                ),
                "{value:?}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn paged_results_that_cannot_go_on_are_an_error() {
        let stuck = vec![
            page(&["uid=a,dc=x"], 0, Some(Some(b"c"))),
            page(&[], 0, Some(Some(b"c"))),
        ];
        let config = scripted(stuck, true).await;
        let err = reason(search(&config, 1).await.expect_err("stuck"));
        assert!(
            matches!(err, SearchFailure::PagesDoNotAdvance { page: 2 }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("paged results do not advance: page 2"),
            "{err}"
        );

        let config = scripted(
            vec![
                page(&["uid=a,dc=x"], 0, Some(Some(b"p2"))),
                page(&["uid=b,dc=x"], 0, Some(None)),
            ],
            true,
        )
        .await;
        let err = reason(search(&config, 1).await.expect_err("bad control"));
        assert!(matches!(err, SearchFailure::BadPagedControl), "{err:?}");
        assert!(err.to_string().contains("cannot be parsed"), "{err}");

        // Values that parse as BER but not as ldap3's parser expects (it panics on
        // them): a size that is not an INTEGER, a constructed cookie, no cookie.
        let malformed = [
            tlv(0x30, &[octets(b"\0"), octets(b"c")].concat()),
            tlv(0x30, &[tlv(0x80, &[0]), octets(b"c")].concat()),
            tlv(0x30, &[tlv(0x02, &[0]), tlv(0x30, &[])].concat()),
            tlv(0x30, &tlv(0x02, &[0])),
        ];
        for value in malformed {
            let control = paged_value(value.clone());
            let last: Answer = Box::new(move |id| {
                let mut out = entry(id, b"uid=b,dc=x");
                out.extend(done(id, 0, std::slice::from_ref(&control)));
                out
            });
            let config = scripted(vec![page(&["uid=a,dc=x"], 0, Some(Some(b"p2"))), last], true).await;
            let err = reason(search(&config, 1).await.expect_err("bad control"));
            assert!(
                matches!(err, SearchFailure::BadPagedControl),
                "{value:?}: {err:?}"
            );
        }
    }

    /// A server that closes the connection mid-message, one that stays silent, and
    /// one that sends a DN that is not UTF-8: each is an error that says so, with
    /// how far the search got.
    #[tokio::test]
    async fn what_slapd_never_sends_is_a_clear_error() {
        let cut: Answer = Box::new(|id| {
            let mut e = entry(id, b"uid=a,dc=x");
            e.truncate(e.len() - 3);
            e
        });
        let config = scripted(vec![cut], false).await;
        let err = search(&config, 0).await.expect_err("cut");
        let msg = err.to_string();
        assert!(
            matches!(&err, LdapError::Search { reason: SearchFailure::Lost { entries: 0, .. }, base, .. } if base == "dc=x"),
            "{err:?}"
        );
        assert!(msg.contains("the connection was lost after 0 entries"), "{msg}");

        let config = scripted(vec![], true).await;
        let err = reason(search(&config, 0).await.expect_err("silent"));
        assert!(
            matches!(err, SearchFailure::Timeout { entries: 0, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("no answer within 500ms (`timeout`) after 0 entries"),
            "{err}"
        );

        let not_utf8: Answer = Box::new(|id| {
            let mut out = entry(id, b"uid=a,dc=x");
            out.extend(entry(id, b"uid=\xff,dc=x"));
            out.extend(done(id, 0, &[]));
            out
        });
        let config = scripted(vec![not_utf8], true).await;
        let err = reason(search(&config, 0).await.expect_err("not UTF-8"));
        assert!(
            matches!(
                err,
                SearchFailure::Malformed {
                    what: "a DN that is not UTF-8",
                    entries: 1
                }
            ),
            "{err:?}"
        );
    }
}
