//! Scraping a Prometheus text endpoint and reading counters and histograms from it.
//!
//! The shard's exporter renders `*_seconds` metrics as histograms (cumulative
//! `_bucket{le=".."}` lines) because it configures buckets for them; a summary's
//! quantiles would cover the whole process lifetime, while bucket counts can be
//! subtracted to get the distribution of one measurement window.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample line: metric name, its label block (without braces) and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: String,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    samples: Vec<Sample>,
}

impl MetricsSnapshot {
    /// Parses Prometheus text exposition format. Comments and lines that do not
    /// parse are skipped: a scrape is diagnostics, not input to trust.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    other => other.parse().ok()?,
                };
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                Some(Sample { name: name.to_owned(), labels: labels.to_owned(), value })
            })
            .collect();
        Self { samples }
    }

    /// The sum of every series named `name` (0 when absent: counters appear on first use).
    pub fn value(&self, name: &str) -> f64 {
        self.samples.iter().filter(|sample| sample.name == name).map(|sample| sample.value).sum()
    }

    /// The `quantile` line of summary `name` (the exporter renders histograms
    /// without configured buckets as summaries over a rolling window).
    pub fn summary_quantile(&self, name: &str, quantile: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|sample| sample.name == name && label(&sample.labels, "quantile") == Some(quantile))
            .map(|sample| sample.value)
            .filter(|value| value.is_finite())
    }

    /// The cumulative buckets of histogram `name` as `(upper bound, count)`, sorted by bound.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket_name = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|sample| sample.name == bucket_name)
            .filter_map(|sample| {
                let le = label(&sample.labels, "le")?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((bound, sample.value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Bucket counts observed between two scrapes of the same histogram.
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(bound, count)| {
            let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0.0, |(_, c)| *c);
            (bound, count - earlier)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside the
/// bucket it falls in (the usual `histogram_quantile`). `None` without samples.
/// A quantile in the `+Inf` bucket is reported as the largest finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let fraction = if in_bucket > 0.0 { (rank - lower.1) / in_bucket } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// The fraction of observations at or below `bound`, which must be a bucket bound.
pub fn fraction_at_most(buckets: &[(f64, f64)], bound: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    let at = buckets.iter().find(|(b, _)| (*b - bound).abs() < 1e-12)?.1;
    (total > 0.0).then(|| at / total)
}

/// GETs `http://addr/metrics` over plain HTTP/1.1 and parses it.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<MetricsSnapshot> {
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to metrics at {addr}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").context("no end of HTTP headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics endpoint answered {:?}", head.lines().next().unwrap_or_default());
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("chunked metrics responses are not supported");
    }
    Ok(MetricsSnapshot::parse(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE rally_shard_late_ticks_total counter\n\
        rally_shard_late_ticks_total 3\n\
        rally_shard_disconnects_total{reason=\"a\"} 2\n\
        rally_shard_disconnects_total{reason=\"b\"} 5\n\
        # TYPE rally_shard_tick_seconds histogram\n\
        rally_shard_tick_seconds_bucket{le=\"0.001\"} 50\n\
        rally_shard_tick_seconds_bucket{le=\"0.002\"} 90\n\
        rally_shard_tick_seconds_bucket{le=\"0.004\"} 100\n\
        rally_shard_tick_seconds_bucket{le=\"+Inf\"} 100\n\
        rally_shard_tick_seconds_sum 0.1\n\
        rally_shard_tick_seconds_count 100\n\
        rally_shard_input_reflect_ticks{quantile=\"0.99\"} 2\n";

    #[test]
    fn counters_histograms_and_quantiles() {
        let snapshot = MetricsSnapshot::parse(TEXT);
        assert_eq!(snapshot.value("rally_shard_late_ticks_total"), 3.0);
        assert_eq!(snapshot.value("rally_shard_disconnects_total"), 7.0);
        assert_eq!(snapshot.value("rally_shard_missing_total"), 0.0);
        assert_eq!(snapshot.summary_quantile("rally_shard_input_reflect_ticks", "0.99"), Some(2.0));
        assert_eq!(snapshot.summary_quantile("rally_shard_input_reflect_ticks", "0.5"), None);
        let buckets = snapshot.buckets("rally_shard_tick_seconds");
        assert_eq!(buckets.len(), 4);
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!((p99 - 0.0038).abs() < 1e-9, "{p99}");
        assert_eq!(fraction_at_most(&buckets, 0.004), Some(1.0));

        // 50 ticks earlier, all within 1 ms: the window holds 40 in (1, 2] ms and 10 in (2, 4] ms.
        let earlier = MetricsSnapshot::parse(
            &["0.001", "0.002", "0.004", "+Inf"]
                .map(|le| format!("rally_shard_tick_seconds_bucket{{le=\"{le}\"}} 50\n"))
                .concat(),
        );
        let window = bucket_delta(&earlier.buckets("rally_shard_tick_seconds"), &buckets);
        assert_eq!(window[0], (0.001, 0.0));
        let p50 = quantile(&window, 0.5).unwrap();
        assert!((p50 - 0.001625).abs() < 1e-12, "{p50}");
        assert_eq!(fraction_at_most(&window, 0.002), Some(0.8));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
