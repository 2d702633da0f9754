//! The shard core: everything a shard owns (sessions, down-tracks, routes, deadlines,
//! counters) and every rule for driving it, with no I/O. It is handed datagrams,
//! commands and the time; it leaves outgoing datagrams in a queue and marks the shards
//! whose rings it wrote to. [`super::shard`] drives it from a `mio` poll loop over a UDP
//! socket; the in-memory harness ([`crate::testing`]) drives it from a benchmark.
//!
//! One batch: datagrams (demux by address, then STUN ufrag) → each is fed to its session,
//! which is drained → the media it produced is routed (local down-tracks directly, other
//! shards through one ring entry per shard) → [`ShardCore::tick`]: drain the rings from
//! other shards, run due timers, flush the sessions written in this batch (their RTP
//! leaves on one timeout input each), tear down dead sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, IceCreds, Input, Rtc};

use super::command::{
    CloseReason, Command, DownTrackSpec, SessionCreated, SessionEvent, SessionSpec, TrackInfo,
};
use super::demux::{DemuxTable, Lookup};
use super::ring::{Consumers, MediaPacket, Producers, ShardMsg};
use super::route::{DownTrack, Routes, NO_PT};
use super::session::{DrainOut, PendingOffer, Session, UpTrack};
use super::slab::Slab;
use super::timer::Timers;
use super::udp::SendQueue;
use super::{next_id, DownTrackId, SessionId, ShardId, TrackKey};
use crate::error::{NegotiationError, SubscribeError, TransportError};
use crate::forward::{Decision, InPacket};
use crate::stats::{CandidatePair, ShardStats, TransportStats};
use crate::transport::TransportState;
use crate::wire::{self, DatagramKind};

/// Largest SDP accepted (bytes). Browser offers with dozens of tracks stay far below.
pub(crate) const MAX_SDP_LEN: usize = 256 * 1024;
/// Most m-lines accepted in one SDP.
pub(crate) const MAX_MLINES: usize = 128;
/// Minimum spacing of keyframe requests per track, towards a publisher.
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(300);
/// How often a gated down-track repeats its keyframe request.
const GATED_RETRY: Duration = Duration::from_millis(500);
/// How long a subscriber's sent video packets are kept for NACK. str0m keeps 3 s by default;
/// each cached packet costs ≈ 440 bytes of bookkeeping per subscriber (the payload itself is
/// shared), so the window is most of a subscriber's memory. Half a second (Janus's default
/// NACK queue) repairs losses on paths with round trips up to ≈ 400 ms.
const RTX_WINDOW: Duration = Duration::from_millis(500);
/// Upper bound of the retransmission cache per subscriber stream (packets).
const RTX_MAX_PACKETS: usize = 256;
/// Housekeeping period (liveness checks, keyframe retries).
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Discovery of the shard's server-reflexive address from one STUN server.
struct Srflx {
    server: SocketAddr,
    txid: [u8; 12],
    sent_at: Instant,
    tries: u8,
    /// `None` while pending; `Some(None)` when the server never answered.
    result: Option<Option<SocketAddr>>,
    waiters: Vec<SessionId>,
}

/// Attempts per STUN server before giving up, and the spacing between them.
const SRFLX_TRIES: u8 = 4;
const SRFLX_RETRY: Duration = Duration::from_millis(500);

/// The state of one shard, without its socket and thread.
pub(crate) struct ShardCore {
    id: ShardId,
    local_addr: SocketAddr,
    producers: Producers,
    consumers: Consumers,
    /// Shards whose rings this batch wrote to: the driver wakes each once.
    wake_peer: Vec<bool>,

    sessions: Slab<Session>,
    by_id: HashMap<SessionId, usize>,
    demux: DemuxTable,
    downs: Slab<DownTrack>,
    down_by_id: HashMap<DownTrackId, usize>,
    /// Published tracks received on this shard: key → (session slot, mid).
    ups: HashMap<TrackKey, (usize, Mid)>,
    routes: Routes,
    timers: Timers,
    out: DrainOut,
    dirty: Vec<usize>,
    doomed: Vec<usize>,
    /// Tracks whose publisher should be asked for a keyframe.
    want_keyframe: Vec<TrackKey>,
    /// Gauges are filled in by `snapshot`; the counters are bumped in place.
    counters: ShardStats,
    srflx: Vec<Srflx>,
    epoch: Instant,
    last_housekeeping: Instant,
    running: bool,
}

impl ShardCore {
    pub(crate) fn new(
        id: ShardId,
        local_addr: SocketAddr,
        producers: Producers,
        consumers: Consumers,
        shards: usize,
        now: Instant,
    ) -> ShardCore {
        ShardCore {
            id,
            local_addr,
            producers,
            consumers,
            wake_peer: vec![false; shards],
            sessions: Slab::default(),
            by_id: HashMap::new(),
            demux: DemuxTable::default(),
            downs: Slab::default(),
            down_by_id: HashMap::new(),
            ups: HashMap::new(),
            routes: Routes::default(),
            timers: Timers::default(),
            out: DrainOut::default(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            want_keyframe: Vec::new(),
            counters: ShardStats {
                shard: id,
                local_addr: Some(local_addr),
                ..Default::default()
            },
            srflx: Vec::new(),
            epoch: now,
            last_housekeeping: now,
            running: true,
        }
    }

    /// The shard's index.
    pub(crate) fn id(&self) -> ShardId {
        self.id
    }

    /// False once a shutdown command was handled.
    pub(crate) fn running(&self) -> bool {
        self.running
    }

    /// How long the driver may sleep before [`ShardCore::tick`] has work.
    pub(crate) fn wait(&self, now: Instant) -> Duration {
        let housekeeping = (self.last_housekeeping + HOUSEKEEPING).saturating_duration_since(now);
        self.timers
            .next()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(HOUSEKEEPING)
            .min(housekeeping)
    }

    /// Datagrams waiting to be sent.
    pub(crate) fn outgoing(&mut self) -> &mut SendQueue {
        &mut self.out.send
    }

    /// Hand over (and clear) the shards whose rings this batch wrote to.
    pub(crate) fn take_wakes(&mut self, mut wake: impl FnMut(ShardId)) {
        for (i, w) in self.wake_peer.iter_mut().enumerate() {
            if *w {
                *w = false;
                wake(i);
            }
        }
    }

    /// End of a batch: ring input, due timers, housekeeping, flushes and teardowns.
    /// Afterwards [`ShardCore::outgoing`] holds everything to send.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.drain_rings(now);
        self.run_timers(now);
        if now.saturating_duration_since(self.last_housekeeping) >= HOUSEKEEPING {
            self.last_housekeeping = now;
            self.housekeeping(now);
        }
        self.finish_batch(now);
    }

