//! The demux table: which session of a shard a datagram belongs to. The remote address
//! decides first (one hash lookup per datagram); a STUN request from an unknown address
//! is routed by the local ufrag in its USERNAME. Addresses are bound only once a session
//! has answered them (see `Session::drain`), so spoofed STUN cannot bind one.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::wire::{self, DatagramKind};

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// To the session in `slot`; `via_ufrag` when found by STUN USERNAME.
    Session { slot: usize, via_ufrag: bool },
    /// Not STUN from a known or routable source.
    UnknownSource,
    /// STUN whose USERNAME is unparseable or names no session.
    StunRejected,
}

/// Remote addresses and local ufrags of a shard's sessions.
#[derive(Default)]
pub(crate) struct DemuxTable {
    by_addr: HashMap<SocketAddr, usize>,
    by_ufrag: HashMap<String, usize>,
}

impl DemuxTable {
    /// Route a classified datagram (`kind` is not `Unknown`).
    #[inline]
    pub(crate) fn lookup(&self, kind: DatagramKind, data: &[u8], source: SocketAddr) -> Lookup {
        if let Some(&slot) = self.by_addr.get(&source) {
            return Lookup::Session {
                slot,
                via_ufrag: false,
            };
        }
        if kind != DatagramKind::Stun {
            return Lookup::UnknownSource;
        }
        match wire::stun_local_ufrag(data)
            .ok()
            .and_then(|u| std::str::from_utf8(u).ok())
            .and_then(|u| self.by_ufrag.get(u))
        {
            Some(&slot) => Lookup::Session {
                slot,
                via_ufrag: true,
            },
            None => Lookup::StunRejected,
        }
    }

    pub(crate) fn has_addr(&self, addr: &SocketAddr) -> bool {
        self.by_addr.contains_key(addr)
    }

    /// `addr` now belongs to the session in `slot`.
    pub(crate) fn bind_addr(&mut self, addr: SocketAddr, slot: usize) {
        self.by_addr.insert(addr, slot);
    }

    /// Forget `addr` if it still belongs to `slot`.
    pub(crate) fn unbind_addr(&mut self, addr: &SocketAddr, slot: usize) {
        if self.by_addr.get(addr) == Some(&slot) {
            self.by_addr.remove(addr);
        }
    }

    pub(crate) fn has_ufrag(&self, ufrag: &str) -> bool {
        self.by_ufrag.contains_key(ufrag)
    }

    /// STUN naming `ufrag` goes to `slot` (a session keeps old ufrags until it closes).
    pub(crate) fn add_ufrag(&mut self, ufrag: String, slot: usize) {
        self.by_ufrag.insert(ufrag, slot);
    }

    /// Forget every ufrag of `slot`.
    pub(crate) fn remove_ufrags(&mut self, slot: usize) {
        self.by_ufrag.retain(|_, v| *v != slot);
    }

    /// Remote addresses known.
    pub(crate) fn addrs(&self) -> usize {
        self.by_addr.len()
    }
}
