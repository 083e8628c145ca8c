//! `rally shard --agones`: the shard's bridge to the Agones SDK sidecar ([`rally_agones`]).
//!
//! The bridge runs on a runtime of its own (one worker thread), not on the shard's
//! current-thread runtime: SDK calls never delay a tick, and health pings are decided from the
//! shard's tick counter, so a stuck tick loop stops them whether it blocks its thread or waits
//! forever on something.

use anyhow::Context;
use rally_agones::{Bridge, BridgeConfig, BridgeError, GameServer, LiveProbe, Sdk};
use rally_server::ShardHandle;

/// How long to wait for the GameServer status to carry the node address and the `quic` port.
const ADDRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The bridge's runtime and where the bridge is in its life.
pub(crate) struct AgonesRun {
    /// Always `Some` until dropped (taken to shut down without blocking the shard's runtime).
    runtime: Option<tokio::runtime::Runtime>,
    sdk: Option<Sdk>,
    bridge: Option<Bridge>,
}

impl std::fmt::Debug for AgonesRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgonesRun").field("bridge", &self.bridge).finish_non_exhaustive()
    }
}

impl AgonesRun {
    /// Connects to the SDK sidecar (localhost, `AGONES_SDK_GRPC_PORT`) and reads the GameServer.
    pub(crate) async fn connect() -> anyhow::Result<(Self, GameServer)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rally-agones")
            .enable_all()
            .build()
            .context("starting the Agones bridge's runtime")?;
        let mut run = Self { runtime: Some(runtime), sdk: None, bridge: None };
        let (sdk, game_server) = run
            .spawn(async {
                let mut sdk = rally_agones::connect().await?;
                // The sidecar may not have seen the node address yet: wait a little for it.
                let deadline = tokio::time::Instant::now() + ADDRESS_WAIT;
                loop {
                    let game_server = sdk
                        .get_gameserver()
                        .await
                        .map_err(|source| BridgeError::Sdk { call: "GetGameServer", source: Box::new(source) })?;
                    if rally_agones::public_addr(&game_server).is_ok() || tokio::time::Instant::now() >= deadline {
                        return Ok::<_, BridgeError>((sdk, game_server));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            })
            .await??;
        run.sdk = Some(sdk);
        Ok((run, game_server))
    }

    /// Sets the labels and the Counter, marks the GameServer Ready, and starts the pings.
    pub(crate) async fn start(&mut self, shard: &ShardHandle, config: BridgeConfig) -> anyhow::Result<()> {
        let sdk = self.sdk.take().context("the Agones bridge was started twice")?;
        let probe = LiveProbe::new(shard);
        let bridge = self.spawn(Bridge::start(sdk, probe, config)).await??;
        self.bridge = Some(bridge);
        Ok(())
    }

    /// Stops the pings and calls `Shutdown`: call it once results are flushed.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(bridge) = self.bridge.take() {
            self.spawn(bridge.shutdown()).await??;
        }
        Ok(())
    }

    async fn spawn<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> anyhow::Result<T> {
        let runtime = self.runtime.as_ref().context("the Agones bridge's runtime is gone")?;
        runtime.spawn(work).await.context("the Agones bridge panicked")
    }
}

impl Drop for AgonesRun {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which the shard's runtime forbids: let it wind down alone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The address the registry names: the GameServer status's, else `--public-addr`.
pub(crate) fn public_addr(game_server: &GameServer, fallback: Option<&str>) -> anyhow::Result<String> {
    match (rally_agones::public_addr(game_server), fallback) {
        (Ok(addr), explicit) => {
            if let Some(explicit) = explicit.filter(|explicit| *explicit != addr) {
                tracing::warn!(%addr, ignored = explicit, "--agones: the GameServer status names the public address; --public-addr is ignored");
            }
            Ok(addr)
        }
        (Err(err), Some(fallback)) => {
            tracing::warn!(%err, addr = fallback, "--agones: using --public-addr for the public address");
            Ok(fallback.to_owned())
        }
        (Err(err), None) => Err(err).context("--agones: no public address for connect tokens"),
    }
}
