//! The dependency descriptor RTP header extension (AV1 RTP payload format, appendix A;
//! also sent with VP8/VP9/H.264 by libwebrtc): which frame a packet belongs to, its spatial
//! and temporal layer, and which decode targets need it. An SFU selecting SVC layers reads it
//! on every packet of a track that carries it.
//!
//! Most packets carry only the three mandatory bytes and a template id; the template
//! dependency structure arrives now and then (with keyframes) and gives each template its
//! layer ids and decode target indications. [`parse`] reads one extension against the track's
//! last [`Structure`], replacing it when the packet carries a new one. Zero-copy, no
//! allocation (the structure is a fixed-size value of about 1 KB kept per published track),
//! bounded loops, and an error, never a panic, for bad input.

/// Most templates a structure can define (the template id has 6 bits).
pub const MAX_TEMPLATES: usize = 64;
/// Most decode targets (`dt_cnt_minus_one` has 5 bits).
pub const MAX_DECODE_TARGETS: usize = 32;
/// Most spatial layers accepted (libwebrtc's limit as well; the syntax allows more).
pub const MAX_SPATIAL_LAYERS: usize = 4;
/// Most temporal layers accepted (libwebrtc's limit as well).
pub const MAX_TEMPORAL_LAYERS: usize = 8;

/// Why an extension could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdError {
    /// Fewer bytes than its fields need.
    Truncated,
    /// The packet refers to a template structure this track has not received.
    NoStructure,
    /// The template id is not one of the structure's templates.
    UnknownTemplate,
    /// More spatial or temporal layers than [`MAX_SPATIAL_LAYERS`] /
    /// [`MAX_TEMPORAL_LAYERS`], or more templates than [`MAX_TEMPLATES`].
    TooManyLayers,
}

impl std::fmt::Display for DdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DdError::Truncated => "dependency descriptor truncated",
            DdError::NoStructure => "dependency descriptor before any template structure",
            DdError::UnknownTemplate => "dependency descriptor names an unknown template",
            DdError::TooManyLayers => "dependency descriptor with too many layers or templates",
        })
    }
}

impl std::error::Error for DdError {}

/// A decode target indication (table A.1): how a frame matters to a decode target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dti {
    /// Not needed by the decode target.
    NotPresent,
    /// Needed only if present: may be dropped.
    Discardable,
    /// Needed; the decode target may start (switch to it) at this frame.
    Switch,
    /// Needed.
    Required,
}

impl Dti {
    fn from_bits(v: u32) -> Dti {
        match v & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// The template dependency structure of a track: each template's layer ids and decode
/// target indications, each decode target's layers, and the render resolution per spatial
/// layer when the sender gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    template_id_offset: u8,
    templates: u8,
    decode_targets: u8,
    chains: u8,
    spatial: [u8; MAX_TEMPLATES],
    temporal: [u8; MAX_TEMPLATES],
    /// Two bits per decode target.
    dtis: [u64; MAX_TEMPLATES],
    dt_spatial: [u8; MAX_DECODE_TARGETS],
    dt_temporal: [u8; MAX_DECODE_TARGETS],
    /// Width and height per spatial layer, if the structure had them.
    resolutions: Option<[(u16, u16); MAX_SPATIAL_LAYERS]>,
    max_spatial: u8,
    max_temporal: u8,
}

impl Structure {
    /// Number of decode targets.
    pub fn decode_targets(&self) -> usize {
        usize::from(self.decode_targets)
    }

    /// Number of templates.
    pub fn templates(&self) -> usize {
        usize::from(self.templates)
    }

    /// Highest spatial and temporal layer ids of the templates.
    pub fn max_layers(&self) -> (u8, u8) {
        (self.max_spatial, self.max_temporal)
    }

    /// The spatial and temporal layer a decode target decodes up to.
    pub fn decode_target_layers(&self, dt: usize) -> Option<(u8, u8)> {
        (dt < self.decode_targets()).then(|| (self.dt_spatial[dt], self.dt_temporal[dt]))
    }

