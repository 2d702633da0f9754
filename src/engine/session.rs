//! One str0m session (one transport) and the rules for driving it: after every mutation,
//! drain `poll_output` until `Output::Timeout`; contain panics so one broken session
//! cannot take its shard down. Also owns the session's publish-side track table and the
//! translation of incoming RTP into [`MediaPacket`]s.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use str0m::bwe::BweKind;
use str0m::change::SdpPendingOffer;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, NackRequest, Rid};
use str0m::net::Transmit;
use str0m::rtp::{ExtensionValues, RawExtValue, RtpPacket, Ssrc};
use str0m::{Event, IceConnectionState, Output, Rtc};
use tokio::sync::mpsc::UnboundedSender;

use super::command::{CloseReason, Role, SessionEvent, TrackInfo};
use super::ring::{MediaPacket, PacketLayer};
use super::udp::SendQueue;
use super::{DownTrackId, SessionId};
use crate::forward::{
    spatial_for, Allocation, Allocator, KeyframeThrottle, LossCap, Observed, Ranking, LAYER_IDLE,
    MAX_LAYERS, PUBLISHER_KEYFRAME_INTERVAL, PUBLISHER_KEYFRAME_SPACING,
};
use crate::wire::codec::{self, CodecKind, PayloadInfo};
use crate::wire::dependency_descriptor;

/// One encoding of a received track: a simulcast layer (by rid), or the track's only one.
pub(crate) struct UpLayer {
    pub(crate) rid: Option<Rid>,
    /// Its SSRC, once a packet arrived.
    pub(crate) ssrc: Option<Ssrc>,
    /// What ranking looks at: size from keyframes, bitrate, last packet.
    pub(crate) obs: Observed,
    bytes: u64,
    /// Start of the bitrate window and the byte count then.
    window: Option<(Instant, u64)>,
    /// Keyframe requests (PLI) towards the publisher for this encoding.
    pub(crate) keyframe_requests: KeyframeThrottle,
    /// Its latest sender report: NTP time and RTP timestamp.
    sr: Option<(SystemTime, u32)>,
    /// What to add to its timestamps to put them on the track's clock (the reference
    /// encoding's), once sender reports of both are known. Packets keep their own
    /// timestamps and carry this beside them ([`PacketLayer::clock_offset`]).
    pub(crate) ts_offset: Option<u32>,
    /// The dependency descriptor's template structure its packets are read against (the
    /// last one a keyframe brought; each encoding has its own).
    dd_structure: Option<dependency_descriptor::Structure>,
}

impl UpLayer {
    fn new(rid: Option<Rid>) -> UpLayer {
        UpLayer {
            rid,
            ssrc: None,
            obs: Observed::default(),
            bytes: 0,
            window: None,
            keyframe_requests: KeyframeThrottle::with_spacing(
                PUBLISHER_KEYFRAME_INTERVAL,
                PUBLISHER_KEYFRAME_SPACING,
            ),
            sr: None,
            ts_offset: None,
            dd_structure: None,
        }
    }

    /// Close the bitrate window if it is complete (housekeeping, not per packet).
    fn update_bitrate(&mut self, now: Instant) {
        let Some((start, bytes)) = self.window else {
            self.window = Some((now, self.bytes));
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let bits = u128::from(self.bytes.saturating_sub(bytes)) * 8_000_000;
            self.obs.bitrate = (bits / elapsed.as_micros().max(1)) as u64;
            self.window = Some((now, self.bytes));
        }
    }
}

/// Largest change (ms) of a simulcast encoding's clock offset that is ignored: sender
/// reports of one capture clock agree to a tick or two, and moving the offset for that
/// would jitter the forwarded timestamps.
const TS_OFFSET_TOLERANCE_MS: u64 = 2;

/// A received track of a publish session.
pub(crate) struct UpTrack {
    pub(crate) mid: Mid,
    pub(crate) info: TrackInfo,
    /// Codec family per publisher payload type, for keyframe detection at ingress.
    pub(crate) codec_by_pt: [CodecKind; 128],
    /// Its encodings: the simulcast layers in the order of `a=simulcast`, or one.
    pub(crate) layers: Vec<UpLayer>,
    /// Ranks of the encodings, from what they send ([`crate::forward::ranking`]).
    pub(crate) ranking: Ranking,
    /// Bit per rank: the encodings flowing (simulcast only; 0 otherwise).
    pub(crate) active: u8,
    /// SVC: when each spatial layer id last arrived, and the ids flowing (bit per id).
    svc_seen: [Option<Instant>; MAX_LAYERS],
    pub(crate) svc_active: u8,
    /// RTP clock rate of the track.
    clock_rate: u32,
    /// The encoding whose clock the others are aligned to (the first with a sender report).
    clock_reference: Option<usize>,
    /// The payload type of the last packet received (`NO_PT` before the first): the codec
    /// the publisher sends, which a recording's SDP describes.
    pub(crate) last_pt: u8,
}

