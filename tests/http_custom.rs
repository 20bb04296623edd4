//! The configurable `http` target: an API described in TOML alone. One test
//! reproduces the admin-user preset without `preset =` and checks that both send the
//! same requests to the same mock; another exercises every auth kind.

mod common;

use common::admin_user::{AdminUserApi, TOKEN};
use common::{Env, assert_no_leak, config_csv, groups_csv, target_common, uuid};

/// The admin-user API described from scratch: what `preset = "admin-user"` gives, in TOML.
const CUSTOM_002: &str = r#"
[targets.custom.auth]
kind = "bearer"
token_env = "TEST_TOKEN"

[targets.custom.vars]
language_id = "c2fd9942-2548-483b-875c-a724b208dcaa"
time_zone = "UTC"

[targets.custom.endpoints.update_user]
method = "PUT"
path = "/api/v1/admin/users/{{ user.id | guid }}"
format = "json"
content_type = "application/json"
accept = "application/json"
body = '''
{
  "ID": {{ user.id | guid }},
  "DisplayName": {{ user.display_name or user.username }},
  "EmailAddress": {{ user.email }},
  "Enabled": {{ user.enabled }},
  "LanguageID": {{ ((user | field("language_id")) or vars.language_id) | guid }},
  "MobilePhone": {{ user.phone }},
  "TimeZone": {{ (user | field("time_zone")) or vars.time_zone }},
  "Username": {{ user.username }}
}
'''
error_message = ["/Error/ErrorCode", "/Error/ErrorReason"]

[[targets.custom.endpoints.update_user.success.json]]
pointer = "/Error/ErrorCode"
empty = true

[[targets.custom.endpoints.update_user.validate]]
pointer = "/MobilePhone"
pattern = '^(?=.*?\d.*?\d.*?\d.*?\d.*?\d)([+]?)([\d\s\(\)-]{5,20})$'

[targets.custom.endpoints.update_user.response_echo]
pointer = "/ResponseData/Detail"
fields = ["DisplayName", "EmailAddress", "Enabled", "LanguageID", "MobilePhone", "TimeZone", "Username"]
"#;

const PRESET_002: &str = r#"
[targets.custom.auth]
token_env = "TEST_TOKEN"

[targets.custom.vars]
language_id = "c2fd9942-2548-483b-875c-a724b208dcaa"
time_zone = "UTC"
"#;

const USERS: &str = "id,username,email,display_name,phone,enabled,tid\n\
    u1,ann,Ann@Example.com,\"Ann \"\"A\"\" <Archer> & Co\",+1 555 0101,true,00000000-0000-4000-8000-000000000001\n\
    u2,bob,bob@example.com,,0044 20 7946 0002,false,00000000-0000-4000-8000-000000000002\n\
    u3,cid,cid@example.com,Cid,12-34,true,00000000-0000-4000-8000-000000000003\n";

fn setup(mock: &AdminUserApi, head: &str, target: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", USERS);
    env.write("groups.csv", &groups_csv(&[("all", &[1])]));
    let common = target_common("custom", head, &mock.uri());
    env.write("dirsync.toml", &config_csv(&format!("{common}{target}")));
    env
}

