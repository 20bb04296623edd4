//! Active Directory's peculiarities: binary GUIDs and SIDs, the `userAccountControl`
//! bit field, and ranged retrieval of large multi-valued attributes.
//!
//! Pure functions over attribute names and values; the read in `mod.rs` asks for
//! the next range.

use super::error::{DataProblem, RangeStop};

/// Attributes whose values are binary and get a text form instead of a UTF-8 check.
pub fn binary_kind(attribute: &str) -> Option<Binary> {
    const GUIDS: &[&str] = &["objectguid", "msexchmailboxguid", "ms-ds-consistencyguid"];
    let lower = attribute.to_ascii_lowercase();
    if GUIDS.contains(&lower.as_str()) {
        Some(Binary::Guid)
    } else if lower == "objectsid" {
        Some(Binary::Sid)
    } else {
        None
    }
}

/// How a binary attribute is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// 16 bytes → `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as Windows shows it.
    Guid,
    /// A security identifier → `S-1-5-21-…`.
    Sid,
}

impl Binary {
    /// The text form of `bytes`, or why it has none.
    pub fn render(self, bytes: &[u8]) -> Result<String, DataProblem> {
        match self {
            Binary::Guid => guid(bytes),
            Binary::Sid => sid(bytes),
        }
    }
}

