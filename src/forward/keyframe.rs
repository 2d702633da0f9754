//! Keyframe-request throttling: the one rule for how often the SFU asks for a keyframe.
//!
//! Two places ask: a subscriber's down-track that waits for a keyframe (it repeats its
//! request until one arrives) and the publisher side, which turns many subscribers'
//! requests for one track into at most one PLI per interval. Both use [`KeyframeThrottle`],
//! a pure, allocation-free state machine driven by the caller's clock.
//!
//! A request the throttle holds back is not lost: it stays pending and is due at
//! [`KeyframeThrottle::due_at`] ([`KeyframeThrottle::take_due`]), unless a keyframe arrives
//! first ([`KeyframeThrottle::satisfied`]).
//!
//! The publisher side keeps at most one request in flight: while one is outstanding, later
//! ones wait for the keyframe it asked for (which serves them too), and are sent again only
//! if none came within [`PUBLISHER_KEYFRAME_INTERVAL`]. Once the keyframe has arrived, a new
//! request goes out as soon as [`PUBLISHER_KEYFRAME_SPACING`] has passed since the last one.
//! So a subscriber that joins just after another one waits for the same keyframe or at most
//! the spacing for its own, and a burst of joins costs at most one keyframe per spacing.

use std::time::{Duration, Instant};

/// How long a keyframe request to a publisher may stay unanswered before it is repeated.
pub const PUBLISHER_KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// Minimum spacing of keyframe requests to a publisher for one track once the previous
/// request's keyframe has arrived.
pub const PUBLISHER_KEYFRAME_SPACING: Duration = Duration::from_millis(100);

/// How often a down-track that waits for a keyframe repeats its request.
pub const GATED_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Keyframe-request throttle: a request passes if none passed within `interval` (while the
/// last one is unanswered) or within `spacing` (once a keyframe has answered it).
#[derive(Debug, Clone, Copy)]
pub struct KeyframeThrottle {
    interval: Duration,
    spacing: Duration,
    last: Option<Instant>,
    /// The last request that passed has not been answered by a keyframe yet.
    awaiting: bool,
    /// A request was held back and has not been sent or satisfied since.
    pending: bool,
}

impl KeyframeThrottle {
    /// A throttle that lets one request through per `interval`, keyframes or not.
    pub const fn new(interval: Duration) -> Self {
        Self::with_spacing(interval, interval)
    }

    /// A throttle that repeats an unanswered request after `interval` and lets a new one
    /// through `spacing` after the last once a keyframe answered it.
    pub const fn with_spacing(interval: Duration, spacing: Duration) -> Self {
        KeyframeThrottle {
            interval,
            spacing,
            last: None,
            awaiting: false,
            pending: false,
        }
    }

    /// Whether a request may go out at `now`; if so, it is counted as sent at `now`. If not,
    /// it stays pending (see [`KeyframeThrottle::take_due`]). A clock that goes backwards
    /// never lets a request through early.
    pub fn try_request(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            if now.saturating_duration_since(last) < self.gap() {
                self.pending = true;
                return false;
            }
        }
        self.last = Some(now);
        self.awaiting = true;
        self.pending = false;
        true
    }

    /// Whether a held-back request is due at `now`; if so, it is counted as sent at `now`.
    pub fn take_due(&mut self, now: Instant) -> bool {
        self.pending && self.try_request(now)
    }

    /// When a held-back request becomes due (`None` if none waits).
    pub fn due_at(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        self.last.map(|last| last + self.gap())
    }

    /// Whether a held-back request waits.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// A keyframe arrived: it answers the outstanding request and every held-back one.
    pub fn satisfied(&mut self) {
        self.awaiting = false;
        self.pending = false;
    }

    /// Count a request made at `now` outside the throttle (e.g. the first request of a new
    /// down-track), so the next one waits a full interval.
    pub fn record(&mut self, now: Instant) {
        self.last = Some(now);
        self.awaiting = true;
    }

    fn gap(&self) -> Duration {
        if self.awaiting {
            self.interval
        } else {
            self.spacing
        }
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
    fn answered_request_lets_the_next_through_after_the_spacing() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut k =
            KeyframeThrottle::with_spacing(PUBLISHER_KEYFRAME_INTERVAL, PUBLISHER_KEYFRAME_SPACING);
        assert!(k.try_request(t0));
        // Outstanding: later requests wait for its keyframe.
        assert!(!k.try_request(t0 + ms(20)));
        assert_eq!(k.due_at(), Some(t0 + PUBLISHER_KEYFRAME_INTERVAL));
        // The keyframe comes and serves them.
        k.satisfied();
        assert_eq!(k.due_at(), None);
        // A subscriber joining now waits only for the spacing, not the interval.
        assert!(!k.try_request(t0 + ms(60)));
        assert_eq!(k.due_at(), Some(t0 + PUBLISHER_KEYFRAME_SPACING));
        assert!(!k.take_due(t0 + ms(99)));
        assert!(k.take_due(t0 + PUBLISHER_KEYFRAME_SPACING));
        // That one is outstanding again: the interval applies until its keyframe.
        assert!(!k.try_request(t0 + ms(250)));
        assert!(k.take_due(t0 + ms(100) + PUBLISHER_KEYFRAME_INTERVAL));
    }

    #[test]
    fn clock_going_backwards_does_not_unthrottle() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut k = KeyframeThrottle::new(PUBLISHER_KEYFRAME_INTERVAL);
        assert!(k.try_request(t0));
        assert!(!k.try_request(t0 - Duration::from_secs(5)));
    }
}
