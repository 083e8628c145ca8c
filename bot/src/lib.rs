//! rally bots: Pong players that connect, queue and play through the real client
//! protocol, like any other client; and the benchmark that pits them against each other.
//!
//! - [`obs`]: the versioned observation/action spec (what a policy sees and answers);
//! - [`policy`]: the batched [`Policy`] trait and the scripted tracker, predictor and expert;
//! - [`onnx`]: ONNX Runtime loading (`ORT_DYLIB_PATH`, then the project's `.venv`) and
//!   [`OnnxPolicy`], which refuses models of another spec;
//! - [`difficulty`]: reaction delay and aim error in front of any policy;
//! - [`runner`]: a decider thread per policy that batches all bots' decisions;
//! - [`driver`]: one bot playing one match with a connect token over any transport;
//! - [`queue`]: bots as platform players (lobby login, matchmaker queue, play, re-queue)
//!   and [`queue::BotFiller`], the matchmaker's bot-fill hook;
//! - [`tournament`]: bots as tournament entrants (register, check in, watch, play each ready match);
//! - [`bench`]: `rally bot bench`, matches through a real shard with win rate, margin,
//!   latency and Elo.
//!
//! The bot never touches the simulation: it sees the views the shard sends and sends
//! inputs, through `rally-client`.

pub mod bench;
pub mod difficulty;
pub mod driver;
pub mod error;
pub mod obs;
pub mod onnx;
pub mod policy;
pub mod queue;
pub mod runner;
pub mod tournament;

pub use difficulty::{Difficulty, Handicap};
pub use driver::{BotMatch, BotStyle, SeatTicket, play_connection, play_with_token};
pub use error::BotError;
pub use obs::{Action, OBS_DIM, OBS_SPEC_VERSION, ObsEncoder, Observation};
pub use onnx::OnnxPolicy;
pub use policy::{ExpertPolicy, Policy, PredictorPolicy, TrackerPolicy};
pub use runner::{BatchWindow, Decider, DeciderHandle, DeciderStats};

/// The policies a command line can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// The ONNX model (built-in, or a file).
    Onnx,
    /// Follows the ball.
    Tracker,
    /// Goes to the intercept.
    Predictor,
    /// The predictor that aims (the ONNX model's teacher).
    Expert,
}

impl PolicyKind {
    /// Parses `onnx`, `tracker`, `predictor` or `expert`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "onnx" => Self::Onnx,
            "tracker" => Self::Tracker,
            "predictor" => Self::Predictor,
            "expert" => Self::Expert,
            _ => return None,
        })
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Onnx => "onnx",
            Self::Tracker => "tracker",
            Self::Predictor => "predictor",
            Self::Expert => "expert",
        }
    }

    /// The difficulty a side plays at unless told otherwise: the scripted policies at
    /// [`Difficulty::MEDIUM`] (a fair game for a person), the model and the expert at full strength.
    pub fn default_difficulty(self) -> Difficulty {
        match self {
            Self::Onnx | Self::Expert => Difficulty::PERFECT,
            Self::Tracker | Self::Predictor => Difficulty::MEDIUM,
        }
    }

    /// Builds the policy; `model` replaces the built-in ONNX model.
    pub fn build(self, model: Option<&std::path::Path>) -> Result<Box<dyn Policy>, BotError> {
        Ok(match self {
            Self::Onnx => match model {
                Some(path) => Box::new(OnnxPolicy::from_file(path)?),
                None => Box::new(OnnxPolicy::builtin()?),
            },
            Self::Tracker => Box::new(TrackerPolicy),
            Self::Predictor => Box::new(PredictorPolicy),
            Self::Expert => Box::new(ExpertPolicy),
        })
    }
}
