//! A loss-based cap on a subscribe transport's bandwidth estimate (issue 12).
//!
//! str0m's estimate is delay-based first: it falls when queueing delay grows. Behind a
//! shallow drop-tail queue that a too-high layer keeps full, the delay stops growing while
//! packets are dropped, and the estimate can climb (in `tests/bwe.rs`: to 450 kbit/s on a
//! 300 kbit/s link losing 12 % of its packets). An encoder that follows the estimate would
//! send more; an SFU keeps forwarding the layer it granted. [`LossCap`] applies
//! libwebrtc's classic loss rule on top (its `SendSideBandwidthEstimation`): while more than
//! [`LOSS_HIGH`] of the packets are lost, the cap falls to `(1 - loss / 2)` of what was
//! sent, at most once per [`DECREASE_EVERY`]; under [`LOSS_LOW`] it grows by
//! [`RECOVERY_PCT_PER_SEC`] per second, and is lifted once the estimate is below it or the
//! loss has stayed low for [`LIFT_AFTER`] (then the link is not full: str0m's estimate,
//! with its own loss controller, governs again; growing 8 %/s from a 60 kbit/s link's cap
//! to a 600 kbit/s estimate took half a minute).
//!
//! Pure: the caller supplies the loss, the rates and the time.

use std::time::{Duration, Instant};

/// A loss share above which the cap falls.
pub const LOSS_HIGH: f32 = 0.10;

/// A loss share below which the cap grows.
pub const LOSS_LOW: f32 = 0.02;

/// The cap falls at most this often (the loss of one window is acted on once).
pub const DECREASE_EVERY: Duration = Duration::from_millis(500);

/// How fast (percent per second) the cap grows while loss is low.
pub const RECOVERY_PCT_PER_SEC: u64 = 8;

/// Loss below [`LOSS_LOW`] for this long lifts the cap.
pub const LIFT_AFTER: Duration = Duration::from_secs(2);

/// The cap never falls below this (bits per second): audio is always forwarded anyway.
pub const MIN_CAP_BPS: u64 = 30_000;

/// The loss-based cap of one subscribe transport.
#[derive(Debug, Clone, Default)]
pub struct LossCap {
    cap: Option<u64>,
    last_decrease: Option<Instant>,
    last_update: Option<Instant>,
    /// Since when the loss has been below [`LOSS_LOW`].
    low_since: Option<Instant>,
}

impl LossCap {
    /// A transport without a cap.
    pub fn new() -> LossCap {
        LossCap::default()
    }