impl UpTrack {
    /// A track received on `mid`, with the simulcast `rids` the offer announced (none:
    /// one encoding).
    pub(crate) fn new(mid: Mid, info: TrackInfo, rids: &[Rid]) -> Self {
        let mut codec_by_pt = [CodecKind::Other; 128];
        for p in &info.params {
            let pt = *p.pt() as usize;
            if pt < 128 {
                codec_by_pt[pt] = codec_kind(p);
            }
        }
        let layers: Vec<UpLayer> = if rids.len() > 1 && info.kind == MediaKind::Video {
            rids.iter()
                .take(MAX_LAYERS)
                .map(|r| UpLayer::new(Some(*r)))
                .collect()
        } else {
            vec![UpLayer::new(rids.first().copied())]
        };
        let clock_rate = info
            .params
            .first()
            .map_or(90_000, |p| p.spec().clock_rate.get());
        UpTrack {
            mid,
            codec_by_pt,
            ranking: Ranking::new(layers.len()),
            layers,
            active: 0,
            svc_seen: [None; MAX_LAYERS],
            svc_active: 0,
            info,
            clock_rate,
            clock_reference: None,
            last_pt: crate::engine::route::NO_PT,
        }
    }

    /// More than one encoding.
    pub(crate) fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The encoding of `rid` (none, or an unknown rid: the only encoding, if one).
    fn layer_of(&self, rid: Option<Rid>) -> Option<usize> {
        match rid {
            Some(r) if self.simulcast() => self.layers.iter().position(|l| l.rid == Some(r)),
            _ => (!self.simulcast()).then_some(0),
        }
    }

    /// Bitrates, ranks and which encodings flow (housekeeping). Returns whether ranks
    /// changed.
    pub(crate) fn update_layers(&mut self, now: Instant) -> bool {
        if self.svc_active != 0 {
            let mut mask = 0;
            for (sid, seen) in self.svc_seen.iter().enumerate() {
                if seen.is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE) {
                    mask |= 1 << sid;
                }
            }
            self.svc_active = mask;
        }
        if !self.simulcast() {
            return false;
        }
        for l in &mut self.layers {
            l.update_bitrate(now);
        }
        let obs: [Observed; MAX_LAYERS] =
            std::array::from_fn(|i| self.layers.get(i).map(|l| l.obs).unwrap_or_default());
        let changed = self.ranking.update(&obs[..self.layers.len()]);
        self.active = self.ranking.active_mask(&obs[..self.layers.len()], now);
        changed
    }

    /// A sender report for encoding `li`: re-derive the encodings' clock offsets. The
    /// reference clock is the first encoding that sent a report; each other one's offset
    /// maps its RTP time at the reference report's NTP time onto the reference's.
    fn on_sender_report(&mut self, li: usize, ntp: SystemTime, rtp: u32) {
        if !self.simulcast() {
            return;
        }
        self.layers[li].sr = Some((ntp, rtp));
        // The first encoding with a report stays the reference: changing it would move every
        // other encoding's offset.
        let reference = *self.clock_reference.get_or_insert(li);
        let Some((ref_ntp, ref_rtp)) = self.layers[reference].sr else {
            return;
        };
        let rate = i128::from(self.clock_rate);
        let tolerance = (u64::from(self.clock_rate) * TS_OFFSET_TOLERANCE_MS / 1000) as i32;
        for (i, l) in self.layers.iter_mut().enumerate() {
            let Some((ntp, rtp)) = l.sr else {
                continue;
            };
            if i == reference {
                l.ts_offset = Some(0);
                continue;
            }
            // Its RTP time at the reference report's instant.
            let dt_ns: i128 = match ref_ntp.duration_since(ntp) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            };
            let at_ref = i128::from(rtp) + dt_ns * rate / 1_000_000_000;
            let offset = (i128::from(ref_rtp) - at_ref) as u32;
            let moved = l
                .ts_offset
                .is_none_or(|o| (offset.wrapping_sub(o) as i32).abs() > tolerance);
            if moved {
                l.ts_offset = Some(offset);
            }
        }
    }
}

/// Codec family of negotiated payload parameters.
pub(crate) fn codec_kind(p: &PayloadParams) -> CodecKind {
    use str0m::format::Codec;
    match p.spec().codec {
        Codec::Opus => CodecKind::Opus,
        Codec::Vp8 => CodecKind::Vp8,
        Codec::Vp9 => CodecKind::Vp9,
        Codec::H264 => CodecKind::H264,
        Codec::Av1 => CodecKind::Av1,
        _ => CodecKind::Other,
    }
}

/// Our outstanding offer, with what an answer to it must match. str0m applies parts of an
/// answer (e.g. ICE credentials) before it finds a mismatch, so a wrong answer is refused
/// before it reaches str0m and the offer stays outstanding.
pub(crate) struct PendingOffer {
    pub(crate) pending: SdpPendingOffer,
    pub(crate) mids: Vec<Mid>,
    pub(crate) ice_restart: bool,
}

