//! `cargo bench --bench forwarding`: the server's whole per-packet work through real str0m
//! sessions (SRTP decrypt at ingress, route, shard-to-shard ring, seq/ts rewrite, SRTP
//! encrypt per subscriber, batch end, dropping the sent buffers), on in-memory shards —
//! no sockets, so `sendmmsg` is not included. One publisher, N subscribers spread over
//! 1 or 2 shards (the publisher on shard 0); both shards run on the bench thread, so the
//! time is the CPU the shards spend together. Throughput is in forwarded packets
//! (one publisher packet forwarded to N subscribers counts N).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rheomesh::testing::Fanout;

/// Publisher packets per batch (one batch = one receive burst + one batch end).
const BATCH: u64 = 32;
const PAYLOAD: usize = 1100;

fn forwarding(c: &mut Criterion) {
    let mut g = c.benchmark_group("forwarding");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for shards in [1usize, 2] {
        for subs in [1usize, 10, 100] {
            let mut f = Fanout::new(shards, subs).expect("fan-out connects");
            g.throughput(Throughput::Elements(subs as u64));
            g.bench_function(BenchmarkId::new(format!("{shards}_shards"), subs), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let k = left.min(BATCH);
                        f.stage(k as usize, PAYLOAD);
                        let t = Instant::now();
                        let sent = f.forward_staged();
                        spent += t.elapsed();
                        assert!(
                            sent as u64 >= k * subs as u64,
                            "only {sent} of {} packets forwarded",
                            k * subs as u64
                        );
                        // Keep ICE consent and RTCP going, outside the measurement.
                        f.pump();
                        left -= k;
                    }
                    spent
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
