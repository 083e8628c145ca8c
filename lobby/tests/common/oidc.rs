//! A real OpenID provider for tests: panva's oidc-provider, run by
//! `lobby/tests/oidc-provider/server.mjs` (its header has the whole contract),
//! and a scripted browser that signs in at it.
//!
//! Self-contained (std, tokio, reqwest with "cookies", serde_json, url), so any
//! test crate can include it:
//!
//! ```ignore
//! #[path = "common/oidc.rs"] // or "../lobby/tests/common/oidc.rs"
//! mod oidc;
//! let provider = oidc::OidcProvider::start().await;
//! let browser = oidc::Browser::new();
//! let back = browser.sign_in(&authorization_url, "alice", "http://127.0.0.1:54321/callback").await;
//! ```
//!
//! The Node packages come from `make test` (or `npm ci` in
//! lobby/tests/oidc-provider).

// Not `expect`: each test binary uses a different part of this module.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]
#![allow(unreachable_pub, reason = "a module of each test binary, not a library")]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use url::Url;

/// The public client: no secret, PKCE (S256) required.
pub const PUBLIC_CLIENT: &str = "rally";
/// The confidential client: `client_secret_basic` with [`CONFIDENTIAL_SECRET`].
pub const CONFIDENTIAL_CLIENT: &str = "rally-confidential";
pub const CONFIDENTIAL_SECRET: &str = "rally-confidential-secret-0123456789abcdef";
/// Another public client, for tokens meant for someone else.
pub const OTHER_CLIENT: &str = "rally-other";
/// Registered for every client. The clients are native, so the provider also
/// accepts this URI with any port: `http://127.0.0.1:54321/callback`.
pub const LOOPBACK_REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// Registered for every client, compared exactly.
pub const WEB_REDIRECT_URI: &str = "https://game.example/callback";
/// What [`OidcProvider::tamper`] takes.
pub const TAMPER_MODES: [&str; 7] =
    ["nonce", "expired", "audience", "issuer", "unknown-kid", "alg-none", "hs256-public-key"];

/// How long the provider may take to say it listens.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// The most requests one sign-in or device approval may take.
const MAX_HOPS: usize = 20;

/// The provider process; dropping this kills it (and it exits by itself when
/// our end of its stdin closes, so a killed test leaves nothing behind).
#[derive(Debug)]
pub struct OidcProvider {
    issuer: String,
    http: reqwest::Client,
    child: Child,
    // Held open: the provider exits when stdin closes.
    _stdin: ChildStdin,
    // Held open: the provider writes nothing after its first line.
    _stdout: BufReader<ChildStdout>,
}

/// Where the provider's directory is, from this crate's manifest dir: the
/// lobby crate's (`tests/oidc-provider`) or the workspace root's
/// (`lobby/tests/oidc-provider`).
fn provider_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [manifest.join("tests/oidc-provider"), manifest.join("lobby/tests/oidc-provider")];
    for dir in &candidates {
        if dir.join("server.mjs").is_file() {
            return dir.clone();
        }
    }
    panic!("the test OpenID provider (server.mjs) is not in any of {candidates:?}");
}

