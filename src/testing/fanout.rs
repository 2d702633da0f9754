//! [`Fanout`]: one publisher forwarded to N subscribers over in-memory shards, with the
//! publisher on shard 0 and the subscribers spread round-robin over all shards. The
//! publisher sends one VP8 stream, or ([`Fanout::with_simulcast`]) three simulcast
//! encodings, subscriber `i` preferring encoding `i % 3`; or ([`Fanout::with_data`]) no
//! media but one data channel, each subscriber receiving it on a channel of its own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::media::MediaKind;

use super::client::{ClientConfig, ClientPeer};
use super::shards::{DataTrackRef, MemoryShards, SessionRef, TrackRef};
use crate::config::MediaConfig;

/// The simulcast encodings of [`Fanout::with_simulcast`]: rid and keyframe size.
const SIMULCAST: [(&str, (u16, u16)); 3] =
    [("q", (320, 180)), ("h", (640, 360)), ("f", (1280, 720))];

/// The label of the publisher's data channel in [`Fanout::with_data`] (its data publisher
/// id).
pub const DATA_LABEL: &str = "fanout-data";

/// How long [`Fanout::new`] waits for every peer to connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(20);

/// One publisher, N subscribers, all connected through real str0m sessions in memory.
pub struct Fanout {
    net: MemoryShards,
    publisher: ClientPeer,
    pub_session: SessionRef,
    subscribers: Vec<(ClientPeer, SessionRef)>,
    /// Peer address → 0 for the publisher, i + 1 for subscriber i.
    by_addr: HashMap<SocketAddr, usize>,
    counter: u64,
    epoch: Instant,
    staged: Vec<Vec<u8>>,
    /// The publisher's local tracks: 1, or the simulcast encodings.
    encodings: usize,
    /// Time spent in the shards' work (not the peers'), for real-rate measurements.
    server_time: Duration,
    /// The published track (none with [`Fanout::with_data`]).
    track: Option<TrackRef>,
    /// The published data channel ([`Fanout::with_data`]).
    data: Option<DataTrackRef>,
    /// The contents of the data messages [`Fanout::stage_data`] sends.
    message: Vec<u8>,
    /// A counter read around the shards' work, as `server_time` is timed
    /// ([`Fanout::set_meter`]), and what it counted there.
    meter: Option<fn() -> u64>,
    metered: u64,
    /// Recording transports' sessions ([`Fanout::add_recorders`]).
    recorders: Vec<SessionRef>,
}

impl Fanout {
    /// Set up `subscribers` subscribers of one VP8 publisher over `shards` shards and
    /// wait (bounded) until every session is connected and every subscriber has decoded
    /// a first packet.
    pub fn new(shards: usize, subscribers: usize) -> Result<Fanout, String> {
        Self::build(shards, subscribers, 1)
    }

    /// Like [`Fanout::new`], with a publisher sending three simulcast encodings (320×180,
    /// 640×360, 1280×720) and subscriber `i` preferring encoding `i % 3`: each subscriber
    /// gets a third of what the shards receive, and every packet goes through layer
    /// selection.
    pub fn with_simulcast(shards: usize, subscribers: usize) -> Result<Fanout, String> {
        Self::build(shards, subscribers, 3)
    }

    /// Like [`Fanout::new`] (one encoding) or [`Fanout::with_simulcast`] (three), with
    /// the routers' media configuration `media` (e.g. bandwidth estimation on).
    pub fn with_media(
        shards: usize,
        subscribers: usize,
        simulcast: bool,
        media: MediaConfig,
    ) -> Result<Fanout, String> {
        Self::build_with(
            shards,
            subscribers,
            if simulcast { 3 } else { 1 },
            media,
            false,
        )
    }

    /// Like [`Fanout::new`], with the publisher sending a dependency descriptor (libwebrtc's
    /// L1T3) with every packet: the server reads each packet's temporal layer from it
    /// (the synthetic VP8 descriptor has none) and selects layers by it.
    pub fn with_dependency_descriptor(shards: usize, subscribers: usize) -> Result<Fanout, String> {
        Self::build_with(shards, subscribers, 1, MediaConfig::default(), true)
    }

