//! Overload shedding: what a shard that has fallen behind stops forwarding.
//!
//! A shard measures how long datagrams waited in its socket buffer (kernel receive
//! timestamps; [`Backlog`] watches the first datagram of each receive pass). When that wait
//! is above [`SHED_AFTER`] and still growing from one pass to the next, the shard is
//! overloaded: instead of queueing more (and delivering everything later and later), it
//! sheds video fan-out, which is nearly all of its work (one decryption in, an encryption
//! and a send per subscriber out): each video packet that is not part of a keyframe and
//! arrives while overloaded pauses one more subscriber's video of that track, in turn, so
//! the load drops by as many subscribers as the overload needs. A transient stall (the
//! backlog shrinks again) sheds nothing; a backlog beyond [`SHED_ALWAYS_AFTER`] (or a packet
//! that waited that long in a ring) sheds in any case. Audio, keyframes, retransmissions,
//! RTCP, ICE and DTLS keep flowing.
//!
//! A paused subscriber waits for the next keyframe (its down-track is gated, so it sees no
//! gap to NACK and no broken frame), which it asks for as usual; once the shard has caught
//! up, its video resumes from there. [`KeyframeGuard`] keeps a keyframe whole:
//! once its first packet is forwarded, the rest of that frame (up to the marker bit) is
//! too. Pure: no clock, no allocation, no panics.

use std::time::Duration;

/// Socket-buffer wait above which a growing backlog means overload.
pub const SHED_AFTER: Duration = Duration::from_millis(10);

/// Wait (socket buffer or ring) beyond which late video is shed even if the backlog is
/// shrinking: delivered this late it would only freeze the picture anyway.
pub const SHED_ALWAYS_AFTER: Duration = Duration::from_millis(250);

/// A shard's view of its receive backlog, from one sample per receive pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    last: Duration,
    overloaded: bool,
}

impl Backlog {
    /// The wait of the first datagram of a receive pass.
    pub fn observe(&mut self, waited: Duration) {
        let growing = self.last > SHED_AFTER && waited >= self.last;
        self.overloaded = growing || waited > SHED_ALWAYS_AFTER;
        self.last = waited;
    }

    /// Whether late video is shed now.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// The socket was found empty: no backlog.
    pub fn drained(&mut self) {
        self.last = Duration::ZERO;
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
    fn growing_backlog_is_overload_a_shrinking_one_is_not() {
        let ms = Duration::from_millis;
        let mut b = Backlog::default();
        // A stall: one pass finds 100 ms of backlog, the next ones less.
        b.observe(ms(100));
        assert!(!b.overloaded(), "one late pass is not overload");
        b.observe(ms(60));
        assert!(!b.overloaded(), "catching up");
        b.drained();
        // Overload: every pass finds more.
        for w in [10, 25, 30, 35] {
            b.observe(ms(w));
        }
        assert!(b.overloaded());
        b.observe(ms(28));
        assert!(!b.overloaded(), "shedding worked, the backlog shrinks");
        b.observe(SHED_ALWAYS_AFTER + ms(1));
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
