//! LDAP search filters (RFC 4515): filters that come from the config are checked
//! before anything connects. A filter built from directory data (groups by
//! entryUUID, `groups_by_id`) escapes its values with ldap3's `ldap_escape`.

/// Whether `filter` is a filter the server will accept the shape of (parenthesized,
/// balanced, valid operators). The config layer rejects anything else by key.
pub fn is_valid(filter: &str) -> bool {
    ldap3::parse_filter(filter).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
