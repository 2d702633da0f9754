//! Checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Each `pub fn` takes one raw input and panics if an invariant
//! of the code under test is violated; it must never panic otherwise.
//!
//! Only the public API of `rheomesh` (plus std, serde_json and tokio) is used here, so the
//! same file compiles inside the fuzz crate and as part of an integration test of the main
//! crate.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rheomesh::forward::{
    Decision, InPacket, RewriteStats, Rewriter, RewriterConfig, INITIAL_SEQ_MASK, MAX_FORWARD_JUMP,
    MAX_TS_ADVANCE, REORDER_WINDOW,
};
use rheomesh::wire::codec::{inspect, is_keyframe, CodecKind, InspectError};
use rheomesh::wire::{
    classify, stun_binding_request, stun_binding_response, stun_local_ufrag, BindingError,
    DatagramKind, StunError,
};
use rheomesh::SessionDescription;

/// The example server's signaling messages, compiled from its own source.
#[allow(dead_code, clippy::all)]
#[path = "../examples/media_server/protocol.rs"]
mod protocol;

// ---------------------------------------------------------------------------------------
// 1. datagram: rheomesh::wire (classify, stun, stun_client)
// ---------------------------------------------------------------------------------------

/// Independent re-statement of RFC 7983 §7 / RFC 5761 §4 first-byte demultiplexing, as
/// documented on [`classify`].
fn reference_classify(buf: &[u8]) -> DatagramKind {
    if buf.len() < 2 {
        return DatagramKind::Unknown;
    }
    match buf[0] {
        0..=3 if buf.len() >= 20 && buf[4..8] == [0x21, 0x12, 0xa4, 0x42] => DatagramKind::Stun,
        20..=63 => DatagramKind::Dtls,
        128..=191 => {
            let pt = buf[1] & 0x7f;
            if (64..=95).contains(&pt) {
                if buf.len() >= 4 {
                    DatagramKind::Rtcp
                } else {
                    DatagramKind::Unknown
                }
            } else if buf.len() >= 12 {
                DatagramKind::Rtp
            } else {
                DatagramKind::Unknown
            }
        }
        _ => DatagramKind::Unknown,
    }
}

/// `classify`, `stun_local_ufrag` and `stun_binding_response` on arbitrary bytes.
pub fn datagram(data: &[u8]) {
    let kind = classify(data);
    assert_eq!(
        kind,
        reference_classify(data),
        "classify disagrees with RFC 7983"
    );

    match stun_local_ufrag(data) {
        Ok(ufrag) => {
            assert!(!ufrag.is_empty(), "empty ufrag");
            assert!(!ufrag.contains(&b':'), "ufrag contains ':'");
            assert!(ufrag.len() <= 513, "ufrag longer than USERNAME may be");
            // A subslice of the input, inside the declared message, followed by ':'.
            let base = data.as_ptr() as usize;
            let start = ufrag.as_ptr() as usize;
            assert!(start >= base, "ufrag not inside the input");
            let off = start - base;
            let end = off + ufrag.len();
            assert!(end <= data.len(), "ufrag runs past the input");
            let msg_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
            assert!(off >= 24, "ufrag inside the header");
            assert!(end < 20 + msg_len, "ufrag outside the declared message");
            assert_eq!(data[end], b':', "ufrag not followed by ':'");
            assert_eq!(kind, DatagramKind::Stun, "ufrag from a non-STUN datagram");
            assert_eq!(&data[..2], &[0x00, 0x01], "ufrag from a non-request");
        }
        Err(e) => {
            if data.is_empty() {
                assert_eq!(e, StunError::Truncated);
            }
            if data.first().is_some_and(|b| *b > 3) {
                assert_eq!(e, StunError::NotStun);
            }
        }
    }

    match stun_binding_response(data) {
        Ok((txid, _addr)) => {
            assert_eq!(
                kind,
                DatagramKind::Stun,
                "response from a non-STUN datagram"
            );
            assert_eq!(&txid[..], &data[8..20], "transaction id not copied");
            assert_eq!(&data[..2], &[0x01, 0x01], "not a success response");
        }
        Err(e) => {
            if data.len() < 20 {
                assert_eq!(e, BindingError::Truncated);
            } else if data[0] > 3 {
                assert_eq!(e, BindingError::NotStun);
            }
        }
    }

    // A request built from the input's first 12 bytes round-trips through the parsers.
    let mut txid = [0u8; 12];
    for (t, d) in txid.iter_mut().zip(data) {
        *t = *d;
    }
    let req = stun_binding_request(txid);
    assert_eq!(classify(&req), DatagramKind::Stun);
    assert_eq!(stun_local_ufrag(&req), Err(StunError::NoUsername));
    assert_eq!(
        stun_binding_response(&req),
        Err(BindingError::NotBindingSuccess)
    );
}

