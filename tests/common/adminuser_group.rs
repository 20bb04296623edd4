//! A stateful mock of the admin-user-group API, `PUT /platform/adminuser/groups/{groupCode}`,
//! enforcing the document: PUT, a JWT as Bearer token, `application/json`, a body
//! whose `groupCode` is the path's, `scopeTypeId`/`scopeId` int32, `name` and
//! `description` strings or null, `users` an array of user objects with documented
//! fields only (strings or null, `isActive` a boolean, `id` set). It answers the
//! group with its users, limited to the `responseFields` asked for.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use wiremock::{Request, ResponseTemplate};

use super::mock::{Contract, Mock, header, media_type, query};

/// A JWT (header.payload.signature, base64url), as the document's scheme expects.
pub const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkaXJzeW5jIn0.c2lnLTAwMS1zZWNyZXQ";

pub type AdminUserGroupApi = Mock<State>;

const USER_STRINGS: &[&str] = &[
    "emailAddress",
    "userName",
    "phoneNumber",
    "externalId",
    "localeCode",
    "firstName",
    "lastName",
    "password",
    "id",
    "identityProviderId",
];
const USER_OTHER: &[&str] = &[
    "optInToEmail",
    "optInToTextMessage",
    "isActive",
    "systemData",
    "roles",
];

/// A group as the mock keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    pub scope_type_id: i64,
    pub scope_id: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    /// User id → the user object as sent.
    pub users: BTreeMap<String, Map<String, Value>>,
}

#[derive(Debug, Default)]
pub struct State {
    pub groups: BTreeMap<String, Group>,
    /// groupCode of every accepted request, in order.
    pub accepted: Vec<String>,
    /// The `responseFields` value of every accepted request.
    pub response_fields: Vec<Option<String>>,
    pub violations: Vec<String>,
    /// User ids the target drops silently (unknown to it).
    pub ignore_users: BTreeSet<String>,
    /// Groups answered 500, state unchanged.
    pub fail: BTreeSet<String>,
}

impl State {
    pub fn members(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.groups
            .iter()
            .map(|(g, v)| (g.clone(), v.users.keys().cloned().collect()))
            .collect()
    }

    fn refuse(&mut self, req: &Request, status: u16, why: String) -> ResponseTemplate {
        self.violations
            .push(format!("{} {}: {why}", req.method, req.url.path()));
        ResponseTemplate::new(status).set_body_json(json!({ "title": "Bad Request", "detail": why }))
    }
}

fn int32(v: Option<&Value>, name: &str) -> Result<i64, String> {
    match v.and_then(Value::as_i64) {
        Some(n) if i32::try_from(n).is_ok() => Ok(n),
        _ => Err(format!("`{name}` must be an int32, got {v:?}")),
    }
}

fn string_or_null(v: Option<&Value>, name: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{name}` must be a string or null, got {other}")),
    }
}

fn check_user(u: &Value) -> Result<(String, Map<String, Value>), String> {
    let obj = u.as_object().ok_or("a user is not an object")?;
    for (k, v) in obj {
        if USER_STRINGS.contains(&k.as_str()) {
            string_or_null(Some(v), k)?;
        } else if ["optInToEmail", "optInToTextMessage", "isActive"].contains(&k.as_str()) {
            if !v.is_boolean() {
                return Err(format!("`users[].{k}` must be a boolean, got {v}"));
            }
        } else if !USER_OTHER.contains(&k.as_str()) {
            return Err(format!("`users[].{k}` is not a documented user field"));
        }
    }
    match obj.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok((id.clone(), obj.clone())),
        other => Err(format!("a user without an `id`: {other:?}")),
    }
}

impl Contract for State {
    fn violations(&self) -> &[String] {
        &self.violations
    }

    fn respond(&mut self, req: &Request) -> ResponseTemplate {
        if req.method.as_str() != "PUT" {
            return self.refuse(req, 405, "method must be PUT".into());
        }
        let Some(code) = req.url.path().strip_prefix("/platform/adminuser/groups/") else {
            return self.refuse(req, 404, "unknown path".into());
        };
        let code = percent_decode(code);
        if code.is_empty() || code.contains('/') {
            return self.refuse(req, 404, format!("bad groupCode `{code}`"));
        }
        if header(req, "authorization") != format!("Bearer {TOKEN}") {
            return ResponseTemplate::new(401).set_body_json(json!({
                "title": "Unauthorized", "status": 401, "detail": "the JWT is invalid or expired"
            }));
        }
        if media_type(req) != "application/json" {
            return self.refuse(req, 415, format!("content type `{}`", media_type(req)));
        }
        for (k, _) in req.url.query_pairs() {
            if k != "responseFields" {
                return self.refuse(req, 400, format!("unknown query parameter `{k}`"));
            }
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => return self.refuse(req, 400, format!("body is not JSON: {e}")),
        };
        let Some(obj) = body.as_object() else {
            return self.refuse(req, 400, "body is not an object".into());
        };
        let documented = [
            "groupCode",
            "scopeTypeId",
            "scopeId",
            "name",
            "description",
            "users",
            "auditInfo",
        ];
        if let Some(k) = obj.keys().find(|k| !documented.contains(&k.as_str())) {
            return self.refuse(req, 400, format!("`{k}` is not a documented field"));
        }
        let parsed = (|| -> Result<Group, String> {
            if obj.get("groupCode").and_then(Value::as_str) != Some(code.as_str()) {
                return Err(format!("`groupCode` must be the path's `{code}`"));
            }
            let mut group = Group {
                scope_type_id: int32(obj.get("scopeTypeId"), "scopeTypeId")?,
                scope_id: int32(obj.get("scopeId"), "scopeId")?,
                name: string_or_null(obj.get("name"), "name")?,
                description: string_or_null(obj.get("description"), "description")?,
                users: BTreeMap::new(),
            };
            match obj.get("users") {
                None | Some(Value::Null) => {}
                Some(Value::Array(users)) => {
                    for u in users {
                        let (id, user) = check_user(u)?;
                        if group.users.insert(id.clone(), user).is_some() {
                            return Err(format!("user `{id}` twice"));
                        }
                    }
                }
                Some(other) => return Err(format!("`users` must be an array, got {other}")),
            }
            Ok(group)
        })();
        let mut group = match parsed {
            Ok(g) => g,
            Err(why) => return self.refuse(req, 400, why),
        };
        if self.fail.contains(&code) {
            return ResponseTemplate::new(500).set_body_json(json!({ "title": "Internal Server Error" }));
        }
        group.users.retain(|id, _| !self.ignore_users.contains(id));
        let fields = query(req, "responseFields");
        let mut answer = json!({
            "groupCode": code,
            "scopeTypeId": group.scope_type_id,
            "scopeId": group.scope_id,
            "name": group.name,
            "description": group.description,
            "users": group.users.values().cloned().map(Value::Object).collect::<Vec<_>>(),
            "auditInfo": { "updateDate": "2026-11-24T05:31:56Z", "updateBy": "dirsync" },
        });
        if let (Some(fields), Some(map)) = (&fields, answer.as_object_mut()) {
            let keep: BTreeSet<&str> = fields.split(',').map(str::trim).collect();
            map.retain(|k, _| keep.contains(k.as_str()));
        }
        self.groups.insert(code.clone(), group);
        self.accepted.push(code);
        self.response_fields.push(fields);
        ResponseTemplate::new(200).set_body_json(answer)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
