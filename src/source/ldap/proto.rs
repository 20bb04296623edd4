//! The LDAP protocol (RFC 4511) as dirsync speaks it: requests encoded, answers
//! framed and decoded straight from the bytes into entries and results.
//!
//! Pure: bytes in, bytes out. Requests are built with ldap3's BER structures and its
//! RFC 4515 filter parser. Answers are decoded here, without an intermediate tree:
//! at 100,000 users the read is bound by decoding, and a generic tree with a copy
//! of every value per level cost more CPU than the server spent (BENCHMARKS.md).
//!
//! Every malformed answer is an error, never a panic: lengths are checked against
//! the bytes that hold them, and only the definite BER length form LDAP allows
//! (RFC 4511 §5.1) is accepted.

use bytes::BytesMut;
use ldap3::asn1::{
    ASNTag, Boolean, Enumerated, Integer, OctetString, PL, Sequence, StructureTag, Tag, TagClass, write,
};

use super::entry::Entry;

pub const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// LDAP_SERVER_DOMAIN_SCOPE_OID: no continuation references to other partitions.
pub const DOMAIN_SCOPE_OID: &str = "1.2.840.113556.1.4.1339";
const STARTTLS_OID: &str = "1.3.6.1.4.1.1466.20037";

/// The largest message accepted, and so the most a message can make dirsync
/// reserve. A 1,500-value AD range or a 100,000-member OpenLDAP group is a few MB;
/// anything near this is a broken stream.
const MAX_MESSAGE: usize = 64 << 20;

// Tag bytes: universal, and [APPLICATION n] constructed (0x60 | n) or primitive.
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const ENUMERATED: u8 = 0x0a;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const BIND_RESPONSE: u8 = 0x61;
const SEARCH_RESULT_ENTRY: u8 = 0x64;
const SEARCH_RESULT_DONE: u8 = 0x65;
const SEARCH_RESULT_REFERENCE: u8 = 0x73;
const EXTENDED_RESPONSE: u8 = 0x78;
const INTERMEDIATE_RESPONSE: u8 = 0x79;
/// `referral [3]` in an LDAPResult.
const REFERRAL: u8 = 0xa3;
/// `controls [0]` in an LDAPMessage.
const CONTROLS: u8 = 0xa0;

/// An answer that does not follow the protocol; says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A request or response control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub oid: String,
    pub critical: bool,
    pub value: Option<Vec<u8>>,
}

impl Control {
    /// The paged results control (RFC 2696), critical: a server that cannot page
    /// must say so, not silently return a truncated first page.
    pub fn paged(size: u32, cookie: Vec<u8>) -> Control {
        let value = encode(
            Tag::Sequence(Sequence {
                inner: vec![
                    Tag::Integer(Integer {
                        inner: i64::from(size.min(i32::MAX as u32)),
                        ..Default::default()
                    }),
                    Tag::OctetString(OctetString {
                        inner: cookie,
                        ..Default::default()
                    }),
                ],
                ..Default::default()
            })
            .into_structure(),
        );
        Control {
            oid: PAGED_RESULTS_OID.to_owned(),
            critical: true,
            value: Some(value),
        }
    }

    pub fn domain_scope() -> Control {
        Control {
            oid: DOMAIN_SCOPE_OID.to_owned(),
            critical: false,
            value: None,
        }
    }
}

/// An LDAPResult with the controls of its message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdapResult {
    pub rc: u32,
    pub matched: String,
    pub text: String,
    pub refs: Vec<String>,
    pub ctrls: Vec<Control>,
}

impl LdapResult {
    /// The cookie of the paged results response control: `None` without the
    /// control, `Some(Err)` when its value does not parse.
    pub fn paged_cookie(&self) -> Option<Result<Vec<u8>, Malformed>> {
        let c = self.ctrls.iter().find(|c| c.oid == PAGED_RESULTS_OID)?;
        Some(parse_paged_value(c.value.as_deref().unwrap_or_default()))
    }
}

/// `realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }`.
fn parse_paged_value(val: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut r = Reader::new(Reader::new(val).expect(SEQUENCE)?);
    r.integer(INTEGER)?;
    Ok(r.expect(OCTET_STRING)?.to_vec())
}

/// One answer from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: i32,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A SearchResultEntry, decoded into the caller's entry.
    Entry,
    /// SearchResultReference: the URLs of the rest of the tree.
    Reference(Vec<String>),
    SearchDone(LdapResult),
    Bind(LdapResult),
    /// ExtendedResponse; with message ID 0, a notice of disconnection.
    Extended(LdapResult),
    Intermediate,
    /// Any other protocol operation, by its tag byte.
    Other(u8),
}