    /// The cap now (bits per second), if there is one.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// Fold in the loss of the last window (`None`: no feedback) given what was sent
    /// (`sent`, bits per second; 0 if not known) and str0m's `estimate`; returns the estimate to allocate
    /// with (the lower of the two).
    pub fn update(&mut self, now: Instant, loss: Option<f32>, sent: u64, estimate: u64) -> u64 {
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_update = Some(now);
        if !loss.is_some_and(|l| l < LOSS_LOW) {
            self.low_since = None;
        }
        match loss {
            Some(loss) if loss > LOSS_HIGH => {
                let due = self
                    .last_decrease
                    .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_EVERY);
                if due {
                    // (0: nothing granted yet, the estimate is all there is.)
                    let sent = if sent == 0 { u64::MAX } else { sent };
                    let base = self.cap.unwrap_or(u64::MAX).min(sent).min(estimate);
                    let keep = 1.0 - f64::from(loss.min(1.0)) / 2.0;
                    let cap = ((base as f64 * keep) as u64).max(MIN_CAP_BPS);
                    self.cap = Some(cap);
                    self.last_decrease = Some(now);
                }
            }
            Some(loss) if loss < LOSS_LOW => {
                let since = *self.low_since.get_or_insert(now);
                if let Some(cap) = self.cap {
                    let grown = cap
                        + (cap as u128 * RECOVERY_PCT_PER_SEC as u128 * elapsed.as_millis()
                            / 100_000) as u64;
                    let low_long = now.saturating_duration_since(since) >= LIFT_AFTER;
                    self.cap = (grown < estimate && !low_long).then_some(grown);
                }
            }
            // Between the two (or no feedback): held.
            _ => {}
        }
        self.cap.map_or(estimate, |c| c.min(estimate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KBPS: u64 = 1000;

    #[test]
    fn high_loss_caps_at_what_was_sent_less_half_the_loss_once_per_window() {
        let t0 = Instant::now();
        let mut c = LossCap::new();
        assert_eq!(c.update(t0, Some(0.0), 340 * KBPS, 450 * KBPS), 450 * KBPS);
        assert_eq!(c.update(t0, Some(0.12), 340 * KBPS, 450 * KBPS), 319_600);
        // Within the window: not again.
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            c.update(t0 + ms(100), Some(0.12), 340 * KBPS, 450 * KBPS),
            319_600
        );
        // Then from the cap, even if more was sent.
        assert_eq!(
            c.update(t0 + ms(500), Some(0.12), 340 * KBPS, 450 * KBPS),
            300_424
        );
        // An estimate below the cap is what counts.
        assert_eq!(
            c.update(t0 + ms(600), Some(0.05), 340 * KBPS, 200 * KBPS),
            200 * KBPS
        );
        assert_eq!(c.cap(), Some(300_424), "moderate loss holds the cap");
    }

    #[test]
    fn low_loss_grows_the_cap_until_the_estimate_is_below_it() {
        let t0 = Instant::now();
        let mut c = LossCap::new();
        c.update(t0, Some(0.5), 400 * KBPS, 1000 * KBPS);
        assert_eq!(c.cap(), Some(300 * KBPS));
        c.update(
            t0 + Duration::from_secs(1),
            Some(0.0),
            300 * KBPS,
            1000 * KBPS,
        );
        assert_eq!(c.cap(), Some(324 * KBPS), "8 % in a second");
        c.update(
            t0 + Duration::from_secs(2),
            Some(0.0),
            300 * KBPS,
            330 * KBPS,
        );
        assert_eq!(c.cap(), None, "lifted once the estimate is the lower");
        // No feedback: nothing changes.
        assert_eq!(
            c.update(t0 + Duration::from_secs(3), None, 0, 500 * KBPS),
            500 * KBPS
        );
    }

    #[test]
    fn loss_that_stays_low_lifts_the_cap() {
        let t0 = Instant::now();
        let mut c = LossCap::new();
        c.update(t0, Some(0.5), 100 * KBPS, 5000 * KBPS);
        assert_eq!(c.cap(), Some(75 * KBPS));
        let ms = |n| t0 + Duration::from_millis(n);
        c.update(ms(500), Some(0.0), 75 * KBPS, 5000 * KBPS);
        // Moderate loss in between starts the wait over.
        c.update(ms(1000), Some(0.05), 75 * KBPS, 5000 * KBPS);
        c.update(ms(1500), Some(0.0), 75 * KBPS, 5000 * KBPS);
        c.update(ms(3000), Some(0.0), 75 * KBPS, 5000 * KBPS);
        assert!(c.cap().is_some(), "1.5 s of low loss");
        assert_eq!(
            c.update(ms(3500), Some(0.0), 75 * KBPS, 5000 * KBPS),
            5000 * KBPS
        );
        assert_eq!(c.cap(), None, "2 s of low loss");
    }

    #[test]
    fn the_cap_has_a_floor() {
        let t0 = Instant::now();
        let mut c = LossCap::new();
        assert_eq!(c.update(t0, Some(1.0), 40 * KBPS, 60 * KBPS), MIN_CAP_BPS);
        assert_eq!(
            c.update(
                t0 + Duration::from_secs(1),
                Some(f32::NAN),
                40 * KBPS,
                60 * KBPS
            ),
            MIN_CAP_BPS
        );
    }
}
