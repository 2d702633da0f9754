//! `cargo bench --bench forwarding`: the server's whole per-packet work through real str0m
//! sessions (SRTP decrypt at ingress, route, shard-to-shard ring, seq/ts rewrite, SRTP
//! encrypt per subscriber, batch end, dropping the sent buffers), on in-memory shards —
//! no sockets, so `sendmmsg` is not included. One publisher, N subscribers spread over
//! 1 or 2 shards (the publisher on shard 0); both shards run on the bench thread, so the
//! time is the CPU the shards spend together. Throughput is in forwarded packets
//! (one publisher packet forwarded to N subscribers counts N).
//!
//! The `_simulcast` cases: the publisher sends three simulcast encodings (a packet on each
//! per packet time, so the shards receive three times as much) and the subscribers prefer
//! them in turn; each subscriber still gets one packet per packet time, and every packet
//! goes through each down-track's layer selection (two thirds are dropped there, closing up
//! the subscriber's sequence numbers).
//!
//! The `_bwe` cases: bandwidth estimation on every subscribe session (TWCC feedback from
//! the peers, str0m's estimator and pacer, the allocator every 500 ms).
//!
//! `recording`: the same publisher recorded by 100 recording transports (plain RTP, no
//! SRTP), in bursts as `forwarding`.
//!
//! `data`: one publisher's data channel (ordered, reliable) to 100 subscribers' channels, in
//! bursts of 32 messages of 100 bytes (chat-sized; `_1024B`: 1 KiB): DTLS and SCTP in from
//! the publisher, routing (one ring entry per other shard), a write into each subscriber's
//! channel, SCTP and DTLS out per subscriber at the batch end, and the subscribers' SCTP
//! acknowledgements coming back. Only the shards' time is measured (around their calls), not
//! the peers'. Throughput in delivered messages (one message to 100 subscribers counts 100).
//!
//! Two groups of forwarding:
//! - `forwarding`: bursts of 32 publisher packets per batch, with no time passing between
//!   them: the cost of forwarding itself, the best case.
//! - `forwarding_real_rate`: what a server sees in a call. One packet per batch, 150 packets
//!   per second (a video stream), the clock advancing 1/150 s between packets, the shards'
//!   timers running at their deadlines, the subscribers receiving their packets and
//!   answering (receiver reports, transport-wide feedback), ICE consent. Only the shards'
//!   time is measured (around their calls), not the peers'; after 2 s of the call. Per-session costs that
//!   bursts spread over 32 packets (timeouts, flushes) are paid per packet here. The `_cold`
//!   cases also evict the CPU caches between packets (outside the measurement), as a server's
//!   are between two packets 7 ms apart: the kernel, other processes and the other sessions
//!   run meanwhile. Those are the figures that move with `loadgen`'s: at real rates a
//!   forwarded packet costs mostly the cache misses on its subscriber's session state.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rheomesh::config::MediaConfig;
use rheomesh::testing::Fanout;

/// Publisher packets per batch (one batch = one receive burst + one batch end).
const BATCH: u64 = 32;
const PAYLOAD: usize = 1100;

/// A benchmark group with this file's sampling settings.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g
}

/// A fan-out of one VP8 publisher, or of three simulcast encodings with the subscribers
/// spread over them (each still receives one packet per publisher packet time); with
/// `bwe`, bandwidth estimation on every subscribe session, from an estimate that carries
/// the stream ([`BWE_START_BPS`]).
fn fanout(shards: usize, subs: usize, simulcast: bool, bwe: bool) -> Fanout {
    let mut media = MediaConfig::default();
    if bwe {
        media.bandwidth_estimation = Some(BWE_START_BPS);
    }
    Fanout::with_media(shards, subs, simulcast, media).expect("fan-out connects")
}

