//! Settings every scenario shares, and parsers for the values people type
//! (`30s`, `500ms`, `loss=5%,latency=50ms`).

use std::time::Duration;

use anyhow::{Context, bail};
use rally_client::conditioner::LinkConditions;

use crate::report::ConditionsInfo;
use crate::threshold::Threshold;

/// Core the servers under test are pinned to when pinning.
pub const SERVER_CORE: usize = 0;
/// Core the harness is pinned to when pinning.
pub const HARNESS_CORE: usize = 1;

/// What every run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Clients to start.
    pub clients: u64,
    /// Clients started per second.
    pub ramp_per_sec: f64,
    /// How long the load is held after the ramp.
    pub duration: Duration,
    /// Seed of match ids, tokens and the link conditioner.
    pub seed: u64,
    /// What the network does to every client's datagrams.
    pub conditions: LinkConditions,
    /// Pass/fail criteria.
    pub thresholds: Vec<Threshold>,
    /// Draw live progress on the terminal.
    pub progress: bool,
    /// Pin the harness to one core and the embedded servers to another (needs `taskset` and 2 cores).
    pub pin: bool,
    /// Client UDP sockets to spread connections over.
    pub endpoints: usize,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            clients: 100,
            ramp_per_sec: 50.0,
            duration: Duration::from_secs(30),
            seed: 1,
            conditions: LinkConditions::perfect(),
            thresholds: Vec::new(),
            progress: false,
            pin: false,
            endpoints: 1,
        }
    }
}

impl LoadConfig {
    /// The conditioner settings in report form.
    pub fn conditions_info(&self) -> ConditionsInfo {
        let conditions = &self.conditions;
        ConditionsInfo {
            loss: conditions.loss,
            latency_ms: conditions.latency.as_secs_f64() * 1e3,
            jitter_ms: conditions.jitter.as_secs_f64() * 1e3,
            duplicate: conditions.duplicate,
            reorder: conditions.reorder,
        }
    }

    /// Whether pinning applies here, and a warning when asked for but impossible.
    pub fn effective_pin(&self) -> bool {
        if !self.pin {
            return false;
        }
        let cores = crate::sys::cores();
        if cores < 2 {
            tracing::warn!("one core only: not pinning");
            return false;
        }
        if !crate::sys::has_taskset() {
            tracing::warn!("taskset not found: the harness and the servers share cores");
            return false;
        }
        true
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("{other:?} in {text:?} is not a duration unit (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("{text:?} is not a duration");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a probability: `0.05` or `5%`.
pub fn parse_probability(text: &str) -> anyhow::Result<f64> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|value| value / 100.0),
        None => text.parse::<f64>(),
    }
    .with_context(|| format!("{text:?} is not a probability like 0.05 or 5%"))?;
    if !(0.0..=1.0).contains(&value) {
        bail!("{text:?} is not between 0 and 1 (0% and 100%)");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_probabilities_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(parse_probability("5%").unwrap(), 0.05);
        assert_eq!(parse_probability("0.1").unwrap(), 0.1);
        assert!(parse_probability("150%").is_err());
        assert!(parse_probability("-0.1").is_err());
    }
}
