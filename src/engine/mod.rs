//! The engine: one shard per core, each an OS thread with a `mio` poll loop, a UDP socket,
//! its str0m sessions and its part of the routing state.
//!
//! The API layer talks to shards only through [`command::Command`]s (with oneshot replies)
//! and hears from them through [`command::SessionEvent`]s. Shards talk to each other only
//! through the bounded SPSC rings of [`ring`]. No tokio, no locks on the packet path.

pub(crate) mod command;
pub(crate) mod core;
pub(crate) mod data;
pub(crate) mod demux;
pub(crate) mod dtls;
pub(crate) mod ring;
pub(crate) mod route;
pub(crate) mod sdp;
pub(crate) mod sdp_parse;
pub(crate) mod session;
pub(crate) mod shard;
pub(crate) mod slab;
pub(crate) mod timer;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use command::Command;

/// Index of a shard in the worker.
pub(crate) type ShardId = usize;

/// Globally unique id of a session (one per transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub u64);

/// Globally unique id of a published track. The top 16 bits name the publisher's shard,
/// so any shard can route a reverse-path message (keyframe request) without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TrackKey(pub u64);

impl TrackKey {
    pub(crate) fn new(shard: ShardId, n: u64) -> Self {
        TrackKey(((shard as u64) << 48) | (n & 0xffff_ffff_ffff))
    }
    pub(crate) fn shard(self) -> ShardId {
        (self.0 >> 48) as ShardId
    }
}

/// Globally unique id of a down-track (one forwarded track on a subscribe transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DownTrackId(pub u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique number for ids.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The API side's handle to one shard.
pub(crate) struct ShardHandle {
    pub(crate) id: ShardId,
    pub(crate) local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    /// Sessions placed on this shard (maintained by the API side, for placement).
    pub(crate) load: AtomicUsize,
}

impl ShardHandle {
    /// Send a command; false if the shard is gone.
    pub(crate) fn send(&self, cmd: Command) -> bool {
        if self.commands.send(cmd).is_err() {
            return false;
        }
        self.waker.wake().is_ok()
    }
}

/// All shards of a worker.
pub(crate) struct Engine {
    pub(crate) shards: Vec<ShardHandle>,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Bind sockets and start one thread per shard.
    pub(crate) fn start(cfg: &WorkerConfig) -> Result<Engine, WorkerError> {
        if cfg.shards == 0 {
            return Err(WorkerError::NoShards);
        }
        if cfg.bind_ip.is_unspecified() {
            return Err(WorkerError::UnspecifiedBind(cfg.bind_ip));
        }
        if cfg.port_min != 0 && (cfg.port_min as usize + cfg.shards - 1) > cfg.port_max as usize {
            return Err(WorkerError::PortRange {
                min: cfg.port_min,
                max: cfg.port_max,
                shards: cfg.shards,
            });
        }
        // str0m needs a process-wide crypto provider; installing twice is harmless.
        str0m::crypto::from_feature_flags().install_process_default();

        let n = cfg.shards;
        let mut mesh = ring::Mesh::new(n, cfg.ring_capacity.max(16));
        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = mio::Poll::new().map_err(WorkerError::Spawn)?;
            let waker = Arc::new(
                mio::Waker::new(poll.registry(), shard::WAKER).map_err(WorkerError::Spawn)?,
            );
            polls.push(poll);
            wakers.push(waker);
        }
        let mut shards = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (i, poll) in polls.into_iter().enumerate() {
            let port = if cfg.port_min == 0 {
                0
            } else {
                cfg.port_min + i as u16
            };
            let socket =
                udp::bind(SocketAddr::new(cfg.bind_ip, port)).map_err(WorkerError::Bind)?;
            let local_addr = socket.local_addr().map_err(WorkerError::Bind)?;
            let (tx, rx) = mpsc::channel();
            let (producers, consumers) = mesh.take(i);
            let peers = wakers.clone();
            let pin = cfg.pin_threads;
            let core = core::ShardCore::new(
                i,
                local_addr,
                producers,
                consumers,
                n,
                std::time::Instant::now(),
            );
            let shard =
                shard::Shard::new(core, poll, socket, rx, peers).map_err(WorkerError::Spawn)?;
            let handle = std::thread::Builder::new()
                .name(format!("rheomesh-shard-{i}"))
                .spawn(move || {
                    if pin {
                        pin_to_core(i);
                    }
                    shard.run();
                })
                .map_err(WorkerError::Spawn)?;
            threads.push(handle);
            shards.push(ShardHandle {
                id: i,
                local_addr,
                commands: tx,
                waker: wakers[i].clone(),
                load: AtomicUsize::new(0),
            });
        }
        tracing::info!(
            shards = n,
            send_path = udp::SEND_PATH,
            pinned = cfg.pin_threads,
            "engine started"
        );
        Ok(Engine { shards, threads })
    }

    /// The least loaded shard, for placing a new session.
    pub(crate) fn pick_shard(&self) -> &ShardHandle {
        self.shards
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("engine has at least one shard")
    }

    pub(crate) fn shard(&self, id: ShardId) -> Option<&ShardHandle> {
        self.shards.get(id)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for s in &self.shards {
            s.send(Command::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pin the calling shard thread to core `i % cores` (Linux only; elsewhere, and with the
/// `portable` feature, shards are left to the OS scheduler).
#[cfg(all(target_os = "linux", not(feature = "portable")))]
fn pin_to_core(i: usize) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % cores, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(shard = i, "could not pin shard thread to a core");
        }
    }
}

#[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
fn pin_to_core(i: usize) {
    tracing::debug!(
        shard = i,
        "thread pinning is not supported on this platform"
    );
}
