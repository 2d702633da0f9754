//! The receiving half of the client peer: which remote track an RTP packet belongs to,
//! and the per-track counters its synthetic payload feeds (packets, distinct counters,
//! duplicates, corruption, order, keyframes, latency, sender reports).

use std::time::SystemTime;

use str0m::media::{MediaKind, Mid};
use str0m::rtp::RtpPacket;
use str0m::Rtc;

use super::sdp::{self, RemoteLine};
use crate::testing::payload::{self, Stamp};

/// Counters above this are treated as corrupt (keeps the seen-bitmap bounded).
pub const MAX_COUNTER: u64 = 1 << 30;

/// What arrived on one remote track (keyed by its msid track id).
#[derive(Debug, Clone)]
pub struct ReceivedTrack {
    /// Every RTP packet str0m delivered for this track (retransmits/duplicates included).
    pub packets: u64,
    /// Distinct sender counters seen.
    pub distinct_counters: u64,
    /// Intact packets whose counter had been seen before.
    pub duplicates: u64,
    /// Packets whose payload parsed intact (from the expected publisher, if one is set).
    pub intact: u64,
    /// Packets whose payload did not parse (or carried an impossible counter).
    pub corrupt: u64,
    /// Intact packets from another publisher than the expected one.
    pub foreign: u64,
    /// True while every intact packet carried a counter above the previous one.
    pub in_order: bool,
    /// Highest counter seen.
    pub max_counter: Option<u64>,
    /// Lowest counter seen.
    pub min_counter: Option<u64>,
    /// VP8 keyframe packets (counted once per distinct counter).
    pub keyframes: u64,
    /// Distinct SSRCs seen for this track, in order of appearance.
    pub ssrcs: Vec<u32>,
    /// Sum over intact packets of (receive time − send time) in µs.
    pub latency_us_sum: u64,
    /// Intact packets by one-way latency: bucket 0 under 1 ms, bucket `i` from 2^(i−1) to
    /// 2^i ms, the last one everything above (see [`ReceivedTrack::latency_quantile_ms`]).
    pub latency_hist: [u64; LATENCY_BUCKETS],
    /// RTCP sender reports received for this track.
    pub sender_reports: u64,
    /// The last sender report: (NTP wallclock, RTP time in the codec clock).
    pub last_sr: Option<(SystemTime, u64)>,
    /// RTP timestamp of the newest packet received.
    pub last_rtp_ts: Option<u32>,
    /// Intact packets by the sender's simulcast encoding (counter / `LAYER_COUNTER_SPAN`;
    /// everything else counts as encoding 0).
    pub by_layer: [u64; 4],
    /// Times the RTP sequence number moved forward by more than one (a gap the receiver
    /// would NACK).
    pub seq_gaps: u64,
    /// Highest (extended) RTP sequence number received.
    pub max_seq: Option<u64>,
}

impl Default for ReceivedTrack {
    fn default() -> Self {
        ReceivedTrack {
            packets: 0,
            distinct_counters: 0,
            duplicates: 0,
            intact: 0,
            corrupt: 0,
            foreign: 0,
            in_order: true,
            max_counter: None,
            min_counter: None,
            keyframes: 0,
            ssrcs: Vec::new(),
            latency_us_sum: 0,
            latency_hist: [0; LATENCY_BUCKETS],
            sender_reports: 0,
            last_sr: None,
            last_rtp_ts: None,
            by_layer: [0; 4],
            seq_gaps: 0,
            max_seq: None,
        }
    }
}

/// Buckets of [`ReceivedTrack::latency_hist`].
pub const LATENCY_BUCKETS: usize = 16;

