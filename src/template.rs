//! Request and mapping templates, rendered with minijinja.
//!
//! The escaping of every `{{ value }}` is chosen by the template's kind, never by the
//! template author, so that data can not break the document it lands in:
//! - `Json`: each value is written as a JSON literal (`"a \"b\""`, `["x","y"]`, `true`);
//! - `Xml`: strings are XML-escaped, booleans are `true`/`false`, none is empty;
//! - `Url`: values are percent-encoded as one path segment or query value;
//! - `Text`: values are written as they are (ids, names in mappings).
//!
//! Undefined variables are errors, so a typo in a template fails `dirsync check`
//! instead of sending an empty field.
//!
//! Two filters serve the presets and any operator template:
//! - `guid`: a GUID in its canonical form (lowercase, hyphenated); anything else is an
//!   error, so the entity is reported and skipped instead of sent with a bad id;
//! - `field(name)`: a field of a user or group view by the name a mapping uses (`email`,
//!   `source_id`, …), else its extra attribute `attrs.NAME`, else none. It lets a preset
//!   take "which attribute holds X" from `vars` instead of hard-coding it.

use std::collections::BTreeSet;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

/// How values are escaped in one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Xml,
    Url,
    Text,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Json => ".json",
            Kind::Xml => ".xml",
            Kind::Url => ".url",
            Kind::Text => ".txt",
        }
    }
}

/// A template failed to compile or render.
#[derive(Debug, thiserror::Error)]
#[error("template `{name}`: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

/// Characters left alone in a percent-encoded segment (RFC 3986 unreserved).
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A set of named, compiled templates sharing one environment.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The name's suffix is the template's kind (`Kind::suffix`).
        env.set_auto_escape_callback(|name| match name.rsplit_once('.').map(|(_, suffix)| suffix) {
            Some("json") => AutoEscape::Json,
            Some("xml") => AutoEscape::Custom("xml".into()),
            Some("url") => AutoEscape::Custom("url".into()),
            _ => AutoEscape::None,
        });
        env.set_formatter(|out, state, value| match state.auto_escape() {
            AutoEscape::Custom(kind) if kind == "xml" => {
                out.write_str(&xml_text(value)?).map_err(minijinja::Error::from)
            }
            AutoEscape::Custom(kind) if kind == "url" => {
                let text = plain_text(value);
                // A URL parser takes these for "this" and "the parent" segment, even
                // percent-encoded: the request would go to another resource.
                if text == "." || text == ".." {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("`{text}` cannot be a URL path segment"),
                    ));
                }
                write!(out, "{}", utf8_percent_encode(&text, SEGMENT)).map_err(minijinja::Error::from)
            }
            // Text: nothing for a missing value, not minijinja's `None`.
            AutoEscape::None => out.write_str(&plain_text(value)).map_err(minijinja::Error::from),
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.add_filter("guid", guid);
        env.add_filter("field", field);
        // A missing value stays missing through the string filters, instead of
        // becoming the text `none` (an id of `none`, a body's `"none"`).
        env.add_filter("lower", missing_stays::lower);
        env.add_filter("upper", missing_stays::upper);
        env.add_filter("capitalize", missing_stays::capitalize);
        env.add_filter("title", missing_stays::title);
        env.add_filter("trim", missing_stays::trim);
        env.add_filter("replace", missing_stays::replace);
        env.add_filter("string", missing_stays::string);
        Templates { env }
    }

    /// The variables the template added as `name` reads from its context, with nested
    /// attribute lookups spelled out (`vars.scope_id`), for validating a config before
    /// anything is rendered.
    pub(crate) fn undeclared(&self, name: &str, kind: Kind) -> BTreeSet<String> {
        let full = format!("{name}{}", kind.suffix());
        self.env
            .get_template(&full)
            .map(|t| t.undeclared_variables(true))
            .unwrap_or_default()
            .into_iter()
            .filter(|v| {
                let top = v.split('.').next().unwrap_or(v);
                !self.env.globals().any(|(g, _)| g == top)
            })
            .collect()
    }

    /// Compiles `source` under `name`; the kind decides how values are escaped.
    pub(crate) fn add(&mut self, name: &str, kind: Kind, source: &str) -> Result<(), TemplateError> {
        let full = format!("{name}{}", kind.suffix());
        self.env
            .add_template_owned(full, source.to_owned())
            .map_err(|e| TemplateError {
                name: name.to_owned(),
                message: describe(&e),
            })
    }

    /// Renders the template added as `name` with `kind`.
    pub(crate) fn render<C: Serialize>(
        &self,
        name: &str,
        kind: Kind,
        ctx: &C,
    ) -> Result<String, TemplateError> {
        self.render_value(name, kind, &context(ctx))
    }

    /// Renders the template added as `name` with `kind` and a context made by
    /// [`context`]: several templates of one request share one conversion.
    pub(crate) fn render_value(&self, name: &str, kind: Kind, ctx: &Value) -> Result<String, TemplateError> {
        let full = format!("{name}{}", kind.suffix());
        let err = |e: minijinja::Error| TemplateError {
            name: name.to_owned(),
            message: describe(&e),
        };
        let tmpl = self.env.get_template(&full).map_err(err)?;
        tmpl.render(ctx).map_err(err)
    }
}

