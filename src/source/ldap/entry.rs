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
