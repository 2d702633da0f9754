//! Routing state of one shard: which down-tracks (local subscribers) and which other shards
//! receive each track, the per-subscriber forwarding state, and the store of recent packets
//! of each forwarded video track that answers its subscribers' NACKs. Changed only by
//! commands on the shard thread, read by the packet path without locks.

use std::collections::HashMap;
use str0m::media::Rid;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc;

use super::ring::MediaPacket;
use super::{DownTrackId, ShardId, TrackKey};
use crate::forward::{
    spatial_for, Grant, KeyframeGuard, KeyframeThrottle, Layer, LayerMode, LayerRates,
    LayerSelector, Rewriter, RewriterConfig, RtxBudget, RtxStore, GATED_RETRY_INTERVAL,
    RTX_STORE_CAPACITY, RTX_STORE_WINDOW,
};

/// Payload-type translation table: publisher PT → subscriber PT (`NO_PT` if none).
pub(crate) type PtMap = [u8; 128];
pub(crate) const NO_PT: u8 = 0xff;

/// One forwarded track on a subscribe session.
pub(crate) struct DownTrack {
    pub(crate) id: DownTrackId,
    /// Slot of the subscribe session in the shard's session slab.
    pub(crate) session: usize,
    pub(crate) track: TrackKey,
    pub(crate) kind: MediaKind,
    pub(crate) mid: Mid,
    pub(crate) spec_params: Vec<str0m::format::PayloadParams>,
    /// Set once the answer is applied and the send stream exists.
    pub(crate) ssrc: Option<Ssrc>,
    pub(crate) pt_map: PtMap,
    pub(crate) rewriter: Rewriter,
    /// Repeated keyframe requests while the rewriter waits for a keyframe.
    pub(crate) keyframe_retry: KeyframeThrottle,
    /// Retransmissions this subscriber may still get (its NACKs are answered within it).
    pub(crate) rtx_budget: RtxBudget,
    /// Which layer of a simulcast track it gets ([`crate::forward::layer`]).
    pub(crate) selector: LayerSelector,
    /// The subscriber's ceiling (`set_preferred_layer`); `u8::MAX`: no limit.
    pub(crate) preferred: Layer,
    /// The encodings flowing (bit per rank) when the target was last set; 0 until the
    /// first packet of a simulcast track.
    pub(crate) seen_active: u8,
    /// What the API was last told: current layer and flowing encodings.
    pub(crate) reported: (Option<Layer>, u8),
    /// What its transport's bandwidth allocator grants it ([`crate::forward::allocator`]).
    pub(crate) grant: Grant,
    /// A recording transport's track: sent as plain RTP, not through a str0m session.
    pub(crate) plain: Option<Box<crate::engine::core::PlainOut>>,
    /// A relay's down-track ([`DownTrackSpec::relay`](crate::engine::command::DownTrackSpec)):
    /// never capped by the bandwidth allocator.
    pub(crate) relay: bool,
    /// A relay of a simulcast track: the rank of the one encoding this down-track
    /// forwards, and the rid of its send stream (the m-line's other encodings are its
    /// `companions`).
    pub(crate) pin: Option<(u8, Rid)>,
    /// The down-tracks of the same m-line forwarding the other encodings (a relay of a
    /// simulcast track): removed with this one.
    pub(crate) companions: Vec<DownTrackId>,
}

