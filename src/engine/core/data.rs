//! Data channels on the shard ([`crate::engine::data`]): publishing a peer's channel,
//! opening subscribers' channels, and moving each message from the publish session to the
//! subscribers' sessions (here and, through one ring entry per shard, on other shards).

use str0m::channel::ChannelId;
use tokio::sync::oneshot;

use super::ShardCore;
use crate::engine::command::SessionEvent;
use crate::engine::data::{
    ChannelChange, DataDown, DataInfo, DataPacket, DataUp, BUFFERED_LOW, MAX_QUEUED_BYTES,
};
use crate::engine::ring::ShardMsg;
use crate::engine::{DownTrackId, SessionId, TrackKey};
use crate::error::{PublishError, SubscribeError};

impl ShardCore {
    /// Publish the peer's channel `label` as data track `key`: answered now if the channel
    /// is open, else when it opens.
    pub(super) fn publish_data(
        &mut self,
        id: SessionId,
        label: String,
        key: TrackKey,
        reply: oneshot::Sender<Result<DataInfo, PublishError>>,
    ) {
        let Some(slot) = self.slot_of(id) else {
            let _ = reply.send(Err(PublishError::Closed));
            return;
        };
        let Some(s) = self.sessions.get_mut(slot) else {
            let _ = reply.send(Err(PublishError::Closed));
            return;
        };
        if s.data_up
            .iter()
            .any(|d| d.label == label && d.key.is_some())
        {
            let _ = reply.send(Err(PublishError::AlreadyPublished(label)));
            return;
        }
        let full = s.data_up.len() >= crate::engine::data::MAX_PUBLISHER_CHANNELS;
        let up = match s.data_up.iter_mut().find(|d| d.label == label) {
            Some(d) => d,
            None if full => {
                let _ = reply.send(Err(PublishError::TooManyDataChannels(label)));
                return;
            }
            None => {
                s.data_up.push(DataUp {
                    label,
                    key: None,
                    channel: None,
                    waiting: None,
                });
                let last = s.data_up.len() - 1;
                &mut s.data_up[last]
            }
        };
        up.key = Some(key);
        match up.info() {
            Some(info) => {
                let _ = reply.send(Ok(info));
            }
            None => up.waiting = Some(reply),
        }
    }