impl Op {
    /// What the operation is, for an error that says what came instead.
    pub fn describe(&self) -> String {
        match self {
            Op::Entry => "a search result entry".to_owned(),
            Op::Reference(_) => "a search result reference".to_owned(),
            Op::SearchDone(_) => "a search result".to_owned(),
            Op::Bind(_) => "a bind response".to_owned(),
            Op::Extended(_) => "an extended response".to_owned(),
            Op::Intermediate => "an intermediate response".to_owned(),
            Op::Other(tag) => format!("an operation dirsync does not know (tag 0x{tag:02x})"),
        }
    }
}

/// Where the first message in a buffer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The first message is the first `n` bytes.
    Whole(usize),
    /// More bytes are needed; the message's total size once its header is in.
    Partial(Option<usize>),
}

/// Finds the end of the first message in `buf`.
pub fn frame(buf: &[u8]) -> Result<Frame, Malformed> {
    let Some((tag, len, header)) = header(buf)? else {
        return Ok(Frame::Partial(None));
    };
    if tag != SEQUENCE {
        return Err(Malformed("a message that is not an LDAPMessage SEQUENCE"));
    }
    if len > MAX_MESSAGE {
        return Err(Malformed("a message larger than 64 MiB"));
    }
    let total = header + len;
    Ok(if buf.len() >= total {
        Frame::Whole(total)
    } else {
        Frame::Partial(Some(total))
    })
}

/// The result of search `id` if `msg` (one whole message) is the one that ends it,
/// read without decoding anything else: entries are only looked at for their
/// message ID and operation.
pub fn search_done(msg: &[u8], id: i32) -> Option<LdapResult> {
    let mut r = Reader::new(Reader::new(msg).expect(SEQUENCE).ok()?);
    if r.integer(INTEGER).ok()? != i64::from(id) {
        return None;
    }
    if r.element().ok()?.0 != SEARCH_RESULT_DONE {
        return None;
    }
    match decode(msg, &mut Entry::default()).ok()?.op {
        Op::SearchDone(res) => Some(res),
        _ => None,
    }
}

/// Decodes one whole message, as [`frame`] delimited it. A search result entry is
/// decoded into `entry`, whose strings and buffers are reused from one entry to
/// the next: after the first few entries of a search, decoding allocates nothing.
pub fn decode(msg: &[u8], entry: &mut Entry) -> Result<Message, Malformed> {
    let mut r = Reader::new(Reader::new(msg).expect(SEQUENCE)?);
    let id = i32::try_from(r.integer(INTEGER)?).map_err(|_| Malformed("a message ID out of range"))?;
    let (tag, body) = r.element()?;
    let mut op = match tag {
        SEARCH_RESULT_ENTRY => {
            decode_entry(body, entry)?;
            Op::Entry
        }
        SEARCH_RESULT_REFERENCE => Op::Reference(
            Reader::new(body)
                .strings()?
                .into_iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        ),
        SEARCH_RESULT_DONE => Op::SearchDone(result(body)?),
        BIND_RESPONSE => Op::Bind(result(body)?),
        EXTENDED_RESPONSE => Op::Extended(result(body)?),
        INTERMEDIATE_RESPONSE => Op::Intermediate,
        other => Op::Other(other),
    };
    if let Op::SearchDone(res) | Op::Bind(res) | Op::Extended(res) = &mut op
        && let Some(CONTROLS) = r.peek()
    {
        res.ctrls = controls(r.expect(CONTROLS)?)?;
    }
    Ok(Message { id, op })
}

/// `SearchResultEntry ::= [APPLICATION 4] SEQUENCE { objectName, attributes
/// SEQUENCE OF SEQUENCE { type, vals SET OF value } }`, into `e`.
fn decode_entry(body: &[u8], e: &mut Entry) -> Result<(), Malformed> {
    let mut r = Reader::new(body);
    set_utf8(&mut e.dn, r.expect(OCTET_STRING)?, "a DN that is not UTF-8")?;
    let mut list = Reader::new(r.expect(SEQUENCE)?);
    let mut n = 0;
    while !list.is_empty() {
        let mut a = Reader::new(list.expect(SEQUENCE)?);
        if n == e.attrs.len() {
            e.attrs.push((String::new(), Vec::new()));
        }
        let (desc, values) = &mut e.attrs[n];
        set_utf8(
            desc,
            a.expect(OCTET_STRING)?,
            "an attribute name that is not UTF-8",
        )?;
        let mut vals = Reader::new(a.expect(SET)?);
        let mut k = 0;
        while !vals.is_empty() {
            let v = vals.expect(OCTET_STRING)?;
            if k == values.len() {
                values.push(Vec::new());
            }
            values[k].clear();
            values[k].extend_from_slice(v);
            k += 1;
        }
        values.truncate(k);
        n += 1;
    }
    e.attrs.truncate(n);
    Ok(())
}