    /// Render width and height of a spatial layer, if the structure gave resolutions.
    pub fn resolution(&self, spatial: u8) -> Option<(u16, u16)> {
        let r = self.resolutions?;
        (spatial <= self.max_spatial)
            .then(|| r.get(usize::from(spatial)).copied())
            .flatten()
    }

    /// Number of chains (0 when the sender uses none).
    pub fn chains(&self) -> usize {
        usize::from(self.chains)
    }
}

/// What one packet's extension says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The packet is the first of its frame.
    pub start_of_frame: bool,
    /// The packet is the last of its frame.
    pub end_of_frame: bool,
    /// The frame number (wraps at 2^16).
    pub frame_number: u16,
    /// The frame's spatial layer id.
    pub spatial: u8,
    /// The frame's temporal layer id.
    pub temporal: u8,
    /// Decode target indications, two bits per decode target (see [`FrameInfo::dti`]).
    dtis: u64,
    /// This packet carried a new template structure (a keyframe's, normally).
    pub new_structure: bool,
    /// Decode targets the sender currently produces (bit `i`: decode target `i`), if the
    /// packet said so; `new_structure` resets it to all of the structure's targets.
    pub active_decode_targets: Option<u32>,
}

impl FrameInfo {
    /// How this frame matters to decode target `dt` ([`Dti::NotPresent`] beyond the count).
    pub fn dti(&self, dt: usize) -> Dti {
        if dt >= MAX_DECODE_TARGETS {
            return Dti::NotPresent;
        }
        Dti::from_bits((self.dtis >> (2 * dt)) as u32)
    }
}

/// Reads one dependency descriptor extension (`data`: the extension's bytes) of a track
/// whose last template structure is `structure`. A packet carrying a new structure replaces
/// `structure` (only when the whole extension is valid); others are read against it.
pub fn parse(data: &[u8], structure: &mut Option<Structure>) -> Result<FrameInfo, DdError> {
    let mut r = Bits::new(data);
    let start_of_frame = r.bit()?;
    let end_of_frame = r.bit()?;
    let template_id = r.bits(6)? as u8;
    let frame_number = r.bits(16)? as u16;

    let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
    let mut new_structure = None;
    let mut active = None;
    if data.len() > 3 {
        let structure_present = r.bit()?;
        let active_present = r.bit()?;
        custom_dtis = r.bit()?;
        custom_fdiffs = r.bit()?;
        custom_chains = r.bit()?;
        if structure_present {
            let s = read_structure(&mut r)?;
            active = Some(all_targets(s.decode_targets));
            new_structure = Some(s);
        }
        if active_present {
            let dts = new_structure
                .as_ref()
                .or(structure.as_ref())
                .ok_or(DdError::NoStructure)?
                .decode_targets;
            active = Some(r.bits(u32::from(dts))?);
        }
    }

    let s = new_structure
        .as_ref()
        .or(structure.as_ref())
        .ok_or(DdError::NoStructure)?;
    let index = (usize::from(template_id) + MAX_TEMPLATES - usize::from(s.template_id_offset))
        % MAX_TEMPLATES;
    if index >= s.templates() {
        return Err(DdError::UnknownTemplate);
    }
    let mut dtis = s.dtis[index];
    if custom_dtis {
        dtis = 0;
        for dt in 0..s.decode_targets() {
            dtis |= u64::from(r.bits(2)?) << (2 * dt);
        }
    }
    if custom_fdiffs {
        // Frame dependencies: not needed to select layers, only read past.
        let mut size = r.bits(2)?;
        while size != 0 {
            r.bits(4 * size)?;
            size = r.bits(2)?;
        }
    }
    if custom_chains {
        for _ in 0..s.chains() {
            r.bits(8)?;
        }
    }
    let info = FrameInfo {
        start_of_frame,
        end_of_frame,
        frame_number,
        spatial: s.spatial[index],
        temporal: s.temporal[index],
        dtis,
        new_structure: new_structure.is_some(),
        active_decode_targets: active,
    };
    if let Some(s) = new_structure {
        *structure = Some(s);
    }
    Ok(info)
}

