//! Auth over real gRPC on loopback, on SQLite and PostgreSQL.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{Backend, PASSWORD, auth_client, authed, config, profile_client, register, start};
use rally_lobby::limits::RateLimitConfig;
use rally_lobby::proto::auth as pb;
use rally_lobby::proto::profile as profile_pb;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, AccessTokenIssuer, Claims};
use tonic::Code;

on_both_backends!(
    register_login_refresh_logout_and_me,
    bad_registrations_are_refused_and_change_nothing,
    wrong_credentials_are_unauthenticated,
    bad_access_tokens_are_unauthenticated,
    refresh_token_reuse_revokes_the_family,
    login_storm_hits_the_per_ip_limit,
    accounts_survive_a_restart,
    health_reports_serving,
);

fn login(username: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest { username: username.into(), password: password.into() }
}

async fn register_login_refresh_logout_and_me(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    let registered = register(&mut client, "Alice_1").await;
    let account = registered.account.expect("account");
    let tokens = registered.tokens.expect("tokens");
    assert_eq!(account.username, "Alice_1");

    let me = client.me(authed(pb::MeRequest {}, &tokens.access_token)).await.expect("me").into_inner();
    assert_eq!(me, account);
    // Expiry is in Unix milliseconds, like every other time: 15 minutes from now.
    let now_ms =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
            .expect("ms");
    let ttl_ms = tokens.access_expires_at_ms - now_ms;
    assert!((14 * 60_000..=15 * 60_000).contains(&ttl_ms), "expires in {ttl_ms} ms");
    let claims = lobby.verifier().verify(&tokens.access_token).expect("library verification");
    assert_eq!(claims.player_id().expect("player id"), account.player_id);

    // Usernames are case-insensitive at login.
    let pair = client.login(login("alice_1", PASSWORD)).await.expect("login").into_inner();
    let refreshed = client
        .refresh(pb::RefreshRequest { refresh_token: pair.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner();
    assert_ne!(refreshed.refresh_token, pair.refresh_token);
    client.me(authed(pb::MeRequest {}, &refreshed.access_token)).await.expect("me after refresh");

    client.logout(pb::LogoutRequest { refresh_token: refreshed.refresh_token.clone() }).await.expect("logout");
    let after_logout =
        client.refresh(pb::RefreshRequest { refresh_token: refreshed.refresh_token }).await.expect_err("revoked");
    assert_eq!(after_logout.code(), Code::Unauthenticated);
    // The registration's own session is another family and still works.
    client.refresh(pb::RefreshRequest { refresh_token: tokens.refresh_token }).await.expect("other family");
    lobby.shutdown().await.expect("shutdown");
}

async fn bad_registrations_are_refused_and_change_nothing(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    register(&mut client, "bob").await;
    let cases: &[(&str, &str, Code, &str)] = &[
        ("", PASSWORD, Code::InvalidArgument, "username"),
        ("ab", PASSWORD, Code::InvalidArgument, "3 to 24"),
        (&"x".repeat(10_000), PASSWORD, Code::InvalidArgument, "3 to 24"),
        ("bo'; DROP TABLE accounts", PASSWORD, Code::InvalidArgument, "may only contain"),
        ("robert\"); --", PASSWORD, Code::InvalidArgument, "may only contain"),
        ("名前です", PASSWORD, Code::InvalidArgument, "may only contain"),
        ("carol", "", Code::InvalidArgument, "at least 10"),
        ("carol", "short", Code::InvalidArgument, "at least 10"),
        ("carol", "Password123", Code::InvalidArgument, "too common"),
        ("carol", &"p".repeat(1000), Code::InvalidArgument, "at most"),
        ("BOB", PASSWORD, Code::AlreadyExists, "taken"),
    ];
    for (username, password, code, needle) in cases {
        let status = client
            .register(pb::RegisterRequest {
                username: (*username).into(),
                password: (*password).into(),
                idempotency_key: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), *code, "{username:?}/{password:?}: {}", status.message());
        assert!(status.message().contains(needle), "{username:?}: {}", status.message());
    }
    // Nothing was created and the table is intact.
    let status = client.login(login("carol", PASSWORD)).await.expect_err("carol does not exist");
    assert_eq!(status.code(), Code::Unauthenticated);
    client.login(login("bob", PASSWORD)).await.expect("bob still logs in");
    lobby.shutdown().await.expect("shutdown");
}

async fn wrong_credentials_are_unauthenticated(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    register(&mut client, "dave").await;
    for (username, password) in
        [("dave", "not the password"), ("nobody", PASSWORD), ("dave' OR '1'='1", "' OR '1'='1"), ("", "")]
    {
        let status = client.login(login(username, password)).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{username}");
        assert!(status.message().contains("wrong username or password"));
    }
    for token in ["", "not-a-token"] {
        let status = client.refresh(pb::RefreshRequest { refresh_token: token.into() }).await.expect_err("refused");
        assert!(matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument), "{status:?}");
    }
    lobby.shutdown().await.expect("shutdown");
}

async fn bad_access_tokens_are_unauthenticated(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    let mut profiles = profile_client(&lobby).await;
    let account = register(&mut client, "erin").await.account.expect("account");

    let missing = client.me(pb::MeRequest {}).await.expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("missing access token"));
    let missing = profiles.get_profile(profile_pb::GetProfileRequest { player_id: 0 }).await.expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);

    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
            .expect("seconds");
    let claims = |exp: i64| Claims {
        sub: account.player_id.to_string(),
        name: "erin".into(),
        iat: now - 7200,
        nbf: now - 7200,
        exp,
    };
    let expired = AccessTokenIssuer::new(common::secret()).sign(&claims(now - 60)).expect("sign");
    let other_key = AccessSigningKeys::from(AccessSigningKey::from_seed([9; 32]));
    let foreign = AccessTokenIssuer::new(other_key).sign(&claims(now + 600)).expect("sign");
    let genuine = AccessTokenIssuer::new(common::secret()).sign(&claims(now + 600)).expect("sign");
    let tampered = {
        let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        parts.join(".")
    };
    // alg=none with the genuine payload.
    let unsigned = {
        let payload = genuine.split('.').nth(1).expect("payload");
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    for (token, needle) in [
        (expired.as_str(), "expired"),
        (foreign.as_str(), "invalid access token"),
        (tampered.as_str(), "invalid access token"),
        (unsigned.as_str(), "invalid access token"),
        ("garbage", "invalid access token"),
    ] {
        let status = client.me(authed(pb::MeRequest {}, token)).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token}");
        assert!(status.message().contains(needle), "{token}: {}", status.message());
        // A short reason of ours, never the JWT library's serde text.
        for leak in ["variant", "expected", "column"] {
            assert!(!status.message().contains(leak), "{token}: {}", status.message());
        }
        let status = profiles
            .get_profile(authed(profile_pb::GetProfileRequest { player_id: 0 }, token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    client.me(authed(pb::MeRequest {}, &genuine)).await.expect("a genuine token works");
    lobby.shutdown().await.expect("shutdown");
}

async fn refresh_token_reuse_revokes_the_family(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    let first = register(&mut client, "frank").await.tokens.expect("tokens");
    let second =
        client.refresh(pb::RefreshRequest { refresh_token: first.refresh_token.clone() }).await.expect("rotate");
    let second = second.into_inner();
    // A thief replays the rotated token: refused, and the family dies with it.
    let reuse =
        client.refresh(pb::RefreshRequest { refresh_token: first.refresh_token }).await.expect_err("reuse refused");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("already used"), "{}", reuse.message());
    let revoked =
        client.refresh(pb::RefreshRequest { refresh_token: second.refresh_token }).await.expect_err("family revoked");
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert!(revoked.message().contains("revoked"), "{}", revoked.message());
    // A fresh login starts a new family.
    client.login(login("frank", PASSWORD)).await.expect("login again");
    lobby.shutdown().await.expect("shutdown");
}

async fn login_storm_hits_the_per_ip_limit(backend: &Backend) {
    let mut config = config(backend);
    config.limits.auth_per_ip = RateLimitConfig::new(NonZeroU32::new(3).expect("non-zero"), Duration::from_secs(3600));
    let lobby = start(config).await;
    let mut client = auth_client(&lobby).await;
    let tokens = register(&mut client, "grace").await.tokens.expect("tokens");
    client.login(login("grace", PASSWORD)).await.expect("second");
    client.login(login("grace", PASSWORD)).await.expect("third");
    let limited = client.login(login("grace", PASSWORD)).await.expect_err("limited");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(limited.message().contains("retry after"), "{}", limited.message());
    // Other RPCs are not limited by it.
    client.me(authed(pb::MeRequest {}, &tokens.access_token)).await.expect("me still works");
    lobby.shutdown().await.expect("shutdown");
}

async fn accounts_survive_a_restart(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    let registered = register(&mut client, "heidi").await;
    lobby.shutdown().await.expect("shutdown");

    let lobby = start(config(backend)).await;
    let mut client = auth_client(&lobby).await;
    let tokens = registered.tokens.expect("tokens");
    let me = client.me(authed(pb::MeRequest {}, &tokens.access_token)).await.expect("old token still valid");
    assert_eq!(Some(me.into_inner()), registered.account);
    client.login(login("heidi", PASSWORD)).await.expect("login after restart");
    client.refresh(pb::RefreshRequest { refresh_token: tokens.refresh_token }).await.expect("refresh after restart");
    let again = client
        .register(pb::RegisterRequest {
            username: "HEIDI".into(),
            password: PASSWORD.into(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("still taken");
    assert_eq!(again.code(), Code::AlreadyExists);
    lobby.shutdown().await.expect("shutdown");
}

async fn health_reports_serving(backend: &Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let lobby = start(config(backend)).await;
    let mut health = HealthClient::new(common::channel(&lobby).await);
    for service in ["rally.auth.v1.Auth", "rally.profile.v1.Profile"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.expect("health").into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service}");
    }
    lobby.shutdown().await.expect("shutdown");
}
