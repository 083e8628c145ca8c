//! What several commands share: the shutdown signal, keys given as hex or kept
//! in key files, and the machine-readable ready line a parent process reads.
//!
//! Every command module depends on this one and on none of its siblings.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rally_lobby::{AccessSigningKeys, AccessTokenPublicKey};
use rally_matchmaker::TokenMinter;
use serde::{Deserialize, Serialize};

/// Registers SIGTERM and SIGINT handlers now and returns a future that
/// resolves on either. Register before announcing readiness: a signal that
/// arrives before its handler exists would kill the process undrained.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Decodes a 32-byte key written as 64 hex digits; `what` names it in errors.
pub fn key_from_hex(what: &str, text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text).with_context(|| format!("{what} is not hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{what} must be 32 bytes (64 hex digits)"))
}

/// Splits `KEY_ID:HEX` into the key id and the 32 bytes; `what` names it in errors.
fn key_spec(what: &str, spec: &str) -> anyhow::Result<(u8, [u8; 32])> {
    let (id, hex) = spec.split_once(':').with_context(|| format!("{what} is not KEY_ID:HEX"))?;
    let id: u8 = id.parse().with_context(|| format!("the key id {id:?} of {what} is not 0-255"))?;
    Ok((id, key_from_hex(&format!("{what} (key id {id})"), hex)?))
}

/// Parses the issuer public keys a shard trusts, each `KEY_ID:HEX`
/// (`rally shard --token-key`, what the matchmaker prints at start).
pub fn parse_token_keys(specs: &[String]) -> anyhow::Result<Vec<(u8, VerifyingKey)>> {
    specs
        .iter()
        .map(|spec| {
            let (id, bytes) = key_spec("the token key", spec)?;
            let key = VerifyingKey::from_bytes(&bytes)
                .with_context(|| format!("the token key with id {id} is not an Ed25519 key"))?;
            Ok((id, key))
        })
        .collect()
}

/// The minter of a harness or bench that signs its own tokens, from
/// `KEY_ID:SEED_HEX` (the 32-byte Ed25519 seed of a key the shard trusts).
pub fn parse_minter(spec: &str) -> anyhow::Result<TokenMinter> {
    let (id, seed) = key_spec("the token signing key", spec)?;
    Ok(TokenMinter::new(SigningKey::from_bytes(&seed), id))
}

/// Where the lobby leaves the public halves of its development access-token
/// keys, one hex key a line, for a matchmaker sharing its data dir.
pub const DEV_ACCESS_TOKEN_KEYS_FILE: &str = "access_token_keys.pub";

/// The lobby's access-token signing keys: `--access-signing-key-file` (one
/// Ed25519 seed of 64 hex digits a line, oldest first, the last one signs),
/// else the development keys kept in the data dir (generated on first use,
/// with a warning unless `dev`), whose public halves it also writes to
/// [`DEV_ACCESS_TOKEN_KEYS_FILE`] there for a matchmaker on the same machine.
pub fn resolve_access_signing_keys(
    file: Option<&Path>,
    dev: bool,
    data_dir: &Path,
) -> anyhow::Result<AccessSigningKeys> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return AccessSigningKeys::parse(&text)
            .with_context(|| format!("--access-signing-key-file {}", path.display()));
    }
    if !dev {
        tracing::warn!(
            "no --access-signing-key-file; using the development keys in {} (pass --dev to silence)",
            data_dir.display()
        );
    }
    let keys = AccessSigningKeys::load_or_create_dev(data_dir)
        .with_context(|| format!("development access-token keys in {}", data_dir.display()))?;
    let public: String = keys.public_keys().iter().map(|key| format!("{}\n", key.to_hex())).collect();
    let path = data_dir.join(DEV_ACCESS_TOKEN_KEYS_FILE);
    std::fs::write(&path, public).with_context(|| format!("writing {}", path.display()))?;
    Ok(keys)
}

/// The lobby public keys a verifier (the matchmaker) trusts: each of `specs`
/// (64 hex digits, what the lobby prints), else the keys in `file` (one a
/// line, `#` comments), which must then exist.
pub fn resolve_access_token_keys(specs: &[String], file: &Path) -> anyhow::Result<Vec<AccessTokenPublicKey>> {
    let parse = |spec: &str| AccessTokenPublicKey::from_hex(spec).map_err(anyhow::Error::from);
    if !specs.is_empty() {
        return specs.iter().map(|spec| parse(spec).context("--access-token-key")).collect();
    }
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "no --access-token-key given and no key file at {}: pass the public key the lobby prints \
             (--access-token-key HEX), or start the lobby first with the same --data-dir",
            file.display()
        )
    })?;
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse(line).with_context(|| file.display().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!keys.is_empty(), "{} holds no access-token public key", file.display());
    Ok(keys)
}

/// Version of [`ReadyLine`]'s layout; a parent refuses others.
pub const READY_LINE_VERSION: u32 = 1;

/// What a long-running role prints on stdout, as one JSON line, once it
/// serves (`--ready-json`): a parent process reads its addresses here, never
/// from the lines meant for people. Fields a role does not have are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Always `"ready"`.
    pub event: String,
    /// [`READY_LINE_VERSION`].
    pub version: u32,
    /// `shard`, `lobby`, `matchmaker` or `up`.
    pub role: String,
    /// The shard's name (connect tokens must carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The shard's QUIC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<SocketAddr>,
    /// The shard's raw UDP address, when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<SocketAddr>,
    /// SHA-256 of the shard's certificate, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The lobby's gRPC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<SocketAddr>,
    /// The matchmaker's gRPC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matchmaker: Option<SocketAddr>,
    /// The tournament service's gRPC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tournaments: Option<SocketAddr>,
    /// The results ledger's read-only HTTP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<SocketAddr>,
    /// The Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// The web client's HTTP address (`rally up`, `rally lobby --web-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<SocketAddr>,
    /// The issuer key shards must trust, `KEY_ID:HEX` (the matchmaker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    /// The lobby's access-token public keys, hex: what the matchmaker must
    /// trust (`--access-token-key`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_token_keys: Vec<String>,
}

