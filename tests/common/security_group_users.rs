//! A stateful mock of the security-group-users API, `PUT Application/PutSecurityGroupUsers`, enforcing the
//! document: PUT, a JSON content type (`application/json` or `text/json`), a body
//! that is a non-empty array of SecurityGroupUser objects with only documented
//! fields, every Required field present with its type (GUIDs canonical, booleans
//! booleans, UserName a non-empty string), one SecurityGroupID per request. The
//! document names no auth; this mock wants a Bearer token. It answers a
//! ServiceResponse, `IsSuccess: false` with ErrorMessage and Code for a group it is
//! told to refuse.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use super::mock::{Contract, Mock, header, is_canonical_guid, media_type};

pub const TOKEN: &str = "s000-token-d5e1f0c2b7a94e3f";

pub type SecurityGroupUsersApi = Mock<State>;

/// Required booleans, as the document lists them.
pub const REQUIRED_BOOLEANS: &[&str] = &[
    "CanLogIn",
    "ChangePassword",
    "BlockSynch",
    "Locked",
    "ClearData",
    "RememberMe",
    "RefreshData",
    "HasTwoFactorAuthentication",
    "IsActive",
    "CanSignDocuments",
    "IsVerified",
    "MobileOnlyUser",
    "IsUpgradeAvailable",
];

/// Documented fields that are not Required: (name, type).
const OPTIONAL: &[(&str, &str)] = &[
    ("ID", "guid"),
    ("Name", "string"),
    ("Password", "bytes"),
    ("Domain", "string"),
    ("MobileVersion", "string"),
    ("DateInstalled", "date"),
    ("PinCode", "string"),
    ("APIToken", "string"),
    ("RoleID", "guid"),
    ("CompanyRoleID", "guid"),
    ("TokenCacheBits", "bytes"),
    ("TokenLastWrite", "date"),
    ("ExpiresIn", "integer"),
    ("MonthlyHours", "integer"),
    ("DatePasswordExpires", "date"),
    ("DocuSignUserID", "string"),
    ("DateVerified", "date"),
    ("Token", "string"),
    ("RefreshTokenCache", "bytes"),
    ("LastSyncDate", "date"),
    ("DateUpgraded", "date"),
    ("LastSuccessfulSyncDate", "date"),
    ("PreviousMobileVersion", "string"),
    ("Contact", "object"),
    ("Role", "object"),
    ("SecurityGroup", "object"),
];

/// One SecurityGroupUser as the mock keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_name: String,
    pub name: Option<String>,
    pub booleans: BTreeMap<String, bool>,
}

#[derive(Debug, Default)]
pub struct State {
    /// SecurityGroupID → ContactID → the user's entry, as last set.
    pub groups: BTreeMap<String, BTreeMap<String, Member>>,
    /// SecurityGroupID of every accepted request, in order.
    pub accepted: Vec<String>,
    pub violations: Vec<String>,
    /// Groups answered `IsSuccess: false` (state unchanged).
    pub refuse: BTreeSet<String>,
}

impl State {
    /// SecurityGroupID → ContactIDs.
    pub fn members(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.groups
            .iter()
            .map(|(g, m)| (g.clone(), m.keys().cloned().collect()))
            .collect()
    }

    fn refuse_request(&mut self, req: &Request, status: u16, why: String) -> ResponseTemplate {
        self.violations
            .push(format!("{} {}: {why}", req.method, req.url.path()));
        ResponseTemplate::new(status).set_body_json(json!({
            "IsSuccess": false, "ErrorMessage": why, "Code": "BadRequest", "StackTrace": null, "Response": null
        }))
    }
}