/// What a request says, comparable across mocks: method, path and query, content
/// type, accept, authorization and the body as JSON.
async fn seen(mock: &AdminUserApi) -> Vec<(String, String, String, String, String, serde_json::Value)> {
    let header = |r: &wiremock::Request, n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut out: Vec<_> = mock
        .requests()
        .await
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                format!("{}?{}", r.url.path(), r.url.query().unwrap_or("")),
                header(r, "content-type"),
                header(r, "accept"),
                header(r, "authorization"),
                serde_json::from_slice(&r.body).unwrap_or_default(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

const GOOD: &[(&str, &str)] = &[("TEST_TOKEN", TOKEN)];

#[tokio::test]
async fn a_custom_target_sends_exactly_what_the_preset_sends() {
    let by_preset = AdminUserApi::start().await;
    let preset = setup(&by_preset, "preset = \"admin-user\"", PRESET_002);
    let by_toml = AdminUserApi::start().await;
    let custom = setup(&by_toml, "", CUSTOM_002);
    assert!(
        !std::fs::read_to_string(custom.config())
            .expect("config")
            .contains("preset")
    );

    // u3's phone fails the document's pattern: both skip it.
    preset.run(&["sync"], GOOD).await.expect_code(3);
    custom.run(&["sync"], GOOD).await.expect_code(3);
    by_preset.assert_no_violations();
    by_toml.assert_no_violations();
    let sent = seen(&by_toml).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent, seen(&by_preset).await);
    assert_eq!(by_toml.lock().users, by_preset.lock().users);
    assert_eq!(
        by_toml.lock().users[&uuid(1)]["DisplayName"],
        "Ann \"A\" <Archer> & Co"
    );

    // Same plan logic: nothing changed, nothing sent; u3 was already reported.
    custom.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(by_toml.request_count().await, 2);

    // Same success rule: Error.ErrorCode in a 200 is a failure, retried next run.
    by_toml.lock().refuse.insert(uuid(3));
    custom.write("users.csv", &USERS.replace("12-34", "+49 30 1234567"));
    custom.run(&["sync"], GOOD).await.expect_code(3);
    let rows = custom.audit_rows().await;
    assert!(
        rows.iter().any(|r| r.1 == uuid(3)
            && r.2 == "failed"
            && r.3.as_deref().unwrap_or_default().contains("USR-LOCKED")),
        "{rows:?}"
    );
    by_toml.lock().refuse.clear();
    custom.run(&["sync"], GOOD).await.expect_code(0);
    assert_eq!(by_toml.lock().users.len(), 3);
    assert_no_leak(TOKEN, &custom.everything_visible(GOOD).await);
}

/// Narrows a mock to requests that carry one kind of credential.
/// A custom target `t` with one `group_members` endpoint (`body`) at `base_url`, the
/// group `g0` mapped to `uuid(100)`, and `auth` as its `[targets.t.auth]` table.
fn custom_target(base_url: &str, body: &str, auth: &str) -> String {
    format!(
        r#"
[targets.t]
base_url = "{base_url}/"
[targets.t.endpoints.group_members]
path = "/groups/{{{{ group.id }}}}"
body = '{body}'
error_message = ["/message"]
[[targets.t.groups.map]]
source = "g0"
target_id = "{}"
[targets.t.users]
id_attribute = "tid"
[targets.t.auth]
{auth}
"#,
        uuid(100)
    )
}

/// A server that takes every request (204).
async fn accepting_server() -> wiremock::MockServer {
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// A custom target at `base_url` without auth whose request carries the group's
/// name in a header (`X-Group`), which a line break in the name cannot go into.
fn group_name_header_target(base_url: &str) -> String {
    custom_target(base_url, r#"{"members": {{ members }}}"#, "kind = \"none\"").replace(
        "error_message = [\"/message\"]",
        "error_message = [\"/message\"]\nheaders = { \"X-Group\" = \"{{ group.name }}\" }",
    )
}

/// An env with `USERS`, the group `one` of user 1, and `target`.
fn custom_env(target: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", USERS);
    env.write("groups.csv", &groups_csv(&[("one", &[1])]));
    env.write("dirsync.toml", &config_csv(target));
    env
}

type Matcher = Box<dyn Fn(wiremock::MockBuilder) -> wiremock::MockBuilder>;

/// Each auth kind of a custom target, against a server that wants exactly it.
#[tokio::test]
async fn every_auth_kind_reaches_a_server_that_wants_it() {
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let secret = "c0ffee-secret-5a5a";
    let kinds: Vec<(&str, String, Matcher)> = vec![
        (
            "bearer",
            "kind = \"bearer\"\ntoken_env = \"TEST_SECRET\"".into(),
            Box::new(move |m| m.and(header("authorization", format!("Bearer {secret}").as_str()))),
        ),
        (
            "basic",
            "kind = \"basic\"\nusername = \"svc\"\npassword_env = \"TEST_SECRET\"".into(),
            Box::new(move |m| m.and(wiremock::matchers::basic_auth("svc", secret))),
        ),
        (
            "header",
            "kind = \"header\"\nname = \"X-Api-Key\"\nvalue_env = \"TEST_SECRET\"".into(),
            Box::new(move |m| m.and(header("x-api-key", secret))),
        ),
        (
            "cookie",
            "kind = \"cookie\"\nname = \"sid\"\nvalue_env = \"TEST_SECRET\"".into(),
            Box::new(move |m| m.and(header("cookie", format!("sid={secret}").as_str()))),
        ),
        (
            "query",
            "kind = \"query\"\nname = \"api_key\"\nvalue_env = \"TEST_SECRET\"".into(),
            Box::new(move |m| m.and(query_param("api_key", secret))),
        ),
        (
            "body field",
            "kind = \"none\"\n[targets.t.secrets]\nkey_env = \"TEST_SECRET\"".into(),
            Box::new(move |m| {
                m.and(body_json(
                    serde_json::json!({"members": [uuid(1)], "key": secret}),
                ))
            }),
        ),
    ];
    for (kind, auth, matcher) in kinds {
        let server = MockServer::start().await;
        let base = Mock::given(method("PUT")).and(path(format!("/groups/{}", uuid(100))));
        matcher(base)
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        // Anything else is refused, quoting the request, as careless servers do.
        Mock::given(wiremock::matchers::any())
            .respond_with(|r: &wiremock::Request| {
                ResponseTemplate::new(401).set_body_string(format!("denied: {} {:?}", r.url, r.headers))
            })
            .mount(&server)
            .await;
        let body = if kind == "body field" {
            r#"{"members": {{ members }}, "key": {{ secrets.key }}}"#
        } else {
            r#"{"members": {{ members }}}"#
        };
        let env = custom_env(&custom_target(&server.uri(), body, &auth));
        // Exit 0 means the one request got the 204, so it carried the credential.
        let run = env.run(&["sync"], &[("TEST_SECRET", secret)]).await;
        assert_eq!(run.code, 0, "{kind}: {}", run.stderr);
        assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));

        let wrong = "wrong-secret-0000";
        let run = env.run(&["resync"], &[("TEST_SECRET", wrong)]).await;
        assert_eq!(run.code, 3, "{kind}: {}", run.stderr);
        assert!(
            run.stderr.contains("target `t` refused the credentials"),
            "{kind}: {}",
            run.stderr
        );
        assert_no_leak(wrong, &env.everything_visible(&[("TEST_SECRET", wrong)]).await);
        assert_no_leak(secret, &env.everything_visible(&[("TEST_SECRET", secret)]).await);
    }
}