/// `bytes` into `into` (its buffer reused), if they are UTF-8.
fn set_utf8(into: &mut String, bytes: &[u8], what: &'static str) -> Result<(), Malformed> {
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed(what))?;
    into.clear();
    into.push_str(text);
    Ok(())
}

/// `LDAPResult ::= SEQUENCE { resultCode, matchedDN, diagnosticMessage,
/// referral [3] OPTIONAL }`, and whatever a response adds after it.
fn result(body: &[u8]) -> Result<LdapResult, Malformed> {
    let mut r = Reader::new(body);
    let rc = u32::try_from(r.integer(ENUMERATED)?).map_err(|_| Malformed("a negative result code"))?;
    let matched = String::from_utf8_lossy(r.expect(OCTET_STRING)?).into_owned();
    let text = String::from_utf8_lossy(r.expect(OCTET_STRING)?).into_owned();
    let mut refs = Vec::new();
    if r.peek() == Some(REFERRAL) {
        refs = Reader::new(r.expect(REFERRAL)?)
            .strings()?
            .into_iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
    }
    Ok(LdapResult {
        rc,
        matched,
        text,
        refs,
        ctrls: Vec::new(),
    })
}

/// `Controls ::= SEQUENCE OF Control`, `Control ::= SEQUENCE { controlType,
/// criticality BOOLEAN DEFAULT FALSE, controlValue OCTET STRING OPTIONAL }`.
fn controls(body: &[u8]) -> Result<Vec<Control>, Malformed> {
    let mut list = Reader::new(body);
    let mut out = Vec::new();
    while !list.is_empty() {
        let mut c = Reader::new(list.expect(SEQUENCE)?);
        let mut oid = String::new();
        set_utf8(
            &mut oid,
            c.expect(OCTET_STRING)?,
            "a control type that is not UTF-8",
        )?;
        let mut critical = false;
        if c.peek() == Some(BOOLEAN) {
            critical = c.expect(BOOLEAN)?.iter().any(|b| *b != 0);
        }
        let value = match c.peek() {
            Some(OCTET_STRING) => Some(c.expect(OCTET_STRING)?.to_vec()),
            _ => None,
        };
        out.push(Control { oid, critical, value });
    }
    Ok(out)
}

/// The tag byte, content length and header length of the element at the start of
/// `b`; `None` while `b` does not hold the whole header.
fn header(b: &[u8]) -> Result<Option<(u8, usize, usize)>, Malformed> {
    let (Some(&tag), Some(&first)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if tag & 0x1f == 0x1f {
        return Err(Malformed("a tag number above 30, which LDAP never uses"));
    }
    if first < 0x80 {
        return Ok(Some((tag, usize::from(first), 2)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 {
        return Err(Malformed("an indefinite length, which LDAP does not allow"));
    }
    if n > 4 {
        return Err(Malformed("a length field longer than 4 bytes"));
    }
    let Some(bytes) = b.get(2..2 + n) else {
        return Ok(None);
    };
    let len = bytes.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    Ok(Some((tag, len, 2 + n)))
}

/// Reads BER elements one after another from a slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element's tag byte and contents.
    fn element(&mut self) -> Result<(u8, &'a [u8]), Malformed> {
        let (tag, len, header) = header(self.rest)?.ok_or(Malformed("a truncated element"))?;
        let too_long = Malformed("an element longer than what holds it");
        let end = header.checked_add(len).ok_or(too_long)?;
        let contents = self.rest.get(header..end).ok_or(too_long)?;
        self.rest = &self.rest[end..];
        Ok((tag, contents))
    }

    /// The contents of the next element, which must have tag byte `want`.
    fn expect(&mut self, want: u8) -> Result<&'a [u8], Malformed> {
        match self.element()? {
            (tag, contents) if tag == want => Ok(contents),
            _ => Err(Malformed("an element of an unexpected type")),
        }
    }

    /// A two's complement INTEGER or ENUMERATED of at most 8 bytes.
    fn integer(&mut self, want: u8) -> Result<i64, Malformed> {
        let bytes = self.expect(want)?;
        if bytes.is_empty() || bytes.len() > 8 {
            return Err(Malformed("an integer of an unusable length"));
        }
        let negative = bytes[0] & 0x80 != 0;
        let start = if negative { -1i64 } else { 0 };
        Ok(bytes.iter().fold(start, |acc, &b| (acc << 8) | i64::from(b)))
    }

    /// The rest as a list of OCTET STRINGs.
    fn strings(mut self) -> Result<Vec<&'a [u8]>, Malformed> {
        let mut out = Vec::new();
        while !self.is_empty() {
            out.push(self.expect(OCTET_STRING)?);
        }
        Ok(out)
    }
}

/// The search request's scope, as RFC 4511 numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchScope {
    Base = 0,
    OneLevel = 1,
    Subtree = 2,
}