/// The latency bucket of `us`.
fn latency_bucket(us: u64) -> usize {
    let ms = us / 1000;
    ((u64::BITS - ms.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1)
}

impl ReceivedTrack {
    /// Mean one-way latency over intact packets, in µs.
    pub fn mean_latency_us(&self) -> Option<u64> {
        (self.intact > 0).then(|| self.latency_us_sum / self.intact)
    }

    /// An upper bound (ms, a power of two) of the `q` quantile of the one-way latency of the
    /// packets received since the snapshot `earlier` of this track (`None` if none were).
    pub fn latency_quantile_ms(&self, earlier: &ReceivedTrack, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency_hist
            .iter()
            .zip(&earlier.latency_hist)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= wanted {
                return Some(1 << i);
            }
        }
        Some(1 << (LATENCY_BUCKETS - 1))
    }
}

/// One intact packet from the expected publisher, as recorded for
/// [`ClientPeer::take_arrivals`](super::ClientPeer::take_arrivals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// What its payload carried.
    pub stamp: Stamp,
    /// The first packet with this counter on its track.
    pub fresh: bool,
}

struct Track {
    key: String,
    stats: ReceivedTrack,
    /// Bitmap of counters seen.
    seen: Vec<u64>,
    last_counter: Option<u64>,
}

