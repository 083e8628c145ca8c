//! Thresholds: pass/fail criteria on a run's figures, written like k6's
//! (`rtt_p99<50ms`, `errors==0`, `bytes_in_per_client<2.5KB/s`), that set the
//! exit code of `rally loadtest`.
//!
//! An expression is `METRIC OP VALUE[UNIT]`; OP is one of `<`, `<=`, `>`,
//! `>=`, `==`, `!=`. Which units a metric takes depends on its kind: durations
//! take `us`, `ms` (the default), `s` or `m`; byte rates take `B/s`, `KB/s`,
//! `KiB/s`, `MB/s` (bytes per second by default); fractions take `%` or a plain
//! number from 0 to 1; counts and ratios take a plain number. The metric names
//! are listed by [`crate::report::metric_catalog`]. A metric the run has no data
//! for (no metrics endpoint, no baseline) fails its threshold: a gate that
//! cannot be checked must not pass silently.

use serde::{Deserialize, Serialize};

/// What a metric measures, which fixes the units its thresholds may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// A duration, held in milliseconds.
    Millis,
    /// A number of things.
    Count,
    /// A fraction from 0 to 1.
    Fraction,
    /// Bytes per second.
    BytesPerSec,
    /// A dimensionless ratio (e.g. shard over baseline).
    Ratio,
    /// A size in bytes.
    Bytes,
}

impl MetricKind {
    /// The unit figures of this kind are printed in.
    pub fn unit(self) -> &'static str {
        match self {
            MetricKind::Millis => "ms",
            MetricKind::Count | MetricKind::Ratio => "",
            MetricKind::Fraction => "(0-1)",
            MetricKind::BytesPerSec => "B/s",
            MetricKind::Bytes => "B",
        }
    }

    fn accepted_units(self) -> &'static str {
        match self {
            MetricKind::Millis => "us, ms, s or m (ms when none is given)",
            MetricKind::Count | MetricKind::Ratio => "no unit",
            MetricKind::Fraction => "% or none (a number from 0 to 1)",
            MetricKind::BytesPerSec => "B/s, KB/s, KiB/s or MB/s (B/s when none is given)",
            MetricKind::Bytes => "B, KB, KiB, MB or MiB (B when none is given)",
        }
    }
}

/// A metric thresholds can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    /// Its name in expressions.
    pub name: String,
    /// What it measures.
    pub kind: MetricKind,
    /// One line for people.
    pub help: String,
}

/// How a figure is compared with the threshold's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Comparison {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }

    /// Whether `actual OP limit` holds. Equality allows a relative 1e-9 for
    /// figures computed in floating point.
    pub fn holds(self, actual: f64, limit: f64) -> bool {
        let equal = (actual - limit).abs() <= 1e-9 * limit.abs().max(1.0);
        match self {
            Comparison::Lt => actual < limit && !equal,
            Comparison::Le => actual <= limit || equal,
            Comparison::Gt => actual > limit && !equal,
            Comparison::Ge => actual >= limit || equal,
            Comparison::Eq => equal,
            Comparison::Ne => !equal,
        }
    }
}

/// Why an expression is not a threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// Nothing was written.
    #[error("empty threshold: write METRIC OP VALUE, e.g. 'rtt_p99<50ms'")]
    Empty,
    /// No comparison operator was found.
    #[error(
        "threshold {0:?} has no comparison: write METRIC OP VALUE with OP one of < <= > >= == !=, e.g. 'rtt_p99<50ms'"
    )]
    NoOperator(String),
    /// The left side is not a metric name.
    #[error("threshold {expression:?}: unknown metric {metric:?}{hint}; `rally loadtest metrics` lists them")]
    UnknownMetric {
        /// The whole expression.
        expression: String,
        /// The name as written.
        metric: String,
        /// Close names, formatted as `; did you mean a, b?`.
        hint: String,
    },
    /// The right side does not start with a number.
    #[error("threshold {expression:?}: {value:?} is not a number with an optional unit (e.g. 50ms, 2.5KB/s, 1%)")]
    BadNumber {
        /// The whole expression.
        expression: String,
        /// The right side as written.
        value: String,
    },
    /// The unit does not fit the metric.
    #[error("threshold {expression:?}: {metric} takes {accepted}, not {unit:?}")]
    BadUnit {
        /// The whole expression.
        expression: String,
        /// The metric.
        metric: String,
        /// The unit as written.
        unit: String,
        /// What the metric accepts.
        accepted: String,
    },
}

