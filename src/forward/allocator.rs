//! How a subscribe transport shares its bandwidth estimate among its tracks (issue 12).
//!
//! The transport's session estimates what its link carries (transport-wide congestion
//! control, str0m's estimator). [`Allocator::allocate`] turns that estimate into a grant per
//! track:
//! - audio first: its bitrate is set aside whatever the estimate says;
//! - then every video track its lowest flowing layer, in the transport's order, as long as
//!   it fits; a track whose lowest layer does not fit is paused ([`Grant::Paused`]) at
//!   once when not even [`PAUSE_AT_ONCE_PCT`] of it fits, else after [`PAUSE_GRACE`];
//! - then the video tracks take turns moving up one layer at a time, up to their
//!   subscriber's preference, while the estimate has room.
//!
//! Keeping a layer needs room for [`KEPT_LAYER_PCT`] of it (the lowest one,
//! [`LOWEST_LAYER_KEEP_PCT`]); adding one (an upgrade, or resuming a paused track) needs
//! [`UPGRADE_HEADROOM_PCT`] more than its cost, and an upgrade is not done within
//! [`CONGESTION_HOLD`] of a downgrade the estimate forced. Layers whose bitrate is not known
//! yet are not upgraded to. [`Allocation`] also says what to probe for: the bitrate of
//! everything the subscriber prefers (`desired`) and, when an upgrade waits for room, the
//! bitrate that would carry it (`minimum`: the session pads up to it, so the estimator can
//! see whether the link takes it).
//!
//! The estimate starts as a guess (the transport's initial bitrate) that probing raises;
//! until it has fallen once ([`PROVEN_FALL_PCT`]) nothing that flows is taken away: a
//! track without layers is not paused for a guess, only upgrades wait.
//!
//! Pure: the caller supplies the estimate, the tracks and the time; no allocation.

use std::time::{Duration, Instant};

use super::ranking::MAX_LAYERS;

/// No subscribe transport starts its estimate lower than this (bits per second).
pub const MIN_INITIAL_BPS: u64 = 50_000;

/// No subscribe transport starts its estimate higher than this (bits per second): 10
/// Gbit/s.
pub const MAX_INITIAL_BPS: u64 = 10_000_000_000;

/// How much more room than its cost (percent) an added layer needs.
pub const UPGRADE_HEADROOM_PCT: u64 = 15;

/// No layer is added for this long after the estimate forced one down (resuming a
/// paused track's lowest layer is not held: only its headroom is needed).
pub const CONGESTION_HOLD: Duration = Duration::from_secs(10);

/// A track keeps its lowest layer while the estimate leaves at least this share (percent)
/// of its cost: pausing video is drastic, and an estimate dips below the link's capacity
/// for a while after congestion.
pub const LOWEST_LAYER_KEEP_PCT: u64 = 70;

/// A track keeps a layer above its lowest while the estimate leaves at least this share
/// (percent) of what the layer adds. On congestion the estimator backs off to 85 % of what
/// got through, so a layer is given up when it costs more than the link carries, not when
/// a delay spike (a busy host, a Wi-Fi retry) dips the estimate just below it.
pub const KEPT_LAYER_PCT: u64 = 85;

/// The estimate has fallen when it is below this share (percent) of the highest it was.
/// Until it has, it is a guess still being probed upward (it starts at the transport's
/// initial bitrate), not a measure of congestion: what flows is kept (nothing is paused or
/// taken down, no congestion hold starts), and only upgrades wait for it.
pub const PROVEN_FALL_PCT: u64 = 95;

/// A video track whose lowest layer no longer fits keeps it for this long while the estimate
/// leaves at least [`PAUSE_AT_ONCE_PCT`] of its cost: after congestion the estimate
/// undershoots the link for seconds (it grows by at most half again what is acknowledged,
/// which is no more than what is sent; one run of `tests/bwe.rs` saw 100–124 kbit/s
/// for 3.4 s on a 300 kbit/s link carrying 180 kbit/s without loss), and pausing video for
/// that dip costs a keyframe wait on resuming. A link that carries less is paused at once,
/// and one that loses packets soon is: the loss cap ([`crate::forward::LossCap`]) lowers
/// the estimate below that. (At 50 %, CI saw the estimate of a 300 kbit/s link fall to
/// 98 kbit/s, 39 % of the lowest layer beside audio: the video paused at once, and the
/// congestion hold then kept it paused.)
pub const PAUSE_GRACE: Duration = Duration::from_secs(5);

