//! [`ClientPeer`]: the one str0m client peer of the tests, benches and examples — full ICE
//! (controlling when it offers), RTP mode, with no socket, thread or clock of its own: the
//! caller hands in datagrams and `now`, and takes out the datagrams to send.
//!
//! It publishes video (VP8) and audio (Opus) tracks with synthetic
//! [payloads](crate::testing::payload) written at the times the caller chooses, answers
//! the server's subscribe offers, and counts what it receives per remote track
//! ([`ReceivedTrack`]). Drivers: [`Fanout`](crate::testing::Fanout) (in memory), the
//! integration tests' `TestPeer` (a thread and a UDP socket), `examples/loadgen` (mio).

mod data;
mod recv;
mod sdp;
mod send;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

pub use data::{Channels, DataChannelState};
pub use recv::{Arrival, ReceivedTrack, LATENCY_BUCKETS, MAX_COUNTER};
pub use send::{SendStats, DEFAULT_AUDIO_LEN, DEFAULT_VIDEO_LEN, LAYER_COUNTER_SPAN};

/// How a [`ClientPeer`] is set up.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Send times in payloads are µs of a clock that starts here: give peers that talk to
    /// each other through the server the same epoch, and latency needs no clock sync.
    pub epoch: Instant,
    /// Offer VP8 as the only codec (otherwise str0m's default codecs).
    pub vp8_only: bool,
    /// The publisher id stamped into every payload this peer sends.
    pub publisher: u32,
    /// Count intact payloads of any other publisher as [`ReceivedTrack::foreign`].
    pub expect_publisher: Option<u32>,
    /// Keep an [`Arrival`] per intact packet for [`ClientPeer::take_arrivals`].
    pub record_arrivals: bool,
    /// Offer the dependency descriptor header extension and send libwebrtc's L1T3 one
    /// with every video packet (one packet per frame: T0, T2, T1, T2, …; a keyframe is a
    /// T0 frame carrying the template structure).
    pub dependency_descriptor: bool,
}

impl ClientConfig {
    /// Defaults: all codecs, publisher 0, no expectations, no arrivals kept.
    pub fn new(epoch: Instant) -> ClientConfig {
        ClientConfig {
            epoch,
            vp8_only: false,
            publisher: 0,
            expect_publisher: None,
            record_arrivals: false,
            dependency_descriptor: false,
        }
    }
}

/// A simulcast encoding offered: its rid and the picture size its keyframes announce.
type Encoding = (Rid, (u16, u16));

/// A sans-IO client peer. Feed it datagrams with [`ClientPeer::receive`] and time with
/// [`ClientPeer::timeout`]; take what it sends with [`ClientPeer::take_outgoing`].
pub struct ClientPeer {
    rtc: Rtc,
    addr: SocketAddr,
    cfg: ClientConfig,
    pending: Option<SdpPendingOffer>,
    /// Tracks of the outstanding offer, until its answer: m-line, kind, and the simulcast
    /// encodings (rid and keyframe size, lowest first) of a simulcast one.
    offered: Vec<(str0m::media::Mid, MediaKind, Vec<Encoding>)>,
    local: Vec<send::LocalTrack>,
    recv: recv::Receiver,
    connected: bool,
    ice_disconnects: u64,
    keyframe_requests: u64,
    error: Option<String>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    /// The time of the latest input.
    now: Instant,
    next_timeout: Instant,
    /// Data channels, both ways.
    data: data::Channels,
}

impl ClientPeer {
    /// A peer whose (pretend or real) socket address is `addr`, with defaults and the
    /// epoch `now`.
    pub fn new(addr: SocketAddr, now: Instant) -> ClientPeer {
        ClientPeer::with_config(addr, ClientConfig::new(now), now)
    }