/// Things a drain produced that need the shard (other sessions, routes, the socket).
#[derive(Default)]
pub(crate) struct DrainOut {
    pub(crate) send: SendQueue,
    /// Bytes queued in `send` so far (a shard counter).
    pub(crate) bytes_queued: u64,
    /// Media from publish sessions to route.
    pub(crate) media: Vec<MediaPacket>,
    /// Data-channel messages from publish sessions to route.
    pub(crate) data: Vec<super::data::DataPacket>,
    /// Data channels that opened, closed or drained: (session slot, channel, change).
    pub(crate) channels: Vec<(usize, str0m::channel::ChannelId, super::data::ChannelChange)>,
    /// Data-channel messages refused for their size (larger than 64 KiB).
    pub(crate) data_too_large: u64,
    /// Keyframe requests from subscribers: (session slot, mid, rid).
    pub(crate) keyframe_requests: Vec<(usize, Mid, Option<Rid>)>,
    /// NACKs from subscribers (session slot, request), answered when the batch ends.
    pub(crate) nacks: Vec<(usize, NackRequest)>,
    /// Remote addresses newly proven (we answered them): (addr, session slot).
    pub(crate) new_addrs: Vec<(SocketAddr, usize)>,
}

/// A session's traffic counters (plain integers, bumped per datagram) and the receive and
/// send rates derived from them once per [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) datagrams_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) datagrams_out: u64,
    pub(crate) bytes_out: u64,
    /// Start of the current rate window and the byte counts then.
    window: Option<(Instant, u64, u64)>,
    /// Bits per second over the last complete window.
    pub(crate) bitrate_in: u64,
    pub(crate) bitrate_out: u64,
    /// AV1 packets whose dependency descriptor could not be read (forwarded without
    /// layers).
    pub(crate) dd_errors: u64,
}

/// Span of time the transport bitrates are averaged over.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Traffic {
    /// Close the rate window if it is complete (called from housekeeping, not per packet).
    pub(crate) fn update_rates(&mut self, now: Instant) {
        let Some((start, bytes_in, bytes_out)) = self.window else {
            self.window = Some((now, self.bytes_in, self.bytes_out));
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < RATE_WINDOW {
            return;
        }
        let rate = |bytes: u64| (bytes as u128 * 8_000_000 / elapsed.as_micros().max(1)) as u64;
        self.bitrate_in = rate(self.bytes_in.saturating_sub(bytes_in));
        self.bitrate_out = rate(self.bytes_out.saturating_sub(bytes_out));
        self.window = Some((now, self.bytes_in, self.bytes_out));
    }
}

/// One transport's str0m session on a shard.
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) slot: usize,
    pub(crate) role: Role,
    pub(crate) rtc: Rtc,
    /// The `session` tracing span (transport id, router id, role): entered by the shard
    /// around each piece of work for this session, so what is logged there names it.
    pub(crate) span: tracing::Span,
    pub(crate) traffic: Traffic,
    pub(crate) ufrag: String,
    pub(crate) events: UnboundedSender<SessionEvent>,
    /// The deadline last scheduled in the timer heap.
    pub(crate) deadline: Instant,
    pub(crate) addrs: Vec<SocketAddr>,
    /// Remote candidates trickled through the API (at most
    /// [`MAX_REMOTE_CANDIDATES`](crate::config::MAX_REMOTE_CANDIDATES)).
    pub(crate) remote_candidates: usize,
    pub(crate) created: Instant,
    pub(crate) last_rx: Instant,
    pub(crate) connected: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Set when the session must be torn down by the shard.
    pub(crate) dead: Option<CloseReason>,
    /// In the shard's teardown queue (at most once: the queue is worked off under a time
    /// budget, and a session may be touched again before its turn).
    pub(crate) doomed: bool,
    /// RTP was written this batch: flush with a timeout input at the end of the batch.
    pub(crate) dirty: bool,
    // Publish side.
    pub(crate) up: Vec<UpTrack>,
    /// (SSRC, track index, encoding index) of received streams seen so far.
    pub(crate) up_by_ssrc: Vec<(Ssrc, usize, usize)>,
    // Subscribe side.
    pub(crate) pending_offer: Option<PendingOffer>,
    /// The peer's ICE ufrag from the last applied answer.
    pub(crate) remote_ufrag: Option<String>,
    /// Down-track slots owned by this session.
    pub(crate) downs: Vec<usize>,
    /// Mids of removed down-tracks whose m-lines are stopped at the next offer.
    pub(crate) to_stop: Vec<Mid>,
    /// The first m-line this session offered: the BUNDLE tag. It is never rejected
    /// (port 0), only made inactive: browsers tear the transport down when the tagged
    /// m-line, or every m-line, of a BUNDLE group is rejected.
    pub(crate) anchor_mid: Option<Mid>,
    /// A relay session (full ICE agent, the other end another worker): the relay loss
    /// test hook applies to it.
    #[cfg(feature = "testing")]
    pub(crate) full_ice: bool,
    /// SRTP datagrams this session sent (for the relay loss test hook).
    #[cfg(feature = "testing")]
    pub(crate) srtp_sent: u64,
    /// Down-tracks waiting for the answer that makes them active.
    pub(crate) awaiting_answer: Vec<DownTrackId>,
    /// Bandwidth estimation toward the subscriber, when on (`MediaConfig::bandwidth_estimation`).
    pub(crate) bwe: Option<Box<SessionBwe>>,
    /// A publisher that negotiated the dependency descriptor: the extension of its last
    /// RTP datagram.
    pub(crate) dd: Option<Box<DdCapture>>,
    /// Publish side: the peer's data channels, published or not.
    pub(crate) data_up: Vec<super::data::DataUp>,
    /// Subscribe side: data-down slots owned by this session.
    pub(crate) data_downs: Vec<usize>,
}