/// The initial estimate of the `_bwe` cases: 1 Gbit/s, so that the allocator takes no
/// layer away (it would start a subscriber of a 1.3 Mbit/s encoding paused at 300 kbit/s)
/// and what is measured is the per-packet cost of estimation: the transport-wide sequence
/// number, the TWCC send record, the pacer's accounting, the feedback and the estimator.
const BWE_START_BPS: u64 = 1_000_000_000;

fn forwarding(c: &mut Criterion) {
    let mut g = group(c, "forwarding");
    // (shards, subscribers, simulcast, dependency descriptor)
    let cases = [1usize, 2]
        .into_iter()
        .flat_map(|shards| [1usize, 10, 100].map(|subs| (shards, subs, false, false)))
        .chain([(1, 100, true, false), (1, 100, false, true)]);
    for (shards, subs, simulcast, dd) in cases {
        // With `dd`, the publisher sends libwebrtc's L1T3 dependency descriptor with every
        // packet: read from each datagram, and layer selection by it for every subscriber.
        let mut f = if dd {
            Fanout::with_dependency_descriptor(shards, subs).expect("fan-out connects")
        } else {
            fanout(shards, subs, simulcast, false)
        };
        let sim = match (simulcast, dd) {
            (true, _) => "_simulcast",
            (_, true) => "_dd",
            _ => "",
        };
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(
            BenchmarkId::new(format!("{shards}_shards{sim}"), subs),
            |b| b.iter_custom(|iters| bursts(&mut f, iters, subs)),
        );
    }
    g.finish();
}

/// `iters` publisher packets through `f` in bursts of [`BATCH`], each forwarded to `outs`
/// destinations (subscribers or recorders): the time of the shards' work.
fn bursts(f: &mut Fanout, iters: u64, outs: usize) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        f.stage(k as usize, PAYLOAD);
        let t = Instant::now();
        let sent = f.forward_staged();
        spent += t.elapsed();
        assert!(
            sent as u64 >= k * outs as u64,
            "only {sent} of {} packets forwarded",
            k * outs as u64
        );
        // Keep ICE consent and RTCP going, outside the measurement.
        f.pump();
        left -= k;
    }
    spent
}

/// Packets per second of the publisher in `forwarding_real_rate` (a video stream).
const REAL_RATE_PPS: u32 = 150;

/// Packets forwarded before `forwarding_real_rate` measures: 2 s of the call.
const SETTLE_PACKETS: u32 = 2 * REAL_RATE_PPS;

fn forwarding_real_rate(c: &mut Criterion) {
    let mut g = group(c, "forwarding_real_rate");
    let interval = Duration::from_secs(1) / REAL_RATE_PPS;
    let mut evictor = CacheEvictor::new();
    for (shards, subs, cold, simulcast, bwe) in [
        (1usize, 25usize, false, false, false),
        (1, 100, false, false, false),
        (2, 100, false, false, false),
        (1, 25, true, false, false),
        (1, 100, true, false, false),
        (1, 25, false, true, false),
        (1, 25, true, true, false),
        (1, 25, false, true, true),
        (1, 25, true, true, true),
    ] {
        let mut f = fanout(shards, subs, simulcast, bwe);
        // The fan-out's own clock: it starts now and advances 1/150 s per packet, faster
        // than the wall clock (the bench does a second of traffic in far less).
        let mut now = Instant::now();
        // A call that has run a while: the layers' bitrates measured (until then the
        // allocator keeps every subscriber on the lowest layer), the feedback flowing.
        for _ in 0..SETTLE_PACKETS {
            now += interval;
            f.stage_at(1, PAYLOAD, now);
            f.forward_staged_and_deliver_at(now);
        }
        let cold = if cold { "_cold" } else { "" };
        let sim = if simulcast { "_simulcast" } else { "" };
        let bwe = if bwe { "_bwe" } else { "" };
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(
            BenchmarkId::new(
                format!("{shards}_shards_{REAL_RATE_PPS}pps{sim}{bwe}{cold}"),
                subs,
            ),
            |b| {
                b.iter_custom(|iters| {
                    f.take_server_time();
                    let mut sent = 0u64;
                    for _ in 0..iters {
                        now += interval;
                        f.stage_at(1, PAYLOAD, now);
                        sent += f.forward_staged_and_deliver_at(now);
                        if !cold.is_empty() {
                            evictor.evict();
                        }
                    }
                    assert!(
                        sent >= iters * subs as u64,
                        "only {sent} of {} packets delivered",
                        iters * subs as u64
                    );
                    f.take_server_time()
                })
            },
        );
    }
    g.finish();
}