    /// A peer set up by `cfg`.
    pub fn with_config(addr: SocketAddr, cfg: ClientConfig, now: Instant) -> ClientPeer {
        let mut builder = Rtc::builder().set_rtp_mode(true);
        if cfg.vp8_only {
            builder = builder.clear_codecs().enable_vp8(true);
        }
        if cfg.dependency_descriptor {
            builder = builder.set_extension(12, crate::config::dependency_descriptor_extension());
        }
        let mut rtc = builder.build(now);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        let recv = recv::Receiver::new(cfg.expect_publisher, cfg.record_arrivals);
        let mut p = ClientPeer {
            rtc,
            addr,
            cfg,
            pending: None,
            offered: Vec::new(),
            local: Vec::new(),
            recv,
            connected: false,
            ice_disconnects: 0,
            keyframe_requests: 0,
            error: None,
            out: Vec::new(),
            now,
            next_timeout: now,
            data: data::Channels::default(),
        };
        p.drain();
        p
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `candidate:...` value (no `a=`) of the peer's host candidate.
    pub fn candidate(&self) -> String {
        Candidate::host(self.addr, "udp")
            .map(|c| c.to_sdp_string())
            .unwrap_or_default()
            .trim_start_matches("a=")
            .to_string()
    }

    /// ICE and DTLS are up.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Times ICE went to `Disconnected`.
    pub fn ice_disconnects(&self) -> u64 {
        self.ice_disconnects
    }

    /// What str0m failed with; the peer takes no input after that.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// When the peer next wants [`ClientPeer::timeout`].
    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// An offer to publish `tracks` (kind and track id, in m-line order) in stream
    /// `stream_id`. Local track `i` of the later calls is `tracks[i]` once answered.
    pub fn publish_offer(
        &mut self,
        stream_id: &str,
        tracks: &[(MediaKind, &str)],
    ) -> Result<String, String> {
        let mut api = self.rtc.sdp_api();
        let mut offered = Vec::new();
        for (kind, id) in tracks {
            let sid = Some(stream_id.to_string());
            let mid = api.add_media(*kind, Direction::SendOnly, sid, Some(id.to_string()), None);
            offered.push((mid, *kind, Vec::new()));
        }
        let applied = api.apply();
        self.drain();
        let (offer, pending) = applied.ok_or("no changes to offer")?;
        self.pending = Some(pending);
        self.offered = offered;
        Ok(offer.to_sdp_string())
    }

    /// A viewer's offer (WHEP): a receive-only m-line per kind in `kinds`, in that order.
    pub fn view_offer(&mut self, kinds: &[MediaKind]) -> Result<String, String> {
        let mut api = self.rtc.sdp_api();
        for kind in kinds {
            api.add_media(*kind, Direction::RecvOnly, None, None, None);
        }
        let applied = api.apply();
        self.drain();
        let (offer, pending) = applied.ok_or("no changes to offer")?;
        self.pending = Some(pending);
        self.offered = Vec::new();
        Ok(offer.to_sdp_string())
    }

    /// An offer to publish one simulcast video track `track_id` in stream `stream_id` with
    /// `encodings` (rid and the picture size its keyframes announce), listed in the
    /// `a=simulcast` line in the order given. Each encoding becomes a local track of the
    /// later calls once answered (in the order given), its packet counters starting at
    /// `i * LAYER_COUNTER_SPAN`.
    pub fn publish_simulcast_offer(
        &mut self,
        stream_id: &str,
        track_id: &str,
        encodings: &[(&str, (u16, u16))],
    ) -> Result<String, String> {
        let mut sim = Simulcast::new();
        for (rid, _) in encodings {
            sim.add_send_layer(SimulcastLayer::new(rid));
        }
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some(stream_id.to_string()),
            Some(track_id.to_string()),
            Some(sim),
        );
        let applied = api.apply();
        self.drain();
        let (offer, pending) = applied.ok_or("no changes to offer")?;
        self.pending = Some(pending);
        let layers = encodings
            .iter()
            .map(|(rid, size)| (Rid::from(*rid), *size))
            .collect();
        self.offered = vec![(mid, MediaKind::Video, layers)];
        Ok(offer.to_sdp_string())
    }