// ---------------------------------------------------------------------------------------
// 2. rtp_payload: rheomesh::wire::codec
// ---------------------------------------------------------------------------------------

/// The codec a `rtp_payload` input's first byte selects.
pub fn codec_for(b: u8) -> CodecKind {
    match b % 6 {
        0 => CodecKind::Opus,
        1 => CodecKind::Vp8,
        2 => CodecKind::Vp9,
        3 => CodecKind::H264,
        4 => CodecKind::Av1,
        _ => CodecKind::Other,
    }
}

/// First byte picks the codec, the rest is the payload.
pub fn rtp_payload(data: &[u8]) {
    let Some((&first, payload)) = data.split_first() else {
        return;
    };
    let kind = codec_for(first);
    let res = inspect(kind, payload);
    let key = is_keyframe(kind, payload);
    if payload.is_empty() {
        assert_eq!(res, Err(InspectError::Empty));
    } else {
        assert_ne!(res, Err(InspectError::Empty));
    }
    match kind {
        CodecKind::Opus | CodecKind::Other => {
            assert!(!key, "audio/opaque keyframe");
            if !payload.is_empty() {
                assert_eq!(res, Ok(Default::default()));
            }
        }
        _ => {
            assert_eq!(
                key,
                res.map(|i| i.keyframe).unwrap_or(false),
                "is_keyframe disagrees with inspect"
            );
        }
    }
    if let Ok(info) = res {
        if info.keyframe {
            assert!(info.start_of_frame, "keyframe packet that starts no frame");
        }
        if let Some(p) = info.picture_id {
            assert!(p <= 0x7fff, "picture id wider than 15 bits");
        }
        match kind {
            CodecKind::Vp8 => {
                assert!(info.temporal_id.is_none_or(|t| t < 4));
                assert!(info.spatial_id.is_none());
            }
            CodecKind::Vp9 => {
                assert!(info.temporal_id.is_none_or(|t| t < 8));
                assert!(info.spatial_id.is_none_or(|s| s < 8));
                assert_eq!(info.temporal_id.is_some(), info.spatial_id.is_some());
            }
            _ => {
                assert!(info.temporal_id.is_none() && info.spatial_id.is_none());
                assert!(info.picture_id.is_none());
            }
        }
    }
    // Codec names from untrusted SDP go through from_mime.
    if let Ok(s) = std::str::from_utf8(payload) {
        let _ = CodecKind::from_mime(s);
    }
}

// ---------------------------------------------------------------------------------------
// 3. rewrite: rheomesh::forward::Rewriter
// ---------------------------------------------------------------------------------------

/// Little-endian byte reader that yields zeros once the input is exhausted.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn done(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

/// Jump sizes around the rewriter's thresholds and the 16/32/64-bit wraps.
const JUMPS: [u64; 16] = [
    REORDER_WINDOW - 1,
    REORDER_WINDOW,
    REORDER_WINDOW + 1,
    MAX_FORWARD_JUMP - 1,
    MAX_FORWARD_JUMP,
    MAX_FORWARD_JUMP + 1,
    64,
    65,
    100,
    0x8000,
    0x1_0000,
    0x1_0001,
    1 << 31,
    1 << 32,
    1 << 63,
    u64::MAX,
];

/// Clock rates, including degenerate ones.
const CLOCK_RATES: [u32; 8] = [90_000, 48_000, 8_000, 16_000, 1, 0, 1_000_000, u32::MAX];

/// Source ids the packets come from (index = low 2 bits of an op byte).
const SOURCES: [u64; 4] = [1, 2, 0, u64::MAX];

/// Highest number of packets decoded from one input.
const MAX_PACKETS: usize = 4096;

/// Test-side model of the current run, built only from observed decisions and the
/// behaviour documented in `src/forward/rewrite.rs`.
struct Model {
    hi_out: Option<u64>,
    source: u64,
    start_in: u64,
    hi_in: u64,
    ts_delta: u32,
    ref_ts: u32,
    ref_arrival: u64,
}

/// Expected timestamp advance of a rebase: elapsed wall-clock time at `rate`, rounded to
/// nearest, at least 1 and at most `MAX_TS_ADVANCE`.
fn expected_advance(elapsed_us: u64, rate: u32) -> u32 {
    let ticks = (u128::from(elapsed_us) * u128::from(rate) + 500_000) / 1_000_000;
    ticks.clamp(1, u128::from(MAX_TS_ADVANCE)) as u32
}