/// A video track whose lowest layer does not fit is paused at once (without
/// [`PAUSE_GRACE`]) when the estimate leaves less than this share (percent) of its cost.
pub const PAUSE_AT_ONCE_PCT: u64 = 30;

/// What a video track may forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Layers up to this rank (the highest flowing one at or below it).
    UpTo(u8),
    /// Nothing: not even its lowest layer fits.
    Paused,
}

impl Grant {
    /// No limit (before the first estimate).
    pub const UNLIMITED: Grant = Grant::UpTo(u8::MAX);
}

/// One track of the transport, as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Video (audio is always forwarded, its bitrate set aside first).
    pub video: bool,
    /// What forwarding up to each rank costs, in bits per second (for SVC the sum of the
    /// layers up to it; for a track without layers, `costs[0]` is its bitrate); 0 while
    /// unknown.
    pub costs: [u64; MAX_LAYERS],
    /// The ranks flowing (bit per rank); a track without layers has `1`.
    pub active: u8,
    /// The highest rank the subscriber wants (its preference).
    pub ceiling: u8,
    /// What it was granted last time.
    pub granted: Grant,
    /// Working rank during an allocation.
    rank: Option<u8>,
    /// During an allocation: a layer it had did not fit.
    squeezed: bool,
    /// It has simulcast or SVC layers (false: one stream, which can only be paused).
    layered: bool,
}

impl Demand {
    /// A track: `video` or audio, what each rank costs, the ranks flowing, the preference
    /// and the last grant.
    pub fn new(
        video: bool,
        costs: [u64; MAX_LAYERS],
        active: u8,
        ceiling: u8,
        granted: Grant,
    ) -> Demand {
        Demand {
            video,
            costs,
            active,
            ceiling,
            granted,
            rank: None,
            squeezed: false,
            layered: true,
        }
    }

    /// The track has no layers: one stream, forwarded whole or paused. Before its first
    /// allocation it flows (where a layered track starts at the lowest layer that fits).
    pub fn unlayered(mut self) -> Demand {
        self.layered = false;
        self
    }

    /// The rank actually forwarded under a grant of `upto`: the highest flowing one at or
    /// below it.
    fn rank_under(&self, upto: u8) -> Option<u8> {
        (0..MAX_LAYERS as u8)
            .rev()
            .find(|&r| r <= upto && self.active & (1 << r) != 0)
    }

    /// The next flowing rank above `rank`, within the preference.
    fn next_above(&self, rank: u8) -> Option<u8> {
        (rank + 1..MAX_LAYERS as u8).find(|&r| r <= self.ceiling && self.active & (1 << r) != 0)
    }

    fn cost(&self, rank: u8) -> u64 {
        self.costs[usize::from(rank).min(MAX_LAYERS - 1)]
    }

    /// The rank it had last time, if it had one.
    fn previous_rank(&self) -> Option<u8> {
        match self.granted {
            // Before the first allocation a track without layers flows whole.
            Grant::UNLIMITED if !self.layered => self.rank_under(0),
            // A layered one has nothing granted yet.
            Grant::UNLIMITED | Grant::Paused => None,
            Grant::UpTo(r) => self.rank_under(r.min(self.ceiling)),
        }
    }
}

/// The outcome of one allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Bits per second of what was granted.
    pub used: u64,
    /// Bits per second of everything the subscriber wants.
    pub desired: u64,
    /// Bits per second the transport should keep sending (padding the rest) so that the
    /// estimator learns whether the next upgrade fits; 0 (no padding) when none waits for
    /// room, or within [`CONGESTION_HOLD`].
    pub minimum: u64,
    /// Bits per second the estimator should probe toward: `desired`, or 0 (no probing at
    /// all) within [`CONGESTION_HOLD`]: probing a link that just congested only congests it
    /// again (str0m's periodic probes at twice the target cost a 60 kbit/s link half its
    /// audio for a moment).
    pub probe: u64,
    /// A grant went down because the estimate did not carry it.
    pub congested: bool,
}

/// The allocator of one subscribe transport.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    last_congestion: Option<Instant>,
    /// The highest estimate seen.
    peak: u64,
    /// The estimate has fallen (below [`PROVEN_FALL_PCT`] of its peak) at least once.
    proven: bool,
    /// Since when a lowest layer has not fit (kept within [`PAUSE_GRACE`]).
    short_since: Option<Instant>,
}

