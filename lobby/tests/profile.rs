//! Profiles and the `MatchResult` consumer, on SQLite and PostgreSQL.

mod common;

use common::{Backend, auth_client, authed, config, profile_client, register, start};
use rally_lobby::ApplyOutcome;
use rally_lobby::proto::profile as pb;
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};
use tonic::Code;

on_both_backends!(results_apply_exactly_once, history_pages_newest_first_and_leaderboard_ranks);

fn result(match_id: u64, winner: u64, loser: u64, ended_at_ms: u64) -> MatchResult {
    MatchResult {
        match_id: MatchId(match_id),
        game: "pong".into(),
        shard: "shard-test".into(),
        seats: vec![
            SeatResult { seat: 0, player_id: Some(PlayerId(winner)), side: 0, forfeited: false },
            SeatResult { seat: 1, player_id: Some(PlayerId(loser)), side: 1, forfeited: false },
        ],
        scores: vec![5, 2],
        winner: Some(0),
        reason: EndReason::Score,
        duration_ticks: 600,
        tick_rate_hz: 60,
        started_at_ms: ended_at_ms.saturating_sub(10_000),
        ended_at_ms,
        input_log_digest: "00".repeat(32),
    }
}

async fn results_apply_exactly_once(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut auth = auth_client(&lobby).await;
    let ivan = register(&mut auth, "ivan").await;
    let judy = register(&mut auth, "judy").await;
    let ivan_id = ivan.account.expect("account").player_id;
    let judy_id = judy.account.expect("account").player_id;
    let token = ivan.tokens.expect("tokens").access_token;
    let mut profiles = profile_client(&lobby).await;

    let before = profiles.get_profile(authed(pb::GetProfileRequest { player_id: 0 }, &token)).await.expect("me");
    let before = before.into_inner();
    assert_eq!((before.player_id, before.display_name.as_str()), (ivan_id, "ivan"));
    assert_eq!((before.wins, before.losses), (0, 0));

    let finished = result(77, ivan_id, judy_id, 1_000_000);
    assert_eq!(lobby.profiles().apply_match_result(&finished).await.expect("apply"), ApplyOutcome::Applied);
    // Delivered again (at-least-once bus), also concurrently: nothing changes.
    let (again, concurrent) =
        tokio::join!(lobby.profiles().apply_match_result(&finished), lobby.profiles().apply_match_result(&finished));
    assert_eq!(again.expect("again"), ApplyOutcome::AlreadyApplied);
    assert_eq!(concurrent.expect("concurrent"), ApplyOutcome::AlreadyApplied);

    let winner = profiles.get_profile(authed(pb::GetProfileRequest { player_id: ivan_id }, &token)).await;
    let winner = winner.expect("ivan").into_inner();
    let loser = profiles.get_profile(authed(pb::GetProfileRequest { player_id: judy_id }, &token)).await;
    let loser = loser.expect("judy").into_inner();
    assert_eq!((winner.wins, winner.losses, loser.wins, loser.losses), (1, 0, 0, 1));
    assert!(winner.rating > before.rating && loser.rating < before.rating, "{winner:?} {loser:?}");
    assert!(winner.rating_deviation < before.rating_deviation);

    let history = profiles
        .match_history(authed(
            pb::MatchHistoryRequest { player_id: judy_id, page_size: 10, page_token: String::new() },
            &token,
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.entries.len(), 1);
    assert_eq!((history.entries[0].match_id, history.entries[0].outcome.as_str()), (77, "loss"));
    assert!(history.next_page_token.is_empty());

    let missing = profiles.get_profile(authed(pb::GetProfileRequest { player_id: 999_999 }, &token)).await;
    assert_eq!(missing.expect_err("no such player").code(), Code::NotFound);
    lobby.shutdown().await.expect("shutdown");
}

async fn history_pages_newest_first_and_leaderboard_ranks(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let mut auth = auth_client(&lobby).await;
    let mut ids = Vec::new();
    let mut token = String::new();
    for name in ["kim", "lee", "max"] {
        let registered = register(&mut auth, name).await;
        ids.push(registered.account.expect("account").player_id);
        token = registered.tokens.expect("tokens").access_token;
    }
    let (kim, lee, max) = (ids[0], ids[1], ids[2]);
    for (match_id, winner, loser, ended) in
        [(1, kim, lee, 100), (2, kim, max, 200), (3, lee, max, 300), (4, kim, lee, 400)]
    {
        lobby.profiles().apply_match_result(&result(match_id, winner, loser, ended)).await.expect("apply");
    }
    let mut profiles = profile_client(&lobby).await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = profiles
            .match_history(authed(pb::MatchHistoryRequest { player_id: kim, page_size: 2, page_token }, &token))
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.entries.iter().map(|entry| entry.match_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, [4, 2, 1]);
    let bad = profiles
        .match_history(authed(
            pb::MatchHistoryRequest { player_id: kim, page_size: 2, page_token: "x'--".into() },
            &token,
        ))
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let board = profiles
        .leaderboard(authed(pb::LeaderboardRequest { page_size: 2, page_token: String::new(), rank_of: max }, &token))
        .await
        .expect("leaderboard")
        .into_inner();
    assert_eq!(
        board.entries.iter().map(|entry| (entry.rank, entry.player_id)).collect::<Vec<_>>(),
        [(1, kim), (2, lee)]
    );
    let max_entry = board.player.expect("rank_of");
    assert_eq!((max_entry.rank, max_entry.display_name.as_str()), (3, "max"));
    let too_many = pb::LeaderboardRequest { page_size: 1000, page_token: String::new(), rank_of: 0 };
    let too_many = profiles.leaderboard(authed(too_many, &token)).await;
    assert_eq!(too_many.expect_err("page_size too large").code(), Code::InvalidArgument);
    lobby.shutdown().await.expect("shutdown");
}
