//! The retransmission store of one published stream: its recent packets, kept once and
//! shared by all the subscribers a shard forwards it to.
//!
//! A subscriber that lost a packet sends a NACK with the sequence number it saw; the packet
//! path maps that number back to the publisher's (the subscriber's
//! [`Rewriter::origin_of`](super::Rewriter::origin_of)) and looks it up here. A cache per
//! subscriber (str0m's own) would keep the same packets once per subscriber and cost a copy
//! of each packet's metadata per subscriber per packet; this costs one insertion per
//! published packet.
//!
//! Entries leave once older than the store's window or when its capacity of newer ones came
//! ([`RtxStore::new`]).
//! The store grows to its working size (what the window holds at the stream's rate) and
//! then inserting no longer allocates. Pure: no clock (the caller gives arrival times), no
//! panics.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a forwarded video packet can be resent after a subscriber's NACK. One store per
/// track per shard serves all its subscribers there, so the window costs no memory per
/// subscriber: a second repairs losses on paths with round trips up to ≈ 900 ms.
pub const RTX_STORE_WINDOW: Duration = Duration::from_secs(1);
/// Most packets a track's store keeps (a stream above ≈ 1000 packets/s gets a shorter
/// window). The store grows to its working size and then stops allocating.
pub const RTX_STORE_CAPACITY: usize = 1024;

/// Share of a subscriber's forwarded bytes that retransmissions may add, in percent.
pub const RTX_RATIO_PERCENT: u64 = 15;
/// Most payload bytes of retransmissions a subscriber may get at once when it has not had
/// any for a while (64 full-size packets), unless [`RtxBudget::set_burst`] sets less.
pub const RTX_BURST_BYTES: u64 = 64 * 1200;
/// The smallest burst [`RtxBudget::set_burst`] accepts: one full-size packet.
pub const RTX_MIN_BURST_BYTES: u64 = 1200;

/// How many bytes of retransmissions one subscriber's down-track may still get: each
/// forwarded packet earns [`RTX_RATIO_PERCENT`] % of its payload size, up to a burst
/// ([`RTX_BURST_BYTES`]; with bandwidth estimation, about 100 ms of what the subscriber is
/// granted). A subscriber that NACKs everything gets at most 15 % more bytes, not a second
/// copy of the stream, and repairs after a loss burst never flood a link that is already
/// full.
#[derive(Debug, Clone, Copy)]
pub struct RtxBudget {
    /// In hundredths of a byte.
    credit: u64,
    /// The most `credit` holds, in hundredths of a byte.
    cap: u64,
}

impl Default for RtxBudget {
    fn default() -> Self {
        RtxBudget {
            credit: 0,
            cap: RTX_BURST_BYTES * 100,
        }
    }
}

impl RtxBudget {
    /// A packet of `len` payload bytes was forwarded to the subscriber.
    #[inline]
    pub fn on_forwarded(&mut self, len: usize) {
        self.credit = (self.credit + len as u64 * RTX_RATIO_PERCENT).min(self.cap);
    }

    /// Limit the burst to `bytes` (at least [`RTX_MIN_BURST_BYTES`], at most
    /// [`RTX_BURST_BYTES`]); credit above it is forfeited.
    pub fn set_burst(&mut self, bytes: u64) {
        self.cap = bytes.clamp(RTX_MIN_BURST_BYTES, RTX_BURST_BYTES) * 100;
        self.credit = self.credit.min(self.cap);
    }

    /// Whether any retransmission may be left (a small one).
    pub fn has_credit(&self) -> bool {
        self.credit > 0
    }

    /// Take a retransmission of `len` payload bytes from the budget; false if there is not
    /// enough left.
    pub fn try_spend(&mut self, len: usize) -> bool {
        let cost = len as u64 * 100;
        if self.credit < cost {
            return false;
        }
        self.credit -= cost;
        true
    }
}

/// How many entries around its expected position [`RtxStore::get`] looks at.
pub const LOOKUP_SPAN: usize = 64;

/// Recent packets of one published stream, by `(source, sequence number)`.
#[derive(Debug)]
pub struct RtxStore<T> {
    entries: VecDeque<Entry<T>>,
    capacity: usize,
    window: Duration,
}

#[derive(Debug)]
struct Entry<T> {
    source: u64,
    seq: u64,
    at: Instant,
    value: T,
}

