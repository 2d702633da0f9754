//! The sending half of the client peer: one [`LocalTrack`] per published m-line with its
//! payload type, RTP sequence and clock, packet counter, keyframe schedule and payload
//! template, and the write of one synthetic packet.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RawExtValue, RtpWrite};
use str0m::Rtc;

use crate::testing::payload::{self, Stamp};
use crate::wire::dependency_descriptor::write::l1t3;

/// Payload size of a video packet until [`ClientPeer::set_payload_len`] says otherwise.
///
/// [`ClientPeer::set_payload_len`]: super::ClientPeer::set_payload_len
pub const DEFAULT_VIDEO_LEN: usize = 1000;
/// Payload size of an audio packet until [`ClientPeer::set_payload_len`] says otherwise.
///
/// [`ClientPeer::set_payload_len`]: super::ClientPeer::set_payload_len
pub const DEFAULT_AUDIO_LEN: usize = 100;

/// What one local track has sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Packets written.
    pub packets: u64,
    /// Keyframe packets written.
    pub keyframes: u64,
    /// Keyframe requests (PLI/FIR) the server sent for this track.
    pub keyframe_requests: u64,
}

/// How far apart the packet counters of a simulcast track's encodings start: encoding
/// `i` counts from `i * LAYER_COUNTER_SPAN`, so a receiver tells them apart by counter
/// ([`ReceivedTrack::by_layer`](super::ReceivedTrack::by_layer)).
pub const LAYER_COUNTER_SPAN: u64 = 1 << 20;

pub(super) struct LocalTrack {
    pub mid: Mid,
    /// The simulcast encoding it is (none: the m-line's only stream).
    pub rid: Option<Rid>,
    /// Picture size its keyframes announce (default: the template's 320×240).
    key_size: Option<(u16, u16)>,
    pub kind: MediaKind,
    pt: Option<Pt>,
    counter: u64,
    seq: u64,
    ts_base: u32,
    /// RTP time 0 (plus `ts_base`) is this instant.
    origin: Instant,
    last_keyframe: Option<Instant>,
    pub force_keyframe: bool,
    template: Vec<u8>,
    pub stats: SendStats,
}

impl LocalTrack {
    /// Encoding `layer` (`rid`) of a simulcast video track on `mid`, its keyframes
    /// announcing `key_size`.
    pub fn simulcast(
        mid: Mid,
        rid: Rid,
        layer: usize,
        key_size: (u16, u16),
        now: Instant,
    ) -> LocalTrack {
        let mut t = LocalTrack::new(mid, MediaKind::Video, now);
        t.rid = Some(rid);
        t.key_size = Some(key_size);
        t.counter = layer as u64 * LAYER_COUNTER_SPAN;
        t
    }

    pub fn new(mid: Mid, kind: MediaKind, now: Instant) -> LocalTrack {
        let len = match kind {
            MediaKind::Video => DEFAULT_VIDEO_LEN,
            MediaKind::Audio => DEFAULT_AUDIO_LEN,
        };
        LocalTrack {
            mid,
            rid: None,
            key_size: None,
            kind,
            pt: None,
            counter: 0,
            seq: 1000 + u64::from(rand::random::<u16>() % 20_000),
            ts_base: rand::random(),
            origin: now,
            last_keyframe: None,
            force_keyframe: false,
            template: payload::template(kind, len),
            stats: SendStats::default(),
        }
    }

    pub fn payload_len(&self) -> usize {
        self.template.len()
    }

    pub fn set_payload_len(&mut self, len: usize) {
        if len.max(payload::min_len(self.kind)) != self.template.len() {
            self.template = payload::template(self.kind, len);
        }
    }

    /// Start the RTP clock and the keyframe schedule over at `now`.
    pub fn restart(&mut self, now: Instant) {
        self.origin = now;
        self.last_keyframe = None;
    }

    /// The payload type the answer gave this track's codec (VP8 or Opus), once known.
    pub fn payload_type(&mut self, rtc: &Rtc) -> Option<Pt> {
        if self.pt.is_none() {
            let want = match self.kind {
                MediaKind::Audio => Codec::Opus,
                MediaKind::Video => Codec::Vp8,
            };
            let params = rtc.codec_config().params();
            self.pt = rtc.media(self.mid).and_then(|m| {
                m.remote_pts().iter().copied().find(|pt| {
                    params
                        .iter()
                        .any(|p| p.pt() == *pt && p.spec().codec == want)
                })
            });
        }
        self.pt
    }

    /// A video keyframe is due: one was requested, or none was sent for `interval`.
    pub fn keyframe_due(&self, now: Instant, interval: Duration) -> bool {
        self.kind == MediaKind::Video
            && (self.force_keyframe
                || self
                    .last_keyframe
                    .is_none_or(|k| now.saturating_duration_since(k) >= interval))
    }

    /// Write the next packet (see [`ClientPeer::write_media`](super::ClientPeer::write_media)).
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        publisher: u32,
        keyframe: bool,
        dd: bool,
        send_us: u64,
        now: Instant,
    ) -> bool {
        let Some(pt) = self.payload_type(rtc) else {
            return false;
        };
        let video = self.kind == MediaKind::Video;
        let keyframe = keyframe && video;
        let clock: u64 = if video { 90_000 } else { 48_000 };
        let elapsed = now.saturating_duration_since(self.origin).as_micros() as u64;
        let ts = self
            .ts_base
            .wrapping_add((elapsed * clock / 1_000_000) as u32);
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, self.rid) else {
            return false;
        };
        let mut data = self.template.clone();
        let stamp = Stamp {
            publisher,
            counter: self.counter,
            send_us,
            keyframe,
        };
        payload::stamp(&mut data, self.kind, &stamp);
        if let (true, Some(size)) = (keyframe, self.key_size) {
            payload::set_key_size(&mut data, size);
        }
        let mut write = RtpWrite::new(pt, self.seq.into(), ts, now, data)
            .marker(video)
            .nackable(true);
        if dd && video {
            // libwebrtc's L1T3 pattern, one frame per packet.
            let template = match (keyframe, self.counter % 4) {
                (true, _) => 0,
                (_, 0) => 1,
                (_, 2) => 2,
                (_, 1) => 3,
                _ => 4,
            };
            let ext = l1t3(self.counter as u16, template, keyframe);
            write = write.ext_vals(ExtensionValues {
                raw: Some(RawExtValue::new(&ext)),
                ..Default::default()
            });
        }
        tx.write_rtp(write);
        self.counter += 1;
        self.seq += 1;
        self.stats.packets += 1;
        if keyframe {
            self.stats.keyframes += 1;
            self.force_keyframe = false;
            self.last_keyframe = Some(now);
        }
        true
    }
}
