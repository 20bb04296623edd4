//! Text from the directory or a target, made safe to show or keep.
//!
//! A name may hold a line break (the directory allows it) and a target's error text
//! may hold anything: printed as it is, it could start a forged log line or table
//! row, restyle the terminal, or reorder what is shown. Here such characters become
//! visible escapes, and text kept from a target is capped.

use std::borrow::Cow;

/// Control characters print as `\n`, `\t`, `\u{1b}`; the invisible characters that
/// reorder text (bidi overrides) or hide it (zero widths, line separators) as `\u{…}`.
pub fn visible(text: &str) -> Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    }
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if hidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The first five of `items`, joined by ", ", and how many more there are.
pub(crate) fn first_few(items: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    const SHOWN: usize = 5;
    let mut items = items.into_iter();
    let shown: Vec<String> = items.by_ref().take(SHOWN).map(|i| i.to_string()).collect();
    let more = items.count();
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Text a target sent, made safe to keep in a log line or an audit row: [`visible`],
/// and cut to about `max` bytes with the original length noted, so that it cannot
/// bloat the audit log.
pub(crate) fn untrusted(text: &str, max: usize) -> String {
    let shown = visible(text);
    if shown.len() <= max {
        return shown.into_owned();
    }
    let end = shown.floor_char_boundary(max);
    format!("{}… ({} bytes in all)", &shown[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_or_hide_and_caps() {
        let cases: &[(&str, usize, &str)] = &[
            ("plain", 100, "plain"),
            ("a\nb\r\tc\u{1b}[31m", 100, "a\\nb\\r\\tc\\u{1b}[31m"),
            (
                "x\u{2028}y\u{202e}z\u{200b}",
                100,
                "x\\u{2028}y\\u{202e}z\\u{200b}",
            ),
            ("東京都", 4, "東… (9 bytes in all)"),
            ("abcdef", 3, "abc… (6 bytes in all)"),
        ];
        for (text, max, want) in cases {
            assert_eq!(untrusted(text, *max), *want, "{text:?}");
        }
    }
}