impl Allocator {
    /// A new allocator.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// When the estimate last forced a layer down.
    pub fn last_congestion(&self) -> Option<Instant> {
        self.last_congestion
    }

    /// Whether the estimate has fallen at least once: until then what flows is kept.
    pub fn proven(&self) -> bool {
        self.proven
    }

    /// Share `estimate` (bits per second) among `tracks`, writing each video track's new
    /// grant into its `granted`.
    pub fn allocate(&mut self, now: Instant, estimate: u64, tracks: &mut [Demand]) -> Allocation {
        self.peak = self.peak.max(estimate);
        self.proven |= estimate * 100 < self.peak * PROVEN_FALL_PCT;
        let proven = self.proven;
        let mut held = self
            .last_congestion
            .is_some_and(|t| now.saturating_duration_since(t) < CONGESTION_HOLD);
        let with_headroom = |cost: u64| cost + cost * UPGRADE_HEADROOM_PCT / 100;
        let mut out = Allocation::default();
        // Audio first.
        let mut budget = estimate;
        for t in tracks.iter().filter(|t| !t.video) {
            budget = budget.saturating_sub(t.costs[0]);
            out.used += t.costs[0];
            out.desired += t.costs[0];
        }
        // Where each video track ends up (`rank`, None: paused), from its lowest layer.
        let mut waiting = None::<u64>; // the first upgrade that waits for room: its cost
        let mut short_since = self.short_since;
        let mut any_short = false;
        for t in tracks.iter_mut().filter(|t| t.video) {
            t.rank = None;
            t.squeezed = false;
            out.desired += t.rank_under(t.ceiling).map_or(0, |r| t.cost(r));
            let Some(low) = t.lowest() else {
                continue; // nothing flows: nothing to grant or pay for
            };
            let cost = t.cost(low);
            let had = t.previous_rank().is_some();
            let fits = if had {
                !proven || cost * LOWEST_LAYER_KEEP_PCT / 100 <= budget
            } else {
                with_headroom(cost) <= budget
            };
            t.squeezed = had && !fits;
            // Short, but not by much and not for long: kept (it is still congestion).
            let graced = t.squeezed && cost * PAUSE_AT_ONCE_PCT / 100 <= budget && {
                let since = *short_since.get_or_insert(now);
                now.saturating_duration_since(since) < PAUSE_GRACE
            };
            any_short |= t.squeezed;
            if fits || graced {
                // (An unmeasured lowest layer costs 0 here: forwarded until measured.)
                budget = budget.saturating_sub(cost);
                t.rank = Some(low);
            } else if waiting.is_none() && !held {
                waiting = Some(cost);
            }
        }
        self.short_since = if any_short { short_since } else { None };
        // A lowest layer that no longer fits is congestion: nothing moves up on what it
        // leaves.
        held |= tracks.iter().any(|t| t.squeezed);
        // Then one layer at a time, in turns.
        loop {
            let mut moved = false;
            for t in tracks.iter_mut().filter(|t| t.video) {
                let Some(rank) = t.rank else {
                    continue;
                };
                let Some(next) = t.next_above(rank) else {
                    continue;
                };
                let (now_cost, next_cost) = (t.cost(rank), t.cost(next));
                if next_cost == 0 {
                    continue; // not measured yet
                }
                let extra = next_cost.saturating_sub(now_cost);
                let kept = t.previous_rank().is_some_and(|p| p >= next);
                let fits = if kept {
                    !proven || extra * KEPT_LAYER_PCT / 100 <= budget
                } else {
                    !held && with_headroom(extra) <= budget
                };
                if fits {
                    budget = budget.saturating_sub(extra);
                    t.rank = Some(next);
                    moved = true;
                } else if kept {
                    t.squeezed = true;
                } else if waiting.is_none() && !held && !kept {
                    waiting = Some(extra);
                }
            }
            if !moved {
                break;
            }
        }
        // The grants.
        for t in tracks.iter_mut().filter(|t| t.video) {
            let rank = t.rank;
            let grant = match rank {
                Some(r) => {
                    out.used += t.cost(r);
                    // Up to the preference when nothing above is held back, so that a layer
                    // the publisher adds later is not capped by an old grant.
                    if t.next_above(r).is_none() {
                        Grant::UpTo(t.ceiling.min(MAX_LAYERS as u8 - 1))
                    } else {
                        Grant::UpTo(r)
                    }
                }
                // Nothing flows: nothing to decide.
                None if t.active == 0 => t.granted,
                None => Grant::Paused,
            };
            out.congested |= t.squeezed;
            t.granted = grant;
        }
        if out.congested {
            self.last_congestion = Some(now);
        }
        let held = held || out.congested;
        out.minimum = match waiting {
            Some(extra) if !held => out.used + extra,
            _ => 0,
        };
        out.probe = if held {
            0
        } else {
            out.desired.max(out.minimum)
        };
        out
    }
}

