//! Recording on the shard: a recording transport's tracks leave as plain RTP (no ICE, no
//! DTLS, no SRTP) to the address its user gave, for ffmpeg or GStreamer to record.
//!
//! A recorded track is a down-track like a subscriber's ([`DownTrack`]): the same layer
//! selection (the top layer of a simulcast track), keyframe gate (the first video packet
//! sent is a keyframe; one is requested when recording starts) and sequence/timestamp
//! rewriting, so what the receiver gets is one contiguous stream with a fixed SSRC. Only
//! the last step differs: instead of handing the packet to a str0m session, the shard
//! writes the 12-byte RTP header and the payload into a pooled buffer
//! ([`write_plain_rtp`]) and queues it for the batch's `sendmmsg`. Every second each
//! recorded track also sends an RTCP sender report (with its CNAME) to the next port, which
//! maps its RTP timestamps to wall-clock time: a receiver recording audio and video of one
//! participant lines them up by it.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ShardCore;
use crate::engine::command::DownTrackSpec;
use crate::engine::route::DownTrack;
use crate::engine::SessionId;
use crate::error::RecordingError;

/// How often a recorded track sends an RTCP sender report.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The CNAME of every recorded stream's sender reports.
const CNAME: &[u8] = b"rheomesh";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Where a recorded track goes and what its sender reports need.
#[derive(Debug)]
pub(crate) struct PlainOut {
    /// RTP goes here; RTCP to the next port.
    pub(crate) dest: SocketAddr,
    pub(crate) ssrc: u32,
    clock_rate: u32,
    /// Packets and payload bytes sent (the sender report's counts).
    pub(crate) packets: u32,
    pub(crate) octets: u32,
    /// The RTP timestamp of the last packet sent and when it arrived from the publisher.
    last: Option<(u32, Instant)>,
    next_report: Option<Instant>,
}

impl PlainOut {
    /// A packet was sent: its RTP timestamp, arrival and payload length.
    pub(crate) fn on_sent(&mut self, ts: u32, arrival: Instant, payload: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload as u32);
        self.last = Some((ts, arrival));
    }
}

/// Write a plain RTP packet (RFC 3550: version 2, no padding, extension or CSRCs) into an
/// empty buffer.
pub(crate) fn write_plain_rtp(
    buf: &mut Vec<u8>,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &[u8],
) {
    buf.push(0x80);
    buf.push(((marker as u8) << 7) | (pt & 0x7f));
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ts.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.extend_from_slice(payload);
}