    /// Orderly end: close every session so API handles learn about it.
    pub(crate) fn shutdown(&mut self) {
        let slots: Vec<usize> = self.sessions.iter().map(|(i, _)| i).collect();
        for slot in slots {
            self.teardown(slot, CloseReason::Requested);
        }
    }

    // ---- network input -------------------------------------------------------------

    /// One datagram from the network, addressed to this shard's socket.
    pub(crate) fn handle_datagram(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        self.on_datagram(data, source, now);
    }

    fn on_datagram(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        let c = &mut self.counters;
        let kind = wire::classify(data);
        if kind == DatagramKind::Unknown {
            c.dropped_malformed += 1;
            return;
        }
        if kind == DatagramKind::Stun && self.srflx.iter().any(|x| x.server == source) {
            self.on_stun_response(data, source);
            return;
        }
        let (slot, via_ufrag) = match self.demux.lookup(kind, data, source) {
            Lookup::Session { slot, via_ufrag } => (slot, via_ufrag),
            Lookup::UnknownSource => {
                c.dropped_unknown_source += 1;
                return;
            }
            Lookup::StunRejected => {
                c.stun_rejected += 1;
                return;
            }
        };
        let Ok(contents) = data.try_into() else {
            if kind == DatagramKind::Stun {
                c.stun_rejected += 1;
            } else {
                c.dropped_malformed += 1;
            }
            return;
        };
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        session.last_rx = now;
        session.traffic.datagrams_in += 1;
        session.traffic.bytes_in += data.len() as u64;
        // Everything this datagram causes (including routing the media it carries) is
        // logged in the session's span. Cloning a disabled span copies nothing.
        let span = session.span.clone();
        let _entered = span.enter();
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local_addr,
                contents,
            },
        );
        let new_addrs_before = self.out.new_addrs.len();
        match session.guarded(|s| s.rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.counters.session_input_errors += 1;
                tracing::debug!(session = session.id.0, "input refused: {e}");
            }
            None => self.counters.session_panics += 1,
        }
        self.after_mutation(slot);
        if via_ufrag && self.out.new_addrs.len() == new_addrs_before {
            // A STUN request we could route but the session did not answer: wrong
            // integrity, wrong remote ufrag, or a retransmit of an answered one.
            if !self.demux.has_addr(&source) {
                self.counters.stun_unanswered += 1;
            }
        }
    }

    fn on_stun_response(&mut self, data: &[u8], source: SocketAddr) {
        let Ok((txid, mapped)) = wire::stun_binding_response(data) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(x) = self
            .srflx
            .iter_mut()
            .find(|x| x.server == source && x.txid == txid && x.result.is_none())
        else {
            self.counters.stun_rejected += 1;
            return;
        };
        x.result = Some(Some(mapped));
        let waiters = std::mem::take(&mut x.waiters);
        for id in waiters {
            if let Some(slot) = self.slot_of(id) {
                self.add_srflx_candidate(slot, mapped);
            }
        }
    }

    fn add_srflx_candidate(&mut self, slot: usize, mapped: SocketAddr) {
        if mapped == self.local_addr || mapped.is_ipv4() != self.local_addr.is_ipv4() {
            return;
        }
        let Ok(c) = Candidate::server_reflexive(mapped, self.local_addr, "udp") else {
            return;
        };
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        let span = s.span.clone();
        let _entered = span.enter();
        let text = c.to_sdp_string();
        s.guarded(|s| {
            s.rtc.add_local_candidate(c);
        });
        let _ = s.events.send(SessionEvent::LocalCandidate(text));
        self.after_mutation(slot);
    }

    /// Ask each STUN server (once per shard) for our mapped address on behalf of a session.
    fn discover_srflx(&mut self, id: SessionId, slot: usize, servers: &[SocketAddr], now: Instant) {
        for &server in servers {
            if server.is_ipv4() != self.local_addr.is_ipv4() {
                continue;
            }
            match self.srflx.iter_mut().find(|x| x.server == server) {
                Some(x) => match x.result {
                    Some(Some(mapped)) => self.add_srflx_candidate(slot, mapped),
                    Some(None) => {}
                    None => x.waiters.push(id),
                },
                None => {
                    let txid: [u8; 12] = rand::random();
                    let request = wire::stun_binding_request(txid);
                    self.out.bytes_queued += request.len() as u64;
                    self.out.send.push(server, request.to_vec());
                    self.srflx.push(Srflx {
                        server,
                        txid,
                        sent_at: now,
                        tries: 1,
                        result: None,
                        waiters: vec![id],
                    });
                }
            }
        }
    }

    /// Drain a session after a mutation, schedule its deadline and route what it produced.
    fn after_mutation(&mut self, slot: usize) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        if let Some(deadline) = session.drain(&mut self.out) {
            if deadline != session.deadline {
                session.deadline = deadline;
                self.timers.schedule(deadline, slot);
            }
        }
        if session.dead.is_some() {
            self.doomed.push(slot);
        }
        for (addr, s) in self.out.new_addrs.drain(..) {
            self.demux.bind_addr(addr, s);
        }
        if !self.out.media.is_empty() {
            let mut media = std::mem::take(&mut self.out.media);
            self.counters.rtp_in += media.len() as u64;
            for pkt in media.drain(..) {
                self.route_from_publisher(pkt);
            }
            self.out.media = media;
        }
        if !self.out.keyframe_requests.is_empty() {
            let reqs = std::mem::take(&mut self.out.keyframe_requests);
            for (sslot, mid) in &reqs {
                if let Some(s) = self.sessions.get(*sslot) {
                    for &d in &s.downs {
                        if let Some(dt) = self.downs.get(d) {
                            if dt.mid == *mid {
                                self.want_keyframe.push(dt.track);
                            }
                        }
                    }
                }
            }
            self.out.keyframe_requests = reqs;
            self.out.keyframe_requests.clear();
        }
    }

    // ---- the packet path -------------------------------------------------------------

    /// A packet from a publisher on this shard: to local down-tracks and other shards.
    fn route_from_publisher(&mut self, pkt: MediaPacket) {
        let Some(route) = self.routes.map.get(&pkt.track) else {
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
        forward(
            &mut self.downs,
            &mut self.sessions,
            &mut self.dirty,
            &mut self.want_keyframe,
            &mut self.counters,
            self.epoch,
            &route.local,
            &pkt,
        );
    }

    fn drain_rings(&mut self, _now: Instant) {
        for from in 0..self.consumers.len() {
            while let Some(msg) = self.consumers[from].as_mut().and_then(|c| c.pop().ok()) {
                match msg {
                    ShardMsg::Media(pkt) => {
                        let Some(route) = self.routes.map.get(&pkt.track) else {
                            continue;
                        };
                        forward(
                            &mut self.downs,
                            &mut self.sessions,
                            &mut self.dirty,
                            &mut self.want_keyframe,
                            &mut self.counters,
                            self.epoch,
                            &route.local,
                            &pkt,
                        );
                    }
                    ShardMsg::KeyframeRequest(track) => self.want_keyframe.push(track),
                }
            }
        }
    }

    /// Keyframe requests: to the local publisher session or to the publisher's shard.
    fn send_keyframe_requests(&mut self, now: Instant) {
        if self.want_keyframe.is_empty() {
            return;
        }
        let mut reqs = std::mem::take(&mut self.want_keyframe);
        reqs.sort_unstable();
        reqs.dedup();
        for track in reqs.drain(..) {
            if track.shard() == self.id {
                if let Some(&(slot, mid)) = self.ups.get(&track) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        let span = s.span.clone();
                        let _entered = span.enter();
                        if s.request_keyframe(mid, now, KEYFRAME_THROTTLE) {
                            self.counters.keyframe_requests_sent += 1;
                            self.after_mutation(slot);
                        }
                    }
                }
            } else if let Some(Some(p)) = self.producers.get_mut(track.shard()) {
                if p.push(ShardMsg::KeyframeRequest(track)).is_ok() {
                    self.wake_peer[track.shard()] = true;
                } else {
                    self.counters.ring_full_drops += 1;
                }
            }
        }
        self.want_keyframe = reqs;
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some((at, slot)) = self.timers.pop_due(now) {
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            if s.deadline != at {
                continue; // stale entry
            }
            s.deadline = far_future(now);
            let span = s.span.clone();
            let _entered = span.enter();
            match s.guarded(|s| s.rtc.handle_input(Input::Timeout(now))) {
                Some(_) => {}
                None => self.counters.session_panics += 1,
            }
            s.dirty = false;
            self.after_mutation(slot);
        }
        if self.timers.len() > 4 * self.sessions.len() + 1024 {
            let sessions = &self.sessions;
            self.timers
                .compact(|t, s| sessions.get(s).map(|x| x.deadline == t).unwrap_or(false));
        }
    }

    fn finish_batch(&mut self, now: Instant) {
        self.send_keyframe_requests(now);
        // Flush sessions written this batch: their packets leave on a timeout input.
        while let Some(slot) = self.dirty.pop() {
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            s.dirty = false;
            let span = s.span.clone();
            let _entered = span.enter();
            if s.guarded(|s| s.rtc.handle_input(Input::Timeout(now)))
                .is_none()
            {
                self.counters.session_panics += 1;
            }
            self.after_mutation(slot);
        }
        while let Some(slot) = self.doomed.pop() {
            let reason = self
                .sessions
                .get(slot)
                .and_then(|s| s.dead.clone())
                .unwrap_or(CloseReason::Requested);
            self.teardown(slot, reason);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        for x in &mut self.srflx {
            if x.result.is_none() && now.saturating_duration_since(x.sent_at) >= SRFLX_RETRY {
                if x.tries >= SRFLX_TRIES {
                    tracing::warn!(shard = self.id, server = %x.server, "STUN server did not answer");
                    x.result = Some(None);
                    x.waiters.clear();
                } else {
                    x.tries += 1;
                    x.sent_at = now;
                    let request = wire::stun_binding_request(x.txid);
                    self.out.bytes_queued += request.len() as u64;
                    self.out.send.push(x.server, request.to_vec());
                }
            }
        }
        for (slot, s) in self.sessions.iter_mut() {
            s.traffic.update_rates(now);
            if s.dead.is_some() {
                continue;
            }
            if !s.connected && now.saturating_duration_since(s.created) > s.connect_timeout {
                s.dead = Some(CloseReason::ConnectTimeout);
                self.doomed.push(slot);
            } else if s.connected && now.saturating_duration_since(s.last_rx) > s.idle_timeout {
                s.dead = Some(CloseReason::IdleTimeout);
                self.doomed.push(slot);
            }
        }
        for (_, d) in self.downs.iter_mut() {
            if d.active() && d.rewriter.waiting_for_keyframe() {
                let due = d
                    .last_keyframe_request
                    .map(|t| now.saturating_duration_since(t) >= GATED_RETRY)
                    .unwrap_or(true);
                if due {
                    d.last_keyframe_request = Some(now);
                    self.want_keyframe.push(d.track);
                }
            }
        }
    }

    // ---- commands ----------------------------------------------------------------------

    /// One command from the API side.
    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        let span = match &cmd {
            Command::AcceptOffer { id, .. }
            | Command::AddRemoteCandidate { id, .. }
            | Command::AddDownTrack { id, .. }
            | Command::RemoveDownTrack { id, .. }
            | Command::CreateOffer { id, .. }
            | Command::AcceptAnswer { id, .. }
            | Command::CloseSession { id }
            | Command::TransportStats { id, .. } => self.span_of(*id),
            _ => tracing::Span::none(),
        };
        let _entered = span.enter();
        match cmd {
            Command::CreateSession { spec, reply } => {
                let created = self.create_session(*spec, now);
                let _ = reply.send(created);
            }
            Command::AcceptOffer { id, sdp, reply } => {
                let r = self.accept_offer(id, &sdp);
                let _ = reply.send(r);
            }
            Command::AddRemoteCandidate {
                id,
                candidate,
                reply,
            } => {
                let r = self.add_remote_candidate(id, &candidate);
                let _ = reply.send(r);
            }
            Command::AddDownTrack { id, spec, reply } => {
                let r = self.add_down_track(id, *spec);
                let _ = reply.send(r);
            }
            Command::RemoveDownTrack { id, down } => self.remove_down_track(id, down),
            Command::CreateOffer {
                id,
                ice_restart,
                reply,
            } => {
                let r = self.create_offer(id, ice_restart);
                let _ = reply.send(r);
            }
            Command::AcceptAnswer { id, sdp, reply } => {
                let r = self.accept_answer(id, &sdp);
                let _ = reply.send(r);
            }
            Command::AddRemoteRoute { track, dest } => self.routes.add_remote(track, dest),
            Command::RemoveRemoteRoute { track, dest } => self.routes.remove_remote(track, dest),
            Command::CloseSession { id } => {
                if let Some(&slot) = self.by_id.get(&id) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        s.guarded(|s| s.rtc.disconnect());
                        if s.dead.is_none() {
                            s.dead = Some(CloseReason::Requested);
                        }
                    }
                    self.after_mutation(slot);
                    if !self.doomed.contains(&slot) {
                        self.doomed.push(slot);
                    }
                }
            }
            #[cfg(feature = "testing")]
            Command::InjectPanic { id } => {
                if let Some(&slot) = self.by_id.get(&id) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        let r: Option<()> = s.guarded(|_| panic!("injected by a test"));
                        if r.is_none() {
                            self.counters.session_panics += 1;
                            self.doomed.push(slot);
                        }
                    }
                }
            }
            // The driver sleeps for it (`Shard::handle_commands`); in memory it is a no-op.
            #[cfg(feature = "testing")]
            Command::Pause(_) => {}
            Command::Stats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::TransportStats { id, reply } => {
                let _ = reply.send(self.transport_stats(id));
            }
            Command::Shutdown => self.running = false,
        }
    }

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

    /// The tracing span of a session (a disabled span if there is no such session).
    fn span_of(&self, id: SessionId) -> tracing::Span {
        self.slot_of(id)
            .and_then(|slot| self.sessions.get(slot))
            .map(|s| s.span.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    /// A snapshot of one session's transport statistics: Rheomesh's traffic counters and
    /// str0m's stream counters, read now (nothing is computed for sessions nobody asks about).
    fn transport_stats(&mut self, id: SessionId) -> Result<TransportStats, TransportError> {
        let slot = self.slot_of(id).ok_or(TransportError::Closed)?;
        let shard = self.id;
        let s = self.sessions.get_mut(slot).ok_or(TransportError::Closed)?;
        let Some(report) = s.guarded(|s| s.rtc.stats_report()) else {
            self.counters.session_panics += 1;
            self.doomed.push(slot);
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

    fn create_session(&mut self, spec: SessionSpec, now: Instant) -> SessionCreated {
        let ufrag = loop {
            let u = Alphanumeric.sample_string(&mut rand::rng(), 8);
            if !self.demux.has_ufrag(&u) {
                break u;
            }
        };
        let pass = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let cfg = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            });
        let mut rtc = spec.media.apply(cfg).build(now);
        let mut candidates = Vec::new();
        if let Ok(c) = Candidate::host(self.local_addr, "udp") {
            candidates.push(c.to_sdp_string());
            rtc.add_local_candidate(c);
        }
        for ip in &spec.announced_ips {
            let addr = SocketAddr::new(*ip, self.local_addr.port());
            if addr == self.local_addr || ip.is_ipv4() != self.local_addr.is_ipv4() {
                continue;
            }
            if let Ok(c) = Candidate::server_reflexive(addr, self.local_addr, "udp") {
                candidates.push(c.to_sdp_string());
                rtc.add_local_candidate(c);
            }
        }
        let slot = self.sessions.next_slot();
        // A child of the shard's span (the current one on the shard thread).
        let span = tracing::info_span!(
            "session",
            transport = spec.id.0,
            router = %spec.router,
            role = spec.role.as_str(),
        );
        let entered = span.clone().entered();
        let session = Session {
            id: spec.id,
            slot,
            role: spec.role,
            rtc,
            span,
            traffic: Default::default(),
            ufrag: ufrag.clone(),
            events: spec.events,
            deadline: now,
            addrs: Vec::new(),
            created: now,
            last_rx: now,
            connected: false,
            connect_timeout: spec.connect_timeout,
            idle_timeout: spec.idle_timeout,
            dead: None,
            dirty: false,
            up: Vec::new(),
            up_by_ssrc: Vec::new(),
            pending_offer: None,
            remote_ufrag: None,
            downs: Vec::new(),
            to_stop: Vec::new(),
            awaiting_answer: Vec::new(),
            anchor_mid: None,
        };
        let got = self.sessions.insert(session);
        debug_assert_eq!(got, slot);
        self.by_id.insert(spec.id, slot);
        self.demux.add_ufrag(ufrag.clone(), slot);
        self.timers.schedule(now, slot);
        self.after_mutation(slot);
        self.discover_srflx(spec.id, slot, &spec.stun_servers, now);
        drop(entered);
        SessionCreated { candidates, ufrag }
    }

    fn slot_of(&self, id: SessionId) -> Option<usize> {
        let slot = *self.by_id.get(&id)?;
        let s = self.sessions.get(slot)?;
        s.dead.is_none().then_some(slot)
    }

    /// Keep the ufrag map in step with the session's current local credentials (they
    /// change on ICE restart). The old ufrag stays valid until the session closes.
    fn sync_ufrag(&mut self, slot: usize) {
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        let u = s.rtc.direct_api().local_ice_credentials().ufrag;
        if u != s.ufrag {
            s.ufrag = u.clone();
            self.demux.add_ufrag(u, slot);
        }
    }

    fn add_remote_candidate(&mut self, id: SessionId, cand: &str) -> Result<(), TransportError> {
        let slot = self.slot_of(id).ok_or(TransportError::Closed)?;
        let text = cand.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        if text.is_empty() {
            return Ok(()); // end of candidates
        }
        let c = Candidate::from_sdp_string(text)
            .map_err(|e| TransportError::InvalidCandidate(e.to_string()))?;
        let s = self.sessions.get_mut(slot).ok_or(TransportError::Closed)?;
        s.guarded(|s| s.rtc.add_remote_candidate(c));
        self.after_mutation(slot);
        Ok(())
    }

    fn accept_offer(
        &mut self,
        id: SessionId,
        sdp: &str,
    ) -> Result<(String, Vec<TrackInfo>), NegotiationError> {
        let slot = self.slot_of(id).ok_or(NegotiationError::Closed)?;
        check_sdp_limits(sdp)?;
        let offer = SdpOffer::from_sdp_string(sdp)
            .map_err(|e| NegotiationError::InvalidSdp(e.to_string()))?;
        let shard = self.id;
        let s = self
            .sessions
            .get_mut(slot)
            .ok_or(NegotiationError::Closed)?;
        let had_tracks = !s.up.is_empty();
        let answer = match s.guarded(|s| s.rtc.sdp_api().accept_offer(offer)) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                let err = NegotiationError::InvalidSdp(e.to_string());
                // str0m may have given up on the session (e.g. missing fingerprint).
                if !s.rtc.is_alive() {
                    s.dead = Some(CloseReason::Failed(e.to_string()));
                    self.doomed.push(slot);
                }
                return Err(err);
            }
            None => {
                self.counters.session_panics += 1;
                self.doomed.push(slot);
                return Err(NegotiationError::SessionFailed(
                    "panic in accept_offer".into(),
                ));
            }
        };
        let answer_sdp = answer_in_offer_order(sdp, &answer.to_sdp_string());
        tracing::trace!(session = id.0, offer = %sdp, answer = %answer_sdp, "publish negotiation");
        let msids = sdp_msids(sdp);
        // Walk the answer's m-lines (validated by str0m) for the received tracks.
        let mut new_ups = Vec::new();
        for mid in sdp_mids(&answer_sdp) {
            let Some(media) = s.rtc.media(mid) else {
                continue;
            };
            let kind = media.kind();
            if kind != MediaKind::Audio && kind != MediaKind::Video {
                continue;
            }
            let receiving = media.direction().is_receiving() && !media.disabled();
            let remote_pts: Vec<_> = media.remote_pts().to_vec();
            let params: Vec<_> = s
                .rtc
                .codec_config()
                .params()
                .iter()
                .filter(|p| remote_pts.contains(&p.pt()))
                .copied()
                .collect();
            let (stream_id, track_id) = match msids.iter().find(|(m, _, _)| *m == mid) {
                Some((_, s, t)) => (s.clone(), t.clone()),
                None => (media.stream_id().to_string(), media.track_id().to_string()),
            };
            let active = receiving && !params.is_empty();
            match s.up.iter_mut().find(|u| u.mid == mid) {
                Some(u) => {
                    u.info.active = active;
                    if active {
                        *u = UpTrack::new(
                            mid,
                            TrackInfo {
                                params,
                                ..u.info.clone()
                            },
                        );
                    }
                }
                None if active => {
                    let info = TrackInfo {
                        key: TrackKey::new(shard, next_id()),
                        track_id,
                        stream_id,
                        kind,
                        params,
                        active: true,
                    };
                    new_ups.push(info.key);
                    s.up.push(UpTrack::new(mid, info));
                }
                None => {}
            }
        }
        s.up_by_ssrc.clear();
        let tracks: Vec<TrackInfo> = s.up.iter().map(|u| u.info.clone()).collect();
        if !had_tracks && !tracks.iter().any(|t| t.active) {
            // Nothing we can receive: the offer is useless. Undo nothing (str0m has applied
            // it), but tell the caller clearly.
            self.after_mutation(slot);
            return Err(NegotiationError::NoUsableMedia);
        }
        for key in new_ups {
            if let Some(u) = s.up.iter().find(|u| u.info.key == key) {
                self.ups.insert(key, (slot, u.mid));
            }
        }
        self.sync_ufrag(slot);
        self.after_mutation(slot);
        Ok((answer_sdp, tracks))
    }

    fn add_down_track(
        &mut self,
        id: SessionId,
        spec: DownTrackSpec,
    ) -> Result<String, SubscribeError> {
        let slot = self.slot_of(id).ok_or(SubscribeError::Closed)?;
        let dslot = self.downs.next_slot();
        let s = self.sessions.get_mut(slot).ok_or(SubscribeError::Closed)?;
        let stops = std::mem::take(&mut s.to_stop);
        let anchor = s.anchor_mid;
        let r = s.guarded(|s| {
            let mut api = s.rtc.sdp_api();
            stop_m_lines(&mut api, &stops, anchor);
            let mid = api.add_media(
                spec.kind,
                Direction::SendOnly,
                Some(spec.stream_id.clone()),
                Some(spec.track_id.clone()),
                None,
            );
            api.apply().map(|(offer, pending)| (mid, offer, pending))
        });
        let (mid, offer, pending) = match r {
            Some(Some(x)) => x,
            Some(None) => return Err(SubscribeError::SessionFailed("no offer produced".into())),
            None => {
                self.counters.session_panics += 1;
                self.doomed.push(slot);
                return Err(SubscribeError::SessionFailed("panic creating offer".into()));
            }
        };
        let offer_sdp = offer.to_sdp_string();
        s.pending_offer = Some(PendingOffer {
            pending,
            mids: sdp_mids(&offer_sdp),
            ice_restart: false,
        });
        s.anchor_mid.get_or_insert(mid);
        s.downs.push(dslot);
        s.awaiting_answer.push(spec.id);
        let down = DownTrack::new(spec.id, slot, spec.track, spec.kind, mid, spec.params);
        let got = self.downs.insert(down);
        debug_assert_eq!(got, dslot);
        self.down_by_id.insert(spec.id, dslot);
        self.routes.add_local(spec.track, dslot);
        self.after_mutation(slot);
        Ok(offer.to_sdp_string())
    }

    fn remove_down_track(&mut self, id: SessionId, down: DownTrackId) {
        let Some(dslot) = self.down_by_id.remove(&down) else {
            return;
        };
        let Some(d) = self.downs.remove(dslot) else {
            return;
        };
        self.routes.remove_local(d.track, dslot);
        if let Some(&slot) = self.by_id.get(&id) {
            if let Some(s) = self.sessions.get_mut(slot) {
                s.downs.retain(|x| *x != dslot);
                s.awaiting_answer.retain(|x| *x != down);
                s.to_stop.push(d.mid);
            }
        }
    }

    fn create_offer(
        &mut self,
        id: SessionId,
        ice_restart: bool,
    ) -> Result<Option<String>, NegotiationError> {
        let slot = self.slot_of(id).ok_or(NegotiationError::Closed)?;
        let s = self
            .sessions
            .get_mut(slot)
            .ok_or(NegotiationError::Closed)?;
        let stops = std::mem::take(&mut s.to_stop);
        let anchor = s.anchor_mid;
        let r = s.guarded(|s| {
            let mut api = s.rtc.sdp_api();
            stop_m_lines(&mut api, &stops, anchor);
            if ice_restart {
                api.ice_restart(true);
            }
            api.apply()
        });
        let offer = match r {
            Some(Some((offer, pending))) => {
                let offer_sdp = offer.to_sdp_string();
                s.pending_offer = Some(PendingOffer {
                    pending,
                    mids: sdp_mids(&offer_sdp),
                    ice_restart,
                });
                Some(offer_sdp)
            }
            Some(None) => None,
            None => {
                self.counters.session_panics += 1;
                self.doomed.push(slot);
                return Err(NegotiationError::SessionFailed(
                    "panic creating offer".into(),
                ));
            }
        };
        self.sync_ufrag(slot);
        self.after_mutation(slot);
        Ok(offer)
    }

    fn accept_answer(&mut self, id: SessionId, sdp: &str) -> Result<(), NegotiationError> {
        let slot = self.slot_of(id).ok_or(NegotiationError::Closed)?;
        check_sdp_limits(sdp)?;
        let answer = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| NegotiationError::InvalidSdp(e.to_string()))?;
        let s = self
            .sessions
            .get_mut(slot)
            .ok_or(NegotiationError::Closed)?;
        let offer = s
            .pending_offer
            .as_ref()
            .ok_or(NegotiationError::NoPendingOffer)?;
        if sdp_mids(sdp) != offer.mids {
            return Err(NegotiationError::InvalidSdp(
                "answer m-lines do not match the offer".into(),
            ));
        }
        let ufrag = sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .map(str::to_string);
        if !offer.ice_restart && s.remote_ufrag.is_some() && ufrag != s.remote_ufrag {
            return Err(NegotiationError::InvalidSdp(
                "answer changes ICE credentials without an ICE restart".into(),
            ));
        }
        let Some(PendingOffer { pending, .. }) = s.pending_offer.take() else {
            return Err(NegotiationError::NoPendingOffer);
        };
        match s.guarded(|s| s.rtc.sdp_api().accept_answer(pending, answer)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.after_mutation(slot);
                return Err(NegotiationError::AnswerRejected(e.to_string()));
            }
            None => {
                self.counters.session_panics += 1;
                self.doomed.push(slot);
                return Err(NegotiationError::SessionFailed(
                    "panic in accept_answer".into(),
                ));
            }
        }
        s.remote_ufrag = ufrag;
        // Activate the down-tracks this answer covers.
        let waiting = std::mem::take(&mut s.awaiting_answer);
        for did in waiting {
            let Some(&dslot) = self.down_by_id.get(&did) else {
                continue;
            };
            let Some(d) = self.downs.get_mut(dslot) else {
                continue;
            };
            let mut api = s.rtc.direct_api();
            let ssrc = api.stream_tx_by_mid(d.mid, None).map(|tx| tx.ssrc());
            let remote_pts: Vec<_> = s
                .rtc
                .media(d.mid)
                .map(|m| m.remote_pts().to_vec())
                .unwrap_or_default();
            let mut mapped = false;
            for p in &d.spec_params {
                if let Some(local) = s.rtc.codec_config().match_params(*p) {
                    let lpt = local.pt();
                    if remote_pts.contains(&lpt) {
                        d.pt_map[(*p.pt() & 0x7f) as usize] = *lpt;
                        mapped = true;
                    }
                }
            }
            if mapped && ssrc.is_some() {
                d.ssrc = ssrc;
                if d.kind == MediaKind::Video {
                    // The retransmission window: see RTX_WINDOW.
                    if let Some(tx) = s.rtc.direct_api().stream_tx_by_mid(d.mid, None) {
                        tx.set_rtx_cache(RTX_MAX_PACKETS, RTX_WINDOW, Some(0.15));
                    }
                    d.last_keyframe_request = Some(Instant::now());
                    self.want_keyframe.push(d.track);
                }
            } else {
                let _ = s.events.send(SessionEvent::DownTrackRejected(did));
            }
        }
        self.after_mutation(slot);
        Ok(())
    }

    /// Remove a session and everything hanging off it on this shard, and tell the API.
    fn teardown(&mut self, slot: usize, reason: CloseReason) {
        let Some(mut s) = self.sessions.remove(slot) else {
            return;
        };
        let span = s.span.clone();
        let _entered = span.enter();
        tracing::debug!(?reason, "session closed");
        self.counters.sessions_closed += 1;
        self.by_id.remove(&s.id);
        for a in &s.addrs {
            self.demux.unbind_addr(a, slot);
        }
        self.demux.remove_ufrags(slot);
        for &dslot in &s.downs {
            if let Some(d) = self.downs.remove(dslot) {
                self.routes.remove_local(d.track, dslot);
                self.down_by_id.remove(&d.id);
            }
        }
        for u in &s.up {
            self.ups.remove(&u.info.key);
        }
        self.dirty.retain(|d| *d != slot);
        // Flush whatever the session queued (DTLS close, RTCP BYE).
        let mut out = std::mem::take(&mut self.out);
        if s.dead.is_none() {
            s.guarded(|s| s.rtc.disconnect());
        }
        let _ = s.drain(&mut out);
        out.media.clear();
        out.keyframe_requests.clear();
        out.new_addrs.clear();
        self.out = out;
        let _ = s.events.send(SessionEvent::Closed(reason));
    }
}

