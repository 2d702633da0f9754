//! The packet path: where a published packet goes once its session has decrypted it, and
//! where keyframe requests go the other way.
//!
//! Forward: a packet from a publisher on this shard is pushed once into the ring of each
//! other shard that has subscribers ([`ShardCore::route_from_publisher`]) and written to
//! this shard's down-tracks; packets from other shards arrive through the rings
//! ([`ShardCore::drain_rings`]) and are written to this shard's down-tracks. Writing one
//! down-track ([`Delivery::forward_one`]) translates the payload type, rewrites sequence
//! number and timestamp ([`crate::forward::Rewriter`]) and hands the packet to the
//! subscriber's str0m session, which encrypts it at once into the batch's outgoing queue
//! (`DirectApi::send_rtp_now`, str0m patch 9), or queues it to be flushed when the batch
//! ends if the session's deadline has come or the stream has packets waiting. No
//! allocation per subscriber: the payload is reference-counted and the encrypted datagram
//! comes from str0m's buffer pool.
//!
//! Each video packet is then kept once in its route's store
//! ([`crate::forward::RtxStore`]); a subscriber's NACK is answered from there with that
//! subscriber's numbering ([`ShardCore::answer_nacks`]), instead of from a copy kept per
//! subscriber.
//!
//! Reverse: keyframe requests from subscribers (a PLI/FIR, or a down-track that waits for a
//! keyframe) are collected per track during the batch and sent once per track at its end
//! ([`ShardCore::send_keyframe_requests`]): to the publisher's session here, or through the
//! ring to the publisher's shard.

use std::time::{Duration, Instant};

use str0m::change::RtpSent;
use str0m::media::MediaKind;
use str0m::rtp::RtpWrite;

use super::record::write_plain_rtp;
use super::ShardCore;
use crate::engine::command::SessionEvent;
use crate::engine::ring::{MediaPacket, ShardMsg};
use crate::engine::route::{DownTrack, Route, NO_PT};
use crate::engine::session::{DrainOut, Session};
use crate::engine::slab::Slab;
use crate::engine::TrackKey;
use crate::forward::{overload, Decision, InPacket, LayerPacket, LayerVerdict};
use crate::stats::ShardStats;

/// What writing a packet to down-tracks touches: the shard's down-tracks and sessions, the
/// batch's lists, its counters. Borrowed from the [`ShardCore`] for one packet.
pub(super) struct Delivery<'a> {
    pub(super) downs: &'a mut Slab<DownTrack>,
    pub(super) sessions: &'a mut Slab<Session>,
    /// Sessions that queued RTP in this batch (flushed when it ends).
    pub(super) dirty: &'a mut Vec<usize>,
    /// Tracks whose publisher should be asked for a keyframe, with the rank of the
    /// encoding wanted.
    pub(super) want_keyframe: &'a mut Vec<(TrackKey, u8)>,
    pub(super) counters: &'a mut ShardStats,
    /// Where packets sent at once go (the shard's next `sendmmsg`).
    pub(super) out: &'a mut DrainOut,
    /// The shard's time origin, for the rewriter's arrival times.
    pub(super) epoch: Instant,
    /// The pass's time: packets are sent with it.
    pub(super) now: Instant,
    /// The shard is shedding load ([`crate::forward::overload`]).
    pub(super) overloaded: bool,
}

/// The [`Delivery`] of a `ShardCore`: a macro, not a method, so that it borrows only the
/// fields it names and the caller can keep the route (in `routes`) it forwards along.
macro_rules! delivery {
    ($core:expr) => {
        Delivery {
            downs: &mut $core.downs,
            sessions: &mut $core.sessions,
            dirty: &mut $core.dirty,
            want_keyframe: &mut $core.want_keyframe,
            counters: &mut $core.counters,
            out: &mut $core.out,
            epoch: $core.epoch,
            now: $core.now,
            overloaded: $core.backlog.overloaded(),
        }
    };
}

impl ShardCore {
    /// A packet from a publisher on this shard: to other shards and local down-tracks.
    pub(super) fn route_from_publisher(&mut self, pkt: MediaPacket) {
        let Some(route) = self.routes.map.get_mut(&pkt.track) else {
            return;
        };
        for &(dest, _) in &route.remote {
            let Some(Some(p)) = self.producers.get_mut(dest) else {
                continue;
            };
            match p.push(ShardMsg::Media(pkt.clone())) {
                Ok(()) => self.wake_peer[dest] = true,
                Err(_) => self.counters.ring_full_drops += 1,
            }
        }
        delivery!(self).fan_out(route, pkt, Duration::ZERO);
    }