impl Demand {
    /// The lowest flowing rank.
    fn lowest(&self) -> Option<u8> {
        (0..MAX_LAYERS as u8).find(|&r| self.active & (1 << r) != 0)
    }
}

/// Bytes each packet counts in [`LayerRates`] beyond its payload: what it takes on the
/// link besides, as the estimate counts it (the vendored str0m's patch 15: TWCC and the
/// pacer count whole datagrams): an RTP header with its extensions (≈ 26 bytes), the SRTP
/// tag (10) and the UDP/IPv4 headers (28). Small packets cost far more than their
/// payload: 20-byte audio frames at 50 packets/s are 8 kbit/s of payload and 34 kbit/s on
/// the link.
pub const PACKET_OVERHEAD_BYTES: u64 = 64;

/// The window over which [`LayerRates`] measures.
pub const RATE_WINDOW: Duration = Duration::from_millis(1000);

/// The bitrate of each spatial layer (or simulcast rank) of one track as it arrives: what
/// forwarding it would cost a subscriber. Counted once per packet per shard.
#[derive(Debug, Clone, Default)]
pub struct LayerRates {
    bytes: [u64; MAX_LAYERS],
    bps: [u64; MAX_LAYERS],
    since: Option<Instant>,
}

impl LayerRates {
    /// A packet of `len` payload bytes of layer `layer`.
    #[inline]
    pub fn add(&mut self, layer: u8, len: usize) {
        let i = usize::from(layer).min(MAX_LAYERS - 1);
        self.bytes[i] += len as u64 + PACKET_OVERHEAD_BYTES;
    }

