//! A stateful mock of the admin-user API, `PUT api/v1/admin/users/{id}`, enforcing the
//! document: PUT, `{id}` a GUID, a Bearer token, a JSON or XML content type, a body
//! holding only documented User fields (XML: root `User`, elements in the order of
//! the document's sample) with every Required one: DisplayName, EmailAddress (an
//! address), Enabled (a boolean), LanguageID (a GUID), MobilePhone (matching the
//! document's pattern), TimeZone, Username. It answers a ResponseOfUser in the
//! request's format, with `Error.ErrorCode` set for a user it is told to refuse.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use wiremock::{Request, ResponseTemplate};

use super::mock::{Contract, Mock, header, media_type};
use super::xml;

pub const TOKEN: &str = "s002-token-8c1d6b3e9f2a47d0";

/// The document's MobilePhone pattern, verbatim.
pub const PHONE: &str = r"^(?=.*?\d.*?\d.*?\d.*?\d.*?\d)([+]?)([\d\s\(\)-]{5,20})$";

pub type AdminUserApi = Mock<State>;

/// User fields in the order of the document's XML sample.
const FIELDS: &[&str] = &[
    "ID",
    "AgreementDate",
    "AccountID",
    "AdminUser",
    "DateCreated",
    "DateModified",
    "DeclineDate",
    "DisplayName",
    "DPAVersion",
    "EmailAddress",
    "Enabled",
    "LanguageID",
    "Language",
    "MobilePhone",
    "Password",
    "Pin",
    "Preferences",
    "PrivacyPolicyVersion",
    "SSOEnabled",
    "TimeZone",
    "Username",
    "UserPassword",
];

#[derive(Debug, Default)]
pub struct State {
    /// User id (lowercase GUID) → the user's fields as last set (JSON values).
    pub users: BTreeMap<String, Map<String, Value>>,
    /// (user id, "json" | "xml") of every accepted request, in order.
    pub accepted: Vec<(String, String)>,
    pub violations: Vec<String>,
    /// Users answered with `Error.ErrorCode` set (state unchanged).
    pub refuse: BTreeSet<String>,
    /// Users the caller may not edit: answered 403 (state unchanged).
    pub forbid: BTreeSet<String>,
    /// The target keeps email addresses in lowercase (so its echo differs).
    pub lowercase_email: bool,
}

impl State {
    /// User id → (Username, Enabled).
    pub fn summary(&self) -> BTreeMap<String, (String, bool)> {
        self.users
            .iter()
            .map(|(id, u)| {
                (
                    id.clone(),
                    (
                        u["Username"].as_str().unwrap_or_default().to_owned(),
                        u["Enabled"].as_bool().unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }

    fn refuse_request(&mut self, req: &Request, status: u16, why: String) -> ResponseTemplate {
        self.violations
            .push(format!("{} {}: {why}", req.method, req.url.path()));
        ResponseTemplate::new(status).set_body_string(why)
    }
}

/// The fields of an XML body, as JSON values (Enabled as a boolean), in order.
fn from_xml(body: &str) -> Result<Map<String, Value>, String> {
    let root = xml::parse(body)?;
    if root.name != "User" {
        return Err(format!("root element `{}`, expected `User`", root.name));
    }
    let mut last = None;
    let mut out = Map::new();
    for child in &root.children {
        let Some(pos) = FIELDS.iter().position(|f| *f == child.name) else {
            return Err(format!("`{}` is not a User element", child.name));
        };
        if last.is_some_and(|l| pos <= l) {
            return Err(format!("`{}` is out of the document's order", child.name));
        }
        last = Some(pos);
        let value = match (child.name.as_str(), child.text.as_str()) {
            ("Enabled" | "AdminUser" | "SSOEnabled", "true") => Value::Bool(true),
            ("Enabled" | "AdminUser" | "SSOEnabled", "false") => Value::Bool(false),
            ("Enabled" | "AdminUser" | "SSOEnabled", other) => {
                return Err(format!("`{}` must be true or false, got `{other}`", child.name));
            }
            (_, text) => Value::String(text.to_owned()),
        };
        out.insert(child.name.clone(), value);
    }
    Ok(out)
}

fn check_user(id: &str, user: &Map<String, Value>) -> Result<(), String> {
    if let Some(k) = user.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("`{k}` is not a User field"));
    }
    let string = |name: &str| match user.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.as_str()),
        other => Err(format!("{name} is Required, got {other:?}")),
    };
    string("DisplayName")?;
    string("TimeZone")?;
    string("Username")?;
    let email = string("EmailAddress")?;
    if email.split('@').count() != 2 || email.contains(char::is_whitespace) {
        return Err(format!("EmailAddress `{email}` is not an address"));
    }
    if !user.get("Enabled").is_some_and(Value::is_boolean) {
        return Err("Enabled is a Required boolean".into());
    }
    if uuid::Uuid::parse_str(string("LanguageID")?).is_err() {
        return Err("LanguageID must be a GUID".into());
    }
    let phone = string("MobilePhone")?;
    let pattern = fancy_regex::Regex::new(PHONE).expect("the document's pattern");
    if !pattern.is_match(phone).unwrap_or(false) {
        return Err(format!(
            "MobilePhone `{phone}` does not match the document's pattern"
        ));
    }
    if let Some(given) = user.get("ID") {
        let same = given
            .as_str()
            .and_then(|g| uuid::Uuid::parse_str(g).ok())
            .is_some_and(|g| g.hyphenated().to_string() == id);
        if !same {
            return Err(format!("ID {given} differs from the path's {id}"));
        }
    }
    Ok(())
}

