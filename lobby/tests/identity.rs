//! External identities end to end through `Auth`, against a real OpenID
//! provider (npm's `oidc-provider`, tests/oidc-provider) on loopback, on
//! SQLite and PostgreSQL: the authorization-code flow with PKCE, the device
//! flow, a plain OAuth2 provider with a userinfo endpoint, one test per
//! refusal, key rotation, guests and linked identities. `cargo test oidc`
//! runs them (and the harness's own check).

mod common;
#[path = "common/oidc.rs"]
mod oidc;

use std::time::Duration;

use common::{Backend, PASSWORD, auth_client, authed, config, register, start};
use oidc::{Browser, OidcProvider};
use rally_lobby::proto::auth as pb;
use rally_lobby::proto::auth::auth_client::AuthClient;
use rally_lobby::{LobbyHandle, ProviderConfig};
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    oidc_code_flow_creates_an_account_then_logs_in_to_it,
    oidc_device_flow_logs_in,
    oidc_plain_oauth2_provider_logs_in_through_userinfo,
    oidc_confidential_client_logs_in_with_its_secret_file,
    oidc_key_rotation_at_the_provider_keeps_logins_working,
    oidc_refuses_a_wrong_state,
    oidc_refuses_a_replayed_code,
    oidc_refuses_a_wrong_nonce,
    oidc_refuses_an_expired_id_token,
    oidc_refuses_a_wrong_audience,
    oidc_refuses_a_wrong_issuer,
    oidc_refuses_an_unknown_key_id,
    oidc_refuses_alg_none,
    oidc_refuses_hs256_signed_with_the_public_key,
    oidc_refuses_a_redirect_uri_that_differs,
    oidc_unknown_and_unreachable_providers_say_so,
    oidc_guest_links_an_identity_and_a_password_and_keeps_its_account,
    oidc_an_identity_linked_elsewhere_is_refused,
    oidc_guest_secrets_are_checked,
);

/// A loopback redirect as `rally play` uses: the provider registered
/// `http://127.0.0.1/callback`, the client listens on a port of its own.
const REDIRECT: &str = "http://127.0.0.1:54321/callback";

fn oidc_spec(provider: &OidcProvider, name: &str, client_id: &str, extra: &str) -> ProviderConfig {
    let spec = format!(
        "{name}={},{client_id},redirect-uri={},redirect-uri={}{extra}",
        provider.issuer(),
        oidc::LOOPBACK_REDIRECT_URI,
        oidc::WEB_REDIRECT_URI
    );
    ProviderConfig::parse_oidc(&spec).expect("the test provider's spec parses")
}

/// A lobby on `backend` with `providers`. Keys may be fetched again at
/// once (the production floor is 5 s) so rotation is followed within a test.
async fn lobby_with(backend: &Backend, providers: Vec<ProviderConfig>) -> (LobbyHandle, AuthClient<Channel>) {
    let mut config = config(backend);
    config.identity.providers = providers;
    config.identity.jwks_min_refetch = Duration::ZERO;
    let lobby = start(config).await;
    let client = auth_client(&lobby).await;
    (lobby, client)
}

async fn lobby_with_oidc(backend: &Backend, provider: &OidcProvider) -> (LobbyHandle, AuthClient<Channel>) {
    lobby_with(backend, vec![oidc_spec(provider, "test", oidc::PUBLIC_CLIENT, "")]).await
}

fn start_request(provider: &str, link: bool) -> pb::StartLoginRequest {
    pb::StartLoginRequest { provider: provider.into(), redirect_uri: REDIRECT.into(), link }
}

/// StartLogin, sign in at the provider as `login`, and the code and state it redirected with.
async fn authorize(
    client: &mut AuthClient<Channel>,
    request: tonic::Request<pb::StartLoginRequest>,
    login: &str,
) -> (String, String) {
    let started = client.start_login(request).await.expect("start login").into_inner();
    let redirected = Browser::new().sign_in(&started.authorization_url, login, REDIRECT).await;
    assert_eq!(redirected.error, None, "the provider refused: {:?}", redirected.error_description);
    assert_eq!(redirected.state.as_deref(), Some(started.state.as_str()), "the state comes back with the code");
    (redirected.code.expect("a code"), started.state)
}

fn finish_request(state: &str, code: &str) -> pb::FinishLoginRequest {
    pb::FinishLoginRequest { state: state.into(), code: code.into(), redirect_uri: REDIRECT.into() }
}

