//! Layer selection for one down-track: which spatial and temporal layer of a simulcast or
//! SVC track a subscriber receives, and when it may switch (issue 12).
//!
//! The rules (DESIGN.md, "Layers of a track"):
//! - a spatial switch needs a keyframe: of the target stream for simulcast (every switch,
//!   up or down: the streams are independent), of the picture for SVC going up; SVC goes
//!   down at the next picture, since lower spatial layers never depend on higher ones;
//! - a temporal up-switch happens only at a packet of the higher layer that is a switching
//!   point (VP8 `Y`, VP9 `U`, a dependency descriptor `Switch`); a temporal down-switch at
//!   the next frame start: lower temporal layers never depend on higher ones;
//! - SVC packets above the chosen layers are dropped, and the last forwarded packet of each
//!   picture (the end of the chosen top spatial layer's frame) carries the marker bit.
//!
//! The selector only decides; the caller drops what it is told to through the
//! [`Rewriter`](super::Rewriter), which keeps sequence numbers contiguous across deliberate
//! drops, and asks the publisher for the keyframe [`LayerSelector::wants_keyframe`] names.
//! Pure: no clock, no allocation, no panics.

/// A spatial and temporal layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Layer {
    /// Spatial layer: a simulcast stream's rank (0 lowest) or an SVC spatial id.
    pub spatial: u8,
    /// Temporal layer id (0 when the codec has none).
    pub temporal: u8,
}

impl Layer {
    /// The layer (`spatial`, `temporal`).
    pub const fn new(spatial: u8, temporal: u8) -> Layer {
        Layer { spatial, temporal }
    }
}

/// How a track's layers arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMode {
    /// One RTP stream per spatial layer, each decodable alone (simulcast by rid).
    Simulcast,
    /// One RTP stream carrying every layer (VP9 SVC, AV1 with the dependency descriptor).
    Svc,
}

/// What the selector needs to know about one video packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerPacket {
    /// Its spatial layer (simulcast: its stream's rank; SVC: its spatial id).
    pub spatial: u8,
    /// Its temporal layer id.
    pub temporal: u8,
    /// First packet of a keyframe (simulcast: of its stream; SVC: of a key picture's base
    /// layer).
    pub keyframe_start: bool,
    /// First packet of a frame (SVC: of a layer frame).
    pub frame_start: bool,
    /// Last packet of a frame (SVC: of this layer frame).
    pub frame_end: bool,
    /// A temporal switching point: a decoder may start decoding this temporal layer here.
    pub switch_point: bool,
    /// From a dependency descriptor: bit `t` set if a decoder may switch up to temporal
    /// layer `t` (of this spatial layer) at this frame (its decode target's indication is
    /// `Switch`); 0 when the codec's own descriptor says it (`switch_point`). In
    /// libwebrtc's L1T3 a base layer frame switches to any layer, a T1 frame to T2 only.
    pub switch_to: u8,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerVerdict {
    /// Forward it; `set_marker`: set the RTP marker bit (SVC: the last packet forwarded of
    /// the picture), otherwise leave it as it is.
    Forward {
        /// Set the marker bit.
        set_marker: bool,
    },
    /// Drop it on purpose (not a loss: the rewriter keeps the sequence contiguous).
    Drop,
}

/// One down-track's layer state: the target the allocator (or the subscriber's preference)
/// asks for and the layer it currently receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSelector {
    mode: LayerMode,
    target: Option<Layer>,
    current: Option<Layer>,
}

impl LayerSelector {
    /// A selector that forwards nothing until a target is set and its keyframe arrives.
    pub fn new(mode: LayerMode) -> LayerSelector {
        LayerSelector {
            mode,
            target: None,
            current: None,
        }
    }

    /// How the track's layers arrive.
    pub fn mode(&self) -> LayerMode {
        self.mode
    }