/// Thresholds a run violated; its message lists them with the actual figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} threshold(s) violated: {}", .0.len(), .0.join("; "))]
pub struct ThresholdsViolated(pub Vec<String>);

/// A parsed threshold; its value is in the metric's base unit (ms, B/s, 0-1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The expression as written.
    pub expression: String,
    /// The metric it checks.
    pub metric: String,
    /// The comparison.
    pub op: Comparison,
    /// The limit in the metric's base unit.
    pub value: f64,
}

/// The verdict on one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdOutcome {
    /// The threshold.
    pub threshold: Threshold,
    /// The run's figure, in the metric's base unit; `None` when the run has no data for it.
    pub actual: Option<f64>,
    /// Whether it held (false without data).
    pub passed: bool,
}

impl ThresholdOutcome {
    /// Checks `threshold` against `actual`.
    pub fn check(threshold: &Threshold, actual: Option<f64>) -> Self {
        let passed = actual.is_some_and(|actual| actual.is_finite() && threshold.op.holds(actual, threshold.value));
        Self { threshold: threshold.clone(), actual, passed }
    }
}

impl Threshold {
    /// Parses `expression` against the metrics in `catalog`.
    pub fn parse(expression: &str, catalog: &[MetricInfo]) -> Result<Self, ThresholdError> {
        let text = expression.trim();
        if text.is_empty() {
            return Err(ThresholdError::Empty);
        }
        let (at, op, op_len) = find_operator(text).ok_or_else(|| ThresholdError::NoOperator(text.to_owned()))?;
        let metric = text[..at].trim();
        let value_text = text[at + op_len..].trim();
        let Some(info) = catalog.iter().find(|info| info.name == metric) else {
            return Err(ThresholdError::UnknownMetric {
                expression: text.to_owned(),
                metric: metric.to_owned(),
                hint: suggestions(metric, catalog),
            });
        };
        let split = value_text
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == '_'))
            .map_or(value_text.len(), |(idx, _)| idx);
        let (number, unit) = value_text.split_at(split);
        let bad_number = || ThresholdError::BadNumber { expression: text.to_owned(), value: value_text.to_owned() };
        let number: f64 = number.replace('_', "").parse().map_err(|_| bad_number())?;
        if !number.is_finite() {
            return Err(bad_number());
        }
        let unit = unit.trim();
        let scale = unit_scale(info.kind, unit).ok_or_else(|| ThresholdError::BadUnit {
            expression: text.to_owned(),
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            accepted: info.kind.accepted_units().to_owned(),
        })?;
        Ok(Self { expression: text.to_owned(), metric: metric.to_owned(), op, value: number * scale })
    }
}

/// The first comparison operator: its byte offset, the operator and its length.
fn find_operator(text: &str) -> Option<(usize, Comparison, usize)> {
    let bytes = text.as_bytes();
    for (idx, &byte) in bytes.iter().enumerate() {
        let next = bytes.get(idx + 1).copied();
        let found = match (byte, next) {
            (b'<', Some(b'=')) => Some((Comparison::Le, 2)),
            (b'>', Some(b'=')) => Some((Comparison::Ge, 2)),
            (b'=', Some(b'=')) => Some((Comparison::Eq, 2)),
            (b'!', Some(b'=')) => Some((Comparison::Ne, 2)),
            (b'<', _) => Some((Comparison::Lt, 1)),
            (b'>', _) => Some((Comparison::Gt, 1)),
            // A single `=` is read as `==`: nobody means assignment here.
            (b'=', _) => Some((Comparison::Eq, 1)),
            _ => None,
        };
        if let Some((op, len)) = found {
            return Some((idx, op, len));
        }
    }
    None
}

/// How many base units one `unit` is, for a metric of `kind`.
fn unit_scale(kind: MetricKind, unit: &str) -> Option<f64> {
    let unit = unit.to_ascii_lowercase();
    match kind {
        MetricKind::Millis => match unit.as_str() {
            "" | "ms" => Some(1.0),
            "us" | "µs" => Some(1e-3),
            "s" => Some(1e3),
            "m" | "min" => Some(60e3),
            _ => None,
        },
        MetricKind::Count | MetricKind::Ratio => unit.is_empty().then_some(1.0),
        MetricKind::Fraction => match unit.as_str() {
            "" => Some(1.0),
            "%" => Some(0.01),
            _ => None,
        },
        MetricKind::BytesPerSec => byte_scale(unit.trim_end_matches("/s")),
        MetricKind::Bytes => byte_scale(&unit),
    }
}