impl<T> RtxStore<T> {
    /// A store that answers for packets up to `window` old, at most `capacity` of them
    /// (the oldest go first). Allocates nothing until the first insertion.
    pub fn new(capacity: usize, window: Duration) -> Self {
        RtxStore {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            window,
        }
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keep packet `seq` of `source`, arrived at `at` (arrival order), dropping what is
    /// older than the window or beyond the capacity.
    pub fn insert(&mut self, source: u64, seq: u64, at: Instant, value: T) {
        self.expire(at);
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            source,
            seq,
            at,
            value,
        });
    }

    /// Packet `seq` of `source` if it is kept and not older than the window at `now`.
    ///
    /// Costs at most [`LOOKUP_SPAN`] comparisons however the store is filled, so a NACK
    /// flood cannot make lookups expensive: packets are kept in arrival order, which is
    /// sequence order but for reordering and source switches, so `seq` is at (or near) the
    /// position it would have if they all arrived in order; a packet further from it is
    /// not found.
    pub fn get(&self, source: u64, seq: u64, now: Instant) -> Option<&T> {
        let newest = self.entries.back()?;
        let last = self.entries.len() - 1;
        let guess = match newest.seq.checked_sub(seq) {
            Some(back) => last.checked_sub(usize::try_from(back).ok()?)?,
            // Newer than the newest arrival: only a reordered packet can be it.
            None if seq - newest.seq <= LOOKUP_SPAN as u64 => last,
            None => return None,
        };
        let lo = guess.saturating_sub(LOOKUP_SPAN / 2);
        let hi = (guess + LOOKUP_SPAN / 2).min(last);
        let found = std::iter::once(guess)
            .chain((lo..=hi).rev())
            .filter_map(|i| self.entries.get(i))
            .find(|e| e.source == source && e.seq == seq)?;
        (now.saturating_duration_since(found.at) <= self.window).then_some(&found.value)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) <= self.window {
                break;
            }
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn answers_within_the_window_only() {
        let t0 = Instant::now();
        let mut s = RtxStore::new(16, 100 * MS);
        for i in 0..10u64 {
            s.insert(1, 100 + i, t0 + i as u32 * 10 * MS, i);
        }
        assert_eq!(s.get(1, 105, t0 + 60 * MS), Some(&5));
        assert_eq!(s.get(2, 105, t0 + 60 * MS), None, "other source");
        assert_eq!(s.get(1, 99, t0 + 60 * MS), None, "never stored");
        assert_eq!(s.get(1, 100, t0 + 101 * MS), None, "too old at lookup");
        // Inserting at 185 ms expires everything older than 100 ms then.
        s.insert(1, 110, t0 + 185 * MS, 10);
        assert_eq!(s.len(), 2, "only 109 (95 ms old) and 110 are left");
        assert_eq!(s.get(1, 109, t0 + 185 * MS), Some(&9));
    }

    #[test]
    fn capacity_bounds_it_and_it_stops_growing() {
        let t0 = Instant::now();
        let mut s = RtxStore::new(8, Duration::from_secs(10));
        for i in 0..8u64 {
            s.insert(1, i, t0, i);
        }
        let cap = s.entries.capacity();
        for i in 8..100u64 {
            s.insert(1, i, t0, i);
        }
        assert_eq!(s.len(), 8);
        assert_eq!(s.entries.capacity(), cap, "no reallocation once full");
        assert_eq!(s.get(1, 91, t0), None);
        assert_eq!(s.get(1, 92, t0), Some(&92));
        assert_eq!(s.get(1, 99, t0), Some(&99));
    }

    #[test]
    fn budget_allows_fifteen_percent_and_a_bounded_burst() {
        let mut b = RtxBudget::default();
        assert!(!b.try_spend(1), "nothing forwarded, nothing to resend");
        for _ in 0..100 {
            b.on_forwarded(1000);
        }
        let spent = (0..100).take_while(|_| b.try_spend(1000)).count();
        assert_eq!(spent, 15);
        for _ in 0..100_000 {
            b.on_forwarded(1200);
        }
        let spent = (0..1000).take_while(|_| b.try_spend(1200)).count();
        assert_eq!(spent, 64, "credit saturates");
        // Small packets cost less than big ones.
        for _ in 0..100 {
            b.on_forwarded(1000);
        }
        let spent = (0..1000).take_while(|_| b.try_spend(100)).count();
        assert_eq!(spent, 150);
    }

    #[test]
    fn a_set_burst_caps_the_credit() {
        let mut b = RtxBudget::default();
        for _ in 0..100_000 {
            b.on_forwarded(1200);
        }
        b.set_burst(3000);
        let spent = (0..1000).take_while(|_| b.try_spend(1000)).count();
        assert_eq!(spent, 3, "the credit above the new burst is forfeited");
        b.set_burst(1);
        for _ in 0..100 {
            b.on_forwarded(1200);
        }
        let spent = (0..1000).take_while(|_| b.try_spend(1200)).count();
        assert_eq!(spent, 1, "at least one full-size packet");
    }

    #[test]
    fn lookups_stay_near_the_expected_position() {
        let t0 = Instant::now();
        let mut s = RtxStore::new(1024, Duration::from_secs(10));
        // An old source's packets, then a switch to one numbered far below.
        for i in 0..500u64 {
            s.insert(1, 10_000 + i, t0, i);
        }
        for i in 0..500u64 {
            s.insert(2, 100 + i, t0, 1000 + i);
        }
        assert_eq!(s.get(2, 100, t0), Some(&1000));
        assert_eq!(s.get(2, 599, t0), Some(&1499));
        // Source 1's packets sit 500 places from where their numbers point: not found,
        // and the lookup gave up after a bounded look.
        assert_eq!(s.get(1, 10_499, t0), None);
        assert_eq!(s.get(2, 5_000_000, t0), None, "far in the future");
        assert_eq!(s.get(2, 0, t0), None, "before the store");
    }

    #[test]
    fn finds_reordered_and_switched_sources() {
        let t0 = Instant::now();
        let mut s = RtxStore::new(16, Duration::from_secs(1));
        for (src, seq) in [(1, 10), (1, 12), (1, 11)] {
            s.insert(src, seq, t0, (src, seq));
        }
        for (src, seq) in [(1, 10), (1, 11), (1, 12)] {
            assert_eq!(s.get(src, seq, t0), Some(&(src, seq)), "reordered");
        }
        assert_eq!(s.get(1, 13, t0), None);
        // After a switch the new source is found; the old one's numbers no longer point
        // at their packets (its NACKs are not answered anyway: the rewriter maps only the
        // current run).
        for (src, seq) in [(2, 500), (2, 501)] {
            s.insert(src, seq, t0, (src, seq));
        }
        assert_eq!(s.get(2, 500, t0), Some(&(2, 500)));
        assert_eq!(s.get(2, 501, t0), Some(&(2, 501)));
        assert_eq!(s.get(2, 502, t0), None, "newer than anything stored");
    }
}
