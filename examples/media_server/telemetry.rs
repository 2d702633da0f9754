//! `/metrics`: Prometheus text exposition of the worker's per-shard statistics
//! (`Worker::stats`), of its relay (`Worker::relay_stats`, when it has a relay port) and of
//! this server's rooms, refreshed on every scrape.
//!
//! The shard counters are absolute totals kept by the library, so they are set with
//! `Counter::absolute`; gauges are set. Every engine metric carries a `shard` label.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rheomesh::relay::RelayStats;
use rheomesh::stats::{ShardStats, WorkerStats};
use rheomesh::worker::Worker;
use tokio::sync::Mutex;

use crate::room::Rooms;

/// A scrape waits this long for the shards' snapshots, then serves the previous values.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Install the process-wide recorder; the handle renders the exposition text.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    let gauges = [
        (
            "rheomesh_shards",
            "Media shards (threads with a UDP socket each).",
        ),
        (
            "rheomesh_sessions",
            "Live sessions (transports) on the shard.",
        ),
        (
            "rheomesh_up_tracks",
            "Published tracks received by sessions on the shard.",
        ),
        (
            "rheomesh_down_tracks",
            "Forwarded tracks (subscribers) on the shard.",
        ),
        ("rheomesh_routes", "Routing-table entries on the shard."),
        (
            "rheomesh_ring_entries",
            "Messages waiting in rings towards the shard.",
        ),
        (
            "rheomesh_known_addresses",
            "Remote addresses known to the shard's demux.",
        ),
        ("rheomesh_rooms", "Rooms (routers) of this server."),
        (
            "rheomesh_participants",
            "WebSocket participants in all rooms.",
        ),
        (
            "rheomesh_tracks",
            "Published tracks (publishers) in all rooms.",
        ),
        (
            "rheomesh_relay_links_out",
            "Relay control links this worker opened (it relays to those workers).",
        ),
        (
            "rheomesh_relay_links_in",
            "Relay control links other workers opened to this one.",
        ),
        (
            "rheomesh_relay_sessions_out",
            "Relay sessions (router pairs) this worker sends on.",
        ),
        (
            "rheomesh_relay_sessions_in",
            "Relay sessions other workers send to this one on.",
        ),
        (
            "rheomesh_cluster_relayed_tracks",
            "Tracks and data channels of other nodes relayed into this node's rooms for its subscribers and WHEP viewers (with --redis).",
        ),
        (
            "rheomesh_cluster_relay_uses",
            "Local subscriptions (and WHEP sessions' tracks) using tracks and data channels relayed from other nodes (with --redis).",
        ),
        (
            "rheomesh_cluster_relays_stopping",
            "Relayed tracks and data channels whose relay this node is stopping (no subscriber left; with --redis).",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
    let counters = [
        (
            "rheomesh_datagrams_in_total",
            "Datagrams received by the shard.",
        ),
        (
            "rheomesh_datagrams_out_total",
            "Datagrams sent by the shard.",
        ),
        (
            "rheomesh_send_syscalls_total",
            "sendmmsg calls made by the shard.",
        ),
        (
            "rheomesh_send_errors_total",
            "Datagrams the kernel refused to send.",
        ),
        (
            "rheomesh_rtp_in_total",
            "RTP packets received from publishers.",
        ),
        (
            "rheomesh_rtp_forwarded_total",
            "RTP packets written to subscribers.",
        ),
        (
            "rheomesh_rtp_forwarded_bytes_total",
            "Payload bytes of the RTP packets written to subscribers.",
        ),
        (
            "rheomesh_bytes_in_total",
            "UDP payload bytes received by the shard.",
        ),
        (
            "rheomesh_bytes_out_total",
            "UDP payload bytes queued for sending by the shard.",
        ),
        (
            "rheomesh_dropped_total",
            "Datagrams or packets dropped, by reason.",
        ),
        (
            "rheomesh_keyframe_requests_total",
            "Keyframe requests sent to publishers.",
        ),
        (
            "rheomesh_rtx_sent_total",
            "Retransmissions sent to subscribers from the shared store.",
        ),
        (
            "rheomesh_nacks_unanswered_total",
            "NACKed packets not resent (too old, before a switch, queue full).",
        ),
        (
            "rheomesh_session_panics_total",
            "Sessions that panicked inside str0m and were closed.",
        ),
        (
            "rheomesh_sessions_closed_total",
            "Sessions closed (any reason).",
        ),
        (
            "rheomesh_relay_auth_failures_total",
            "Relay connections refused for not proving the shared secret.",
        ),
        (
            "rheomesh_relay_bad_frames_total",
            "Relay connections closed for a malformed or unauthenticated frame.",
        ),
        (
            "rheomesh_relay_unknown_router_total",
            "Relay requests naming a router this worker does not have.",
        ),
        (
            "rheomesh_relay_refused_total",
            "Other relay requests and connections refused.",
        ),
        (
            "rheomesh_cluster_unrelays_total",
            "Relays of other nodes' tracks and data channels this node stopped (no subscriber left for --relay-linger-ms).",
        ),
        (
            "rheomesh_cluster_relay_waits_total",
            "Subscriptions that waited for their track's relay to finish stopping, then relayed it anew.",
        ),
        (
            "rheomesh_ws_disconnected_total",
            "WebSocket clients the server disconnected, by reason (not_reading: its outgoing queue was full; keepalive: no pong for 15 s).",
        ),
    ];
    for (name, help) in counters {
        let unit = if name.contains("bytes") {
            Unit::Bytes
        } else {
            Unit::Count
        };
        describe_counter!(name, unit, help);
    }
}

