//! Logging in without a password: through an identity provider the lobby is
//! configured with (`--login-with`), or as a guest (`--guest`). Both end in
//! the lobby's `LoginResponse`, whose token pair a [`PlayerClient`] is built from.
//!
//! A provider login tries the device flow first (RFC 8628: the terminal shows
//! a code to enter at the provider), and falls back to a browser redirect to
//! a one-shot listener on loopback (RFC 8252) when the provider has no device
//! endpoint. A guest's only credential is a random device secret, kept in a
//! 0600 file in the state directory and created on first use.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use rally_lobby::proto::auth::{
    FinishLoginRequest, LoginGuestRequest, LoginResponse, PollDeviceLoginRequest, StartDeviceLoginRequest,
    StartLoginRequest, auth_client::AuthClient, poll_device_login_response::Outcome,
};
use rally_matchmaker::player::{self, PlayerClient, Replicas};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::app::NetEvent;
use super::net::{PlayArgs, status_text};

/// The longest PollDeviceLogin may wait for the approval (the lobby's limit).
const DEVICE_WAIT_MS: u32 = 20_000;
/// The guest's device secret: 43 URL-safe characters (256 bits).
const GUEST_SECRET_LEN: usize = 43;
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// The file, in the state directory, that holds the guest's device secret.
pub const GUEST_SECRET_FILE: &str = "guest-secret";
/// The most of a redirect request the loopback listener reads.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long one connection to the loopback listener may take to send its request.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How `rally play` logs in without the login form (apart from
/// [`PlayArgs`], which tests build field by field).
#[derive(Clone, Debug, Default, Args)]
pub struct LoginArgs {
    /// Log in through this identity provider of the lobby's (as `rally lobby --oidc`/`--oauth2` named it)
    /// instead of with a password: the screen shows a code to enter at the provider, or, for a provider
    /// without the device flow, a URL to open in a browser. The first login creates an account.
    #[arg(long, value_name = "PROVIDER", conflicts_with = "guest")]
    pub login_with: Option<String>,
    /// Quick play as a guest, no account needed: the first run creates a guest account, later runs log
    /// in to it again with the device secret kept in guest-secret in the state directory (see
    /// --state-dir); losing that file loses the account.
    #[arg(long)]
    pub guest: bool,
    /// With --login-with, do not try to open the provider's page in a browser (xdg-open or open); only
    /// show its URL.
    #[arg(long)]
    pub no_browser: bool,
}

impl LoginArgs {
    /// Whether these flags log in by themselves (the login form is then not needed).
    pub fn logs_in(&self) -> bool {
        self.login_with.is_some() || self.guest
    }
}

/// Logs in as `login` says, reporting on `events` what the person must do.
pub(super) async fn external_login(
    args: PlayArgs,
    login: LoginArgs,
    events: mpsc::UnboundedSender<NetEvent>,
) -> Result<PlayerClient, String> {
    let replicas = |urls: &str| player::Endpoints::parse(urls).and_then(|endpoints| endpoints.lazy());
    let lobby = replicas(&args.lobby).map_err(|err| format!("{err:#}"))?;
    let matchmaker = replicas(&args.matchmaker).map_err(|err| format!("{err:#}"))?;
    let response = match &login.login_with {
        Some(provider) => provider_login(&lobby, provider, login.no_browser, &events).await?,
        None => {
            let dir = args.state_dir.clone().or_else(super::seat_file::SeatFile::default_dir).ok_or(
                "guest login: no state directory for the guest's secret (set --state-dir, XDG_STATE_HOME or HOME)",
            )?;
            let device_secret = guest_secret(&dir).map_err(|err| format!("guest login: {err:#}"))?;
            let request = LoginGuestRequest { device_secret };
            lobby
                .call(each_replica_once(&lobby), "guest login", |channel| {
                    let request = request.clone();
                    async move { Ok(AuthClient::new(channel).login_guest(request).await?.into_inner()) }
                })
                .await
                .map_err(|status| status_text("guest login", &status))?
        }
    };
    let LoginResponse { account: Some(account), tokens: Some(tokens), .. } = response else {
        return Err("log in: the lobby's answer has no account or no tokens".to_owned());
    };
    Ok(PlayerClient::from_tokens(lobby, matchmaker, account, tokens))
}

