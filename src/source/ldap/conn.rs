//! The connection: TCP, TLS (ldaps:// or StartTLS, rustls), the simple bind, and
//! paged searches (RFC 2696) that hand each entry to the caller as it arrives.
//!
//! Every way a read can end early is an error here: a lost connection, a timeout,
//! a size or time limit, a referral, a server that refuses paging. A search either
//! delivered every entry or it failed; there is no third outcome.

use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::{MakeCritical, PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult};
use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;

use super::LdapError;
use super::config::{Bind, LdapConfig, Scope, Search, TlsVerify};
use super::entry::{Entry, parse_entry, parse_reference};

const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// LDAP_SERVER_DOMAIN_SCOPE_OID: no continuation references to other partitions.
const DOMAIN_SCOPE_OID: &str = "1.2.840.113556.1.4.1339";

/// An open, bound connection.
pub struct Conn {
    ldap: Ldap,
    url: String,
    timeout: Duration,
    /// The task that drives the socket; its error explains a lost connection.
    driver: Option<JoinHandle<ldap3::result::Result<()>>>,
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
    /// Connects (TLS as configured) within `connect_timeout`.
    pub async fn open(c: &LdapConfig) -> Result<Conn, LdapError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(c.connect_timeout)
            .set_starttls(c.starttls);
        match &c.tls {
            TlsVerify::System => {}
            TlsVerify::CaFile { certs, .. } => {
                settings = settings.set_config(client_config(certs).map_err(|message| LdapError::Tls {
                    url: c.url.clone(),
                    message,
                })?);
            }
            TlsVerify::Skip => settings = settings.set_no_tls_verify(true),
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &c.url)
            .await
            .map_err(|e| connect_error(c, e))?;
        let driver = Some(tokio::spawn(conn.drive()));
        Ok(Conn {
            ldap,
            url: c.url.clone(),
            timeout: c.timeout,
            driver,
        })
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
        let result = self
            .ldap
            .with_timeout(self.timeout)
            .simple_bind(dn, password)
            .await;
        let res = match result {
            Ok(res) => res,
            Err(e) => return Err(fail(self.operation_error(e, None).await)),
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
        mut each: impl FnMut(Entry) -> Result<(), LdapError>,
    ) -> Result<SearchStats, LdapError> {
        let url = self.url.clone();
        let fail = |message: String| LdapError::Search {
            url: url.clone(),
            base: search.base_dn.clone(),
            filter: search.filter.clone(),
            message,
        };
        let mut stats = SearchStats::default();
        let mut cookie: Vec<u8> = Vec::new();
        loop {
            let mut controls: Vec<RawControl> = Vec::new();
            if mode.page_size > 0 {
                // Critical: a server that cannot page must say so, not silently
                // return a truncated first page.
                controls.push(
                    PagedResults {
                        size: i32::try_from(mode.page_size).unwrap_or(i32::MAX),
                        cookie: std::mem::take(&mut cookie),
                    }
                    .critical()
                    .into(),
                );
            }
            if mode.domain_scope {
                controls.push(RawControl {
                    ctype: DOMAIN_SCOPE_OID.to_owned(),
                    crit: false,
                    val: None,
                });
            }
            let mut ldap = self.ldap.clone();
            ldap.with_timeout(self.timeout);
            if !controls.is_empty() {
                ldap.with_controls(controls);
            }
            let started = ldap
                .streaming_search(
                    &search.base_dn,
                    search.scope.to_ldap3(),
                    &search.filter,
                    attrs.to_vec(),
                )
                .await;
            let mut stream = match started {
                Ok(s) => s,
                Err(e) => return Err(fail(self.operation_error(e, Some(stats.entries)).await)),
            };
            loop {
                let item = match stream.next().await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => return Err(fail(self.operation_error(e, Some(stats.entries)).await)),
                };
                if item.is_intermediate() {
                    continue;
                }
                if item.is_ref() {
                    return Err(fail(format!(
                        "the server returned a referral to {} instead of entries; dirsync does \
                         not follow referrals: narrow `base_dn`, or point `url` at the server \
                         that holds them{}",
                        parse_reference(item.0).join(", "),
                        if mode.domain_scope {
                            ""
                        } else {
                            " (Active Directory: `domain_scope = true`)"
                        }
                    )));
                }
                let entry = parse_entry(item.0)
                    .ok_or_else(|| fail("the server sent an entry dirsync cannot parse".to_owned()))?;
                each(entry)?;
                stats.entries += 1;
            }
            let res = stream.finish().await;
            stats.pages += 1;
            if res.rc != 0 {
                return Err(fail(search_result_error(&res, mode, stats.pages == 1)));
            }
            if mode.page_size == 0 {
                return Ok(stats);
            }
            match paged_cookie(&res) {
                // The server ignored the control and answered in one go, complete.
                None => return Ok(stats),
                Some(Err(())) => {
                    return Err(fail(
                        "the server's paged results control cannot be parsed".to_owned(),
                    ));
                }
                Some(Ok(c)) if c.is_empty() => return Ok(stats),
                Some(Ok(c)) => {
                    tracing::debug!(
                        base = %search.base_dn,
                        page = stats.pages,
                        entries = stats.entries,
                        "Read a page of search results."
                    );
                    cookie = c;
                }
            }
        }
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
            found = Some(e);
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// Ends the session politely; a failure here changes nothing that was read.
    pub async fn close(mut self) {
        let _ = self.ldap.with_timeout(self.timeout).unbind().await;
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
    }

