//! Statistics: per-shard gauges (sessions, routes, ring entries) and counters of traffic,
//! drops and failures ([`WorkerStats`], from [`Worker::stats`](crate::worker::Worker::stats)),
//! and per-transport traffic, quality and feedback ([`TransportStats`], from
//! [`PublishTransport::stats`](crate::transport::PublishTransport::stats) and
//! [`SubscribeTransport::stats`](crate::transport::SubscribeTransport::stats)).
//!
//! Snapshots are taken on the owning shard thread on request, so the packet path only bumps
//! plain integers. Every type here implements [`serde::Serialize`] for export (JSON,
//! metrics pipelines); structs are `#[non_exhaustive]`: read their fields, and build them
//! (in tests) from `Default` and field assignment.

use std::net::SocketAddr;

use serde::Serialize;

use crate::transport::TransportState;

/// A snapshot of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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
    /// Bytes received (UDP payload of every datagram, accepted or not).
    pub bytes_in: u64,
    /// Bytes queued for sending (UDP payload; datagrams the kernel then refuses are
    /// counted in `send_errors`).
    pub bytes_out: u64,
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
    /// STUN requests from a new address of a session that already has
    /// [`MAX_REMOTE_ADDRS`](crate::config::MAX_REMOTE_ADDRS) remote addresses: refused, so
    /// a client cannot grow its session's ICE state without bound (each new address
    /// becomes a peer-reflexive candidate and candidate pairs in str0m).
    pub stun_addr_limit: u64,
    /// Trickled remote candidates refused because their transport had
    /// [`MAX_REMOTE_CANDIDATES`](crate::config::MAX_REMOTE_CANDIDATES) already.
    pub candidates_refused: u64,
    /// Datagrams a session refused (str0m input errors).
    pub session_input_errors: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// Payload bytes of the RTP packets written to subscribers (before RTP headers and SRTP).
    pub rtp_bytes_forwarded: u64,
    /// Packets dropped at a down-track waiting for a keyframe.
    pub dropped_waiting_keyframe: u64,
    /// Packets dropped as stale by a down-track's rewriter.
    pub dropped_stale: u64,
    /// Packets of a simulcast encoding or temporal layer a down-track does not forward
    /// (deliberate: the subscriber's sequence numbers close up over them).
    pub dropped_layer: u64,
    /// Video packets not forwarded because the subscriber's bandwidth estimate does not
    /// carry even the track's lowest layer (its video is paused, audio goes on; counted
    /// per packet per subscriber).
    pub dropped_bandwidth: u64,
    /// Packets dropped because the subscriber cannot receive their payload type.
    pub dropped_no_codec: u64,
    /// Packets dropped because a shard-to-shard ring was full.
    pub ring_full_drops: u64,
    /// Data-channel messages received from publishers on published channels.
    pub data_in: u64,
    /// Data-channel messages written into subscribers' channels.
    pub data_forwarded: u64,
    /// Data-channel messages not forwarded: larger than 64 KiB, or for a subscriber whose
    /// channel was not open yet, or whose unreliable channel's buffer was full.
    pub data_dropped: u64,
    /// Subscribers' reliable data channels closed because they could not keep up (their
    /// send buffer was full: a message would otherwise have been lost silently).
    pub data_channels_closed_slow: u64,
    /// Data channels a publisher opened beyond the 64 one publish transport may have:
    /// closed at once.
    pub data_channels_refused: u64,
    /// Times a subscriber's video was paused until the next keyframe because the shard was
    /// overloaded ([`crate::forward::overload`]); the packets it then missed count in
    /// `dropped_waiting_keyframe`. Audio and keyframes are never shed.
    pub overload_pauses: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Retransmissions sent to subscribers: packets they NACKed, resent from the shared
    /// store of the published stream with their own numbering.
    pub rtx_sent: u64,
    /// Packets subscribers NACKed that were not resent: older than the store's window
    /// ([`RTX_STORE_WINDOW`](crate::forward::RTX_STORE_WINDOW)), from before a source
    /// switch or keyframe restart on their down-track, beyond their retransmission budget
    /// ([`RtxBudget`](crate::forward::RtxBudget)), or beyond a full resend queue.
    pub nacks_unanswered: u64,
    /// Sessions that panicked inside str0m and were closed.
    pub session_panics: u64,
    /// Sessions closed (any reason).
    pub sessions_closed: u64,
}