    /// Stop forwarding data track `key` of session `id`.
    pub(super) fn unpublish_data(&mut self, id: SessionId, key: TrackKey) {
        let Some(slot) = self.slot_of(id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(slot) {
            s.data_up.retain(|d| d.key != Some(key));
        }
    }

    /// Open a channel like `info`'s on subscribe session `id`; returns the offer, or `None`
    /// when the connection already has its SCTP m-line (the channel opens in-band, no
    /// renegotiation).
    pub(super) fn add_data_down(
        &mut self,
        id: SessionId,
        down: DownTrackId,
        info: DataInfo,
    ) -> Result<Option<String>, SubscribeError> {
        let slot = self.slot_of(id).ok_or(SubscribeError::Closed)?;
        let dslot = self.data_downs.next_slot();
        let s = self.sessions.get_mut(slot).ok_or(SubscribeError::Closed)?;
        let stops = std::mem::take(&mut s.to_stop);
        let anchor = s.anchor_mid;
        let config = info.channel_config();
        let r = s.guarded(|s| {
            let mut api = s.rtc.sdp_api();
            crate::engine::sdp::stop_m_lines(&mut api, &stops, anchor);
            let channel = api.add_channel_with_config(config);
            (channel, api.apply())
        });
        let (channel, applied) = match r {
            Some(x) => x,
            None => {
                self.counters.session_panics += 1;
                self.doom(slot);
                return Err(SubscribeError::SessionFailed("panic creating offer".into()));
            }
        };
        let offer_sdp = applied.map(|(offer, pending)| {
            let offer_sdp = offer.to_sdp_string();
            s.pending_offer = Some(crate::engine::session::PendingOffer {
                pending,
                mids: crate::engine::sdp::sdp_mids(&offer_sdp),
                ice_restart: false,
            });
            if s.anchor_mid.is_none() {
                s.anchor_mid = crate::engine::sdp::sdp_mids(&offer_sdp).first().copied();
            }
            offer_sdp
        });
        s.data_downs.push(dslot);
        let key = info.key;
        let got = self.data_downs.insert(DataDown {
            id: down,
            session: slot,
            info,
            channel,
            open: false,
            closed: false,
            queue: Default::default(),
            queued_bytes: 0,
        });
        debug_assert_eq!(got, dslot);
        self.data_down_by_id.insert(down, dslot);
        self.data_routes.add_local(key, dslot);
        self.after_mutation(slot);
        Ok(offer_sdp)
    }

    /// Close a subscriber's data channel and stop forwarding to it.
    pub(super) fn remove_data_down(&mut self, id: SessionId, down: DownTrackId) {
        let Some(dslot) = self.data_down_by_id.remove(&down) else {
            return;
        };
        let Some(d) = self.data_downs.remove(dslot) else {
            return;
        };
        self.data_routes.remove_local(d.info.key, dslot);
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(slot) {
            s.data_downs.retain(|x| *x != dslot);
            if !d.closed {
                let _ = s.guarded(|s| s.rtc.direct_api().close_data_channel(d.channel));
            }
        }
        self.after_mutation(slot);
    }

    /// What sessions' drains produced for data channels: messages to route, channels that
    /// opened or closed. The subscribers' sessions written to are drained at the batch end
    /// ([`ShardCore::tick`]), as those on other shards are: a burst that arrives in several
    /// of the publisher's datagrams leaves in few SCTP packets per subscriber, not in one
    /// per datagram (and nothing is sent before the batch end anyway).
    pub(super) fn route_data_out(&mut self) {
        self.counters.data_dropped += std::mem::take(&mut self.out.data_too_large);
        let mut channels = std::mem::take(&mut self.out.channels);
        for (slot, channel, change) in channels.drain(..) {
            self.channel_changed(slot, channel, change);
        }
        self.out.channels = channels;
        if self.out.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.out.data);
        self.counters.data_in += data.len() as u64;
        for pkt in data.drain(..) {
            if let Some(route) = self.data_routes.map.get(&pkt.key) {
                for &(dest, _) in &route.remote {
                    let Some(Some(p)) = self.producers.get_mut(dest) else {
                        continue;
                    };
                    match p.push(ShardMsg::Data(pkt.clone())) {
                        Ok(()) => self.wake_peer[dest] = true,
                        Err(_) => self.counters.ring_full_drops += 1,
                    }
                }
            }
            self.deliver_data(&pkt);
        }
        self.out.data = data;
    }

    /// A data channel of session `slot` opened, closed or drained.
    fn channel_changed(&mut self, slot: usize, channel: ChannelId, change: ChannelChange) {
        if change == ChannelChange::Refused {
            self.counters.data_channels_refused += 1;
            return;
        }
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        // A publisher's channel closing ends its data track (the API unpublishes it).
        if change == ChannelChange::Closed {
            if let Some(i) = s
                .data_up
                .iter()
                .position(|d| d.channel.as_ref().is_some_and(|(c, _)| *c == channel))
            {
                let up = s.data_up.remove(i);
                let _ = s.events.send(SessionEvent::DataChannelClosed(up.label));
                return;
            }
        }
        let Some(dslot) = s
            .data_downs
            .iter()
            .copied()
            .find(|&d| self.data_downs.get(d).is_some_and(|d| d.channel == channel))
        else {
            return;
        };
        let Some(d) = self.data_downs.get_mut(dslot) else {
            return;
        };
        match change {
            ChannelChange::Open => {
                d.open = true;
                let _ = s.guarded(|s| {
                    if let Some(mut c) = s.rtc.channel(channel) {
                        c.set_buffered_amount_low_threshold(BUFFERED_LOW);
                    }
                });
            }
            ChannelChange::Closed => {
                if !d.closed {
                    d.closed = true;
                    self.counters.data_dropped += d.queue.len() as u64;
                    d.queue.clear();
                    d.queued_bytes = 0;
                    let _ = s.events.send(SessionEvent::DataClosed(d.id));
                }
            }
            ChannelChange::Refused => {}
            ChannelChange::Low => {
                // Room again: what waited goes first, in order.
                while let Some((binary, payload)) = d.queue.front() {
                    let written = s.guarded(|s| {
                        s.rtc
                            .channel(channel)
                            .map(|mut c| c.write(*binary, payload))
                    });
                    match written {
                        Some(Some(Ok(true))) => {
                            self.counters.data_forwarded += 1;
                        }
                        Some(Some(Ok(false))) => break,
                        _ => self.counters.data_dropped += 1,
                    }
                    d.queued_bytes -= payload.len();
                    d.queue.pop_front();
                }
                if !self.data_touched.contains(&slot) {
                    self.data_touched.push(slot);
                }
            }
        }
    }