/// Decodes a config and a packet sequence from `data` and feeds it to a [`Rewriter`].
///
/// Layout: `cfg` byte (bit 0 video, bits 1-3 clock rate index), initial seq (2), initial
/// ts (4), then one starting seq per source (selector byte + maybe 8 bytes), then ops:
/// `op` byte = bits 0-1 source, bits 2-4 action, bit 5 keyframe, bits 6-7 arrival step,
/// each followed by the bytes its action and step consume.
pub fn rewrite(data: &[u8]) {
    rewrite_run(data);
}

/// What one [`rewrite`] input exercised: the rewriter's counters, and how many late
/// (reordered or duplicate) packets were forwarded into place.
#[derive(Debug, Default, Clone, Copy)]
pub struct RewriteRun {
    pub stats: RewriteStats,
    pub late_forwards: u64,
}

/// [`rewrite`], returning what the input exercised (for coverage assertions).
pub fn rewrite_run(data: &[u8]) -> RewriteRun {
    let mut b = Bytes { data };
    let mut late_forwards = 0;
    let c = b.u8();
    let cfg = RewriterConfig {
        video: c & 1 != 0,
        clock_rate: CLOCK_RATES[usize::from((c >> 1) & 7)],
        initial_seq: b.u16(),
        initial_ts: b.u32(),
    };
    let mut r = Rewriter::new(cfg);
    assert_eq!(r.waiting_for_keyframe(), cfg.video);
    assert_eq!(r.highest_out_seq(), None);

    // Per-source next sequence number and timestamp.
    let mut next_seq = [0u64; 4];
    let mut ts = [0u32; 4];
    for (i, s) in next_seq.iter_mut().enumerate() {
        let sel = b.u8();
        *s = match sel & 3 {
            0 => u64::from(sel >> 2) * 1000,
            1 => 0x1_0000 * u64::from(sel >> 2) + 0xffff - u64::from(sel & 0x30),
            2 => u64::MAX - u64::from(sel >> 2),
            _ => b.u64(),
        };
        ts[i] = (i as u32).wrapping_mul(0x9e37_79b9);
    }

    let mut arrival: u64 = 0;
    let mut model = Model {
        hi_out: None,
        source: 0,
        start_in: 0,
        hi_in: 0,
        ts_delta: 0,
        ref_ts: 0,
        ref_arrival: 0,
    };
    // Output seq -> the (source, seq) input it was used for.
    let mut used: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut calls: u64 = 0;

    for _ in 0..MAX_PACKETS {
        if b.done() {
            break;
        }
        let op = b.u8();
        let si = usize::from(op & 3);
        let keyframe_start = op & 0x20 != 0;
        // Arrival: mostly non-decreasing, occasionally backwards.
        arrival = match op >> 6 {
            0 => arrival,
            1 => arrival.wrapping_add(u64::from(b.u8()) * 1000),
            2 => arrival.wrapping_add(20_000),
            _ => {
                let x = b.u8();
                if x & 0x80 != 0 {
                    arrival.saturating_sub(u64::from(x & 0x7f) * 1000)
                } else {
                    arrival.saturating_add(u64::from(x) << 26)
                }
            }
        };
        let seq = match (op >> 2) & 7 {
            // In order.
            0..=2 => {
                let s = next_seq[si];
                next_seq[si] = s.wrapping_add(1);
                ts[si] = ts[si].wrapping_add(3000);
                s
            }
            // Small forward gap (loss).
            3 => {
                let s = next_seq[si].wrapping_add(u64::from(b.u8()));
                next_seq[si] = s.wrapping_add(1);
                ts[si] = ts[si].wrapping_add(3000);
                s
            }
            // Late / duplicate / retransmitted packet: does not move the source on.
            4 => next_seq[si].wrapping_sub(1 + u64::from(b.u8())),
            // Big forward jump.
            5 => {
                let x = b.u8();
                let j = JUMPS[usize::from(x & 15)].wrapping_add(u64::from(x >> 4));
                let s = next_seq[si].wrapping_add(j);
                next_seq[si] = s.wrapping_add(1);
                ts[si] = ts[si].wrapping_add(b.u32());
                s
            }
            // Big backward jump (source reset).
            6 => {
                let x = b.u8();
                let j = JUMPS[usize::from(x & 15)].wrapping_add(u64::from(x >> 4));
                let s = next_seq[si].wrapping_sub(j);
                next_seq[si] = s.wrapping_add(1);
                ts[si] = ts[si].wrapping_add(b.u32());
                s
            }
            // Control: force gating, then an in-order packet.
            _ => {
                if b.u8() & 1 != 0 {
                    r.request_keyframe_gate();
                    assert_eq!(r.waiting_for_keyframe(), cfg.video);
                }
                let s = next_seq[si];
                next_seq[si] = s.wrapping_add(1);
                s
            }
        };
        let p = InPacket {
            source: SOURCES[si],
            seq,
            ts: ts[si],
            keyframe_start,
            arrival_us: arrival,
            clock_offset: None,
        };

        let waiting_before = r.waiting_for_keyframe();
        let before = r.stats();
        let hi_before = r.highest_out_seq();
        assert_eq!(hi_before, model.hi_out);
        let d = r.rewrite(&p);
        calls += 1;
        let st = r.stats();
        assert_eq!(
            st.forwarded + st.dropped_stale + st.dropped_waiting_keyframe,
            calls,
            "every decision is counted once"
        );
        assert!(st.rebases >= before.rebases);
        let hi_after = r.highest_out_seq();
        assert!(hi_after >= hi_before, "highest_out_seq decreased");
        if !cfg.video {
            assert!(!r.waiting_for_keyframe(), "audio gated");
        }

        match d {
            Decision::Forward {
                seq: out,
                ts: out_ts,
            } => {
                assert!(!r.waiting_for_keyframe(), "forwarded while gated");
                assert_eq!(r.current_source(), Some(p.source));
                assert_eq!(d.forwarded(), Some((out, out_ts)));
                let rebased = st.rebases > before.rebases;
                match model.hi_out {
                    None => {
                        // First packet ever forwarded.
                        assert!(!rebased);
                        assert_eq!(out, u64::from(cfg.initial_seq & INITIAL_SEQ_MASK));
                        assert_eq!(out_ts, cfg.initial_ts);
                        if cfg.video {
                            assert!(p.keyframe_start, "video starts on a keyframe");
                        }
                    }
                    Some(h) if rebased => {
                        assert_eq!(st.rebases, before.rebases + 1);
                        assert_eq!(out, h.wrapping_add(1), "rebase continues at highest + 1");
                        let adv = expected_advance(
                            p.arrival_us.saturating_sub(model.ref_arrival),
                            cfg.clock_rate,
                        );
                        assert_eq!(out_ts, model.ref_ts.wrapping_add(adv), "rebase ts");
                        if cfg.video {
                            assert!(p.keyframe_start, "video run starts on a keyframe");
                        }
                    }
                    Some(h) => {
                        // Same run: a pure offset.
                        assert!(!waiting_before, "gate left without a rebase");
                        assert_eq!(p.source, model.source, "silent source switch");
                        assert!(p.seq >= model.start_in, "packet before the run start");
                        assert_eq!(out_ts, p.ts.wrapping_add(model.ts_delta), "ts offset");
                        if p.seq > model.hi_in {
                            let gap = p.seq - model.hi_in;
                            assert!(gap <= MAX_FORWARD_JUMP, "jump not rebased");
                            assert!(out > h, "newer packet not above highest");
                            assert_eq!(out, h + gap, "gap not preserved");
                            assert_eq!(hi_after, Some(out));
                            model.hi_in = p.seq;
                            model.hi_out = Some(out);
                            model.ref_ts = out_ts;
                            model.ref_arrival = p.arrival_us;
                        } else {
                            let behind = model.hi_in - p.seq;
                            assert!(behind <= REORDER_WINDOW, "too-late packet forwarded");
                            late_forwards += 1;
                            assert_eq!(out, h - behind, "late packet misplaced");
                            assert_eq!(hi_after, hi_before);
                        }
                    }
                }
                if model.hi_out.is_none() || rebased {
                    assert_eq!(hi_after, Some(out));
                    model.hi_out = Some(out);
                    model.source = p.source;
                    model.start_in = p.seq;
                    model.hi_in = p.seq;
                    model.ts_delta = out_ts.wrapping_sub(p.ts);
                    model.ref_ts = out_ts;
                    model.ref_arrival = p.arrival_us;
                }
                if let Some(prev) = used.insert(out, (p.source, p.seq)) {
                    assert_eq!(
                        prev,
                        (p.source, p.seq),
                        "output seq {out} used for two different inputs"
                    );
                }
            }
            Decision::DropWaitingKeyframe => {
                assert!(cfg.video, "audio dropped for a keyframe");
                assert!(!p.keyframe_start, "keyframe start dropped as waiting");
                assert!(r.waiting_for_keyframe());
                assert_eq!(hi_after, hi_before);
                assert_eq!(st.rebases, before.rebases);
            }
            Decision::DropStale => {
                assert_eq!(hi_after, hi_before);
                assert_eq!(r.waiting_for_keyframe(), waiting_before);
                assert_eq!(st.rebases, before.rebases);
                assert_eq!(d.forwarded(), None);
            }
        }
    }
    RewriteRun {
        stats: r.stats(),
        late_forwards,
    }
}