/// Forward one packet to this shard's down-tracks `dslots` of its track.
#[allow(clippy::too_many_arguments)]
#[inline]
fn forward(
    downs: &mut Slab<DownTrack>,
    sessions: &mut Slab<Session>,
    dirty: &mut Vec<usize>,
    want_keyframe: &mut Vec<TrackKey>,
    c: &mut ShardStats,
    epoch: Instant,
    dslots: &[usize],
    pkt: &MediaPacket,
) {
    for &d in dslots {
        forward_one(downs, sessions, dirty, want_keyframe, c, epoch, d, pkt);
    }
}

/// Forward one packet to one down-track: translate PT, rewrite seq/ts, write into the
/// subscriber's session. No allocation: the payload is reference-counted.
#[allow(clippy::too_many_arguments)]
#[inline]
fn forward_one(
    downs: &mut Slab<DownTrack>,
    sessions: &mut Slab<Session>,
    dirty: &mut Vec<usize>,
    want_keyframe: &mut Vec<TrackKey>,
    c: &mut ShardStats,
    epoch: Instant,
    dslot: usize,
    pkt: &MediaPacket,
) {
    let Some(d) = downs.get_mut(dslot) else {
        return;
    };
    let Some(ssrc) = d.ssrc else {
        return;
    };
    let out_pt = d.pt_map[(pkt.pt & 0x7f) as usize];
    if out_pt == NO_PT {
        c.dropped_no_codec += 1;
        return;
    }
    let decision = d.rewriter.rewrite(&InPacket {
        source: pkt.source,
        seq: pkt.seq,
        ts: pkt.ts,
        keyframe_start: pkt.keyframe,
        arrival_us: pkt.arrival.saturating_duration_since(epoch).as_micros() as u64,
    });
    match decision {
        Decision::Forward { seq, ts } => {
            let Some(s) = sessions.get_mut(d.session) else {
                return;
            };
            let video = d.kind == MediaKind::Video;
            let ok = s.guarded(|s| {
                if let Some(tx) = s.rtc.direct_api().stream_tx(&ssrc) {
                    tx.write_rtp(
                        RtpWrite::new(
                            out_pt.into(),
                            seq.into(),
                            ts,
                            pkt.arrival,
                            pkt.payload.clone(),
                        )
                        .marker(pkt.marker)
                        .ext_vals(pkt.ext.clone())
                        .nackable(video),
                    );
                    true
                } else {
                    false
                }
            });
            match ok {
                Some(true) => {
                    c.rtp_forwarded += 1;
                    c.rtp_bytes_forwarded += pkt.payload.len() as u64;
                    if !s.dirty {
                        s.dirty = true;
                        dirty.push(d.session);
                    }
                }
                Some(false) => {}
                None => c.session_panics += 1,
            }
        }
        Decision::DropWaitingKeyframe => {
            c.dropped_waiting_keyframe += 1;
            let now = pkt.arrival;
            let due = d
                .last_keyframe_request
                .map(|t| now.saturating_duration_since(t) >= GATED_RETRY)
                .unwrap_or(true);
            if due {
                d.last_keyframe_request = Some(now);
                want_keyframe.push(d.track);
            }
        }
        Decision::DropStale => c.dropped_stale += 1,
    }
}