    fn build(shards: usize, subscribers: usize, encodings: usize) -> Result<Fanout, String> {
        Self::build_with(
            shards,
            subscribers,
            encodings,
            MediaConfig::default(),
            false,
        )
    }

    fn build_with(
        shards: usize,
        subscribers: usize,
        encodings: usize,
        media: MediaConfig,
        dependency_descriptor: bool,
    ) -> Result<Fanout, String> {
        let now = Instant::now();
        let mut net = MemoryShards::new(shards, 4096, media);
        let peer_addr =
            |i: usize| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30000 + i as u16);
        let mut cfg = ClientConfig::new(now);
        cfg.dependency_descriptor = dependency_descriptor;
        let mut publisher = ClientPeer::with_config(peer_addr(0), cfg, now);
        let pub_session = net.create_session(0, true, now);
        let offer = if encodings > 1 {
            let layers: Vec<(&str, (u16, u16))> = SIMULCAST[..encodings].to_vec();
            publisher.publish_simulcast_offer("stream-fanout", "fanout", &layers)?
        } else {
            publisher.publish_offer("stream-fanout", &[(MediaKind::Video, "fanout")])?
        };
        let (answer, tracks) = net
            .accept_offer(pub_session, &offer, now)
            .map_err(|e| format!("publish offer refused: {e}"))?;
        publisher.accept_answer(&answer)?;
        net.add_remote_candidate(pub_session, &publisher.candidate(), now)
            .map_err(|e| e.to_string())?;
        let track = tracks
            .into_iter()
            .next()
            .ok_or("publish answer has no track")?;
        let published = track.clone();
        let mut by_addr = HashMap::new();
        by_addr.insert(publisher.addr(), 0);
        let mut subs = Vec::with_capacity(subscribers);
        for i in 0..subscribers {
            let mut peer = ClientPeer::new(peer_addr(i + 1), now);
            let s = net.create_session(i % shards, false, now);
            let offer = net
                .subscribe(s, &track, now)
                .map_err(|e| format!("subscribe refused: {e}"))?;
            let answer = peer.accept_offer(&offer)?;
            net.accept_answer(s, &answer, now)
                .map_err(|e| format!("subscriber answer refused: {e}"))?;
            if encodings > 1 {
                net.set_preferred_layer(s, (i % encodings) as u8, u8::MAX, now);
            }
            net.add_remote_candidate(s, &peer.candidate(), now)
                .map_err(|e| e.to_string())?;
            by_addr.insert(peer.addr(), i + 1);
            subs.push((peer, s));
        }
        let mut f = Fanout {
            net,
            publisher,
            pub_session,
            subscribers: subs,
            by_addr,
            counter: 0,
            epoch: now,
            staged: Vec::new(),
            encodings,
            server_time: Duration::ZERO,
            track: Some(published),
            data: None,
            message: Vec::new(),
            meter: None,
            metered: 0,
            recorders: Vec::new(),
        };
        let deadline = Instant::now() + CONNECT_DEADLINE;
        f.wait_connected(deadline)?;
        // A keyframe opens every down-track; retry until all subscribers have media.
        while f.subscribers.iter().any(|(p, _)| p.rtp_received() == 0) {
            if Instant::now() > deadline {
                return Err(format!(
                    "subscribers got no media: {:?}, publisher pt set: {}",
                    f.net.stats(),
                    f.publisher.payload_type(0).is_some()
                ));
            }
            f.stage(1, 1100);
            f.forward_staged_and_keep();
            f.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(f)
    }