fn each_replica_once(replicas: &Replicas) -> player::RetryPolicy {
    player::RetryPolicy {
        max_attempts: Some(u32::try_from(replicas.len()).unwrap_or(u32::MAX)),
        ..player::RetryPolicy::default()
    }
}

/// The device flow at `provider`, or the loopback redirect when it has no device endpoint.
async fn provider_login(
    lobby: &Replicas,
    provider: &str,
    no_browser: bool,
    events: &mpsc::UnboundedSender<NetEvent>,
) -> Result<LoginResponse, String> {
    let what = format!("log in with {provider}");
    let request = StartDeviceLoginRequest { provider: provider.to_owned(), link: false };
    let started = lobby
        .call(each_replica_once(lobby), "start device login", |channel| {
            let request = request.clone();
            async move { Ok(AuthClient::new(channel).start_device_login(request).await?.into_inner()) }
        })
        .await;
    let started = match started {
        Ok(started) => started,
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            return browser_login(lobby, provider, no_browser, events).await;
        }
        Err(status) => return Err(status_text(&what, &status)),
    };
    let _ = events.send(NetEvent::DeviceCode {
        verification_uri: started.verification_uri,
        user_code: started.user_code,
        verification_uri_complete: started.verification_uri_complete,
        expires_at_ms: started.expires_at_ms,
    });
    let request = PollDeviceLoginRequest { attempt: started.attempt, wait_ms: DEVICE_WAIT_MS };
    loop {
        let polled = lobby
            .call(each_replica_once(lobby), "poll device login", |channel| {
                let request = request.clone();
                async move { Ok(AuthClient::new(channel).poll_device_login(request).await?.into_inner()) }
            })
            .await
            .map_err(|status| status_text(&what, &status))?;
        match polled.outcome {
            Some(Outcome::Login(login)) => return Ok(login),
            // The lobby waited DEVICE_WAIT_MS already; the provider asks for no
            // poll sooner than its interval after the last one.
            Some(Outcome::Pending(pending)) => {
                tokio::time::sleep(Duration::from_millis(u64::from(pending.interval_ms))).await;
            }
            None => return Err(format!("{what}: the lobby answered neither pending nor a login")),
        }
    }
}

/// The authorization-code flow with a redirect to a listener of ours on loopback.
async fn browser_login(
    lobby: &Replicas,
    provider: &str,
    no_browser: bool,
    events: &mpsc::UnboundedSender<NetEvent>,
) -> Result<LoginResponse, String> {
    let what = format!("log in with {provider}");
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|err| format!("{what}: cannot listen on loopback for the browser's redirect: {err}"))?;
    let port = listener.local_addr().map_err(|err| format!("{what}: {err}"))?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let request = StartLoginRequest { provider: provider.to_owned(), redirect_uri: redirect_uri.clone(), link: false };
    let started = lobby
        .call(each_replica_once(lobby), "start login", |channel| {
            let request = request.clone();
            async move { Ok(AuthClient::new(channel).start_login(request).await?.into_inner()) }
        })
        .await
        .map_err(|status| status_text(&what, &status))?;
    let _ = events.send(NetEvent::OpenBrowser { url: started.authorization_url.clone() });
    if !no_browser {
        open_in_browser(&started.authorization_url);
    }
    let left_ms = started.expires_at_ms.saturating_sub(now_ms()).max(0);
    let wait = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    let redirect = tokio::time::timeout(wait, accept_redirect(&listener, &started.state))
        .await
        .map_err(|_| format!("{what}: the browser did not come back before the login expired; start again"))?
        .map_err(|err| format!("{what}: {err}"))?;
    let request = FinishLoginRequest { state: started.state, code: redirect, redirect_uri };
    lobby
        .call(each_replica_once(lobby), "finish login", |channel| {
            let request = request.clone();
            async move { Ok(AuthClient::new(channel).finish_login(request).await?.into_inner()) }
        })
        .await
        .map_err(|status| status_text(&what, &status))
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Hands `url` to the desktop's browser, if there is an opener; failing is
/// fine, the URL is on screen.
fn open_in_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reaped on a thread of its own, so no zombie is left behind.
        std::thread::spawn(move || child.wait());
    }
}