fn check_item(item: &Value) -> Result<(String, String, Member), String> {
    let obj = item.as_object().ok_or("an item is not an object")?;
    let guid = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) if is_canonical_guid(s) => Ok(s.clone()),
            other => Err(format!("{name} must be a canonical GUID string, got {other:?}")),
        }
    };
    let contact = guid("ContactID")?;
    let group = guid("SecurityGroupID")?;
    let user_name = match obj.get("UserName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        other => return Err(format!("UserName is Required, got {other:?}")),
    };
    let mut booleans = BTreeMap::new();
    for name in REQUIRED_BOOLEANS {
        match obj.get(*name) {
            Some(Value::Bool(b)) => {
                booleans.insert((*name).to_owned(), *b);
            }
            other => return Err(format!("{name} is a Required boolean, got {other:?}")),
        }
    }
    for (key, value) in obj {
        if ["ContactID", "SecurityGroupID", "UserName"].contains(&key.as_str())
            || REQUIRED_BOOLEANS.contains(&key.as_str())
        {
            continue;
        }
        let Some((_, kind)) = OPTIONAL.iter().find(|(n, _)| n == key) else {
            return Err(format!("`{key}` is not a SecurityGroupUser field"));
        };
        let ok = match (*kind, value) {
            (_, Value::Null) => true,
            ("guid", Value::String(s)) => is_canonical_guid(s),
            ("string" | "bytes" | "date", Value::String(_)) => true,
            ("integer", Value::Number(n)) => n.is_i64(),
            ("object", Value::Object(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(format!("`{key}` must be {kind}, got {value}"));
        }
    }
    let name = obj.get("Name").and_then(Value::as_str).map(str::to_owned);
    Ok((
        group,
        contact,
        Member {
            user_name,
            name,
            booleans,
        },
    ))
}

impl Contract for State {
    fn violations(&self) -> &[String] {
        &self.violations
    }

    fn respond(&mut self, req: &Request) -> ResponseTemplate {
        if req.method.as_str() != "PUT" {
            return self.refuse_request(req, 405, "method must be PUT".into());
        }
        if req.url.path() != "/Application/PutSecurityGroupUsers" {
            return self.refuse_request(req, 404, "unknown path".into());
        }
        let auth = header(req, "authorization");
        if auth != format!("Bearer {TOKEN}") {
            // Wrong credentials are the caller's problem, not a contract violation.
            // The answer echoes what was presented, as careless servers do.
            return ResponseTemplate::new(401).set_body_json(json!({
                "IsSuccess": false,
                "ErrorMessage": format!("Authorization has been denied for this request ({auth})"),
                "Code": "Unauthorized",
            }));
        }
        let ctype = media_type(req);
        if !["application/json", "text/json"].contains(&ctype.as_str()) {
            return self.refuse_request(req, 415, format!("content type `{ctype}`"));
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => return self.refuse_request(req, 400, format!("body is not JSON: {e}")),
        };
        let Some(items) = body.as_array() else {
            return self.refuse_request(req, 400, "body is not a collection of SecurityGroupUser".into());
        };
        if items.is_empty() {
            return self.refuse_request(req, 400, "an empty collection names no security group".into());
        }
        let mut group = None;
        let mut members = BTreeMap::new();
        for item in items {
            let (g, contact, member) = match check_item(item) {
                Ok(x) => x,
                Err(why) => return self.refuse_request(req, 400, why),
            };
            if group.get_or_insert_with(|| g.clone()) != &g {
                return self.refuse_request(req, 400, "items name different security groups".into());
            }
            if members.insert(contact.clone(), member).is_some() {
                return self.refuse_request(req, 400, format!("ContactID {contact} twice"));
            }
        }
        let group = group.unwrap_or_default();
        if self.refuse.contains(&group) {
            return ResponseTemplate::new(200).set_body_json(json!({
                "IsSuccess": false,
                "ErrorMessage": "The security group is locked by another process",
                "Code": "SG-LOCKED",
                "StackTrace": "at Security.PutSecurityGroupUsers()",
                "Response": null,
            }));
        }
        self.groups.insert(group.clone(), members);
        self.accepted.push(group);
        ResponseTemplate::new(200).set_body_json(json!({
            "IsSuccess": true, "ErrorMessage": null, "Code": null, "StackTrace": null, "Response": null
        }))
    }
}