/// A whole code-flow login as `login`.
async fn log_in(client: &mut AuthClient<Channel>, login: &str) -> pb::LoginResponse {
    let (code, state) = authorize(client, tonic::Request::new(start_request("test", false)), login).await;
    client.finish_login(finish_request(&state, &code)).await.expect("finish login").into_inner()
}

/// A login whose ID token the provider tampers with as `mode`: its refusal.
async fn tampered_login(backend: &Backend, mode: &str) -> tonic::Status {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let (code, state) = authorize(&mut client, tonic::Request::new(start_request("test", false)), "mallory").await;
    provider.tamper(mode).await;
    client.finish_login(finish_request(&state, &code)).await.expect_err("a tampered ID token is refused")
}

fn assert_refused(status: &tonic::Status, code: Code, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "{needle:?} not in {:?}", status.message());
}

async fn me(client: &mut AuthClient<Channel>, login: &pb::LoginResponse) -> pb::Account {
    let tokens = login.tokens.as_ref().expect("tokens");
    client.me(authed(pb::MeRequest {}, &tokens.access_token)).await.expect("me").into_inner()
}

async fn oidc_code_flow_creates_an_account_then_logs_in_to_it(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;

    let listed = client.list_providers(pb::ListProvidersRequest {}).await.expect("list").into_inner().providers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "test");
    assert_eq!(listed[0].kind(), pb::provider::Kind::Oidc);
    assert!(listed[0].device_flow, "the provider's discovery names a device endpoint");

    let started = client.start_login(start_request("test", false)).await.expect("start").into_inner();
    let url = url::Url::parse(&started.authorization_url).expect("a URL");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("code_challenge_method").map(String::as_str), Some("S256"), "PKCE: {url}");
    assert!(query.contains_key("nonce"), "a nonce: {url}");
    assert_eq!(query.get("redirect_uri").map(String::as_str), Some(REDIRECT));

    let first = log_in(&mut client, "alice").await;
    assert!(first.created, "the first login creates the account");
    let account = first.account.clone().expect("account");
    assert_eq!(account.username, "alice", "named after preferred_username");
    assert_eq!(me(&mut client, &first).await, account, "rally's own tokens, as after a password login");

    let again = log_in(&mut client, "alice").await;
    assert!(!again.created);
    assert_eq!(again.account, Some(account.clone()), "the identity logs in to its account");
    let tokens = again.tokens.expect("tokens");
    let refreshed = client
        .refresh(pb::RefreshRequest { refresh_token: tokens.refresh_token })
        .await
        .expect("the refresh token works like any other");
    assert!(!refreshed.into_inner().access_token.is_empty());

    let bob = log_in(&mut client, "bob").await;
    assert!(bob.created);
    assert_ne!(bob.account.expect("account").player_id, account.player_id, "another subject, another account");

    // No password: the account cannot be logged in to with one.
    let refused = client
        .login(pb::LoginRequest { username: "alice".into(), password: String::new() })
        .await
        .expect_err("no password login");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn device_login(
    client: &mut AuthClient<Channel>,
    provider_name: &str,
    login: &str,
    link: Option<&str>,
) -> pb::LoginResponse {
    let request = pb::StartDeviceLoginRequest { provider: provider_name.into(), link: link.is_some() };
    let request = match link {
        Some(token) => authed(request, token),
        None => tonic::Request::new(request),
    };
    let started = client.start_device_login(request).await.expect("start device login").into_inner();
    assert!(!started.user_code.is_empty());
    assert!(started.verification_uri.starts_with("http://127.0.0.1:"), "{}", started.verification_uri);
    assert!(started.interval_ms > 0);

    // Not approved yet: a short poll answers pending.
    let early = client
        .poll_device_login(pb::PollDeviceLoginRequest { attempt: started.attempt.clone(), wait_ms: 0 })
        .await
        .expect("poll")
        .into_inner();
    assert!(matches!(early.outcome, Some(pb::poll_device_login_response::Outcome::Pending(_))), "{early:?}");

    Browser::new().approve_device(&started.verification_uri_complete, login).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let polled = client
            .poll_device_login(pb::PollDeviceLoginRequest { attempt: started.attempt.clone(), wait_ms: 20_000 })
            .await
            .expect("poll")
            .into_inner();
        match polled.outcome.expect("an outcome") {
            pb::poll_device_login_response::Outcome::Login(login) => return login,
            pb::poll_device_login_response::Outcome::Pending(pending) => {
                assert!(pending.interval_ms > 0);
                assert!(tokio::time::Instant::now() < deadline, "the approved device login never completed");
            }
        }
    }
}

