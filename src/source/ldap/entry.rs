//! One search result entry: its DN and raw attribute values, and the rules for
//! turning values into text (binary attributes decoded, anything else strict UTF-8).

use super::ad;
use super::error::DataProblem;

/// An entry as the server sent it. Values stay bytes until a field asks for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    /// Attribute descriptions as returned (`cn`, `member;range=0-1499`) and values.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// A value could not be used. Names the entry and the attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub dn: String,
    pub attribute: String,
    pub problem: DataProblem,
}

/// The operational attributes that hold an entry's last change time, requested by
/// name with every search (a server returns operational attributes only when asked;
/// one that does not know a name returns nothing for it).
pub(crate) const CHANGE_TIME_ATTRIBUTES: [&str; 2] = ["modifyTimestamp", "whenChanged"];

/// An LDAP GeneralizedTime (RFC 4517 3.3.13): `YYYYMMDDHHMMSS`, an optional
/// fraction (`.0`, `,5`), then `Z` or an offset `±HHMM`. Minutes and seconds may be
/// left out by the syntax, but neither OpenLDAP nor Active Directory does, so a value
/// without them is refused rather than guessed.
pub(crate) fn generalized_time(value: &str) -> Option<std::time::SystemTime> {
    let value = value.trim();
    let (digits, rest) = value.split_at_checked(14)?;
    let at = chrono::NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S").ok()?;
    let (fraction, zone) = match rest.strip_prefix(['.', ',']) {
        Some(f) => {
            let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
            (&f[..end], &f[end..])
        }
        None => ("", rest),
    };
    let nanos = match fraction {
        "" => 0,
        f => format!("{:0<9}", &f[..f.len().min(9)]).parse::<i64>().ok()?,
    };
    let offset = match zone {
        "Z" => 0,
        z if z.len() == 5 && z[1..].bytes().all(|b| b.is_ascii_digit()) => {
            let minutes = z[1..3].parse::<i64>().ok()? * 60 + z[3..5].parse::<i64>().ok()?;
            match &z[..1] {
                "+" => minutes * 60,
                "-" => -minutes * 60,
                _ => return None,
            }
        }
        _ => return None,
    };
    let utc = at.and_utc() - chrono::Duration::seconds(offset) + chrono::Duration::nanoseconds(nanos);
    Some(utc.into())
}

impl Entry {
    /// Values of `attribute` (an exact description, compared without case).
    pub fn values(&self, attribute: &str) -> Option<&[Vec<u8>]> {
        self.attrs
            .iter()
            .find(|(desc, _)| desc.eq_ignore_ascii_case(attribute))
            .map(|(_, v)| v.as_slice())
    }

    fn error(&self, attribute: &str, problem: DataProblem) -> ValueError {
        ValueError {
            dn: self.dn.clone(),
            attribute: attribute.to_owned(),
            problem,
        }
    }

    /// When the directory last changed the entry: OpenLDAP's `modifyTimestamp` or
    /// Active Directory's `whenChanged`. `None` when the server sent neither or a
    /// value that is not a GeneralizedTime: the time serves only the propagation
    /// latency, and never fails a read.
    pub fn changed_at(&self) -> Option<std::time::SystemTime> {
        CHANGE_TIME_ATTRIBUTES
            .iter()
            .filter_map(|a| self.values(a)?.first())
            .find_map(|v| generalized_time(std::str::from_utf8(v).ok()?))
    }

    /// The first value of `attribute` as text, `None` when the entry lacks it.
    pub fn first_text(&self, attribute: &str) -> Result<Option<String>, ValueError> {
        let first = self.values(attribute).and_then(|v| v.first());
        first.map(|bytes| self.text(attribute, bytes)).transpose()
    }

    /// Every value of `attribute` as text.
    pub fn all_text(&self, attribute: &str) -> Result<Vec<String>, ValueError> {
        self.values(attribute)
            .unwrap_or_default()
            .iter()
            .map(|b| self.text(attribute, b))
            .collect()
    }

    /// One value as text: known binary attributes (objectGUID, objectSid) rendered,
    /// everything else must be UTF-8.
    pub fn text(&self, attribute: &str, bytes: &[u8]) -> Result<String, ValueError> {
        let base = attribute.split(';').next().unwrap_or(attribute);
        if let Some(kind) = ad::binary_kind(base) {
            return kind.render(bytes).map_err(|m| self.error(attribute, m));
        }
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            self.error(
                attribute,
                DataProblem::NotUtf8 {
                    valid_up_to: e.utf8_error().valid_up_to(),
                    len: bytes.len(),
                },
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry with text values, for tests.
    pub fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
        Entry {
            dn: dn.to_owned(),
            attrs: attrs
                .iter()
                .map(|(a, vs)| (a.to_string(), vs.iter().map(|v| v.as_bytes().to_vec()).collect()))
                .collect(),
        }
    }

    #[test]
    fn text_values() {
        let mut e = entry("uid=bob,dc=x", &[("mail", &["bob@x"])]);
        e.attrs.push(("audio".into(), vec![vec![0xff, 0x00]]));
        e.attrs.push((
            "objectGUID".into(),
            vec![vec![
                0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
                0xef,
            ]],
        ));
        assert_eq!(e.first_text("mail"), Ok(Some("bob@x".into())));
        assert_eq!(e.first_text("telephoneNumber"), Ok(None));
        assert_eq!(
            e.first_text("objectguid"),
            Ok(Some("01234567-89ab-cdef-0123-456789abcdef".into()))
        );
        let err = e.first_text("audio").expect_err("binary");
        assert_eq!(
            (err.dn.as_str(), err.attribute.as_str()),
            ("uid=bob,dc=x", "audio")
        );
        assert_eq!(
            err.problem,
            DataProblem::NotUtf8 {
                valid_up_to: 0,
                len: 2
            }
        );
    }
}

#[cfg(test)]
mod change_time_tests {
    use super::*;

    fn unix(v: &str) -> Option<(u64, u32)> {
        generalized_time(v).map(|t| {
            let d = t.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
            (d.as_secs(), d.subsec_millis())
        })
    }

    #[test]
    fn generalized_times_of_openldap_and_active_directory() {
        // 2026-12-03T10:20:30Z
        let at = 1_796_293_230;
        assert_eq!(unix("20261203102030Z"), Some((at, 0)));
        assert_eq!(unix("20261203102030.0Z"), Some((at, 0)));
        assert_eq!(unix("20261203102030.25Z"), Some((at, 250)));
        assert_eq!(unix("20261203102030,5Z"), Some((at, 500)));
        assert_eq!(unix("20261203122030+0200"), Some((at, 0)));
        assert_eq!(unix("20261203052030-0500"), Some((at, 0)));
        for bad in [
            "",
            "2026120310Z",
            "20261203102030",
            "20261303102030Z",
            "20261203102030+02",
            "x0261203102030Z",
        ] {
            assert_eq!(unix(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_entry_changed_at_either_attribute() {
        let when = |attr: &str, value: &str| {
            let e = Entry {
                dn: "uid=a".into(),
                attrs: vec![(attr.into(), vec![value.as_bytes().to_vec()])],
            };
            e.changed_at()
        };
        let at = generalized_time("20261203102030Z");
        assert!(at.is_some());
        assert_eq!(when("whenChanged", "20261203102030.0Z"), at);
        assert_eq!(when("modifytimestamp", "20261203102030Z"), at);
        assert_eq!(when("modifyTimestamp", "soon"), None);
        assert_eq!(when("cn", "20261203102030Z"), None);
    }
}
