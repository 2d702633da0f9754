//! Per-subscriber RTP sequence number / timestamp rewriting ("down-track rewrite state").
//!
//! This module owns the mapping from what a publisher sends (extended 64-bit sequence
//! numbers and 32-bit RTP timestamps, as unwrapped by str0m) to what one subscriber
//! receives. The subscriber must see a single continuous stream even when the source
//! behind its down-track changes (publisher restart with a new SSRC, simulcast layer
//! switch) or the source itself jumps, while losses stay visible as gaps so that NACK
//! keeps working, and late packets (reordering, retransmissions) land on the sequence
//! numbers they would have had.
//!
//! # Model
//!
//! Output is a sequence of *runs*. Within a run the mapping is a pure offset:
//! `out_seq = in_seq + seq_delta` and `out_ts = in_ts + ts_delta` (wrapping), so gaps,
//! reordering and timestamp differences are preserved exactly. A new run (a *rebase*) starts
//! on a source switch, on a discontinuity (forward jump of more than
//! [`MAX_FORWARD_JUMP`] packets, or a confirmed backward reset of more than
//! [`REORDER_WINDOW`] packets), and when a keyframe ends keyframe gating. The first packet
//! of a new run gets `highest_out + 1` and a timestamp advanced from the last output by the
//! wall-clock time elapsed between the two packets' arrivals (at least one tick).
//!
//! Packets older than the current run's start, more than [`REORDER_WINDOW`] behind its
//! highest packet, or late packets of the previous run are dropped as stale, so an output
//! sequence number is never used for two different inputs.
//!
//! Everything here is pure: no I/O, no clock (the caller supplies arrival times), no
//! allocation and no panics.

/// How far (in packets) behind the highest forwarded input sequence number a late packet
/// (reordered or retransmitted) of the current run may be and still be forwarded.
pub const REORDER_WINDOW: u64 = 1000;

/// Largest forward jump (in packets) of the input sequence number on the same source that
/// is treated as loss (and reproduced as a gap on output). Larger jumps rebase.
pub const MAX_FORWARD_JUMP: u64 = 3000;

/// Largest timestamp advance (in RTP clock ticks) applied on a rebase, however long the
/// pause was; keeps the jump below half the 32-bit timestamp space so receivers read it as
/// forward.
pub const MAX_TS_ADVANCE: u32 = 0x7fff_ffff;

/// Largest difference (ms) between a timestamp carried over a switch of aligned sources
/// ([`InPacket::clock_offset`]) and the estimate from arrival times before the estimate
/// wins.
pub const MAX_ALIGNED_ERROR_MS: u64 = 200;

/// Span (in packets) within which a second far-behind packet confirms a backward reset of
/// the same source (the first far-behind packet alone is treated as stale).
pub const RESET_CONFIRM_SPAN: u64 = 64;

/// Mask applied to [`RewriterConfig::initial_seq`] so the first output sequence number is
/// at most `0x7fff` and the SRTP rollover counter stays 0 for a long time.
pub const INITIAL_SEQ_MASK: u16 = 0x7fff;

/// Static configuration of one [`Rewriter`] (one subscriber's down-track).
#[derive(Debug, Clone, Copy)]
pub struct RewriterConfig {
    /// Video track: keyframe gating applies (at creation, on source switches and on
    /// discontinuities). Audio never gates.
    pub video: bool,
    /// RTP clock rate in Hz (90000 for video, usually 48000 for Opus); used to convert
    /// elapsed wall-clock time into a timestamp advance on rebase.
    pub clock_rate: u32,
    /// Random first output sequence number. Masked with [`INITIAL_SEQ_MASK`] so it is at
    /// most `0x7fff`.
    pub initial_seq: u16,
    /// Random first output RTP timestamp.
    pub initial_ts: u32,
}

/// One incoming packet, as seen by the rewriter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPacket {
    /// Identifier of the source the packet comes from (e.g. publisher SSRC generation or
    /// simulcast layer). A different value than the current run's signals a source switch.
    pub source: u64,
    /// Extended (rollover-unwrapped) input sequence number.
    pub seq: u64,
    /// Input RTP timestamp.
    pub ts: u32,
    /// The packet starts a keyframe (ends keyframe gating for video).
    pub keyframe_start: bool,
    /// Arrival time in microseconds on a monotonic clock chosen by the caller.
    pub arrival_us: u64,
    /// What to add to `ts` to put it on a clock every source of the track shares (simulcast
    /// encodings aligned by their sender reports), once known. `ts` itself stays the
    /// source's own, so a run's mapping never moves when the offset is learned or refined;
    /// a switch between two sources with offsets carries the mapping over instead of
    /// estimating the advance from arrival times.
    pub clock_offset: Option<u32>,
}

/// What to do with an [`InPacket`] on this down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward the packet with this extended output sequence number and RTP timestamp.
    Forward {
        /// Extended output sequence number (starts below 65536, i.e. rollover counter 0).
        seq: u64,
        /// Output RTP timestamp.
        ts: u32,
    },
    /// Drop: video gating is active and the packet does not start a keyframe. Nothing was
    /// advanced; the caller should make sure a keyframe has been requested.
    DropWaitingKeyframe,
    /// Drop: the packet is too old, precedes the current run, or is a late packet of a
    /// previous run.
    DropStale,
}

impl Decision {
    /// The output `(seq, ts)` if the decision is [`Decision::Forward`].
    pub fn forwarded(&self) -> Option<(u64, u32)> {
        match *self {
            Decision::Forward { seq, ts } => Some((seq, ts)),
            _ => None,
        }
    }
}

