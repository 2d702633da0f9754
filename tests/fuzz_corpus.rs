//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and any saved crash inputs
//! (`fuzz/artifacts/<target>/`) through the same checks the fuzz targets run
//! (`fuzz/checks.rs`), so every input the fuzzers found interesting stays a regression
//! test on stable Rust, without cargo-fuzz. See `fuzz/README.md`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// Most `sdp_offer` inputs replayed (each creates and closes a real session).
const MAX_SDP_INPUTS: usize = 400;

/// The files of `fuzz/corpus/<target>` and `fuzz/artifacts/<target>`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if p.is_file() && !hidden {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`; fails naming each input that panicked.
fn replay(target: &str, min_inputs: usize, max_inputs: usize, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= min_inputs,
        "fuzz/corpus/{target} has {} inputs, expected at least {min_inputs}",
        files.len()
    );
    let mut failed = Vec::new();
    for path in files.iter().take(max_inputs) {
        let data = std::fs::read(path).expect("read corpus file");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs: {failed:#?}");
    println!("{target}: replayed {} inputs", files.len().min(max_inputs));
}

#[test]
fn datagram_corpus() {
    replay("datagram", 5, usize::MAX, checks::datagram);
}

#[test]
fn rtp_payload_corpus() {
    replay("rtp_payload", 5, usize::MAX, checks::rtp_payload);
}

#[test]
fn dependency_descriptor_corpus() {
    replay(
        "dependency_descriptor",
        4,
        usize::MAX,
        checks::dependency_descriptor,
    );
}

#[test]
fn rtp_extension_corpus() {
    replay("rtp_extension", 2, usize::MAX, checks::rtp_extension);
}

#[test]
fn relay_frame_corpus() {
    replay("relay_frame", 4, usize::MAX, checks::relay_frame);
}

#[test]
fn sdpfrag_corpus() {
    replay("sdpfrag", 4, usize::MAX, checks::sdpfrag);
}

#[test]
fn layer_selection_corpus() {
    replay("layer_selection", 3, usize::MAX, checks::layer_selection);
}

#[test]
fn rewrite_corpus() {
    replay("rewrite", 3, usize::MAX, checks::rewrite);
}

#[test]
fn signaling_json_corpus() {
    replay("signaling_json", 5, usize::MAX, checks::signaling_json);
}

#[test]
fn sdp_offer_corpus() {
    replay("sdp_offer", 3, MAX_SDP_INPUTS, checks::sdp_offer);
    // Stats are otherwise checked every 64 inputs: check once more at the end.
    checks::sdp_check_stats();
}

/// The hand-written browser-like seeds are real offers: the engine answers them (so the
/// fuzzer starts from inputs that reach deep into negotiation), and garbage is refused.
#[test]
fn sdp_offer_seeds_are_answered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sdp_offer");
    for name in [
        "chrome_audio_video",
        "chrome_audio_only",
        "chrome_simulcast",
        "many_mlines",
        "str0m_offer",
    ] {
        let data = std::fs::read(dir.join(name)).expect("seed exists");
        assert!(
            checks::sdp_offer_answered(&data),
            "seed {name} not answered"
        );
    }
    assert!(!checks::sdp_offer_answered(b"not sdp"));
}

/// Hostile offers found by the `sdp_offer` fuzz target are refused with an error, without
/// a session panic (each is also in the corpus).
#[test]
fn hostile_offers_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sdp_offer");
    // An audio m-line carrying a stray `a=rtpmap:100 VP9/90000`, then a video m-line that
    // maps PT 100 to VP9 profile-id=2: stock str0m asserts "Pt locked multiple times".
    let data = std::fs::read(dir.join("pt_locked_twice")).expect("input exists");
    assert!(
        !checks::sdp_offer_answered(&data),
        "pt_locked_twice answered"
    );
    checks::sdp_check_stats();
}