    /// Write one message into this shard's subscribers' channels of its track: at once if
    /// the subscriber's SCTP buffer has room and nothing waits, else behind what waits,
    /// up to [`MAX_QUEUED_BYTES`]; beyond that an unreliable channel loses the message and
    /// a reliable one is closed.
    pub(super) fn deliver_data(&mut self, pkt: &DataPacket) {
        let Some(route) = self.data_routes.map.get(&pkt.key) else {
            return;
        };
        for &dslot in &route.local {
            let Some(d) = self.data_downs.get_mut(dslot) else {
                continue;
            };
            if d.closed {
                continue;
            }
            if !d.open {
                self.counters.data_dropped += 1;
                continue;
            }
            let Some(s) = self.sessions.get_mut(d.session) else {
                continue;
            };
            let written = if d.queue.is_empty() {
                s.guarded(|s| {
                    s.rtc
                        .channel(d.channel)
                        .map(|mut c| c.write(pkt.binary, &pkt.payload))
                })
            } else {
                Some(Some(Ok(false)))
            };
            match written {
                Some(Some(Ok(true))) => {
                    self.counters.data_forwarded += 1;
                    if !self.data_touched.contains(&d.session) {
                        self.data_touched.push(d.session);
                    }
                }
                Some(Some(Ok(false))) if d.queued_bytes + pkt.payload.len() <= MAX_QUEUED_BYTES => {
                    d.queued_bytes += pkt.payload.len();
                    d.queue.push_back((pkt.binary, pkt.payload.clone()));
                }
                // Further behind than the queue allows: it does not keep up.
                Some(Some(Ok(false))) if d.info.reliable() => {
                    // Closing rather than losing a message silently on a reliable channel.
                    d.closed = true;
                    self.counters.data_channels_closed_slow += 1;
                    self.counters.data_dropped += d.queue.len() as u64 + 1;
                    d.queue.clear();
                    d.queued_bytes = 0;
                    let channel = d.channel;
                    let _ = s.guarded(|s| s.rtc.direct_api().close_data_channel(channel));
                    let _ = s.events.send(SessionEvent::DataClosed(d.id));
                    tracing::info!(
                        session = s.id.0,
                        label = %d.info.label,
                        "reliable data channel closed: the subscriber does not keep up"
                    );
                    if !self.data_touched.contains(&d.session) {
                        self.data_touched.push(d.session);
                    }
                }
                Some(Some(Ok(false))) => self.counters.data_dropped += 1,
                Some(Some(Err(_))) | Some(None) => self.counters.data_dropped += 1,
                None => self.counters.session_panics += 1,
            }
        }
    }

    /// Drain the sessions whose channels were written to: SCTP sends what it can now.
    pub(super) fn flush_data_sessions(&mut self) {
        let mut touched = std::mem::take(&mut self.data_touched);
        for slot in touched.drain(..) {
            self.after_mutation(slot);
        }
        self.data_touched = touched;
    }
}