impl Track {
    /// Mark `counter` seen; true the first time.
    fn insert(&mut self, counter: u64) -> bool {
        let (w, b) = ((counter / 64) as usize, counter % 64);
        if w >= self.seen.len() {
            self.seen.resize((w + 1).next_power_of_two(), 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }
}

/// Remote m-lines and the tracks received on them.
#[derive(Default)]
pub(super) struct Receiver {
    /// Remote m-lines in order of first appearance, each as last described.
    remote: Vec<RemoteLine>,
    tracks: Vec<Track>,
    ssrc_mid: Vec<(u32, Mid)>,
    pub arrivals: Vec<Arrival>,
    record_arrivals: bool,
    expect_publisher: Option<u32>,
}

impl Receiver {
    pub fn new(expect_publisher: Option<u32>, record_arrivals: bool) -> Receiver {
        Receiver {
            record_arrivals,
            expect_publisher,
            ..Default::default()
        }
    }

    /// Take note of a remote description's m-lines.
    pub fn record_remote(&mut self, sdp: &str) {
        for l in sdp::media_lines(sdp) {
            match self.remote.iter_mut().find(|r| r.mid == l.mid) {
                Some(r) => *r = l,
                None => self.remote.push(l),
            }
        }
    }

    /// Track ids of the remote m-lines currently sending towards us.
    pub fn remote_track_ids(&self) -> Vec<String> {
        let sending = self.remote.iter().filter(|l| l.remote_sends);
        sending.filter_map(|l| l.track_id.clone()).collect()
    }

    /// The mids of the remote m-lines carrying `track_id`.
    pub fn mids_of(&self, track_id: &str) -> Vec<Mid> {
        let lines = self.remote.iter();
        let of = lines.filter(|l| l.track_id.as_deref() == Some(track_id));
        of.map(|l| l.mid).collect()
    }

    pub fn received(&self, key: &str) -> Option<&ReceivedTrack> {
        self.tracks.iter().find(|t| t.key == key).map(|t| &t.stats)
    }

    pub fn tracks(&self) -> impl Iterator<Item = (&str, &ReceivedTrack)> {
        self.tracks.iter().map(|t| (t.key.as_str(), &t.stats))
    }

    fn track(&mut self, mid: Option<Mid>) -> &mut Track {
        let line = mid.and_then(|m| self.remote.iter().find(|l| l.mid == m));
        let found = match line.and_then(|l| l.track_id.as_deref()) {
            Some(id) => self.tracks.iter().position(|t| t.key == id),
            None => {
                let key = format!("mid:{}", mid.map_or("?".to_string(), |m| m.to_string()));
                self.tracks.iter().position(|t| t.key == key)
            }
        };
        let i = found.unwrap_or_else(|| {
            let key = match line.and_then(|l| l.track_id.clone()) {
                Some(id) => id,
                None => format!("mid:{}", mid.map_or("?".to_string(), |m| m.to_string())),
            };
            self.tracks.push(Track {
                key,
                stats: ReceivedTrack::default(),
                seen: Vec::new(),
                last_counter: None,
            });
            self.tracks.len() - 1
        });
        &mut self.tracks[i]
    }

    fn mid_of(&mut self, p: &RtpPacket, rtc: &mut Rtc) -> Option<Mid> {
        let ssrc = *p.header.ssrc;
        if let Some((_, m)) = self.ssrc_mid.iter().find(|(s, _)| *s == ssrc) {
            return Some(*m);
        }
        let mid = p
            .header
            .ext_vals
            .mid
            .or_else(|| rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid()))?;
        self.ssrc_mid.push((ssrc, mid));
        Some(mid)
    }

    /// An RTP packet arrived at `now_us` (the senders' clock).
    pub fn on_rtp(&mut self, p: &RtpPacket, rtc: &mut Rtc, now_us: u64) {
        let mid = self.mid_of(p, rtc);
        let line_kind = mid.and_then(|m| self.remote.iter().find(|l| l.mid == m).map(|l| l.kind));
        let kind = line_kind
            .or_else(|| mid.and_then(|m| rtc.media(m)).map(|m| m.kind()))
            .unwrap_or(MediaKind::Video);
        let (expect, record) = (self.expect_publisher, self.record_arrivals);
        let t = self.track(mid);
        let ssrc = *p.header.ssrc;
        t.stats.packets += 1;
        t.stats.last_rtp_ts = Some(p.header.timestamp);
        let seq = *p.seq_no;
        match t.stats.max_seq {
            Some(m) if seq > m + 1 => t.stats.seq_gaps += 1,
            _ => {}
        }
        t.stats.max_seq = Some(t.stats.max_seq.map_or(seq, |m| m.max(seq)));
        if !t.stats.ssrcs.contains(&ssrc) {
            t.stats.ssrcs.push(ssrc);
        }
        let stamp = match payload::parse(&p.payload, kind) {
            Some(s) if s.counter <= MAX_COUNTER => s,
            _ => {
                t.stats.corrupt += 1;
                return;
            }
        };
        if expect.is_some_and(|e| e != stamp.publisher) {
            t.stats.foreign += 1;
            return;
        }
        let s = &mut t.stats;
        s.intact += 1;
        let layer = (stamp.counter / super::LAYER_COUNTER_SPAN) as usize;
        s.by_layer[layer.min(3)] += 1;
        let latency = now_us.saturating_sub(stamp.send_us);
        s.latency_us_sum += latency;
        s.latency_hist[latency_bucket(latency)] += 1;
        if t.last_counter.is_some_and(|last| stamp.counter <= last) {
            s.in_order = false;
        }
        t.last_counter = Some(stamp.counter);
        s.max_counter = Some(
            s.max_counter
                .map_or(stamp.counter, |m| m.max(stamp.counter)),
        );
        s.min_counter = Some(
            s.min_counter
                .map_or(stamp.counter, |m| m.min(stamp.counter)),
        );
        let fresh = t.insert(stamp.counter);
        let s = &mut t.stats;
        if fresh {
            s.distinct_counters += 1;
            s.keyframes += u64::from(stamp.keyframe);
        } else {
            s.duplicates += 1;
        }
        if record {
            self.arrivals.push(Arrival { stamp, fresh });
        }
    }

    /// A sender report arrived for `mid`.
    pub fn on_sender_report(&mut self, mid: Mid, ntp: SystemTime, rtp: u64) {
        let t = self.track(Some(mid));
        t.stats.sender_reports += 1;
        t.stats.last_sr = Some((ntp, rtp));
    }

    /// RTP packets received on every track.
    pub fn packets(&self) -> u64 {
        self.tracks.iter().map(|t| t.stats.packets).sum()
    }
}