    /// One publisher with one data channel ([`DATA_LABEL`]: ordered, reliable, as a chat's)
    /// published, and `subscribers` subscribers of it over `shards` shards (publisher on
    /// shard 0, subscribers round-robin), each with a channel of its own that the server
    /// opened; no media. Waits (bounded) until every session is connected and every
    /// subscriber has received a first message. [`Fanout::stage_data`] sends messages,
    /// [`Fanout::deliver_data`] sends and delivers them.
    pub fn with_data(shards: usize, subscribers: usize) -> Result<Fanout, String> {
        let now = Instant::now();
        let deadline = now + CONNECT_DEADLINE;
        let mut net = MemoryShards::new(shards, 4096, MediaConfig::default());
        let peer_addr =
            |i: usize| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30000 + i as u16);
        let mut publisher = ClientPeer::new(peer_addr(0), now);
        let pub_session = net.create_session(0, true, now);
        let offer = publisher.data_channel_offer(DATA_LABEL, true, None)?;
        let (answer, _) = net
            .accept_offer(pub_session, &offer, now)
            .map_err(|e| format!("data publish offer refused: {e}"))?;
        publisher.accept_answer(&answer)?;
        net.add_remote_candidate(pub_session, &publisher.candidate(), now)
            .map_err(|e| e.to_string())?;
        let mut publishing = net.publish_data(pub_session, DATA_LABEL, now);
        let mut by_addr = HashMap::new();
        by_addr.insert(publisher.addr(), 0);
        let mut f = Fanout {
            net,
            publisher,
            pub_session,
            subscribers: Vec::with_capacity(subscribers),
            by_addr,
            counter: 0,
            epoch: now,
            staged: Vec::new(),
            encodings: 0,
            server_time: Duration::ZERO,
            track: None,
            data: None,
            message: Vec::new(),
            meter: None,
            metered: 0,
            recorders: Vec::new(),
        };
        // The publisher's channel opens once the connection is up (DCEP): then it is
        // published, and the subscribers' channels can copy its settings.
        let data = loop {
            if let Some(answer) = publishing.answer() {
                break answer.map_err(|e| format!("data publish refused: {e}"))?;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "data channel not published after {CONNECT_DEADLINE:?}: publisher connected {}",
                    f.publisher.connected()
                ));
            }
            f.pump();
            std::thread::sleep(Duration::from_millis(1));
        };
        for i in 0..subscribers {
            let now = Instant::now();
            let mut peer = ClientPeer::new(peer_addr(i + 1), now);
            let s = f.net.create_session(i % shards, false, now);
            let offer = f
                .net
                .data_subscribe(s, &data, now)
                .map_err(|e| format!("data subscribe refused: {e}"))?
                .ok_or("a connection's first data channel comes with an offer")?;
            let answer = peer.accept_offer(&offer)?;
            // Nothing is due on a data-only connection until str0m has seen the time once:
            // the ICE checks start at the first timeout.
            let _ = peer.timeout(now);
            f.net
                .accept_answer(s, &answer, now)
                .map_err(|e| format!("subscriber answer refused: {e}"))?;
            f.net
                .add_remote_candidate(s, &peer.candidate(), now)
                .map_err(|e| e.to_string())?;
            f.by_addr.insert(peer.addr(), i + 1);
            f.subscribers.push((peer, s));
        }
        f.data = Some(data);
        f.wait_connected(deadline)?;
        // A subscriber's channel forwards once the server saw it open (the peer's DCEP
        // ack): until then messages to it are dropped. Send until every subscriber has one.
        while f.data_received().contains(&0) {
            if Instant::now() > deadline {
                let got = f.data_received().iter().filter(|n| **n > 0).count();
                return Err(format!(
                    "subscribers got no data message: {got}/{}, {:?}",
                    f.subscribers.len(),
                    f.net.stats()
                ));
            }
            f.stage_data(1, 16);
            f.forward_staged_and_keep();
            f.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        f.clear_data_messages();
        Ok(f)
    }

    /// Pump until every session is connected, or fail at `deadline`.
    fn wait_connected(&mut self, deadline: Instant) -> Result<(), String> {
        while !self.all_connected() {
            if Instant::now() > deadline {
                let n = self
                    .subscribers
                    .iter()
                    .filter(|(p, _)| p.connected())
                    .count();
                let errors: Vec<&str> = self
                    .subscribers
                    .iter()
                    .filter_map(|(p, _)| p.error())
                    .collect();
                return Err(format!(
                    "not connected after {CONNECT_DEADLINE:?}: publisher {}, subscribers {n}/{} \
                     (errors: {errors:?}), {:?}",
                    self.publisher.connected(),
                    self.subscribers.len(),
                    self.net.stats()
                ));
            }
            self.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn all_connected(&mut self) -> bool {
        if !self.publisher.connected() || !self.net.is_connected(self.pub_session) {
            return false;
        }
        let mut all = true;
        for (p, s) in &self.subscribers {
            all &= p.connected() && self.net.is_connected(*s);
        }
        all
    }

    /// Add `n` recording transports (spread over the shards as the subscribers are), each
    /// recording the track to an address of 127.0.0.1 that the harness never delivers to:
    /// their plain RTP datagrams are drained (and their buffers recycled) with the rest.
    pub fn add_recorders(&mut self, n: usize) -> Result<(), String> {
        let now = Instant::now();
        let track = self.track.clone().ok_or("no published track to record")?;
        for _ in 0..n {
            let k = self.recorders.len();
            let s = self.net.create_record_session(k % self.net.shards(), now);
            let dest = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + 2 * k as u16);
            self.net
                .record(s, &track, dest, now)
                .map_err(|e| format!("recording refused: {e}"))?;
            self.recorders.push(s);
        }
        Ok(())
    }

    /// The in-memory shards.
    pub fn shards(&mut self) -> &mut MemoryShards {
        &mut self.net
    }

    /// Set subscriber `i`'s preferred layer (a ceiling: spatial, temporal).
    pub fn set_preferred_layer(&mut self, i: usize, spatial: u8, temporal: u8) {
        if let Some((_, s)) = self.subscribers.get(i) {
            self.net
                .set_preferred_layer(*s, spatial, temporal, Instant::now());
        }
    }

    /// Number of subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }

    /// RTP packets each subscriber has received so far.
    pub fn received(&self) -> Vec<u64> {
        self.subscribers
            .iter()
            .map(|(p, _)| p.rtp_received())
            .collect()
    }

    /// Have the publisher encrypt `packets` VP8 packets of `payload_len` bytes (every
    /// 100th a keyframe) on each of its encodings and keep the datagrams for
    /// [`Fanout::forward_staged`].
    pub fn stage(&mut self, packets: usize, payload_len: usize) {
        self.stage_at(packets, payload_len, Instant::now());
    }

    /// [`Fanout::stage`] at a time of the caller's choosing (never earlier than the last
    /// one): real-rate benchmarks advance a clock of their own between packets.
    pub fn stage_at(&mut self, packets: usize, payload_len: usize, now: Instant) {
        for e in 0..self.encodings {
            self.publisher.set_payload_len(e, payload_len);
        }
        for _ in 0..packets {
            let sent_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
            let keyframe = self.counter.is_multiple_of(100);
            for e in 0..self.encodings {
                self.publisher.write_media(e, keyframe, sent_us, now);
            }
            self.counter += 1;
        }
        let _ = self.publisher.timeout(now);
        for (_, data) in self.publisher.take_outgoing() {
            self.staged.push(data);
        }
    }

    /// Have the publisher write `messages` binary messages of `len` bytes on its data
    /// channel ([`Fanout::with_data`]) and keep the datagrams it sends now for
    /// [`Fanout::forward_staged`]. Returns the messages written (fewer if the publisher's
    /// SCTP buffer filled up). SCTP's congestion window may hold some back until the
    /// server acknowledges the first: [`Fanout::pump`] moves them on.
    pub fn stage_data(&mut self, messages: usize, len: usize) -> usize {
        self.stage_data_at(messages, len, Instant::now())
    }

    /// [`Fanout::stage_data`] at a time of the caller's choosing.
    pub fn stage_data_at(&mut self, messages: usize, len: usize, now: Instant) -> usize {
        self.message.clear();
        self.message.extend((0..len).map(|i| i as u8));
        let mut written = 0;
        for _ in 0..messages {
            if !self.publisher.send_data(DATA_LABEL, true, &self.message) {
                break;
            }
            written += 1;
            self.counter += 1;
        }
        let _ = self.publisher.timeout(now);
        for (_, data) in self.publisher.take_outgoing() {
            self.staged.push(data);
        }
        written
    }

    /// Data messages each subscriber has received so far ([`Fanout::with_data`]).
    pub fn data_received(&self) -> Vec<u64> {
        self.subscribers
            .iter()
            .map(|(p, _)| p.data_received())
            .collect()
    }

    /// Have the subscribers drop the data messages they kept (their counts stay).
    pub fn clear_data_messages(&mut self) {
        for (p, _) in &mut self.subscribers {
            p.clear_data_messages();
        }
    }

    /// Send `messages` data messages of `len` bytes ([`Fanout::stage_data`]), have the
    /// shards forward them and move everything in flight both ways ([`Fanout::pump`]):
    /// the subscribers receive the messages and acknowledge them (SCTP SACKs), as do the
    /// shards the publisher's. Returns the messages the subscribers received meanwhile
    /// (`messages` × subscribers when all arrived); the messages they keep are dropped.
    pub fn deliver_data(&mut self, messages: usize, len: usize) -> u64 {
        let before: u64 = self.data_received().iter().sum();
        self.stage_data(messages, len);
        self.forward_staged_and_keep();
        self.pump();
        let after: u64 = self.data_received().iter().sum();
        self.clear_data_messages();
        after - before
    }

    /// Read `meter` (say, a counting allocator's count on this thread) around the shards'
    /// work, where [`Fanout::take_server_time`] times it, and add up the differences for
    /// [`Fanout::take_metered`]. The peers' work and the harness's own copying of the
    /// datagrams for them are left out.
    pub fn set_meter(&mut self, meter: fn() -> u64) {
        self.meter = Some(meter);
        self.metered = 0;
    }

    /// What the meter of [`Fanout::set_meter`] counted in the shards' work since the last
    /// call.
    pub fn take_metered(&mut self) -> u64 {
        std::mem::take(&mut self.metered)
    }

    fn meter_now(&self) -> u64 {
        read_meter(self.meter)
    }

    /// Distinct packets (by the publisher's packet counter) each subscriber has received:
    /// [`Fanout::received`] without duplicates.
    pub fn distinct(&self) -> Vec<u64> {
        self.subscribers
            .iter()
            .map(|(p, _)| p.received_tracks().map(|(_, t)| t.distinct_counters).sum())
            .collect()
    }

    /// Datagrams staged and not yet forwarded.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Lose every `nth` staged datagram (1-based: the `nth`, `2 × nth`, …) before the
    /// server sees it: upstream loss, which the server repairs by NACK.
    pub fn lose_staged(&mut self, nth: usize) {
        let mut i = 0;
        self.staged.retain(|_| {
            i += 1;
            nth == 0 || i % nth != 0
        });
    }

    /// The server's work for the staged packets: receive them on the publisher's shard,
    /// forward to every subscriber (through the rings for other shards), end the batch.
    /// Returns the number of datagrams the shards now have queued to send.
    pub fn forward_staged(&mut self) -> usize {
        self.forward_staged_at(Instant::now())
    }

    /// [`Fanout::forward_staged`] at a time of the caller's choosing. The batch end runs
    /// the shards' due timers, as a server's poll loop does.
    pub fn forward_staged_at(&mut self, now: Instant) -> usize {
        self.forward_staged_and_keep_at(now);
        let m = self.meter_now();
        let started = Instant::now();
        let n = self.net.drain_outgoing(|_, _, _| {});
        self.server_time += started.elapsed();
        self.metered += self.meter_now() - m;
        n
    }

    /// Like [`Fanout::forward_staged`] but the outgoing datagrams stay queued, so that
    /// [`Fanout::pump`] delivers them to the peers.
    pub fn forward_staged_and_keep(&mut self) {
        self.forward_staged_and_keep_at(Instant::now());
    }

    /// The server's work for the staged packets at `now`, then everything in flight moved
    /// both ways ([`Fanout::pump_at`]): the subscribers receive what was forwarded and
    /// answer as peers in a call do (receiver reports, transport-wide feedback the
    /// estimator runs on, NACKs for real gaps). Returns the RTP packets the subscribers
    /// received. Real-rate benchmarks use this: a subscriber that never receives its media
    /// reports it all lost, and with bandwidth estimation on that loss caps its estimate.
    pub fn forward_staged_and_deliver_at(&mut self, now: Instant) -> u64 {
        let before: u64 = self.received().iter().sum();
        self.forward_staged_and_keep_at(now);
        self.pump_at(now);
        let after: u64 = self.received().iter().sum();
        after - before
    }

    fn forward_staged_and_keep_at(&mut self, now: Instant) {
        let shard = self.pub_session.shard();
        let from = self.publisher.addr();
        let m = self.meter_now();
        let started = Instant::now();
        for d in &self.staged {
            self.net.receive(shard, from, d, now);
        }
        self.net.tick(now);
        self.server_time += started.elapsed();
        self.metered += self.meter_now() - m;
        // The publisher encrypted these on this thread, with buffers from the thread's
        // SRTP buffer pool that the shards' sends use too: hand them back, as if the
        // publisher were elsewhere (three simulcast encodings would otherwise drain the
        // pool faster than the shards refill it, and the shards would allocate).
        for d in self.staged.drain(..) {
            str0m::net::recycle_datagram(d);
        }
    }

    /// The CPU time the shards spent (receiving, forwarding, timers, batch ends, and taking
    /// the datagrams out in [`Fanout::forward_staged_at`]; not in [`Fanout::pump_at`], which
    /// copies them for the peers) since the last call, measured around the shards' calls
    /// only: the peers' work (encrypting, decrypting, their timers) is not in it.
    pub fn take_server_time(&mut self) -> Duration {
        std::mem::take(&mut self.server_time)
    }

    /// Move datagrams both ways until nothing is in flight: peers' timeouts, peers →
    /// shards, shards' batch end, shards → peers. Keeps ICE consent, RTCP and
    /// retransmissions going between measured batches.
    pub fn pump(&mut self) {
        for _ in 0..64 {
            if self.pump_once(Instant::now()) == 0 {
                return;
            }
        }
    }

    /// [`Fanout::pump`] at a time of the caller's choosing: everything in flight moves at
    /// `now` (peers whose deadline has come get their timeout first).
    pub fn pump_at(&mut self, now: Instant) {
        for _ in 0..64 {
            if self.pump_once(now) == 0 {
                return;
            }
        }
    }

    /// One round of [`Fanout::pump`]; returns the number of datagrams moved.
    fn pump_once(&mut self, now: Instant) -> usize {
        let mut inbound = Vec::new();
        let peers =
            std::iter::once(&mut self.publisher).chain(self.subscribers.iter_mut().map(|(p, _)| p));
        for p in peers {
            if p.next_timeout() <= now {
                let _ = p.timeout(now);
            }
            let src = p.addr();
            for (dest, data) in p.take_outgoing() {
                let shard = dest.port().wrapping_sub(20000) as usize;
                if shard < self.net.shards() {
                    inbound.push((shard, src, data));
                }
            }
        }
        let mut moved = inbound.len();
        let mut deliveries = Vec::new();
        let meter = self.meter;
        let m = read_meter(meter);
        let started = Instant::now();
        for (shard, src, data) in &inbound {
            self.net.receive(*shard, *src, data, now);
        }
        self.net.tick(now);
        self.server_time += started.elapsed();
        // Taking the datagrams out (a socket send on a server) is not timed here: the
        // harness copies each into a new buffer for its peer, more work than the drain's
        // own (handing the buffer back to the pool). It is metered, less the copies.
        let mut copying = 0;
        self.net.drain_outgoing(|shard, dest, data| {
            let c = read_meter(meter);
            deliveries.push((shard, dest, data.to_vec()));
            copying += read_meter(meter) - c;
        });
        self.metered += read_meter(meter) - m - copying;
        moved += deliveries.len();
        for (shard, dest, data) in deliveries {
            let src = self.net.shard_addr(shard);
            match self.by_addr.get(&dest) {
                Some(0) => {
                    let _ = self.publisher.receive(src, &data, now);
                }
                Some(&i) => {
                    let _ = self.subscribers[i - 1].0.receive(src, &data, now);
                }
                None => {}
            }
        }
        moved
    }
}

fn read_meter(meter: Option<fn() -> u64>) -> u64 {
    meter.map_or(0, |f| f())
}
