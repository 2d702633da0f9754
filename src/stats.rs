//! Engine statistics: per-shard gauges (sessions, routes, ring entries) and counters of
//! traffic, drops and failures. Snapshots are taken on the shard thread on request, so the
//! packet path only bumps plain integers.

use std::net::SocketAddr;

/// A snapshot of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Shard index.
    pub shard: usize,
    /// The shard's UDP socket address (the host candidate of its sessions).
    pub local_addr: Option<SocketAddr>,
    /// Live sessions (transports) on this shard.
    pub sessions: usize,
    /// Published tracks received by sessions on this shard.
    pub up_tracks: usize,
    /// Forwarded tracks (subscribers) on this shard.
    pub down_tracks: usize,
    /// Entries in the routing table (tracks with local or remote destinations).
    pub routes: usize,
    /// Messages waiting in rings towards this shard.
    pub ring_entries: usize,
    /// Remote addresses known to the demux.
    pub known_addrs: usize,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Send calls (`sendmmsg`) made.
    pub send_syscalls: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Datagrams dropped because they are not STUN, DTLS, RTP or RTCP.
    pub dropped_malformed: u64,
    /// Non-STUN datagrams from addresses no session knows.
    pub dropped_unknown_source: u64,
    /// STUN requests that are unparseable or name no session's ufrag.
    pub stun_rejected: u64,
    /// STUN requests delivered to a session that did not answer them (bad integrity).
    pub stun_unanswered: u64,
    /// Datagrams a session refused (str0m input errors).
    pub session_input_errors: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// Packets dropped at a down-track waiting for a keyframe.
    pub dropped_waiting_keyframe: u64,
    /// Packets dropped as stale by a down-track's rewriter.
    pub dropped_stale: u64,
    /// Packets dropped because the subscriber cannot receive their payload type.
    pub dropped_no_codec: u64,
    /// Packets dropped because a shard-to-shard ring was full.
    pub ring_full_drops: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Sessions that panicked inside str0m and were closed.
    pub session_panics: u64,
    /// Sessions closed (any reason).
    pub sessions_closed: u64,
}

/// A snapshot of every shard of a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// One entry per shard, by index.
    pub shards: Vec<ShardStats>,
}

impl WorkerStats {
    /// Live sessions over all shards.
    pub fn sessions(&self) -> usize {
        self.shards.iter().map(|s| s.sessions).sum()
    }
    /// Routing entries over all shards.
    pub fn routes(&self) -> usize {
        self.shards.iter().map(|s| s.routes).sum()
    }
    /// Ring entries over all shards.
    pub fn ring_entries(&self) -> usize {
        self.shards.iter().map(|s| s.ring_entries).sum()
    }
    /// Down-tracks over all shards.
    pub fn down_tracks(&self) -> usize {
        self.shards.iter().map(|s| s.down_tracks).sum()
    }
    /// Sum of a counter over all shards, e.g. `stats.total(|s| s.rtp_forwarded)`.
    pub fn total(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }
}