/// `filter` is not an RFC 4515 filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFilter;

/// A bound LDAPMessage: `id`, the operation, and the controls.
fn message(id: i32, op: Tag, controls: &[Control]) -> Vec<u8> {
    let mut inner = vec![
        Tag::Integer(Integer {
            inner: i64::from(id),
            ..Default::default()
        }),
        op,
    ];
    if !controls.is_empty() {
        inner.push(Tag::StructureTag(StructureTag {
            id: 0,
            class: TagClass::Context,
            payload: PL::C(controls.iter().map(control).collect()),
        }));
    }
    encode(
        Tag::Sequence(Sequence {
            inner,
            ..Default::default()
        })
        .into_structure(),
    )
}

fn control(c: &Control) -> StructureTag {
    let mut inner = vec![Tag::OctetString(OctetString {
        inner: c.oid.as_bytes().to_vec(),
        ..Default::default()
    })];
    if c.critical {
        inner.push(Tag::Boolean(Boolean {
            inner: true,
            ..Default::default()
        }));
    }
    if let Some(v) = &c.value {
        inner.push(Tag::OctetString(OctetString {
            inner: v.clone(),
            ..Default::default()
        }));
    }
    Tag::Sequence(Sequence {
        inner,
        ..Default::default()
    })
    .into_structure()
}

fn encode(tag: StructureTag) -> Vec<u8> {
    let mut buf = BytesMut::new();
    // Writing into memory cannot fail; lber's signature is io's.
    write::encode_into(&mut buf, tag).unwrap_or_default();
    buf.to_vec()
}

fn octets(bytes: &[u8]) -> Tag {
    Tag::OctetString(OctetString {
        inner: bytes.to_vec(),
        ..Default::default()
    })
}

/// `BindRequest` with simple authentication; anonymous is an empty DN and password.
pub fn bind_request(id: i32, dn: &str, password: &str) -> Vec<u8> {
    let op = Tag::Sequence(Sequence {
        id: 0,
        class: TagClass::Application,
        inner: vec![
            Tag::Integer(Integer {
                inner: 3,
                ..Default::default()
            }),
            octets(dn.as_bytes()),
            Tag::OctetString(OctetString {
                id: 0,
                class: TagClass::Context,
                inner: password.as_bytes().to_vec(),
            }),
        ],
    });
    message(id, op, &[])
}

/// `SearchRequest`: aliases never dereferenced, no size or time limit asked for
/// (the server's own limits still apply), values wanted.
pub fn search_request(
    id: i32,
    base: &str,
    scope: SearchScope,
    filter: &str,
    attrs: &[String],
    controls: &[Control],
) -> Result<Vec<u8>, BadFilter> {
    let filter = ldap3::parse_filter(filter).map_err(|()| BadFilter)?;
    let number = |inner: i64| {
        Tag::Integer(Integer {
            inner,
            ..Default::default()
        })
    };
    let op = Tag::Sequence(Sequence {
        id: 3,
        class: TagClass::Application,
        inner: vec![
            octets(base.as_bytes()),
            Tag::Enumerated(Enumerated {
                inner: scope as i64,
                ..Default::default()
            }),
            Tag::Enumerated(Enumerated {
                inner: 0,
                ..Default::default()
            }),
            number(0),
            number(0),
            Tag::Boolean(Boolean {
                inner: false,
                ..Default::default()
            }),
            filter,
            Tag::Sequence(Sequence {
                inner: attrs.iter().map(|a| octets(a.as_bytes())).collect(),
                ..Default::default()
            }),
        ],
    });
    Ok(message(id, op, controls))
}