/// A freshly made str0m publisher offer (Opus + VP8, sendonly) — what the `str0m_offer` seed
/// was made from — is answered too. Print it to refresh the seed with
/// `cargo test --test fuzz_corpus -- --nocapture fresh_str0m_offer_is_answered`.
#[test]
fn fresh_str0m_offer_is_answered() {
    use str0m::media::{Direction, MediaKind};
    str0m::crypto::from_feature_flags().install_process_default();
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let addr = "127.0.0.1:40000".parse().expect("addr");
    let cand = str0m::Candidate::host(addr, "udp").expect("candidate");
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    let stream = Some("stream-1".to_string());
    api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        stream.clone(),
        Some("audio-1".into()),
        None,
    );
    api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        stream,
        Some("video-1".into()),
        None,
    );
    let (offer, _pending) = api.apply().expect("offer");
    let sdp = offer.to_sdp_string();
    print!("{sdp}");
    assert!(checks::sdp_offer_answered(sdp.as_bytes()));
}

/// The rewrite invariants (`checks::rewrite`) over many seeded random streams, not only the
/// corpus. The generator writes `checks::rewrite`'s input format with realistic weights:
/// mostly in-order packets, with loss, late and duplicate packets, jumps, source switches,
/// keyframe gating and clock steps. Fails unless every path was exercised.
#[test]
fn rewrite_random_streams() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut total = checks::RewriteRun::default();
    let mut data: Vec<u8> = Vec::with_capacity(1024);
    for _ in 0..20_000 {
        data.clear();
        // Config byte, initial seq (2), initial ts (4), then one start selector per source
        // (selector 3 is followed by an explicit u64).
        for _ in 0..7 {
            data.push(next() as u8);
        }
        for _ in 0..4 {
            let sel = next() as u8;
            data.push(sel);
            if sel & 3 == 3 {
                data.extend_from_slice(&next().to_le_bytes());
            }
        }
        let packets = 1 + next() % 128;
        for _ in 0..packets {
            let r = next();
            let source = if r % 10 == 0 { 1 + (r >> 8) % 3 } else { 0 };
            let keyframe = u64::from((r >> 16) % 10 == 0);
            let arrival = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3][((r >> 24) % 10) as usize];
            let kind = match (r >> 32) % 100 {
                0..=69 => (r >> 40) % 3, // in order
                70..=77 => 3,            // loss gap
                78..=89 => 4,            // late / duplicate
                90..=92 => 5,            // forward jump
                93..=95 => 6,            // backward jump
                _ => 7,                  // keyframe gate
            };
            data.push(((arrival << 6) | (keyframe << 5) | (kind << 2) | source) as u8);
            let p = next();
            match arrival {
                1 => data.push((p % 40) as u8),
                3 => data.push(p as u8),
                _ => {}
            }
            match kind {
                3 => data.push((p >> 8) as u8 % 8),
                4 => data.push((p >> 8) as u8 % 48),
                5 | 6 => {
                    data.push((p >> 8) as u8);
                    data.extend_from_slice(&((p >> 16) as u32).to_le_bytes());
                }
                7 => data.push((p >> 8) as u8),
                _ => {}
            }
        }
        let run = checks::rewrite_run(&data);
        total.stats.forwarded += run.stats.forwarded;
        total.stats.dropped_stale += run.stats.dropped_stale;
        total.stats.dropped_waiting_keyframe += run.stats.dropped_waiting_keyframe;
        total.stats.rebases += run.stats.rebases;
        total.late_forwards += run.late_forwards;
    }
    println!("rewrite_random_streams: {total:?}");
    let s = total.stats;
    assert!(s.forwarded > 500_000, "{total:?}");
    assert!(s.dropped_stale > 10_000, "{total:?}");
    assert!(s.dropped_waiting_keyframe > 10_000, "{total:?}");
    assert!(s.rebases > 10_000, "{total:?}");
    assert!(total.late_forwards > 10_000, "{total:?}");
}
