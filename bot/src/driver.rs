//! One bot, one match: connect to a shard seat with a token and play to the end
//! through the client SDK, exactly as a person's client would.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use rally_client::ConnectConfig;
use rally_client::session::ClientEvent;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{Connection, Transport};
use rally_protocol::Seat;
use rally_protocol::control::{ClientHello, MatchEnd};

use crate::difficulty::{Difficulty, Handicap};
use crate::obs::{Action, ObsEncoder};
use crate::runner::DeciderHandle;

/// What a bot needs to reach its seat.
#[derive(Clone, Debug)]
pub struct SeatTicket {
    /// The shard's address on the transport the bot uses (QUIC, or `--udp-addr`).
    pub addr: SocketAddr,
    /// The name the shard's certificate must be valid for (unused when pinning).
    pub server_name: String,
    /// The connect token the matchmaker (or a test) issued.
    pub token: Vec<u8>,
}

/// How one bot plays.
#[derive(Clone, Copy, Debug)]
pub struct BotStyle {
    /// Its handicap.
    pub difficulty: Difficulty,
    /// Seed of its aim errors.
    pub seed: u64,
}

/// What a bot saw of its match.
#[derive(Clone, Debug)]
pub struct BotMatch {
    /// The seat it held.
    pub seat: Seat,
    /// The shard's final word.
    pub end: MatchEnd,
    /// Decisions it made.
    pub decisions: u64,
}

impl BotMatch {
    /// Whether the bot's side won.
    pub fn won(&self) -> bool {
        self.end.winner == Some(self.seat % 2)
    }

    /// The bot's points minus its opponent's.
    pub fn margin(&self) -> i64 {
        let side = usize::from(self.seat % 2);
        let own = self.end.scores.get(side).copied().unwrap_or(0);
        let other = self.end.scores.get(1 - side).copied().unwrap_or(0);
        i64::from(own) - i64::from(other)
    }
}

/// A client endpoint trusting `trust`; many bots share one.
pub fn bot_endpoint(trust: &ServerTrust) -> anyhow::Result<quinn::Endpoint> {
    rally_client::quic::endpoint(client_config(trust)?)
}

/// Connects with `ticket` over `transport` and plays the match to its end,
/// deciding through `decider`.
pub async fn play_with_token(
    transport: &Transport,
    ticket: &SeatTicket,
    decider: &DeciderHandle,
    style: BotStyle,
) -> anyhow::Result<BotMatch> {
    let mut config = ConnectConfig::new(ticket.addr);
    config.server_name.clone_from(&ticket.server_name);
    let hello = ClientHello::Connect { token: ticket.token.clone() };
    let connection = Connection::connect(transport, &config, &hello).await?;
    play_connection(connection, decider, style).await
}

/// Plays an already connected seat (over either transport) to the end of its match.
pub async fn play_connection(
    connection: impl Into<Connection>,
    decider: &DeciderHandle,
    style: BotStyle,
) -> anyhow::Result<BotMatch> {
    let mut connection = connection.into();
    let mut play = SeatPlay::new(&connection, style)?;
    match play.play_on(&mut connection, decider).await? {
        Played::Ended(result) => Ok(result),
        Played::Dropped(why) => bail!("{why}"),
    }
}

/// How play on one connection stopped.
#[derive(Debug)]
pub enum Played {
    /// The match ended.
    Ended(BotMatch),
    /// The connection was lost (or the shard closed it) before the end: the
    /// seat may be resumed within the welcome's grace window.
    Dropped(String),
}

/// One bot's play of one seat, across the connections that carry it (a
/// resumed connection continues the same handicap and counters).
#[derive(Debug)]
pub struct SeatPlay {
    welcome: rally_protocol::control::Welcome,
    encoder: ObsEncoder,
    handicap: Handicap,
    decisions: u64,
}

impl SeatPlay {
    /// Play of the seat `connection` was welcomed to.
    pub fn new(connection: &Connection, style: BotStyle) -> anyhow::Result<Self> {
        let welcome = connection.welcome().clone();
        let encoder = ObsEncoder::new(&welcome.schema, welcome.seat, welcome.n_seats)?;
        Ok(Self { welcome, encoder, handicap: Handicap::new(style.difficulty, style.seed), decisions: 0 })
    }

    /// Plays on `connection` until the match ends or the connection drops.
    /// Errors are the bot's own (its decider failed).
    pub async fn play_on(&mut self, connection: &mut Connection, decider: &DeciderHandle) -> anyhow::Result<Played> {
        let mut current = Action::Stop;
        while let Some(event) = connection.next_event().await {
            match event {
                ClientEvent::Snapshot(view) => {
                    let Some(obs) = self.encoder.encode(&view) else { continue };
                    let action = decider.decide(self.handicap.observe(obs)).await.context("deciding")?;
                    self.decisions += 1;
                    if action != current {
                        connection.set_input(action.input());
                        current = action;
                    }
                }
                ClientEvent::Ended(end) => {
                    connection.leave();
                    return Ok(Played::Ended(BotMatch { seat: self.welcome.seat, end, decisions: self.decisions }));
                }
                ClientEvent::Disconnected { reason, message } => {
                    return Ok(Played::Dropped(format!("the shard disconnected the bot: {reason:?} {message}")));
                }
                _ => {}
            }
        }
        Ok(Played::Dropped(match connection.close_reason() {
            Some(reason) => format!("the connection closed before the match ended: {reason}"),
            None => "the connection closed before the match ended".to_owned(),
        }))
    }

    /// How long after a drop the shard holds the seat.
    pub fn resume_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.welcome.resume_grace_ms))
    }
}