async fn oidc_device_flow_logs_in(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let login = device_login(&mut client, "test", "carol", None).await;
    assert!(login.created);
    let account = login.account.clone().expect("account");
    assert_eq!(account.username, "carol");
    assert_eq!(me(&mut client, &login).await, account);

    // The same person by the code flow lands on the same account.
    let by_code = log_in(&mut client, "carol").await;
    assert_eq!(by_code.account, Some(account));
}

async fn oidc_plain_oauth2_provider_logs_in_through_userinfo(backend: &Backend) {
    let provider = OidcProvider::start().await;
    // The provider's OAuth2 side alone: /auth, /token and /me, as the 42 intranet's.
    let spec = format!(
        "plain={},{},{},{},id-claim=sub,name-claim=preferred_username,scopes=openid+profile,redirect-uri={},device-url={}",
        provider.url("/auth"),
        provider.url("/token"),
        provider.url("/me"),
        oidc::PUBLIC_CLIENT,
        oidc::LOOPBACK_REDIRECT_URI,
        provider.url("/device/auth"),
    );
    let (_lobby, mut client) =
        lobby_with(backend, vec![ProviderConfig::parse_oauth2(&spec).expect("spec parses")]).await;
    let listed = client.list_providers(pb::ListProvidersRequest {}).await.expect("list").into_inner().providers;
    assert_eq!(listed[0].kind(), pb::provider::Kind::Oauth2);
    assert!(listed[0].device_flow);

    let (code, state) = authorize(&mut client, tonic::Request::new(start_request("plain", false)), "dave").await;
    let login = client.finish_login(finish_request(&state, &code)).await.expect("finish").into_inner();
    assert!(login.created);
    assert_eq!(login.account.as_ref().expect("account").username, "dave");

    let by_device = device_login(&mut client, "plain", "dave", None).await;
    assert_eq!(by_device.account, login.account, "the userinfo id names the same person");
}

async fn oidc_confidential_client_logs_in_with_its_secret_file(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", oidc::CONFIDENTIAL_SECRET)).expect("write secret");
    let spec = oidc_spec(&provider, "test", oidc::CONFIDENTIAL_CLIENT, &format!(",secret-file={}", secret.display()));
    let (_lobby, mut client) = lobby_with(backend, vec![spec]).await;
    let login = log_in(&mut client, "erin").await;
    assert!(login.created);

    // Without the secret the provider refuses the code exchange.
    let spec = oidc_spec(&provider, "test", oidc::CONFIDENTIAL_CLIENT, "");
    let (_lobby, mut client) = lobby_with(backend, vec![spec]).await;
    let (code, state) = authorize(&mut client, tonic::Request::new(start_request("test", false)), "erin").await;
    let refused = client.finish_login(finish_request(&state, &code)).await.expect_err("no secret");
    assert_refused(&refused, Code::Unauthenticated, "refused the code");
}

async fn oidc_key_rotation_at_the_provider_keeps_logins_working(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let before = log_in(&mut client, "frank").await;
    let kids_before = provider.jwks_kids().await;
    provider.rotate_keys().await;
    let kids_after = provider.jwks_kids().await;
    assert!(kids_after.iter().any(|kid| !kids_before.contains(kid)), "a new key: {kids_before:?} → {kids_after:?}");
    // Signed with the new key, which the lobby's cached keys lack: it fetches them again.
    let after = log_in(&mut client, "frank").await;
    assert_eq!(after.account, before.account);
    provider.rotate_keys().await;
    let again = log_in(&mut client, "frank").await;
    assert_eq!(again.account, before.account, "a second rotation too");
}