/// The dependency descriptor of a publish session's last RTP datagram (AV1 SVC, issue
/// 12). str0m does not keep a header extension it does not know without allocating, so
/// the shard copies it from the datagram before str0m decrypts it (the RTP header is in
/// the clear), and [`Session::ingress_packet`] reads it only for the packet str0m then
/// emits with the same SSRC and sequence number: a datagram that fails authentication
/// never reaches a track's template structure.
pub(crate) struct DdCapture {
    /// The extension id the publisher's offer gave it.
    pub(crate) id: u8,
    ssrc: u32,
    seq: u16,
    len: usize,
    valid: bool,
    buf: [u8; 255],
}

impl DdCapture {
    /// A capture of extension `id`.
    pub(crate) fn new(id: u8) -> Self {
        DdCapture {
            id,
            ssrc: 0,
            seq: 0,
            len: 0,
            valid: false,
            buf: [0; 255],
        }
    }

    /// Copy the extension out of RTP datagram `datagram` (forget the last one if it has
    /// none). Returns false if the header could not be read.
    pub(crate) fn capture(&mut self, datagram: &[u8]) -> bool {
        self.valid = false;
        match crate::wire::find_extension(datagram, self.id) {
            Ok(e) => {
                if let Some(v) = e.value {
                    let n = v.len().min(self.buf.len());
                    self.buf[..n].copy_from_slice(&v[..n]);
                    (self.ssrc, self.seq, self.len, self.valid) = (e.ssrc, e.seq, n, true);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The extension of the packet `ssrc`/`seq`, if it was the one captured (once); or,
    /// for a repair, of the datagram it came in if that was on its stream's RTX SSRC
    /// `rtx` (asked for only then: the original sequence number is in the encrypted
    /// payload, but str0m emits the repaired packet while handling that very datagram).
    fn take(&mut self, ssrc: u32, seq: u16, rtx: impl FnOnce() -> Option<u32>) -> Option<&[u8]> {
        if !self.valid {
            return None;
        }
        let this = self.ssrc == ssrc && self.seq == seq;
        if !this && (self.ssrc == ssrc || rtx() != Some(self.ssrc)) {
            return None;
        }
        self.valid = false;
        Some(&self.buf[..self.len])
    }
}

/// A subscribe session's bandwidth estimate and the allocator that shares it (issue 12).
#[derive(Debug, Default)]
pub(crate) struct SessionBwe {
    /// The latest estimate in bits per second; `None` before the first.
    pub(crate) estimate: Option<u64>,
    pub(crate) allocator: Allocator,
    /// When the allocator last ran.
    pub(crate) last_run: Option<Instant>,
    /// Its last outcome.
    pub(crate) last: Allocation,
    /// The (minimum, desired) bitrates last given to the estimator.
    pub(crate) probe: (u64, u64),
    /// The estimate the allocator last ran with.
    pub(crate) allocated_at: u64,
    /// The media rate last given to the pacer (what was granted).
    pub(crate) media_rate: u64,
    /// The loss-based cap on the estimate.
    pub(crate) loss_cap: LossCap,
}

impl Session {
    /// Run `f` on the session with panic containment. A panic marks the session dead.
    pub(crate) fn guarded<R>(&mut self, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                tracing::error!(session = self.id.0, "session panicked: {msg}");
                self.dead = Some(CloseReason::Failed(format!("internal panic: {msg}")));
                None
            }
        }
    }

    /// Drain `poll_output` until a timeout, handing outputs to `out`. Returns the deadline.
    pub(crate) fn drain(&mut self, out: &mut DrainOut) -> Option<Instant> {
        self.guarded(|s| s.drain_inner(out)).flatten()
    }

    fn drain_inner(&mut self, out: &mut DrainOut) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                if self.dead.is_none() {
                    self.dead = Some(CloseReason::PeerClosed);
                }
                return None;
            }
            let output = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.dead = Some(CloseReason::Failed(e.to_string()));
                    return None;
                }
            };
            match output {
                Output::Timeout(t) => return Some(t),
                Output::Transmit(t) => self.transmit(t, out),
                Output::Event(e) => self.handle_event(e, out),
            }
        }
    }

    /// Queue a datagram of this session for the shard's next `sendmmsg`.
    pub(crate) fn transmit(&mut self, t: Transmit, out: &mut DrainOut) {
        #[cfg(feature = "testing")]
        let mut replay = None;
        #[cfg(feature = "testing")]
        if self.full_ice && matches!(t.contents.first(), Some(128..=191)) {
            // Test hook: lose every n-th SRTP datagram on relay links.
            self.srtp_sent += 1;
            let every = RELAY_DROP_EVERY.load(std::sync::atomic::Ordering::Relaxed);
            if every > 0 && self.srtp_sent.is_multiple_of(u64::from(every)) {
                RELAY_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            // Test hook: replay captured datagrams on relay links.
            replay = Some(relay_replay_capture(self.srtp_sent, &t));
        }
        if !self.addrs.contains(&t.destination) {
            self.addrs.push(t.destination);
            out.new_addrs.push((t.destination, self.slot));
        }
        self.traffic.datagrams_out += 1;
        self.traffic.bytes_out += t.contents.len() as u64;
        out.bytes_queued += t.contents.len() as u64;
        out.send.push(t.destination, t.contents.into());
        #[cfg(feature = "testing")]
        if let Some(captured) = replay {
            relay_replay_release(self.id.0, self.srtp_sent, captured, out);
        }
    }

    fn handle_event(&mut self, e: Event, out: &mut DrainOut) {
        match e {
            Event::Connected => {
                self.connected = true;
                let _ = self.events.send(SessionEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!(session = self.id.0, "ICE disconnected");
            }
            Event::RtpPacket(p) if self.role == Role::Publish => {
                if let Some(m) = self.ingress_packet(p) {
                    out.media.push(m);
                }
            }
            Event::SenderFeedback(f) if self.role == Role::Publish => {
                if let Some(up) = self.up.iter_mut().find(|u| u.mid == f.mid) {
                    if let Some(li) = up.layer_of(f.rid) {
                        let rtp = f.sender_info.rtp_time.numer() as u32;
                        up.on_sender_report(li, f.sender_info.ntp_time, rtp);
                    }
                }
            }
            Event::KeyframeRequest(r) if self.role == Role::Subscribe => {
                out.keyframe_requests.push((self.slot, r.mid, r.rid));
            }
            Event::NackRequest(r) if self.role == Role::Subscribe => {
                out.nacks.push((self.slot, r));
            }
            Event::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe,
            }) => {
                if let Some(bwe) = self.bwe.as_mut() {
                    let estimate = estimate.as_u64();
                    if bwe.estimate.is_none_or(|e| e.abs_diff(estimate) * 20 >= e) {
                        tracing::debug!(session = self.id.0, estimate, can_probe, "estimate");
                    }
                    bwe.estimate = Some(estimate);
                    // A move of a fifth or more is acted on at the next housekeeping (100
                    // ms), not in up to 500: a link that just congested loses its audio
                    // meanwhile.
                    if estimate.abs_diff(bwe.allocated_at) * 5 >= bwe.allocated_at {
                        bwe.last_run = None;
                    }
                }
            }
            Event::ChannelOpen(id, label) => {
                if self.role == Role::Publish {
                    let config = self.rtc.channel(id).and_then(|c| c.config().cloned());
                    let config = config.unwrap_or_else(|| str0m::channel::ChannelConfig {
                        label: label.clone(),
                        ..Default::default()
                    });
                    let full = self.data_up.len() >= super::data::MAX_PUBLISHER_CHANNELS;
                    match self
                        .data_up
                        .iter_mut()
                        .find(|d| d.label == label && d.channel.is_none())
                    {
                        Some(d) => {
                            d.channel = Some((id, config));
                            if let (Some(info), Some(reply)) = (d.info(), d.waiting.take()) {
                                let _ = reply.send(Ok(info));
                            }
                        }
                        None if full => {
                            tracing::debug!(session = self.id.0, "data channel closed: too many");
                            self.rtc.direct_api().close_data_channel(id);
                            out.channels
                                .push((self.slot, id, super::data::ChannelChange::Refused));
                        }
                        None => self.data_up.push(super::data::DataUp {
                            label,
                            key: None,
                            channel: Some((id, config)),
                            waiting: None,
                        }),
                    }
                } else {
                    out.channels
                        .push((self.slot, id, super::data::ChannelChange::Open));
                }
            }
            Event::ChannelData(d) if self.role == Role::Publish => {
                let up = self
                    .data_up
                    .iter()
                    .find(|u| u.channel.as_ref().is_some_and(|(c, _)| *c == d.id));
                if let Some(key) = up.and_then(|u| u.key) {
                    if d.data.len() > super::data::MAX_DATA_MESSAGE {
                        out.data_too_large += 1;
                    } else {
                        out.data.push(super::data::DataPacket {
                            key,
                            binary: d.binary,
                            payload: Arc::from(d.data),
                        });
                    }
                }
            }
            Event::ChannelClose(id) => {
                out.channels
                    .push((self.slot, id, super::data::ChannelChange::Closed));
            }
            Event::ChannelBufferedAmountLow(id) if self.role == Role::Subscribe => {
                out.channels
                    .push((self.slot, id, super::data::ChannelChange::Low));
            }
            Event::Closed if self.dead.is_none() => {
                self.dead = Some(CloseReason::PeerClosed);
            }
            _ => {}
        }
    }

    /// The track and encoding of received SSRC `ssrc`.
    fn up_index_for(&mut self, ssrc: Ssrc) -> Option<(usize, usize)> {
        if let Some(&(_, i, li)) = self.up_by_ssrc.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((i, li));
        }
        let (mid, rid) = self
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))?;
        let i = self.up.iter().position(|u| u.mid == mid)?;
        let li = self.up[i].layer_of(rid)?;
        self.up[i].layers[li].ssrc = Some(ssrc);
        self.up_by_ssrc.push((ssrc, i, li));
        Some((i, li))
    }

    fn ingress_packet(&mut self, p: RtpPacket) -> Option<MediaPacket> {
        let (i, li) = self.up_index_for(p.header.ssrc)?;
        let up = &mut self.up[i];
        if !up.info.active {
            return None;
        }
        let pt = *p.header.payload_type;
        let codec = up.codec_by_pt.get(pt as usize).copied()?;
        up.last_pt = pt;
        let mut info = if up.info.kind == MediaKind::Video {
            codec::inspect(codec, &p.payload).unwrap_or_default()
        } else {
            PayloadInfo::default()
        };
        // The dependency descriptor (Chromium sends it with every video codec once it is
        // negotiated): AV1's layers and frame boundaries; the temporal layers of a VP8 (or
        // VP9) stream whose own descriptor no longer carries them.
        let mut dd_frame = false;
        let mut dd_raw = None;
        let mut dd_switch_to = 0;
        // The codec's own descriptor gives the temporal layer (else the DD has to).
        let codec_tid = info.temporal_id.is_some();
        let rtc = &mut self.rtc;
        let ext = match up.info.kind {
            MediaKind::Video => self.dd.as_mut().and_then(|d| {
                d.take(*p.header.ssrc, *p.seq_no as u16, || {
                    let mut api = rtc.direct_api();
                    api.stream_rx(&p.header.ssrc)
                        .and_then(|s| s.rtx())
                        .map(|r| *r)
                })
            }),
            _ => None,
        };

        if let Some(ext) = ext {
            let structure = &mut up.layers[li].dd_structure;
            match dependency_descriptor::parse(ext, structure) {
                Ok(f) => {
                    let structure = structure.as_ref();
                    let layered = structure.is_some_and(|s| s.max_layers() != (0, 0));
                    dd_switch_to = structure.map_or(0, |s| dd_switch_mask(s, &f));
                    if codec == CodecKind::Av1 {
                        // Forwarded as it came: receivers assemble and reference AV1 SVC
                        // frames by it (inline, no allocation, but for a keyframe's
                        // structure).
                        dd_raw = Some(RawExtValue::new(ext));
                        if layered {
                            dd_frame = true;
                            info.spatial_id = Some(f.spatial);
                            info.temporal_id = Some(f.temporal);
                            info.start_of_frame = f.start_of_frame;
                            info.end_of_frame = f.end_of_frame;
                        } else {
                            dd_switch_to = 0;
                        }
                    } else if layered && !codec_tid {
                        dd_frame = true;
                        info.temporal_id = Some(f.temporal);
                    } else {
                        dd_switch_to = 0;
                    }
                }
                Err(e) => {
                    self.traffic.dd_errors += 1;
                    tracing::trace!(session = self.id.0, "dependency descriptor: {e}");
                }
            }
        }
        // A packet of an encoding whose layers only the DD gives (AV1; VP8 without temporal
        // ids of its own) whose descriptor is missing or unreadable has no layer: dropped
        // (and counted) rather than forwarded as a stream without layers, which would
        // switch every down-track's mode back and forth.
        let needs_dd = (codec == CodecKind::Av1 || !codec_tid)
            && up.layers[li]
                .dd_structure
                .as_ref()
                .is_some_and(|s| s.max_layers() != (0, 0));
        if needs_dd && !dd_frame {
            if ext.is_none() {
                self.traffic.dd_errors += 1;
            }
            return None;
        }
        let simulcast = up.simulcast();
        let layer = &mut up.layers[li];
        layer.bytes += p.payload.len() as u64;
        layer.obs.last_packet = Some(p.timestamp);
        if info.keyframe {
            layer.keyframe_requests.satisfied();
            if let Some((w, h)) = info.size {
                layer.obs.pixels = u32::from(w) * u32::from(h);
            }
        }
        let clock_offset = layer.ts_offset.filter(|_| simulcast);
        // One stream with layers: VP9 SVC (spatial ids), AV1 SVC (the DD's), or VP8 or H.264
        // with temporal layers (L1T3: temporal ids, one spatial layer).
        let svc_sid = if simulcast {
            None
        } else {
            match codec {
                CodecKind::Vp9 => info.spatial_id,
                CodecKind::Vp8 => info.temporal_id.map(|_| 0),
                // H.264 temporal layers: only the dependency descriptor tells them.
                CodecKind::H264 if dd_frame => Some(0),
                CodecKind::Av1 if dd_frame => info.spatial_id,
                _ => None,
            }
        };
        let (spatial, layers, frame_end) = if simulcast {
            let rank = up.ranking.rank_of(li).unwrap_or(0);
            // Flowing again: known at once, not at the next housekeeping.
            up.active |= 1 << rank;
            (rank, up.active, p.header.marker)
        } else if let Some(sid) = svc_sid.filter(|s| usize::from(*s) < MAX_LAYERS) {
            up.svc_seen[usize::from(sid)] = Some(p.timestamp);
            up.svc_active |= 1 << sid;
            // VP8 and H.264 have no end-of-frame bit: their frames end at the marker.
            let end = info.end_of_frame
                || (matches!(codec, CodecKind::Vp8 | CodecKind::H264) && p.header.marker);
            // (AV1: the dependency descriptor's end of frame.)
            (sid, up.svc_active, end)
        } else {
            (0, 0, p.header.marker)
        };
        let e = &p.header.ext_vals;
        // Forward only values that describe the media; transport-level ones (twcc, mid,
        // rid, send times) belong to each subscriber session.
        let ext = ExtensionValues {
            audio_level: e.audio_level,
            voice_activity: e.voice_activity,
            video_orientation: e.video_orientation,
            video_content_type: e.video_content_type,
            abs_capture_time: e.abs_capture_time,
            play_delay_min: e.play_delay_min,
            play_delay_max: e.play_delay_max,
            raw: dd_raw,
            ..Default::default()
        };
        Some(MediaPacket {
            track: up.info.key,
            source: *p.header.ssrc as u64,
            seq: *p.seq_no,
            ts: p.header.timestamp,
            pt,
            marker: p.header.marker,
            keyframe: info.keyframe,
            layer: PacketLayer {
                spatial,
                temporal: info.temporal_id.unwrap_or(0),
                active: layers,
                svc: svc_sid.is_some(),
                frame_start: info.start_of_frame,
                frame_end,
                switch_point: info.switch_point,
                switch_to: dd_switch_to,
                clock_offset,
            },
            arrival: p.timestamp,
            ext,
            payload: Arc::clone(&p.payload),
        })
    }

    /// Ask the publisher for a keyframe on track `mid`, of the encoding ranked `rank`
    /// (simulcast; the only encoding otherwise), unless its throttle holds the request
    /// back (see [`crate::forward::keyframe`]; it is then sent by
    /// [`Session::send_held_back_keyframe_requests`] once due, at
    /// [`Session::keyframe_request_due`]).
    pub(crate) fn request_keyframe(&mut self, mid: Mid, rank: u8, now: Instant) -> bool {
        let Some(i) = self.up.iter().position(|u| u.mid == mid) else {
            return false;
        };
        let up = &mut self.up[i];
        let li = if up.simulcast() {
            // The best flowing encoding at or below the rank asked for: what the
            // subscriber's selector will target once it sees the same encodings flow.
            let top = up.layers.len() as u8 - 1;
            let rank = spatial_for(rank, up.active).unwrap_or(rank.min(top));
            match up.ranking.index_of(rank) {
                Some(li) => li,
                None => return false,
            }
        } else {
            0
        };
        if !up.layers[li].keyframe_requests.try_request(now) {
            return false;
        }
        self.send_pli(i, li)
    }

    /// Send the keyframe requests the throttle held back and that are due now. Returns how
    /// many were sent.
    pub(crate) fn send_held_back_keyframe_requests(&mut self, now: Instant) -> u64 {
        let mut sent = 0;
        for i in 0..self.up.len() {
            for li in 0..self.up[i].layers.len() {
                if self.up[i].layers[li].keyframe_requests.take_due(now) {
                    sent += u64::from(self.send_pli(i, li));
                }
            }
        }
        sent
    }

    /// Whether a keyframe request is held back on any of this session's tracks.
    pub(crate) fn keyframe_request_pending(&self) -> bool {
        self.up
            .iter()
            .flat_map(|u| &u.layers)
            .any(|l| l.keyframe_requests.pending())
    }

    /// When the earliest keyframe request held back on this session's tracks is due.
    pub(crate) fn keyframe_request_due(&self) -> Option<Instant> {
        self.up
            .iter()
            .flat_map(|u| &u.layers)
            .filter_map(|l| l.keyframe_requests.due_at())
            .min()
    }

    /// A PLI to encoding `li` of track `i`: by its SSRC once known, else by mid and rid.
    fn send_pli(&mut self, i: usize, li: usize) -> bool {
        let mid = self.up[i].mid;
        let (ssrc, rid) = (self.up[i].layers[li].ssrc, self.up[i].layers[li].rid);
        let done = self.guarded(|s| {
            let mut api = s.rtc.direct_api();
            let rx = match ssrc {
                Some(ssrc) => api.stream_rx(&ssrc),
                None => api.stream_rx_by_mid(mid, rid),
            };
            match rx {
                Some(rx) => {
                    rx.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
                    true
                }
                None => false,
            }
        });
        done.unwrap_or(false)
    }
}