/// `ExtendedRequest` for StartTLS (RFC 4511 §4.14).
pub fn start_tls_request(id: i32) -> Vec<u8> {
    let op = Tag::Sequence(Sequence {
        id: 23,
        class: TagClass::Application,
        inner: vec![Tag::OctetString(OctetString {
            id: 0,
            class: TagClass::Context,
            inner: STARTTLS_OID.as_bytes().to_vec(),
        })],
    });
    message(id, op, &[])
}

/// `UnbindRequest ::= [APPLICATION 2] NULL`.
pub fn unbind_request(id: i32) -> Vec<u8> {
    let op = Tag::OctetString(OctetString {
        id: 2,
        class: TagClass::Application,
        inner: Vec::new(),
    });
    message(id, op, &[])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::ldap::entry::tests::entry as text_entry;

    /// A SearchResultEntry encoded with lber, the encoder ldap3 uses: an
    /// independent implementation to decode against.
    pub fn entry_message(id: i32, dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
        let attrs = attrs
            .iter()
            .map(|(name, values)| {
                Tag::Sequence(Sequence {
                    inner: vec![
                        octets(name.as_bytes()),
                        Tag::Sequence(Sequence {
                            id: 17,
                            inner: values.iter().map(|v| octets(v)).collect(),
                            ..Default::default()
                        }),
                    ],
                    ..Default::default()
                })
            })
            .collect();
        let op = Tag::Sequence(Sequence {
            id: 4,
            class: TagClass::Application,
            inner: vec![
                octets(dn.as_bytes()),
                Tag::Sequence(Sequence {
                    inner: attrs,
                    ..Default::default()
                }),
            ],
        });
        message(id, op, &[])
    }

    pub fn done_message(id: i32, rc: i64, text: &str, refs: &[&str], controls: &[Control]) -> Vec<u8> {
        result_message(id, 5, rc, text, refs, controls)
    }

    /// An LDAPResult under `[APPLICATION op]`: 1 bind, 5 search done, 24 extended.
    pub fn result_message(
        id: i32,
        op: u64,
        rc: i64,
        text: &str,
        refs: &[&str],
        controls: &[Control],
    ) -> Vec<u8> {
        let mut inner = vec![
            Tag::Enumerated(Enumerated {
                inner: rc,
                ..Default::default()
            }),
            octets(b""),
            octets(text.as_bytes()),
        ];
        if !refs.is_empty() {
            inner.push(Tag::Sequence(Sequence {
                id: 3,
                class: TagClass::Context,
                inner: refs.iter().map(|r| octets(r.as_bytes())).collect(),
            }));
        }
        let op = Tag::Sequence(Sequence {
            id: op,
            class: TagClass::Application,
            inner,
        });
        message(id, op, controls)
    }

    #[test]
    fn decodes_an_entry_with_many_values_and_long_lengths() {
        let long = vec![b'x'; 70_000];
        let bytes = entry_message(
            7,
            "cn=a,dc=x",
            &[
                ("cn", &[b"a", b"b"]),
                ("member", &[&long, b"uid=bob"]),
                ("empty", &[]),
            ],
        );
        assert_eq!(frame(&bytes), Ok(Frame::Whole(bytes.len())));
        let mut e = Entry::default();
        let msg = decode(&bytes, &mut e).expect("decodes");
        assert_eq!(msg, Message { id: 7, op: Op::Entry });
        assert_eq!(e.dn, "cn=a,dc=x");
        assert_eq!(e.values("CN").map(<[_]>::len), Some(2));
        assert_eq!(
            e.values("member").and_then(|v| v.first()).map(Vec::len),
            Some(70_000)
        );
        assert_eq!(e.values("empty").map(<[_]>::len), Some(0));
        // The next entry reuses the buffers, and nothing of the first one is left.
        let small = entry_message(1, "uid=bob,dc=x", &[("mail", &[b"bob@x"])]);
        assert_eq!(decode(&small, &mut e).map(|m| m.op), Ok(Op::Entry));
        assert_eq!(e, text_entry("uid=bob,dc=x", &[("mail", &["bob@x"])]));
    }

    #[test]
    fn frames_messages_split_anywhere() {
        let mut stream = entry_message(1, "cn=a", &[("cn", &[b"a"])]);
        let first = stream.len();
        stream.extend(done_message(1, 0, "", &[], &[]));
        for cut in 0..first {
            match frame(&stream[..cut]) {
                Ok(Frame::Partial(total)) => assert!(total.is_none() || total == Some(first)),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert_eq!(frame(&stream), Ok(Frame::Whole(first)));
        let Ok(Frame::Whole(n)) = frame(&stream[first..]) else {
            panic!("second message")
        };
        assert_eq!(first + n, stream.len());
    }

    #[test]
    fn decodes_results_with_referrals_and_the_paged_cookie() {
        let mut response = Control::paged(0, b"next".to_vec());
        response.critical = false;
        let bytes = done_message(
            3,
            10,
            "go elsewhere",
            &["ldap://127.0.0.1:9/ou=p,dc=x"],
            &[response, Control::domain_scope()],
        );
        let Ok(Message {
            id: 3,
            op: Op::SearchDone(res),
        }) = decode(&bytes, &mut Entry::default())
        else {
            panic!("not a result")
        };
        assert_eq!((res.rc, res.text.as_str()), (10, "go elsewhere"));
        assert_eq!(res.refs, vec!["ldap://127.0.0.1:9/ou=p,dc=x".to_owned()]);
        assert_eq!(res.ctrls.len(), 2);
        assert_eq!(res.paged_cookie(), Some(Ok(b"next".to_vec())));
        assert_eq!(
            LdapResult::default().paged_cookie(),
            None,
            "no control: the server answered in one go"
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let good = entry_message(1, "cn=a", &[("cn", &[b"a", b"b"])]);
        // Every truncation and every single-byte corruption either decodes or is an
        // error; none panics.
        for cut in 0..good.len() {
            let _ = decode(&good[..cut], &mut Entry::default());
        }
        for i in 0..good.len() {
            for b in [0x00, 0x7f, 0x80, 0x84, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = frame(&bad);
                let _ = decode(&bad, &mut Entry::default());
            }
        }
        assert_eq!(
            frame(&[0x04, 0x00]),
            Err(Malformed("a message that is not an LDAPMessage SEQUENCE"))
        );
        assert!(frame(&[0x30, 0x80]).is_err(), "indefinite length");
        assert!(frame(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err(), "5-byte length");
        assert!(
            frame(&[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]).is_err(),
            "2 GiB message"
        );
        assert_eq!(frame(&[0x30, 0x82, 0x01]), Ok(Frame::Partial(None)));
        assert_eq!(frame(&[0x30, 0x82, 0x01, 0x00]), Ok(Frame::Partial(Some(260))));
        let not_utf8 = entry_message(1, "cn=a", &[("cn", &[b"a"])])
            .into_iter()
            .map(|b| if b == b'a' { 0xff } else { b })
            .collect::<Vec<_>>();
        assert_eq!(
            decode(&not_utf8, &mut Entry::default()),
            Err(Malformed("a DN that is not UTF-8"))
        );
        assert_eq!(parse_paged_value(b""), Err(Malformed("a truncated element")));
        assert!(parse_paged_value(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }

    #[test]
    fn requests_encode_as_ldap3_did() {
        // The search request's shape: a SEQUENCE whose op is [APPLICATION 3].
        let req = search_request(
            5,
            "dc=x",
            SearchScope::Subtree,
            "(&(objectClass=person)(uid=*))",
            &["uid".to_owned()],
            &[Control::paged(500, Vec::new())],
        )
        .expect("a valid filter");
        assert_eq!(frame(&req), Ok(Frame::Whole(req.len())));
        let mut r = Reader::new(Reader::new(&req).expect(SEQUENCE).expect("message"));
        assert_eq!(r.integer(INTEGER), Ok(5));
        assert_eq!(r.element().map(|(t, _)| t), Ok(0x63));
        let mut ctrls = controls(r.expect(CONTROLS).expect("controls")).expect("parse");
        let paged = ctrls.remove(0);
        assert!(paged.critical);
        assert_eq!(
            parse_paged_value(paged.value.as_deref().unwrap_or_default()),
            Ok(vec![])
        );
        assert_eq!(
            search_request(1, "", SearchScope::Base, "uid=x)(", &[], &[]),
            Err(BadFilter)
        );
        assert_eq!(unbind_request(9), vec![0x30, 0x05, 0x02, 0x01, 0x09, 0x42, 0x00]);
        let bind = bind_request(1, "cn=r", "pw");
        assert_eq!(frame(&bind), Ok(Frame::Whole(bind.len())));
    }
}
