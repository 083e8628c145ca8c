//! `rally play` logs in without a password, driven headless through its own
//! loop against an in-process lobby (SQLite) and the real test OpenID
//! provider (lobby/tests/oidc-provider): the device flow, the loopback
//! redirect for a provider without one, and a guest that keeps its account
//! across runs. No matchmaker is needed to reach the home screen.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

#[path = "../lobby/tests/common/oidc.rs"]
mod oidc;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use oidc::{Browser, OidcProvider};
use rally::play::app::{App, LoginPrompt, NetEvent};
use rally::play::login::{GUEST_SECRET_FILE, LoginArgs};
use rally::play::net::{PlayArgs, TournamentPlayArgs};
use rally_lobby::limits::LobbyLimitsConfig;
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig, LobbyHandle, ProviderConfig};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio::sync::mpsc;

/// A lobby on a fresh SQLite file with `providers`, and the file's directory.
async fn lobby_with(providers: Vec<ProviderConfig>) -> (LobbyHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let keys = AccessSigningKeys::from(AccessSigningKey::from_seed([7; 32]));
    let mut config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), &url, keys);
    // Cheap hashes keep the test fast; the production costs are the defaults.
    config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    config.limits = LobbyLimitsConfig::default();
    config.identity.providers = providers;
    (rally_lobby::serve(config).await.unwrap(), dir)
}