// ---------------------------------------------------------------------------------------
// 4. signaling_json: examples/media_server/protocol.rs
// ---------------------------------------------------------------------------------------

/// Arbitrary bytes as a client WebSocket text frame.
pub fn signaling_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let direct = serde_json::from_str::<protocol::ClientMessage>(text);
    let parsed = protocol::parse(text);
    if let Ok(m) = &direct {
        // The server's parse (via serde_json::Value) agrees with direct deserialization.
        assert_eq!(parsed.as_ref(), Ok(m), "parse() disagrees with from_str");
        // ClientMessage is Deserialize-only: round-trip through the JSON value instead.
        let value: serde_json::Value = serde_json::from_str(text).expect("parsed as a message");
        let again = serde_json::to_string(&value).expect("a Value serializes");
        let m2: protocol::ClientMessage =
            serde_json::from_str(&again).expect("re-serialized message parses");
        assert_eq!(&m2, m, "round trip changed the message");
        check_client_message(m);
    }
    if let Ok(m) = &parsed {
        check_client_message(m);
    }
}

/// Field-level round trips of a parsed message (the parts that have `Serialize`).
fn check_client_message(m: &protocol::ClientMessage) {
    use protocol::ClientMessage as C;
    match m.clone() {
        C::Offer { sdp } | C::Answer { sdp } => {
            for kind in [rheomesh::SdpType::Offer, rheomesh::SdpType::Answer] {
                let d = sdp.clone().into_description(kind);
                let j = serde_json::to_string(&d).expect("description serializes");
                let back: SessionDescription = serde_json::from_str(&j).expect("reparses");
                assert_eq!(back, d);
            }
        }
        C::PublisherIce { candidate } | C::SubscriberIce { candidate } => {
            let j = serde_json::to_string(&candidate).expect("candidate serializes");
            let back: rheomesh::IceCandidateInit = serde_json::from_str(&j).expect("reparses");
            assert_eq!(back, candidate);
        }
        _ => {}
    }
    // Server replies built from client input always serialize.
    let _ = protocol::ServerMessage::error(format!("{m:?}")).to_json();
}