    /// Close the window if [`RATE_WINDOW`] has passed.
    pub fn roll(&mut self, now: Instant) {
        let Some(since) = self.since else {
            self.since = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < RATE_WINDOW {
            return;
        }
        let us = elapsed.as_micros().max(1) as u64;
        for (bps, bytes) in self.bps.iter_mut().zip(self.bytes.iter_mut()) {
            *bps = *bytes * 8 * 1_000_000 / us;
            *bytes = 0;
        }
        self.since = Some(now);
    }

    /// Bits per second of each layer over the last window.
    pub fn bps(&self) -> [u64; MAX_LAYERS] {
        self.bps
    }

    /// What forwarding up to each rank costs: a simulcast encoding alone, an SVC layer
    /// with every layer below it.
    pub fn costs(&self, svc: bool) -> [u64; MAX_LAYERS] {
        let mut c = self.bps;
        if svc {
            for i in 1..MAX_LAYERS {
                c[i] += c[i - 1];
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KBPS: u64 = 1000;

    fn simulcast(ceiling: u8) -> Demand {
        Demand::new(
            true,
            [150 * KBPS, 500 * KBPS, 1500 * KBPS, 0],
            0b111,
            ceiling,
            Grant::UNLIMITED,
        )
    }

    fn audio() -> Demand {
        Demand::new(false, [40 * KBPS, 0, 0, 0], 1, 0, Grant::UNLIMITED)
    }

    fn rank(t: &Demand) -> Option<u8> {
        t.previous_rank()
    }

    #[test]
    fn audio_first_then_lowest_layers_then_upgrades_in_turns() {
        let now = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [audio(), simulcast(2), simulcast(2)];
        // 40 audio + 2 × 150 + one upgrade to 500 (+350 × 1.15) fits in 800, not two.
        let out = a.allocate(now, 800 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(1));
        assert_eq!(rank(&tracks[2]), Some(0));
        assert_eq!(out.used, 40 * KBPS + 500 * KBPS + 150 * KBPS);
        assert_eq!(out.desired, 40 * KBPS + 2 * 1500 * KBPS);
        assert_eq!(
            out.minimum,
            out.used + 350 * KBPS,
            "probe for the next upgrade"
        );
        // Plenty: both at the top, granted up to their preference.
        let out = a.allocate(now, 5000 * KBPS, &mut tracks);
        assert_eq!(tracks[1].granted, Grant::UpTo(2));
        assert_eq!(tracks[2].granted, Grant::UpTo(2));
        assert_eq!(out.minimum, 0, "nothing waits: no padding");
    }

    #[test]
    fn a_kept_layer_rides_out_a_dip_but_not_congestion() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [simulcast(2)];
        a.allocate(t0, 5000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(2));
        // The top adds 1000 over the middle: an estimate leaving 900 for it keeps it
        // (above 85 %), without counting as congestion.
        let out = a.allocate(t0, 1400 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(2));
        assert!(!out.congested);
        // Leaving 800 for it (below 85 %) does not.
        let out = a.allocate(t0, 1300 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(1));
        assert!(out.congested);
        // Adding it back needs its whole cost and headroom (and waits out the hold).
        let later = t0 + CONGESTION_HOLD + Duration::from_secs(1);
        a.allocate(later, 1600 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(1));
        a.allocate(later, 1800 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(2));
    }

    #[test]
    fn a_guess_takes_nothing_away_a_fall_does() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        // One stream of 1.5 Mbit/s, the estimate at its initial 300 kbit/s and growing.
        let one = Demand::new(true, [1500 * KBPS, 0, 0, 0], 1, u8::MAX, Grant::UNLIMITED);
        let mut tracks = [audio(), one.unlayered(), simulcast(2)];
        for (i, e) in [300, 400, 2000].into_iter().enumerate() {
            let out = a.allocate(t0 + Duration::from_secs(i as u64), e * KBPS, &mut tracks);
            assert_eq!(rank(&tracks[1]), Some(0), "the stream flows at {e} kbit/s");
            assert!(!out.congested && !a.proven());
        }
        // The simulcast track starts at its lowest layer once that fits beside the stream.
        assert_eq!(rank(&tracks[2]), Some(0));
        // The estimate falls: now it is a measure, and the stream does not fit.
        let out = a.allocate(t0 + Duration::from_secs(4), 400 * KBPS, &mut tracks);
        assert!(a.proven() && out.congested);
        assert_eq!(tracks[1].granted, Grant::Paused);
        assert_eq!(rank(&tracks[2]), Some(0));
    }

    #[test]
    fn preference_caps_what_is_granted() {
        let mut a = Allocator::new();
        let mut tracks = [simulcast(1)];
        let out = a.allocate(Instant::now(), 10_000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(1));
        assert_eq!(out.desired, 500 * KBPS);
    }

    #[test]
    fn congestion_downgrades_at_once_and_holds_upgrades_for_ten_seconds() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [audio(), simulcast(2)];
        a.allocate(t0, 5000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(2));
        // 300 kbit/s: the lowest layer only.
        let out = a.allocate(t0, 300 * KBPS, &mut tracks);
        assert!(out.congested);
        assert_eq!(rank(&tracks[1]), Some(0));
        // Room again, but within the hold: no upgrade, and no probing for one.
        let out = a.allocate(t0 + Duration::from_secs(9), 5000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(0));
        assert_eq!(out.minimum, 0);
        assert_eq!(out.probe, 0, "no probing within the hold");
        let _ = a.allocate(t0 + Duration::from_secs(11), 5000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(2));
    }

    #[test]
    fn video_pauses_when_its_lowest_layer_does_not_fit_and_audio_stays() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [audio(), simulcast(2)];
        a.allocate(t0, 1000 * KBPS, &mut tracks);
        // A dip to 70 % of the lowest layer's cost keeps it.
        a.allocate(t0, 40 * KBPS + 105 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(0));
        let out = a.allocate(t0, 60 * KBPS, &mut tracks);
        assert_eq!(tracks[1].granted, Grant::Paused);
        assert_eq!(out.used, 40 * KBPS, "audio only");
        assert_eq!(out.minimum, 0, "no probing within the hold");
        assert_eq!(out.probe, 0);
        let out = a.allocate(t0 + CONGESTION_HOLD, 60 * KBPS, &mut tracks);
        assert_eq!(
            out.minimum,
            190 * KBPS,
            "then it probes for the lowest layer"
        );
        assert_eq!(out.probe, out.desired);
        // Recovered: resumes at once (with headroom), but adds no layer within the hold.
        a.allocate(t0 + Duration::from_secs(1), 1000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(0));
    }

