//! The frame every API mock shares: a wiremock server on 127.0.0.1 whose one
//! responder hands each request to a `Contract`, the API document's own rules and state.

use std::sync::{Arc, Mutex, MutexGuard};

use wiremock::matchers::any;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// An API document's rules: answers one request, keeping state and noting every
/// request that breaks the document (`violations`).
pub trait Contract: Default + Send + 'static {
    fn respond(&mut self, req: &Request) -> ResponseTemplate;
    fn violations(&self) -> &[String];
}

/// A running mock of one API.
pub struct Mock<S> {
    pub server: MockServer,
    pub state: Arc<Mutex<S>>,
}

struct Responder<S> {
    state: Arc<Mutex<S>>,
}

impl<S: Contract> Respond for Responder<S> {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.state.lock().expect("mock state").respond(req)
    }
}

impl<S: Contract> Mock<S> {
    pub async fn start() -> Mock<S> {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(S::default()));
        wiremock::Mock::given(any())
            .respond_with(Responder {
                state: Arc::clone(&state),
            })
            .mount(&server)
            .await;
        Mock { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().expect("mock state")
    }

    /// Every request that reached the server, accepted or not.
    pub async fn request_count(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }

    /// Every request that reached the server.
    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    pub fn assert_no_violations(&self) {
        let state = self.lock();
        let v = state.violations();
        assert!(v.is_empty(), "contract violations: {v:?}");
    }
}

/// A header's value, or "".
pub fn header<'r>(req: &'r Request, name: &str) -> &'r str {
    req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The media type of the request's Content-Type, without parameters.
pub fn media_type(req: &Request) -> String {
    header(req, "content-type")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A GUID in canonical form: lowercase, hyphenated, 36 characters.
pub fn is_canonical_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// A query parameter's value.
pub fn query(req: &Request, name: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