fn all_targets(n: u8) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

fn read_structure(r: &mut Bits<'_>) -> Result<Structure, DdError> {
    let mut s = Structure {
        template_id_offset: r.bits(6)? as u8,
        templates: 0,
        decode_targets: r.bits(5)? as u8 + 1,
        chains: 0,
        spatial: [0; MAX_TEMPLATES],
        temporal: [0; MAX_TEMPLATES],
        dtis: [0; MAX_TEMPLATES],
        dt_spatial: [0; MAX_DECODE_TARGETS],
        dt_temporal: [0; MAX_DECODE_TARGETS],
        resolutions: None,
        max_spatial: 0,
        max_temporal: 0,
    };
    // Template layers.
    let (mut spatial, mut temporal) = (0u8, 0u8);
    loop {
        let i = usize::from(s.templates);
        if i >= MAX_TEMPLATES {
            return Err(DdError::TooManyLayers);
        }
        s.spatial[i] = spatial;
        s.temporal[i] = temporal;
        s.templates += 1;
        match r.bits(2)? {
            0 => {}
            1 => {
                temporal += 1;
                if usize::from(temporal) >= MAX_TEMPORAL_LAYERS {
                    return Err(DdError::TooManyLayers);
                }
                s.max_temporal = s.max_temporal.max(temporal);
            }
            2 => {
                temporal = 0;
                spatial += 1;
                if usize::from(spatial) >= MAX_SPATIAL_LAYERS {
                    return Err(DdError::TooManyLayers);
                }
            }
            _ => break,
        }
    }
    s.max_spatial = spatial;
    let (templates, dts) = (s.templates(), s.decode_targets());
    // Template decode target indications.
    for t in 0..templates {
        for dt in 0..dts {
            s.dtis[t] |= u64::from(r.bits(2)?) << (2 * dt);
        }
    }
    // Template frame dependencies: read past (at most 15 bits of input per fdiff, so the
    // loop ends with the input).
    for _ in 0..templates {
        while r.bit()? {
            r.bits(4)?;
        }
    }
    // Chains.
    let chains = r.ns(u32::from(s.decode_targets) + 1)?;
    s.chains = chains as u8;
    if chains > 0 {
        for _ in 0..dts {
            r.ns(chains)?;
        }
        for _ in 0..templates * chains as usize {
            r.bits(4)?;
        }
    }
    // Decode target layers: the highest layers of the templates it needs.
    for dt in 0..dts {
        for t in 0..templates {
            if (s.dtis[t] >> (2 * dt)) & 3 != 0 {
                s.dt_spatial[dt] = s.dt_spatial[dt].max(s.spatial[t]);
                s.dt_temporal[dt] = s.dt_temporal[dt].max(s.temporal[t]);
            }
        }
    }
    if r.bit()? {
        let mut res = [(0u16, 0u16); MAX_SPATIAL_LAYERS];
        for entry in res.iter_mut().take(usize::from(s.max_spatial) + 1) {
            let w = r.bits(16)? as u16;
            let h = r.bits(16)? as u16;
            *entry = (w.wrapping_add(1), h.wrapping_add(1));
        }
        s.resolutions = Some(res);
    }
    Ok(s)
}

/// A big-endian bit reader over a byte slice.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<bool, DdError> {
        let byte = *self.data.get(self.pos / 8).ok_or(DdError::Truncated)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// `n` ≤ 32 bits.
    fn bits(&mut self, n: u32) -> Result<u32, DdError> {
        debug_assert!(n <= 32);
        if self.pos + n as usize > self.data.len() * 8 {
            return Err(DdError::Truncated);
        }
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Ok(v)
    }

    /// A non-symmetric unsigned value in `0..n` (the AV1 `ns(n)`).
    fn ns(&mut self, n: u32) -> Result<u32, DdError> {
        let w = 32 - n.leading_zeros(); // bits to write n
        if w == 0 {
            return Ok(0);
        }
        let m = (1u32 << w) - n;
        let v = self.bits(w - 1)?;
        if v < m {
            return Ok(v);
        }
        let extra = u32::from(self.bit()?);
        Ok((v << 1) - m + extra)
    }
}

