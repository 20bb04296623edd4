//! CSV source: a users file, a groups file, and optionally a membership file.
//!
//! Strict by design: a file that is not exactly what the config says (a missing
//! column, a duplicate id, a member nobody knows, a broken quote, invalid UTF-8 or
//! UTF-16, a control character in a field, a header that only splits with another
//! delimiter, an empty file) stops the run with an error naming the file, line and
//! column. A directory that was half understood must never be pushed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::RawCsv;
use crate::model::{Directory, Group, User};

/// Validated CSV source settings. Paths are absolute or relative to the working dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvConfig {
    pub(crate) users: PathBuf,
    pub(crate) groups: PathBuf,
    pub(crate) memberships: Option<PathBuf>,
    pub(crate) delimiter: u8,
    pub(crate) member_separator: char,
    /// Skip (with a warning) members that name no known user, instead of failing.
    pub(crate) skip_unknown_members: bool,
    pub(crate) user_columns: UserColumns,
    pub(crate) group_columns: GroupColumns,
    pub(crate) membership_columns: MembershipColumns,
}

/// `[source.user_columns]`: the header of each field's column; each defaults to the
/// field's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserColumns {
    pub id: String,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    pub enabled: String,
}

/// `[source.group_columns]`, each defaulting to the field's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GroupColumns {
    pub id: String,
    pub name: String,
    pub members: String,
}

/// `[source.membership_columns]`, each defaulting to the field's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipColumns {
    pub group: String,
    pub user: String,
}

/// `Default` for the column structs: each field's column is named as the field.
macro_rules! named_after_fields {
    ($columns:ident: $($field:ident),+) => {
        impl Default for $columns {
            fn default() -> Self {
                $columns {
                    $($field: stringify!($field).to_owned()),+
                }
            }
        }
    };
}

named_after_fields!(UserColumns: id, username, email, display_name, first_name, last_name, phone, enabled);
named_after_fields!(GroupColumns: id, name, members);
named_after_fields!(MembershipColumns: group, user);

impl CsvConfig {
    /// Validates the raw table; errors are `(key, message)` for the config layer.
    pub(crate) fn from_raw(raw: RawCsv, base: &Path) -> Result<CsvConfig, (String, String)> {
        let delimiter = match raw.delimiter.as_deref() {
            None => b',',
            Some("\\t") | Some("\t") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" => d.as_bytes()[0],
            Some(d) => {
                return Err((
                    "delimiter".into(),
                    format!("`{d}`: one ASCII character other than `\"`"),
                ));
            }
        };
        let member_separator = match raw.member_separator.as_deref() {
            None => ';',
            Some(s) if s.chars().count() == 1 => s.chars().next().unwrap_or(';'),
            Some(s) => return Err(("member_separator".into(), format!("`{s}`: one character"))),
        };
        if member_separator as u32 == delimiter as u32 {
            return Err(("member_separator".into(), "must differ from the delimiter".into()));
        }
        let skip_unknown_members = match raw.unknown_members.as_deref() {
            None | Some("error") => false,
            Some("skip") => true,
            Some(o) => {
                return Err((
                    "unknown_members".into(),
                    format!("`{o}`: expected `error` or `skip`"),
                ));
            }
        };
        Ok(CsvConfig {
            users: base.join(raw.users),
            groups: base.join(raw.groups),
            memberships: raw.memberships.map(|p| base.join(p)),
            delimiter,
            member_separator,
            skip_unknown_members,
            user_columns: raw.user_columns,
            group_columns: raw.group_columns,
            membership_columns: raw.membership_columns,
        })
    }
}

/// A CSV file is not usable. Names the file, and the line and column when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}{}{}: {message}",
    .file.display(),
    .line.map(|line| format!(": line {line}")).unwrap_or_default(),
    .column.as_ref().map(|column| format!(", column `{column}`")).unwrap_or_default()
)]
pub struct CsvError {
    pub(crate) file: PathBuf,
    pub(crate) line: Option<u64>,
    pub(crate) column: Option<String>,
    pub(crate) message: String,
}

impl CsvError {
    pub(crate) fn internal(message: String) -> Self {
        CsvError {
            file: PathBuf::new(),
            line: None,
            column: None,
            message,
        }
    }
}

/// One parsed file: header and rows, each row with the line it starts on.
struct Table {
    file: PathBuf,
    header: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
    /// SHA-256 of the bytes parsed, lowercase hex.
    sha256: String,
}

