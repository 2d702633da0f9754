//! The shard core: everything a shard owns (sessions, down-tracks, routes, deadlines,
//! counters) and every rule for driving it, with no I/O and no clock: it is handed
//! datagrams, commands and the time; it leaves outgoing datagrams in a queue and marks the
//! shards whose rings it wrote to. [`super::shard`] drives it from a `mio` poll loop over a
//! UDP socket; the in-memory harness ([`crate::testing`]) drives it from a benchmark.
//!
//! One batch: datagrams (demux by address, then STUN ufrag) → each is fed to its session,
//! which is drained → the media it produced is routed (local down-tracks directly, other
//! shards through one ring entry per shard) → [`ShardCore::tick`]: drain the rings from
//! other shards, run due timers, flush the sessions that had to queue forwarded RTP in
//! this batch (`Rtc::flush_rtp`, a patch: no timeout pass unless due; most forwarded
//! packets were already encrypted when written, see [`packet_path`]), tear down dead
//! sessions. A session gets its timeout pass only when its deadline comes:
//! datagrams are fed with `Rtc::handle_input_when_due`.
//!
//! This file is the driver: batches, timers, housekeeping, teardown. The rest of the core,
//! one concept per file:
//! - [`packet_path`]: routing and forwarding media, keyframe requests the other way;
//! - [`control`]: commands from the API and SDP negotiation;
//! - [`bandwidth`]: sharing each subscriber's bandwidth estimate among its tracks;
//! - [`data`]: data-channel messages from publishers to subscribers;
//! - [`record`]: recording transports' tracks out as plain RTP, with sender reports;
//! - [`srflx`]: server-reflexive discovery through STUN servers;
//! - [`stats`]: shard and transport statistics on request.

mod bandwidth;
mod control;
mod data;
mod packet_path;
mod record;
mod srflx;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::command::{CloseReason, Role, SessionEvent};
use super::demux::{DemuxTable, Lookup};
use super::ring::{Consumers, Producers};
use super::route::{DownTrack, Routes};
use super::session::{DrainOut, Session};
use super::slab::Slab;
use super::timer::Timers;
use super::udp::SendQueue;
use super::{DownTrackId, SessionId, ShardId, TrackKey};
use crate::forward::Backlog;
use crate::stats::ShardStats;
use crate::wire::{self, DatagramKind};

pub(crate) use record::PlainOut;

/// Housekeeping period (liveness checks, keyframe retries, STUN retries).
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Session timeouts run per pass before media gets its turn again. Sessions made together
/// have timers due together (a join storm's 2000 handshakes): the rest stay due and run in
/// the next pass, after the socket has been read. A count, not a time: the core never reads
/// the clock (a timeout costs ≈ 5–20 µs, so this is about a millisecond).
const TIMEOUTS_PER_PASS: u32 = 64;