/// Writing dependency descriptors: for unit tests and the test peers (feature `testing`),
/// which send libwebrtc's L1T3 with their video.
#[cfg(any(test, feature = "testing"))]
pub mod write {
    /// Writes what [`parse`](super::parse) reads, bit by bit.
    #[derive(Default)]
    pub struct Writer {
        /// What was written (the last byte zero-padded).
        pub bytes: Vec<u8>,
        bits: usize,
    }

    impl Writer {
        /// Append the low `n` bits of `v`, most significant first.
        pub fn put(&mut self, n: u32, v: u32) {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((v >> i) & 1) as u8;
                let last = self.bytes.len() - 1;
                self.bytes[last] |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
        }

        /// Append `v` as a non-symmetric unsigned value of alphabet size `n` (§ A.8.1).
        pub fn ns(&mut self, n: u32, v: u32) {
            let w = 32 - n.leading_zeros();
            let m = (1u32 << w) - n;
            if v < m {
                self.put(w - 1, v);
            } else {
                self.put(w, v + m);
            }
        }
    }

    /// L1T3 as libwebrtc sends it: templates (S0T0 key, S0T0, S0T1, S0T2 ×2), three decode
    /// targets (T0, T0–T1, T0–T2), one chain, a 1280×720 resolution: the extension of frame
    /// `frame_number` using `template` (0: the keyframe's; 1: T0; 2: T1; 3 and 4: T2), with the
    /// structure when `with_structure`.
    pub fn l1t3(frame_number: u16, template: u32, with_structure: bool) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, 1); // start of frame
        w.put(1, 1); // end of frame
        w.put(6, template);
        w.put(16, u32::from(frame_number));
        if !with_structure {
            return w.bytes;
        }
        w.put(1, 1); // structure present
        w.put(1, 0); // active decode targets present
        w.put(3, 0); // no custom dtis, fdiffs, chains
        w.put(6, 0); // template id offset
        w.put(5, 2); // 3 decode targets
                     // Layers: T0, T0 (same), T1 (next temporal), T2 (next temporal), T2 (same), end.
        for idc in [0, 1, 1, 0, 3] {
            w.put(2, idc);
        }
        // DTIs (Switch 2, Required 3, Discardable 1, not present 0) per template, dt 0..3.
        let dtis = [[2, 2, 2], [3, 3, 3], [0, 3, 3], [0, 0, 1], [0, 0, 1]];
        for t in dtis {
            for d in t {
                w.put(2, d);
            }
        }
        // Fdiffs: none, [4], [2], [1], [1].
        for fd in [&[][..], &[4], &[2], &[1], &[1]] {
            for f in fd {
                w.put(1, 1);
                w.put(4, f - 1);
            }
            w.put(1, 0);
        }
        w.ns(4, 1); // one chain
        for _ in 0..3 {
            w.ns(1, 0); // each decode target protected by chain 0
        }
        for fdiff in [0, 4, 2, 1, 1] {
            w.put(4, fdiff);
        }
        w.put(1, 1); // resolutions
        w.put(16, 1279);
        w.put(16, 719);
        w.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::write::{l1t3, Writer};

    #[test]
    fn mandatory_fields_alone_are_read_against_the_last_structure() {
        let mut structure = None;
        assert_eq!(
            parse(&[0b1100_0001, 0x00, 0x05], &mut structure),
            Err(DdError::NoStructure)
        );
        let key = parse(&l1t3(7, 0, true), &mut structure).expect("keyframe with structure");
        assert!(key.new_structure && key.start_of_frame && key.end_of_frame);
        assert_eq!((key.frame_number, key.spatial, key.temporal), (7, 0, 0));
        assert_eq!(key.active_decode_targets, Some(0b111));
        assert_eq!(key.dti(0), Dti::Switch);
        let s = structure.expect("kept");
        assert_eq!((s.templates(), s.decode_targets(), s.chains()), (5, 3, 1));
        assert_eq!(s.max_layers(), (0, 2));
        assert_eq!(s.decode_target_layers(0), Some((0, 0)));
        assert_eq!(s.decode_target_layers(1), Some((0, 1)));
        assert_eq!(s.decode_target_layers(2), Some((0, 2)));
        assert_eq!(s.decode_target_layers(3), None);
        assert_eq!(s.resolution(0), Some((1280, 720)));
        assert_eq!(s.resolution(1), None);

        // Three bytes: template 3 (T2), frame 8.
        let f = parse(&[0b0100_0011, 0x00, 0x08], &mut structure).expect("delta frame");
        assert!(!f.start_of_frame && f.end_of_frame && !f.new_structure);
        assert_eq!((f.frame_number, f.spatial, f.temporal), (8, 0, 2));
        assert_eq!(
            (f.dti(0), f.dti(1), f.dti(2)),
            (Dti::NotPresent, Dti::NotPresent, Dti::Discardable)
        );
        assert_eq!(f.active_decode_targets, None);
        assert_eq!(
            parse(&[0b1100_0101, 0x00, 0x09], &mut structure),
            Err(DdError::UnknownTemplate),
            "template 5 of 5"
        );
    }

    #[test]
    fn custom_dtis_and_active_targets() {
        let mut structure = None;
        parse(&l1t3(1, 0, true), &mut structure).unwrap();
        let mut w = Writer::default();
        w.put(2, 0b10);
        w.put(6, 2); // template 2: T1
        w.put(16, 2);
        w.put(1, 0); // no structure
        w.put(1, 1); // active decode targets
        w.put(1, 1); // custom dtis
        w.put(1, 1); // custom fdiffs
        w.put(1, 0);
        w.put(3, 0b011); // targets 0 and 1 active
        for d in [0, 2, 3] {
            w.put(2, d);
        }
        w.put(2, 1); // one fdiff of 4 bits
        w.put(4, 1);
        w.put(2, 0);
        let f = parse(&w.bytes, &mut structure).expect("custom fields");
        assert_eq!(f.active_decode_targets, Some(0b011));
        assert_eq!(
            (f.dti(0), f.dti(1), f.dti(2)),
            (Dti::NotPresent, Dti::Switch, Dti::Required)
        );
        assert_eq!(f.temporal, 1);
    }

    #[test]
    fn a_bad_structure_leaves_the_old_one() {
        let mut structure = None;
        parse(&l1t3(1, 0, true), &mut structure).unwrap();
        let before = structure;
        let good = l1t3(2, 0, true);
        for len in 4..good.len() {
            assert_eq!(
                parse(&good[..len], &mut structure),
                Err(DdError::Truncated),
                "cut at {len}"
            );
            assert_eq!(structure, before);
        }
        // Five spatial layers.
        let mut w = Writer::default();
        w.put(24, 0xC0_0000);
        w.put(5, 0b10000);
        w.put(6, 0);
        w.put(5, 0);
        for _ in 0..5 {
            w.put(2, 2);
        }
        w.put(2, 3);
        w.put(32, 0);
        assert_eq!(parse(&w.bytes, &mut structure), Err(DdError::TooManyLayers));
        assert_eq!(structure, before);
    }

    #[test]
    fn never_panics_on_random_bytes() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut structure = None;
        for _ in 0..200_000 {
            let len = (next() % 48) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = parse(&data, &mut structure);
            if let Some(s) = &structure {
                assert!(s.templates() <= MAX_TEMPLATES && s.decode_targets() <= MAX_DECODE_TARGETS);
                let (sp, tp) = s.max_layers();
                assert!(
                    usize::from(sp) < MAX_SPATIAL_LAYERS && usize::from(tp) < MAX_TEMPORAL_LAYERS
                );
            }
        }
    }
}