    /// The layer to move to; `None` pauses the video (nothing is forwarded until a target
    /// is set again, and then from a keyframe).
    pub fn set_target(&mut self, target: Option<Layer>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Stop forwarding the current layer now; forwarding resumes at the target's keyframe
    /// (for a switch that must not wait for it: the link does not carry the current one).
    pub fn drop_current(&mut self) {
        self.current = None;
    }

    /// The target layer.
    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// The layer being forwarded (`None`: nothing yet, or paused).
    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The spatial layer a keyframe is needed from to reach the target, if one is: the
    /// caller asks the publisher for it (through its keyframe-request throttle).
    pub fn wants_keyframe(&self) -> Option<u8> {
        let target = self.target?;
        match (self.mode, self.current) {
            (_, None) => Some(target.spatial),
            (LayerMode::Simulcast, Some(c)) if c.spatial != target.spatial => Some(target.spatial),
            (LayerMode::Svc, Some(c)) if c.spatial < target.spatial => Some(target.spatial),
            _ => None,
        }
    }

    /// Decide for one packet, switching layers where the packet allows it.
    pub fn select(&mut self, p: &LayerPacket) -> LayerVerdict {
        let Some(target) = self.target else {
            return LayerVerdict::Drop;
        };
        match self.mode {
            LayerMode::Simulcast => self.select_simulcast(target, p),
            LayerMode::Svc => self.select_svc(target, p),
        }
    }

    fn select_simulcast(&mut self, target: Layer, p: &LayerPacket) -> LayerVerdict {
        // Spatial: the target stream's keyframe starts it (up, down, or from nothing).
        let on_target_stream = p.spatial == target.spatial;
        let spatial_ok = match self.current {
            Some(c) if c.spatial == p.spatial => true,
            _ if on_target_stream && p.keyframe_start => {
                // Every temporal layer after a keyframe depends on it: start at the target's.
                self.current = Some(target);
                true
            }
            _ => false,
        };
        if !spatial_ok {
            return LayerVerdict::Drop;
        }
        let temporal_ok = self.temporal(target, p, p.frame_start);
        if temporal_ok {
            LayerVerdict::Forward { set_marker: false }
        } else {
            LayerVerdict::Drop
        }
    }

    fn select_svc(&mut self, target: Layer, p: &LayerPacket) -> LayerVerdict {
        let picture_start = p.frame_start && p.spatial == 0;
        match self.current {
            None => {
                if !(p.keyframe_start && p.spatial == 0) {
                    return LayerVerdict::Drop;
                }
                self.current = Some(target);
            }
            Some(c) if target.spatial > c.spatial && p.keyframe_start && p.spatial == 0 => {
                self.current = Some(target);
            }
            Some(c) if target.spatial < c.spatial && picture_start => {
                self.current = Some(Layer::new(target.spatial, c.temporal));
            }
            Some(_) => {}
        }
        let Some(c) = self.current else {
            return LayerVerdict::Drop;
        };
        // Temporal switches at picture starts only: every layer frame of a picture has the
        // same temporal id, and a picture must not lose its upper layers half-way.
        if p.spatial > c.spatial || !self.temporal(target, p, picture_start) {
            return LayerVerdict::Drop;
        }
        // The chosen top spatial layer ends the picture for this subscriber.
        let set_marker = p.frame_end && p.spatial == c.spatial;
        LayerVerdict::Forward { set_marker }
    }

    /// Temporal switching within the current spatial layer, at a frame `boundary` (where
    /// the temporal layer may change); whether `p` passes.
    fn temporal(&mut self, target: Layer, p: &LayerPacket, boundary: bool) -> bool {
        let Some(c) = self.current.as_mut() else {
            return false;
        };
        if target.temporal < c.temporal && boundary {
            c.temporal = target.temporal;
        } else if target.temporal > c.temporal && boundary && p.switch_to != 0 {
            // The highest layer up to the target that this frame starts.
            let top = target.temporal.min(7);
            if let Some(t) = (c.temporal + 1..=top)
                .rev()
                .find(|t| p.switch_to & (1 << t) != 0)
            {
                c.temporal = t;
            }
        } else if target.temporal > c.temporal
            && boundary
            && p.temporal > c.temporal
            && p.temporal <= target.temporal
            && p.switch_point
        {
            c.temporal = p.temporal;
        }
        p.temporal <= c.temporal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_current_layer_resumes_at_the_targets_keyframe() {
        let mut s = LayerSelector::new(LayerMode::Simulcast);
        s.set_target(Some(Layer::new(2, 0)));
        assert!(matches!(s.select(&key(2)), LayerVerdict::Forward { .. }));
        s.set_target(Some(Layer::new(0, 0)));
        s.drop_current();
        assert_eq!(s.current(), None);
        assert_eq!(s.wants_keyframe(), Some(0));
        assert_eq!(
            s.select(&pkt(2, 0)),
            LayerVerdict::Drop,
            "the old stream stops at once"
        );
        assert_eq!(
            s.select(&pkt(0, 0)),
            LayerVerdict::Drop,
            "not before a keyframe"
        );
        assert!(matches!(s.select(&key(0)), LayerVerdict::Forward { .. }));
        assert_eq!(s.current(), Some(Layer::new(0, 0)));
    }

    fn pkt(spatial: u8, temporal: u8) -> LayerPacket {
        LayerPacket {
            spatial,
            temporal,
            frame_start: true,
            frame_end: true,
            ..Default::default()
        }
    }

    fn key(spatial: u8) -> LayerPacket {
        LayerPacket {
            keyframe_start: true,
            switch_point: true,
            switch_to: 0,
            ..pkt(spatial, 0)
        }
    }

    const FWD: LayerVerdict = LayerVerdict::Forward { set_marker: false };
    const FWD_END: LayerVerdict = LayerVerdict::Forward { set_marker: true };

    #[test]
    fn simulcast_starts_and_switches_only_at_the_target_streams_keyframes() {
        let mut s = LayerSelector::new(LayerMode::Simulcast);
        assert_eq!(s.select(&key(0)), LayerVerdict::Drop, "no target: paused");
        s.set_target(Some(Layer::new(1, 2)));
        assert_eq!(s.wants_keyframe(), Some(1));
        assert_eq!(
            s.select(&pkt(1, 0)),
            LayerVerdict::Drop,
            "not from a delta frame"
        );
        assert_eq!(
            s.select(&key(0)),
            LayerVerdict::Drop,
            "another stream's keyframe"
        );
        assert_eq!(s.select(&key(1)), FWD);
        assert_eq!(s.current(), Some(Layer::new(1, 2)));
        assert_eq!(s.wants_keyframe(), None);
        assert_eq!(s.select(&pkt(1, 2)), FWD);
        assert_eq!(
            s.select(&pkt(0, 0)),
            LayerVerdict::Drop,
            "the other streams are dropped"
        );
        assert_eq!(s.select(&pkt(2, 0)), LayerVerdict::Drop);

        // Up to stream 2: stream 1 keeps flowing until stream 2's keyframe.
        s.set_target(Some(Layer::new(2, 2)));
        assert_eq!(s.wants_keyframe(), Some(2));
        assert_eq!(s.select(&pkt(1, 0)), FWD);
        assert_eq!(s.select(&pkt(2, 0)), LayerVerdict::Drop);
        assert_eq!(s.select(&key(2)), FWD);
        assert_eq!(
            s.select(&pkt(1, 0)),
            LayerVerdict::Drop,
            "switched: the old stream stops"
        );
        assert_eq!(s.current().map(|c| c.spatial), Some(2));

        // Down to stream 0: a keyframe of stream 0 too.
        s.set_target(Some(Layer::new(0, 2)));
        assert_eq!(s.wants_keyframe(), Some(0));
        assert_eq!(s.select(&pkt(2, 1)), FWD, "the higher stream until then");
        assert_eq!(s.select(&key(0)), FWD);
        assert_eq!(s.select(&pkt(2, 0)), LayerVerdict::Drop);

        // Paused: nothing; resumed: from a keyframe.
        s.set_target(None);
        assert_eq!(s.select(&pkt(0, 0)), LayerVerdict::Drop);
        assert_eq!(s.current(), None);
        s.set_target(Some(Layer::new(0, 0)));
        assert_eq!(s.select(&pkt(0, 0)), LayerVerdict::Drop);
        assert_eq!(s.select(&key(0)), FWD);
    }

    #[test]
    fn dependency_descriptor_switch_indications_move_temporal_layers_up() {
        // libwebrtc's L1T3: T0 frames are switching points for every decode target, T1
        // frames for T2's, T2 frames for none.
        let frame = |t: u8, switch_to: u8| LayerPacket {
            switch_to,
            frame_start: true,
            frame_end: true,
            ..pkt(0, t)
        };
        let (t0, t1, t2) = (frame(0, 0b111), frame(1, 0b100), frame(2, 0));
        let mut s = LayerSelector::new(LayerMode::Svc);
        s.set_target(Some(Layer::new(0, 0)));
        assert_eq!(
            s.select(&LayerPacket {
                keyframe_start: true,
                ..t0
            }),
            FWD_END
        );
        assert_eq!(s.select(&t1), LayerVerdict::Drop);
        // Up to T1: not at a T1 frame (not a switching point of T1's target), at a T0.
        s.set_target(Some(Layer::new(0, 1)));
        assert_eq!(s.select(&t1), LayerVerdict::Drop);
        assert_eq!(s.select(&t0), FWD_END);
        assert_eq!(s.current(), Some(Layer::new(0, 1)));
        assert_eq!(s.select(&t1), FWD_END);
        assert_eq!(s.select(&t2), LayerVerdict::Drop);
        // Up to all of them: at the next T1 frame (T2's switching point).
        s.set_target(Some(Layer::new(0, u8::MAX)));
        assert_eq!(s.select(&t2), LayerVerdict::Drop);
        assert_eq!(s.select(&t1), FWD_END);
        assert_eq!(s.current(), Some(Layer::new(0, 2)));
        assert_eq!(s.select(&t2), FWD_END);
    }

    #[test]
    fn temporal_up_only_at_switching_points_down_at_frame_starts() {
        let mut s = LayerSelector::new(LayerMode::Simulcast);
        s.set_target(Some(Layer::new(0, 0)));
        assert_eq!(s.select(&key(0)), FWD);
        assert_eq!(s.select(&pkt(0, 1)), LayerVerdict::Drop, "above the target");
        s.set_target(Some(Layer::new(0, 2)));
        assert_eq!(
            s.select(&pkt(0, 2)),
            LayerVerdict::Drop,
            "T2, not a switching point"
        );
        let sync1 = LayerPacket {
            switch_point: true,
            switch_to: 0,
            ..pkt(0, 1)
        };
        assert_eq!(s.select(&sync1), FWD, "T1 switching point");
        assert_eq!(s.current(), Some(Layer::new(0, 1)));
        assert_eq!(s.select(&pkt(0, 2)), LayerVerdict::Drop);
        let sync2 = LayerPacket {
            switch_point: true,
            switch_to: 0,
            ..pkt(0, 2)
        };
        assert_eq!(s.select(&sync2), FWD);
        assert_eq!(s.select(&pkt(0, 2)), FWD);

        // Down: at the next frame start; a packet in the middle of a T2 frame still passes.
        s.set_target(Some(Layer::new(0, 0)));
        let middle = LayerPacket {
            frame_start: false,
            ..pkt(0, 2)
        };
        assert_eq!(s.select(&middle), FWD, "the frame in progress is finished");
        assert_eq!(s.select(&pkt(0, 2)), LayerVerdict::Drop);
        assert_eq!(s.select(&pkt(0, 1)), LayerVerdict::Drop);
        assert_eq!(s.select(&pkt(0, 0)), FWD);
        assert_eq!(s.current(), Some(Layer::new(0, 0)));
    }

    /// One L3T1 picture's packets: spatial layers 0, 1, 2, each one packet; the marker is
    /// on layer 2 only, as the sender sets it.
    fn picture(keyframe: bool) -> [LayerPacket; 3] {
        [0, 1, 2].map(|sid| LayerPacket {
            spatial: sid,
            temporal: 0,
            keyframe_start: keyframe && sid == 0,
            frame_start: true,
            frame_end: true,
            switch_point: keyframe,
            switch_to: 0,
        })
    }

    #[test]
    fn svc_drops_layers_above_the_choice_and_moves_the_marker() {
        let mut s = LayerSelector::new(LayerMode::Svc);
        s.set_target(Some(Layer::new(1, 0)));
        assert_eq!(s.wants_keyframe(), Some(1));
        for p in picture(false) {
            assert_eq!(s.select(&p), LayerVerdict::Drop, "not before a key picture");
        }
        let verdicts = picture(true).map(|p| s.select(&p));
        assert_eq!(
            verdicts,
            [
                LayerVerdict::Forward { set_marker: false },
                LayerVerdict::Forward { set_marker: true },
                LayerVerdict::Drop,
            ],
            "S0 and S1, S1 ends the picture"
        );
        assert_eq!(s.wants_keyframe(), None);

        // Down to S0 at the next picture: no keyframe needed.
        s.set_target(Some(Layer::new(0, 0)));
        assert_eq!(s.wants_keyframe(), None);
        let verdicts = picture(false).map(|p| s.select(&p));
        assert_eq!(
            verdicts,
            [
                LayerVerdict::Forward { set_marker: true },
                LayerVerdict::Drop,
                LayerVerdict::Drop
            ]
        );

        // Up to S2: only at a key picture.
        s.set_target(Some(Layer::new(2, 0)));
        assert_eq!(s.wants_keyframe(), Some(2));
        assert_eq!(
            picture(false).map(|p| s.select(&p))[1],
            LayerVerdict::Drop,
            "S1 still dropped before the key picture"
        );
        let verdicts = picture(true).map(|p| s.select(&p));
        assert_eq!(
            verdicts,
            [
                LayerVerdict::Forward { set_marker: false },
                LayerVerdict::Forward { set_marker: false },
                LayerVerdict::Forward { set_marker: true },
            ]
        );
    }

    #[test]
    fn never_forwards_outside_the_current_layer_whatever_arrives() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for mode in [LayerMode::Simulcast, LayerMode::Svc] {
            let mut s = LayerSelector::new(mode);
            for i in 0..100_000u32 {
                if i.is_multiple_of(97) {
                    let r = next();
                    s.set_target(
                        (r % 5 != 0).then(|| Layer::new((r >> 8) as u8 % 3, (r >> 16) as u8 % 3)),
                    );
                }
                let r = next();
                let p = LayerPacket {
                    spatial: r as u8 % 3,
                    temporal: (r >> 8) as u8 % 3,
                    keyframe_start: (r >> 16) % 13 == 0,
                    frame_start: (r >> 20) % 2 == 0,
                    frame_end: (r >> 21) % 2 == 0,
                    switch_point: (r >> 22) % 3 == 0,
                    switch_to: ((r >> 24) % 8) as u8,
                };
                let v = s.select(&p);
                if let LayerVerdict::Forward { .. } = v {
                    let c = s.current().expect("forwarding means a current layer");
                    assert!(p.temporal <= c.temporal, "{mode:?} {p:?} {c:?}");
                    match mode {
                        LayerMode::Simulcast => assert_eq!(p.spatial, c.spatial),
                        LayerMode::Svc => assert!(p.spatial <= c.spatial),
                    }
                }
                if s.target().is_none() {
                    assert_eq!(v, LayerVerdict::Drop);
                }
            }
        }
    }
}