/// The canonical string of a GUID stored as 16 bytes: the first three fields are
/// little-endian (Data1 u32, Data2 u16, Data3 u16), the last 8 bytes are in order.
/// Lowercase, as PowerShell's `ObjectGUID` prints it.
pub fn guid(bytes: &[u8]) -> Result<String, DataProblem> {
    let b: &[u8; 16] = bytes
        .try_into()
        .map_err(|_| DataProblem::BadGuid { len: bytes.len() })?;
    Ok(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The 16 bytes of a GUID from its canonical string ([`guid`]'s inverse), or `None`
/// when `text` is not one.
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // The first three fields are stored little-endian.
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// An equality filter on `objectGUID` for a GUID's bytes: every byte escaped
/// (RFC 4515), as a binary value must be.
pub fn guid_filter(bytes: &[u8; 16]) -> String {
    let mut f = String::with_capacity(16 * 3 + 14);
    f.push_str("(objectGUID=");
    for b in bytes {
        f.push_str(&format!("\\{b:02x}"));
    }
    f.push(')');
    f
}

/// The string form of a binary SID (MS-DTYP 2.4.2.2): revision, a 48-bit big-endian
/// identifier authority, then little-endian 32-bit sub-authorities.
pub fn sid(bytes: &[u8]) -> Result<String, DataProblem> {
    let bad = || DataProblem::BadSid { len: bytes.len() };
    if bytes.len() < 8 {
        return Err(bad());
    }
    let revision = bytes[0];
    let count = usize::from(bytes[1]);
    if bytes.len() != 8 + 4 * count {
        return Err(bad());
    }
    let authority = bytes[2..8].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut out = format!("S-{revision}-{authority}");
    for chunk in bytes[8..].chunks_exact(4) {
        let sub = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        out.push_str(&format!("-{sub}"));
    }
    Ok(out)
}

/// `userAccountControl` bit 0x2: ACCOUNTDISABLE.
const ACCOUNTDISABLE: i64 = 0x2;

/// Whether a `userAccountControl` value (a decimal integer) says the account is
/// enabled.
pub fn uac_enabled(value: &str) -> Result<bool, DataProblem> {
    let flags: i64 = value.trim().parse().map_err(|_| DataProblem::NotAccountControl {
        value: value.to_owned(),
    })?;
    Ok(flags & ACCOUNTDISABLE == 0)
}

/// Where a ranged answer stands: `member;range=0-1499` is `Range { start: 0, end:
/// Some(1499) }`; the last part, `member;range=3000-*`, has `end: None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: Option<u64>,
}

impl Range {
    /// That an answer to `request` (`member;range=1500-*`) holds the range asked
    /// for: a server that answers another could be asked the same forever.
    pub fn answers(&self, request: &str, attribute: &str) -> Result<(), RangeStop> {
        match parse_range(request, attribute) {
            Some(asked) if asked.start != self.start => Err(RangeStop::OtherRange {
                asked: asked.start,
                got: self.start,
            }),
            _ => Ok(()),
        }
    }

    /// The attribute description that asks for what follows this range.
    pub fn next_request(&self, attribute: &str) -> Option<String> {
        self.end.map(|end| format!("{attribute};range={}-*", end + 1))
    }
}

/// Whether the attribute description `desc` (as the server returned it) is a
/// ranged part of `attribute`, and which range. Other options (`;binary`,
/// `;lang-…`) may surround the range option.
pub fn parse_range(desc: &str, attribute: &str) -> Option<Range> {
    let mut parts = desc.split(';');
    if !parts.next()?.eq_ignore_ascii_case(attribute) {
        return None;
    }
    for option in parts {
        let Some(spec) = option
            .get(..6)
            .filter(|p| p.eq_ignore_ascii_case("range="))
            .map(|_| &option[6..])
        else {
            continue;
        };
        let (start, end) = spec.split_once('-')?;
        let start = start.parse().ok()?;
        let end = match end {
            "*" => None,
            n => Some(n.parse().ok()?),
        };
        return Some(Range { start, end });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_as_windows_shows_it() {
        // {01234567-89ab-cdef-0123-456789abcdef} as AD stores it.
        let bytes = [
            0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ];
        assert_eq!(
            guid(&bytes).as_deref(),
            Ok("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert!(guid(&bytes[..15]).is_err());
        assert_eq!(guid_bytes("01234567-89ab-cdef-0123-456789abcdef"), Some(bytes));
        assert_eq!(guid_bytes("01234567-89AB-CDEF-0123-456789ABCDEF"), Some(bytes));
        assert_eq!(guid_bytes("0123456789abcdef0123456789abcdef"), None);
        assert_eq!(guid_bytes("01234567-89ab-cdef-0123-456789abcdeg"), None);
        assert_eq!(
            guid_filter(&bytes),
            "(objectGUID=\\67\\45\\23\\01\\ab\\89\\ef\\cd\\01\\23\\45\\67\\89\\ab\\cd\\ef)"
        );
        assert_eq!(binary_kind("objectGUID"), Some(Binary::Guid));
        assert_eq!(binary_kind("OBJECTSID"), Some(Binary::Sid));
        assert_eq!(binary_kind("mail"), None);
    }

    #[test]
    fn sid_string() {
        // S-1-5-21-1004336348-1177238915-682003330-512 (Domain Admins of some domain).
        let mut bytes = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1004336348, 1177238915, 682003330, 512] {
            bytes.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(
            sid(&bytes).as_deref(),
            Ok("S-1-5-21-1004336348-1177238915-682003330-512")
        );
        assert_eq!(
            sid(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]).as_deref(),
            Ok("S-1-5-18")
        );
        assert!(sid(&bytes[..bytes.len() - 1]).is_err());
        assert!(sid(&[1]).is_err());
    }

    #[test]
    fn user_account_control() {
        let cases = [
            ("512", Ok(true)),   // NORMAL_ACCOUNT
            ("514", Ok(false)),  // NORMAL_ACCOUNT | ACCOUNTDISABLE
            ("66048", Ok(true)), // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
            ("66050", Ok(false)),
            ("2", Ok(false)),
            (" 544 ", Ok(true)),
        ];
        for (value, want) in cases {
            assert_eq!(uac_enabled(value), want, "{value}");
        }
        assert!(uac_enabled("disabled").is_err());
    }

    /// An answer to `member;range=1500-*` must start at 1500: a server answering
    /// `0-1499` again would be asked for the next range forever.
    #[test]
    fn an_answer_holds_the_range_asked_for() {
        let answered = |start| Range {
            start,
            end: Some(start + 1499),
        };
        assert_eq!(answered(1500).answers("member;range=1500-*", "member"), Ok(()));
        assert_eq!(
            answered(0).answers("member;range=1500-*", "member"),
            Err(RangeStop::OtherRange { asked: 1500, got: 0 })
        );
    }

    #[test]
    fn ranges() {
        let r = |start, end| Some(Range { start, end });
        let cases = [
            ("member;range=0-1499", r(0, Some(1499))),
            ("Member;Range=1500-2999", r(1500, Some(2999))),
            ("member;range=3000-*", r(3000, None)),
            ("member;binary;range=0-*", r(0, None)),
            ("member", None),
            ("memberOf;range=0-1499", None),
            ("member;range=x-1", None),
            ("member;range=0", None),
        ];
        for (desc, want) in cases {
            assert_eq!(parse_range(desc, "member"), want, "{desc}");
        }
        assert_eq!(
            Range {
                start: 0,
                end: Some(1499)
            }
            .next_request("member")
            .as_deref(),
            Some("member;range=1500-*")
        );
        assert_eq!(
            Range {
                start: 3000,
                end: None
            }
            .next_request("member"),
            None
        );
    }
}