/// Take removed down-tracks' m-lines out of the session: rejected (port 0), except the
/// BUNDLE tag, which only goes inactive (see `Session::anchor_mid`).
fn stop_m_lines(api: &mut str0m::change::SdpApi<'_>, mids: &[Mid], anchor: Option<Mid>) {
    for &mid in mids {
        if Some(mid) == anchor {
            api.set_direction(mid, Direction::Inactive);
        } else {
            api.stop_media(mid);
        }
    }
}

/// Put the payload types of each m-line of our answer in the order the offer listed them,
/// so the offerer's codec preference (e.g. VP9 first) decides what it sends. str0m orders
/// answers by its own codec configuration; the set of payload types is unchanged.
fn answer_in_offer_order(offer: &str, answer: &str) -> String {
    fn sections(sdp: &str) -> Vec<(Option<String>, Vec<String>)> {
        // (mid, fmt list of the m= line) per m-section, in order.
        let mut out: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for line in sdp.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("m=") {
                out.push((None, m.split(' ').skip(3).map(str::to_string).collect()));
            } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), out.last_mut()) {
                last.0 = Some(mid.to_string());
            }
        }
        out
    }
    let offered = sections(offer);
    let answered = sections(answer);
    let mut idx = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if let Some(m) = body.strip_prefix("m=") {
            let mid = answered.get(idx).and_then(|(mid, _)| mid.clone());
            idx += 1;
            let order = offered
                .iter()
                .find(|(omid, _)| omid.is_some() && *omid == mid)
                .map(|(_, fmts)| fmts.clone());
            let parts: Vec<&str> = m.split(' ').collect();
            if let (Some(order), true) = (order, parts.len() > 3) {
                let mut fmts: Vec<&str> = parts[3..].to_vec();
                fmts.sort_by_key(|f| order.iter().position(|o| o == f).unwrap_or(usize::MAX));
                out.push_str("m=");
                out.push_str(&parts[..3].join(" "));
                for f in fmts {
                    out.push(' ');
                    out.push_str(f);
                }
                out.push_str(eol);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(3600)
}

/// Reject SDPs that are too large or have too many m-lines before parsing them.
fn check_sdp_limits(sdp: &str) -> Result<(), NegotiationError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(NegotiationError::TooLarge(sdp.len()));
    }
    let mlines = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if mlines > MAX_MLINES {
        return Err(NegotiationError::TooManyMedia(mlines));
    }
    Ok(())
}