impl OidcProvider {
    /// Starts a fresh provider (its own port, keys and in-memory state).
    pub async fn start() -> OidcProvider {
        let dir = provider_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "{}/node_modules is missing: run `make test`, or `npm ci` in lobby/tests/oidc-provider",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start `node server.mjs` in {} (is Node.js 20+ installed?): {e}", dir.display())
            });
        let stdin = child.stdin.take().expect("the provider's stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("the provider's stdout is piped"));
        let mut line = String::new();
        let read = tokio::time::timeout(START_DEADLINE, stdout.read_line(&mut line)).await;
        match read {
            Err(_) => panic!("the OpenID provider did not say it listens within {START_DEADLINE:?}"),
            Ok(Err(e)) => panic!("read the OpenID provider's stdout: {e}"),
            Ok(Ok(0)) => {
                let status = child.wait().await;
                panic!("the OpenID provider exited before it listened ({status:?}); its stderr says why")
            }
            Ok(Ok(_)) => {}
        }
        let first: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("the OpenID provider's first line is not JSON ({e}): {line:?}"));
        let issuer = first["issuer"]
            .as_str()
            .filter(|issuer| issuer.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("the OpenID provider's first line has no loopback issuer: {line:?}"))
            .to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build the test HTTP client");
        OidcProvider { issuer, http, child, _stdin: stdin, _stdout: stdout }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer plus `path` (which starts with `/`), e.g. `/auth`, `/token`, `/me`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The discovery document.
    pub async fn discovery(&self) -> serde_json::Value {
        self.get_json(&self.url("/.well-known/openid-configuration")).await
    }

    /// The next ID token the token endpoint issues for an authorization code
    /// or a device code (once) is tampered with; see [`TAMPER_MODES`] and
    /// server.mjs's `tamperIdToken`.
    pub async fn tamper(&self, mode: &str) {
        let response = self
            .http
            .post(self.url("/test/tamper"))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /test/tamper: {e}"));
        expect_ok(response, "POST /test/tamper").await;
    }

    /// A new signing key (new kid) signs every ID token from now on; the JWKS
    /// publishes it and keeps the older keys.
    pub async fn rotate_keys(&self) {
        let response =
            self.http.post(self.url("/test/rotate")).send().await.unwrap_or_else(|e| panic!("POST /test/rotate: {e}"));
        expect_ok(response, "POST /test/rotate").await;
    }

    /// The kids of the JWKS the discovery document points at, in its order
    /// (newest first).
    pub async fn jwks_kids(&self) -> Vec<String> {
        let discovery = self.discovery().await;
        let jwks_uri = discovery["jwks_uri"].as_str().expect("the discovery document has a jwks_uri");
        let jwks = self.get_json(jwks_uri).await;
        jwks["keys"]
            .as_array()
            .expect("the JWKS has keys")
            .iter()
            .map(|key| key["kid"].as_str().expect("every JWKS key has a kid").to_owned())
            .collect()
    }

    async fn get_json(&self, url: &str) -> serde_json::Value {
        let response = self.http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body = expect_ok(response, url).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url} is not JSON ({e}): {body}"))
    }

    /// The provider's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

async fn expect_ok(response: reqwest::Response, what: &str) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_else(|e| format!("(unreadable body: {e})"));
    assert!(status.is_success(), "{what}: {status}: {body}");
    body
}

/// Where a sign-in ended: the redirect to the client, not requested.
#[derive(Debug, Clone)]
pub struct Redirected {
    pub url: Url,
    pub code: Option<String>,
    pub state: Option<String>,
    /// RFC 9207's issuer identification (oidc-provider sends it).
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl Redirected {
    fn new(url: Url) -> Redirected {
        let param = |name: &str| url.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned());
        Redirected {
            code: param("code"),
            state: param("state"),
            iss: param("iss"),
            error: param("error"),
            error_description: param("error_description"),
            url,
        }
    }
}

/// A scripted browser: one cookie jar (so a second sign-in finds the
/// provider's session), redirects followed by hand, and only ever requests to
/// the origin it started at.
#[derive(Debug, Clone)]
pub struct Browser {
    client: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

/// What ends a walk.
enum Goal<'a> {
    /// A redirect whose target starts with this.
    RedirectTo(&'a str),
    /// The device flow's success page.
    DeviceSuccess,
}

impl Browser {
    pub fn new() -> Browser {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build the test browser");
        Browser { client }
    }

    /// Opens `authorization_url`, signs in as `login` at the provider's page
    /// when it asks, and returns the redirect that starts with
    /// `redirect_uri_prefix` without requesting it. Panics with the chain of
    /// requests and the page when anything else happens.
    pub async fn sign_in(&self, authorization_url: &str, login: &str, redirect_uri_prefix: &str) -> Redirected {
        let start =
            Url::parse(authorization_url).unwrap_or_else(|e| panic!("authorization URL {authorization_url:?}: {e}"));
        match self.walk(start, login, Goal::RedirectTo(redirect_uri_prefix)).await {
            Some(url) => Redirected::new(url),
            None => unreachable!("a redirect goal ends with a URL"),
        }
    }

    /// Opens the device flow's `verification_uri_complete`, confirms the code,
    /// signs in as `login`, and checks the provider's success page comes.
    pub async fn approve_device(&self, verification_uri_complete: &str, login: &str) {
        let start = Url::parse(verification_uri_complete)
            .unwrap_or_else(|e| panic!("verification_uri_complete {verification_uri_complete:?}: {e}"));
        let end = self.walk(start, login, Goal::DeviceSuccess).await;
        assert!(end.is_none(), "the device approval ended at a redirect: {end:?}");
    }

