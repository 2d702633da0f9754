//! `/metrics`: Prometheus text exposition of the worker's per-shard statistics
//! (`Worker::stats`) and of this server's rooms, refreshed on every scrape.
//!
//! The shard counters are absolute totals kept by the library, so they are set with
//! `Counter::absolute`; gauges are set. Every engine metric carries a `shard` label.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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

/// Refresh every metric from the worker and the rooms, then render the exposition text.
pub async fn scrape(
    handle: &PrometheusHandle,
    worker: &Arc<Mutex<Worker>>,
    rooms: &Rooms,
) -> String {
    let stats = tokio::time::timeout(STATS_TIMEOUT, async {
        let worker = worker.lock().await;
        worker.stats().await
    })
    .await;
    match stats {
        Ok(stats) => record_shards(&stats),
        Err(_) => {
            tracing::warn!("/metrics: shard statistics timed out; serving the previous values")
        }
    }
    let census = rooms.census().await;
    gauge!("rheomesh_rooms").set(census.rooms as f64);
    gauge!("rheomesh_participants").set(census.participants as f64);
    gauge!("rheomesh_tracks").set(census.tracks as f64);
    handle.run_upkeep();
    handle.render()
}