// ---------------------------------------------------------------------------------------
// 5. sdp_offer: PublishTransport::get_answer through a real Worker
// ---------------------------------------------------------------------------------------

/// One worker (1 shard) and router shared by every `sdp_offer` input of the process.
struct SdpEnv {
    rt: tokio::runtime::Runtime,
    worker: Arc<tokio::sync::Mutex<rheomesh::worker::Worker>>,
    router: rheomesh::router::Router,
}

static SDP_ENV: OnceLock<SdpEnv> = OnceLock::new();
static SDP_RUNS: AtomicU64 = AtomicU64::new(0);

/// How often (in inputs) the shard's stats are checked.
const SDP_STATS_EVERY: u64 = 64;

fn sdp_env() -> &'static SdpEnv {
    SDP_ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (worker, router) = rt.block_on(async {
            let mut cfg = rheomesh::config::WorkerConfig::default();
            cfg.shards = 1;
            let worker = rheomesh::worker::Worker::new(cfg)
                .await
                .expect("worker starts");
            let router = worker
                .lock()
                .await
                .new_router(rheomesh::config::MediaConfig::default());
            (worker, router)
        });
        SdpEnv { rt, worker, router }
    })
}

/// Asserts the shard has contained no panic and holds no leftover sessions.
pub fn sdp_check_stats() {
    let env = sdp_env();
    env.rt.block_on(async {
        let stats = env.worker.lock().await.stats().await;
        assert_eq!(stats.total(|s| s.session_panics), 0, "a session panicked");
        assert!(
            stats.sessions() <= 4,
            "closed sessions linger: {}",
            stats.sessions()
        );
    });
}

/// SDP text as a publisher's offer; the same bytes as a `SessionDescription` JSON.
pub fn sdp_offer(data: &[u8]) {
    sdp_offer_answered(data);
}