    /// Everything other shards sent us: media for our down-tracks, keyframe requests for
    /// our publishers.
    pub(super) fn drain_rings(&mut self, now: Instant) {
        for from in 0..self.consumers.len() {
            while let Some(msg) = self.consumers[from].as_mut().and_then(|c| c.pop().ok()) {
                match msg {
                    ShardMsg::Media(pkt) => {
                        if let Some(route) = self.routes.map.get_mut(&pkt.track) {
                            let waited = now.saturating_duration_since(pkt.arrival);
                            delivery!(self).fan_out(route, pkt, waited);
                        }
                    }
                    ShardMsg::KeyframeRequest(track, rank) => {
                        self.want_keyframe.push((track, rank))
                    }
                    ShardMsg::Data(pkt) => self.deliver_data(&pkt),
                }
            }
        }
    }

    /// Keyframe requests a subscribe session received (PLI/FIR on an m-line): note the
    /// forwarded track of each.
    pub(super) fn collect_keyframe_requests(&mut self) {
        if self.out.keyframe_requests.is_empty() {
            return;
        }
        for &(sslot, mid, rid) in &self.out.keyframe_requests {
            if let Some(s) = self.sessions.get(sslot) {
                for &d in &s.downs {
                    if let Some(dt) = self.downs.get(d) {
                        // A relay's encodings share the m-line: the rid names which.
                        let same = dt.pin.is_none() || rid.is_none() || dt.rid() == rid;
                        if dt.mid == mid && same {
                            self.want_keyframe.push((dt.track, dt.keyframe_rank()));
                        }
                    }
                }
            }
        }
        self.out.keyframe_requests.clear();
    }

    /// NACKs subscribe sessions received this batch: each NACKed packet that the track's
    /// store still has is resent with the subscriber's sequence number and timestamp.
    pub(super) fn answer_nacks(&mut self, now: Instant) {
        if self.out.nacks.is_empty() {
            return;
        }
        let mut nacks = std::mem::take(&mut self.out.nacks);
        for (sslot, req) in nacks.drain(..) {
            let asked = req.seq_nos.len() as u64;
            let Some(s) = self.sessions.get_mut(sslot) else {
                continue;
            };
            let downs = &mut self.downs;
            let dslot = s.downs.iter().copied().find(|&d| {
                downs
                    .get(d)
                    .is_some_and(|dt| dt.ssrc == Some(req.ssrc) && dt.kind == MediaKind::Video)
            });
            let down = dslot.and_then(|d| downs.get_mut(d));
            let routes = &self.routes;
            let store = down
                .as_ref()
                .and_then(|d| routes.map.get(&d.track))
                .and_then(|r| r.store.as_ref());
            let (Some(d), Some(store)) = (down, store) else {
                self.counters.nacks_unanswered += asked;
                continue;
            };
            if d.paused() {
                // Its video restarts at a keyframe: repairs would only load a link that
                // cannot carry even the lowest layer.
                self.counters.nacks_unanswered += asked;
                continue;
            }
            let mut sent = 0u64;
            let _ = s.guarded(|s| {
                let mut api = s.rtc.direct_api();
                let Some(tx) = api.stream_tx_to_flush(&req.ssrc) else {
                    return;
                };
                for &seq in &req.seq_nos {
                    if !d.rtx_budget.has_credit() {
                        // Out of budget: the rest go unanswered without a lookup.
                        break;
                    }
                    let Some(origin) = d.rewriter.origin_of(*seq) else {
                        continue;
                    };
                    let Some(p) = store.get(origin.source, origin.seq, now) else {
                        continue;
                    };
                    // A gap the subscriber saw for a packet lost upstream may be one of a
                    // layer it does not get (the rewriter cannot tell what was lost): such a
                    // repair is not sent (a base-layer subscriber got T2 frames that way).
                    if p.layer.active != 0 {
                        if let Some(cur) = d.selector.current() {
                            let above = p.layer.temporal > cur.temporal
                                || (p.layer.svc && p.layer.spatial > cur.spatial);
                            if above {
                                continue;
                            }
                        }
                    }
                    let out_pt = d.pt_map[(p.pt & 0x7f) as usize];
                    if out_pt == NO_PT {
                        continue;
                    }
                    let resend = RtpWrite::new(
                        out_pt.into(),
                        seq,
                        origin.out_ts(p.ts),
                        p.arrival,
                        p.payload.clone(),
                    )
                    .marker(p.marker)
                    .ext_vals(p.ext.clone());
                    if d.rtx_budget.try_spend(p.payload.len()) && tx.write_resend(resend) {
                        sent += 1;
                    }
                }
            });
            self.counters.rtx_sent += sent;
            self.counters.nacks_unanswered += asked - sent;
            if sent > 0 && !s.dirty {
                s.dirty = true;
                self.dirty.push(sslot);
            }
        }
        self.out.nacks = nacks;
    }

