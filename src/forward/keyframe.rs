//! Keyframe-request throttling: the one rule for how often the SFU asks for a keyframe.
//!
//! Two places ask: a subscriber's down-track that waits for a keyframe (it repeats its
//! request until one arrives) and the publisher side, which turns many subscribers'
//! requests for one track into at most one PLI per interval. Both use [`KeyframeThrottle`],
//! a pure, allocation-free state machine driven by the caller's clock.
//!
//! A request the throttle holds back is not lost: it stays pending and is due once the
//! interval has passed ([`KeyframeThrottle::take_due`]), unless a keyframe arrives first
//! ([`KeyframeThrottle::satisfied`]). So a subscriber that joins just after another one
//! waits at most one interval for its keyframe, and a burst of joins costs one keyframe
//! per interval.

use std::time::{Duration, Instant};

/// Minimum spacing of keyframe requests (PLI) sent to a publisher for one track.
pub const PUBLISHER_KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// How often a down-track that waits for a keyframe repeats its request.
pub const GATED_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// At most one request per interval: the first request always passes, later ones pass once
/// `interval` has elapsed since the last one that passed.
#[derive(Debug, Clone, Copy)]
pub struct KeyframeThrottle {
    interval: Duration,
    last: Option<Instant>,
    /// A request was held back and has not been sent or satisfied since.
    pending: bool,
}

impl KeyframeThrottle {
    /// A throttle that lets one request through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last: None,
            pending: false,
        }
    }

    /// Whether a request may go out at `now`; if so, it is counted as sent at `now`. If not,
    /// it stays pending (see [`KeyframeThrottle::take_due`]). A clock that goes backwards
    /// never lets a request through early.
    pub fn try_request(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            if now.saturating_duration_since(last) < self.interval {
                self.pending = true;
                return false;
            }
        }
        self.last = Some(now);
        self.pending = false;
        true
    }

    /// Whether a held-back request is due at `now`; if so, it is counted as sent at `now`.
    pub fn take_due(&mut self, now: Instant) -> bool {
        self.pending && self.try_request(now)
    }

    /// Whether a held-back request waits.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// A keyframe arrived: a held-back request has nothing left to ask for.
    pub fn satisfied(&mut self) {
        self.pending = false;
    }

    /// Count a request made at `now` outside the throttle (e.g. the first request of a new
    /// down-track), so the next one waits a full interval.
    pub fn record(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(Duration::from_millis(300));
        assert!(k.try_request(t0));
        assert!(!k.try_request(t0));
        assert!(!k.try_request(t0 + Duration::from_millis(299)));
        assert!(k.try_request(t0 + Duration::from_millis(300)));
        assert!(
            !k.try_request(t0 + Duration::from_millis(599)),
            "counted from the last pass"
        );
        assert!(k.try_request(t0 + Duration::from_millis(600)));
    }

    #[test]
    fn held_back_request_is_due_after_the_interval() {
        let t0 = Instant::now();
        let i = Duration::from_millis(300);
        let mut k = KeyframeThrottle::new(i);
        assert!(!k.take_due(t0), "nothing held back yet");
        assert!(k.try_request(t0));
        assert!(!k.try_request(t0 + Duration::from_millis(100)));
        assert!(k.pending());
        assert!(!k.take_due(t0 + Duration::from_millis(200)));
        assert!(k.take_due(t0 + i));
        assert!(!k.pending());
        assert!(!k.take_due(t0 + 3 * i), "sent once");
    }

    #[test]
    fn keyframe_cancels_a_held_back_request() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(Duration::from_millis(300));
        assert!(k.try_request(t0));
        assert!(!k.try_request(t0 + Duration::from_millis(10)));
        k.satisfied();
        assert!(!k.take_due(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn recorded_request_delays_the_next() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(GATED_RETRY_INTERVAL);
        k.record(t0);
        assert!(!k.try_request(t0 + Duration::from_millis(100)));
        assert!(k.try_request(t0 + GATED_RETRY_INTERVAL));
    }

    #[test]
    fn clock_going_backwards_does_not_unthrottle() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut k = KeyframeThrottle::new(PUBLISHER_KEYFRAME_INTERVAL);
        assert!(k.try_request(t0));
        assert!(!k.try_request(t0 - Duration::from_secs(5)));
    }
}
