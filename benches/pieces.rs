//! Microbenchmarks of the pieces of the packet path: datagram classification and STUN
//! ufrag extraction, the demux table lookup (datagram → session), codec payload
//! inspection (keyframe detection), the per-subscriber sequence/timestamp rewrite, and the
//! shard-to-shard ring. Run with `cargo bench --bench pieces`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rheomesh::forward::{InPacket, Rewriter, RewriterConfig};
use rheomesh::testing::{DemuxBench, RingPair};
use rheomesh::wire::codec::{inspect, CodecKind};
use rheomesh::wire::{classify, stun_local_ufrag};

fn stun_request() -> Vec<u8> {
    let user = b"abcdefgh:remoteuf";
    let mut attrs = vec![0x00, 0x06, 0x00, user.len() as u8];
    attrs.extend_from_slice(user);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    attrs.extend_from_slice(&[0u8; 20]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[7u8; 12]);
    m.extend_from_slice(&attrs);
    m
}

fn demux(c: &mut Criterion) {
    let rtp = {
        let mut p = vec![0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.resize(1200, 0xab);
        p
    };
    let stun = stun_request();
    assert_eq!(stun_local_ufrag(&stun), Ok(&b"abcdefgh"[..]));
    let mut g = c.benchmark_group("demux");
    g.throughput(Throughput::Elements(1));
    g.bench_function("classify_rtp", |b| b.iter(|| classify(black_box(&rtp))));
    g.bench_function("stun_local_ufrag", |b| {
        b.iter(|| stun_local_ufrag(black_box(&stun)).map(|u| u.len()))
    });
    g.finish();

    // The table lookup a shard does per datagram, with 1000 sessions on the shard.
    let table = DemuxBench::new(1000);
    let known = DemuxBench::addr(517);
    assert_eq!(table.route(&rtp, known), Some(517));
    let mut stun_new = stun_request();
    stun_new[24..32].copy_from_slice(b"u0000517");
    let unknown = "127.0.0.1:9".parse().expect("address");
    assert_eq!(table.route(&stun_new, unknown), Some(517));
    let mut g = c.benchmark_group("demux_lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rtp_known_address_1000_sessions", |b| {
        b.iter(|| table.route(black_box(&rtp), black_box(known)))
    });
    g.bench_function("stun_by_ufrag_1000_sessions", |b| {
        b.iter(|| table.route(black_box(&stun_new), black_box(unknown)))
    });
    g.finish();
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for burst in [1usize, 32] {
        let mut r = RingPair::new(4096);
        assert_eq!(r.transfer(burst), burst);
        g.throughput(Throughput::Elements(burst as u64));
        g.bench_function(format!("push_pop_burst_{burst}"), |b| {
            b.iter(|| r.transfer(black_box(burst)))
        });
    }
    g.finish();
}

fn payload(c: &mut Criterion) {
    let vp8_key = {
        let mut p = vec![0x90, 0x80, 0x00, 0x00];
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        p.resize(1100, 0);
        p
    };
    let vp9 = {
        let mut p = vec![0x8c, 0x80, 0x01, 0x00];
        p.resize(1100, 0);
        p
    };
    let h264_stap = {
        // STAP-A with SPS (7), PPS (8) and an IDR slice (5).
        // Sizes: SPS 4, PPS 3, IDR fills the rest of a 1100-byte payload.
        let idr_len: u16 = 1100 - (1 + 2 + 4 + 2 + 3 + 2);
        let mut p = vec![24, 0, 4, 0x67, 1, 2, 3, 0, 3, 0x68, 1, 2];
        p.extend_from_slice(&idr_len.to_be_bytes());
        p.push(0x65);
        p.resize(1100, 0);
        p
    };
    let av1 = {
        let mut p = vec![0x18];
        p.resize(1100, 0);
        p
    };
    // Measure the success path: each sample is a valid keyframe start of its codec.
    for (kind, data) in [
        (CodecKind::Vp8, &vp8_key),
        (CodecKind::Vp9, &vp9),
        (CodecKind::H264, &h264_stap),
        (CodecKind::Av1, &av1),
    ] {
        let info = inspect(kind, data).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        assert!(info.keyframe, "{kind:?} sample is a keyframe");
    }
    let mut g = c.benchmark_group("payload_inspect");
    g.throughput(Throughput::Elements(1));
    for (name, kind, data) in [
        ("vp8", CodecKind::Vp8, &vp8_key),
        ("vp9", CodecKind::Vp9, &vp9),
        ("h264_stap_a", CodecKind::H264, &h264_stap),
        ("av1", CodecKind::Av1, &av1),
    ] {
        g.bench_function(name, |b| b.iter(|| inspect(kind, black_box(data))));
    }
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Elements(1));
    g.bench_function("in_order_video", |b| {
        let mut r = Rewriter::new(RewriterConfig {
            video: true,
            clock_rate: 90_000,
            initial_seq: 1000,
            initial_ts: 5,
        });
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            r.rewrite(black_box(&InPacket {
                source: 1,
                seq,
                ts: (seq as u32).wrapping_mul(3000),
                keyframe_start: seq == 1,
                arrival_us: seq * 10_000,
                clock_offset: None,
            }))
        })
    });
    g.finish();
}

criterion_group!(benches, demux, payload, rewrite, ring);
criterion_main!(benches);
