//! Why a read of the directory failed, as data: what was asked (URL, bind DN, base,
//! filter, attribute), what the server answered (its result code and text), and the
//! hint that fixes it. The `Display` text is what operators read (exit code 6).

use std::time::Duration;

/// The directory could not be read completely. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("ldap {url}: cannot connect: {reason}")]
    Connect { url: String, reason: ConnectFailure },
    #[error("ldap {url}: tls: {reason}")]
    Tls { url: String, reason: TlsFailure },
    #[error("ldap {url}: bind as `{dn}` failed: {reason}")]
    Bind {
        url: String,
        /// The bind DN, or `(anonymous)`.
        dn: String,
        reason: BindFailure,
    },
    #[error("ldap {url}: search of `{base}` with {filter}: {reason}")]
    Search {
        url: String,
        base: String,
        filter: String,
        reason: SearchFailure,
    },
    #[error("ldap {url}: {dn}{}: {problem}", attribute.as_ref().map(|a| format!(": attribute `{a}`")).unwrap_or_default())]
    Data {
        url: String,
        dn: String,
        attribute: Option<String>,
        problem: DataProblem,
    },
    /// The task that read the directory ended without a result.
    #[error("ldap {url}: the read was {how}")]
    Interrupted { url: String, how: Interrupted },
}

/// How the reading task ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Interrupted {
    /// The runtime dropped it (it was shutting down).
    #[error("cancelled")]
    Cancelled,
    /// It panicked; the panic's message.
    #[error("stopped by a bug in dirsync: {0}")]
    Panicked(String),
}

/// An LDAP result code and the server's diagnostic text, shown as
/// `name (code): text` so that an operator can look the code up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} ({code}){}",
    code_name(*.code),
    if .text.is_empty() { String::new() } else { format!(": {}", .text) }
)]
pub struct ServerResult {
    pub code: u32,
    pub text: String,
}

impl From<&ldap3::LdapResult> for ServerResult {
    fn from(res: &ldap3::LdapResult) -> Self {
        ServerResult {
            code: res.rc,
            text: res.text.trim().to_owned(),
        }
    }
}

/// The RFC 4511 name of a result code, as ldap3 prints it (`rc=49
/// (invalidCredentials), …`): one table of names, ldap3's.
fn code_name(code: u32) -> String {
    let shown = ldap3::LdapResult {
        rc: code,
        matched: String::new(),
        text: String::new(),
        refs: Vec::new(),
        ctrls: Vec::new(),
    }
    .to_string();
    shown
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(name, _)| if name == "unknown" { "error" } else { name })
        .unwrap_or("error")
        .to_owned()
}

/// Result codes dirsync treats apart (RFC 4511, appendix A).
pub mod rc {
    pub const SUCCESS: u32 = 0;
    pub const TIME_LIMIT_EXCEEDED: u32 = 3;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const STRONGER_AUTH_REQUIRED: u32 = 8;
    pub const REFERRAL: u32 = 10;
    pub const ADMIN_LIMIT_EXCEEDED: u32 = 11;
    pub const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
    pub const CONFIDENTIALITY_REQUIRED: u32 = 13;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS_RIGHTS: u32 = 50;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
    /// RFC 4533 `e-syncRefreshRequired`.
    pub const E_SYNC_REFRESH_REQUIRED: u32 = 4096;
}

/// `no answer within 10s (`timeout`)`: the duration as configured.
fn within(d: &Duration) -> humantime::FormattedDuration {
    humantime::format_duration(*d)
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("no connection within {} (`connect_timeout`)", within(.after))]
    Timeout { after: Duration },
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("{0}")]
    Client(#[source] Box<ldap3::LdapError>),
}

/// Why TLS could not be set up (ldaps:// or StartTLS).
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    #[error("the server refused StartTLS: {0}")]
    StartTlsRefused(ServerResult),
    #[error("handshake failed: {source}{hint}")]
    Handshake {
        #[source]
        source: Box<rustls::Error>,
        hint: TlsHint,
    },
    #[error("the server closed the connection during the handshake: {0}")]
    Closed(#[source] std::io::Error),
    #[error("the host is not a valid TLS server name: {0}")]
    ServerName(#[source] Box<ldap3::LdapError>),
    #[error("`ca_file` holds a certificate rustls refuses: {0}")]
    CaFile(#[source] Box<rustls::Error>),
    #[error("no trusted CA certificate was found on this system: set `ca_file`")]
    NoSystemRoots,
}

/// What to do about a failed handshake, where something helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsHint {
    #[error("")]
    None,
    /// Not signed by a CA in the configured `ca_file`.
    #[error(": the server's certificate is not signed by a CA in {}", .0.display())]
    NotInCaFile(std::path::PathBuf),
    /// Not signed by a CA of the system's store.
    #[error(
        ": the server's certificate is not signed by a CA this system trusts; set `ca_file` to the CA that signed it"
    )]
    NotInSystemStore,
    #[error(": the certificate does not name the host in `url`")]
    NotForHost,
    #[error(": the server's certificate has expired")]
    Expired,
}