fn byte_scale(unit: &str) -> Option<f64> {
    match unit {
        "" | "b" => Some(1.0),
        "kb" => Some(1e3),
        "kib" => Some(1024.0),
        "mb" => Some(1e6),
        "mib" => Some(1024.0 * 1024.0),
        _ => None,
    }
}

/// `; did you mean a, b?` for names sharing a prefix with `metric`, or nothing.
fn suggestions(metric: &str, catalog: &[MetricInfo]) -> String {
    let stem = metric.split('_').next().unwrap_or(metric);
    let close: Vec<&str> = catalog
        .iter()
        .map(|info| info.name.as_str())
        .filter(|name| {
            !stem.is_empty() && (name.starts_with(stem) || metric.starts_with(name.split('_').next().unwrap_or(name)))
        })
        .take(6)
        .collect();
    if close.is_empty() { String::new() } else { format!("; did you mean {}?", close.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<MetricInfo> {
        [
            ("rtt_p99", MetricKind::Millis),
            ("errors", MetricKind::Count),
            ("loss", MetricKind::Fraction),
            ("bytes_in_per_client", MetricKind::BytesPerSec),
        ]
        .into_iter()
        .map(|(name, kind)| MetricInfo { name: name.into(), kind, help: String::new() })
        .collect()
    }

    #[test]
    fn expressions_parse_with_units() {
        let catalog = catalog();
        let parse = |text: &str| Threshold::parse(text, &catalog).unwrap();
        assert_eq!(parse("rtt_p99<50ms").value, 50.0);
        assert_eq!(parse(" rtt_p99 <= 0.5 s ").value, 500.0);
        assert_eq!(parse("rtt_p99<250us").value, 0.25);
        assert_eq!(parse("rtt_p99<50").value, 50.0);
        assert_eq!(parse("errors==0").op, Comparison::Eq);
        assert_eq!(parse("errors=0").op, Comparison::Eq);
        assert_eq!(parse("errors != 3").op, Comparison::Ne);
        assert_eq!(parse("loss<1%").value, 0.01);
        assert_eq!(parse("bytes_in_per_client<2.5KB/s").value, 2500.0);
        assert_eq!(parse("bytes_in_per_client>=1_000").value, 1000.0);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let catalog = catalog();
        let parse = |text: &str| Threshold::parse(text, &catalog).unwrap_err();
        assert_eq!(parse("  "), ThresholdError::Empty);
        assert!(matches!(parse("rtt_p99 50ms"), ThresholdError::NoOperator(_)));
        let unknown = parse("rtt_p98<50ms");
        assert!(unknown.to_string().contains("did you mean rtt_p99"), "{unknown}");
        assert!(matches!(parse("rtt_p99<fast"), ThresholdError::BadNumber { .. }));
        assert!(matches!(parse("rtt_p99<"), ThresholdError::BadNumber { .. }));
        assert!(matches!(parse("rtt_p99<50kg"), ThresholdError::BadUnit { .. }));
        assert!(matches!(parse("errors<5ms"), ThresholdError::BadUnit { .. }));
        assert!(parse("errors<5ms").to_string().contains("no unit"));
    }

    #[test]
    fn comparisons_and_missing_data() {
        let catalog = catalog();
        let threshold = Threshold::parse("rtt_p99<50ms", &catalog).unwrap();
        assert!(ThresholdOutcome::check(&threshold, Some(49.9)).passed);
        assert!(!ThresholdOutcome::check(&threshold, Some(50.0)).passed);
        assert!(!ThresholdOutcome::check(&threshold, None).passed);
        assert!(!ThresholdOutcome::check(&threshold, Some(f64::NAN)).passed);
        let at_most = Threshold::parse("rtt_p99<=50ms", &catalog).unwrap();
        assert!(ThresholdOutcome::check(&at_most, Some(50.0)).passed);
        let zero = Threshold::parse("errors==0", &catalog).unwrap();
        assert!(ThresholdOutcome::check(&zero, Some(0.0)).passed);
        assert!(!ThresholdOutcome::check(&zero, Some(1.0)).passed);
    }
}