/// `rally play` against `lobby`, its state in `state_dir`, logging in as `login` says.
struct Play {
    app: App,
    terminal: Terminal<TestBackend>,
    // Never sent on: the test types nothing, the flags log in.
    _keys: mpsc::UnboundedSender<ratatui::crossterm::event::KeyEvent>,
    key_rx: mpsc::UnboundedReceiver<ratatui::crossterm::event::KeyEvent>,
    events: mpsc::UnboundedReceiver<NetEvent>,
    commands: mpsc::UnboundedSender<rally::play::app::Command>,
    net: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Play {
    /// `width` columns: wide enough for the URL the test reads off the screen.
    fn start(lobby: &LobbyHandle, state_dir: &Path, login: LoginArgs, width: u16) -> Play {
        let args = PlayArgs {
            lobby: format!("http://{}", lobby.local_addr()),
            // Logging in and the home screen need the lobby only; nothing here queues.
            matchmaker: "http://127.0.0.1:9".into(),
            mode: "pong".into(),
            bot_mode: "pong-bot".into(),
            transport: rally_client::TransportKind::Quic,
            shard_udp: "127.0.0.1:9".parse().unwrap(),
            state_dir: Some(state_dir.to_owned()),
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let net = tokio::spawn(rally::play::net::run_with_login(
            args,
            TournamentPlayArgs::default(),
            login,
            command_rx,
            event_tx,
        ));
        let (keys, key_rx) = mpsc::unbounded_channel();
        let terminal = Terminal::new(TestBackend::new(width, 30)).unwrap();
        Play { app: App::new(), terminal, _keys: keys, key_rx, events, commands, net }
    }

    /// Runs the loop until `done`, within `seconds`, then draws the screen as it is then.
    async fn until(&mut self, seconds: u64, done: impl FnMut(&App) -> bool) {
        let drive = rally::play::drive(
            &mut self.app,
            &mut self.terminal,
            &mut self.key_rx,
            &mut self.events,
            &self.commands,
            done,
        );
        match tokio::time::timeout(Duration::from_secs(seconds), drive).await {
            Ok(driven) => driven.unwrap(),
            Err(_) => panic!(
                "the play loop did not reach its goal in {seconds} s: screen {}, status {:?}",
                self.app.screen_name(),
                self.app.status()
            ),
        }
        // `done` is asked before the next frame: draw the state it saw.
        let app = &self.app;
        self.terminal.draw(|frame| app.draw(frame, Instant::now())).unwrap();
    }

    /// The screen's rows, right-trimmed.
    fn screen(&self) -> Vec<String> {
        let buffer = self.terminal.backend().buffer();
        let width = usize::from(buffer.area.width);
        let cells: Vec<&str> = buffer.content.iter().map(|cell| cell.symbol()).collect();
        cells.chunks(width).map(|row| row.concat().trim_end().to_owned()).collect()
    }

    /// The row's text inside the login box's border, for a row containing `needle`.
    fn row_with(&self, needle: &str) -> String {
        let screen = self.screen();
        let row = screen
            .iter()
            .find(|row| row.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} is not on the screen:\n{}", screen.join("\n")));
        row.trim_matches(|c: char| c == '│' || c.is_whitespace()).to_owned()
    }

    fn stop(self) {
        drop(self.commands);
        self.net.abort();
    }
}

/// The authorization URL's redirect URI: rally play's listener (the provider is on 127.0.0.1 too).
fn redirect_uri(authorization_url: &str) -> String {
    let url = url::Url::parse(authorization_url).unwrap();
    let (_, uri) = url.query_pairs().find(|(key, _)| key == "redirect_uri").unwrap();
    assert!(uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"), "a loopback redirect: {uri}");
    uri.into_owned()
}

fn provider_login(provider: &str) -> LoginArgs {
    LoginArgs { login_with: Some(provider.to_owned()), guest: false, no_browser: true }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rally_play_logs_in_through_the_oidc_device_flow() {
    let provider = OidcProvider::start().await;
    let spec =
        format!("test={},{},redirect-uri={}", provider.issuer(), oidc::PUBLIC_CLIENT, oidc::LOOPBACK_REDIRECT_URI);
    let (lobby, _db) = lobby_with(vec![ProviderConfig::parse_oidc(&spec).unwrap()]).await;
    let state = tempfile::tempdir().unwrap();
    let mut play = Play::start(&lobby, state.path(), provider_login("test"), 100);

    play.until(30, |app| matches!(app.login_prompt(), Some(LoginPrompt::Device { .. }))).await;
    assert_eq!(play.app.screen_name(), "login");
    // What a person reads: "Open URI and enter CODE", and the URI with the code filled in.
    let line = play.row_with("and enter ");
    let (open, code) = line.rsplit_once(" and enter ").unwrap();
    let verification_uri = open.strip_prefix("Open ").unwrap();
    assert!(verification_uri.starts_with(provider.issuer()), "{line:?}");
    let Some(LoginPrompt::Device { user_code, verification_uri_complete, .. }) = play.app.login_prompt().cloned()
    else {
        unreachable!("the loop stopped at a device prompt")
    };
    assert_eq!(code, user_code, "the user code is drawn as the provider gave it");
    let complete = play.row_with("user_code=");
    assert_eq!(complete, verification_uri_complete);
    assert!(play.row_with("expires in").starts_with("The code expires in 9 min"), "ten minutes from now");

    Browser::new().approve_device(&complete, "pat").await;
    // PollDeviceLogin waits for the approval (up to 20 s a call) and comes back with it.
    play.until(60, |app| app.screen_name() == "home").await;
    let (player_id, username) = play.app.account().unwrap();
    assert_eq!(username, "pat", "named after the provider's preferred_username");
    assert!(player_id > 0);
    assert!(play.row_with("Player: ").ends_with("Player: pat"));
    assert_eq!(play.app.login_prompt(), None);
    play.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rally_play_logs_in_through_an_oauth2_provider_by_a_loopback_redirect() {
    let provider = OidcProvider::start().await;
    // No device-url: StartDeviceLogin answers FAILED_PRECONDITION, so rally play
    // listens on loopback for the browser's redirect instead.
    let spec = format!(
        "plain={},{},{},{},id-claim=sub,name-claim=preferred_username,scopes=openid+profile,redirect-uri={}",
        provider.url("/auth"),
        provider.url("/token"),
        provider.url("/me"),
        oidc::PUBLIC_CLIENT,
        oidc::LOOPBACK_REDIRECT_URI
    );
    let (lobby, _db) = lobby_with(vec![ProviderConfig::parse_oauth2(&spec).unwrap()]).await;
    let state = tempfile::tempdir().unwrap();
    let mut play = Play::start(&lobby, state.path(), provider_login("plain"), 1000);

    play.until(30, |app| matches!(app.login_prompt(), Some(LoginPrompt::Browser { .. }))).await;
    let url = play.row_with(&provider.url("/auth?"));
    assert!(url.starts_with(&provider.url("/auth?")), "the URL stands alone on its line: {url:?}");
    assert!(url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"), "a loopback redirect with a port: {url}");

    let redirected = Browser::new().sign_in(&url, "quinn", &redirect_uri(&url)).await;
    assert_eq!(redirected.error, None, "{:?}", redirected.error_description);
    assert_eq!(redirected.url.path(), "/callback");
    // The browser helper stops at the redirect; follow it, as a browser would, to rally play's listener.
    let page = reqwest::get(redirected.url.clone()).await.unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("You can close this tab"), "{body}");

    play.until(30, |app| app.screen_name() == "home").await;
    assert_eq!(play.app.account().map(|(_, name)| name.to_owned()).as_deref(), Some("quinn"));
    play.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rally_play_refuses_a_redirect_with_another_state() {
    let provider = OidcProvider::start().await;
    let spec = format!(
        "plain={},{},{},{},id-claim=sub,name-claim=preferred_username,scopes=openid+profile,redirect-uri={}",
        provider.url("/auth"),
        provider.url("/token"),
        provider.url("/me"),
        oidc::PUBLIC_CLIENT,
        oidc::LOOPBACK_REDIRECT_URI
    );
    let (lobby, _db) = lobby_with(vec![ProviderConfig::parse_oauth2(&spec).unwrap()]).await;
    let state = tempfile::tempdir().unwrap();
    let mut play = Play::start(&lobby, state.path(), provider_login("plain"), 1000);

    play.until(30, |app| matches!(app.login_prompt(), Some(LoginPrompt::Browser { .. }))).await;
    let url = play.row_with(&provider.url("/auth?"));
    let redirected = Browser::new().sign_in(&url, "mallory", &redirect_uri(&url)).await;
    let mut forged = redirected.url.clone();
    let pairs: Vec<(String, String)> = redirected
        .url
        .query_pairs()
        .map(|(key, value)| {
            let value = if key == "state" { "forged".to_owned() } else { value.into_owned() };
            (key.into_owned(), value)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let page = reqwest::get(forged).await.unwrap();
    assert!(page.text().await.unwrap().contains("the login failed"));

    play.until(30, |app| app.status().contains("state")).await;
    assert_eq!(play.app.screen_name(), "login");
    assert!(play.app.status().contains("did not start"), "{}", play.app.status());
    assert_eq!(play.app.account(), None);
    play.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rally_play_quick_play_as_a_guest_keeps_its_account() {
    let (lobby, _db) = lobby_with(Vec::new()).await;
    let state = tempfile::tempdir().unwrap();
    let guest = LoginArgs { login_with: None, guest: true, no_browser: false };

    let mut first = Play::start(&lobby, state.path(), guest.clone(), 100);
    first.until(30, |app| app.screen_name() == "home").await;
    let (player_id, username) = first.app.account().map(|(id, name)| (id, name.to_owned())).unwrap();
    assert!(username.starts_with("guest-"), "{username}");
    first.stop();

    let secret = std::fs::read_to_string(state.path().join(GUEST_SECRET_FILE)).unwrap();
    assert_eq!(secret.trim().len(), 43, "{secret:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.path().join(GUEST_SECRET_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by the user only: {mode:o}");
    }

    let mut again = Play::start(&lobby, state.path(), guest.clone(), 100);
    again.until(30, |app| app.screen_name() == "home").await;
    assert_eq!(again.app.account(), Some((player_id, username.as_str())), "the same guest the next run");
    again.stop();

    // Another device (state directory) is another guest.
    let other_state = tempfile::tempdir().unwrap();
    let mut other = Play::start(&lobby, other_state.path(), guest, 100);
    other.until(30, |app| app.screen_name() == "home").await;
    assert_ne!(other.app.account().map(|(id, _)| id), Some(player_id));
    other.stop();
}
