//! The rally load harness: many protocol-faithful clients, built on the client
//! SDK and the services' public APIs, driven from one process (or several whose
//! reports merge), with a link conditioner, thresholds and a report people can
//! read.
//!
//! - [`scenario`] says what a scenario is; [`connect`] is the shard-capacity
//!   scenario (token → connect → play, over QUIC or raw UDP), [`game`] the
//!   players, [`sweep`] the capacity sweep that runs `connect` at several loads;
//!   [`platform`] holds `chat`, `matchmaker` (ticket storm) and `full`
//!   (login → queue → play), through the lobby and matchmaker gRPC APIs.
//! - [`run`] schedules clients (ramp, duration, stop), samples a timeline,
//!   shows live progress and reads the shard's Prometheus endpoint
//!   ([`prometheus`]).
//! - [`measure`] holds what clients measure (hdrhistogram latencies, counters,
//!   errors by kind); [`report`] turns it into JSON, a text summary and merged
//!   reports; [`html`] into a single-file HTML page with SVG plots;
//!   [`threshold`] checks pass/fail criteria.
//! - [`stack`] and [`services`] start the shard, lobby and matchmaker
//!   in-process when no address is given;
//!   [`baseline`] measures a bare quinn or raw UDP echo ([`echo`]) for comparison;
//!   [`sys`] reads CPU time and UDP counters, pins cores and opens client sockets.
//!
//! It plays no game well: inputs are scripted, because the point is the
//! transport, tick and service cost, not the rallies.

pub mod baseline;
pub mod config;
pub mod connect;
pub mod echo;
pub mod game;
pub mod html;
pub mod measure;
pub mod platform;
pub mod prometheus;
pub mod report;
pub mod run;
pub mod scenario;
pub mod services;
pub mod spread;
pub mod stack;
pub mod swarm;
pub mod sweep;
pub mod sys;
pub mod threshold;

pub use config::LoadConfig;
pub use report::Report;

/// Which part of a run the clients are in. Clients count only during `Hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connections are being opened; nothing is counted.
    Ramp,
    /// The measured window.
    Hold,
    /// The window is over: clients finish their accounting and close.
    Stop,
}