/// Write an RTCP sender report without report blocks, followed by an SDES chunk with the
/// CNAME (a compound packet, RFC 3550 6.1), into an empty buffer.
fn write_sender_report(
    buf: &mut Vec<u8>,
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
) {
    // SR: header, SSRC, NTP (64 bits), RTP timestamp, packet count, octet count: 7 words.
    buf.extend_from_slice(&[0x80, 200, 0, 6]);
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.extend_from_slice(&ntp.to_be_bytes());
    buf.extend_from_slice(&rtp_ts.to_be_bytes());
    buf.extend_from_slice(&packets.to_be_bytes());
    buf.extend_from_slice(&octets.to_be_bytes());
    // SDES: header, then one chunk: SSRC, CNAME item, end, padding to a word.
    let start = buf.len();
    buf.extend_from_slice(&[0x81, 202, 0, 0]);
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.push(1);
    buf.push(CNAME.len() as u8);
    buf.extend_from_slice(CNAME);
    buf.push(0);
    while !(buf.len() - start).is_multiple_of(4) {
        buf.push(0);
    }
    let words = ((buf.len() - start) / 4 - 1) as u16;
    buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// `at` as a 64-bit NTP timestamp, given the wall clock `wall` at the instant `now`.
fn ntp_of(at: Instant, now: Instant, wall: SystemTime) -> u64 {
    let t = if at <= now {
        wall.checked_sub(now - at)
    } else {
        wall.checked_add(at - now)
    };
    let since = t
        .unwrap_or(wall)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

impl ShardCore {
    /// Start sending a track of the recording session `id` to `dest` as plain RTP.
    pub(super) fn add_recording_track(
        &mut self,
        id: SessionId,
        spec: DownTrackSpec,
        dest: SocketAddr,
    ) -> Result<(), RecordingError> {
        let slot = self.slot_of(id).ok_or(RecordingError::Closed)?;
        let first = spec
            .params
            .first()
            .ok_or_else(|| RecordingError::NoCodec(spec.track_id.clone()))?;
        let clock_rate = first.spec().clock_rate.get();
        let pt = *first.pt();
        let dslot = self.downs.next_slot();
        let s = self.sessions.get_mut(slot).ok_or(RecordingError::Closed)?;
        // A mid of its own per track (never negotiated: it only keeps the down-track's
        // bookkeeping as a subscriber's).
        let mid = str0m::media::Mid::from(format!("r{}", s.downs.len()).as_str());
        s.downs.push(dslot);
        let ssrc = loop {
            let v = rand::random::<u32>();
            if v != 0 {
                break v;
            }
        };
        let mut down = DownTrack::new(spec.id, slot, spec.track, spec.kind, mid, spec.params);
        // The receiver's SDP describes the publisher's preferred payload type, as it is;
        // packets of another are not forwarded (counted as `dropped_no_codec`).
        down.pt_map[(pt & 0x7f) as usize] = pt;
        down.ssrc = Some(str0m::rtp::Ssrc::from(ssrc));
        down.plain = Some(Box::new(PlainOut {
            dest,
            ssrc,
            clock_rate,
            packets: 0,
            octets: 0,
            last: None,
            next_report: None,
        }));
        let got = self.downs.insert(down);
        debug_assert_eq!(got, dslot);
        self.down_by_id.insert(spec.id, dslot);
        self.routes.add_local(spec.track, dslot, spec.kind);
        // The first video packet sent must be a keyframe: ask for one now rather than at
        // the next packet the gate drops.
        if spec.kind == str0m::media::MediaKind::Video {
            if let Some(d) = self.downs.get(dslot) {
                self.want_keyframe.push((d.track, d.keyframe_rank()));
            }
        }
        Ok(())
    }

    /// The payload type the publisher of `track` (on this shard) last sent.
    pub(super) fn sent_payload_type(&self, track: crate::engine::TrackKey) -> Option<u8> {
        let &(slot, _) = self.ups.get(&track)?;
        let s = self.sessions.get(slot)?;
        let up = s.up.iter().find(|u| u.info.key == track)?;
        (up.last_pt != crate::engine::route::NO_PT).then_some(up.last_pt)
    }

    /// Sender reports of the recorded tracks whose turn it is (housekeeping).
    pub(super) fn send_recording_reports(&mut self, now: Instant) {
        let mut wall = None;
        for (_, d) in self.downs.iter_mut() {
            let Some(p) = d.plain.as_deref_mut() else {
                continue;
            };
            let Some((ts, at)) = p.last else {
                continue; // nothing sent yet: nothing to map
            };
            if p.next_report.is_some_and(|t| now < t) {
                continue;
            }
            p.next_report = Some(now + REPORT_EVERY);
            let wall = *wall.get_or_insert_with(SystemTime::now);
            // The timestamp now: the last packet's, advanced by the time since it arrived.
            let elapsed = now.saturating_duration_since(at);
            let advance = (elapsed.as_micros() as u64 * u64::from(p.clock_rate) / 1_000_000) as u32;
            let mut buf = str0m::net::take_datagram();
            write_sender_report(
                &mut buf,
                p.ssrc,
                ntp_of(now, now, wall),
                ts.wrapping_add(advance),
                p.packets,
                p.octets,
            );
            let rtcp = SocketAddr::new(p.dest.ip(), p.dest.port().wrapping_add(1));
            self.out.bytes_queued += buf.len() as u64;
            if let Some(s) = self.sessions.get_mut(d.session) {
                s.traffic.datagrams_out += 1;
                s.traffic.bytes_out += buf.len() as u64;
            }
            self.out.send.push(rtcp, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rtp_header() {
        let mut b = Vec::new();
        write_plain_rtp(&mut b, true, 96, 0x1234, 0xdead_beef, 0x0102_0304, &[9, 9]);
        assert_eq!(
            b,
            [0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 9, 9]
        );
    }

    #[test]
    fn sender_report_with_cname() {
        let mut b = Vec::new();
        write_sender_report(&mut b, 7, 0x0102_0304_0506_0708, 90_000, 3, 300);
        assert_eq!(&b[..4], &[0x80, 200, 0, 6]);
        assert_eq!(&b[8..16], &0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(&b[16..20], &90_000u32.to_be_bytes());
        assert_eq!(&b[20..24], &3u32.to_be_bytes());
        assert_eq!(&b[24..28], &300u32.to_be_bytes());
        let sdes = &b[28..];
        assert_eq!(sdes.len() % 4, 0);
        assert_eq!(sdes[1], 202);
        let words = u16::from_be_bytes([sdes[2], sdes[3]]) as usize;
        assert_eq!((words + 1) * 4, sdes.len());
        assert_eq!(&sdes[8..10], &[1, CNAME.len() as u8]);
        assert_eq!(&sdes[10..10 + CNAME.len()], CNAME);
    }

    #[test]
    fn ntp_time_of_an_instant() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(10) + Duration::from_millis(500);
        let ntp = ntp_of(now, now, wall);
        assert_eq!(ntp >> 32, 10 + NTP_UNIX_OFFSET);
        assert_eq!(ntp & 0xffff_ffff, 1 << 31);
        let earlier = ntp_of(now - Duration::from_secs(1), now, wall);
        assert_eq!(earlier >> 32, 9 + NTP_UNIX_OFFSET);
    }
}
