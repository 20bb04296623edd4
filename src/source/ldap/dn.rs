//! Distinguished names compared the way a directory compares them.
//!
//! A group's `member` value and the DN the user search returned for the same person
//! rarely match byte for byte: case differs (`CN=Alice` vs `cn=alice`), spacing
//! differs (`cn=alice, ou=people`), escapes differ (`\,` vs `\2C`). [`normalize`]
//! turns a DN into one canonical string (RFC 4514 parsed, attribute types and values
//! lowercased, spaces around separators dropped, escapes decoded then re-encoded one
//! way, the values of a multi-valued RDN sorted), so two spellings of one DN compare
//! equal as plain strings in a hash map.

/// The canonical form of `dn`, for comparison only (never sent to a server).
///
/// A DN that does not parse (a stray `=`-less component, a dangling escape) is
/// compared as its trimmed lowercase text: it can then only match itself.
pub fn normalize(dn: &str) -> String {
    parse(dn).unwrap_or_else(|| dn.trim().to_lowercase())
}

/// The DN of the entry holding the one `dn` names: `dn` without its first RDN; `None`
/// for a DN of one RDN. `dn` is in RFC 4514 form, as servers send it and
/// [`normalize`] writes it (a separator inside a value is escaped with a backslash;
/// RFC 2253's quoted values are not understood).
pub fn parent(dn: &str) -> Option<&str> {
    let mut bytes = dn.bytes().enumerate();
    while let Some((i, b)) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b',' => return Some(&dn[i + 1..]),
            _ => {}
        }
    }
    None
}

/// Strips the optional unique identifier of an RFC 4517 `NameAndOptionalUID` value
/// (`uniqueMember: cn=alice,dc=example#'0101'B`), leaving the DN.
pub fn strip_optional_uid(value: &str) -> &str {
    let Some(rest) = value.strip_suffix("'B") else {
        return value;
    };
    let Some(hash) = rest.rfind("#'") else {
        return value;
    };
    let bits = &rest[hash + 2..];
    let escaped = value[..hash].ends_with('\\');
    if !escaped && bits.bytes().all(|b| b == b'0' || b == b'1') {
        &value[..hash]
    } else {
        value
    }
}

fn parse(dn: &str) -> Option<String> {
    let bytes = dn.as_bytes();
    let mut rdns: Vec<Vec<(String, String)>> = Vec::new();
    let mut rdn: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    skip_spaces(bytes, &mut i);
    if i == bytes.len() {
        return Some(String::new()); // the root DSE
    }
    loop {
        // attribute type, up to `=`
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            if matches!(bytes[i], b',' | b'+' | b';' | b'\\') {
                return None;
            }
            i += 1;
        }
        if i == bytes.len() {
            return None;
        }
        let ty = dn[start..i].trim().to_ascii_lowercase();
        let ty = ty.strip_prefix("oid.").map(str::to_owned).unwrap_or(ty);
        if ty.is_empty() {
            return None;
        }
        i += 1; // '='
        skip_spaces(bytes, &mut i);
        let value = value(bytes, &mut i)?;
        rdn.push((ty, value));
        match bytes.get(i) {
            None => {
                rdns.push(std::mem::take(&mut rdn));
                break;
            }
            Some(b'+') => {}
            Some(b',') | Some(b';') => rdns.push(std::mem::take(&mut rdn)),
            Some(_) => return None,
        }
        i += 1;
        skip_spaces(bytes, &mut i);
    }
    let mut out = String::with_capacity(dn.len());
    for (n, mut rdn) in rdns.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        rdn.sort();
        for (m, (ty, value)) in rdn.iter().enumerate() {
            if m > 0 {
                out.push('+');
            }
            out.push_str(ty);
            out.push('=');
            // Escaped one canonical way (RFC 4514, section 2.4).
            out.push_str(&ldap3::dn_escape(value));
        }
    }
    Some(out)
}

fn skip_spaces(bytes: &[u8], i: &mut usize) {
    while *i < bytes.len() && bytes[*i] == b' ' {
        *i += 1;
    }
}

