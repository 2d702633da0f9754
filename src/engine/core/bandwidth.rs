//! Bandwidth allocation on the shard: each subscribe session with bandwidth estimation
//! shares its estimate among its down-tracks ([`crate::forward::allocator`]), from the
//! layer bitrates its routes measure as packets arrive, every [`ALLOCATE_EVERY`] (and at
//! the next housekeeping once the estimate moved by a fifth or the subscriber's preference
//! changed); the grants become the down-tracks' layer ceilings (or pause their video), and
//! the allocation's probe targets go to str0m's estimator.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

use super::ShardCore;
use crate::forward::{Demand, MAX_LAYERS};

/// How often each session's allocation runs.
pub(crate) const ALLOCATE_EVERY: Duration = Duration::from_millis(500);

/// The window whose loss caps the estimate (`LossCap`): the allocation period.
const LOSS_WINDOW: Duration = ALLOCATE_EVERY;

/// Probe targets that moved less than this (percent) are not given to the estimator again.
const PROBE_CHANGE_PCT: u64 = 10;

impl ShardCore {
    /// Run the allocation of every subscribe session whose turn it is.
    pub(super) fn allocate_bandwidth(&mut self, now: Instant) {
        let mut demands = std::mem::take(&mut self.demands);
        for (slot, s) in self.sessions.iter_mut() {
            if s.dead.is_some() {
                continue;
            }
            let Some(bwe) = s.bwe.as_mut() else {
                continue;
            };
            let Some(estimate) = bwe.estimate else {
                continue;
            };
            if bwe
                .last_run
                .is_some_and(|t| now.saturating_duration_since(t) < ALLOCATE_EVERY)
            {
                continue;
            }
            bwe.last_run = Some(now);
            bwe.allocated_at = estimate;
            // str0m's estimate, capped by the loss its feedback reports (see `LossCap`).
            let loss = s.rtc.bwe().egress_loss(LOSS_WINDOW);
            let estimate = bwe.loss_cap.update(now, loss, bwe.last.used, estimate);
            demands.clear();
            for &dslot in &s.downs {
                let Some(d) = self.downs.get(dslot) else {
                    continue;
                };
                let rates = self.routes.map.get(&d.track).map(|r| &r.rates);
                let video = d.kind == MediaKind::Video;
                let layered = d.layered();
                let costs = rates.map_or([0; MAX_LAYERS], |r| r.costs(d.svc()));
                let (active, ceiling) = if layered {
                    (d.seen_active, d.preferred.spatial)
                } else {
                    (u8::from(d.active()), u8::MAX)
                };
                let demand = Demand::new(video, costs, active, ceiling, d.grant);
                demands.push(if layered { demand } else { demand.unlayered() });
            }
            let outcome = bwe.allocator.allocate(now, estimate, &mut demands);
            bwe.last = outcome;
            // Repairs get at most ~100 ms of what the session was granted at once: a
            // burst of them after a loss would otherwise fill a link the media just fits.
            let rtx_burst = outcome.used / 8 / 10;
            let mut i = 0;
            for &dslot in &s.downs {
                let Some(d) = self.downs.get_mut(dslot) else {
                    continue;
                };
                d.rtx_budget.set_burst(rtx_burst);
                if let Some(demand) = demands.get(i) {
                    if d.grant != demand.granted {
                        tracing::debug!(
                            session = s.id.0,
                            down = d.id.0,
                            estimate,
                            grant = ?demand.granted,
                            "bandwidth grant"
                        );
                        d.set_grant(demand.granted);
                    }
                }
                i += 1;
            }
            let probe = (outcome.minimum, outcome.probe.max(outcome.minimum));
            let reprobe = moved(bwe.probe.0, probe.0) || moved(bwe.probe.1, probe.1);
            if reprobe {
                bwe.probe = probe;
            }
            // The pacer paces no slower than what was granted (patch 16 of the vendored
            // str0m): a grant may exceed the estimate for a while (a kept layer, a paused
            // one's grace), and a queue behind a resend must still drain.
            let repace = moved(bwe.media_rate, outcome.used);
            if repace {
                bwe.media_rate = outcome.used;
            }
            if reprobe || repace {
                let _ = s.guarded(|s| {
                    let mut bwe = s.rtc.bwe();
                    if reprobe {
                        bwe.set_bitrate(Bitrate::bps(probe.0), Bitrate::bps(probe.1));
                    }
                    if repace {
                        bwe.set_media_rate(Bitrate::bps(outcome.used));
                    }
                });
                self.touched.push(slot);
            }
        }
        self.demands = demands;
        let touched = std::mem::take(&mut self.touched);
        for &slot in &touched {
            self.after_mutation(slot);
        }
        self.touched = touched;
        self.touched.clear();
    }
}

/// Whether `new` differs from `old` by at least [`PROBE_CHANGE_PCT`] (or one is 0 and
/// the other not).
fn moved(old: u64, new: u64) -> bool {
    (old == 0) != (new == 0) || old.abs_diff(new) * 100 > old.max(1) * PROBE_CHANGE_PCT
}