/// `ctx` as a template context. The conversion copies every value (a group's
/// member ids among them); cloning the result does not.
pub fn context<C: Serialize>(ctx: &C) -> Value {
    Value::from(minijinja::value::Serde(ctx))
}

/// One line: what went wrong and where, without the template's data.
fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

/// The `guid` filter: the canonical form of a GUID, or an error naming the value.
fn guid(value: Value) -> Result<String, minijinja::Error> {
    let text = plain_text(&value);
    uuid::Uuid::parse_str(text.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, format!("`{text}` is not a GUID")))
}

/// minijinja's string filters, with none (a missing value) passed through as none.
mod missing_stays {
    use std::borrow::Cow;

    use minijinja::filters;
    use minijinja::value::{StringInput, Value};
    use minijinja::{Error, State};

    pub(super) fn lower(v: Option<StringInput<'_>>) -> Option<Value> {
        v.map(filters::lower)
    }

    pub(super) fn upper(v: Option<StringInput<'_>>) -> Option<Value> {
        v.map(filters::upper)
    }

    pub(super) fn capitalize(v: Option<StringInput<'_>>) -> Option<Value> {
        v.map(filters::capitalize)
    }

    pub(super) fn title(v: Option<Cow<'_, str>>) -> Option<String> {
        v.map(filters::title)
    }

    pub(super) fn trim(v: Option<StringInput<'_>>, chars: Option<Cow<'_, str>>) -> Option<Value> {
        v.map(|v| filters::trim(v, chars))
    }

    pub(super) fn replace(
        state: &mut State,
        v: Option<StringInput<'_>>,
        from: StringInput<'_>,
        to: StringInput<'_>,
    ) -> Result<Option<Value>, Error> {
        v.map(|v| filters::replace(state, v, from, to)).transpose()
    }

    pub(super) fn string(state: &State, v: &Value) -> Result<Value, Error> {
        if v.is_none() {
            return Ok(v.clone());
        }
        filters::string(state, v)
    }
}

/// The `field(name)` filter: `value.name` if set, else `value.attrs.name`, else none.
fn field(value: Value, name: &str) -> Result<Value, minijinja::Error> {
    let set = |v: &Value| !v.is_undefined() && !v.is_none();
    let direct = value.get_attr(name)?;
    if set(&direct) {
        return Ok(direct);
    }
    let attrs = value.get_attr("attrs")?;
    if set(&attrs) {
        let v = attrs.get_attr(name)?;
        if set(&v) {
            return Ok(v);
        }
    }
    Ok(Value::from(()))
}