    /// Words an error from an operation: a timeout, or a lost connection with the
    /// reason the socket task saw.
    async fn operation_error(&mut self, e: ldap3::LdapError, entries: Option<usize>) -> String {
        use ldap3::LdapError as E;
        let after = entries.map(|n| format!(" after {n} entries")).unwrap_or_default();
        match e {
            E::Timeout { .. } => format!(
                "no answer within {} (`timeout`){after}",
                humantime::format_duration(self.timeout)
            ),
            E::EndOfStream | E::OpSend { .. } | E::ResultRecv { .. } | E::IdScrubSend { .. } => {
                // The socket task is ending; its error, if it had one, says why.
                let why = match self.driver.take() {
                    Some(driver) => match tokio::time::timeout(Duration::from_secs(1), driver).await {
                        Ok(Ok(Err(e))) => format!("the server closed it ({e})"),
                        _ => "the server closed it".to_owned(),
                    },
                    None => "the server closed it".to_owned(),
                };
                format!("the connection was lost{after}: {why}")
            }
            E::FilterParsing => "the filter is not valid".to_owned(),
            other => other.to_string(),
        }
    }
}

/// A rustls client config that trusts only the given CAs.
fn client_config(certs: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("`ca_file` holds a certificate rustls refuses: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A failed connect as a connect error or a TLS error, with a hint where one helps.
fn connect_error(c: &LdapConfig, e: ldap3::LdapError) -> LdapError {
    use ldap3::LdapError as E;
    let url = c.url.clone();
    let connect = |message: String| LdapError::Connect {
        url: url.clone(),
        message,
    };
    let tls = |message: String| LdapError::Tls {
        url: url.clone(),
        message,
    };
    match e {
        E::Timeout { .. } => connect(format!(
            "no connection within {} (`connect_timeout`)",
            humantime::format_duration(c.connect_timeout)
        )),
        E::Io { source } => match source.get_ref().and_then(|s| s.downcast_ref::<rustls::Error>()) {
            Some(err) => tls(tls_message(err, c)),
            None if c.starttls && source.kind() == std::io::ErrorKind::UnexpectedEof => tls(format!(
                "the server closed the connection during StartTLS: {source}"
            )),
            None => connect(source.to_string()),
        },
        E::LdapResult { result } => tls(format!("the server refused StartTLS: {}", describe(&result))),
        E::DNSName { source } => tls(format!("the host is not a valid TLS server name: {source}")),
        E::Rustls { source } => tls(tls_message(&source, c)),
        E::UrlParsing { source } => connect(format!("not a valid URL: {source}")),
        other => connect(other.to_string()),
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
        _ => String::new(),
    };
    format!("handshake failed: {err}{hint}")
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

/// The cookie of the paged results response control: `None` without the control,
/// `Some(Err)` when its value does not parse.
fn paged_cookie(res: &LdapResult) -> Option<Result<Vec<u8>, ()>> {
    let raw = res
        .ctrls
        .iter()
        .map(|c| &c.1)
        .find(|raw| raw.ctype == PAGED_RESULTS_OID)?;
    Some(parse_paged_value(raw.val.as_deref().unwrap_or_default()))
}

/// `realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }`.
fn parse_paged_value(val: &[u8]) -> Result<Vec<u8>, ()> {
    let (_, tag) = ldap3::asn1::parse_tag(val).map_err(|_| ())?;
    let mut parts = tag.expect_constructed().ok_or(())?.into_iter();
    let _size = parts.next().ok_or(())?;
    parts.next().ok_or(())?.expect_primitive().ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn paged_control_round_trip_and_garbage() {
        let raw: RawControl = PagedResults {
            size: 0,
            cookie: b"abc".to_vec(),
        }
        .into();
        assert_eq!(
            parse_paged_value(raw.val.as_deref().unwrap_or_default()),
            Ok(b"abc".to_vec())
        );
        assert_eq!(parse_paged_value(b""), Err(()));
        assert_eq!(parse_paged_value(&[0x30, 0x03, 0x02, 0x01, 0x00]), Err(()));
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