fn answer(
    xml_format: bool,
    id: &str,
    error: Option<(&str, &str)>,
    detail: Option<&Map<String, Value>>,
) -> ResponseTemplate {
    if !xml_format {
        let error = error.map(|(code, reason)| json!({ "ErrorCode": code, "ErrorReason": reason }));
        let data = detail.map(|d| {
            json!({ "Identification": { "UserId": id }, "Result": "Updated", "Detail": Value::Object(d.clone()) })
        });
        return ResponseTemplate::new(200).set_body_json(json!({ "Error": error, "ResponseData": data }));
    }
    let mut s = String::from(
        r#"<ResponseOfUser xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
    );
    if let Some((code, reason)) = error {
        s.push_str(&format!(
            "<Error><ErrorCode>{}</ErrorCode><ErrorReason>{}</ErrorReason></Error>",
            xml::escape(code),
            xml::escape(reason)
        ));
    }
    if let Some(d) = detail {
        s.push_str(&format!(
            "<ResponseData><Result>Updated</Result><Identification><UserId>{id}</UserId></Identification><Detail>"
        ));
        for f in FIELDS {
            if let Some(v) = d.get(*f) {
                let text = match v {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                s.push_str(&format!("<{f}>{}</{f}>", xml::escape(&text)));
            }
        }
        s.push_str("</Detail></ResponseData>");
    }
    s.push_str("</ResponseOfUser>");
    ResponseTemplate::new(200).set_body_raw(s, "application/xml")
}

impl Contract for State {
    fn violations(&self) -> &[String] {
        &self.violations
    }

    fn respond(&mut self, req: &Request) -> ResponseTemplate {
        if req.method.as_str() != "PUT" {
            return self.refuse_request(req, 405, "method must be PUT".into());
        }
        let Some(id) = req.url.path().strip_prefix("/api/v1/admin/users/") else {
            return self.refuse_request(req, 404, "unknown path".into());
        };
        let Ok(id) = uuid::Uuid::parse_str(id).map(|u| u.hyphenated().to_string()) else {
            return self.refuse_request(req, 404, format!("`{id}` is not a GUID"));
        };
        if header(req, "authorization") != format!("Bearer {TOKEN}") {
            return ResponseTemplate::new(401).set_body_json(json!({
                "Error": { "ErrorCode": "401", "ErrorReason": "Authorization has been denied for this request." }
            }));
        }
        if self.forbid.contains(&id) {
            return ResponseTemplate::new(403).set_body_json(json!({
                "Error": { "ErrorCode": "403", "ErrorReason": "The caller may not edit this user." }
            }));
        }
        let ctype = media_type(req);
        let xml_format = match ctype.as_str() {
            "application/json" | "text/json" => false,
            "application/xml" | "text/xml" => true,
            other => return self.refuse_request(req, 415, format!("content type `{other}`")),
        };
        let text = String::from_utf8_lossy(&req.body).into_owned();
        let user = if xml_format {
            from_xml(&text)
        } else {
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err("body is not an object".into()),
                Err(e) => Err(format!("body is not JSON: {e}")),
            }
        };
        let mut user = match user.and_then(|u| check_user(&id, &u).map(|()| u)) {
            Ok(u) => u,
            Err(why) => return self.refuse_request(req, 400, why),
        };
        let accept = header(req, "accept");
        let answer_xml = if accept.is_empty() {
            xml_format
        } else {
            accept.contains("xml")
        };
        if self.refuse.contains(&id) {
            return answer(
                answer_xml,
                &id,
                Some(("USR-LOCKED", "The user is locked for editing")),
                None,
            );
        }
        if self.lowercase_email
            && let Some(Value::String(e)) = user.get_mut("EmailAddress")
        {
            *e = e.to_lowercase();
        }
        self.users.insert(id.clone(), user.clone());
        self.accepted
            .push((id.clone(), if xml_format { "xml" } else { "json" }.to_owned()));
        answer(answer_xml, &id, None, Some(&user))
    }
}