/// A redirect is not followed: the credential does not go on to another server
/// (reqwest drops only `Authorization` and `Cookie` across hosts), and a write
/// turned into a GET by a 303 is not confirmed by the GET's answer.
#[tokio::test]
async fn a_redirect_is_a_failure_not_followed() {
    use wiremock::matchers::{any, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let secret = "c0ffee-secret-7b7b";
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(303).insert_header("location", format!("{}/ok", elsewhere.uri()).as_str()),
        )
        .mount(&server)
        .await;
    let body = r#"{"members": {{ members }}}"#;
    let env = custom_env(&custom_target(
        &server.uri(),
        body,
        "kind = \"header\"\nname = \"X-Api-Key\"\nvalue_env = \"TEST_SECRET\"",
    ));
    let run = env.run(&["sync"], &[("TEST_SECRET", secret)]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("HTTP 303"), "{}", run.stderr);
    assert_eq!(
        elsewhere.received_requests().await.map(|r| r.len()),
        Some(0),
        "the redirect was followed"
    );
    assert!(
        env.audit()
            .await
            .iter()
            .all(|(_, _, outcome)| outcome != "success")
    );
}

/// A target that echoes the credential back in an error, in whatever form it got it
/// (a Basic header's base64, a form-encoded query value, a JSON-escaped string), has
/// it scrubbed in every form before anything keeps or prints the answer.
#[tokio::test]
async fn an_echoed_credential_is_scrubbed_in_every_form() {
    use base64::Engine as _;
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let secret = r#"p@ss w/rd&<"x">"#;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc:{secret}"));
    let query: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).expect("JSON");
    let json = json.trim_matches('"').to_owned();
    let server = MockServer::start().await;
    let echoed = format!("header {basic} query {query} json {json}");
    Mock::given(any())
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({ "message": echoed })))
        .mount(&server)
        .await;
    let body = r#"{"members": {{ members }}}"#;
    let env = custom_env(&custom_target(
        &server.uri(),
        body,
        "kind = \"basic\"\nusername = \"svc\"\npassword_env = \"TEST_SECRET\"",
    ));
    let run = env.run(&["sync"], &[("TEST_SECRET", secret)]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("header *** query *** json ***"),
        "{}",
        run.stderr
    );
    let visible = env.everything_visible(&[("TEST_SECRET", secret)]).await;
    for form in [secret, basic.as_str(), query.as_str(), json.as_str()] {
        assert_no_leak(form, &visible);
    }
}