async fn oidc_refuses_a_wrong_state(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let (code, _state) = authorize(&mut client, tonic::Request::new(start_request("test", false)), "gina").await;
    let refused = client.finish_login(finish_request(&"f".repeat(64), &code)).await.expect_err("wrong state");
    assert_refused(&refused, Code::Unauthenticated, "unknown login state");
    let refused = client.finish_login(finish_request("", &code)).await.expect_err("no state");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

async fn oidc_refuses_a_replayed_code(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let (code, state) = authorize(&mut client, tonic::Request::new(start_request("test", false)), "hank").await;
    client.finish_login(finish_request(&state, &code)).await.expect("the first redemption");
    let refused = client.finish_login(finish_request(&state, &code)).await.expect_err("replayed");
    assert_refused(&refused, Code::Unauthenticated, "already finished");
    // The same code with a fresh login's state: the provider refuses it (used, and another PKCE verifier).
    let fresh = client.start_login(start_request("test", false)).await.expect("start").into_inner();
    let refused = client.finish_login(finish_request(&fresh.state, &code)).await.expect_err("replayed at provider");
    assert_refused(&refused, Code::Unauthenticated, "refused the code");
}

async fn oidc_refuses_a_wrong_nonce(backend: &Backend) {
    assert_refused(&tampered_login(backend, "nonce").await, Code::Unauthenticated, "nonce");
}

async fn oidc_refuses_an_expired_id_token(backend: &Backend) {
    assert_refused(&tampered_login(backend, "expired").await, Code::Unauthenticated, "expired");
}

async fn oidc_refuses_a_wrong_audience(backend: &Backend) {
    assert_refused(&tampered_login(backend, "audience").await, Code::Unauthenticated, "another client");
}

async fn oidc_refuses_a_wrong_issuer(backend: &Backend) {
    assert_refused(&tampered_login(backend, "issuer").await, Code::Unauthenticated, "not from the configured issuer");
}

async fn oidc_refuses_an_unknown_key_id(backend: &Backend) {
    assert_refused(&tampered_login(backend, "unknown-kid").await, Code::Unauthenticated, "does not publish");
}

async fn oidc_refuses_alg_none(backend: &Backend) {
    let refused = tampered_login(backend, "alg-none").await;
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("alg none") || refused.message().contains("algorithm"), "{refused:?}");
}

async fn oidc_refuses_hs256_signed_with_the_public_key(backend: &Backend) {
    assert_refused(&tampered_login(backend, "hs256-public-key").await, Code::Unauthenticated, "algorithm");
}

async fn oidc_refuses_a_redirect_uri_that_differs(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let mut request = start_request("test", false);
    request.redirect_uri = "http://evil.example/callback".into();
    let refused = client.start_login(request).await.expect_err("unregistered redirect");
    assert_refused(&refused, Code::InvalidArgument, "http://127.0.0.1/callback");

    let (code, state) = authorize(&mut client, tonic::Request::new(start_request("test", false)), "ivan").await;
    let mut finish = finish_request(&state, &code);
    finish.redirect_uri = "http://127.0.0.1:54322/callback".into();
    let refused = client.finish_login(finish).await.expect_err("another redirect");
    assert_refused(&refused, Code::InvalidArgument, "differs");
    // The refusal did not use the attempt up: with the right URI it finishes.
    client.finish_login(finish_request(&state, &code)).await.expect("finish with the URI it started with");
}

async fn oidc_unknown_and_unreachable_providers_say_so(backend: &Backend) {
    // A port nothing listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let spec = ProviderConfig::parse_oidc(&format!(
        "down=http://127.0.0.1:{closed},rally,redirect-uri={}",
        oidc::LOOPBACK_REDIRECT_URI
    ))
    .expect("spec");
    let (_lobby, mut client) = lobby_with(backend, vec![spec]).await;
    let refused = client.start_login(start_request("nope", false)).await.expect_err("unknown provider");
    assert_refused(&refused, Code::NotFound, "this lobby has: down");
    let refused = client.start_login(start_request("down", false)).await.expect_err("unreachable");
    assert_refused(&refused, Code::Unavailable, "cannot be reached");
    let listed = client.list_providers(pb::ListProvidersRequest {}).await.expect("list still answers").into_inner();
    assert!(!listed.providers[0].device_flow, "unknown while unreachable");
}

fn guest_secret(seed: u8) -> String {
    format!("guest-device-secret-{seed:03}-0123456789abcdef0123456789")
}