/// Counters of a [`Rewriter`]'s decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Packets for which [`Decision::Forward`] was returned.
    pub forwarded: u64,
    /// Packets for which [`Decision::DropWaitingKeyframe`] was returned.
    pub dropped_waiting_keyframe: u64,
    /// Packets for which [`Decision::DropStale`] was returned.
    pub dropped_stale: u64,
    /// Runs started after the first one (source switches, discontinuities, gate exits).
    pub rebases: u64,
    /// Packets dropped on purpose ([`Rewriter::skip`]) that the output closed up over.
    pub skipped: u64,
}

/// The current run: a constant offset mapping for one contiguous stretch of one source.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Source of the run.
    source: u64,
    /// Input sequence number of the run's first packet; older inputs are stale.
    start_in: u64,
    /// Highest input sequence number forwarded in this run.
    hi_in: u64,
    /// `out_seq = in_seq.wrapping_add(seq_delta)`.
    seq_delta: u64,
    /// `out_ts = in_ts.wrapping_add(ts_delta)`.
    ts_delta: u32,
    /// The latest shared-clock offset of its source ([`InPacket::clock_offset`]).
    clock_offset: Option<u32>,
}

impl Run {
    fn map(&self, p: &InPacket) -> (u64, u32) {
        (
            p.seq.wrapping_add(self.seq_delta),
            p.ts.wrapping_add(self.ts_delta),
        )
    }
}

/// The input behind an output sequence number ([`Rewriter::origin_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The input packet's source.
    pub source: u64,
    /// The input packet's (extended) sequence number.
    pub seq: u64,
    /// Output timestamp minus input timestamp (wrapping) in that run.
    pub ts_delta: u32,
}

impl Origin {
    /// The output timestamp of an input packet of this run with timestamp `in_ts`.
    pub fn out_ts(&self, in_ts: u32) -> u32 {
        in_ts.wrapping_add(self.ts_delta)
    }
}

/// What is remembered of the run before the current one, to drop its late packets.
#[derive(Debug, Clone, Copy)]
struct PrevRun {
    source: u64,
    hi_in: u64,
}

/// Packets dropped on purpose ([`Rewriter::skip`]) keep the output contiguous: each
/// stretch of them shifts the sequence offset of the packets after it by its length. How
/// many such shifts of the current run are remembered, to map late packets and NACKs from
/// before them (older ones are stale).
pub const SKIP_HISTORY: usize = 32;

/// One stretch of packets dropped on purpose: inputs `from..resume` are gone, and the
/// offset before `from` was `delta_before`.
#[derive(Debug, Clone, Copy, Default)]
struct Skip {
    from: u64,
    resume: u64,
    delta_before: u64,
}

/// The current run's skips, oldest first, in a ring of [`SKIP_HISTORY`].
#[derive(Debug, Clone)]
struct Skips {
    ring: [Skip; SKIP_HISTORY],
    /// Index of the oldest entry.
    head: usize,
    len: usize,
    /// Inputs below this cannot be mapped any more (their offset was forgotten).
    floor: u64,
}

impl Skips {
    fn new() -> Skips {
        Skips {
            ring: [Skip::default(); SKIP_HISTORY],
            head: 0,
            len: 0,
            floor: 0,
        }
    }

    fn clear(&mut self, floor: u64) {
        self.head = 0;
        self.len = 0;
        self.floor = floor;
    }

    /// The `i`th entry counted from the newest (0 = newest).
    fn newest(&self, i: usize) -> Option<&Skip> {
        (i < self.len).then(|| &self.ring[(self.head + self.len - 1 - i) % SKIP_HISTORY])
    }

    fn push(&mut self, s: Skip) {
        if self.len == SKIP_HISTORY {
            // Forget the oldest: inputs before its end no longer have a known offset.
            self.floor = self.ring[self.head].resume;
            self.head = (self.head + 1) % SKIP_HISTORY;
            self.len -= 1;
        }
        self.ring[(self.head + self.len) % SKIP_HISTORY] = s;
        self.len += 1;
    }

    /// The offset of input `seq` of a run whose newest offset is `delta`, or `None` if it
    /// was dropped on purpose or is older than what is remembered.
    fn delta_of(&self, seq: u64, delta: u64) -> Option<u64> {
        let mut delta = delta;
        for i in 0..self.len {
            let s = self.newest(i)?;
            if seq >= s.resume {
                return Some(delta);
            }
            if seq >= s.from {
                return None;
            }
            delta = s.delta_before;
        }
        (seq >= self.floor).then_some(delta)
    }

    /// The input behind output `out` of a run whose newest offset is `delta`.
    fn input_of(&self, out: u64, delta: u64) -> Option<u64> {
        let mut delta = delta;
        for i in 0..self.len {
            let s = self.newest(i)?;
            let seq = out.wrapping_sub(delta);
            if seq >= s.resume {
                return Some(seq);
            }
            delta = s.delta_before;
        }
        let seq = out.wrapping_sub(delta);
        (seq >= self.floor).then_some(seq)
    }
}