/// Credentials in the base URL (`http://user:password@host`, or a token as the user
/// alone) are sent as Basic auth: echoed back, as themselves or as that header's
/// value, they are scrubbed like any secret. A password too short to tell from
/// ordinary text is not, so that it cannot change what an answer says.
#[tokio::test]
async fn credentials_in_the_base_url_are_scrubbed_when_echoed() {
    use base64::Engine as _;
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    for (userinfo, secret, basic) in [
        ("svc:PW-url-999", "PW-url-999", "svc:PW-url-999"),
        ("TOKEN-as-user-42", "TOKEN-as-user-42", "TOKEN-as-user-42:"),
    ] {
        let basic = base64::engine::general_purpose::STANDARD.encode(basic);
        let server = MockServer::start().await;
        let echoed = format!("auth=Basic {basic} secret {secret}");
        Mock::given(any())
            .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({ "message": echoed })))
            .mount(&server)
            .await;
        let with_user = server.uri().replace("http://", &format!("http://{userinfo}@"));
        let body = r#"{"members": {{ members }}}"#;
        let env = custom_env(&custom_target(&with_user, body, "kind = \"none\""));
        let run = env.run(&["sync"], &[]).await;
        assert_eq!(run.code, 3, "{}", run.stderr);
        assert!(run.stderr.contains("auth=Basic *** secret ***"), "{}", run.stderr);
        let visible = env.everything_visible(&[]).await;
        for form in [secret, basic.as_str()] {
            assert_no_leak(form, &visible);
        }
    }

    // A short password is scrubbed from what is kept and printed, as any secret.
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({ "message": "echo Pw5x" })))
        .mount(&server)
        .await;
    let with_user = server.uri().replace("http://", "http://u:Pw5x@");
    let env = custom_env(&custom_target(
        &with_user,
        r#"{"members": {{ members }}}"#,
        "kind = \"none\"",
    ));
    let run = env.run(&["sync"], &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("echo ***"), "{}", run.stderr);
    assert_no_leak("Pw5x", &env.everything_visible(&[]).await);

    // But it is left in an answer while the answer is judged: a password of two
    // letters does not turn `{"ok": true}` into a failure.
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "ok": true })))
        .mount(&server)
        .await;
    let with_user = server.uri().replace("http://", "http://u:ok@");
    let body = r#"{"members": {{ members }}}"#;
    let target = custom_target(&with_user, body, "kind = \"none\"").replace(
        "error_message = [\"/message\"]",
        "error_message = [\"/message\"]\nsuccess = { json = [{ pointer = \"/ok\", equals = true }] }",
    );
    let env = custom_env(&target);
    let run = env.run(&["sync"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A header value the source data gives with a line break makes the entity invalid
/// source data, never sent nor retried; a credential no header can carry is refused
/// when the config loads, naming the key and not the value.
#[tokio::test]
async fn a_request_that_cannot_be_built_is_not_sent_nor_retried() {
    let server = accepting_server().await;
    let target = group_name_header_target(&server.uri());
    let env = custom_env(&target);
    env.write("groups.csv", "id,name,members\ng0,\"two\nlines\",u1\n");
    let run = env.run(&["sync"], &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("Skipped an entity") && run.stderr.contains("header `X-Group`"),
        "{}",
        run.stderr
    );
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(0));

    let target = custom_target(
        &server.uri(),
        r#"{"members": {{ members }}}"#,
        "kind = \"header\"\nname = \"X-Api-Key\"\nvalue_env = \"TEST_SECRET\"",
    );
    let env = custom_env(&target);
    let run = env.run(&["sync"], &[("TEST_SECRET", "two\nlines")]).await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("auth.value`: holds a character a header cannot carry"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("two\nlines"), "{}", run.stderr);
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(0));
}

