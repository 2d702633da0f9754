//! Server-reflexive discovery: the shard asks each configured STUN server (once per shard,
//! not per session) for the public address of its socket, and every session that wants
//! it gets that address as a local `srflx` candidate. Requests are retried a few times
//! from housekeeping; a server that never answers is given up on with one warning.
//!
//! The STUN messages themselves are built and parsed by [`crate::wire`] (`stun_client.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Candidate;

use super::ShardCore;
use crate::engine::command::SessionEvent;
use crate::engine::SessionId;
use crate::wire;

/// Attempts per STUN server before giving up, and the spacing between them.
const TRIES: u8 = 4;
const RETRY: Duration = Duration::from_millis(500);

/// Discovery of the shard's server-reflexive address from one STUN server.
pub(super) struct Probe {
    server: SocketAddr,
    txid: [u8; 12],
    sent_at: Instant,
    tries: u8,
    /// `None` while pending; `Some(None)` when the server never answered.
    result: Option<Option<SocketAddr>>,
    waiters: Vec<SessionId>,
}

impl ShardCore {
    /// Whether `source` is a STUN server this shard asked (its answers are ours, not a
    /// session's).
    pub(super) fn is_stun_server(&self, source: SocketAddr) -> bool {
        self.srflx.iter().any(|x| x.server == source)
    }

    /// Ask each STUN server (once per shard) for our mapped address on behalf of a session.
    pub(super) fn discover_srflx(
        &mut self,
        id: SessionId,
        slot: usize,
        servers: &[SocketAddr],
        now: Instant,
    ) {
        for &server in servers {
            if server.is_ipv4() != self.local_addr.is_ipv4() {
                continue;
            }
            match self.srflx.iter_mut().find(|x| x.server == server) {
                Some(x) => match x.result {
                    Some(Some(mapped)) => self.add_srflx_candidate(slot, mapped),
                    Some(None) => {}
                    None => x.waiters.push(id),
                },
                None => {
                    let txid: [u8; 12] = rand::random();
                    let request = wire::stun_binding_request(txid);
                    self.out.bytes_queued += request.len() as u64;
                    self.out.send.push(server, request.to_vec());
                    self.srflx.push(Probe {
                        server,
                        txid,
                        sent_at: now,
                        tries: 1,
                        result: None,
                        waiters: vec![id],
                    });
                }
            }
        }
    }

    /// A STUN response from one of our servers: hand the mapped address to the waiters.
    pub(super) fn on_stun_response(&mut self, data: &[u8], source: SocketAddr) {
        let Ok((txid, mapped)) = wire::stun_binding_response(data) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(x) = self
            .srflx
            .iter_mut()
            .find(|x| x.server == source && x.txid == txid && x.result.is_none())
        else {
            self.counters.stun_rejected += 1;
            return;
        };
        x.result = Some(Some(mapped));
        let waiters = std::mem::take(&mut x.waiters);
        for id in waiters {
            if let Some(slot) = self.slot_of(id) {
                self.add_srflx_candidate(slot, mapped);
            }
        }
    }

    /// Housekeeping: resend unanswered requests, give up after [`TRIES`].
    pub(super) fn retry_srflx(&mut self, now: Instant) {
        for x in &mut self.srflx {
            if x.result.is_none() && now.saturating_duration_since(x.sent_at) >= RETRY {
                if x.tries >= TRIES {
                    tracing::warn!(shard = self.id, server = %x.server, "STUN server did not answer");
                    x.result = Some(None);
                    x.waiters.clear();
                } else {
                    x.tries += 1;
                    x.sent_at = now;
                    let request = wire::stun_binding_request(x.txid);
                    self.out.bytes_queued += request.len() as u64;
                    self.out.send.push(x.server, request.to_vec());
                }
            }
        }
    }

    fn add_srflx_candidate(&mut self, slot: usize, mapped: SocketAddr) {
        if mapped == self.local_addr || mapped.is_ipv4() != self.local_addr.is_ipv4() {
            return;
        }
        let Ok(c) = Candidate::server_reflexive(mapped, self.local_addr, "udp") else {
            return;
        };
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        let span = s.span.clone();
        let _entered = span.enter();
        let text = c.to_sdp_string();
        s.guarded(|s| {
            s.rtc.add_local_candidate(c);
        });
        let _ = s.events.send(SessionEvent::LocalCandidate(text));
        self.after_mutation(slot);
    }
}
