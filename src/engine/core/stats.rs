//! What a shard reports when asked: its counters and gauges ([`ShardStats`], for the
//! worker's statistics) and one transport's statistics ([`TransportStats`]). Nothing is
//! computed on the packet path beyond bumping counters; these are read on request.

use std::time::Duration;

use super::ShardCore;
use crate::engine::SessionId;
use crate::error::TransportError;
use crate::stats::{CandidatePair, ShardStats, TransportStats};
use crate::transport::TransportState;

impl ShardCore {
    /// The shard's counters, with its gauges filled in.
    pub(crate) fn snapshot(&self) -> ShardStats {
        let mut s = self.counters.clone();
        s.sessions = self.sessions.len();
        s.down_tracks = self.downs.len();
        s.up_tracks = self.ups.len();
        s.routes = self.routes.map.len();
        s.known_addrs = self.demux.addrs();
        s.ring_entries = self.consumers.iter().flatten().map(|c| c.slots()).sum();
        s.datagrams_out = self.out.send.sent;
        s.bytes_out = self.out.bytes_queued;
        s.send_errors = self.out.send.send_errors;
        s.send_syscalls = self.out.send.syscalls;
        s
    }

    /// A snapshot of one session's transport statistics: Rheomesh's traffic counters and
    /// str0m's stream counters, read now (nothing is computed for sessions nobody asks about).
    pub(super) fn transport_stats(
        &mut self,
        id: SessionId,
    ) -> Result<TransportStats, TransportError> {
        let slot = self.slot_of(id).ok_or(TransportError::Closed)?;
        let shard = self.id;
        let s = self.sessions.get_mut(slot).ok_or(TransportError::Closed)?;
        let Some(report) = s.guarded(|s| s.rtc.stats_report()) else {
            self.counters.session_panics += 1;
            self.doom(slot);
            return Err(TransportError::Closed);
        };
        let traffic = &s.traffic;
        let mut t = TransportStats {
            transport_id: id.0,
            shard,
            state: if s.connected {
                TransportState::Connected
            } else {
                TransportState::New
            },
            selected_pair: report
                .peer
                .selected_candidate_pair
                .as_ref()
                .map(|p| CandidatePair::new(p.local.addr, p.remote.addr)),
            datagrams_in: traffic.datagrams_in,
            bytes_in: traffic.bytes_in,
            datagrams_out: traffic.datagrams_out,
            bytes_out: traffic.bytes_out,
            bitrate_in: traffic.bitrate_in,
            bitrate_out: traffic.bitrate_out,
            bandwidth_estimate: s.bwe.as_ref().and_then(|b| b.estimate),
            bandwidth_allocated: s.bwe.as_ref().and_then(|b| b.last_run.map(|_| b.last.used)),
            dependency_descriptor_errors: traffic.dd_errors,
            bandwidth_loss_cap: s.bwe.as_ref().and_then(|b| b.loss_cap.cap()),
            bandwidth_desired: s
                .bwe
                .as_ref()
                .and_then(|b| b.last_run.map(|_| b.last.desired)),
            ..Default::default()
        };
        let worst = |a: Option<f32>, b: Option<f32>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut rtcp_rtt: Option<Duration> = None;
        for e in &report.egress {
            t.rtp_packets_out += e.packets;
            t.rtp_bytes_out += e.bytes;
            t.nacks_received += e.nacks;
            t.plis_received += e.plis;
            t.firs_received += e.firs;
            t.fraction_lost_out = worst(t.fraction_lost_out, e.loss);
            if let Some(r) = &e.remote {
                t.packets_lost_out += r.packets_lost;
            }
            rtcp_rtt = rtcp_rtt.max(e.rtt);
        }
        for i in &report.ingress {
            t.rtp_packets_in += i.packets;
            t.rtp_bytes_in += i.bytes;
            t.nacks_sent += i.nacks;
            t.plis_sent += i.plis;
            t.firs_sent += i.firs;
            t.fraction_lost_in = worst(t.fraction_lost_in, i.loss);
            rtcp_rtt = rtcp_rtt.max(i.rtt);
        }
        let ice_rtt = report
            .peer
            .selected_candidate_pair
            .as_ref()
            .and_then(|p| p.current_round_trip_time);
        t.rtt_ms = rtcp_rtt
            .or(ice_rtt)
            .or(report.peer.rtt)
            .map(|d| d.as_secs_f64() * 1000.0);
        Ok(t)
    }
}
