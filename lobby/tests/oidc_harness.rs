//! The OpenID test harness's own check: the real provider (server.mjs) and
//! common/oidc.rs against it, by hand, with no lobby code involved, so the
//! login tests can trust what the harness says.

#[path = "common/oidc.rs"]
mod oidc;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use url::Url;

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = BASE64URL.iter().position(|&x| x == c).unwrap_or_else(|| panic!("not base64url: {text:?}"));
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A JWT's header and payload (not verified).
fn jwt_parts(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    let mut parts = jwt.split('.');
    let mut part = |what| {
        let text = parts.next().unwrap_or_else(|| panic!("the JWT has no {what}: {jwt}"));
        serde_json::from_slice(&base64url_decode(text))
            .unwrap_or_else(|e| panic!("the JWT's {what} is not JSON ({e}): {jwt}"))
    };
    (part("header"), part("payload"))
}

fn random_token() -> String {
    base64url(&rand::random::<[u8; 32]>())
}

const REDIRECT_URI: &str = "http://127.0.0.1:54321/callback";

/// One authorization-code + PKCE sign-in of the public client, by hand; the
/// token endpoint's JSON answer.
async fn code_flow(
    provider: &oidc::OidcProvider,
    browser: &oidc::Browser,
    http: &reqwest::Client,
    login: &str,
) -> serde_json::Value {
    let verifier = random_token();
    let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
    let (state, nonce) = (random_token(), random_token());
    let authorization = Url::parse_with_params(
        &provider.url("/auth"),
        [
            ("response_type", "code"),
            ("client_id", oidc::PUBLIC_CLIENT),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid profile email"),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("the authorization URL");
    let back = browser.sign_in(authorization.as_str(), login, REDIRECT_URI).await;
    assert_eq!(back.error, None, "the provider refused the sign-in: {back:?}");
    assert_eq!(back.state.as_deref(), Some(state.as_str()), "state comes back: {back:?}");
    assert_eq!(back.iss.as_deref(), Some(provider.issuer()), "RFC 9207 iss: {back:?}");
    assert!(back.url.as_str().starts_with(REDIRECT_URI), "{back:?}");
    let code = back.code.expect("a code in the redirect");
    let response = http
        .post(provider.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", oidc::PUBLIC_CLIENT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .expect("POST /token");
    let status = response.status();
    let tokens: serde_json::Value = response.json().await.expect("the token answer is JSON");
    assert!(status.is_success(), "the code exchange failed: {status} {tokens}");
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let (_, claims) = jwt_parts(id_token);
    assert_eq!(claims["nonce"].as_str(), Some(nonce.as_str()), "{claims}");
    tokens
}

#[tokio::test]
async fn oidc_harness_code_flow_and_device_flow_against_the_real_provider() {
    let provider = oidc::OidcProvider::start().await;
    let browser = oidc::Browser::new();
    let http = reqwest::Client::new();

    // The code flow, on a loopback redirect URI with a port that was never registered.
    let tokens = code_flow(&provider, &browser, &http, "alice").await;
    let (header, claims) = jwt_parts(tokens["id_token"].as_str().expect("an id_token"));
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(claims["iss"].as_str(), Some(provider.issuer()), "{claims}");
    assert_eq!(claims["aud"], oidc::PUBLIC_CLIENT, "{claims}");
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["preferred_username"], "alice", "the ID token carries the profile claims: {claims}");
    let kids = provider.jwks_kids().await;
    let first_kid = header["kid"].as_str().expect("a kid").to_owned();
    assert!(kids.contains(&first_kid), "the ID token's kid {first_kid} is published: {kids:?}");
    // /me with the opaque access token, as a plain OAuth2 client would.
    let access_token = tokens["access_token"].as_str().expect("an access_token");
    let me = http.get(provider.url("/me")).bearer_auth(access_token).send().await.expect("GET /me");
    assert!(me.status().is_success(), "GET /me: {}", me.status());
    let me: serde_json::Value = me.json().await.expect("/me is JSON");
    assert_eq!((me["sub"].as_str(), me["preferred_username"].as_str()), (Some("alice"), Some("alice")), "{me}");
    assert_eq!(me["email"], "alice@example.test", "{me}");

    // A tamper is one shot; the same browser signs in again on its session.
    provider.tamper("alg-none").await;
    let tampered = code_flow(&provider, &browser, &http, "alice").await;
    let (header, _) = jwt_parts(tampered["id_token"].as_str().expect("an id_token"));
    assert_eq!(header["alg"], "none", "{header}");
    assert!(tampered["id_token"].as_str().expect("an id_token").ends_with('.'), "an empty signature");
    let plain = code_flow(&provider, &browser, &http, "alice").await;
    assert_eq!(jwt_parts(plain["id_token"].as_str().expect("an id_token")).0["alg"], "RS256");

    // Rotation: a new kid signs, the old one stays published, sessions survive.
    provider.rotate_keys().await;
    let rotated = provider.jwks_kids().await;
    assert!(kids.iter().all(|kid| rotated.contains(kid)), "old kids kept: {kids:?} -> {rotated:?}");
    let after = code_flow(&provider, &browser, &http, "alice").await;
    let (header, _) = jwt_parts(after["id_token"].as_str().expect("an id_token"));
    let new_kid = header["kid"].as_str().expect("a kid");
    assert!(!kids.iter().any(|kid| kid == new_kid), "signed with a new key: {new_kid} in {kids:?}");
    assert!(rotated.iter().any(|kid| kid == new_kid), "the new kid {new_kid} is published: {rotated:?}");

    // The confidential client, on the exact web redirect URI, with no PKCE.
    let state = random_token();
    let authorization = Url::parse_with_params(
        &provider.url("/auth"),
        [
            ("response_type", "code"),
            ("client_id", oidc::CONFIDENTIAL_CLIENT),
            ("redirect_uri", oidc::WEB_REDIRECT_URI),
            ("scope", "openid"),
            ("state", &state),
        ],
    )
    .expect("the authorization URL");
    let back = oidc::Browser::new().sign_in(authorization.as_str(), "carol", oidc::WEB_REDIRECT_URI).await;
    assert_eq!(back.state.as_deref(), Some(state.as_str()), "{back:?}");
    let response = http
        .post(provider.url("/token"))
        .basic_auth(oidc::CONFIDENTIAL_CLIENT, Some(oidc::CONFIDENTIAL_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", back.code.as_deref().expect("a code")),
            ("redirect_uri", oidc::WEB_REDIRECT_URI),
        ])
        .send()
        .await
        .expect("POST /token");
    assert!(response.status().is_success(), "confidential exchange: {}", response.status());

    // The device flow (RFC 8628).
    let started = Instant::now();
    let response = http
        .post(provider.url("/device/auth"))
        .form(&[("client_id", oidc::PUBLIC_CLIENT), ("scope", "openid profile")])
        .send()
        .await
        .expect("POST /device/auth");
    assert!(response.status().is_success(), "POST /device/auth: {}", response.status());
    let device: serde_json::Value = response.json().await.expect("the device answer is JSON");
    let interval = Duration::from_secs(device["interval"].as_u64().expect("an interval"));
    assert_eq!(interval, Duration::from_secs(1), "{device}");
    let device_code = device["device_code"].as_str().expect("a device_code");
    let poll = async || {
        let response = http
            .post(provider.url("/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", oidc::PUBLIC_CLIENT),
            ])
            .send()
            .await
            .expect("POST /token");
        let ok = response.status().is_success();
        (ok, response.json::<serde_json::Value>().await.expect("the token answer is JSON"))
    };
    let (ok, pending) = poll().await;
    assert!(!ok && pending["error"] == "authorization_pending", "before approval: {pending}");
    oidc::Browser::new()
        .approve_device(device["verification_uri_complete"].as_str().expect("a verification_uri_complete"), "bob")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let tokens = loop {
        tokio::time::sleep(interval).await;
        let (ok, answer) = poll().await;
        if ok {
            break answer;
        }
        assert_eq!(answer["error"], "authorization_pending", "{answer}");
        assert!(Instant::now() < deadline, "no device tokens within 10 s: {answer}");
    };
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().expect("an id_token"));
    assert_eq!(claims["sub"], "bob", "{claims}");
    assert!(tokens["access_token"].is_string(), "{tokens}");
    println!("device flow took {:?}", started.elapsed());
}
