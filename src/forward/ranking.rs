//! The layers of a simulcast track as its publisher sends them: which encoding is the
//! lowest, which the highest, and which are flowing (issue 12).
//!
//! A publisher names its encodings by rid, in an order of its choosing (Chromium lists
//! them low to high, Firefox high to low, and a rid says nothing about resolution). The
//! rank of an encoding (0 = lowest) therefore comes from what is observed: the picture
//! size a keyframe announces when every flowing encoding has shown one, else the bitrate
//! over the last second. Ranks change only when the order is clearly wrong (a bitrate
//! must exceed the one ranked above it by [`BITRATE_MARGIN_PCT`]), so two encodings of
//! similar rates do not swap back and forth. An encoding that sent nothing for
//! [`LAYER_IDLE`] is inactive (paused or stopped by the publisher, or not sent for lack
//! of bandwidth); it is active again with its next packet.
//!
//! Pure: the caller supplies the observations and the time; no allocation.

use std::time::{Duration, Instant};

/// Most encodings a track may have (RFC 8853 allows more; browsers send up to 3, and the
/// active-layer mask that travels with each packet is a `u8`).
pub const MAX_LAYERS: usize = 4;

/// An encoding without packets for this long is inactive.
pub const LAYER_IDLE: Duration = Duration::from_millis(1000);

/// How much higher (in percent) an encoding's bitrate must be than the next-ranked one's
/// for the two to swap ranks when their sizes are unknown.
pub const BITRATE_MARGIN_PCT: u64 = 25;

/// What is known of one encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Width × height from its latest keyframe (0 while unknown).
    pub pixels: u32,
    /// Bits per second over the last complete window (0 while unknown).
    pub bitrate: u64,
    /// When its latest packet arrived.
    pub last_packet: Option<Instant>,
}

impl Observed {
    /// It sent something within [`LAYER_IDLE`] of `now`.
    pub fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }
}

/// The ranks of up to [`MAX_LAYERS`] encodings, kept across updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranking {
    /// Encoding indices, lowest rank first.
    order: [u8; MAX_LAYERS],
    len: u8,
}

impl Ranking {
    /// `n` encodings (at most [`MAX_LAYERS`]), ranked in index order until observations
    /// say otherwise.
    pub fn new(n: usize) -> Ranking {
        let n = n.min(MAX_LAYERS);
        let mut order = [0u8; MAX_LAYERS];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i as u8;
        }
        Ranking {
            order,
            len: n as u8,
        }
    }

    /// How many encodings are ranked.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// No encodings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rank of encoding `index` (0 = lowest).
    pub fn rank_of(&self, index: usize) -> Option<u8> {
        self.order[..self.len()]
            .iter()
            .position(|&i| usize::from(i) == index)
            .map(|r| r as u8)
    }

    /// The encoding of rank `rank`.
    pub fn index_of(&self, rank: u8) -> Option<usize> {
        self.order[..self.len()]
            .get(usize::from(rank))
            .map(|&i| usize::from(i))
    }

    /// Re-rank from `obs` (indexed like the encodings). Encodings never seen rank above
    /// every seen one (the one a publisher holds back for bandwidth is its highest).
    /// Returns whether any rank changed.
    pub fn update(&mut self, obs: &[Observed]) -> bool {
        let n = self.len();
        let seen = |i: u8| {
            obs.get(usize::from(i))
                .is_some_and(|o| o.last_packet.is_some())
        };
        let by_size = (0..n as u8)
            .filter(|&i| seen(i))
            .all(|i| obs[usize::from(i)].pixels > 0);
        let before = self.order;
        // Bubble adjacent pairs that are clearly out of order until none is: few
        // encodings, and almost always already sorted.
        for _ in 0..n {
            let mut swapped = false;
            for r in 0..n.saturating_sub(1) {
                let (lo, hi) = (self.order[r], self.order[r + 1]);
                let out_of_order = match (seen(lo), seen(hi)) {
                    (true, false) | (false, false) => false,
                    (false, true) => true,
                    (true, true) => {
                        let (a, b) = (&obs[usize::from(lo)], &obs[usize::from(hi)]);
                        if by_size {
                            a.pixels > b.pixels
                        } else {
                            b.bitrate > 0
                                && a.bitrate * 100 > b.bitrate * (100 + BITRATE_MARGIN_PCT)
                        }
                    }
                };
                if out_of_order {
                    self.order.swap(r, r + 1);
                    swapped = true;
                }
            }
            if !swapped {
                break;
            }
        }
        self.order != before
    }

    /// Bit `r` set: the encoding of rank `r` is active at `now`.
    pub fn active_mask(&self, obs: &[Observed], now: Instant) -> u8 {
        let mut mask = 0u8;
        for (r, &i) in self.order[..self.len()].iter().enumerate() {
            if obs.get(usize::from(i)).is_some_and(|o| o.active(now)) {
                mask |= 1 << r;
            }
        }
        mask
    }
}