impl DownTrack {
    pub(crate) fn new(
        id: DownTrackId,
        session: usize,
        track: TrackKey,
        kind: MediaKind,
        mid: Mid,
        spec_params: Vec<str0m::format::PayloadParams>,
    ) -> Self {
        let clock_rate = spec_params
            .first()
            .map(|p| p.spec().clock_rate.get())
            .unwrap_or(if kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            });
        DownTrack {
            id,
            session,
            track,
            kind,
            mid,
            spec_params,
            ssrc: None,
            pt_map: [NO_PT; 128],
            rewriter: Rewriter::new(RewriterConfig {
                video: kind == MediaKind::Video,
                clock_rate,
                initial_seq: rand::random::<u16>() & 0x7fff,
                initial_ts: rand::random(),
            }),
            keyframe_retry: KeyframeThrottle::new(GATED_RETRY_INTERVAL),
            rtx_budget: RtxBudget::default(),
            selector: LayerSelector::new(LayerMode::Simulcast),
            preferred: Layer::new(u8::MAX, u8::MAX),
            seen_active: 0,
            reported: (None, 0),
            grant: Grant::UNLIMITED,
            plain: None,
            relay: false,
            pin: None,
            companions: Vec::new(),
        }
    }

    /// The rid of its send stream (a relay of one simulcast encoding), else none.
    pub(crate) fn rid(&self) -> Option<Rid> {
        self.pin.map(|(_, rid)| rid)
    }

    /// Forwards layers of a simulcast or SVC track (it has seen one's packet).
    pub(crate) fn layered(&self) -> bool {
        self.seen_active != 0
    }

    /// Its track's layers are SVC layers of one stream (else simulcast encodings).
    pub(crate) fn svc(&self) -> bool {
        self.selector.mode() == LayerMode::Svc
    }

    /// Select SVC layers (or simulcast encodings): a new selector if the mode changes.
    pub(crate) fn set_svc(&mut self, svc: bool) {
        if svc != self.svc() {
            let mode = if svc {
                LayerMode::Svc
            } else {
                LayerMode::Simulcast
            };
            self.selector = LayerSelector::new(mode);
        }
    }

    /// A new grant from the bandwidth allocator. A track without layers that was paused
    /// resumes at its next keyframe. A simulcast track granted less than the encoding it
    /// receives stops receiving it at once and resumes at the lower one's keyframe: the
    /// link does not carry it, and what it keeps sending meanwhile only delays that
    /// keyframe and the audio (with Chromium behind 300 kbit/s the switch down took 4–7 s
    /// before, 1.6–6 s since, most of it the estimator's reaction).
    pub(crate) fn set_grant(&mut self, grant: Grant) {
        if grant == self.grant || self.relay {
            return;
        }
        let resumed = self.grant == Grant::Paused;
        self.grant = grant;
        if self.layered() {
            self.retarget();
            let above = match (self.selector.current(), self.selector.target()) {
                (Some(c), Some(t)) => c.spatial > t.spatial,
                _ => false,
            };
            if above && !self.svc() {
                self.selector.drop_current();
            }
        } else if resumed && self.kind == MediaKind::Video {
            self.rewriter.request_keyframe_gate();
        }
    }

    /// Video paused by the bandwidth allocator.
    pub(crate) fn paused(&self) -> bool {
        self.grant == Grant::Paused
    }

    /// Set the selector's target from the ceiling and the encodings flowing.
    pub(crate) fn retarget(&mut self) {
        if !self.layered() {
            return;
        }
        let ceiling = match self.grant {
            Grant::UpTo(r) => Some(self.preferred.spatial.min(r)),
            Grant::Paused => None,
        };
        let spatial = ceiling.and_then(|c| spatial_for(c, self.seen_active));
        let target = spatial.map(|s| Layer::new(s, self.preferred.temporal));
        if target != self.selector.target() {
            self.selector.set_target(target);
        }
    }

    /// The rank of the encoding a keyframe is wanted from: the one being switched to, the
    /// one being forwarded, or (before a simulcast packet was seen) the ceiling, which
    /// the publisher side clamps to what flows.
    pub(crate) fn keyframe_rank(&self) -> u8 {
        if let Some((rank, _)) = self.pin {
            return rank;
        }
        if !self.layered() {
            return self.preferred.spatial;
        }
        self.selector
            .wants_keyframe()
            .or(self.selector.current().map(|c| c.spatial))
            .or(self.selector.target().map(|t| t.spatial))
            .unwrap_or(0)
    }

    pub(crate) fn active(&self) -> bool {
        self.ssrc.is_some()
    }
}

/// Where packets of one track go from this shard.
#[derive(Default)]
pub(crate) struct Route {
    /// Down-track slots on this shard.
    pub(crate) local: Vec<usize>,
    /// Other shards with subscribers, with their subscriber counts (publisher's shard only).
    pub(crate) remote: Vec<(ShardId, u32)>,
    /// Recent packets, for the NACKs of this shard's video subscribers (`None` while there
    /// are none).
    pub(crate) store: Option<RtxStore<MediaPacket>>,
    /// Whether its packets belong to a keyframe (never shed).
    pub(crate) keyframe: KeyframeGuard,
    /// Where in `local` overload shedding pauses the next down-track (they take turns).
    pub(crate) shed_cursor: usize,
    /// The bitrate of each layer as it arrives, for the bandwidth allocators.
    pub(crate) rates: LayerRates,
}

impl Route {
    pub(crate) fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// A video track with down-tracks on this shard (the ones that have a store): its
    /// fan-out here may be shed under overload.
    pub(crate) fn video(&self) -> bool {
        self.store.is_some()
    }
}

/// All routes of a shard.
#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) map: HashMap<TrackKey, Route>,
}

impl Routes {
    /// A local down-track of `track`; video ones get the track a retransmission store.
    pub(crate) fn add_local(&mut self, track: TrackKey, down_slot: usize, kind: MediaKind) {
        let r = self.map.entry(track).or_default();
        if !r.local.contains(&down_slot) {
            r.local.push(down_slot);
        }
        if kind == MediaKind::Video && r.store.is_none() {
            r.store = Some(RtxStore::new(RTX_STORE_CAPACITY, RTX_STORE_WINDOW));
        }
    }

    pub(crate) fn remove_local(&mut self, track: TrackKey, down_slot: usize) {
        if let Some(r) = self.map.get_mut(&track) {
            r.local.retain(|s| *s != down_slot);
            if r.local.is_empty() {
                r.store = None;
            }
            if r.is_empty() {
                self.map.remove(&track);
            }
        }
    }

    pub(crate) fn add_remote(&mut self, track: TrackKey, dest: ShardId) {
        let r = self.map.entry(track).or_default();
        match r.remote.iter_mut().find(|(s, _)| *s == dest) {
            Some((_, n)) => *n += 1,
            None => r.remote.push((dest, 1)),
        }
    }

    pub(crate) fn remove_remote(&mut self, track: TrackKey, dest: ShardId) {
        if let Some(r) = self.map.get_mut(&track) {
            if let Some(pos) = r.remote.iter().position(|(s, _)| *s == dest) {
                r.remote[pos].1 -= 1;
                if r.remote[pos].1 == 0 {
                    r.remote.swap_remove(pos);
                }
            }
            if r.is_empty() {
                self.map.remove(&track);
            }
        }
    }
}