impl Table {
    fn error(&self, line: Option<u64>, column: Option<&str>, message: impl Into<String>) -> CsvError {
        CsvError {
            file: self.file.clone(),
            line,
            column: column.map(str::to_owned),
            message: message.into(),
        }
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The column of an optional field: absent is fine under the field's own name
    /// (`default`), an error under a name the config gave it.
    fn optional(&self, name: &str, default: &str, key: &str) -> Result<Option<usize>, CsvError> {
        match self.column(name) {
            None if name != default => self.required(name, key).map(Some),
            found => Ok(found),
        }
    }

    fn required(&self, name: &str, key: &str) -> Result<usize, CsvError> {
        self.column(name).ok_or_else(|| {
            self.error(
                Some(1),
                None,
                format!(
                    "missing column `{name}` (set `source.{key}` if it has another name); \
                     the header has: {}",
                    self.header.join(", ")
                ),
            )
        })
    }
}

/// Reads the files named in the config into a directory, with the SHA-256 of each
/// file as it was parsed (users, groups, memberships), in the token's order.
pub fn read(config: &CsvConfig) -> Result<(Directory, Vec<String>), CsvError> {
    let mut dir = Directory::default();
    let mut parsed = Vec::new();
    let users = parse(&config.users, config.delimiter)?;
    parsed.push(users.sha256.clone());
    if users.rows.is_empty() {
        return Err(users.error(None, None, "no users: the file has only a header"));
    }
    read_users(&users, &config.user_columns, &mut dir)?;
    // The raw rows are copied into the directory; free them before the next file.
    drop(users);

    let groups = parse(&config.groups, config.delimiter)?;
    parsed.push(groups.sha256.clone());
    if groups.rows.is_empty() {
        return Err(groups.error(None, None, "no groups: the file has only a header"));
    }
    let c = &config.group_columns;
    let id_col = groups.required(&c.id, "group_columns.id")?;
    let name_col = groups.required(&c.name, "group_columns.name")?;
    let members_col = match &config.memberships {
        Some(path) => {
            if groups.column(&c.members).is_some() {
                tracing::warn!(
                    "The groups file {} has a `{}` column, which is read as an attribute: members come from {} (`source.memberships`).",
                    config.groups.display(),
                    crate::text::visible(&c.members),
                    path.display()
                );
            }
            None
        }
        None => Some(groups.required(&c.members, "group_columns.members")?),
    };
    let mut first_line: BTreeMap<String, u64> = BTreeMap::new();
    for (line, row) in &groups.rows {
        let id = non_empty(&groups, *line, &c.id, &row[id_col])?;
        if let Some(first) = first_line.insert(id.to_owned(), *line) {
            return Err(groups.error(
                Some(*line),
                Some(&c.id),
                format!("duplicate group id `{id}` (first on line {first})"),
            ));
        }
        let name = non_empty(&groups, *line, &c.name, &row[name_col])?;
        let mut group = Group::new(id, name);
        for (i, value) in row.iter().enumerate() {
            if i != id_col && i != name_col && Some(i) != members_col && !value.is_empty() {
                group.attrs.insert(groups.header[i].clone(), value.clone());
            }
        }
        if let Some(col) = members_col {
            for member in row[col]
                .split(config.member_separator)
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                add_member(
                    &dir.users,
                    &mut group,
                    member,
                    config.skip_unknown_members,
                    || groups.error(Some(*line), Some(&c.members), format!("unknown user `{member}`")),
                )?;
            }
        }
        dir.groups.insert(group.id.clone(), group);
    }
    drop(groups);

    if let Some(path) = &config.memberships {
        let table = parse(path, config.delimiter)?;
        parsed.push(table.sha256.clone());
        let MembershipColumns {
            group: gname,
            user: uname,
        } = &config.membership_columns;
        if table.rows.is_empty() {
            return Err(table.error(None, None, "no memberships: the file has only a header"));
        }
        let gcol = table.required(gname, "membership_columns.group")?;
        let ucol = table.required(uname, "membership_columns.user")?;
        for (line, row) in &table.rows {
            let gid = non_empty(&table, *line, gname, &row[gcol])?;
            let uid = non_empty(&table, *line, uname, &row[ucol])?;
            let users = &dir.users;
            let Some(group) = dir.groups.get_mut(gid) else {
                return Err(table.error(Some(*line), Some(gname), format!("unknown group `{gid}`")));
            };
            add_member(users, group, uid, config.skip_unknown_members, || {
                table.error(Some(*line), Some(uname), format!("unknown user `{uid}`"))
            })?;
        }
    }
    Ok((dir, parsed))
}

