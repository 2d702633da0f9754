//! The worker: one per process. Owns the engine (the shards: threads and sockets) and
//! creates routers.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{oneshot, Mutex};

use crate::config::{MediaConfig, WorkerConfig};
use crate::engine::command::Command;
use crate::engine::Engine;
use crate::error::WorkerError;
use crate::router::Router;
use crate::stats::{ShardStats, WorkerStats};

/// Owns the shards. Create one per process with [`Worker::new`].
pub struct Worker {
    engine: Arc<Engine>,
    config: WorkerConfig,
    hub: Arc<crate::relay::Hub>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("shards", &self.engine.shards.len())
            .finish()
    }
}

impl Worker {
    /// Start the shards (threads, sockets). Returns the worker behind a tokio mutex, as the
    /// original Rheomesh API does. Shards stop when the worker and every router, transport
    /// and handle created from it are dropped.
    #[must_use = "dropping the worker stops its shards"]
    pub async fn new(config: WorkerConfig) -> Result<Arc<Mutex<Worker>>, WorkerError> {
        let hub = crate::relay::Hub::start(config.relay.as_ref()).map_err(WorkerError::Relay)?;
        let engine = Arc::new(Engine::start(&config)?);
        Ok(Arc::new(Mutex::new(Worker {
            engine,
            config,
            hub,
        })))
    }

    /// Create a router (a meeting room) negotiating `media`.
    pub fn new_router(&mut self, media: MediaConfig) -> Router {
        Router::new(self.engine.clone(), self.hub.clone(), media)
    }

    /// The address this worker accepts relays on (its [`RelayConfig`](crate::config::RelayConfig)
    /// bind address, with the port chosen if it was 0); `None` without relay.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.hub.local_addr()
    }

    /// Relay links, sessions and refusals of this worker.
    pub async fn relay_stats(&self) -> crate::relay::RelayStats {
        self.hub.stats().await
    }

    /// The configuration the worker was started with.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The UDP address of each shard, by shard index.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.engine.shards.iter().map(|s| s.local_addr).collect()
    }

    /// Test hook: relay sessions (of every worker in the process) lose every `n`-th SRTP
    /// datagram they send; 0 stops it. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn set_relay_loss_for_tests(every_nth: u32) {
        crate::engine::session::RELAY_DROP_EVERY
            .store(every_nth, std::sync::atomic::Ordering::Relaxed);
    }

    /// Test hook: how many datagrams [`set_relay_loss_for_tests`](Self::set_relay_loss_for_tests)
    /// dropped so far. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn relay_losses_for_tests() -> u64 {
        crate::engine::session::RELAY_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Test hook: relay sessions (of every worker in the process) keep a copy of every
    /// `n`-th SRTP or SRTCP datagram they send and send it again, from the same socket to the
    /// same destination, `delay` of their SRTP/SRTCP datagrams later (0: right after the
    /// original): a replay of captured ciphertext from the legitimate address. `every_nth`
    /// 0 stops capturing (what is held still goes). Only with the `testing` feature.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn set_relay_replay_for_tests(every_nth: u32, delay: u32) {
        use crate::engine::session::{RELAY_REPLAY_DELAY, RELAY_REPLAY_EVERY};
        RELAY_REPLAY_DELAY.store(delay, std::sync::atomic::Ordering::Relaxed);
        RELAY_REPLAY_EVERY.store(every_nth, std::sync::atomic::Ordering::Relaxed);
    }

    /// Test hook: how many (SRTP, SRTCP) datagrams
    /// [`set_relay_replay_for_tests`](Self::set_relay_replay_for_tests) replayed so far.
    /// Only with the `testing` feature.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn relay_replays_for_tests() -> (u64, u64) {
        use crate::engine::session::{RELAY_REPLAYED_RTCP, RELAY_REPLAYED_RTP};
        (
            RELAY_REPLAYED_RTP.load(std::sync::atomic::Ordering::Relaxed),
            RELAY_REPLAYED_RTCP.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Test hook: block every shard thread for `d` (at most 5 s), as a stall would.
    /// Only with the `testing` feature; not for production use.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn pause_shards_for_tests(&self, d: std::time::Duration) {
        for s in &self.engine.shards {
            s.send(Command::Pause(d));
        }
    }

    /// A snapshot of every shard's gauges and counters.
    pub async fn stats(&self) -> WorkerStats {
        let mut shards = Vec::with_capacity(self.engine.shards.len());
        for s in &self.engine.shards {
            let (tx, rx) = oneshot::channel();
            let snap = if s.send(Command::Stats { reply: tx }) {
                rx.await.unwrap_or_default()
            } else {
                ShardStats {
                    shard: s.id,
                    ..Default::default()
                }
            };
            shards.push(snap);
        }
        WorkerStats { shards }
    }
}