/// The temporal layers (bit per layer) a decoder of frame `f`'s spatial layer may switch up
/// to at it: those whose decode target's indication for it is `Switch`.
fn dd_switch_mask(
    s: &dependency_descriptor::Structure,
    f: &dependency_descriptor::FrameInfo,
) -> u8 {
    let mut mask = 0u8;
    for dt in 0..s.decode_targets() {
        if let Some((sp, t)) = s.decode_target_layers(dt) {
            if sp == f.spatial && t < 8 && f.dti(dt) == dependency_descriptor::Dti::Switch {
                mask |= 1 << t;
            }
        }
    }
    mask
}

/// Test hook: relay sessions drop every n-th SRTP datagram they send (0: none).
#[cfg(feature = "testing")]
pub(crate) static RELAY_DROP_EVERY: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(0);

/// Datagrams the relay loss hook dropped.
#[cfg(feature = "testing")]
pub(crate) static RELAY_DROPPED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Test hook: relay sessions keep a copy of every n-th SRTP/SRTCP datagram they send (0:
/// none) and send it again [`RELAY_REPLAY_DELAY`] of their SRTP/SRTCP datagrams later.
#[cfg(feature = "testing")]
pub(crate) static RELAY_REPLAY_EVERY: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(0);

/// How many of its datagrams a relay session sends before a captured one again (0: right
/// after the original).
#[cfg(feature = "testing")]
pub(crate) static RELAY_REPLAY_DELAY: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(0);

/// SRTP (RTP) datagrams the relay replay hook sent again.
#[cfg(feature = "testing")]
pub(crate) static RELAY_REPLAYED_RTP: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// SRTCP datagrams the relay replay hook sent again.
#[cfg(feature = "testing")]
pub(crate) static RELAY_REPLAYED_RTCP: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// A captured datagram: (session id, due when the session has sent this many SRTP/SRTCP
/// datagrams, destination, the datagram as sent).
#[cfg(feature = "testing")]
type Held = (u64, u64, SocketAddr, Vec<u8>);

#[cfg(feature = "testing")]
thread_local! {
    /// Datagrams the replay hook captured on this shard (so replayed from its socket),
    /// waiting for their turn; at most [`MAX_HELD`] (the oldest, of sessions gone, go).
    static RELAY_HELD: std::cell::RefCell<std::collections::VecDeque<Held>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

#[cfg(feature = "testing")]
const MAX_HELD: usize = 4096;

/// The replay hook's copy of datagram number `sent` of a relay session, if it takes one.
#[cfg(feature = "testing")]
fn relay_replay_capture(sent: u64, t: &Transmit) -> Option<(SocketAddr, Vec<u8>)> {
    let every = RELAY_REPLAY_EVERY.load(std::sync::atomic::Ordering::Relaxed);
    (every > 0 && sent.is_multiple_of(u64::from(every)))
        .then(|| (t.destination, t.contents.to_vec()))
}

/// Hold `captured` of relay session `session` (which has sent `sent` SRTP/SRTCP datagrams,
/// the original of `captured` last), and queue the held ones of that session that are due,
/// after the original: same socket, same destination, same bytes.
#[cfg(feature = "testing")]
fn relay_replay_release(
    session: u64,
    sent: u64,
    captured: Option<(SocketAddr, Vec<u8>)>,
    out: &mut DrainOut,
) {
    use std::sync::atomic::Ordering::Relaxed;
    RELAY_HELD.with_borrow_mut(|held| {
        if let Some((dest, data)) = captured {
            let due = sent + u64::from(RELAY_REPLAY_DELAY.load(Relaxed));
            held.push_back((session, due, dest, data));
            if held.len() > MAX_HELD {
                held.pop_front();
            }
        }
        let mut i = 0;
        while i < held.len() {
            if held[i].0 != session || held[i].1 > sent {
                i += 1;
                continue;
            }
            let Some((_, _, dest, data)) = held.remove(i) else {
                break;
            };
            // RFC 5761: RTCP packet types 192-223 where RTP has marker and payload type.
            if matches!(data.get(1), Some(192..=223)) {
                RELAY_REPLAYED_RTCP.fetch_add(1, Relaxed);
            } else {
                RELAY_REPLAYED_RTP.fetch_add(1, Relaxed);
            }
            out.bytes_queued += data.len() as u64;
            out.send.push(dest, data);
        }
    });
}