/// A group whose list the removal policy keeps a member in, when that member's
/// details fail a check of the request (here: every member needs an email), is not
/// sent, and is reported as invalid source data, instead of planned with a request
/// that can never be built.
#[tokio::test]
async fn a_kept_member_who_fails_a_check_withholds_the_group() {
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let body = r#"[{% for u in member_users %}{% if not loop.first %},{% endif %}{"id": {{ u.id }}, "email": {{ u.email }}}{% endfor %}]"#;
    let target = custom_target(&server.uri(), body, "kind = \"none\"")
        + &format!(
            "[[targets.t.endpoints.group_members.validate]]\npointer = \"/0/email\"\npattern = \"@\"\n\
             [targets.t.safety]\nprotected_members = [\"{}\"]\n",
            uuid(2)
        );
    let env = custom_env(&target);
    env.write("groups.csv", "id,name,members\ng0,one,u2;u3\n");
    env.run(&["sync"], &[]).await.expect_code(0);
    let sent = server.received_requests().await.map_or(0, |r| r.len());
    assert_eq!(sent, 1);

    // bob loses his email and leaves the group; protected, he stays first in its
    // list, and the list with him cannot be built.
    env.write("users.csv", &USERS.replace("bob@example.com", ""));
    env.write("groups.csv", "id,name,members\ng0,one,u3\n");
    let run = env.run(&["sync"], &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("with the members the removal policy keeps"),
        "{}",
        run.stderr
    );
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), sent);
    assert!(
        env.audit()
            .await
            .iter()
            .all(|(_, _, outcome)| outcome != "failed"),
        "{:?}",
        env.audit().await
    );
}

/// An approval whose group the source data can no longer build a request for (its
/// name now holds a line break, which its header cannot carry) sends nothing, and
/// the set stays held instead of being marked approved.
#[tokio::test]
async fn an_approval_of_a_group_that_cannot_be_built_stays_held() {
    let server = accepting_server().await;
    let target = group_name_header_target(&server.uri())
        + "[targets.t.safety]\nmax_removed_members_per_group_percent = 50\nper_group_min_members = 1\n";
    let env = custom_env(&target);
    env.write("groups.csv", "id,name,members\ng0,one,u1;u2;u3\n");
    env.run(&["sync"], &[]).await.expect_code(0);
    env.write("groups.csv", "id,name,members\ng0,one,u1\n");
    let run = env.run(&["sync"], &[]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    let held = env.run(&["held", "--json"], &[]).await;
    let sets: serde_json::Value = serde_json::from_str(&held.stdout).expect("JSON");
    let id = sets[0]["id"].as_str().expect("a held set").to_owned();

    env.write("groups.csv", "id,name,members\ng0,\"two\nlines\",u1\n");
    let sent = server.received_requests().await.map_or(0, |r| r.len());
    let run = env.run(&["approve", &id], &[]).await;
    assert!(run.stderr.contains("the set stays held"), "{}", run.stderr);
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), sent);
    let held = env.run(&["held", "--json"], &[]).await;
    let sets: serde_json::Value = serde_json::from_str(&held.stdout).expect("JSON");
    assert_eq!(sets[0]["id"], id.as_str(), "{sets}");
}