fn plain_text(value: &Value) -> String {
    if value.is_none() || value.is_undefined() {
        String::new()
    } else if let Some(s) = value.as_str() {
        s.to_owned()
    } else if value.kind() == minijinja::value::ValueKind::Bool {
        value.is_true().to_string()
    } else {
        value.to_string()
    }
}

/// A value as XML character data. A carriage return is written as `&#13;`, since a
/// parser turns a literal one into a line feed and the target would store another
/// value; a control character XML 1.0 cannot carry at all is an error, so the entity
/// is reported as invalid source data instead of sent as a document the target
/// rejects.
/// `text` as the XML kind writes it; `None` when XML cannot carry it.
pub(crate) fn xml_escaped(text: &str) -> Option<String> {
    xml_text(&Value::from(text)).ok()
}

fn xml_text(value: &Value) -> Result<String, minijinja::Error> {
    let text = plain_text(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}' => {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("the value holds U+{:04X}, which XML cannot carry", u32::from(c)),
                ));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: Kind, source: &str, ctx: serde_json::Value, expected: &str) {
        let mut t = Templates::new();
        t.add("t", kind, source).expect("compiles");
        assert_eq!(t.render("t", kind, &ctx).expect("renders"), expected);
    }

    #[test]
    fn json_values_are_literals() {
        check(
            Kind::Json,
            r#"{"name": {{ name }}, "members": {{ members }}, "on": {{ on }}}"#,
            json!({"name": "a \"q\" <b> & c\nd", "members": ["x", "y"], "on": true}),
            r#"{"name": "a \"q\" <b> & c\nd", "members": ["x","y"], "on": true}"#,
        );
    }

    /// A missing value stays missing through the string filters: nothing in text,
    /// `null` in JSON, never the text `none`; a present one is filtered as usual.
    #[test]
    fn string_filters_keep_a_missing_value_missing() {
        for filter in [
            "lower",
            "upper",
            "capitalize",
            "title",
            "trim",
            "trim(\"x\")",
            "replace(\"a\", \"b\")",
            "string",
        ] {
            let source = format!("{{{{ a | {filter} }}}}");
            check(Kind::Text, &source, json!({"a": null}), "");
            check(Kind::Json, &source, json!({"a": null}), "null");
        }
        check(Kind::Text, "{{ a | lower }}", json!({"a": "Ann@X"}), "ann@x");
        check(Kind::Text, "{{ a | upper }}", json!({"a": "ops"}), "OPS");
        check(Kind::Text, "{{ a | trim }}", json!({"a": " x "}), "x");
        check(Kind::Text, "{{ a | trim(\"-\") }}", json!({"a": "-x-"}), "x");
        check(
            Kind::Text,
            "{{ a | title }}",
            json!({"a": "big team"}),
            "Big Team",
        );
        check(Kind::Text, "{{ a | capitalize }}", json!({"a": "big"}), "Big");
        check(
            Kind::Text,
            "{{ a | replace(\"a\", \"b\") }}",
            json!({"a": "aa"}),
            "bb",
        );
        check(Kind::Json, "{{ a | string }}", json!({"a": 5}), "\"5\"");
    }

    #[test]
    fn xml_values_are_escaped() {
        check(
            Kind::Xml,
            "<Name>{{ name }}</Name><On>{{ on }}</On><N>{{ none }}</N>",
            json!({"name": "a \"q\" <b> & c", "on": false, "none": null}),
            "<Name>a &quot;q&quot; &lt;b&gt; &amp; c</Name><On>false</On><N></N>",
        );
    }

    /// A carriage return survives a parser only as a character reference; a control
    /// character XML cannot carry fails the render, naming it.
    #[test]
    fn xml_keeps_carriage_returns_and_refuses_what_it_cannot_carry() {
        check(
            Kind::Xml,
            "<Name>{{ name }}</Name>",
            json!({"name": "a\r\nb\tc"}),
            "<Name>a&#13;\nb\tc</Name>",
        );
        let mut t = Templates::new();
        t.add("t", Kind::Xml, "<Name>{{ name }}</Name>")
            .expect("compiles");
        let e = t
            .render("t", Kind::Xml, &json!({"name": "a\u{1}b"}))
            .expect_err("U+0001 is not XML");
        assert!(e.to_string().contains("U+0001"), "{e}");
    }

    /// Text (ids, query values, headers) prints nothing for a missing value, so that
    /// a user without an email has no id rather than the id "None", and an empty
    /// query value is left out; booleans print as they do in JSON.
    #[test]
    fn text_prints_nothing_for_none_and_booleans_as_json_does() {
        check(
            Kind::Text,
            "[{{ none }}][{{ on }}][{{ off }}][{{ n }}]",
            json!({"none": null, "on": true, "off": false, "n": 7}),
            "[][true][false][7]",
        );
    }

    #[test]
    fn url_values_are_one_segment() {
        check(
            Kind::Url,
            "/group/{{ id }}/members",
            json!({"id": "a/b c?d"}),
            "/group/a%2Fb%20c%3Fd/members",
        );
        check(Kind::Url, "/group/{{ id }}", json!({"id": "..."}), "/group/...");
        let mut t = Templates::new();
        t.add("t", Kind::Url, "/group/{{ id }}/members")
            .expect("compiles");
        for dots in [".", ".."] {
            let e = t
                .render("t", Kind::Url, &json!({ "id": dots }))
                .expect_err("a dot segment");
            assert!(e.to_string().contains("cannot be a URL path segment"), "{e}");
        }
    }

    #[test]
    fn guid_filter_canonicalizes_or_fails() {
        check(
            Kind::Json,
            "{{ a | guid }}",
            json!({"a": "{4A6008E9-C171-4DCB-BB8D-9912DE902DC3}"}),
            r#""4a6008e9-c171-4dcb-bb8d-9912de902dc3""#,
        );
        let mut t = Templates::new();
        t.add("t", Kind::Json, "{{ a | guid }}").expect("compiles");
        let err = t
            .render("t", Kind::Json, &json!({"a": "nope"}))
            .expect_err("not a guid");
        assert!(err.to_string().contains("`nope` is not a GUID"), "{err}");
    }

    #[test]
    fn field_filter_reads_fields_then_attrs() {
        let ctx = json!({"u": {"email": "a@x", "phone": null, "attrs": {"phone": "1", "tz": "UTC"}}});
        check(Kind::Json, r#"{{ u | field("email") }}"#, ctx.clone(), r#""a@x""#);
        check(Kind::Json, r#"{{ u | field("phone") }}"#, ctx.clone(), r#""1""#);
        check(Kind::Json, r#"{{ u | field("tz") }}"#, ctx.clone(), r#""UTC""#);
        check(Kind::Json, r#"{{ u | field("nope") }}"#, ctx, "null");
    }

    #[test]
    fn undeclared_lists_nested_lookups() {
        let mut t = Templates::new();
        t.add(
            "t",
            Kind::Json,
            "{% for u in member_users %}{% if not loop.first %},{% endif %}{{ u.id }}{% endfor %}\
             {{ vars.a }}{{ secrets.b | guid }}{{ range(2) }}",
        )
        .expect("compiles");
        let got: Vec<String> = t.undeclared("t", Kind::Json).into_iter().collect();
        assert_eq!(got, ["member_users", "secrets.b", "vars.a"]);
    }

    #[test]
    fn undefined_is_an_error() {
        let mut t = Templates::new();
        t.add("t", Kind::Text, "{{ missing.field }}").expect("compiles");
        let err = t.render("t", Kind::Text, &json!({})).expect_err("undefined");
        assert!(err.to_string().starts_with("template `t`:"), "{err}");
    }
}