/// Why the bind did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BindFailure {
    #[error("{result}: check `bind_dn` and the password")]
    InvalidCredentials { result: ServerResult },
    #[error("{result}: the server wants TLS first: use ldaps:// or `starttls = true`")]
    TlsRequired { result: ServerResult },
    #[error("{result}")]
    Refused { result: ServerResult },
    #[error("no answer within {} (`timeout`)", within(.after))]
    Timeout { after: Duration },
    #[error("the connection was lost: {cause}")]
    Lost { cause: LostCause },
}

/// What is known of a connection that went away.
#[derive(Debug, thiserror::Error)]
pub enum LostCause {
    #[error("the server closed it")]
    Closed,
    /// ldap3's connection task ended with this error.
    #[error("{0}")]
    Client(#[source] Box<ldap3::LdapError>),
}

/// Why a search did not deliver every entry.
#[derive(Debug, thiserror::Error)]
pub enum SearchFailure {
    #[error(
        "the server refuses paged results (RFC 2696): {result}; allow paging for the bind \
         identity, or set `page_size = 0` to read without paging (the server's size limit \
         then applies)"
    )]
    PagingRefused { result: ServerResult },
    #[error(
        "{result}: the server's size limit ended the search before every entry was read; \
         raise the limit for paged searches of the bind identity (OpenLDAP: \
         `limits … size.prtotal=unlimited`)"
    )]
    SizeLimitPaged { result: ServerResult },
    #[error(
        "{result}: the server's size limit ended the search before every entry was read; \
         turn paging on with `page_size`"
    )]
    SizeLimit { result: ServerResult },
    #[error("{result}: the server's time limit ended the search")]
    TimeLimit { result: ServerResult },
    #[error(
        "{result}: the server refers to {}; dirsync does not follow referrals: point `url` at \
         the server that holds the base DN",
        if refs.is_empty() { "another server".to_owned() } else { refs.join(", ") }
    )]
    ReferralResult {
        result: ServerResult,
        refs: Box<[String]>,
    },
    #[error("{result}: the base DN does not exist")]
    NoSuchBase { result: ServerResult },
    #[error("{result}: the bind identity may not read here")]
    AccessDenied { result: ServerResult },
    #[error("{result}: the server wants TLS: use ldaps:// or `starttls = true`")]
    TlsRequired { result: ServerResult },
    #[error("{result}")]
    Refused { result: ServerResult },
    /// A continuation reference (RFC 4511 §4.5.3) among the entries.
    #[error(
        "the server returned a referral to {} instead of entries; dirsync does not follow \
         referrals: narrow `base_dn`, or point `url` at the server that holds them{}",
        urls.join(", "),
        if *domain_scope { "" } else { " (Active Directory: `domain_scope = true`)" }
    )]
    Referral { urls: Vec<String>, domain_scope: bool },
    #[error(
        "the server's paged results do not advance: page {page} brought no entries and the \
         same cookie as the page before"
    )]
    PagesDoNotAdvance { page: usize },
    #[error("the server's paged results control cannot be parsed")]
    BadPagedControl,
    #[error("the server sent {what} after {entries} entries")]
    Malformed { what: &'static str, entries: usize },
    #[error(
        "{result}: the server does not offer content synchronisation (RFC 4533): enable the syncprov overlay"
    )]
    NoContentSync { result: ServerResult },
    /// A content synchronisation answer that cannot be used; the next run reads
    /// everything.
    #[error("the server's content synchronisation answer holds {what}")]
    BadSync { what: &'static str },
    /// The server will not refresh from the stored cookie: it names a state the
    /// server does not have. Nothing of the run is pushed; the next run reads
    /// everything.
    #[error(
        "{result}: the server refuses the stored content synchronisation cookie, which names a state \
         it does not have (a cookie from another server, or a server restored from an older backup)"
    )]
    CookieRefused { result: ServerResult },
    /// An Active Directory answer that the USN read cannot use; the next run reads
    /// everything.
    #[error("the domain controller's answer holds {what}")]
    BadUsn { what: &'static str },
    #[error("the filter is not valid")]
    BadFilter,
    #[error("no answer within {} (`timeout`) after {entries} entries", within(.after))]
    Timeout { after: Duration, entries: usize },
    #[error("the connection was lost after {entries} entries: {cause}")]
    Lost { entries: usize, cause: LostCause },
}

