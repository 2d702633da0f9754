//! Single pieces of the packet path, exposed for microbenchmarks: the shard-to-shard ring
//! and the demux table, the same types the shards use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use str0m::rtp::ExtensionValues;

use crate::engine::demux::{DemuxTable, Lookup};
use crate::engine::ring::{MediaPacket, ShardMsg};
use crate::engine::TrackKey;
use crate::wire::{classify, DatagramKind};

/// One shard-to-shard ring (bounded SPSC, `rtrb`) carrying media packets by value.
pub struct RingPair {
    producer: rtrb::Producer<ShardMsg>,
    consumer: rtrb::Consumer<ShardMsg>,
    packet: MediaPacket,
}

impl RingPair {
    /// A ring of `capacity` entries and a 1100-byte packet to send through it.
    pub fn new(capacity: usize) -> RingPair {
        let (producer, consumer) = rtrb::RingBuffer::new(capacity);
        let packet = MediaPacket {
            track: TrackKey::new(0, 1),
            source: 1,
            seq: 1,
            ts: 0,
            pt: 96,
            marker: true,
            keyframe: false,
            layer: Default::default(),
            arrival: Instant::now(),
            ext: ExtensionValues::default(),
            payload: Arc::from(vec![0u8; 1100]),
        };
        RingPair {
            producer,
            consumer,
            packet,
        }
    }

    /// Push `n` packets (clones: a reference-count bump each), then pop them all as the
    /// consuming shard does. Returns how many came out.
    pub fn transfer(&mut self, n: usize) -> usize {
        for i in 0..n {
            let mut p = self.packet.clone();
            p.seq = i as u64;
            if self.producer.push(ShardMsg::Media(p)).is_err() {
                break;
            }
        }
        let mut got = 0;
        while let Ok(m) = self.consumer.pop() {
            if matches!(m, ShardMsg::Media(_)) {
                got += 1;
            }
        }
        got
    }
}

/// A shard's demux table filled with `sessions` sessions, each with a bound remote
/// address and a local ufrag.
pub struct DemuxBench {
    table: DemuxTable,
}

impl DemuxBench {
    /// Session `i` has remote address `127.0.0.1:(10000 + i)` and ufrag `u{i:07}`.
    pub fn new(sessions: usize) -> DemuxBench {
        let mut table = DemuxTable::default();
        for i in 0..sessions {
            table.bind_addr(Self::addr(i), i);
            table.add_ufrag(format!("u{i:07}"), i);
        }
        DemuxBench { table }
    }

    /// The remote address of session `i`.
    pub fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10000 + (i % 50000) as u16)
    }

    /// What the shard does first with a datagram: classify it, then find its session.
    pub fn route(&self, data: &[u8], source: SocketAddr) -> Option<usize> {
        let kind = classify(data);
        if kind == DatagramKind::Unknown {
            return None;
        }
        match self.table.lookup(kind, data, source) {
            Lookup::Session { slot, .. } => Some(slot),
            _ => None,
        }
    }
}