/// [`sdp_offer`], returning whether the offer was answered.
pub fn sdp_offer_answered(data: &[u8]) -> bool {
    if let Ok(d) = serde_json::from_slice::<SessionDescription>(data) {
        let j = serde_json::to_string(&d).expect("description serializes");
        let back: SessionDescription = serde_json::from_str(&j).expect("reparses");
        assert_eq!(back, d);
    }

    let text = String::from_utf8_lossy(data).into_owned();
    let env = sdp_env();
    let answered = env.rt.block_on(async {
        let t = env
            .router
            .create_publish_transport(Default::default())
            .await;
        let answered = match t.get_answer(SessionDescription::offer(text.clone())).await {
            Ok(answer) => {
                assert_eq!(answer.sdp_type, rheomesh::SdpType::Answer);
                assert!(answer.sdp.starts_with("v=0"), "answer is not SDP");
                // The same offer again: renegotiation of an unchanged session.
                let _ = t.get_answer(SessionDescription::offer(text)).await;
                true
            }
            Err(_) => false,
        };
        // Answers to anything but an offer are refused without reaching the engine.
        assert!(t
            .get_answer(SessionDescription::answer("v=0\r\n"))
            .await
            .is_err());
        t.close().await;
        answered
    });
    if SDP_RUNS
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(SDP_STATS_EVERY)
    {
        sdp_check_stats();
    }
    answered
}

// ---------------------------------------------------------------------------------------
// 6. dependency_descriptor: rheomesh::wire::dependency_descriptor
// ---------------------------------------------------------------------------------------

