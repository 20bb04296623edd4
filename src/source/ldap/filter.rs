//! LDAP search filters (RFC 4515): escaping values that come from data, and checking
//! filters that come from the config before anything connects.
//!
//! Every filter dirsync builds from a value it did not write itself goes through
//! [`escape`], so a `*`, a parenthesis or a NUL in a name can never change what a
//! filter means.

/// Escapes an assertion value for use inside a filter: `*`, `(`, `)`, `\` and NUL
/// become `\2a`, `\28`, `\29`, `\5c` and `\00` (RFC 4515, section 3), with
/// ldap3's `ldap_escape`. Other bytes, UTF-8 included, are left as they are, which
/// the RFC allows.
pub fn escape(value: &str) -> String {
    ldap3::ldap_escape(value).into_owned()
}

/// `(attribute=value)` with the value escaped.
pub fn equals(attribute: &str, value: &str) -> String {
    format!("({attribute}={})", escape(value))
}

/// Whether `filter` is a filter the server will accept the shape of (parenthesized,
/// balanced, valid operators). The config layer rejects anything else by key.
pub fn is_valid(filter: &str) -> bool {
    ldap3::parse_filter(filter).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_specials() {
        let cases = [
            ("alice", "alice"),
            ("a*b", "a\\2ab"),
            ("(admin)", "\\28admin\\29"),
            ("back\\slash", "back\\5cslash"),
            ("nul\0", "nul\\00"),
            (
                "*)(uid=*))(|(uid=*",
                "\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a",
            ),
            ("Zoë Ünal", "Zoë Ünal"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    #[test]
    fn an_escaped_value_parses_as_one_equality_match() {
        for hostile in ["*", "a)(uid=*", "x\\", "(|(a=b))", "\0"] {
            let f = equals("memberUid", hostile);
            assert!(is_valid(&f), "{f}");
        }
        // Unescaped, the same value breaks the filter or changes its meaning.
        assert!(!is_valid("(memberUid=a)(uid=*)"));
    }

    #[test]
    fn config_filters_are_checked() {
        assert!(is_valid("(objectClass=inetOrgPerson)"));
        assert!(is_valid("(&(objectCategory=person)(objectClass=user))"));
        assert!(is_valid(
            "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
        ));
        assert!(!is_valid("(objectClass=inetOrgPerson"));
        assert!(!is_valid("objectClass=*)"));
        assert!(!is_valid(""));
    }
}
