//! Built-in target presets. Each is a TOML table in the shape of `[targets.NAME]`,
//! merged under the operator's own keys: a preset is a configuration, not code.

/// Preset names, as `preset = "…"` takes them, with the seed document each serves.
pub const NAMES: &[&str] = &[
    "security-group-users",
    "adminuser-group",
    "admin-user",
    "usergroup-v2",
    "onlyoffice-group-members",
    "scim2",
];

/// The TOML text of a preset.
pub fn get(name: &str) -> Option<&'static str> {
    match name {
        // the security-group-users API: PUT Application/PutSecurityGroupUsers
        "security-group-users" => Some(include_str!("security_group_users.toml")),
        // the admin-user-group API: PUT /platform/adminuser/groups/{groupCode}
        "adminuser-group" => Some(include_str!("adminuser_group.toml")),
        // the admin-user API: PUT api/v1/admin/users/{id}
        "admin-user" => Some(include_str!("admin_user.toml")),
        // the user-group API: PUT /api/v2/usergroup?format=json
        "usergroup-v2" => Some(include_str!("usergroup_v2.toml")),
        // the group-members API: POST /api/2.0/group/{id}/members
        "onlyoffice-group-members" => Some(include_str!("onlyoffice_group_members.toml")),
        // SCIM 2.0 (RFC 7643/7644): /Users and /Groups, the service assigns the ids
        "scim2" => Some(include_str!("scim2.toml")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::TargetConfig;
    use crate::mapping::{DesiredGroup, DesiredUser};
    use crate::model::User;
    use crate::target::HttpTarget;
    use crate::target::request::{self, Request, Secrets};

    #[test]
    fn every_preset_parses() {
        for name in NAMES {
            let text = get(name).expect("listed preset exists");
            let parsed: Result<crate::config::RawTarget, _> = toml::from_str(text);
            assert!(parsed.is_ok(), "preset {name}: {parsed:?}");
        }
    }

    /// Names that would break a body if a template pasted them as they are.
    const NASTY: &str = "a \"q\" <b> & c\nd ' é";
    const GROUP: &str = "35c42e26-254b-4166-bf83-1be7b657c645";
    const USER: &str = "75a5f745-f697-4418-b38d-0fe0d277e258";
    const KEY: &str = "k3y-\"<&>-secret";

    /// A target of `preset` with the operator keys `extra` (TOML under the target).
    fn target(preset: &str, extra: &str) -> TargetConfig {
        let text = format!(
            r#"
            [source]
            kind = "csv"
            users = "u.csv"
            groups = "g.csv"
            [targets.t]
            preset = "{preset}"
            base_url = "http://127.0.0.1:1"
            [[targets.t.groups.map]]
            source = "g"
            target_id = "{GROUP}"
            {extra}
            "#
        );
        let mut config = crate::config::parse(&text, Path::new("/nonexistent/dirsync.toml"))
            .unwrap_or_else(|e| panic!("{preset}: {e}"));
        config.targets.remove(0)
    }

    fn user() -> DesiredUser {
        let mut u = User::new("src-1", NASTY);
        u.email = Some("ann@example.com".into());
        u.display_name = Some(NASTY.into());
        u.first_name = Some(NASTY.into());
        u.phone = Some("+44 (20) 7946-0000".into());
        DesiredUser {
            id: USER.to_uppercase(),
            user: u,
        }
    }

    fn group(members: &[&str]) -> DesiredGroup {
        DesiredGroup {
            id: GROUP.into(),
            name: NASTY.into(),
            source_id: NASTY.into(),
            source_name: NASTY.into(),
            members: members.iter().map(|s| (*s).to_owned()).collect(),
            attrs: crate::model::Attrs::from([("description", NASTY)]),
        }
    }

    fn group_request(t: &TargetConfig, g: &DesiredGroup) -> Result<Request, request::BuildError> {
        let users = BTreeMap::from([(USER.to_uppercase(), user())]);
        HttpTarget::new(t)
            .expect("target")
            .group_request(g, &users, Secrets::Real)
    }

    fn user_request(t: &TargetConfig, u: &DesiredUser) -> Result<Request, request::BuildError> {
        HttpTarget::new(t).expect("target").user_request(u, Secrets::Real)
    }

    fn body(req: &Request) -> Value {
        request::parse_body(&req.body).unwrap_or_else(|| panic!("body parses: {}", req.body))
    }

    #[test]
    fn security_group_users_body_is_an_array_of_security_group_users() {
        let t = target("security-group-users", "[targets.t.auth]\ntoken = \"x\"");
        let req = group_request(&t, &group(&[&USER.to_uppercase()])).expect("builds");
        assert_eq!(req.method, reqwest::Method::PUT);
        assert_eq!(req.path_and_query, "/Application/PutSecurityGroupUsers");
        let b = body(&req);
        let item = &b[0];
        assert_eq!(item["ContactID"], json!(USER), "canonical GUID");
        assert_eq!(item["SecurityGroupID"], json!(GROUP));
        assert_eq!(item["UserName"], json!(NASTY));
        assert_eq!(item["Name"], json!(NASTY));
        assert_eq!(item["IsActive"], json!(true));
        assert_eq!(item["CanLogIn"], json!(true));
        assert_eq!(item["Locked"], json!(false));
        assert!(item.get("ID").is_none());

        let err = group_request(&t, &group(&[])).expect_err("empty group");
        assert!(err.0.contains("a group without members cannot be sent"), "{err}");

        let t = target(
            "security-group-users",
            "[targets.t.auth]\ntoken = \"x\"\n[targets.t.vars]\nuser_name_attribute = \"email\"\nlocked = true",
        );
        let b = body(&group_request(&t, &group(&[&USER.to_uppercase()])).expect("builds"));
        assert_eq!(b[0]["UserName"], json!("ann@example.com"));
        assert_eq!(b[0]["Locked"], json!(true));
    }

    #[test]
    fn admin_user_group_body_and_optional_response_fields() {
        let extra = "[targets.t.auth]\ntoken = \"x\"\n[targets.t.vars]\nscope_type_id = 2\nscope_id = 7";
        let t = target("adminuser-group", extra);
        let req = group_request(&t, &group(&[&USER.to_uppercase()])).expect("builds");
        assert_eq!(req.path_and_query, format!("/platform/adminuser/groups/{GROUP}"));
        let b = body(&req);
        assert_eq!(b["groupCode"], json!(GROUP));
        assert_eq!(
            (b["scopeTypeId"].clone(), b["scopeId"].clone()),
            (json!(2), json!(7))
        );
        assert_eq!(
            (b["name"].clone(), b["description"].clone()),
            (json!(NASTY), json!(NASTY))
        );
        assert_eq!(b["users"][0]["id"], json!(USER.to_uppercase()));
        assert_eq!(b["users"][0]["firstName"], json!(NASTY));
        assert_eq!(b["users"][0]["lastName"], Value::Null);
        assert_eq!(b["users"][0]["isActive"], json!(true));

        let t = target(
            "adminuser-group",
            &format!("{extra}\nresponse_fields = \"groupCode,users\""),
        );
        let req = group_request(&t, &group(&[])).expect("builds");
        assert_eq!(
            req.path_and_query,
            format!("/platform/adminuser/groups/{GROUP}?responseFields=groupCode%2Cusers")
        );
    }

    #[test]
    fn admin_user_user_in_json_and_xml() {
        let vars = "[targets.t.auth]\ntoken = \"x\"\n[targets.t.vars]\nlanguage_id = \"C2FD9942-2548-483B-875C-A724B208DCAA\"\ntime_zone = \"UTC\"";
        for (format, root) in [("json", ""), ("xml", "/User")] {
            let t = target(
                "admin-user",
                &format!("{vars}\n[targets.t.endpoints.update_user]\nformat = \"{format}\""),
            );
            let req = user_request(&t, &user()).expect("builds");
            assert_eq!(
                req.path_and_query,
                format!("/api/v1/admin/users/{USER}"),
                "{format}"
            );
            assert_eq!(req.content_type, format!("application/{format}"));
            let b = body(&req);
            let field = |f: &str| b.pointer(&format!("{root}/{f}")).cloned().unwrap_or_default();
            assert_eq!(field("DisplayName"), json!(NASTY), "{format}");
            assert_eq!(field("LanguageID"), json!("c2fd9942-2548-483b-875c-a724b208dcaa"));
            assert_eq!(field("MobilePhone"), json!("+44 (20) 7946-0000"));
            assert_eq!(field("TimeZone"), json!("UTC"));
            let enabled = if format == "json" {
                json!(true)
            } else {
                json!("true")
            };
            assert_eq!(field("Enabled"), enabled);

            for (phone, ok) in [(Some("12-34"), false), (None, false), (Some("(0)1234 5"), true)] {
                let mut u = user();
                u.user.phone = phone.map(str::to_owned);
                let got = user_request(&t, &u);
                assert_eq!(got.is_ok(), ok, "{format} {phone:?}: {got:?}");
                if let Err(e) = got {
                    assert!(e.0.contains("MobilePhone"), "{e}");
                }
            }
            let mut u = user();
            u.user.attrs.insert("time_zone".into(), "Europe/Paris".into());
            let b = body(&user_request(&t, &u).expect("builds"));
            assert_eq!(
                b.pointer(&format!("{root}/TimeZone")),
                Some(&json!("Europe/Paris"))
            );
        }
        let err = crate::config::parse(
            "[source]\nkind = \"csv\"\nusers = \"u\"\ngroups = \"g\"\n[targets.t]\npreset = \"admin-user\"\n\
             base_url = \"http://127.0.0.1:1\"\n[targets.t.auth]\ntoken = \"x\"",
            Path::new("/x/dirsync.toml"),
        )
        .expect_err("language_id is required");
        assert!(
            err.to_string().contains("`targets.t.vars.language_id`: missing"),
            "{err}"
        );
    }

    #[test]
    fn user_group_credentials_in_the_body_json_and_xml() {
        let creds =
            format!("[targets.t.vars]\ncompany_id = 61234\n[targets.t.secrets]\nintegration_key = '{KEY}'");
        let members = [USER, "b1b1e2f4-3a6e-4c1e-9d55-0c6f2a8e0b01"];
        for (format, root) in [("json", ""), ("xml", "/UserGroup")] {
            let t = target(
                "usergroup-v2",
                &format!("{creds}\n[targets.t.endpoints.group_members]\nformat = \"{format}\""),
            );
            let req = group_request(&t, &group(&members)).expect("builds");
            assert_eq!(req.path_and_query, format!("/api/v2/usergroup?format={format}"));
            assert_eq!(req.content_type, format!("application/{format}"));
            let b = body(&req);
            let field = |f: &str| b.pointer(&format!("{root}/{f}")).cloned().unwrap_or_default();
            assert_eq!(field("Name"), json!(NASTY), "{format}");
            assert_eq!(field("ExternalId"), json!(NASTY), "{format}");
            assert_eq!(field("IntegrationKey"), json!(KEY), "{format}");
            assert_eq!(field("Id"), json!(GROUP));
            if format == "json" {
                assert_eq!(field("CompanyId"), json!(61234));
                assert_eq!(
                    field("UserIds"),
                    json!(members.iter().copied().collect::<BTreeSet<_>>())
                );
            } else {
                assert_eq!(field("CompanyId"), json!("61234"));
                assert!(
                    req.body
                        .contains(r#"<UserGroup xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#)
                );
                assert_eq!(field("UserIds/string").as_array().map(Vec::len), Some(2));
            }
            // The fingerprint never holds the key.
            let masked = HttpTarget::new(&t)
                .expect("target")
                .group_request(&group(&members), &BTreeMap::new(), Secrets::Masked)
                .expect("builds");
            assert!(!masked.body.contains(KEY));
            let key = body(&masked).pointer(&format!("{root}/IntegrationKey")).cloned();
            assert_eq!(key, Some(json!("<secret:integration_key>")));
        }
    }
}