/// Per-down-track rewrite state: maps input `(seq, ts)` to output `(seq, ts)`.
///
/// Feed every packet of the subscribed source(s) to [`Rewriter::rewrite`] in arrival
/// order. The caller is expected to feed only the currently selected source: packets of a
/// different source than the current run's are taken as a switch (except late packets of
/// the previous run, which are dropped).
#[derive(Debug, Clone)]
pub struct Rewriter {
    cfg: RewriterConfig,
    needs_keyframe: bool,
    run: Option<Run>,
    prev: Option<PrevRun>,
    /// First far-behind packet of the current source, awaiting confirmation of a reset.
    reset_candidate: Option<u64>,
    highest_out: Option<u64>,
    /// Output timestamp of the packet that set `highest_out`.
    ref_ts: u32,
    /// Arrival time of the packet that set `highest_out`.
    ref_arrival_us: u64,
    /// Packets of the current run dropped on purpose.
    skips: Skips,
    stats: RewriteStats,
}

impl Rewriter {
    /// Creates the state for a new down-track. Video starts gated (waiting for a keyframe).
    pub fn new(cfg: RewriterConfig) -> Self {
        Rewriter {
            cfg,
            needs_keyframe: cfg.video,
            run: None,
            prev: None,
            reset_candidate: None,
            highest_out: None,
            ref_ts: cfg.initial_ts,
            ref_arrival_us: 0,
            skips: Skips::new(),
            stats: RewriteStats::default(),
        }
    }

    /// The configuration this rewriter was created with.
    pub fn config(&self) -> &RewriterConfig {
        &self.cfg
    }

    /// Decides what to do with `p` and, if it is forwarded, its output sequence number and
    /// timestamp.
    pub fn rewrite(&mut self, p: &InPacket) -> Decision {
        if self.waiting_for_keyframe() {
            if !p.keyframe_start {
                return self.drop_waiting();
            }
            if self.is_late_in_run(p) || self.is_prev_stale(p) {
                return self.drop_stale();
            }
            return self.start_run(p);
        }
        let Some(run) = self.run else {
            return self.start_run(p);
        };
        if p.source != run.source {
            if self.is_prev_stale(p) {
                return self.drop_stale();
            }
            return self.discontinuity(p);
        }
        if p.seq > run.hi_in {
            let gap = p.seq - run.hi_in;
            if gap <= MAX_FORWARD_JUMP {
                return self.advance(run, p);
            }
            if self.is_prev_stale(p) {
                return self.drop_stale();
            }
            return self.discontinuity(p);
        }
        let behind = run.hi_in - p.seq;
        if behind <= REORDER_WINDOW {
            if p.seq >= run.start_in {
                let Some(delta) = self.skips.delta_of(p.seq, run.seq_delta) else {
                    return self.drop_stale();
                };
                let seq = p.seq.wrapping_add(delta);
                let ts = p.ts.wrapping_add(run.ts_delta);
                self.stats.forwarded = self.stats.forwarded.wrapping_add(1);
                return Decision::Forward { seq, ts };
            }
            return self.drop_stale();
        }
        // Far behind the current run: a very late packet, or the source reset its numbering.
        if self.is_prev_stale(p) {
            return self.drop_stale();
        }
        if self.cfg.video && p.keyframe_start {
            // A keyframe start is strong evidence of a restarted stream.
            return self.discontinuity(p);
        }
        match self.reset_candidate {
            Some(c) if p.seq > c && p.seq - c <= RESET_CONFIRM_SPAN => self.discontinuity(p),
            _ => {
                self.reset_candidate = Some(p.seq);
                self.drop_stale()
            }
        }
    }