fn add_member(
    users: &BTreeMap<String, User>,
    group: &mut Group,
    member: &str,
    skip_unknown: bool,
    error: impl FnOnce() -> CsvError,
) -> Result<(), CsvError> {
    if users.contains_key(member) {
        group.members.insert(member.to_owned());
    } else if skip_unknown {
        tracing::warn!(group = %group.name, member, "Skipped a member that names no known user: {}", error());
    } else {
        return Err(error());
    }
    Ok(())
}

fn read_users(table: &Table, c: &UserColumns, dir: &mut Directory) -> Result<(), CsvError> {
    let id_col = table.required(&c.id, "user_columns.id")?;
    let username_col = table.required(&c.username, "user_columns.username")?;
    let email = table.optional(&c.email, "email", "user_columns.email")?;
    let display_name = table.optional(&c.display_name, "display_name", "user_columns.display_name")?;
    let first_name = table.optional(&c.first_name, "first_name", "user_columns.first_name")?;
    let last_name = table.optional(&c.last_name, "last_name", "user_columns.last_name")?;
    let phone = table.optional(&c.phone, "phone", "user_columns.phone")?;
    let enabled = table.optional(&c.enabled, "enabled", "user_columns.enabled")?;
    // Every other column is kept as an extra attribute.
    let known: BTreeSet<usize> = [email, display_name, first_name, last_name, phone, enabled]
        .into_iter()
        .flatten()
        .chain([id_col, username_col])
        .collect();
    let mut first_line: BTreeMap<String, u64> = BTreeMap::new();
    for (line, row) in &table.rows {
        let id = non_empty(table, *line, &c.id, &row[id_col])?;
        if let Some(first) = first_line.insert(id.to_owned(), *line) {
            return Err(table.error(
                Some(*line),
                Some(&c.id),
                format!("duplicate user id `{id}` (first on line {first})"),
            ));
        }
        let username = non_empty(table, *line, &c.username, &row[username_col])?;
        let get = |col: Option<usize>| {
            col.map(|i| row[i].trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut user = User::new(id, username);
        user.email = get(email);
        user.display_name = get(display_name);
        user.first_name = get(first_name);
        user.last_name = get(last_name);
        user.phone = get(phone);
        if let Some(value) = get(enabled) {
            user.enabled = match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "y" => true,
                "false" | "0" | "no" | "n" => false,
                _ => {
                    return Err(table.error(
                        Some(*line),
                        Some(&c.enabled),
                        format!("`{value}` is not a boolean (true/false, 1/0, yes/no)"),
                    ));
                }
            };
        }
        for (i, value) in row.iter().enumerate() {
            if !known.contains(&i) && !value.is_empty() {
                user.attrs.insert(table.header[i].clone(), value.clone());
            }
        }
        dir.users.insert(user.id.clone(), user);
    }
    Ok(())
}

fn non_empty<'a>(table: &Table, line: u64, column: &str, value: &'a str) -> Result<&'a str, CsvError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(table.error(Some(line), Some(column), "is empty"));
    }
    Ok(v)
}