/// One attribute value, decoded and lowercased; `i` ends on the separator after it
/// (or the end). Unescaped trailing spaces are not part of the value.
fn value(bytes: &[u8], i: &mut usize) -> Option<String> {
    if bytes.get(*i) == Some(&b'#') {
        // A BER-encoded value in hex: compare its hex text.
        let start = *i;
        while *i < bytes.len() && !matches!(bytes[*i], b',' | b'+' | b';' | b' ') {
            *i += 1;
        }
        let text = std::str::from_utf8(&bytes[start..*i]).ok()?.to_ascii_lowercase();
        skip_spaces(bytes, i);
        return Some(text);
    }
    if bytes.get(*i) == Some(&b'"') {
        // RFC 2253's quoted form, still seen in old data.
        *i += 1;
        let mut raw = Vec::new();
        while *i < bytes.len() && bytes[*i] != b'"' {
            if bytes[*i] == b'\\' {
                *i += 1;
            }
            raw.push(*bytes.get(*i)?);
            *i += 1;
        }
        *i += 1; // closing quote
        skip_spaces(bytes, i);
        return Some(String::from_utf8(raw).ok()?.to_lowercase());
    }
    let mut raw = Vec::new();
    // Length of `raw` up to its last byte that is not an unescaped space.
    let mut keep = 0;
    while *i < bytes.len() {
        match bytes[*i] {
            b',' | b'+' | b';' => break,
            b'\\' => {
                let next = *bytes.get(*i + 1)?;
                if next.is_ascii_hexdigit() {
                    let hex = std::str::from_utf8(bytes.get(*i + 1..*i + 3)?).ok()?;
                    raw.push(u8::from_str_radix(hex, 16).ok()?);
                    *i += 3;
                } else {
                    raw.push(next);
                    *i += 2;
                }
                keep = raw.len();
            }
            b => {
                raw.push(b);
                if b != b' ' {
                    keep = raw.len();
                }
                *i += 1;
            }
        }
    }
    raw.truncate(keep);
    Some(String::from_utf8(raw).ok()?.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_dn_drops_its_first_rdn_even_with_escaped_separators() {
        assert_eq!(parent("uid=a,ou=people,dc=x"), Some("ou=people,dc=x"));
        assert_eq!(parent("dc=x"), None);
        let escaped = normalize(r"cn=Smith\, John,ou=a\\,dc=x");
        assert_eq!(parent(&escaped), Some(normalize(r"ou=a\\,dc=x").as_str()));
        assert_eq!(parent(&normalize("cn=a+uid=b,dc=x")), Some("dc=x"));
        assert_eq!(
            parent(r"cn=Smith\, John, OU=People,dc=x"),
            Some(" OU=People,dc=x")
        );
    }

    #[test]
    fn spellings_of_one_dn_normalize_alike() {
        let groups: &[&[&str]] = &[
            &[
                "uid=alice,ou=people,dc=example,dc=com",
                "UID=Alice,OU=People,DC=Example,DC=Com",
                "uid=alice, ou=people, dc=example, dc=com",
                " uid = alice ,ou=people ,dc=example,dc=com ",
                "uid=alice;ou=people;dc=example;dc=com",
                "oid.uid=alice,ou=people,dc=example,dc=com",
            ],
            &[
                "cn=Smith\\, John,ou=people,dc=example,dc=com",
                "cn=smith\\2c john,ou=people,dc=example,dc=com",
                "CN=\"Smith, John\",OU=people,DC=example,DC=com",
            ],
            &["cn=a+sn=b,dc=x", "sn=B+cn=A,dc=x", "sn=b + cn=a, dc=x"],
            &[
                "cn=Zoë Ünal,dc=x",
                "cn=zoë ünal,dc=x",
                "cn=Zo\\c3\\ab \\C3\\9Cnal,dc=x",
            ],
            &["cn=trailing\\ ,dc=x", "cn=trailing\\20,dc=x"],
        ];
        for spellings in groups {
            let want = normalize(spellings[0]);
            for s in *spellings {
                assert_eq!(normalize(s), want, "{s:?} vs {:?}", spellings[0]);
            }
        }
    }

    #[test]
    fn different_dns_stay_different() {
        let pairs = [
            ("cn=a,dc=x", "cn=b,dc=x"),
            ("cn=a\\,b,dc=x", "cn=a,cn=b,dc=x"),
            ("cn=trailing\\ ,dc=x", "cn=trailing,dc=x"),
            ("cn=a+sn=b,dc=x", "cn=a,sn=b,dc=x"),
            ("cn=#04026869,dc=x", "cn=hi,dc=x"),
        ];
        for (a, b) in pairs {
            assert_ne!(normalize(a), normalize(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn canonical_form() {
        assert_eq!(
            normalize("CN=Smith\\, John, OU=People,DC=Example"),
            "cn=smith\\2c john,ou=people,dc=example"
        );
        assert_eq!(normalize(""), "");
        // Unparsable: compared as text, so it matches only itself.
        assert_eq!(normalize("Not A DN"), "not a dn");
        assert_eq!(normalize("cn=dangling\\"), "cn=dangling\\");
    }

    #[test]
    fn plain_dns_take_the_short_way_to_the_same_form() {
        let cases = [
            "uid=alice,ou=people,dc=example,dc=com",
            "UID=Alice,OU=People,DC=Example,DC=Com",
            "cn=John Smith,ou=x-y.z,dc=a_b",
            "cn=a@b.c,dc=x",
            "cn=,dc=x",
            "2.5.4.3=abc,dc=x",
            "cn=a  b,dc=x",
            // Not plain: the full parse decides.
            "OID.cn=a,dc=x",
            "oid.=a,dc=x",
            "cn=a=b,dc=x",
            "cn= a,dc=x",
            "cn=a ,dc=x",
            "cn=a,,dc=x",
            "cn=a,",
            ",cn=a",
            "cn",
            "cn=a+sn=b,dc=x",
            "cn=a;dc=x",
            "cn=Zoë,dc=x",
            "cn=#0401,dc=x",
            " cn=a,dc=x",
            "cn=a, dc=x",
        ];
        for dn in cases {
            let full = parse(dn).unwrap_or_else(|| dn.trim().to_lowercase());
            assert_eq!(normalize(dn), full, "{dn:?}");
        }
    }

    #[test]
    fn optional_uid_is_stripped() {
        let cases = [
            ("cn=a,dc=x#'0101'B", "cn=a,dc=x"),
            ("cn=a,dc=x#''B", "cn=a,dc=x"),
            ("cn=a,dc=x", "cn=a,dc=x"),
            ("cn=a\\#'01'B", "cn=a\\#'01'B"),
            ("cn=a#'0x'B", "cn=a#'0x'B"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_optional_uid(input), want, "{input:?}");
        }
    }
}
