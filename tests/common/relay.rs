//! Workers that relay to each other (`tests/relay*.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use rheomesh::config::{MediaConfig, RelayConfig, WorkerConfig};
use rheomesh::relay::RelayStats;
use rheomesh::router::Router;
use rheomesh::worker::Worker;
use tokio::sync::Mutex;

/// A worker of two shards listening for relays on 127.0.0.1 with `secret`, a router of it,
/// and its relay port.
pub async fn relay_worker(secret: &str) -> (Arc<Mutex<Worker>>, Router, SocketAddr) {
    let mut config = WorkerConfig::default();
    config.shards = 2;
    config.relay = Some(RelayConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        secret: secret.into(),
    });
    let worker = Worker::new(config).await.expect("worker starts");
    let router = worker.lock().await.new_router(MediaConfig::default());
    let addr = worker.lock().await.relay_addr().expect("relay port");
    (worker, router, addr)
}

/// The worker's relay state.
pub async fn relay_stats(w: &Arc<Mutex<Worker>>) -> RelayStats {
    w.lock().await.relay_stats().await
}