    /// Apply the server's answer to our offer; the offered tracks become local tracks.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("bad answer SDP: {e}"))?;
        let pending = (self.pending.take()).ok_or("Answer without an outstanding offer")?;
        let r = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain();
        r.map_err(|e| format!("str0m rejected the answer: {e}"))?;
        self.recv.record_remote(sdp);
        for (mid, kind, layers) in std::mem::take(&mut self.offered) {
            if self.local.iter().any(|t| t.mid == mid) {
                continue;
            }
            if layers.is_empty() {
                let mut t = send::LocalTrack::new(mid, kind, self.now);
                t.payload_type(&self.rtc);
                self.local.push(t);
            }
            for (i, (rid, size)) in layers.into_iter().enumerate() {
                let mut t = send::LocalTrack::simulcast(mid, rid, i, size, self.now);
                t.payload_type(&self.rtc);
                self.local.push(t);
            }
        }
        Ok(())
    }

    /// Answer a server offer (subscribe side).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad offer SDP: {e}"))?;
        let r = self.rtc.sdp_api().accept_offer(offer);
        self.drain();
        // Accepting an offer invalidates any outstanding one of ours.
        self.pending = None;
        let answer = r.map_err(|e| format!("str0m rejected the offer: {e}"))?;
        self.recv.record_remote(sdp);
        Ok(answer.to_sdp_string())
    }

    /// Add a trickled remote candidate (`candidate:...`, with or without `a=`).
    pub fn add_remote_candidate(&mut self, line: &str) -> Result<(), String> {
        let s = line.trim();
        let s = s.strip_prefix("a=").unwrap_or(s);
        let c = Candidate::from_sdp_string(s).map_err(|e| format!("bad candidate {s:?}: {e}"))?;
        self.rtc.add_remote_candidate(c);
        self.drain();
        Ok(())
    }

    /// A datagram from `source` arrived at `now`.
    pub fn receive(&mut self, source: SocketAddr, data: &[u8], now: Instant) -> Result<(), String> {
        if self.error.is_some() {
            return Ok(());
        }
        let Ok(r) = Receive::new(Protocol::Udp, source, self.addr, data) else {
            return Ok(());
        };
        let input = Input::Receive(now, r);
        if !self.rtc.accepts(&input) {
            return Ok(());
        }
        self.now = now;
        let r = self.rtc.handle_input(input);
        self.drain();
        r.map_err(|e| format!("str0m input: {e}"))
    }

    /// Advance time to `now`. Also sends what [`ClientPeer::write_media`] queued.
    pub fn timeout(&mut self, now: Instant) -> Result<(), String> {
        if self.error.is_some() {
            return Ok(());
        }
        self.now = now;
        let r = self.rtc.handle_input(Input::Timeout(now));
        self.drain();
        r.map_err(|e| format!("str0m timeout: {e}"))
    }

    /// Take the datagrams the peer wants sent: `(destination, contents)`.
    pub fn take_outgoing(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.out.drain(..)
    }

    /// Number of local (published and answered) tracks.
    pub fn local_tracks(&self) -> usize {
        self.local.len()
    }

    /// The kind of local track `track`.
    pub fn local_kind(&self, track: usize) -> Option<MediaKind> {
        self.local.get(track).map(|t| t.kind)
    }

    /// The payload type the answer gave local track `track` (VP8 or Opus), if any.
    pub fn payload_type(&mut self, track: usize) -> Option<Pt> {
        let t = self.local.get_mut(track)?;
        t.payload_type(&self.rtc)
    }

    /// Make local track `track`'s payloads `len` bytes (at least the format's minimum).
    pub fn set_payload_len(&mut self, track: usize, len: usize) {
        if let Some(t) = self.local.get_mut(track) {
            t.set_payload_len(len);
        }
    }

    /// Local track `track`'s payload size.
    pub fn payload_len(&self, track: usize) -> Option<usize> {
        self.local.get(track).map(|t| t.payload_len())
    }

    /// Start every local track's RTP clock and keyframe schedule over at `now`.
    pub fn restart_media(&mut self, now: Instant) {
        for t in &mut self.local {
            t.restart(now);
        }
    }

    /// Local video track `track` owes a keyframe: the server asked for one, or none was
    /// written for `interval`.
    pub fn keyframe_due(&self, track: usize, now: Instant, interval: Duration) -> bool {
        self.local
            .get(track)
            .is_some_and(|t| t.keyframe_due(now, interval))
    }

    /// Write the next synthetic packet of local track `track` (a keyframe if `keyframe`
    /// and it is video) stamped with send time `send_us`; its RTP time follows `now`.
    /// False without a payload type or send stream. It leaves on the next
    /// [`ClientPeer::timeout`].
    pub fn write_media(
        &mut self,
        track: usize,
        keyframe: bool,
        send_us: u64,
        now: Instant,
    ) -> bool {
        let (publisher, dd) = (self.cfg.publisher, self.cfg.dependency_descriptor);
        match self.local.get_mut(track) {
            Some(t) => t.write(&mut self.rtc, publisher, keyframe, dd, send_us, now),
            None => false,
        }
    }

    /// What local track `track` has sent.
    pub fn sent(&self, track: usize) -> SendStats {
        self.local.get(track).map(|t| t.stats).unwrap_or_default()
    }

    /// Keyframe requests received for any local track.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests
    }

    /// What arrived on the remote track `track_id` (`mid:<mid>` for m-lines without one).
    pub fn received(&self, track_id: &str) -> Option<&ReceivedTrack> {
        self.recv.received(track_id)
    }

    /// Every remote track something arrived on, by track id.
    pub fn received_tracks(&self) -> impl Iterator<Item = (&str, &ReceivedTrack)> {
        self.recv.tracks()
    }

    /// RTP packets received on all remote tracks.
    pub fn rtp_received(&self) -> u64 {
        self.recv.packets()
    }

    /// Take the [`Arrival`]s recorded since the last call (with
    /// [`ClientConfig::record_arrivals`]).
    pub fn take_arrivals(&mut self) -> std::vec::Drain<'_, Arrival> {
        self.recv.arrivals.drain(..)
    }

    /// Track ids of the remote m-lines currently sending towards us, in the order they
    /// first appeared.
    pub fn remote_track_ids(&self) -> Vec<String> {
        self.recv.remote_track_ids()
    }

    /// Send a PLI on the receive stream(s) of remote track `track_id` (queued as output at
    /// once). False if the track or its receive stream is unknown.
    pub fn request_keyframe(&mut self, track_id: &str, now: Instant) -> bool {
        let mut ok = false;
        for mid in self.recv.mids_of(track_id) {
            if let Some(s) = self.rtc.direct_api().stream_rx_by_mid(mid, None) {
                s.request_keyframe(KeyframeRequestKind::Pli);
                ok = true;
            }
            self.drain();
        }
        if ok {
            let _ = self.timeout(now);
        }
        ok
    }

    /// An offer adding a data channel (`label`, ordered or not, `max_retransmits`:
    /// `None` reliable), as a browser's `createDataChannel` then `createOffer` make.
    pub fn data_channel_offer(
        &mut self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
    ) -> Result<String, String> {
        let mut api = self.rtc.sdp_api();
        let reliability = match max_retransmits {
            None => str0m::channel::Reliability::Reliable,
            Some(n) => str0m::channel::Reliability::MaxRetransmits { retransmits: n },
        };
        let id = api.add_channel_with_config(str0m::channel::ChannelConfig {
            label: label.to_string(),
            ordered,
            reliability,
            negotiated: None,
            protocol: String::new(),
        });
        let applied = api.apply();
        self.drain();
        let (offer, pending) = applied.ok_or("no changes to offer")?;
        self.pending = Some(pending);
        self.offered = Vec::new();
        self.data.created(id, label);
        Ok(offer.to_sdp_string())
    }

    /// Open another data channel `label` in-band (DCEP), on a connection whose SCTP
    /// association exists: no renegotiation, as a browser does for its second channel.
    pub fn open_data_channel(&mut self, label: &str, ordered: bool, max_retransmits: Option<u16>) {
        let reliability = match max_retransmits {
            None => str0m::channel::Reliability::Reliable,
            Some(n) => str0m::channel::Reliability::MaxRetransmits { retransmits: n },
        };
        let id = self
            .rtc
            .direct_api()
            .create_data_channel(str0m::channel::ChannelConfig {
                label: label.to_string(),
                ordered,
                reliability,
                negotiated: None,
                protocol: String::new(),
            });
        self.data.created(id, label);
        self.drain();
    }

    /// Send `data` on the open channel `label`; false if it is not open or str0m's buffer
    /// is full.
    pub fn send_data(&mut self, label: &str, binary: bool, data: &[u8]) -> bool {
        let Some(id) = self.data.open_id(label) else {
            return false;
        };
        let ok = self
            .rtc
            .channel(id)
            .is_some_and(|mut c| c.write(binary, data).unwrap_or(false));
        self.drain();
        ok
    }

    /// The data channels (open, or closed after being open), by label.
    pub fn data_channels(&self) -> &Channels {
        &self.data
    }

    /// Data-channel messages received on all channels so far (kept or cleared).
    pub fn data_received(&self) -> u64 {
        self.data.received_total()
    }

    /// Drop the data-channel messages kept so far (their count stays): a long run that
    /// only counts them keeps memory flat.
    pub fn clear_data_messages(&mut self) {
        self.data.clear_messages();
    }

    /// Poll str0m until it wants a timeout. Follows every input and change.
    fn drain(&mut self) {
        while self.error.is_none() {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => self.out.push((t.destination, t.contents.into())),
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    self.error = Some(format!("str0m poll_output: {e}"));
                    self.next_timeout = self.now + Duration::from_secs(3600);
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.ice_disconnects += 1;
            }
            Event::RtpPacket(p) => {
                let now_us = self.now.saturating_duration_since(self.cfg.epoch);
                self.recv
                    .on_rtp(&p, &mut self.rtc, now_us.as_micros() as u64);
            }
            Event::SenderFeedback(fb) => {
                let rtp = fb.sender_info.rtp_time.numer();
                self.recv
                    .on_sender_report(fb.mid, fb.sender_info.ntp_time, rtp);
            }
            Event::ChannelOpen(id, label) => {
                self.data.opened(id, label);
                let config = self.rtc.channel(id).and_then(|c| c.config().cloned());
                self.data.set_config(id, config);
            }
            Event::ChannelData(d) => self.data.received(d),
            Event::ChannelClose(id) => self.data.closed(id),
            Event::KeyframeRequest(kr) => {
                self.keyframe_requests += 1;
                let of =
                    |t: &send::LocalTrack| t.mid == kr.mid && (kr.rid.is_none() || t.rid == kr.rid);
                for t in self.local.iter_mut().filter(|t| of(t)) {
                    t.force_keyframe = true;
                    t.stats.keyframe_requests += 1;
                }
            }
            _ => {}
        }
    }
}