/// A snapshot of every shard of a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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

/// A snapshot of one transport (one peer connection): its ICE path, traffic, loss, RTT and
/// RTCP feedback. Counters are totals since the transport was created.
///
/// "In" is what the server received from the peer, "out" what it sent to the peer. A publish
/// transport receives media (RTP in) and sends feedback (NACK, PLI, FIR out); a subscribe
/// transport the reverse.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TransportStats {
    /// The transport's id (its [`id`](crate::transport::PublishTransport::id); the
    /// `transport` field of its tracing span).
    pub transport_id: u64,
    /// Index of the shard that owns the transport's session.
    pub shard: usize,
    /// Connection state.
    pub state: TransportState,
    /// The ICE candidate pair media flows on, once ICE has selected one.
    pub selected_pair: Option<CandidatePair>,
    /// Round-trip time in milliseconds: from RTCP (receiver reports for what the server
    /// sends, extended reports for what it receives), else from ICE consent checks; `None`
    /// before the first measurement.
    pub rtt_ms: Option<f64>,
    /// Datagrams received from the peer (STUN, DTLS, SRTP, SRTCP).
    pub datagrams_in: u64,
    /// Datagrams sent to the peer.
    pub datagrams_out: u64,
    /// Bytes received from the peer (UDP payload).
    pub bytes_in: u64,
    /// Bytes sent to the peer (UDP payload).
    pub bytes_out: u64,
    /// RTP packets received, retransmissions included.
    pub rtp_packets_in: u64,
    /// RTP payload bytes received, retransmissions included.
    pub rtp_bytes_in: u64,
    /// RTP packets sent, retransmissions included.
    pub rtp_packets_out: u64,
    /// RTP payload bytes sent, retransmissions included.
    pub rtp_bytes_out: u64,
    /// Fraction (0.0–1.0) of the peer's media lost on the way in, from the server's newest
    /// receiver report (worst over the received streams); `None` before one was sent.
    pub fraction_lost_in: Option<f32>,
    /// Fraction (0.0–1.0) of the server's media lost on the way out, from the peer's
    /// newest receiver report (worst over the sent streams); `None` before one arrived.
    pub fraction_lost_out: Option<f32>,
    /// Packets of the server's media the peer reports lost (cumulative, from receiver
    /// reports, summed over the sent streams).
    pub packets_lost_out: u64,
    /// NACK messages received from the peer (it asked for retransmissions).
    pub nacks_received: u64,
    /// NACK messages sent to the peer (the server asked for retransmissions).
    pub nacks_sent: u64,
    /// Picture loss indications (keyframe requests) received from the peer.
    pub plis_received: u64,
    /// Picture loss indications sent to the peer.
    pub plis_sent: u64,
    /// Full intra requests (keyframe requests) received from the peer.
    pub firs_received: u64,
    /// Full intra requests sent to the peer.
    pub firs_sent: u64,
    /// Receive rate in bits per second (UDP payload), over the last second or so.
    pub bitrate_in: u64,
    /// Send rate in bits per second (UDP payload), over the last second or so.
    pub bitrate_out: u64,
    /// Subscribe transports with bandwidth estimation: what the server estimates the link
    /// to the subscriber carries, in bits per second (`None` before the first estimate,
    /// and for publish transports).
    pub bandwidth_estimate: Option<u64>,
    /// Subscribe transports with bandwidth estimation: bits per second of the layers the
    /// allocator granted (audio included), from their measured bitrates.
    pub bandwidth_allocated: Option<u64>,
    /// Subscribe transports with bandwidth estimation: bits per second of what the
    /// subscriber would get with unlimited bandwidth (each track at its preference).
    pub bandwidth_desired: Option<u64>,
    /// Subscribe transports with bandwidth estimation: the cap that packet loss put on the
    /// estimate (bits per second), while there is one: the allocator shares the lower of
    /// the two.
    pub bandwidth_loss_cap: Option<u64>,
    /// Publish transports: AV1 packets whose dependency descriptor could not be read
    /// (truncated, before any template structure, an unknown template); they are
    /// forwarded as packets without layers.
    pub dependency_descriptor_errors: u64,
}

/// The ICE candidate pair a transport uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CandidatePair {
    /// The server's address (a shard's socket, or the address it is known by).
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
}

impl CandidatePair {
    /// A pair of addresses.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        CandidatePair { local, remote }
    }
}