/// Pushes everything else out of the CPU caches by writing a buffer larger than the last
/// level cache (32 MiB on the project machine; 64 MiB leaves room for bigger ones).
struct CacheEvictor {
    buf: Vec<u8>,
}

impl CacheEvictor {
    fn new() -> Self {
        CacheEvictor {
            buf: vec![1; 64 << 20],
        }
    }

    fn evict(&mut self) {
        for i in (0..self.buf.len()).step_by(64) {
            self.buf[i] = self.buf[i].wrapping_add(1);
        }
        std::hint::black_box(&self.buf);
    }
}

/// Recording transports: one publisher recorded by 100 recording transports on one shard
/// (plain RTP written into pooled buffers, no SRTP), against `forwarding/1_shards/100`'s
/// subscribers. Throughput in recorded packets.
fn recording(c: &mut Criterion) {
    let mut g = group(c, "recording");
    let recorders = 100usize;
    let mut f = Fanout::new(1, 0).expect("fan-out connects");
    f.add_recorders(recorders).expect("recorders added");
    // The recordings start at a keyframe (every 100th packet).
    for _ in 0..4 {
        f.stage(BATCH as usize, PAYLOAD);
        f.forward_staged();
        f.pump();
    }
    g.throughput(Throughput::Elements(recorders as u64));
    g.bench_function(BenchmarkId::new("1_shards", recorders), |b| {
        b.iter_custom(|iters| bursts(&mut f, iters, recorders))
    });
    g.finish();
}

/// Publisher messages per batch of `data` (a burst of chat messages).
const DATA_BATCH: u64 = 32;
/// A chat message's size.
const DATA_LEN: usize = 100;

/// Data channels: one publisher's messages to 100 subscribers on 1 or 2 shards, 100-byte
/// messages (and 1 KiB ones on one shard). Throughput in delivered messages.
fn data(c: &mut Criterion) {
    let mut g = group(c, "data");
    let subs = 100usize;
    for (shards, len) in [(1usize, DATA_LEN), (2, DATA_LEN), (1, 1024)] {
        let mut f = Fanout::with_data(shards, subs).expect("data fan-out connects");
        // SCTP's congestion windows open over the first bursts.
        for _ in 0..10 {
            f.deliver_data(DATA_BATCH as usize, len);
        }
        let size = if len == DATA_LEN {
            String::new()
        } else {
            format!("_{len}B")
        };
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(
            BenchmarkId::new(format!("{shards}_shards{size}"), subs),
            |b| b.iter_custom(|iters| data_bursts(&mut f, iters, subs, len)),
        );
    }
    g.finish();
}

/// `iters` publisher messages of `len` bytes through `f` in bursts of [`DATA_BATCH`], each
/// delivered to `subs` subscribers and acknowledged: the time of the shards' work.
fn data_bursts(f: &mut Fanout, iters: u64, subs: usize, len: usize) -> Duration {
    f.take_server_time();
    let mut delivered = 0;
    let mut left = iters;
    while left > 0 {
        let k = left.min(DATA_BATCH);
        delivered += f.deliver_data(k as usize, len);
        left -= k;
    }
    assert!(
        delivered >= iters * subs as u64,
        "only {delivered} of {} messages delivered",
        iters * subs as u64
    );
    f.take_server_time()
}

criterion_group!(benches, forwarding, forwarding_real_rate, recording, data);
criterion_main!(benches);
