//! Overload shedding: what a shard that has fallen behind stops forwarding.
//!
//! A shard measures how long datagrams waited in its socket buffer (kernel receive
//! timestamps; [`Backlog`] watches the first datagram of each receive pass). When that wait
//! is above [`SHED_AFTER`] and has grown over the last [`GROWTH_WINDOW`], the shard is
//! overloaded: instead of queueing more (and delivering everything later and later), it
//! sheds video fan-out, which is nearly all of its work (one decryption in, an encryption
//! and a send per subscriber out): each video packet that is not part of a keyframe and
//! arrives while overloaded pauses one more subscriber's video of that track, in turn, so
//! the load drops by as many subscribers as the overload needs. A transient stall (the
//! backlog shrinks again within the window: a shard descheduled for a moment, or one pass
//! busy with handshakes while it catches up at a few milliseconds per pass) sheds nothing; a backlog beyond [`SHED_ALWAYS_AFTER`] (or a packet
//! that waited that long in a ring) sheds in any case. Audio, keyframes, retransmissions,
//! RTCP, ICE and DTLS keep flowing.
//!
//! A paused subscriber waits for the next keyframe (its down-track is gated, so it sees no
//! gap to NACK and no broken frame), which it asks for as usual; once the shard has caught
//! up, its video resumes from there. [`KeyframeGuard`] keeps a keyframe whole:
//! once its first packet is forwarded, the rest of that frame (up to the marker bit) is
//! too. Pure: no clock, no allocation, no panics.

use std::time::{Duration, Instant};

/// Socket-buffer wait above which a growing backlog means overload.
pub const SHED_AFTER: Duration = Duration::from_millis(10);

/// Wait (socket buffer or ring) beyond which late video is shed even if the backlog is
/// shrinking: delivered this late it would only freeze the picture anyway.
pub const SHED_ALWAYS_AFTER: Duration = Duration::from_millis(250);

/// The span over which a backlog must grow to count as overload. Comparing one pass with
/// the next (as before) shed a live call's video when a join storm's handshakes made a few
/// passes in a row catch up slowly: that is a shard at capacity for a moment, not one
/// falling further behind.
pub const GROWTH_WINDOW: Duration = Duration::from_millis(50);

/// A shard's view of its receive backlog, from one sample per receive pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// The start of the current window: when, and the wait then (above [`SHED_AFTER`]).
    anchor: Option<(Instant, Duration)>,
    overloaded: bool,
}

impl Backlog {
    /// The wait of the first datagram of a receive pass, at `now`.
    pub fn observe(&mut self, waited: Duration, now: Instant) {
        if waited > SHED_ALWAYS_AFTER {
            self.overloaded = true;
        }
        if waited <= SHED_AFTER {
            self.anchor = None;
            self.overloaded = false;
            return;
        }
        match self.anchor {
            None => self.anchor = Some((now, waited)),
            Some((since, then)) if now.saturating_duration_since(since) >= GROWTH_WINDOW => {
                // A window has passed: overloaded until the next one if the backlog grew.
                self.overloaded = waited >= then || waited > SHED_ALWAYS_AFTER;
                self.anchor = Some((now, waited));
            }
            Some(_) => {}
        }
    }

    /// Whether late video is shed now.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// The socket was found empty: no backlog.
    pub fn drained(&mut self) {
        self.anchor = None;
        self.overloaded = false;
    }
}

/// Tracks whether the video packets of one track belong to a keyframe.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyframeGuard {
    in_keyframe: bool,
}

impl KeyframeGuard {
    /// Feed every video packet of the track in order; true if this one is part of a
    /// keyframe (its first packet, or a later one before the frame's marker bit).
    #[inline]
    pub fn protects(&mut self, keyframe_start: bool, marker: bool) -> bool {
        let in_keyframe = keyframe_start || self.in_keyframe;
        self.in_keyframe = in_keyframe && !marker;
        in_keyframe
    }
}

/// Whether a video packet is shed: the shard is `overloaded` or the packet `waited` beyond
/// [`SHED_ALWAYS_AFTER`], and it is not `protected` (part of a keyframe).
#[inline]
pub fn shed(overloaded: bool, waited: Duration, protected: bool) -> bool {
    (overloaded || waited > SHED_ALWAYS_AFTER) && !protected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_is_protected_up_to_its_marker() {
        let mut g = KeyframeGuard::default();
        assert!(!g.protects(false, false), "delta frame");
        assert!(!g.protects(false, true));
        assert!(g.protects(true, false), "keyframe start");
        assert!(g.protects(false, false), "keyframe middle");
        assert!(g.protects(false, true), "keyframe end (marker)");
        assert!(!g.protects(false, false), "next frame");
        assert!(g.protects(true, true), "one-packet keyframe");
        assert!(!g.protects(false, true));
    }

    #[test]
    fn backlog_growing_over_a_window_is_overload_a_shrinking_one_is_not() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let at = |t: u64| t0 + ms(t);
        let mut b = Backlog::default();
        // A stall: one pass finds 100 ms of backlog, later ones less.
        b.observe(ms(100), at(0));
        assert!(!b.overloaded(), "one late pass is not overload");
        b.observe(ms(60), at(20));
        b.observe(ms(70), at(30));
        assert!(
            !b.overloaded(),
            "a pass that finds a little more, within the window"
        );
        b.observe(ms(40), at(60));
        assert!(!b.overloaded(), "caught up over the window");
        b.drained();
        // Overload: the backlog keeps growing, pass after pass.
        for (t, w) in [(0, 12), (10, 16), (30, 22), (45, 30)] {
            b.observe(ms(w), at(100 + t));
            assert!(!b.overloaded(), "not before a window has passed");
        }
        b.observe(ms(31), at(160));
        assert!(b.overloaded(), "grew from 12 to 31 ms over 60 ms");
        b.observe(ms(28), at(180));
        assert!(b.overloaded(), "the decision holds for the window");
        b.observe(ms(20), at(215));
        assert!(
            !b.overloaded(),
            "shedding worked, the backlog shrank over the window"
        );
        b.observe(ms(5), at(220));
        assert!(!b.overloaded(), "below the threshold");
        b.observe(SHED_ALWAYS_AFTER + ms(1), at(221));
        assert!(b.overloaded(), "far behind sheds regardless");
        b.drained();
        assert!(!b.overloaded());
    }

    #[test]
    fn sheds_only_unprotected_video_when_behind() {
        let late = SHED_ALWAYS_AFTER + Duration::from_millis(1);
        assert!(shed(true, Duration::ZERO, false));
        assert!(!shed(true, Duration::ZERO, true), "keyframes pass");
        assert!(!shed(false, SHED_AFTER, false), "not overloaded");
        assert!(shed(false, late, false), "waited far too long in a ring");
    }
}
