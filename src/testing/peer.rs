//! [`ClientPeer`]: a str0m client (full ICE, controlling, RTP mode) with no socket. It
//! publishes one VP8 track or receives what a subscribe transport offers.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// A synthetic VP8 payload of `len` bytes (at least 19): descriptor (S=1, PID 0), a
/// payload header marking a keyframe or not, then `counter` and `sent_us` big-endian.
pub fn vp8_payload(counter: u64, sent_us: u64, keyframe: bool, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(19));
    v.push(0x10);
    v.push(if keyframe { 0x00 } else { 0x01 });
    v.push(0x00);
    v.extend_from_slice(&counter.to_be_bytes());
    v.extend_from_slice(&sent_us.to_be_bytes());
    while v.len() < len {
        v.push(v.len() as u8);
    }
    v
}

/// A client peer. Feed it datagrams with [`ClientPeer::receive`], time with
/// [`ClientPeer::timeout`]; take what it sends with [`ClientPeer::take_outgoing`].
pub struct ClientPeer {
    rtc: Rtc,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    mid: Option<Mid>,
    pt: Option<Pt>,
    seq: u64,
    connected: bool,
    keyframe_requests: u64,
    rtp_received: u64,
    out: Vec<(SocketAddr, Vec<u8>)>,
    next_timeout: Instant,
}

impl ClientPeer {
    /// A peer whose (pretend) socket address is `addr`.
    pub fn new(addr: SocketAddr, now: Instant) -> ClientPeer {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut p = ClientPeer {
            rtc,
            addr,
            pending: None,
            mid: None,
            pt: None,
            seq: 1,
            connected: false,
            keyframe_requests: 0,
            rtp_received: 0,
            out: Vec::new(),
            next_timeout: now,
        };
        p.drain();
        p
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `candidate:...` value of the peer's host candidate.
    pub fn candidate(&self) -> String {
        Candidate::host(self.addr, "udp")
            .map(|c| c.to_sdp_string())
            .unwrap_or_default()
            .trim_start_matches("a=")
            .to_string()
    }

    /// The answer named a VP8 payload type to send with.
    pub fn can_send(&self) -> bool {
        self.pt.is_some()
    }

    /// ICE and DTLS are up.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// RTP packets received (subscriber side).
    pub fn rtp_received(&self) -> u64 {
        self.rtp_received
    }

    /// Keyframe requests received (publisher side).
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests
    }

    /// When the peer next wants [`ClientPeer::timeout`].
    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// An offer to publish one VP8 video track with track id `track_id`.
    pub fn publish_offer(&mut self, track_id: &str) -> String {
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some(format!("stream-{track_id}")),
            Some(track_id.to_string()),
            None,
        );
        self.mid = Some(mid);
        let applied = api.apply();
        let (offer, pending) = applied.expect("adding media is a change");
        self.pending = Some(pending);
        self.drain();
        offer.to_sdp_string()
    }

    /// Apply the server's answer to our offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let pending = self.pending.take().ok_or("no pending offer")?;
        let r = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain();
        r.map_err(|e| e.to_string())?;
        if let Some(mid) = self.mid {
            let params = self.rtc.codec_config().params().to_vec();
            self.pt = self.rtc.media(mid).and_then(|m| {
                m.remote_pts().iter().copied().find(|pt| {
                    params
                        .iter()
                        .any(|p| p.pt() == *pt && p.spec().codec == Codec::Vp8)
                })
            });
        }
        Ok(())
    }

    /// Answer a server offer (subscribe side).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let r = self.rtc.sdp_api().accept_offer(offer);
        self.drain();
        Ok(r.map_err(|e| e.to_string())?.to_sdp_string())
    }

    /// Write one VP8 packet on the published track (after the answer). The packet leaves
    /// on the next [`ClientPeer::timeout`].
    pub fn write_video(&mut self, ts: u32, payload: Vec<u8>, now: Instant) -> bool {
        let (Some(mid), Some(pt)) = (self.mid, self.pt) else {
            return false;
        };
        let seq = self.seq;
        self.seq += 1;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(true)
                .nackable(true),
        );
        true
    }

    /// A datagram from `source`.
    pub fn receive(&mut self, source: SocketAddr, data: &[u8], now: Instant) {
        let Ok(r) = Receive::new(Protocol::Udp, source, self.addr, data) else {
            return;
        };
        let input = Input::Receive(now, r);
        if self.rtc.accepts(&input) {
            let _ = self.rtc.handle_input(input);
            self.drain();
        }
    }

    /// Advance time.
    pub fn timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain();
    }

    /// Take the datagrams the peer wants sent: `(destination, contents)`.
    pub fn take_outgoing(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.out.drain(..)
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => self.out.push((t.destination, t.contents.into())),
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::RtpPacket(_) => self.rtp_received += 1,
                    Event::KeyframeRequest(_) => self.keyframe_requests += 1,
                    _ => {}
                },
                Err(_) => return,
            }
        }
    }
}