/// The spatial layer to forward for a ceiling of `preferred` when the layers in `mask`
/// (bit per rank) are flowing: the highest at or below the ceiling, else the lowest one
/// flowing; `None` when none is.
pub fn spatial_for(preferred: u8, mask: u8) -> Option<u8> {
    if mask == 0 {
        return None;
    }
    let top = preferred.min(7);
    let at_or_below = mask & (((1u16 << (top + 1)) - 1) as u8);
    if at_or_below != 0 {
        Some(7 - at_or_below.leading_zeros() as u8)
    } else {
        Some(mask.trailing_zeros() as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(pixels: u32, bitrate: u64, at: Option<Instant>) -> Observed {
        Observed {
            pixels,
            bitrate,
            last_packet: at,
        }
    }

    #[test]
    fn ranks_by_size_whatever_the_order_of_the_rids() {
        let now = Instant::now();
        let mut r = Ranking::new(3);
        // Listed high, low, mid (as a publisher may).
        let o = [
            obs(1280 * 720, 2_000_000, Some(now)),
            obs(320 * 180, 150_000, Some(now)),
            obs(640 * 360, 500_000, Some(now)),
        ];
        assert!(r.update(&o));
        assert_eq!(r.rank_of(1), Some(0));
        assert_eq!(r.rank_of(2), Some(1));
        assert_eq!(r.rank_of(0), Some(2));
        assert_eq!(r.index_of(2), Some(0));
        assert!(!r.update(&o), "stable once sorted");
        assert_eq!(r.active_mask(&o, now), 0b111);
    }

    #[test]
    fn ranks_by_bitrate_with_a_margin_when_sizes_are_unknown() {
        let now = Instant::now();
        let mut r = Ranking::new(2);
        let mut o = [obs(0, 900_000, Some(now)), obs(0, 300_000, Some(now))];
        assert!(r.update(&o));
        assert_eq!(r.rank_of(1), Some(0));
        // The low one bursts (a keyframe) to just above the high one: no swap.
        o[1].bitrate = 1_000_000;
        assert!(!r.update(&o));
        // Clearly higher: swap.
        o[1].bitrate = 1_200_000;
        assert!(r.update(&o));
        assert_eq!(r.rank_of(1), Some(1));
    }

    #[test]
    fn unseen_encodings_rank_highest_and_idle_ones_are_inactive() {
        let t0 = Instant::now();
        let mut r = Ranking::new(3);
        let o = [
            obs(0, 0, None),
            obs(0, 500_000, Some(t0)),
            obs(0, 100_000, Some(t0)),
        ];
        r.update(&o);
        assert_eq!(r.index_of(0), Some(2));
        assert_eq!(r.index_of(1), Some(1));
        assert_eq!(r.index_of(2), Some(0));
        assert_eq!(r.active_mask(&o, t0), 0b011);
        let later = t0 + LAYER_IDLE;
        assert_eq!(r.active_mask(&o, later), 0);
        assert_eq!(Ranking::new(9).len(), MAX_LAYERS);
    }

    #[test]
    fn spatial_for_picks_the_best_flowing_layer_under_the_ceiling() {
        assert_eq!(spatial_for(2, 0b111), Some(2));
        assert_eq!(spatial_for(2, 0b011), Some(1));
        assert_eq!(spatial_for(1, 0b111), Some(1));
        assert_eq!(
            spatial_for(0, 0b110),
            Some(1),
            "nothing under the ceiling: lowest"
        );
        assert_eq!(spatial_for(255, 0b1000_0001), Some(7));
        assert_eq!(spatial_for(1, 0), None);
    }
}