/// Sessions torn down per pass (≈ 25 µs each: the str0m session's memory, the demux
/// entries, the close events). When 2000 participants leave at once the rest wait for the
/// next passes instead of holding a live call's packets for 40 ms.
const TEARDOWNS_PER_PASS: u32 = 32;

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
    /// Subscribers' data channels ([`data`]).
    data_downs: Slab<crate::engine::data::DataDown>,
    data_down_by_id: HashMap<DownTrackId, usize>,
    data_routes: crate::engine::data::DataRoutes,
    /// Scratch: sessions whose data channels were written to in this pass.
    data_touched: Vec<usize>,
    /// Published tracks received on this shard: key → (session slot, mid).
    ups: HashMap<TrackKey, (usize, Mid)>,
    routes: Routes,
    timers: Timers,
    out: DrainOut,
    dirty: Vec<usize>,
    doomed: Vec<usize>,
    /// Tracks whose publisher should be asked for a keyframe.
    /// Keyframes to ask publishers for: track and rank of the encoding.
    want_keyframe: Vec<(TrackKey, u8)>,
    /// Scratch of the bandwidth allocation ([`bandwidth`]): one session's tracks.
    demands: Vec<crate::forward::Demand>,
    /// Scratch: sessions to drain after a pass over all of them.
    touched: Vec<usize>,
    /// When the earliest keyframe request a publisher's throttle held back is due.
    keyframe_due: Option<Instant>,
    /// The socket backlog as the driver measured it: overload shedding's signal.
    backlog: Backlog,
    /// Gauges are filled in by `snapshot`; the counters are bumped in place.
    counters: ShardStats,
    /// Server-reflexive discovery, one probe per STUN server.
    srflx: Vec<srflx::Probe>,
    /// The DTLS certificate of every session on this shard, made once when the shard
    /// starts (as mediasoup does per worker): a session's setup then costs no key
    /// generation, and the crypto library's one-time start-up is not paid by the first
    /// caller. `None` if it could not be made (each session then makes its own).
    dtls_cert: Option<DtlsCert>,
    epoch: Instant,
    /// The current pass's time (set by `handle_datagram` and `tick`): forwarded packets
    /// are sent with it.
    now: Instant,
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
            data_downs: Slab::default(),
            data_down_by_id: HashMap::new(),
            data_routes: Default::default(),
            data_touched: Vec::new(),
            ups: HashMap::new(),
            routes: Routes::default(),
            timers: Timers::default(),
            out: DrainOut::default(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            want_keyframe: Vec::new(),
            demands: Vec::new(),
            touched: Vec::new(),
            keyframe_due: None,
            backlog: Backlog::default(),
            counters: ShardStats {
                shard: id,
                local_addr: Some(local_addr),
                ..Default::default()
            },
            srflx: Vec::new(),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
            epoch: now,
            now,
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
        if !self.doomed.is_empty() {
            return Duration::ZERO;
        }
        let housekeeping = (self.last_housekeeping + HOUSEKEEPING).saturating_duration_since(now);
        let keyframes = self
            .keyframe_due
            .map_or(HOUSEKEEPING, |t| t.saturating_duration_since(now));
        self.timers
            .next()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(HOUSEKEEPING)
            .min(housekeeping)
            .min(keyframes)
    }

    /// How long the first datagram of a receive pass waited in the socket buffer (kernel
    /// receive timestamp to now); see [`crate::forward::overload`].
    pub(crate) fn note_backlog(&mut self, waited: Duration, now: Instant) {
        self.backlog.observe(waited, now);
    }

    /// The socket was found empty.
    pub(crate) fn backlog_drained(&mut self) {
        self.backlog.drained();
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
        self.now = now;
        self.drain_rings(now);
        if !self.data_touched.is_empty() {
            self.flush_data_sessions();
        }
        self.run_timers(now);
        if now.saturating_duration_since(self.last_housekeeping) >= HOUSEKEEPING {
            self.last_housekeeping = now;
            self.housekeeping(now);
        } else if self.keyframe_due.is_some_and(|t| t <= now) {
            self.send_held_back_keyframe_requests(now);
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
        self.now = now;
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        self.on_datagram(data, source, now);
    }

    fn on_datagram(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        let kind = wire::classify(data);
        if kind == DatagramKind::Stun && self.is_stun_server(source) {
            self.on_stun_response(data, source);
            return;
        }
        let c = &mut self.counters;
        if kind == DatagramKind::Unknown {
            c.dropped_malformed += 1;
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
        if via_ufrag && session.addrs.len() >= crate::config::MAX_REMOTE_ADDRS {
            // A new source for a session that has all the addresses it may have.
            self.counters.stun_addr_limit += 1;
            return;
        }
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
        if kind == DatagramKind::Rtp {
            if let Some(dd) = session.dd.as_mut() {
                // The header's dependency descriptor, for the packet str0m is about to
                // emit (read after str0m has authenticated it; see `DdCapture`).
                dd.capture(data);
            }
        }
        let new_addrs_before = self.out.new_addrs.len();
        // The session's timeout pass runs only if its deadline has come (see the timers).
        match session.guarded(|s| s.rtc.handle_input_when_due(input)) {
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
            queue_teardown(&mut self.doomed, session, slot);
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
        self.collect_keyframe_requests();
        if !self.out.data.is_empty() || !self.out.channels.is_empty() || self.out.data_too_large > 0
        {
            self.route_data_out();
        }
    }

    fn run_timers(&mut self, now: Instant) {
        let mut ran = 0u32;
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
            ran += 1;
            if ran == TIMEOUTS_PER_PASS {
                break; // the rest stay due: `wait` is zero until they ran
            }
        }
        if self.timers.len() > 4 * self.sessions.len() + 1024 {
            let sessions = &self.sessions;
            self.timers
                .compact(|t, s| sessions.get(s).map(|x| x.deadline == t).unwrap_or(false));
        }
    }

    fn finish_batch(&mut self, now: Instant) {
        self.send_keyframe_requests(now);
        self.answer_nacks(now);
        // Flush sessions written this batch: their packets are encrypted and queued, without
        // a timeout pass unless the session's deadline has come.
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
            if s.guarded(|s| s.rtc.flush_rtp(now)).is_none() {
                self.counters.session_panics += 1;
            }
            self.after_mutation(slot);
        }
        let mut torn = 0u32;
        while let Some(slot) = self.doomed.pop() {
            let reason = self
                .sessions
                .get(slot)
                .and_then(|s| s.dead.clone())
                .unwrap_or(CloseReason::Requested);
            self.teardown(slot, reason);
            torn += 1;
            if torn == TEARDOWNS_PER_PASS {
                break; // the rest next pass: `wait` is zero while any are left
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.retry_srflx(now);
        for (slot, s) in self.sessions.iter_mut() {
            s.traffic.update_rates(now);
            if s.dead.is_some() {
                continue;
            }
            for up in &mut s.up {
                if up.update_layers(now) {
                    tracing::debug!(track = ?up.info.key, "simulcast encodings re-ranked");
                }
            }
            if s.role == Role::Record {
                continue; // no peer: nothing to connect or time out
            }
            if !s.connected && now.saturating_duration_since(s.created) > s.connect_timeout {
                s.dead = Some(CloseReason::ConnectTimeout);
                queue_teardown(&mut self.doomed, s, slot);
            } else if s.connected && now.saturating_duration_since(s.last_rx) > s.idle_timeout {
                s.dead = Some(CloseReason::IdleTimeout);
                queue_teardown(&mut self.doomed, s, slot);
            }
        }
        for route in self.routes.map.values_mut() {
            route.rates.roll(now);
        }
        self.allocate_bandwidth(now);
        self.send_recording_reports(now);
        for (_, d) in self.downs.iter_mut() {
            let waiting =
                d.rewriter.waiting_for_keyframe() || d.selector.wants_keyframe().is_some();
            if d.active() && waiting && d.keyframe_retry.try_request(now) {
                self.want_keyframe.push((d.track, d.keyframe_rank()));
            }
        }
        self.send_held_back_keyframe_requests(now);
    }

    /// Send the keyframe requests publishers' throttles held back that are due, and note
    /// when the next one is.
    fn send_held_back_keyframe_requests(&mut self, now: Instant) {
        self.keyframe_due = None;
        let held_back: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.keyframe_request_pending())
            .map(|(slot, _)| slot)
            .collect();
        for slot in held_back {
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            let span = s.span.clone();
            let _entered = span.enter();
            let sent = s.send_held_back_keyframe_requests(now);
            let due = s.keyframe_request_due();
            if sent > 0 {
                self.counters.keyframe_requests_sent += sent;
                self.after_mutation(slot);
            }
            self.note_keyframe_due(due);
        }
    }

    /// A publisher's throttle holds a keyframe request back until `due`.
    fn note_keyframe_due(&mut self, due: Option<Instant>) {
        if let Some(due) = due {
            self.keyframe_due = Some(self.keyframe_due.map_or(due, |t| t.min(due)));
        }
    }

    /// The tracing span of a session (a disabled span if there is no such session).
    fn span_of(&self, id: SessionId) -> tracing::Span {
        self.slot_of(id)
            .and_then(|slot| self.sessions.get(slot))
            .map(|s| s.span.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    fn slot_of(&self, id: SessionId) -> Option<usize> {
        let slot = *self.by_id.get(&id)?;
        let s = self.sessions.get(slot)?;
        s.dead.is_none().then_some(slot)
    }

    /// Queue the session in `slot` for teardown at the end of the batch (once).
    fn doom(&mut self, slot: usize) {
        if let Some(s) = self.sessions.get_mut(slot) {
            queue_teardown(&mut self.doomed, s, slot);
        }
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
        for &dslot in &s.data_downs {
            if let Some(d) = self.data_downs.remove(dslot) {
                self.data_routes.remove_local(d.info.key, dslot);
                self.data_down_by_id.remove(&d.id);
            }
        }
        self.dirty.retain(|d| *d != slot);
        // Flush whatever the session queued (DTLS close, RTCP BYE).
        let mut out = std::mem::take(&mut self.out);
        if s.dead.is_none() {
            s.guarded(|s| s.rtc.disconnect());
        }
        let _ = s.drain(&mut out);
        out.media.clear();
        out.data.clear();
        out.channels.clear();
        out.keyframe_requests.clear();
        // Other sessions' NACKs wait for the batch's end: drop only this one's.
        out.nacks.retain(|(from, _)| *from != slot);
        out.new_addrs.clear();
        self.out = out;
        let _ = s.events.send(SessionEvent::Closed(reason));
    }
}

/// Put session `s` (in `slot`) on the teardown queue, unless it is there already.
fn queue_teardown(doomed: &mut Vec<usize>, s: &mut Session, slot: usize) {
    if !s.doomed {
        s.doomed = true;
        doomed.push(slot);
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(3600)
}