async fn oidc_guest_links_an_identity_and_a_password_and_keeps_its_account(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let guest =
        client.login_guest(pb::LoginGuestRequest { device_secret: guest_secret(1) }).await.expect("guest").into_inner();
    assert!(guest.created);
    let account = guest.account.clone().expect("account");
    assert!(account.username.starts_with("guest-") && account.username.len() == 14, "{}", account.username);
    let again = client.login_guest(pb::LoginGuestRequest { device_secret: guest_secret(1) }).await.expect("again");
    assert_eq!(again.into_inner().account, Some(account.clone()), "the secret logs in to its guest");
    let token = guest.tokens.as_ref().expect("tokens").access_token.clone();

    // Link an OpenID identity by a code flow started with the guest's token.
    let (code, state) = authorize(&mut client, authed(start_request("test", true), &token), "judy").await;
    let linked = client.finish_login(finish_request(&state, &code)).await.expect("link").into_inner();
    assert!(!linked.created);
    assert_eq!(linked.account, Some(account.clone()), "linked to the guest's account");
    let identity = linked.linked.expect("the identity linked");
    assert_eq!((identity.provider.as_str(), identity.display_name.as_str()), ("test", "judy"));

    // Now the identity logs in to the guest's account (its rating and history with it).
    let by_identity = log_in(&mut client, "judy").await;
    assert_eq!(by_identity.account, Some(account.clone()));

    let listed = client.list_identities(authed(pb::ListIdentitiesRequest {}, &token)).await.expect("list").into_inner();
    assert!(!listed.has_password);
    let mut providers: Vec<&str> = listed.identities.iter().map(|identity| identity.provider.as_str()).collect();
    providers.sort_unstable();
    assert_eq!(providers, ["guest", "test"]);

    // A second identity of one provider is refused.
    let (code, state) = authorize(&mut client, authed(start_request("test", true), &token), "judy2").await;
    let refused = client.finish_login(finish_request(&state, &code)).await.expect_err("second test identity");
    assert_refused(&refused, Code::AlreadyExists, "already has a test identity");

    let unlink = |method: &str| authed(pb::UnlinkRequest { provider: method.into() }, &token);
    client.unlink(unlink("guest")).await.expect("unlink the device secret");
    let refused = client.unlink(unlink("test")).await.expect_err("the last method");
    assert_refused(&refused, Code::FailedPrecondition, "last login method");
    let refused = client.unlink(unlink("guest")).await.expect_err("gone already");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    // The old secret now makes a new guest: it no longer names this account.
    let fresh = client.login_guest(pb::LoginGuestRequest { device_secret: guest_secret(1) }).await.expect("guest");
    assert_ne!(fresh.into_inner().account, Some(account.clone()));

    // A password and a username of its own.
    let set = client
        .set_password(authed(pb::SetPasswordRequest { username: "Judy_J".into(), password: PASSWORD.into() }, &token))
        .await
        .expect("set password")
        .into_inner();
    assert_eq!((set.player_id, set.username.as_str()), (account.player_id, "Judy_J"));
    let refused = client
        .set_password(authed(pb::SetPasswordRequest { username: String::new(), password: PASSWORD.into() }, &token))
        .await
        .expect_err("has one");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    client
        .login(pb::LoginRequest { username: "judy_j".into(), password: PASSWORD.into() })
        .await
        .expect("the password logs in");
    client.unlink(unlink("test")).await.expect("unlink the identity, the password remains");
    let refused = client.unlink(unlink("password")).await.expect_err("the last method");
    assert_refused(&refused, Code::FailedPrecondition, "last login method");
    let listed = client.list_identities(authed(pb::ListIdentitiesRequest {}, &token)).await.expect("list").into_inner();
    assert!(listed.has_password && listed.identities.is_empty(), "{listed:?}");
    // And judy's identity now makes a new account.
    assert!(log_in(&mut client, "judy").await.created);
}

async fn oidc_an_identity_linked_elsewhere_is_refused(backend: &Backend) {
    let provider = OidcProvider::start().await;
    let (_lobby, mut client) = lobby_with_oidc(backend, &provider).await;
    let owner = log_in(&mut client, "kim").await;
    let other = register(&mut client, "other_account").await;
    let token = other.tokens.expect("tokens").access_token;
    let (code, state) = authorize(&mut client, authed(start_request("test", true), &token), "kim").await;
    let refused = client.finish_login(finish_request(&state, &code)).await.expect_err("linked elsewhere");
    assert_refused(&refused, Code::AlreadyExists, "linked to another rally account");
    assert_eq!(log_in(&mut client, "kim").await.account, owner.account, "it stays with its account");
    // Linking needs a caller.
    let refused = client.start_login(start_request("test", true)).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

async fn oidc_guest_secrets_are_checked(backend: &Backend) {
    let (_lobby, mut client) = lobby_with(backend, Vec::new()).await;
    for secret in ["short".to_owned(), "x".repeat(257), format!("{} with spaces", "y".repeat(40))] {
        let refused = client.login_guest(pb::LoginGuestRequest { device_secret: secret }).await.expect_err("bad");
        assert_refused(&refused, Code::InvalidArgument, "device_secret");
    }
    let refused = client.start_login(start_request("any", false)).await.expect_err("none configured");
    assert_refused(&refused, Code::NotFound, "none configured");
}