impl SearchFailure {
    /// The failure a search result other than success stands for. `paged`: the
    /// search sent the paged results control; `first_page`: this result ends the
    /// first page (where a refusal of paging shows).
    pub(crate) fn from_result(res: &ldap3::LdapResult, paged: bool, first_page: bool) -> SearchFailure {
        let result = ServerResult::from(res);
        let paging_refused = paged
            && (res.rc == rc::UNAVAILABLE_CRITICAL_EXTENSION
                || (first_page
                    && matches!(res.rc, rc::ADMIN_LIMIT_EXCEEDED | rc::UNWILLING_TO_PERFORM)
                    && res.text.to_lowercase().contains("paged")));
        if paging_refused {
            return SearchFailure::PagingRefused { result };
        }
        match res.rc {
            rc::SIZE_LIMIT_EXCEEDED if paged => SearchFailure::SizeLimitPaged { result },
            rc::SIZE_LIMIT_EXCEEDED => SearchFailure::SizeLimit { result },
            rc::TIME_LIMIT_EXCEEDED => SearchFailure::TimeLimit { result },
            rc::REFERRAL => SearchFailure::ReferralResult {
                result,
                refs: res.refs.clone().into(),
            },
            rc::NO_SUCH_OBJECT => SearchFailure::NoSuchBase { result },
            rc::INSUFFICIENT_ACCESS_RIGHTS => SearchFailure::AccessDenied { result },
            rc::STRONGER_AUTH_REQUIRED | rc::CONFIDENTIALITY_REQUIRED => {
                SearchFailure::TlsRequired { result }
            }
            _ => SearchFailure::Refused { result },
        }
    }
}

/// Why an entry's data cannot be used. The entry's DN and the attribute are the
/// [`LdapError::Data`] fields around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataProblem {
    /// A required field's attribute is absent or empty.
    #[error(
        "missing, and `source.{search}.{key}` says it holds the {kind}'s {key}; narrow \
         `source.{search}.filter` to entries that have it",
        kind = if *search == "users" { "user" } else { "group" }
    )]
    Missing {
        /// `users` or `groups`.
        search: &'static str,
        /// The config key naming the attribute (`id`, `username`, `name`).
        key: &'static str,
    },
    #[error(
        "the value is not valid UTF-8 (byte {valid_up_to} of {len}); only objectGUID and \
         objectSid are decoded as binary, so leave this attribute out of the mapping"
    )]
    NotUtf8 { valid_up_to: usize, len: usize },
    #[error("a GUID is 16 bytes, this value has {len}")]
    BadGuid { len: usize },
    #[error("not a valid SID ({len} bytes)")]
    BadSid { len: usize },
    #[error("`{value}` is not a boolean (TRUE/FALSE)")]
    NotBoolean { value: String },
    #[error("`{value}` is not a userAccountControl number")]
    NotAccountControl { value: String },
    /// Two entries with one id; the DN of the first is named here, the second's is
    /// the error's.
    #[error("has the same {kind} id `{id}` as `{first_dn}`; ids must be unique")]
    DuplicateId {
        kind: IdKind,
        id: Box<str>,
        first_dn: Box<str>,
    },
    #[error("ranged retrieval stopped: {0}; the group's remaining members cannot be read")]
    RangeStopped(RangeStop),
}

/// Whose ids clash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdKind {
    #[error("user")]
    User,
    #[error("group")]
    Group,
}

/// Why the next part of a ranged attribute did not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeStop {
    #[error("the server returned no entry")]
    NoEntry,
    #[error("the answer holds no ranged values")]
    NoValues,
    /// Content synchronisation sends whole entries; a ranged value in one is not
    /// followed.
    #[error("a synchronised entry holds ranged values")]
    Synchronised,
    /// Asked for the values from `asked` on, the server answered another range:
    /// following it could ask for the same values forever.
    #[error("asked for the values from {asked} on, the server answered the range from {got}")]
    OtherRange { asked: u64, got: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_are_named_as_ldap3_names_them() {
        let cases = [
            (
                49,
                "80090308: LdapErr: DSID-0C09044E, data 52e",
                "invalidCredentials (49): 80090308: LdapErr: DSID-0C09044E, data 52e",
            ),
            (4, "", "sizeLimitExceeded (4)"),
            (51, " not now ", "busy (51): not now"),
            (4711, "", "error (4711)"),
        ];
        for (code, text, want) in cases {
            let shown = ServerResult {
                code,
                text: text.trim().to_owned(),
            }
            .to_string();
            assert_eq!(shown, want);
        }
    }

    fn result(rc: u32, text: &str) -> ldap3::LdapResult {
        ldap3::LdapResult {
            rc,
            matched: String::new(),
            text: text.to_owned(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    #[test]
    fn search_results_say_what_to_do() {
        let cases = [
            (result(4, ""), true, true, "size.prtotal"),
            (result(4, ""), false, true, "`page_size`"),
            (
                result(11, "pagedResults control not allowed"),
                true,
                true,
                "refuses paged results",
            ),
            (result(12, ""), true, false, "refuses paged results"),
            (
                result(11, "too many"),
                true,
                false,
                "adminLimitExceeded (11): too many",
            ),
            (result(32, ""), true, true, "does not exist"),
            (result(3, ""), true, true, "time limit"),
            (result(13, ""), true, true, "`starttls = true`"),
        ];
        for (res, paged, first, want) in cases {
            let got = SearchFailure::from_result(&res, paged, first).to_string();
            assert!(got.contains(want), "{got}");
        }
    }
}
