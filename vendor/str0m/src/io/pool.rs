//! Rheomesh patch: a per-thread pool of datagram buffers for outgoing SRTP.
//!
//! `SrtpContext::protect_rtp` takes its output buffer from here instead of allocating one
//! per packet; a caller that is done with a sent [`DatagramSend`](super::DatagramSend)
//! hands the buffer back with [`recycle_datagram`]. Without recycling, behaviour is
//! unchanged: the pool is empty and buffers are allocated as before.

use std::cell::RefCell;

/// Buffers kept per thread at most.
const MAX_POOLED: usize = 4096;
/// Capacity of fresh buffers: any RTP packet under the MTU plus SRTP overhead fits, so a
/// recycled buffer never has to grow.
const BUFFER_CAPACITY: usize = super::DATAGRAM_MAX_PACKET_SIZE;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `len` bytes, from the pool when one is there.
pub(crate) fn take_zeroed(len: usize) -> Vec<u8> {
    let pooled = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
    match pooled {
        Some(mut v) if v.capacity() >= len => {
            v.clear();
            v.resize(len, 0);
            v
        }
        _ => {
            let mut v = Vec::with_capacity(len.max(BUFFER_CAPACITY));
            v.resize(len, 0);
            v
        }
    }
}

/// An empty buffer that holds any datagram (Rheomesh patch 19), from the pool when one
/// is there: for an application that builds datagrams of its own (plain RTP) next to
/// str0m's and hands them back with [`recycle_datagram`] once sent.
pub fn take_datagram() -> Vec<u8> {
    let mut v = take_zeroed(0);
    v.clear();
    v
}

/// Give a sent datagram's buffer back for reuse by SRTP encryption on this thread.
/// Buffers too small to hold a full packet, and buffers beyond the pool's bound, are
/// dropped.
pub fn recycle_datagram(buf: Vec<u8>) {
    if buf.capacity() < BUFFER_CAPACITY {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.capacity() == 0 {
            p.reserve_exact(MAX_POOLED);
        }
        if p.len() < MAX_POOLED {
            p.push(buf);
        }
    });
}
