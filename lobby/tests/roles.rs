//! Roles come from the database, granted by an operator, never from a
//! username or a token's `name` claim.

mod common;

use common::{Backend, auth_client, authed, chat_client, config, register, start};
use rally_lobby::db::Db;
use rally_lobby::proto::chat as pb;
use rally_lobby::roles::{self, Role};
use rally_lobby::{AccessTokenIssuer, Claims, LobbyError};
use tonic::Code;

on_both_backends!(a_moderators_name_in_a_token_grants_nothing, moderators_are_granted_and_revoked_in_the_database);

fn now_s() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    i64::try_from(now.as_secs()).expect("seconds")
}

fn mute(player_id: u64, token: &str) -> tonic::Request<pb::MuteRequest> {
    authed(pb::MuteRequest { player_id, duration_ms: 60_000, reason: "spam".into() }, token)
}

async fn a_moderators_name_in_a_token_grants_nothing(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut auth = auth_client(&lobby).await;
    let mia = register(&mut auth, "mia").await.account.expect("account");
    let eve = register(&mut auth, "eve").await.account.expect("account");
    let dan = register(&mut auth, "dan").await.account.expect("account");
    let db = Db::connect(backend.url()).await.expect("db");
    roles::grant(&db, Role::Moderator, "mia").await.expect("grant");
    // A token for eve's id claiming the moderator's name (what a holder of the
    // old shared secret could mint): the role follows the id, not the name.
    let now = now_s();
    let claims = Claims { sub: eve.player_id.to_string(), name: "mia".into(), iat: now, nbf: now, exp: now + 600 };
    let forged = AccessTokenIssuer::new(common::secret()).sign(&claims).expect("sign");
    let mut chat = chat_client(&lobby).await;
    let status = chat.mute(mute(dan.player_id, &forged)).await.expect_err("a name is no role");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    // And mia's id with another name keeps the role.
    let renamed = Claims { sub: mia.player_id.to_string(), name: "someone".into(), ..claims };
    let token = AccessTokenIssuer::new(common::secret()).sign(&renamed).expect("sign");
    chat.mute(mute(dan.player_id, &token)).await.expect("the role is mia's id's");
    db.close().await;
    lobby.shutdown().await.expect("shutdown");
}

async fn moderators_are_granted_and_revoked_in_the_database(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut auth = auth_client(&lobby).await;
    let registered = register(&mut auth, "Mod_Mia").await;
    let mia_token = registered.tokens.expect("tokens").access_token;
    let mia_id = registered.account.expect("account").player_id;
    let dan = register(&mut auth, "dan").await.account.expect("account");
    let mut chat = chat_client(&lobby).await;
    let refused = chat.mute(mute(dan.player_id, &mia_token)).await.expect_err("no role yet");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let db = Db::connect(backend.url()).await.expect("db");
    let granted = roles::grant(&db, Role::Moderator, "MOD_MIA").await.expect("grant, any letter case");
    assert_eq!((granted.player_id, granted.username.as_str(), granted.changed), (mia_id, "Mod_Mia", true));
    assert!(!roles::grant(&db, Role::Moderator, "mod_mia").await.expect("again").changed);
    chat.mute(mute(dan.player_id, &mia_token)).await.expect("a moderator mutes");

    assert!(roles::revoke(&db, Role::Moderator, "mod_mia").await.expect("revoke").changed);
    let refused = chat.mute(mute(dan.player_id, &mia_token)).await.expect_err("revoked");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(!roles::revoke(&db, Role::Moderator, "mod_mia").await.expect("again").changed);

    let missing = roles::grant(&db, Role::Moderator, "nobody").await.expect_err("no such account");
    assert!(matches!(&missing, LobbyError::NotFound(message) if message.contains("register first")), "{missing}");
    assert!("admin".parse::<Role>().is_err());
    db.close().await;
    lobby.shutdown().await.expect("shutdown");
}