/// Waits for the browser's request to `/callback` and returns its code once
/// it carries `state`. Other paths (a favicon) get a 404 and are waited past;
/// the redirect itself is answered with a page saying how it went.
async fn accept_redirect(listener: &TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let target = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request_target(&mut stream)).await {
            Ok(Ok(target)) => target,
            // A connection that sends no request line (a browser's preconnect) is not the redirect.
            Ok(Err(_)) | Err(_) => continue,
        };
        let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            respond(&mut stream, "400 Bad Request", "rally: that is not a login redirect.").await;
            continue;
        };
        if url.path() != "/callback" {
            respond(&mut stream, "404 Not Found", "rally: nothing here.").await;
            continue;
        }
        let param = |name: &str| url.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned());
        let outcome = match (param("error"), param("state"), param("code")) {
            (Some(error), ..) => {
                let description = param("error_description").map_or(String::new(), |d| format!(": {d}"));
                Err(anyhow::anyhow!("the provider refused ({error}{description})"))
            }
            (None, Some(got), _) if got != state => Err(anyhow::anyhow!(
                "the browser came back with a state this login did not start (another login's redirect, or a \
                 forged one); refused, start again"
            )),
            (None, None, _) => Err(anyhow::anyhow!("the provider redirected without a state; refused")),
            (None, Some(_), None) => Err(anyhow::anyhow!("the provider redirected without a code")),
            (None, Some(_), Some(code)) => Ok(code),
        };
        match &outcome {
            Ok(_) => {
                respond(&mut stream, "200 OK", "rally: signed in. You can close this tab and go back to the terminal.")
                    .await;
            }
            Err(_) => {
                respond(
                    &mut stream,
                    "200 OK",
                    "rally: the login failed; the terminal says why. You can close this tab.",
                )
                .await;
            }
        }
        return outcome;
    }
}

/// Reads an HTTP/1.1 request's head and returns its request line's target
/// (`/callback?code=…`).
async fn read_request_target(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the connection closed before the request's end");
        head.extend_from_slice(&buf[..n]);
        anyhow::ensure!(head.len() <= MAX_REQUEST_BYTES, "the request is too long");
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(version)) if version.starts_with("HTTP/1.") && target.starts_with('/') => {
            Ok(target.to_owned())
        }
        _ => anyhow::bail!("not a GET request: {line:?}"),
    }
}

/// A short HTML page saying `text`, and the connection closed.
async fn respond(stream: &mut TcpStream, status: &str, text: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rally</title></head><body><p>{text}</p></body></html>\n"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser going away first is its business; the login goes on.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The guest's device secret in `dir`, created (0600) on first use.
pub fn guest_secret(dir: &Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = dir.join(GUEST_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => return checked_secret(&path, text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = new_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(format!("{secret}\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            file.sync_all().with_context(|| format!("writing {}", path.display()))?;
            Ok(secret)
        }
        // Another `rally play` created it first: use theirs, so both are one guest.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            checked_secret(&path, text)
        }
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

/// A stored secret, checked rather than replaced: a new one would be a new
/// guest, and the old account would be lost.
fn checked_secret(path: &Path, text: String) -> anyhow::Result<String> {
    let secret = text.trim();
    let printable = secret.bytes().all(|byte| (0x21..=0x7e).contains(&byte));
    anyhow::ensure!(
        printable && (32..=256).contains(&secret.len()),
        "{} does not hold a guest secret (32 to 256 printable ASCII characters); move it away to start a new guest",
        path.display()
    );
    Ok(secret.to_owned())
}

fn new_secret() -> String {
    use rand::Rng as _;
    let mut rng = rand::rngs::OsRng;
    (0..GUEST_SECRET_LEN).map(|_| char::from(URL_SAFE[rng.gen_range(0..URL_SAFE.len())])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_secret_is_made_once_readable_by_the_user_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = guest_secret(&state).unwrap();
        assert_eq!(first.len(), GUEST_SECRET_LEN);
        assert!(first.bytes().all(|byte| URL_SAFE.contains(&byte)), "{first}");
        assert_eq!(guest_secret(&state).unwrap(), first, "the same guest on every run");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(state.join(GUEST_SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by the user only: {mode:o}");
        }
        std::fs::write(state.join(GUEST_SECRET_FILE), "short").unwrap();
        let refused = guest_secret(&state).unwrap_err().to_string();
        assert!(refused.contains("does not hold a guest secret"), "{refused}");
    }
}
