//! A stateful mock of the user-group API, `PUT /api/v2/usergroup?format=json|xml`, enforcing
//! the document: PUT, a `format` query value that matches the content type (none
//! means XML), the credentials in the body (`CompanyId` an integer, `IntegrationKey`
//! a string: wrong ones are a 401), `Id` a GUID, `Name`, `ExternalId` (string or
//! null), `UserIds` an array of strings. An XML body must declare
//! `xmlns:i="http://www.w3.org/2001/XMLSchema-instance"` on its root `UserGroup`,
//! with its elements in DataContract (alphabetical) order. It answers
//! `{"UserGroup": {...}}` (or its XML form) without the key.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use super::mock::{Contract, Mock, media_type, query};
use super::xml;

pub const COMPANY_ID: i64 = 61234;
pub const KEY: &str = "s003-integration-key-4b9e27c1a8";
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

pub type UserGroupApi = Mock<State>;

/// A user group as the mock keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    pub name: String,
    pub external_id: Option<String>,
    pub user_ids: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct State {
    /// Id (lowercase GUID) → group, as last set.
    pub groups: BTreeMap<String, Group>,
    /// (group id, "json" | "xml") of every accepted request, in order.
    pub accepted: Vec<(String, String)>,
    pub violations: Vec<String>,
    /// Groups answered 400 with a message that quotes the request's key.
    pub refuse: BTreeSet<String>,
    /// User ids the target drops silently.
    pub ignore_users: BTreeSet<String>,
}

/// What a body says, whatever its format.
struct Body {
    id: String,
    group: Group,
    company_id: i64,
    key: String,
}

impl State {
    pub fn members(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.groups
            .iter()
            .map(|(id, g)| (id.clone(), g.user_ids.clone()))
            .collect()
    }

    fn refuse_request(&mut self, req: &Request, status: u16, why: String) -> ResponseTemplate {
        self.violations.push(format!("{} {}: {why}", req.method, req.url));
        ResponseTemplate::new(status).set_body_json(json!({
            "ResponseStatus": { "ErrorCode": "BadRequest", "Message": why }
        }))
    }
}

fn guid(s: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("Id `{s}` is not a GUID"))
}

fn from_json(text: &str) -> Result<Body, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("body is not an object")?;
    let known = [
        "Id",
        "Name",
        "ExternalId",
        "UserIds",
        "CompanyId",
        "IntegrationKey",
    ];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("`{k}` is not a parameter"));
    }
    if let Some(k) = known.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("`{k}` is missing (dirsync sends every parameter)"));
    }
    let string = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .ok_or(format!("`{k}` must be a string"))
    };
    let external_id = match obj.get("ExternalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("`ExternalId` must be a string, got {other}")),
    };
    let mut user_ids = BTreeSet::new();
    for u in obj
        .get("UserIds")
        .and_then(Value::as_array)
        .ok_or("`UserIds` must be an array")?
    {
        user_ids.insert(
            u.as_str()
                .ok_or(format!("a user id is not a string: {u}"))?
                .to_owned(),
        );
    }
    Ok(Body {
        id: guid(string("Id")?)?,
        group: Group {
            name: string("Name")?.to_owned(),
            external_id,
            user_ids,
        },
        company_id: obj
            .get("CompanyId")
            .and_then(Value::as_i64)
            .ok_or("`CompanyId` must be an integer")?,
        key: string("IntegrationKey")?.to_owned(),
    })
}