/// Counters of `ShardStats` that count drops, as the `reason` label of `rheomesh_dropped_total`.
fn drops(s: &ShardStats) -> [(&'static str, u64); 17] {
    [
        ("malformed", s.dropped_malformed),
        ("unknown_source", s.dropped_unknown_source),
        ("stun_rejected", s.stun_rejected),
        ("stun_unanswered", s.stun_unanswered),
        ("stun_addr_limit", s.stun_addr_limit),
        ("candidates_refused", s.candidates_refused),
        ("session_input_error", s.session_input_errors),
        ("waiting_keyframe", s.dropped_waiting_keyframe),
        ("stale", s.dropped_stale),
        ("layer", s.dropped_layer),
        ("bandwidth", s.dropped_bandwidth),
        ("no_codec", s.dropped_no_codec),
        ("ring_full", s.ring_full_drops),
        ("overload_pause", s.overload_pauses),
        ("data", s.data_dropped),
        ("data_channel_closed_slow", s.data_channels_closed_slow),
        ("data_channel_refused", s.data_channels_refused),
    ]
}

fn record_shards(stats: &WorkerStats) {
    gauge!("rheomesh_shards").set(stats.shards.len() as f64);
    for s in &stats.shards {
        let shard = s.shard.to_string();
        let g = |name: &'static str, v: usize| {
            gauge!(name, "shard" => shard.clone()).set(v as f64);
        };
        g("rheomesh_sessions", s.sessions);
        g("rheomesh_up_tracks", s.up_tracks);
        g("rheomesh_down_tracks", s.down_tracks);
        g("rheomesh_routes", s.routes);
        g("rheomesh_ring_entries", s.ring_entries);
        g("rheomesh_known_addresses", s.known_addrs);
        let c = |name: &'static str, v: u64| {
            counter!(name, "shard" => shard.clone()).absolute(v);
        };
        c("rheomesh_datagrams_in_total", s.datagrams_in);
        c("rheomesh_datagrams_out_total", s.datagrams_out);
        c("rheomesh_send_syscalls_total", s.send_syscalls);
        c("rheomesh_send_errors_total", s.send_errors);
        c("rheomesh_rtp_in_total", s.rtp_in);
        c("rheomesh_rtp_forwarded_total", s.rtp_forwarded);
        c("rheomesh_rtp_forwarded_bytes_total", s.rtp_bytes_forwarded);
        c("rheomesh_bytes_in_total", s.bytes_in);
        c("rheomesh_bytes_out_total", s.bytes_out);
        c("rheomesh_keyframe_requests_total", s.keyframe_requests_sent);
        c("rheomesh_rtx_sent_total", s.rtx_sent);
        c("rheomesh_nacks_unanswered_total", s.nacks_unanswered);
        c("rheomesh_session_panics_total", s.session_panics);
        c("rheomesh_sessions_closed_total", s.sessions_closed);
        for (reason, v) in drops(s) {
            counter!("rheomesh_dropped_total", "shard" => shard.clone(), "reason" => reason)
                .absolute(v);
        }
    }
}

fn record_relay(r: &RelayStats) {
    gauge!("rheomesh_relay_links_out").set(r.links_out as f64);
    gauge!("rheomesh_relay_links_in").set(r.links_in as f64);
    gauge!("rheomesh_relay_sessions_out").set(r.sessions_out as f64);
    gauge!("rheomesh_relay_sessions_in").set(r.sessions_in as f64);
    counter!("rheomesh_relay_auth_failures_total").absolute(r.auth_failures);
    counter!("rheomesh_relay_bad_frames_total").absolute(r.bad_frames);
    counter!("rheomesh_relay_unknown_router_total").absolute(r.unknown_router);
    counter!("rheomesh_relay_refused_total").absolute(r.refused);
}

/// Refresh every metric from the worker and the rooms, then render the exposition text.
pub async fn scrape(
    handle: &PrometheusHandle,
    worker: &Arc<Mutex<Worker>>,
    rooms: &Rooms,
) -> String {
    let stats = tokio::time::timeout(STATS_TIMEOUT, async {
        let worker = worker.lock().await;
        let relay = match worker.relay_addr() {
            Some(_) => Some(worker.relay_stats().await),
            None => None,
        };
        (worker.stats().await, relay)
    })
    .await;
    match stats {
        Ok((stats, relay)) => {
            record_shards(&stats);
            if let Some(relay) = relay {
                record_relay(&relay);
            }
        }
        Err(_) => {
            tracing::warn!("/metrics: shard statistics timed out; serving the previous values")
        }
    }
    let census = rooms.census().await;
    gauge!("rheomesh_rooms").set(census.rooms as f64);
    gauge!("rheomesh_participants").set(census.participants as f64);
    gauge!("rheomesh_tracks").set(census.tracks as f64);
    if let Some(cluster) = rooms.cluster() {
        let r = cluster.relay_census();
        gauge!("rheomesh_cluster_relayed_tracks").set(r.tracks as f64);
        gauge!("rheomesh_cluster_relay_uses").set(r.uses as f64);
        gauge!("rheomesh_cluster_relays_stopping").set(r.stopping as f64);
        counter!("rheomesh_cluster_unrelays_total").absolute(r.unrelays);
        counter!("rheomesh_cluster_relay_waits_total").absolute(r.waited_for_stop);
    }
    handle.run_upkeep();
    handle.render()
}