/// Reads one file: BOM stripped, quoting checked, every field valid UTF-8 without
/// control characters, every row as long as the header.
fn parse(path: &Path, delimiter: u8) -> Result<Table, CsvError> {
    let err = |line: Option<u64>, column: Option<String>, message: String| CsvError {
        file: path.to_owned(),
        line,
        column,
        message,
    };
    let empty = || err(None, None, "the file is empty (expected a header line)".into());
    let bytes = std::fs::read(path).map_err(|e| err(None, None, format!("cannot read: {e}")))?;
    let sha256 = crate::source::token::sha256_bytes_hex(&bytes);
    // A spreadsheet's "Unicode text" export is UTF-16: without this, its NUL bytes
    // would be reported one field at a time.
    for (bom, name) in [(b"\xFF\xFE", "FF FE"), (b"\xFE\xFF", "FE FF")] {
        if bytes.starts_with(bom) {
            return Err(err(
                Some(1),
                None,
                format!("the file is UTF-16 (byte order mark {name}): save it as UTF-8"),
            ));
        }
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(empty());
    }
    // Lines that end in a carriage return alone (a spreadsheet's "CSV (Macintosh)"):
    // read as line feeds, so that every error names its line, not line 1.
    let lf: Vec<u8>;
    let bytes = if bytes.contains(&b'\r') && !bytes.contains(&b'\n') {
        lf = bytes
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect();
        &lf[..]
    } else {
        bytes
    };
    if let Err(bad) = check_quoting(bytes, delimiter) {
        // The header names the column, unless the header itself is the broken record.
        let column = match bad.record {
            0 => None,
            _ => header_names(bytes, delimiter).and_then(|h| h.into_iter().nth(bad.field)),
        };
        let column = column.unwrap_or_else(|| format!("#{}", bad.field + 1));
        return Err(err(Some(bad.line), Some(column), bad.message.into()));
    }

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header_record = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(err(Some(1), None, e.to_string())),
        None => return Err(empty()),
    };
    let mut header = Vec::with_capacity(header_record.len());
    for (i, field) in header_record.iter().enumerate() {
        let name = std::str::from_utf8(field).map_err(|_| {
            err(
                Some(1),
                Some(format!("#{}", i + 1)),
                "invalid UTF-8 in the header".into(),
            )
        })?;
        if let Some(bad) = control_character(name) {
            return Err(err(
                Some(1 + bad.line_offset),
                Some(format!("#{}", i + 1)),
                format!("the header {}", bad.describe()),
            ));
        }
        let name = name.trim().to_owned();
        if header.contains(&name) {
            return Err(err(
                Some(1),
                Some(name),
                "the header names this column twice".into(),
            ));
        }
        header.push(name);
    }
    if let [only] = header.as_slice()
        && let Some(hint) = delimiter_hint(only, delimiter)
    {
        return Err(err(Some(1), None, hint));
    }
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line());
            err(line, None, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1
            && record
                .get(0)
                .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
        {
            continue; // a blank line
        }
        if record.len() != header.len() {
            return Err(err(
                Some(line),
                None,
                format!(
                    "expected {} fields as in the header, found {} (check the delimiter and quoting)",
                    header.len(),
                    record.len()
                ),
            ));
        }
        let mut row = Vec::with_capacity(record.len());
        // Lines the record's earlier fields span: a quoted field may hold line breaks.
        let mut line_offset = 0;
        for (i, field) in record.iter().enumerate() {
            let value = std::str::from_utf8(field).map_err(|_| {
                err(
                    Some(line + line_offset),
                    Some(header[i].clone()),
                    "invalid UTF-8 (the file must be UTF-8)".into(),
                )
            })?;
            if let Some(bad) = control_character(value) {
                return Err(err(
                    Some(line + line_offset + bad.line_offset),
                    Some(header[i].clone()),
                    format!("the field {}", bad.describe()),
                ));
            }
            line_offset += field.iter().filter(|b| **b == b'\n').count() as u64;
            row.push(value.to_owned());
        }
        rows.push((line, row));
    }
    Ok(Table {
        file: path.to_owned(),
        header,
        rows,
        sha256,
    })
}

/// The header's names as far as they can be read, to name the column of an error
/// found before the file is parsed.
fn header_names(bytes: &[u8], delimiter: u8) -> Option<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let record = reader.byte_records().next()?.ok()?;
    Some(
        record
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_owned())
            .collect(),
    )
}

/// A header read as one column that holds another common delimiter was written with
/// that delimiter: say which setting reads it.
fn delimiter_hint(header: &str, delimiter: u8) -> Option<String> {
    let (other, setting) = [(',', ","), (';', ";"), ('\t', "\\t")]
        .into_iter()
        .find(|(c, _)| *c as u32 != u32::from(delimiter) && header.contains(*c))?;
    let shown = if other == '\t' {
        "a tab".to_owned()
    } else {
        format!("`{other}`")
    };
    Some(format!(
        "the header is one column holding {shown}: if the file is separated by {shown}, \
         set `source.delimiter = \"{setting}\"`"
    ))
}

/// A control character found in a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ControlCharacter {
    character: char,
    /// Line breaks before it in the same field.
    line_offset: u64,
    /// Its position in the field, counting characters from 1.
    position: usize,
}

impl ControlCharacter {
    fn describe(&self) -> String {
        let code = self.character as u32;
        let name = if code == 0 { " (a NUL byte)" } else { "" };
        format!(
            "holds the control character U+{code:04X}{name} at character {}: only a tab, \
             and line breaks in a quoted field, may appear in a field",
            self.position
        )
    }
}

/// The first control character in `value` other than tab and line breaks (which can
/// only be there inside quotes). Names and ids carrying one would reach the targets,
/// the logs and the terminal, where they can hide or forge text.
fn control_character(value: &str) -> Option<ControlCharacter> {
    // Every character to reject starts with a byte below 0x20, 0x7F (DEL) or 0xC2
    // (the C1 controls U+0080..U+009F); most fields hold none of them.
    if !value.bytes().any(|b| b < 0x20 || b == 0x7F || b == 0xC2) {
        return None;
    }
    let mut line_offset = 0;
    for (i, c) in value.chars().enumerate() {
        if c == '\n' {
            line_offset += 1;
        } else if c.is_control() && c != '\t' && c != '\r' {
            return Some(ControlCharacter {
                character: c,
                line_offset,
                position: i + 1,
            });
        }
    }
    None
}