/// The mids of an SDP's m-lines, in order (from `a=mid:` lines).
fn sdp_mids(sdp: &str) -> Vec<Mid> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
        .collect()
}

/// `(mid, stream id, track id)` of each m-section with an `a=msid` line, read from the
/// remote SDP text (str0m's `Media::track_id` may hold our own msid after negotiation).
fn sdp_msids(sdp: &str) -> Vec<(Mid, String, String)> {
    let mut out = Vec::new();
    let mut mid: Option<Mid> = None;
    let mut msid: Option<(String, String)> = None;
    let mut flush = |mid: &mut Option<Mid>, msid: &mut Option<(String, String)>| {
        if let (Some(m), Some((s, t))) = (mid.take(), msid.take()) {
            out.push((m, s, t));
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            flush(&mut mid, &mut msid);
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(Mid::from(m));
        } else if let Some(v) = line.strip_prefix("a=msid:") {
            let mut it = v.split_whitespace();
            if let (Some(s), Some(t)) = (it.next(), it.next()) {
                msid = Some((s.to_string(), t.to_string()));
            }
        }
    }
    flush(&mut mid, &mut msid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_follows_offer_codec_order() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\na=mid:1\r\n";
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\na=x\r\n";
        let fixed = answer_in_offer_order(offer, answer);
        assert!(
            fixed.contains("m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\n"),
            "{fixed}"
        );
        assert!(fixed.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert!(fixed.ends_with("a=x\r\n"));
        assert_eq!(fixed.len(), answer.len());
        // Garbage in, no panic, unchanged.
        assert_eq!(answer_in_offer_order("x", "m=\n"), "m=\n");
    }

    #[test]
    fn mids_and_msids_are_read_per_section() {
        let sdp = "v=0\r\nm=audio 9 X 1\r\na=mid:a\r\na=msid:s t1\r\nm=video 9 X 2\r\na=mid:b\r\n";
        assert_eq!(sdp_mids(sdp), vec![Mid::from("a"), Mid::from("b")]);
        let m = sdp_msids(sdp);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].2, "t1");
    }
}