    async fn walk(&self, start: Url, login: &str, goal: Goal<'_>) -> Option<Url> {
        let origin = start.origin();
        let mut chain = String::new();
        let mut next = (start, None::<Vec<(String, String)>>);
        for _ in 0..MAX_HOPS {
            let (url, form) = next;
            assert!(url.origin() == origin, "the browser was sent off the provider, to {url}; chain:\n{chain}");
            let request = match &form {
                None => self.client.get(url.clone()),
                Some(fields) => self.client.post(url.clone()).form(fields),
            };
            let method = if form.is_some() { "POST" } else { "GET" };
            let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}; chain:\n{chain}"));
            let status = response.status();
            let _ = writeln!(chain, "  {method} {url} -> {status}");
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_else(|| panic!("{status} without a readable Location; chain:\n{chain}"))
                    .to_owned();
                let target = url
                    .join(&location)
                    .unwrap_or_else(|e| panic!("Location {location:?} is no URL ({e}); chain:\n{chain}"));
                if let Goal::RedirectTo(prefix) = goal
                    && target.as_str().starts_with(prefix)
                {
                    return Some(target);
                }
                next = (target, None);
                continue;
            }
            let body = response.text().await.unwrap_or_else(|e| format!("(unreadable body: {e})"));
            assert!(status.is_success(), "unexpected {status} from the provider; chain:\n{chain}page:\n{body}");
            if body.contains("data-device=\"success\"") {
                assert!(matches!(goal, Goal::DeviceSuccess), "a device success page in a sign-in; chain:\n{chain}");
                return None;
            }
            let Some(found) = first_form(&body) else {
                panic!("unexpected page (no form, not the goal); chain:\n{chain}page:\n{body}");
            };
            let mut fields = found.fields;
            if let Some(field) = fields.iter_mut().find(|(name, _)| name == "login") {
                field.1 = login.to_owned();
            }
            let action = url
                .join(&found.action)
                .unwrap_or_else(|e| panic!("form action {:?} ({e}); chain:\n{chain}page:\n{body}", found.action));
            next = (action, Some(fields));
        }
        panic!("more than {MAX_HOPS} requests without reaching the goal; chain:\n{chain}");
    }
}

/// A page's first `<form>`: its action and its inputs' names and values.
#[derive(Debug)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

fn first_form(html: &str) -> Option<Form> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<form")?;
    let tag_end = start + lower[start..].find('>')?;
    let attrs = attributes(&html[start + "<form".len()..tag_end]);
    let action = attr(&attrs, "action").unwrap_or_default();
    let end = lower[tag_end..].find("</form").map_or(html.len(), |i| tag_end + i);
    let mut fields = Vec::new();
    let mut at = tag_end;
    while let Some(i) = lower[at..end].find("<input") {
        let input = at + i + "<input".len();
        let Some(close) = lower[input..end].find('>') else { break };
        let attrs = attributes(&html[input..input + close]);
        if let Some(name) = attr(&attrs, "name") {
            fields.push((name, attr(&attrs, "value").unwrap_or_default()));
        }
        at = input + close;
    }
    Some(Form { action, fields })
}

fn attr(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
}

/// The attributes of a tag's inside (after its name), names lowercased,
/// values unquoted and entity-decoded.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return out;
        }
        let name_len = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (raw, remaining) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let inner = &after[1..];
                    let close = inner.find(quote).unwrap_or(inner.len());
                    (&inner[..close], inner.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let close = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..close], &after[close..])
                }
            };
            value = decode_entities(raw);
            rest = remaining;
        }
        // A nameless `=value` (stray markup) is consumed and dropped.
        if !name.is_empty() {
            out.push((name, value));
        }
    }
}

fn decode_entities(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';').filter(|&semi| semi <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod html_tests {
    use super::*;

    #[test]
    fn oidc_harness_reads_forms_the_way_the_provider_writes_them() {
        let html = r#"<p>x</p><form id="op.deviceInputForm" novalidate method="post" action="/device">
  <input type="hidden" name="xsrf" value="a&amp;b&#34;c"/>
  <input
    value="ABCD-EFGH" type="text" name="user_code" placeholder="Enter code" autofocus autocomplete="off"></input>
  </form><input name="outside">"#;
        let form = first_form(html).expect("a form");
        assert_eq!(form.action, "/device");
        assert_eq!(
            form.fields,
            vec![("xsrf".to_owned(), "a&b\"c".to_owned()), ("user_code".to_owned(), "ABCD-EFGH".to_owned())]
        );
        assert!(first_form("<p>no form</p>").is_none());
        assert_eq!(decode_entities("&bogus; &#x41;&"), "&bogus; A&");
    }
}
