//! `rally health`: one probe of a running role, for the image's `HEALTHCHECK`
//! and scripts. It asks either the role's ops endpoint over HTTP (healthy on a
//! 2xx answer, e.g. `/readyz`, which turns 503 while a role drains) or its
//! gRPC port's standard `grpc.health.v1.Health/Check` (healthy on `SERVING`),
//! the same question a Kubernetes `grpc` probe asks. Exit status 0 when
//! healthy, 1 with a one-line reason otherwise.
//!
//! It needs no shell, curl or grpc_health_probe in the image: the binary that
//! runs the role probes it.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Uri;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The most of an HTTP answer read: the status line is all the probe needs,
/// and a body is never buffered whole.
const MAX_HTTP_HEAD_BYTES: usize = 16 * 1024;

/// `rally health` flags.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// What to probe: `http://HOST:PORT/PATH` (a GET, healthy on a 2xx status:
    /// a role's `/readyz` or `/healthz`) or `grpc://HOST:PORT` (the
    /// grpc.health.v1 Check of the lobby's or matchmaker's gRPC port, healthy
    /// when SERVING).
    #[arg(default_value = "http://127.0.0.1:9600/readyz", env = "RALLY_HEALTH_URL")]
    pub target: String,
    /// The gRPC service whose health to ask (with `grpc://`), e.g.
    /// `rally.auth.v1.Auth`; empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds the whole probe (connect, ask, answer) may take before it counts as unhealthy.
    #[arg(long, default_value_t = 3.0, value_parser = parse_timeout)]
    pub timeout: f64,
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        _ => Err(format!("{text:?} is not a number of seconds above 0 and at most 3600")),
    }
}

/// What one probe asks, parsed from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// GET `path` from `authority` (`host:port`) over HTTP/1.1.
    Http { authority: String, path: String },
    /// grpc.health.v1 Check at `authority`.
    Grpc { authority: String },
}

impl Probe {
    fn parse(target: &str) -> anyhow::Result<Self> {
        let uri: Uri = target.parse().with_context(|| format!("{target:?} is not a URL"))?;
        let authority = uri
            .authority()
            .with_context(|| format!("{target:?} names no host: write http://HOST:PORT/PATH or grpc://HOST:PORT"))?;
        if authority.port_u16().is_none() {
            bail!("{target:?} names no port: write http://HOST:PORT/PATH or grpc://HOST:PORT");
        }
        if authority.as_str().contains('@') {
            bail!("{target:?} carries credentials; the probe sends none");
        }
        let authority = authority.as_str().to_owned();
        match uri.scheme_str() {
            Some("http") => {
                let path = uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();
                Ok(Self::Http { authority, path })
            }
            Some("grpc") => {
                if !matches!(uri.path(), "" | "/") {
                    bail!("{target:?}: a gRPC target is grpc://HOST:PORT, without a path (use --service)");
                }
                Ok(Self::Grpc { authority })
            }
            _ => bail!("{target:?}: the probe speaks http:// (an ops endpoint) or grpc:// (grpc.health.v1)"),
        }
    }
}

/// Probes once; `Ok` with a line for people when healthy.
pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let probe = Probe::parse(&args.target)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let answer = runtime.block_on(async {
        let asked = async {
            match &probe {
                Probe::Http { authority, path } => http_get(authority, path).await,
                Probe::Grpc { authority } => grpc_check(authority, &args.service, timeout).await,
            }
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(answer) => answer,
            Err(_) => bail!("no answer within {} s (--timeout)", args.timeout),
        }
    });
    let line = answer.with_context(|| format!("{} is unhealthy", args.target))?;
    println!("{} is healthy: {line}", args.target);
    Ok(())
}

/// One GET; the status line's code and reason when it is 2xx.
async fn http_get(authority: &str, path: &str) -> anyhow::Result<String> {
    let mut stream =
        tokio::net::TcpStream::connect(authority).await.with_context(|| format!("connecting to {authority}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: rally-health/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).await.context("sending the request")?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let status_line = loop {
        if let Some(end) = head.windows(2).position(|pair| pair == b"\r\n") {
            break String::from_utf8_lossy(&head[..end]).into_owned();
        }
        if head.len() >= MAX_HTTP_HEAD_BYTES {
            bail!("no HTTP status line in the first {MAX_HTTP_HEAD_BYTES} bytes of the answer");
        }
        let n = stream.read(&mut buf).await.context("reading the answer")?;
        if n == 0 {
            bail!("the connection closed before an HTTP status line (is it an HTTP/1 endpoint?)");
        }
        head.extend_from_slice(&buf[..n]);
    };
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reason = parts.next().unwrap_or("").trim();
    let printable: String = status_line.chars().take(80).collect();
    if !version.starts_with("HTTP/1.") {
        bail!("the answer is not HTTP/1: {printable:?}");
    }
    let code: u16 = code
        .parse()
        .ok()
        .filter(|code| (100..600).contains(code))
        .with_context(|| format!("bad HTTP status line {printable:?}"))?;
    let said = format!("HTTP {code} {reason}");
    if !(200..300).contains(&code) {
        bail!("{said} (healthy is 2xx)");
    }
    Ok(said)
}

/// One grpc.health.v1 Check; the status name when it is SERVING.
async fn grpc_check(authority: &str, service: &str, timeout: Duration) -> anyhow::Result<String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .with_context(|| format!("{authority:?} is not a gRPC address"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {authority}"))?;
    let request = HealthCheckRequest { service: service.to_owned() };
    let answer = HealthClient::new(channel).check(request).await.map_err(|status| {
        let what = if service.is_empty() { "the server".to_owned() } else { format!("service {service:?}") };
        anyhow::anyhow!("grpc.health.v1 Check of {what}: {:?}: {}", status.code(), status.message())
    })?;
    let status = ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown);
    if status != ServingStatus::Serving {
        bail!("{} (healthy is SERVING)", status.as_str_name());
    }
    Ok(status.as_str_name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_into_probes_and_bad_ones_say_why() {
        assert_eq!(
            Probe::parse("http://127.0.0.1:9600/readyz").expect("http"),
            Probe::Http { authority: "127.0.0.1:9600".into(), path: "/readyz".into() }
        );
        assert_eq!(
            Probe::parse("http://lobby:9600").expect("no path"),
            Probe::Http { authority: "lobby:9600".into(), path: "/".into() }
        );
        assert_eq!(Probe::parse("grpc://[::1]:7100").expect("grpc"), Probe::Grpc { authority: "[::1]:7100".into() });
        for (bad, says) in [
            ("ftp://127.0.0.1:21/", "speaks http://"),
            ("127.0.0.1:9600", "speaks http://"),
            ("http:///readyz", "not a URL"),
            ("http://127.0.0.1/readyz", "names no port"),
            ("grpc://127.0.0.1:7100/rally.auth.v1.Auth", "without a path"),
            ("http://user:pw@127.0.0.1:9600/", "credentials"),
            ("http://exa mple:1/", "not a URL"),
            ("", "not a URL"),
        ] {
            let err = Probe::parse(bad).expect_err(bad);
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "1e9", "soon"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