impl ReadyLine {
    /// An empty ready line for `role`.
    pub fn new(role: &str) -> Self {
        Self { event: "ready".to_owned(), version: READY_LINE_VERSION, role: role.to_owned(), ..Self::default() }
    }

    /// The line of a role serving `shard`, with its metrics endpoint at `metrics`.
    pub fn with_shard(role: &str, shard: &rally_server::ShardHandle, metrics: SocketAddr) -> Self {
        Self {
            name: Some(shard.name.clone()),
            quic: Some(shard.local_addr),
            udp: shard.udp_addr,
            fingerprint: Some(shard.fingerprint.clone()),
            metrics: Some(metrics),
            ..Self::new(role)
        }
    }

    /// Reads a ready line, refusing anything else (another event, another version).
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let ready: Self = serde_json::from_str(line.trim()).with_context(|| format!("{line:?} is not a ready line"))?;
        anyhow::ensure!(ready.event == "ready", "{line:?} is a {:?} event, not a ready line", ready.event);
        anyhow::ensure!(
            ready.version == READY_LINE_VERSION,
            "ready line version {} is not {READY_LINE_VERSION}",
            ready.version
        );
        Ok(ready)
    }

    /// Prints the line on stdout and flushes it, so a parent reading a pipe sees it now.
    pub fn print(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, self)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        Ok(())
    }
}

/// The help text of every `--ready-json` flag.
pub const READY_JSON_HELP: &str = "Once serving, print one JSON line on stdout in place of the startup banner: \
{\"event\":\"ready\",\"version\":1,\"role\":…} with the addresses (for a parent process to read)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_decode_and_bad_ones_are_errors_not_panics() {
        assert_eq!(key_from_hex("k", &"11".repeat(32)).expect("hex"), [0x11; 32]);
        for bad in ["abc", "zz", "0é", &format!("0é{}", "0".repeat(61)), &"11".repeat(31)] {
            let err = key_from_hex("the key", bad).expect_err(bad);
            assert!(format!("{err:#}").contains("the key"), "{err:#}");
        }
    }

    #[test]
    fn token_keys_and_minters_parse_from_specs() {
        let minter = TokenMinter::new(SigningKey::from_bytes(&[3; 32]), 7);
        let keys = parse_token_keys(&[minter.public_key_spec()]).expect("the minter's own spec");
        assert_eq!(keys, vec![(7, minter.verifying_key())]);
        let parsed = parse_minter(&format!("7:{}", hex::encode([3u8; 32]))).expect("a seed spec");
        assert_eq!((parsed.key_id(), parsed.verifying_key()), (7, minter.verifying_key()));
        for bad in ["7", "x:00", "300:00", "1:é"] {
            assert!(parse_minter(bad).is_err(), "{bad}");
            assert!(parse_token_keys(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_matchmaker_trusts_the_public_keys_the_dev_lobby_leaves_and_no_private_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = resolve_access_signing_keys(None, true, dir.path()).expect("dev keys");
        let public_file = dir.path().join(DEV_ACCESS_TOKEN_KEYS_FILE);
        let trusted = resolve_access_token_keys(&[], &public_file).expect("the dev lobby's public keys");
        assert_eq!(trusted, keys.public_keys());
        let written = std::fs::read_to_string(&public_file).expect("public file");
        assert!(!written.contains(&keys.signing_key().to_hex()), "the private seed leaked into {written}");
        // A flag wins over the file; bad keys are errors naming the flag.
        let other = rally_lobby::AccessSigningKey::from_seed([5; 32]).public_key().clone();
        let flagged = resolve_access_token_keys(&[other.to_hex()], &public_file).expect("flag");
        assert_eq!(flagged, vec![other]);
        let err = resolve_access_token_keys(&["abcd".into()], &public_file).expect_err("short key");
        assert!(format!("{err:#}").contains("--access-token-key"), "{err:#}");
        let err = resolve_access_token_keys(&[], &dir.path().join("absent")).expect_err("no keys at all");
        assert!(format!("{err:#}").contains("pass the public key the lobby prints"), "{err:#}");
        // The lobby's key file: the last line signs.
        let file = dir.path().join("access.key");
        std::fs::write(&file, format!("{}\n{}\n", "11".repeat(32), "22".repeat(32))).expect("write");
        let from_file = resolve_access_signing_keys(Some(&file), false, dir.path()).expect("key file");
        assert_eq!(from_file.signing_key().to_hex(), "22".repeat(32));
        assert_eq!(from_file.public_keys().len(), 2);
    }

    #[test]
    fn ready_lines_round_trip_and_leave_out_what_a_role_lacks() {
        let mut ready = ReadyLine::new("lobby");
        ready.lobby = Some(SocketAddr::from(([127, 0, 0, 1], 7100)));
        let json = serde_json::to_string(&ready).expect("json");
        assert_eq!(json, r#"{"event":"ready","version":1,"role":"lobby","lobby":"127.0.0.1:7100"}"#);
        assert_eq!(ReadyLine::parse(&json).expect("parses"), ready);
        assert!(ReadyLine::parse(r#"{"event":"stopped","version":1,"role":"lobby"}"#).is_err());
        assert!(ReadyLine::parse(r#"{"event":"ready","version":2,"role":"lobby"}"#).is_err());
        assert!(ReadyLine::parse("lobby listening on 127.0.0.1:7100").is_err());
    }
}