/// Where quoting breaks: the line, the record (0 is the header), the field in it
/// (from 0) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuotingError {
    line: u64,
    record: u64,
    field: usize,
    message: &'static str,
}

/// RFC 4180 quoting: a quote may only open a field, and a quoted field must close
/// before a delimiter or line end. The csv crate accepts both mistakes silently, so
/// they are caught here, with the line and field they are in.
fn check_quoting(bytes: &[u8], delimiter: u8) -> Result<(), QuotingError> {
    let mut line = 1u64;
    let mut record = 0u64;
    let mut field = 0usize;
    let mut open_line = 0u64;
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                    match bytes.get(i + 1) {
                        None | Some(b'\n') | Some(b'\r') => {}
                        Some(&d) if d == delimiter => {}
                        Some(_) => {
                            return Err(QuotingError {
                                line,
                                record,
                                field,
                                message: "text after a closing quote (a quote inside a quoted field \
                                          is written as \"\")",
                            });
                        }
                    }
                }
            } else if b == b'\n' {
                line += 1;
            }
        } else if b == b'"' {
            if !at_field_start {
                return Err(QuotingError {
                    line,
                    record,
                    field,
                    message: "a quote inside an unquoted field (quote the whole field and double the quote)",
                });
            }
            in_quotes = true;
            open_line = line;
        } else if b == b'\n' {
            line += 1;
            record += 1;
            field = 0;
            at_field_start = true;
            i += 1;
            continue;
        } else if b == delimiter {
            field += 1;
        }
        at_field_start = !in_quotes && (b == delimiter || b == b'\r');
        i += 1;
    }
    if in_quotes {
        return Err(QuotingError {
            line: open_line,
            record,
            field,
            message: "a quoted field is never closed",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        /// The line, record and field of an error.
        type Place = (u64, u64, usize);
        let cases: &[(&str, Option<Place>)] = &[
            ("a,b\n1,2\n", None),
            ("a,b\n\"1,x\",\"say \"\"hi\"\"\"\n", None),
            ("a,b\n\"multi\nline\",2\n", None),
            ("a,b\r\n\"1\",\"2\"\r\n", None),
            ("a,b\n1,2\"x\n", Some((2, 1, 1))),
            ("a,b\n1,\"2\"x\n", Some((2, 1, 1))),
            ("a,b\n1,2\n3,\"open\n4,5\n", Some((3, 2, 1))),
            ("a,b,c\n\"x\ny\",2,\"3\"z\n", Some((3, 1, 2))),
            ("a\"b,c\n1,2\n", Some((1, 0, 0))),
        ];
        for (text, want) in cases {
            let got = check_quoting(text.as_bytes(), b',')
                .err()
                .map(|e| (e.line, e.record, e.field));
            assert_eq!(got, *want, "{text:?}");
        }
    }

    #[test]
    fn control_characters() {
        /// The character found, the line breaks before it and its position.
        type Found = (char, u64, usize);
        let cases: &[(&str, Option<Found>)] = &[
            ("plain", None),
            ("tab\tis fine", None),
            ("two\nlines\r\n", None),
            ("日本語 ✓ é", None),
            ("nul\0", Some(('\0', 0, 4))),
            ("esc\u{1b}[31m", Some(('\u{1b}', 0, 4))),
            ("a\nb\u{7f}", Some(('\u{7f}', 1, 4))),
            ("c1 \u{85}", Some(('\u{85}', 0, 4))),
            ("bell\u{7}", Some(('\u{7}', 0, 5))),
        ];
        for (value, want) in cases {
            let got = control_character(value).map(|c| (c.character, c.line_offset, c.position));
            assert_eq!(got, *want, "{value:?}");
        }
    }

    #[test]
    fn delimiter_hints() {
        let cases: &[(&str, u8, Option<&str>)] = &[
            ("id;username;email", b',', Some("`source.delimiter = \";\"`")),
            ("id\tusername", b',', Some("`source.delimiter = \"\\t\"`")),
            ("id,username", b';', Some("`source.delimiter = \",\"`")),
            ("id,username", b'\t', Some("`source.delimiter = \",\"`")),
            ("id;username", b';', None),
            ("id", b',', None),
        ];
        for (header, delimiter, want) in cases {
            let got = delimiter_hint(header, *delimiter);
            match want {
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{header:?}: {got:?}"
                ),
                None => assert_eq!(got, None, "{header:?}"),
            }
        }
    }
}