fn from_xml(text: &str) -> Result<Body, String> {
    let root = xml::parse(text)?;
    if root.local() != "UserGroup" {
        return Err(format!("root element `{}`, expected `UserGroup`", root.name));
    }
    if root.attr("xmlns:i") != Some(XSI) {
        return Err(format!("the root element must declare xmlns:i=\"{XSI}\""));
    }
    let names = root.child_names();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if names != sorted {
        return Err(format!("elements {names:?} are not in DataContract order"));
    }
    // dirsync sends every parameter (a null as `i:nil`), so each must be here.
    let known = [
        "CompanyId",
        "ExternalId",
        "Id",
        "IntegrationKey",
        "Name",
        "UserIds",
    ];
    if names != known {
        return Err(format!("elements {names:?}, expected {known:?}"));
    }
    let text_of = |n: &str| -> Result<&str, String> {
        root.child(n)
            .map(|c| c.text.as_str())
            .ok_or(format!("`{n}` is missing"))
    };
    let external_id = match root.child("ExternalId") {
        None => return Err("`ExternalId` is missing".into()),
        Some(e) if e.is_nil() => {
            // `i:nil` only means something with the `i` namespace declared.
            if !e.name.starts_with("ExternalId") || !e.attrs.iter().any(|(k, _)| k == "i:nil") {
                return Err("nil must be written `i:nil=\"true\"`".into());
            }
            None
        }
        Some(e) => Some(e.text.clone()),
    };
    let ids = root.child("UserIds").ok_or("`UserIds` is missing")?;
    let mut user_ids = BTreeSet::new();
    for item in &ids.children {
        if item.local() != "string" {
            return Err(format!("`UserIds` holds `{}`, expected strings", item.name));
        }
        user_ids.insert(item.text.clone());
    }
    Ok(Body {
        id: guid(text_of("Id")?)?,
        group: Group {
            name: text_of("Name")?.to_owned(),
            external_id,
            user_ids,
        },
        company_id: text_of("CompanyId")?
            .trim()
            .parse()
            .map_err(|_| "`CompanyId` must be an integer".to_owned())?,
        key: text_of("IntegrationKey")?.to_owned(),
    })
}

fn answer(xml_format: bool, id: &str, g: &Group) -> ResponseTemplate {
    if !xml_format {
        return ResponseTemplate::new(200).set_body_json(json!({
            "UserGroup": {
                "Id": id, "Name": g.name, "ExternalId": g.external_id,
                "UserIds": g.user_ids, "CompanyId": COMPANY_ID,
            }
        }));
    }
    let ext = match &g.external_id {
        None => r#"<ExternalId i:nil="true"/>"#.to_owned(),
        Some(e) => format!("<ExternalId>{}</ExternalId>", xml::escape(e)),
    };
    let ids: String = g
        .user_ids
        .iter()
        .map(|u| format!("<d2p1:string>{}</d2p1:string>", xml::escape(u)))
        .collect();
    let body = format!(
        r#"<UserGroupResponse xmlns:i="{XSI}"><UserGroup><CompanyId>{COMPANY_ID}</CompanyId>{ext}<Id>{id}</Id><Name>{}</Name><UserIds xmlns:d2p1="http://schemas.microsoft.com/2003/10/Serialization/Arrays">{ids}</UserIds></UserGroup></UserGroupResponse>"#,
        xml::escape(&g.name)
    );
    ResponseTemplate::new(200).set_body_raw(body, "application/xml")
}

impl Contract for State {
    fn violations(&self) -> &[String] {
        &self.violations
    }

    fn respond(&mut self, req: &Request) -> ResponseTemplate {
        if req.method.as_str() != "PUT" {
            return self.refuse_request(req, 405, "method must be PUT".into());
        }
        if req.url.path() != "/api/v2/usergroup" {
            return self.refuse_request(req, 404, "unknown path".into());
        }
        let format = query(req, "format");
        let ctype = media_type(req);
        let xml_format = match ctype.as_str() {
            "" | "application/xml" | "text/xml" => true,
            "application/json" => false,
            other => return self.refuse_request(req, 415, format!("content type `{other}`")),
        };
        let want = if xml_format { "xml" } else { "json" };
        if format.as_deref() != Some(want) {
            return self.refuse_request(req, 400, format!("format={format:?} with a {want} body"));
        }
        let text = String::from_utf8_lossy(&req.body).into_owned();
        let body = match if xml_format {
            from_xml(&text)
        } else {
            from_json(&text)
        } {
            Ok(b) => b,
            Err(why) => return self.refuse_request(req, 400, why),
        };
        if body.company_id != COMPANY_ID || body.key != KEY {
            // Not a contract violation: the credentials are wrong. The message quotes
            // the key presented, as careless servers do.
            return ResponseTemplate::new(401).set_body_json(json!({
                "ResponseStatus": {
                    "ErrorCode": "Unauthorized",
                    "Message": format!("invalid integration key '{}' for company {}", body.key, body.company_id),
                }
            }));
        }
        if self.refuse.contains(&body.id) {
            return ResponseTemplate::new(400).set_body_json(json!({
                "ResponseStatus": {
                    "ErrorCode": "ValidationException",
                    "Message": format!("user group {} is archived (key {})", body.id, body.key),
                }
            }));
        }
        let mut group = body.group;
        group.user_ids.retain(|u| !self.ignore_users.contains(u));
        self.groups.insert(body.id.clone(), group.clone());
        self.accepted.push((body.id.clone(), want.to_owned()));
        answer(xml_format, &body.id, &group)
    }
}