    /// Keyframe requests: to the local publisher session or to the publisher's shard, once
    /// per track and encoding per batch (the publisher session throttles further).
    pub(super) fn send_keyframe_requests(&mut self, now: Instant) {
        if self.want_keyframe.is_empty() {
            return;
        }
        let mut reqs = std::mem::take(&mut self.want_keyframe);
        reqs.sort_unstable();
        reqs.dedup();
        for (track, rank) in reqs.drain(..) {
            if track.shard() == self.id {
                if let Some(&(slot, mid)) = self.ups.get(&track) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        let span = s.span.clone();
                        let _entered = span.enter();
                        if s.request_keyframe(mid, rank, now) {
                            self.counters.keyframe_requests_sent += 1;
                            self.after_mutation(slot);
                        } else {
                            let due = s.keyframe_request_due();
                            self.note_keyframe_due(due);
                        }
                    }
                }
            } else if let Some(Some(p)) = self.producers.get_mut(track.shard()) {
                if p.push(ShardMsg::KeyframeRequest(track, rank)).is_ok() {
                    self.wake_peer[track.shard()] = true;
                } else {
                    self.counters.ring_full_drops += 1;
                }
            }
        }
        self.want_keyframe = reqs;
    }
}

impl Delivery<'_> {
    /// One packet of `route`'s track on this shard: shed load if the shard is overloaded
    /// (or the packet `waited` too long in a ring), forward it to the route's down-tracks,
    /// keep it in the route's store.
    pub(super) fn fan_out(&mut self, route: &mut Route, pkt: MediaPacket, waited: Duration) {
        self.shed(route, &pkt, waited);
        route.rates.add(pkt.layer.spatial, pkt.payload.len());
        self.forward(&route.local, &pkt);
        if let Some(store) = &mut route.store {
            store.insert(pkt.source, pkt.seq, pkt.arrival, pkt);
        }
    }

    /// Under overload ([`crate::forward::overload`]), pause one more of `route`'s video
    /// down-tracks until the next keyframe (they take turns), so the work shrinks by as
    /// many subscribers as the overload needs, not by all of them.
    fn shed(&mut self, route: &mut Route, pkt: &MediaPacket, waited: Duration) {
        if !route.video() {
            return;
        }
        let protected = route.keyframe.protects(pkt.keyframe, pkt.marker);
        if !overload::shed(self.overloaded, waited, protected) {
            return;
        }
        let n = route.local.len();
        for i in 0..n {
            let slot = route.local[(route.shed_cursor + i) % n];
            let Some(d) = self.downs.get_mut(slot) else {
                continue;
            };
            if d.active() && !d.rewriter.waiting_for_keyframe() {
                d.rewriter.request_keyframe_gate();
                self.counters.overload_pauses += 1;
                route.shed_cursor = (route.shed_cursor + i + 1) % n;
                return;
            }
        }
    }

    /// Forward one packet to this shard's down-tracks `dslots` of its track.
    #[inline]
    pub(super) fn forward(&mut self, dslots: &[usize], pkt: &MediaPacket) {
        for &d in dslots {
            self.forward_one(d, pkt);
        }
    }

    /// Forward one packet to one down-track: choose the layer (simulcast), translate PT,
    /// rewrite seq/ts, write into the subscriber's session. No allocation: the payload is
    /// reference-counted.
    #[inline]
    fn forward_one(&mut self, dslot: usize, pkt: &MediaPacket) {
        let c = &mut *self.counters;
        let Some(d) = self.downs.get_mut(dslot) else {
            return;
        };
        let Some(ssrc) = d.ssrc else {
            return;
        };
        let input = InPacket {
            source: pkt.source,
            seq: pkt.seq,
            ts: pkt.ts,
            keyframe_start: pkt.keyframe,
            arrival_us: pkt
                .arrival
                .saturating_duration_since(self.epoch)
                .as_micros() as u64,
            clock_offset: pkt.layer.clock_offset,
        };
        let mut marker = pkt.marker;
        if let Some((rank, _)) = d.pin {
            // A relay of one encoding: the others go on their own streams.
            if pkt.layer.active != 0 && !pkt.layer.svc && pkt.layer.spatial != rank {
                return;
            }
        } else if pkt.layer.active != 0 {
            if pkt.layer.active != d.seen_active || pkt.layer.svc != d.svc() {
                d.seen_active = pkt.layer.active;
                d.set_svc(pkt.layer.svc);
                d.retarget();
            }
            let verdict = d.selector.select(&LayerPacket {
                spatial: pkt.layer.spatial,
                temporal: pkt.layer.temporal,
                keyframe_start: pkt.keyframe,
                frame_start: pkt.layer.frame_start,
                frame_end: pkt.layer.frame_end,
                switch_point: pkt.layer.switch_point,
                switch_to: pkt.layer.switch_to,
            });
            let now_layers = (d.selector.current(), d.seen_active);
            if now_layers != d.reported {
                d.reported = now_layers;
                if let Some(s) = self.sessions.get(d.session) {
                    let _ = s.events.send(SessionEvent::Layers {
                        down: d.id,
                        current: now_layers.0,
                        active: now_layers.1,
                    });
                }
            }
            if let LayerVerdict::Forward { set_marker: true } = verdict {
                // SVC: the end of the top layer this subscriber gets ends its picture.
                marker = true;
            }
            if verdict == LayerVerdict::Drop {
                if d.paused() {
                    c.dropped_bandwidth += 1;
                } else {
                    c.dropped_layer += 1;
                }
                // Dropped on purpose: the subscriber must not see a gap for it.
                d.rewriter.skip(&input);
                if let Some(rank) = d.selector.wants_keyframe() {
                    if !self.overloaded && d.keyframe_retry.try_request(pkt.arrival) {
                        self.want_keyframe.push((d.track, rank));
                    }
                }
                return;
            }
        } else if d.paused() {
            // Video without layers, paused by the bandwidth allocator: no gap for it, and
            // it resumes at a keyframe (`DownTrack::set_grant`).
            c.dropped_bandwidth += 1;
            d.rewriter.skip(&input);
            return;
        }
        let out_pt = d.pt_map[(pkt.pt & 0x7f) as usize];
        if out_pt == NO_PT {
            c.dropped_no_codec += 1;
            return;
        }
        match d.rewriter.rewrite(&input) {
            Decision::Forward { seq, ts } => {
                if let Some(p) = d.plain.as_deref_mut() {
                    // A recording transport's track: plain RTP, no session
                    // ([`super::record`]).
                    let mut buf = str0m::net::take_datagram();
                    let payload = &pkt.payload[..];
                    write_plain_rtp(&mut buf, marker, out_pt, seq as u16, ts, p.ssrc, payload);
                    p.on_sent(ts, pkt.arrival, payload.len());
                    let len = buf.len() as u64;
                    if let Some(s) = self.sessions.get_mut(d.session) {
                        s.traffic.datagrams_out += 1;
                        s.traffic.bytes_out += len;
                    }
                    self.out.bytes_queued += len;
                    self.out.send.push(p.dest, buf);
                    c.rtp_forwarded += 1;
                    c.rtp_bytes_forwarded += payload.len() as u64;
                    return;
                }
                let Some(s) = self.sessions.get_mut(d.session) else {
                    return;
                };
                let video = d.kind == MediaKind::Video;
                let now = self.now;
                let sent = s.guarded(|s| {
                    let rtp = RtpWrite::new(
                        out_pt.into(),
                        seq.into(),
                        ts,
                        pkt.arrival,
                        pkt.payload.clone(),
                    )
                    .marker(marker)
                    .ext_vals(pkt.ext.clone())
                    .nackable(video);
                    s.rtc.direct_api().send_rtp_now(now, &ssrc, rtp)
                });
                let queued = match sent {
                    // Encrypted at once (str0m patch 9): straight to the batch's sendmmsg.
                    Some(Some(RtpSent::Transmit(t))) => {
                        s.transmit(t, self.out);
                        false
                    }
                    // Queued behind other packets of the stream, or the session's
                    // deadline has come: sent when the batch ends (`finish_batch`).
                    Some(Some(RtpSent::Queued)) => true,
                    Some(Some(RtpSent::Dropped)) => {
                        c.dropped_no_codec += 1;
                        return;
                    }
                    Some(None) => return,
                    None => {
                        c.session_panics += 1;
                        return;
                    }
                };
                c.rtp_forwarded += 1;
                c.rtp_bytes_forwarded += pkt.payload.len() as u64;
                d.rtx_budget.on_forwarded(pkt.payload.len());
                if queued && !s.dirty {
                    s.dirty = true;
                    self.dirty.push(d.session);
                }
            }
            Decision::DropWaitingKeyframe => {
                c.dropped_waiting_keyframe += 1;
                // While overloaded, paused subscribers resume at keyframes that come anyway
                // but do not ask for one: a keyframe is a burst of work for every waiting
                // subscriber of the track at once.
                if !self.overloaded && d.keyframe_retry.try_request(pkt.arrival) {
                    self.want_keyframe.push((d.track, d.keyframe_rank()));
                }
            }
            Decision::DropStale => c.dropped_stale += 1,
        }
    }
}