/// Input: a sequence of extensions of one track, each as a length byte (`% 48`) and that
/// many bytes (fewer at the end). Each is parsed against the structure the earlier ones
/// left. Invariants: no panic; a refused extension leaves the structure as it was; a read
/// frame's layers are within the structure's; a structure stays within the documented
/// limits.
pub fn dependency_descriptor(data: &[u8]) {
    use rheomesh::wire::dependency_descriptor::{
        parse, MAX_DECODE_TARGETS, MAX_SPATIAL_LAYERS, MAX_TEMPLATES, MAX_TEMPORAL_LAYERS,
    };
    let mut structure = None;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len % 48).min(tail.len());
        let (ext, tail) = tail.split_at(len);
        rest = tail;
        let before = structure;
        match parse(ext, &mut structure) {
            Ok(frame) => {
                let s = structure.expect("a frame was read against a structure");
                assert!(s.templates() >= 1 && s.templates() <= MAX_TEMPLATES);
                assert!(s.decode_targets() >= 1 && s.decode_targets() <= MAX_DECODE_TARGETS);
                let (sp, tp) = s.max_layers();
                assert!(usize::from(sp) < MAX_SPATIAL_LAYERS);
                assert!(usize::from(tp) < MAX_TEMPORAL_LAYERS);
                assert!(
                    frame.spatial <= sp && frame.temporal <= tp,
                    "{frame:?} {s:?}"
                );
                if !frame.new_structure {
                    assert_eq!(structure, before, "only a new structure replaces it");
                }
                for dt in 0..s.decode_targets() {
                    let (dsp, dtp) = s.decode_target_layers(dt).expect("in range");
                    assert!(dsp <= sp && dtp <= tp);
                }
            }
            Err(_) => assert_eq!(
                structure, before,
                "a refused extension changed the structure"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 7. layer_selection: rheomesh::forward::layer with the rewriter's skips
// ---------------------------------------------------------------------------------------

/// Input: byte 0 picks the mode (bit 0: SVC, else simulcast) and the first target; then
/// 2-byte operations. Operation `a, b`, by `a % 8`:
/// - 0..=3: the next packet of stream `a >> 6` (simulcast: its own sequence; SVC: the one
///   stream, spatial id `a >> 6`), temporal id `b & 3`, keyframe start `b & 4`, frame start
///   `b & 8`, frame end `b & 16`, switching point `b & 32`;
/// - 4: the same, but the stream's next sequence number is lost first (`b >> 6` + 1 of them);
/// - 5: a late copy of the stream's packet `b % 8 + 1` behind (reordered or retransmitted);
/// - 6: a new target (`b & 3`, `b >> 2 & 3`), or none (`b & 0x80`);
/// - 7: 2 s pass (rebases then estimate a timestamp advance).
///
/// Every packet goes through the selector; a dropped one is skipped by the rewriter, a
/// forwarded one rewritten, as the packet path does. Invariants: no panic; an output
/// sequence number is never used for two inputs; a forwarded packet is within the current
/// layer (simulcast: exactly its stream); the marker is only set at the end of the current
/// top spatial layer's frame; a keyframe is only wanted of the target; and between two
/// packets forwarded in order from one run, the output advances by one plus the packets
/// lost upstream in between, never by the packets dropped on purpose.
pub fn layer_selection(data: &[u8]) {
    use rheomesh::forward::{Layer, LayerMode, LayerPacket, LayerSelector, LayerVerdict};

    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let svc = first & 1 != 0;
    let mode = if svc {
        LayerMode::Svc
    } else {
        LayerMode::Simulcast
    };
    let mut sel = LayerSelector::new(mode);
    sel.set_target(Some(Layer::new((first >> 1) & 3, (first >> 3) & 3)));
    let mut r = Rewriter::new(RewriterConfig {
        video: true,
        clock_rate: 90_000,
        initial_seq: 100,
        initial_ts: 1000,
    });
    let mut next_seq = [1000u64, 5000, 9000, 13000];
    let mut now_us = 1_000_000u64;
    let mut used: HashMap<u64, (u64, u64)> = HashMap::new();
    // Since the last packet forwarded in order: (its source, input seq, output seq,
    // packets lost upstream since on that source, still clean (no reordering)).
    let mut last: Option<(u64, u64, u64, u64, bool)> = None;

    for op in ops.chunks_exact(2) {
        let (a, b) = (op[0], op[1]);
        now_us += 5_000;
        let stream = usize::from(a >> 6);
        let source = if svc { 0 } else { stream };
        let (seq, late) = match a % 8 {
            0..=3 => {
                let s = next_seq[source];
                next_seq[source] += 1;
                (s, false)
            }
            4 => {
                let lost = u64::from(b >> 6) + 1;
                next_seq[source] += lost;
                if let Some(l) = last.as_mut().filter(|l| l.0 == source as u64) {
                    l.3 += lost;
                }
                let s = next_seq[source];
                next_seq[source] += 1;
                (s, false)
            }
            5 => (next_seq[source].saturating_sub(u64::from(b % 8) + 1), true),
            6 => {
                let target = (b & 0x80 == 0).then(|| Layer::new(b & 3, (b >> 2) & 3));
                sel.set_target(target);
                continue;
            }
            _ => {
                now_us += 2_000_000;
                continue;
            }
        };
        if late {
            if let Some(l) = last.as_mut().filter(|l| l.0 == source as u64) {
                l.4 = false;
            }
        }
        let p = LayerPacket {
            spatial: stream as u8,
            temporal: b & 3,
            keyframe_start: b & 4 != 0,
            frame_start: b & 8 != 0,
            frame_end: b & 16 != 0,
            switch_point: b & 32 != 0,
            switch_to: if b & 64 != 0 { b >> 5 } else { 0 },
        };
        let input = InPacket {
            source: source as u64,
            seq,
            ts: (seq as u32).wrapping_mul(3000),
            keyframe_start: p.keyframe_start,
            arrival_us: now_us,
            clock_offset: None,
        };
        let verdict = sel.select(&p);
        if let Some(s) = sel.wants_keyframe() {
            assert_eq!(
                Some(s),
                sel.target().map(|t| t.spatial),
                "keyframe of the target"
            );
        }
        let set_marker = match verdict {
            LayerVerdict::Drop => {
                r.skip(&input);
                continue;
            }
            LayerVerdict::Forward { set_marker } => set_marker,
        };
        let c = sel.current().expect("forwarding means a current layer");
        if svc {
            assert!(p.spatial <= c.spatial, "{p:?} above {c:?}");
        } else {
            assert_eq!(p.spatial, c.spatial, "{p:?} not the current stream {c:?}");
        }
        assert!(p.temporal <= c.temporal, "{p:?} above {c:?}");
        if set_marker {
            assert!(
                svc && p.frame_end && p.spatial == c.spatial,
                "marker on {p:?}"
            );
        }
        let rebases = r.stats().rebases;
        let Decision::Forward { seq: out, .. } = r.rewrite(&input) else {
            continue;
        };
        if let Some(prev) = used.insert(out, (input.source, seq)) {
            assert_eq!(prev, (input.source, seq), "output {out} reused");
        }
        if late {
            continue;
        }
        if let Some((src, in_seq, out_seq, lost, clean)) = last {
            let same_run = r.stats().rebases == rebases;
            if same_run && clean && src == input.source && seq > in_seq {
                assert_eq!(
                    out,
                    out_seq + 1 + lost,
                    "in {in_seq} -> {seq} (lost {lost}) went out {out_seq} -> {out}"
                );
            }
        }
        last = Some((input.source, seq, out, 0, true));
    }
}

// ---------------------------------------------------------------------------------------
// 8. rtp_extension: rheomesh::wire::find_extension
// ---------------------------------------------------------------------------------------

/// Byte 0 is the extension id looked for, the rest an RTP datagram as it arrived.
/// `find_extension` never panics; SSRC and sequence number are the header's; a value found
/// lies inside the datagram, after the fixed header and its CSRCs.
pub fn rtp_extension(data: &[u8]) {
    use rheomesh::wire::find_extension;
    let Some((&id, packet)) = data.split_first() else {
        return;
    };
    if let Ok(e) = find_extension(packet, id) {
        assert!(packet.len() >= 12);
        assert_eq!(e.seq, u16::from_be_bytes([packet[2], packet[3]]));
        assert_eq!(
            e.ssrc,
            u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
        );
        if let Some(v) = e.value {
            let start = v.as_ptr() as usize - packet.as_ptr() as usize;
            assert!(start + v.len() <= packet.len());
            assert!(start >= 12 + 4 * usize::from(packet[0] & 0x0f) + 4);
            assert!(packet[0] & 0x10 != 0, "a value without the X bit");
        }
    }
}

/// `sdpfrag`: a WHIP/WHEP `PATCH` body (`rheomesh::whip::sdpfrag::parse`), as UTF-8 text
/// (other bytes are replaced). Invariants: no panic; an accepted fragment has both
/// credentials or neither, made only of ICE characters; every candidate is a
/// `candidate:` attribute without control characters; the server's reply fragment built
/// from an answer (`from_answer`) parses back with the answer's credentials.
pub fn sdpfrag(data: &[u8]) {
    use rheomesh::whip::sdpfrag::{credentials, from_answer, parse, with_credentials};
    let text = String::from_utf8_lossy(data);
    if let Ok(f) = parse(&text) {
        assert_eq!(f.ufrag.is_some(), f.pwd.is_some());
        for c in [&f.ufrag, &f.pwd].into_iter().flatten() {
            assert!(!c.is_empty());
            assert!(c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        }
        for (_, c) in &f.candidates {
            assert!(c.starts_with("candidate:") && c.len() > "candidate:".len());
            assert!(!c.chars().any(char::is_control));
        }
        if let (Some(u), Some(p)) = (&f.ufrag, &f.pwd) {
            // A restart offer rebuilt from this input carries exactly these credentials.
            let offer = with_credentials(&text, u, p);
            if let Some((u2, p2)) = credentials(&offer) {
                assert_eq!((u2, p2), (u.as_str(), p.as_str()));
            }
            let reply = from_answer(&offer);
            if text.len() < 8 * 1024 {
                let back = parse(&reply).expect("a reply fragment parses");
                assert_eq!(back.ufrag.as_deref(), Some(u.as_str()));
            }
        }
    }
}

/// `relay_frame`: bytes arriving at a worker's relay port after the length prefix of a
/// frame (`rheomesh::relay::wire`). Byte 0 picks the frame number; the rest is the frame
/// body. Invariants: no panic; a body that is not authentic under the key is refused
/// (`BadTag` or `Length`), never parsed; a frame the right key encoded decodes to the same
/// message, and only under its own number and direction.
pub fn relay_frame(data: &[u8]) {
    use rheomesh::relay::wire::{
        decode, encode, frame_len, seal, session_key, FrameError, Msg, Side,
    };
    let Some((&seq, body)) = data.split_first() else {
        return;
    };
    let key = session_key(b"fuzz-secret-0123456789", &"a".repeat(64), &"b".repeat(64));
    if body.len() >= 4 {
        let _ = frame_len([body[0], body[1], body[2], body[3]]);
    }
    match decode(&key, Side::Connector, u64::from(seq), body) {
        Ok(_) => panic!("a forged frame was accepted"),
        Err(FrameError::BadTag) | Err(FrameError::Length(_)) => {}
        Err(e) => panic!("unexpected {e:?}"),
    }
    // The body as a frame's JSON, tagged with the right key (a peer that knows the
    // secret): the parser behind the tag check reads it or refuses it, and what it reads
    // encodes and reads back the same.
    let sealed = seal(&key, Side::Listener, u64::from(seq), body);
    match decode(&key, Side::Listener, u64::from(seq), &sealed[4..]) {
        Ok(m) => {
            let again = encode(&key, Side::Listener, 7, &m);
            assert_eq!(decode(&key, Side::Listener, 7, &again[4..]), Ok(m));
        }
        Err(FrameError::BadMessage(_)) | Err(FrameError::Length(_)) => {}
        Err(e) => panic!("unexpected {e:?} for a sealed frame"),
    }
    // Whatever text the body holds, sent as an offer by the right key, round-trips.
    let msg = Msg::Offer {
        req: u64::from(seq),
        session: 1,
        offer: String::from_utf8_lossy(body).into_owned(),
    };
    let frame = encode(&key, Side::Connector, u64::from(seq), &msg);
    let n = frame_len(frame[..4].try_into().unwrap());
    if let Ok(n) = n {
        assert_eq!(n, frame.len() - 4);
        assert_eq!(
            decode(&key, Side::Connector, u64::from(seq), &frame[4..]),
            Ok(msg)
        );
        assert_eq!(
            decode(&key, Side::Listener, u64::from(seq), &frame[4..]),
            Err(FrameError::BadTag)
        );
    }
}
