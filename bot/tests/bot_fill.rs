//! The matchmaker's bot-fill hook: seats handed to the filler are played to the end
//! over real QUIC, against an embedded shard.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rally_bot::queue::BotFiller;
use rally_bot::{BatchWindow, Decider, Difficulty, PolicyKind};
use rally_matchmaker::{BotFill, BotSeat, SeatGrant, TokenMinter};
use rally_protocol::{MatchId, PlayerId};
use rally_server::ServeConfig;
use rally_server::start;
use rally_sim::PongWorld;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_given_to_the_filler_are_played_to_the_end() {
    let minter = TokenMinter::random(1);
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeConfig::local(dir.path().to_owned(), vec![(minter.key_id(), minter.verifying_key())]);
    serve.shard.name = "fill-test".into();
    serve.shard.tick_rate_hz = 120;
    serve.shard.snapshot_rate_hz = 60;
    serve.limits.datagrams_per_second = 240;
    serve.limits.datagram_burst = 240;
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel();
    let shard = start::<PongWorld>(serve, results_tx).await.unwrap();

    // One side plays the predictor at full strength, the other the tracker at its
    // weakest: points come quickly.
    let strong = Decider::spawn(PolicyKind::Predictor.build(None).unwrap(), BatchWindow::default());
    let weak = Decider::spawn(PolicyKind::Tracker.build(None).unwrap(), BatchWindow::default());
    let fillers = [
        BotFiller::new(strong.handle(), Difficulty::PERFECT, 1_000_000, 10).unwrap(),
        BotFiller::new(weak.handle(), Difficulty::EASY, 2_000_000, 10).unwrap(),
    ];
    let ids = fillers[0].bot_players("pong", 3, 1500.0).unwrap();
    assert_eq!(ids, vec![PlayerId(1_000_000), PlayerId(1_000_001), PlayerId(1_000_002)]);

    for (seat, filler) in fillers.iter().enumerate() {
        let seat = seat as u8;
        let grant = SeatGrant {
            player_id: PlayerId(10 + u64::from(seat)),
            match_id: MatchId(42),
            seat,
            n_seats: 2,
            points_to_win: 1,
            shard: "fill-test".into(),
        };
        let (connect_token, token_expires_at_ms) = minter.mint(&grant, rally_transport::unix_ms()).unwrap();
        filler.seat_assigned(BotSeat {
            match_id: MatchId(42),
            mode: "pong".into(),
            player_id: PlayerId(10 + u64::from(seat)),
            seat,
            side: seat,
            shard_name: "fill-test".into(),
            shard_address: shard.local_addr.to_string(),
            certificate_sha256: shard.fingerprint.clone(),
            connect_token,
            token_expires_at_ms,
        });
    }
    let result = tokio::time::timeout(Duration::from_secs(120), results.recv()).await.expect("a result").unwrap();
    assert_eq!(result.match_id, MatchId(42));
    assert_eq!(result.scores.iter().sum::<u32>(), 1);
    // Both bots saw the end and were counted.
    for filler in &fillers {
        tokio::time::timeout(Duration::from_secs(30), filler.wait_until_idle())
            .await
            .expect("the bots did not report the end");
    }
    let done: u64 = fillers.iter().map(|filler| filler.stats().matches.load(Ordering::Relaxed)).sum();
    let failed: u64 = fillers.iter().map(|filler| filler.stats().failures.load(Ordering::Relaxed)).sum();
    assert_eq!((done, failed), (2, 0), "both seats played, none failed");
    let wins: u64 = fillers.iter().map(|filler| filler.stats().wins.load(Ordering::Relaxed)).sum();
    assert_eq!(wins, 1, "exactly one side won");
}