    /// `p` is dropped on purpose (a layer above the subscriber's choice): the packets after
    /// it move down by one, so the subscriber sees no gap there, while a packet lost
    /// upstream still leaves one. Only a packet of the current run's source ahead of its
    /// highest counts; anything else changes nothing (its number was already given away,
    /// or the next forwarded packet rebases anyway).
    pub fn skip(&mut self, p: &InPacket) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if p.source != run.source || p.seq <= run.hi_in || p.seq - run.hi_in > MAX_FORWARD_JUMP {
            return;
        }
        let delta_before = run.seq_delta;
        if p.seq > run.hi_in + 1 {
            // Packets before it are missing (lost, or late): their numbers stay reserved,
            // so a late one lands on its own, and a rebase goes past them.
            let reserved = (p.seq - 1).wrapping_add(delta_before);
            self.highest_out = Some(self.highest_out.map_or(reserved, |h| h.max(reserved)));
        }
        run.hi_in = p.seq;
        run.seq_delta = run.seq_delta.wrapping_sub(1);
        self.stats.skipped = self.stats.skipped.wrapping_add(1);
        // A drop right after a drop extends it.
        let last = self
            .skips
            .len
            .checked_sub(1)
            .map(|i| (self.skips.head + i) % SKIP_HISTORY);
        match last {
            Some(i) if self.skips.ring[i].resume == p.seq => self.skips.ring[i].resume = p.seq + 1,
            _ => self.skips.push(Skip {
                from: p.seq,
                resume: p.seq + 1,
                delta_before,
            }),
        }
    }

    /// Whether video gating is active: packets are dropped until a keyframe start arrives.
    /// The engine should keep requesting a keyframe from the publisher while this is true.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.cfg.video && self.needs_keyframe
    }

    /// Forces keyframe gating again (e.g. the subscriber's decoder is known to be broken).
    /// The next keyframe rebases. No-op for audio.
    pub fn request_keyframe_gate(&mut self) {
        if self.cfg.video {
            self.needs_keyframe = true;
        }
    }

    /// Where output sequence number `out_seq` came from, to answer a NACK for it: `None`
    /// unless it lies in the current run (between its first and its highest packet).
    pub fn origin_of(&self, out_seq: u64) -> Option<Origin> {
        let run = self.run?;
        let seq = self.skips.input_of(out_seq, run.seq_delta)?;
        (seq >= run.start_in && seq <= run.hi_in).then_some(Origin {
            source: run.source,
            seq,
            ts_delta: run.ts_delta,
        })
    }

    /// Highest extended output sequence number forwarded so far, if any.
    pub fn highest_out_seq(&self) -> Option<u64> {
        self.highest_out
    }

    /// Source of the current run, if any packet was forwarded yet.
    pub fn current_source(&self) -> Option<u64> {
        self.run.map(|r| r.source)
    }

    /// Decision counters.
    pub fn stats(&self) -> RewriteStats {
        self.stats
    }

    /// `p` is a late packet (within the window) of the current run's source that does not
    /// advance it.
    fn is_late_in_run(&self, p: &InPacket) -> bool {
        self.run.is_some_and(|r| {
            r.source == p.source && p.seq <= r.hi_in && r.hi_in - p.seq <= REORDER_WINDOW
        })
    }

    /// `p` is a late packet (within the window) of the previous run.
    fn is_prev_stale(&self, p: &InPacket) -> bool {
        self.prev.is_some_and(|r| {
            r.source == p.source && p.seq <= r.hi_in && r.hi_in - p.seq <= REORDER_WINDOW
        })
    }

    /// Source switch or discontinuity: video without a keyframe gates, otherwise rebase.
    fn discontinuity(&mut self, p: &InPacket) -> Decision {
        if self.cfg.video && !p.keyframe_start {
            self.needs_keyframe = true;
            return self.drop_waiting();
        }
        self.start_run(p)
    }

    /// New highest packet of the current run.
    fn advance(&mut self, mut run: Run, p: &InPacket) -> Decision {
        run.hi_in = p.seq;
        if p.clock_offset.is_some() {
            run.clock_offset = p.clock_offset;
        }
        self.run = Some(run);
        let (seq, ts) = run.map(p);
        self.highest_out = Some(seq);
        self.ref_ts = ts;
        self.ref_arrival_us = p.arrival_us;
        self.reset_candidate = None;
        self.stats.forwarded = self.stats.forwarded.wrapping_add(1);
        Decision::Forward { seq, ts }
    }

    /// Starts a new run with `p` as its first packet (the first run, or a rebase).
    fn start_run(&mut self, p: &InPacket) -> Decision {
        let (seq, ts) = match self.highest_out {
            None => (
                u64::from(self.cfg.initial_seq & INITIAL_SEQ_MASK),
                self.cfg.initial_ts,
            ),
            Some(h) => {
                self.stats.rebases = self.stats.rebases.wrapping_add(1);
                (h.wrapping_add(1), self.rebase_ts(p))
            }
        };
        if let Some(r) = self.run {
            self.prev = Some(PrevRun {
                source: r.source,
                hi_in: r.hi_in,
            });
        }
        self.run = Some(Run {
            source: p.source,
            start_in: p.seq,
            hi_in: p.seq,
            seq_delta: seq.wrapping_sub(p.seq),
            ts_delta: ts.wrapping_sub(p.ts),
            clock_offset: p.clock_offset,
        });
        self.skips.clear(p.seq);
        self.needs_keyframe = false;
        self.reset_candidate = None;
        self.highest_out = Some(seq);
        self.ref_ts = ts;
        self.ref_arrival_us = p.arrival_us;
        self.stats.forwarded = self.stats.forwarded.wrapping_add(1);
        Decision::Forward { seq, ts }
    }

    /// The output timestamp of `p`, the first packet of a new run. Between two sources on
    /// the track's shared clock the mapping carries over, unless that would not move
    /// forward or strays more than [`MAX_ALIGNED_ERROR_MS`] from the arrival-time estimate
    /// (a clock that is not what it claims); otherwise the advance is estimated from
    /// arrival times.
    fn rebase_ts(&self, p: &InPacket) -> u32 {
        let estimate = self.ref_ts.wrapping_add(self.ts_advance(p.arrival_us));
        if let (Some(run), Some(p_off)) = (self.run, p.clock_offset) {
            let Some(run_off) = run.clock_offset else {
                return estimate;
            };
            // On the shared clock: p at p.ts + p_off, the run's inputs at in + run_off, and
            // the run maps in to in + ts_delta.
            let aligned =
                p.ts.wrapping_add(p_off)
                    .wrapping_sub(run_off)
                    .wrapping_add(run.ts_delta);
            let ahead = aligned.wrapping_sub(self.ref_ts) as i32;
            let error = (aligned.wrapping_sub(estimate) as i32).unsigned_abs();
            let max_error = u64::from(self.cfg.clock_rate) * MAX_ALIGNED_ERROR_MS / 1000;
            if ahead > 0 && u64::from(error) <= max_error {
                return aligned;
            }
        }
        estimate
    }

    /// Timestamp advance for a rebase at `arrival_us`: elapsed time since the last new
    /// output times the clock rate, rounded, at least 1, at most [`MAX_TS_ADVANCE`].
    fn ts_advance(&self, arrival_us: u64) -> u32 {
        let elapsed = arrival_us.saturating_sub(self.ref_arrival_us);
        let ticks = (u128::from(elapsed) * u128::from(self.cfg.clock_rate) + 500_000) / 1_000_000;
        let ticks = u32::try_from(ticks).unwrap_or(MAX_TS_ADVANCE);
        ticks.clamp(1, MAX_TS_ADVANCE)
    }

    fn drop_waiting(&mut self) -> Decision {
        self.stats.dropped_waiting_keyframe = self.stats.dropped_waiting_keyframe.wrapping_add(1);
        Decision::DropWaitingKeyframe
    }

    fn drop_stale(&mut self) -> Decision {
        self.stats.dropped_stale = self.stats.dropped_stale.wrapping_add(1);
        Decision::DropStale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: RewriterConfig = RewriterConfig {
        video: false,
        clock_rate: 48_000,
        initial_seq: 1000,
        initial_ts: 5000,
    };
    const VIDEO: RewriterConfig = RewriterConfig {
        video: true,
        clock_rate: 90_000,
        initial_seq: 2000,
        initial_ts: 7000,
    };

    fn pkt(source: u64, seq: u64, ts: u32, key: bool, arrival_us: u64) -> InPacket {
        InPacket {
            source,
            seq,
            ts,
            keyframe_start: key,
            arrival_us,
            clock_offset: None,
        }
    }

    fn fwd(d: Decision) -> (u64, u32) {
        match d {
            Decision::Forward { seq, ts } => (seq, ts),
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    /// Audio packet `seq` of source `src`, 20 ms apart, ts 960 apart.
    fn a(src: u64, seq: u64) -> InPacket {
        pkt(
            src,
            seq,
            (seq as u32).wrapping_mul(960),
            false,
            seq * 20_000,
        )
    }

    #[test]
    fn in_order_run_is_continuous() {
        let mut r = Rewriter::new(AUDIO);
        let (s0, t0) = fwd(r.rewrite(&a(1, 100)));
        assert_eq!((s0, t0), (1000, 5000));
        for i in 1..500u64 {
            let (s, t) = fwd(r.rewrite(&a(1, 100 + i)));
            assert_eq!(s, s0 + i);
            assert_eq!(t, t0.wrapping_add(960 * i as u32));
        }
        assert_eq!(r.highest_out_seq(), Some(s0 + 499));
        assert_eq!(r.stats().forwarded, 500);
        assert_eq!(r.stats().rebases, 0);
    }

    #[test]
    fn origin_of_inverts_the_current_run_only() {
        let mut r = Rewriter::new(AUDIO);
        assert_eq!(r.origin_of(1000), None, "nothing forwarded yet");
        for i in 0..10u64 {
            r.rewrite(&a(1, 100 + i));
        }
        let o = r.origin_of(1004).expect("in the run");
        assert_eq!((o.source, o.seq), (1, 104));
        assert_eq!(o.out_ts(a(1, 104).ts), 5000 + 4 * 960);
        assert_eq!(r.origin_of(999), None, "before the run");
        assert_eq!(r.origin_of(1010), None, "not forwarded yet");
        // A new source starts a new run: the old one's packets are no longer answered.
        r.rewrite(&a(2, 7));
        assert_eq!(r.origin_of(1004), None);
        let o = r.origin_of(1010).expect("first packet of the new run");
        assert_eq!((o.source, o.seq), (2, 7));
    }

    #[test]
    fn initial_seq_is_masked_below_0x8000() {
        let mut r = Rewriter::new(RewriterConfig {
            initial_seq: 0xffff,
            ..AUDIO
        });
        assert_eq!(fwd(r.rewrite(&a(1, 7))).0, 0x7fff);
    }

    #[test]
    fn gaps_preserved_and_late_retransmit_fills_hole() {
        let mut r = Rewriter::new(AUDIO);
        let (s10, _) = fwd(r.rewrite(&a(1, 10)));
        let (s13, t13) = fwd(r.rewrite(&a(1, 13)));
        assert_eq!(s13, s10 + 3);
        let (s11, t11) = fwd(r.rewrite(&a(1, 11)));
        let (s12, _) = fwd(r.rewrite(&a(1, 12)));
        assert_eq!((s11, s12), (s10 + 1, s10 + 2));
        assert_eq!(t13.wrapping_sub(t11), 2 * 960);
        // Duplicate maps to the same output.
        assert_eq!(fwd(r.rewrite(&a(1, 12))).0, s12);
        assert_eq!(r.highest_out_seq(), Some(s13));
        // Forward jump up to MAX_FORWARD_JUMP is a gap, too.
        let (s, _) = fwd(r.rewrite(&a(1, 13 + MAX_FORWARD_JUMP)));
        assert_eq!(s, s13 + MAX_FORWARD_JUMP);
        assert_eq!(r.stats().rebases, 0);
    }

    #[test]
    fn too_old_packets_are_stale() {
        let mut r = Rewriter::new(AUDIO);
        fwd(r.rewrite(&a(1, 5000)));
        fwd(r.rewrite(&a(1, 7000)));
        // Before the run start (within window): stale.
        assert_eq!(r.rewrite(&a(1, 4999)), Decision::DropStale);
        // Within window and after run start: mapped.
        assert!(r
            .rewrite(&a(1, 7000 - REORDER_WINDOW))
            .forwarded()
            .is_some());
        // Beyond window: stale (single one never rebases).
        assert_eq!(
            r.rewrite(&a(1, 7000 - REORDER_WINDOW - 1)),
            Decision::DropStale
        );
        assert_eq!(r.stats().dropped_stale, 2);
        assert_eq!(r.highest_out_seq(), Some(1000 + 2000));
    }

    #[test]
    fn source_switch_rebases_continuously_with_elapsed_ts() {
        let mut r = Rewriter::new(AUDIO);
        let mut last = (0, 0);
        for s in 100..110 {
            last = fwd(r.rewrite(&a(1, s)));
        }
        // New source, random numbering, arrives 50 ms after the last output.
        let arrival = 109 * 20_000 + 50_000;
        let (s, t) = fwd(r.rewrite(&pkt(2, 40_000, 123, false, arrival)));
        assert_eq!(s, last.0 + 1);
        assert_eq!(t, last.1.wrapping_add(48_000 / 20)); // 50 ms at 48 kHz = 2400
        assert_eq!(r.stats().rebases, 1);
        assert_eq!(r.current_source(), Some(2));
        // New run keeps relative differences.
        let (s2, t2) = fwd(r.rewrite(&pkt(2, 40_001, 123 + 960, false, arrival + 20_000)));
        assert_eq!((s2, t2), (s + 1, t.wrapping_add(960)));
        // Late packet of the old source: dropped, no switch back.
        assert_eq!(r.rewrite(&a(1, 108)), Decision::DropStale);
        assert_eq!(r.current_source(), Some(2));
        // Packets of the new run before its start: dropped.
        assert_eq!(
            r.rewrite(&pkt(2, 39_999, 0, false, arrival)),
            Decision::DropStale
        );
    }

    #[test]
    fn rebase_advances_ts_at_least_one_tick() {
        let mut r = Rewriter::new(AUDIO);
        let (s, t) = fwd(r.rewrite(&pkt(1, 10, 0, false, 1_000)));
        // Same arrival time (and even an earlier one) on a new source.
        let (s2, t2) = fwd(r.rewrite(&pkt(2, 99, 0, false, 500)));
        assert_eq!((s2, t2), (s + 1, t.wrapping_add(1)));
    }

    #[test]
    fn big_forward_jump_rebases() {
        let mut r = Rewriter::new(AUDIO);
        let (s, t) = fwd(r.rewrite(&a(1, 10)));
        let (s2, t2) = fwd(r.rewrite(&a(1, 11 + MAX_FORWARD_JUMP)));
        assert_eq!(s2, s + 1);
        let elapsed_ticks = ((11 + MAX_FORWARD_JUMP - 10) * 20_000 * 48_000 / 1_000_000) as u32;
        assert_eq!(t2, t.wrapping_add(elapsed_ticks));
        assert_eq!(r.stats().rebases, 1);
        // Late packet of the previous run: stale.
        assert_eq!(r.rewrite(&a(1, 9)), Decision::DropStale);
    }

    #[test]
    fn confirmed_backward_reset_rebases() {
        let mut r = Rewriter::new(AUDIO);
        let mut last = 0;
        for s in 20_000..20_010 {
            last = fwd(r.rewrite(&a(1, s))).0;
        }
        // Numbering resets far back: first packet dropped, second confirms.
        assert_eq!(r.rewrite(&a(1, 100)), Decision::DropStale);
        let (s, _) = fwd(r.rewrite(&a(1, 101)));
        assert_eq!(s, last + 1);
        let (s2, _) = fwd(r.rewrite(&a(1, 102)));
        assert_eq!(s2, last + 2);
        // Late packet of the old numbering: stale, no rebase.
        assert_eq!(r.rewrite(&a(1, 20_005)), Decision::DropStale);
        assert_eq!(r.stats().rebases, 1);
        // A lone far-old packet interleaved with progress never rebases.
        let mut r = Rewriter::new(AUDIO);
        for s in 5000..5010 {
            fwd(r.rewrite(&a(1, s)));
            assert_eq!(r.rewrite(&a(1, s - 2000)), Decision::DropStale);
        }
        assert_eq!(r.stats().rebases, 0);
    }

    #[test]
    fn video_gates_until_keyframe_then_rebases_without_gap() {
        let mut r = Rewriter::new(VIDEO);
        assert!(r.waiting_for_keyframe());
        assert_eq!(
            r.rewrite(&pkt(1, 1, 0, false, 0)),
            Decision::DropWaitingKeyframe
        );
        assert_eq!(r.highest_out_seq(), None);
        let (s, t) = fwd(r.rewrite(&pkt(1, 5, 3000, true, 10_000)));
        assert_eq!((s, t), (2000, 7000));
        assert!(!r.waiting_for_keyframe());
        let (s6, _) = fwd(r.rewrite(&pkt(1, 6, 3000, false, 11_000)));
        assert_eq!(s6, s + 1);
        // Switch: gated again, drops do not advance anything.
        for i in 0..20 {
            assert_eq!(
                r.rewrite(&pkt(2, 900 + i, 0, false, 20_000 + i)),
                Decision::DropWaitingKeyframe
            );
            assert!(r.waiting_for_keyframe());
            assert_eq!(r.highest_out_seq(), Some(s6));
        }
        // Old source is gated too.
        assert_eq!(
            r.rewrite(&pkt(1, 7, 3000, false, 30_000)),
            Decision::DropWaitingKeyframe
        );
        let (sk, tk) = fwd(r.rewrite(&pkt(2, 950, 77, true, 111_000)));
        assert_eq!(sk, s6 + 1);
        assert_eq!(tk, 7000u32.wrapping_add(9000)); // 100 ms at 90 kHz
        let (sn, tn) = fwd(r.rewrite(&pkt(2, 951, 77, false, 112_000)));
        assert_eq!((sn, tn), (sk + 1, tk));
        assert_eq!(r.stats().dropped_waiting_keyframe, 22);
        assert_eq!(r.stats().rebases, 1);
        // Packets of the new source dropped during gating, arriving late: stale.
        assert_eq!(
            r.rewrite(&pkt(2, 949, 0, false, 113_000)),
            Decision::DropStale
        );
    }

    #[test]
    fn request_keyframe_gate_and_late_keyframe() {
        let mut r = Rewriter::new(VIDEO);
        fwd(r.rewrite(&pkt(1, 10, 0, true, 0)));
        let (s11, _) = fwd(r.rewrite(&pkt(1, 11, 0, false, 0)));
        r.request_keyframe_gate();
        assert!(r.waiting_for_keyframe());
        // A retransmitted old keyframe start does not restart the run.
        assert_eq!(r.rewrite(&pkt(1, 10, 0, true, 1)), Decision::DropStale);
        assert_eq!(
            r.rewrite(&pkt(1, 12, 0, false, 2)),
            Decision::DropWaitingKeyframe
        );
        let (s, _) = fwd(r.rewrite(&pkt(1, 40, 9000, true, 3)));
        assert_eq!(s, s11 + 1);
        // Same-source late packets before the new run start: stale.
        assert_eq!(r.rewrite(&pkt(1, 12, 0, false, 4)), Decision::DropStale);
        // Big jump without keyframe on video gates.
        assert_eq!(
            r.rewrite(&pkt(1, 40 + MAX_FORWARD_JUMP + 1, 0, false, 5)),
            Decision::DropWaitingKeyframe
        );
        assert!(r.waiting_for_keyframe());
    }

    #[test]
    fn audio_never_gates() {
        let mut r = Rewriter::new(AUDIO);
        assert!(!r.waiting_for_keyframe());
        r.request_keyframe_gate();
        assert!(!r.waiting_for_keyframe());
        assert!(r.rewrite(&a(1, 1)).forwarded().is_some());
        assert!(r.rewrite(&a(2, 1)).forwarded().is_some());
        assert!(r
            .rewrite(&a(2, 1 + 10 * MAX_FORWARD_JUMP))
            .forwarded()
            .is_some());
        assert_eq!(r.stats().dropped_waiting_keyframe, 0);
        assert_eq!(r.stats().rebases, 2);
    }

    #[test]
    fn timestamp_wrap() {
        let mut r = Rewriter::new(RewriterConfig {
            initial_ts: u32::MAX - 100,
            ..AUDIO
        });
        let (_, t0) = fwd(r.rewrite(&pkt(1, 1, u32::MAX - 500, false, 0)));
        assert_eq!(t0, u32::MAX - 100);
        // Input ts wraps, output too; differences preserved.
        let (_, t1) = fwd(r.rewrite(&pkt(1, 2, 459, false, 20_000)));
        assert_eq!(t1.wrapping_sub(t0), 960);
        assert_eq!(t1, 859);
        // Rebase across the wrap.
        let (_, t2) = fwd(r.rewrite(&pkt(2, 1, 0, false, 40_000)));
        assert_eq!(t2, t1.wrapping_add(960));
    }

    #[test]
    fn input_seq_crossing_u16_wrap() {
        let mut r = Rewriter::new(AUDIO);
        let base = 3 * 65_536 - 5;
        let (s0, _) = fwd(r.rewrite(&a(1, base)));
        for i in 1..20 {
            assert_eq!(fwd(r.rewrite(&a(1, base + i))).0, s0 + i);
        }
        // Late packet from before the wrap, after it.
        let mut r = Rewriter::new(AUDIO);
        let (s0, _) = fwd(r.rewrite(&a(1, 65_534)));
        let (s2, _) = fwd(r.rewrite(&a(1, 65_537)));
        assert_eq!(s2, s0 + 3);
        assert_eq!(fwd(r.rewrite(&a(1, 65_535))).0, s0 + 1);
        assert_eq!(fwd(r.rewrite(&a(1, 65_536))).0, s0 + 2);
    }

    #[test]
    fn output_seq_never_reused_for_different_inputs() {
        let mut r = Rewriter::new(AUDIO);
        let mut seen: [(u64, u64, u64); 64] = [(0, 0, 0); 64];
        let mut n = 0;
        let inputs = [
            (1, 10),
            (1, 12),
            (1, 11),
            (1, 12),
            (2, 5),
            (1, 11),
            (2, 3),
            (2, 6),
            (1, 13),
            (2, 4),
            (2, 5000),
            (2, 6),
            (2, 5001),
        ];
        for (src, seq) in inputs {
            if let Some((s, _)) = r.rewrite(&a(src, seq)).forwarded() {
                for &(os, osrc, oseq) in &seen[..n] {
                    assert!(os != s || (osrc, oseq) == (src, seq));
                }
                seen[n] = (s, src, seq);
                n += 1;
            }
        }
    }

    /// Video packet `seq` of source `src`, a frame of three packets every 33 ms.
    fn v(src: u64, seq: u64, key: bool) -> InPacket {
        pkt(src, seq, (seq / 3) as u32 * 3000, key, seq * 11_000)
    }

    #[test]
    fn skipped_packets_leave_no_gap_but_losses_do() {
        let mut r = Rewriter::new(VIDEO);
        let (s0, _) = fwd(r.rewrite(&v(1, 100, true)));
        let (s1, _) = fwd(r.rewrite(&v(1, 101, false)));
        assert_eq!(s1, s0 + 1);
        // 102 and 103 dropped on purpose: 104 follows 101 directly.
        r.skip(&v(1, 102, false));
        r.skip(&v(1, 103, false));
        let (s4, _) = fwd(r.rewrite(&v(1, 104, false)));
        assert_eq!(s4, s1 + 1);
        // 105 lost upstream, 106 dropped on purpose, 107 arrives: one gap, for 105.
        r.skip(&v(1, 106, false));
        let (s7, _) = fwd(r.rewrite(&v(1, 107, false)));
        assert_eq!(s7, s4 + 2);
        // 105 arrives late (a retransmission): it fills the gap exactly.
        let (s5, _) = fwd(r.rewrite(&v(1, 105, false)));
        assert_eq!(s5, s4 + 1);
        // A late copy of a dropped packet would collide: stale.
        assert_eq!(r.rewrite(&v(1, 103, false)), Decision::DropStale);
        assert_eq!(r.rewrite(&v(1, 106, false)), Decision::DropStale);
        // NACKs map back across the skips.
        assert_eq!(r.origin_of(s1).map(|o| o.seq), Some(101));
        assert_eq!(r.origin_of(s4).map(|o| o.seq), Some(104));
        assert_eq!(r.origin_of(s5).map(|o| o.seq), Some(105));
        assert_eq!(r.origin_of(s7).map(|o| o.seq), Some(107));
        assert_eq!(r.origin_of(s7 + 1), None);
        assert_eq!(r.stats().skipped, 3);
        // Skips of late packets, other sources or before any run change nothing.
        r.skip(&v(1, 50, false));
        r.skip(&v(2, 500, false));
        let (s8, _) = fwd(r.rewrite(&v(1, 108, false)));
        assert_eq!(s8, s7 + 1);
        let mut fresh = Rewriter::new(VIDEO);
        fresh.skip(&v(1, 1, false));
        assert_eq!(fresh.stats().skipped, 0);
    }

    #[test]
    fn a_rebase_after_a_skip_goes_past_the_numbers_of_missing_packets() {
        let mut r = Rewriter::new(VIDEO);
        let (s0, _) = fwd(r.rewrite(&v(1, 10, true)));
        // 11 and 12 missing, 13 dropped on purpose: 11 and 12 keep their numbers.
        r.skip(&v(1, 13, false));
        let (s11, _) = fwd(r.rewrite(&v(1, 11, false)));
        assert_eq!(s11, s0 + 1);
        // A switch now must not reuse 12's number (found by the layer_selection fuzzer).
        let (s, _) = fwd(r.rewrite(&v(2, 500, true)));
        assert_eq!(s, s0 + 3);
        assert_eq!(r.highest_out_seq(), Some(s0 + 3));
    }

    #[test]
    fn skip_history_is_bounded_and_old_inputs_become_stale() {
        let mut r = Rewriter::new(VIDEO);
        fwd(r.rewrite(&v(1, 0, true)));
        // Forward one, skip one, many times: more skips than the history holds.
        let mut last = 0;
        for i in 0..(SKIP_HISTORY as u64 + 10) {
            last = fwd(r.rewrite(&v(1, 1 + 2 * i, false))).0;
            r.skip(&v(1, 2 + 2 * i, false));
        }
        let n = SKIP_HISTORY as u64 + 10;
        let (s, _) = fwd(r.rewrite(&v(1, 1 + 2 * n, false)));
        assert_eq!(s, last + 1, "contiguous across every skip");
        // The newest stretches still map; the oldest inputs are forgotten: stale, never
        // a reused number.
        assert_eq!(r.origin_of(s).map(|o| o.seq), Some(1 + 2 * n));
        assert_eq!(r.origin_of(last).map(|o| o.seq), Some(1 + 2 * (n - 1)));
        assert_eq!(r.rewrite(&v(1, 1, false)), Decision::DropStale);
        assert_eq!(r.origin_of(s - n), None);
    }

    #[test]
    fn aligned_sources_keep_the_timestamp_mapping_across_a_switch() {
        let mut r = Rewriter::new(VIDEO);
        // Source 1's clock is the shared one (offset 0); source 2's runs 50_000 ticks behind.
        let on = |src, seq, ts, key, at, off| InPacket {
            clock_offset: Some(off),
            ..pkt(src, seq, ts, key, at)
        };
        let (_, t0) = fwd(r.rewrite(&on(1, 10, 90_000, true, 1_000_000, 0)));
        // Source 2, 100 ms later on the shared clock, arriving 130 ms later (jitter): the
        // mapping carries over (100 ms = 9000 ticks), not the 130 ms estimate.
        let (_, t1) = fwd(r.rewrite(&on(2, 5000, 49_000, true, 1_130_000, 50_000)));
        assert_eq!(t1.wrapping_sub(t0), 9000);
        // Within a run the offset may be refined without moving the mapping.
        let (_, t1b) = fwd(r.rewrite(&on(2, 5001, 52_000, false, 1_163_000, 50_002)));
        assert_eq!(t1b.wrapping_sub(t1), 3000);
        // Back to source 1, 33 ms on: the refined offset (2 ticks) is used.
        let (_, t2) = fwd(r.rewrite(&on(1, 11, 52_000 + 50_002 + 3000, true, 1_196_000, 0)));
        assert_eq!(t2.wrapping_sub(t1b), 3000);
        // A claimed offset far from arrival times (1 s off) loses to the estimate.
        let (_, t3) = fwd(r.rewrite(&on(2, 5002, 55_000 + 90_000, true, 1_229_000, 50_000)));
        assert_eq!(t3.wrapping_sub(t2), 2970);
        // Without an offset on either side: the estimate.
        let (_, t4) = fwd(r.rewrite(&v(3, 7, true)));
        assert!(t4.wrapping_sub(t3) as i32 > 0);
    }
}
