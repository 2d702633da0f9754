//! Keyframe-request throttling: the one rule for how often the SFU asks for a keyframe.
//!
//! Two places ask: a subscriber's down-track that waits for a keyframe (it repeats its
//! request until one arrives) and the publisher side, which turns many subscribers'
//! requests for one track into at most one PLI per interval. Both use [`KeyframeThrottle`],
//! a pure, allocation-free state machine driven by the caller's clock.

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
}

impl KeyframeThrottle {
    /// A throttle that lets one request through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last: None,
        }
    }

    /// Whether a request may go out at `now`; if so, it is counted as sent at `now`.
    /// A clock that goes backwards never lets a request through early.
    pub fn try_request(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            if now.saturating_duration_since(last) < self.interval {
                return false;
            }
        }
        self.last = Some(now);
        true
    }

    /// Count a request made at `now` outside the throttle (e.g. the first request of a new
    /// down-track), so the next one waits a full interval.
    pub fn record(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// When the last request passed, if any.
    pub fn last(&self) -> Option<Instant> {
        self.last
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
        assert!(!k.try_request(t0 + Duration::from_millis(400)));
        assert_eq!(k.last(), Some(t0 + Duration::from_millis(300)));
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