    #[test]
    fn keeping_a_layer_needs_no_headroom_adding_one_does() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [simulcast(2)];
        // 500 fits, but the upgrade from 150 needs 350 × 1.15 more: 150 + 402 > 520.
        a.allocate(t0, 520 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(0));
        a.allocate(t0, 560 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(1));
        // Kept at exactly its cost.
        a.allocate(t0, 500 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(1));
    }

    #[test]
    fn only_flowing_and_measured_layers_are_chosen() {
        let mut a = Allocator::new();
        let mut t = simulcast(2);
        t.active = 0b101; // the middle encoding paused by its publisher
        t.costs[2] = 0; // the top one not measured yet
        let mut tracks = [t];
        a.allocate(Instant::now(), 10_000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(0));
        tracks[0].costs[2] = 1500 * KBPS;
        a.allocate(Instant::now(), 10_000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[0]), Some(2));
    }

    #[test]
    fn layer_rates_measure_each_layer_and_add_up_svc_layers() {
        let t0 = Instant::now();
        let mut r = LayerRates::default();
        r.roll(t0);
        for _ in 0..100 {
            r.add(0, 1000 - PACKET_OVERHEAD_BYTES as usize);
            r.add(1, 2000 - PACKET_OVERHEAD_BYTES as usize);
        }
        r.roll(t0 + Duration::from_millis(500));
        assert_eq!(r.bps(), [0; MAX_LAYERS], "the window is not over");
        r.roll(t0 + Duration::from_secs(1));
        assert_eq!(r.costs(false), [800_000, 1_600_000, 0, 0]);
        assert_eq!(r.costs(true), [800_000, 2_400_000, 2_400_000, 2_400_000]);
        r.roll(t0 + Duration::from_secs(2));
        assert_eq!(r.bps(), [0; MAX_LAYERS], "nothing in the next window");
    }

    #[test]
    fn a_track_without_layers_is_forwarded_or_paused_whole() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [Demand::new(
            true,
            [800 * KBPS, 0, 0, 0],
            1,
            u8::MAX,
            Grant::UNLIMITED,
        )];
        a.allocate(t0, 1000 * KBPS, &mut tracks);
        assert_eq!(tracks[0].granted, Grant::UpTo(MAX_LAYERS as u8 - 1));
        // Kept without headroom, at its cost.
        a.allocate(t0, 800 * KBPS, &mut tracks);
        assert_eq!(tracks[0].granted, Grant::UpTo(MAX_LAYERS as u8 - 1));
        // Short, but by less than 70 %: kept for the grace, then paused.
        a.allocate(t0, 500 * KBPS, &mut tracks);
        assert_eq!(tracks[0].granted, Grant::UpTo(MAX_LAYERS as u8 - 1));
        a.allocate(t0 + PAUSE_GRACE / 2, 500 * KBPS, &mut tracks);
        assert_eq!(tracks[0].granted, Grant::UpTo(MAX_LAYERS as u8 - 1));
        a.allocate(t0 + PAUSE_GRACE, 500 * KBPS, &mut tracks);
        assert_eq!(tracks[0].granted, Grant::Paused);
    }

    #[test]
    fn a_short_dip_below_the_lowest_layer_is_ridden_out_a_deep_one_pauses_at_once() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        let mut tracks = [audio(), simulcast(2)];
        a.allocate(t0, 1000 * KBPS, &mut tracks);
        // 60 % of the lowest layer left: kept, and it is congestion (no probing).
        let dip = 40 * KBPS + 90 * KBPS;
        let out = a.allocate(t0, dip, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(0));
        assert!(out.congested);
        assert_eq!(out.probe, 0);
        // The estimate recovers within the grace: the grace starts over next time.
        a.allocate(t0 + Duration::from_secs(2), 1000 * KBPS, &mut tracks);
        assert_eq!(rank(&tracks[1]), Some(0));
        let t1 = t0 + Duration::from_secs(3);
        a.allocate(t1, dip, &mut tracks);
        a.allocate(
            t1 + PAUSE_GRACE - Duration::from_millis(1),
            dip,
            &mut tracks,
        );
        assert_eq!(rank(&tracks[1]), Some(0));
        a.allocate(t1 + PAUSE_GRACE, dip, &mut tracks);
        assert_eq!(tracks[1].granted, Grant::Paused);
        // Less than 30 % of it left: paused at once.
        let mut b = Allocator::new();
        let mut tracks = [audio(), simulcast(2)];
        b.allocate(t0, 1000 * KBPS, &mut tracks);
        b.allocate(t0, 40 * KBPS + 40 * KBPS, &mut tracks);
        assert_eq!(tracks[1].granted, Grant::Paused);
    }
}
