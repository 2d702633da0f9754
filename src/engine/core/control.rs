//! Commands from the API side and SDP negotiation, on the shard thread: creating sessions
//! (ICE-lite str0m sessions in RTP mode with their host and announced candidates),
//! accepting a publisher's offer (which tracks it sends), adding and removing down-tracks
//! on a subscribe session and the offers/answers that go with them, remote candidates,
//! ICE restarts and closing.
//!
//! Every str0m call that can panic runs inside [`Session::guarded`]; a panic fails that
//! session only. The SDP text helpers are in [`crate::engine::sdp`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Rid, Rids, Simulcast, SimulcastLayer};
use str0m::{Candidate, IceCreds, Rtc};

use super::ShardCore;
use crate::engine::command::{
    CloseReason, Command, DownTrackSpec, Role, SessionCreated, SessionEvent, SessionSpec, TrackInfo,
};
use crate::engine::route::DownTrack;
use crate::engine::sdp::{answer_in_offer_order, sdp_mids, sdp_msids, stop_m_lines};
use crate::engine::session::{DdCapture, PendingOffer, Session, UpTrack};
use crate::engine::{next_id, DownTrackId, SessionId, TrackKey};
use crate::error::{NegotiationError, SubscribeError, TransportError};
use crate::forward::{MAX_INITIAL_BPS, MAX_LAYERS, MIN_INITIAL_BPS};

impl ShardCore {
    /// One command from the API side.
    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        let span = match &cmd {
            Command::AcceptOffer { id, .. }
            | Command::AddRemoteCandidate { id, .. }
            | Command::AddDownTrack { id, .. }
            | Command::AcceptViewerOffer { id, .. }
            | Command::RemoveDownTrack { id, .. }
            | Command::AddRecordingTrack { id, .. }
            | Command::PublishData { id, .. }
            | Command::UnpublishData { id, .. }
            | Command::AddDataDown { id, .. }
            | Command::RemoveDataDown { id, .. }
            | Command::SetPreferredLayer { id, .. }
            | Command::CreateOffer { id, .. }
            | Command::AcceptAnswer { id, .. }
            | Command::CloseSession { id }
            | Command::TransportStats { id, .. } => self.span_of(*id),
            _ => tracing::Span::none(),
        };
        let _entered = span.enter();
        match cmd {
            Command::CreateSession { spec, reply } => {
                let created = self.create_session(*spec, now);
                let _ = reply.send(created);
            }
            Command::AcceptOffer {
                id,
                sdp,
                offer,
                reply,
            } => {
                let r = self.accept_offer(id, &sdp, *offer);
                let _ = reply.send(r);
            }
            Command::AddRemoteCandidate {
                id,
                candidate,
                reply,
            } => {
                let r = self.add_remote_candidate(id, &candidate);
                let _ = reply.send(r);
            }
            Command::AcceptViewerOffer {
                id,
                sdp,
                offer,
                specs,
                reply,
            } => {
                let r = self.accept_viewer_offer(id, &sdp, *offer, specs, now);
                let _ = reply.send(r);
            }
            Command::AddDownTrack { id, spec, reply } => {
                let r = self.add_down_track(id, *spec);
                let _ = reply.send(r);
            }
            Command::AddRecordingTrack {
                id,
                spec,
                dest,
                reply,
            } => {
                let r = self.add_recording_track(id, *spec, dest);
                let _ = reply.send(r);
            }
            Command::PublishData {
                id,
                label,
                key,
                reply,
            } => self.publish_data(id, label, key, reply),
            Command::UnpublishData { id, key } => self.unpublish_data(id, key),
            Command::AddDataDown {
                id,
                down,
                info,
                reply,
            } => {
                let r = self.add_data_down(id, down, *info);
                let _ = reply.send(r);
            }
            Command::RemoveDataDown { id, down } => self.remove_data_down(id, down),
            Command::AddRemoteDataRoute { key, dest } => self.data_routes.add_remote(key, dest),
            Command::RemoveRemoteDataRoute { key, dest } => {
                self.data_routes.remove_remote(key, dest)
            }
            Command::SentPayloadType { track, reply } => {
                let _ = reply.send(self.sent_payload_type(track));
            }
            Command::RemoveDownTrack { id, down } => self.remove_down_track(id, down),
            Command::SetPreferredLayer { id: _, down, layer } => {
                if let Some(d) = self
                    .down_by_id
                    .get(&down)
                    .and_then(|&d| self.downs.get_mut(d))
                {
                    d.preferred = layer;
                    d.retarget();
                    // The allocation follows at the next housekeeping, not in up to 500 ms.
                    if let Some(bwe) = self
                        .sessions
                        .get_mut(d.session)
                        .and_then(|s| s.bwe.as_mut())
                    {
                        bwe.last_run = None;
                    }
                }
            }
            Command::CreateOffer {
                id,
                ice_restart,
                reply,
            } => {
                let r = self.create_offer(id, ice_restart);
                let _ = reply.send(r);
            }
            Command::AcceptAnswer {
                id,
                sdp,
                answer,
                reply,
            } => {
                let r = self.accept_answer(id, &sdp, *answer, now);
                let _ = reply.send(r);
            }
            Command::AddRemoteRoute { track, dest } => self.routes.add_remote(track, dest),
            Command::RemoveRemoteRoute { track, dest } => self.routes.remove_remote(track, dest),
            Command::CloseSession { id } => {
                if let Some(&slot) = self.by_id.get(&id) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        s.guarded(|s| s.rtc.disconnect());
                        if s.dead.is_none() {
                            s.dead = Some(CloseReason::Requested);
                        }
                    }
                    self.after_mutation(slot);
                    self.doom(slot);
                }
            }
            #[cfg(feature = "testing")]
            Command::InjectPanic { id } => {
                if let Some(&slot) = self.by_id.get(&id) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        let r: Option<()> = s.guarded(|_| panic!("injected by a test"));
                        if r.is_none() {
                            self.counters.session_panics += 1;
                            self.doom(slot);
                        }
                    }
                }
            }
            // The driver sleeps for it (`Shard::handle_commands`); in memory it is a no-op.
            #[cfg(feature = "testing")]
            Command::Pause(_) => {}
            Command::Stats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::TransportStats { id, reply } => {
                let _ = reply.send(self.transport_stats(id));
            }
            Command::Shutdown => self.running = false,
        }
    }

    fn create_session(&mut self, spec: SessionSpec, now: Instant) -> SessionCreated {
        let ufrag = loop {
            let u = Alphanumeric.sample_string(&mut rand::rng(), 8);
            if !self.demux.has_ufrag(&u) {
                break u;
            }
        };
        let pass = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let mut cfg = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(!spec.full_ice)
            .set_crypto_provider(crate::engine::dtls::crypto_provider())
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            });
        if let Some(cert) = &self.dtls_cert {
            cfg = cfg.set_dtls_cert(cert.clone());
        }
        let bwe = spec.role == Role::Subscribe && spec.media.bandwidth_estimation.is_some();
        if let (true, Some(bps)) = (bwe, spec.media.bandwidth_estimation) {
            cfg = cfg.enable_bwe(Some(str0m::bwe::Bitrate::bps(
                bps.clamp(MIN_INITIAL_BPS, MAX_INITIAL_BPS),
            )));
        }
        let mut rtc = spec.media.apply(cfg).build(now);
        if bwe {
            // Padding only up to what the allocator asks for (`Allocation::minimum`).
            rtc.bwe().set_automatic_padding(false);
        }
        let mut candidates = Vec::new();
        if let Ok(c) = Candidate::host(self.local_addr, "udp") {
            candidates.push(c.to_sdp_string());
            rtc.add_local_candidate(c);
        }
        for ip in &spec.announced_ips {
            let addr = SocketAddr::new(*ip, self.local_addr.port());
            if addr == self.local_addr || ip.is_ipv4() != self.local_addr.is_ipv4() {
                continue;
            }
            if let Ok(c) = Candidate::server_reflexive(addr, self.local_addr, "udp") {
                candidates.push(c.to_sdp_string());
                rtc.add_local_candidate(c);
            }
        }
        let slot = self.sessions.next_slot();
        // A child of the shard's span (the current one on the shard thread).
        let span = tracing::info_span!(
            "session",
            transport = spec.id.0,
            router = %spec.router,
            role = spec.role.as_str(),
        );
        let entered = span.clone().entered();
        let session = Session {
            id: spec.id,
            slot,
            role: spec.role,
            rtc,
            span,
            traffic: Default::default(),
            ufrag: ufrag.clone(),
            events: spec.events,
            deadline: now,
            addrs: Vec::new(),
            remote_candidates: 0,
            created: now,
            last_rx: now,
            connected: false,
            connect_timeout: spec.connect_timeout,
            idle_timeout: spec.idle_timeout,
            dead: None,
            dirty: false,
            doomed: false,
            up: Vec::new(),
            up_by_ssrc: Vec::new(),
            pending_offer: None,
            remote_ufrag: None,
            downs: Vec::new(),
            to_stop: Vec::new(),
            awaiting_answer: Vec::new(),
            bwe: bwe.then(Default::default),
            dd: None,
            data_up: Vec::new(),
            data_downs: Vec::new(),
            anchor_mid: None,
            #[cfg(feature = "testing")]
            full_ice: spec.full_ice,
            #[cfg(feature = "testing")]
            srtp_sent: 0,
        };
        let got = self.sessions.insert(session);
        debug_assert_eq!(got, slot);
        self.by_id.insert(spec.id, slot);
        self.demux.add_ufrag(ufrag.clone(), slot);
        self.timers.schedule(now, slot);
        self.after_mutation(slot);
        self.discover_srflx(spec.id, slot, &spec.stun_servers, now);
        drop(entered);
        SessionCreated { candidates, ufrag }
    }

    /// Keep the ufrag map in step with the session's current local credentials (they
    /// change on ICE restart). The old ufrag stays valid until the session closes.
    fn sync_ufrag(&mut self, slot: usize) {
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        let u = s.rtc.direct_api().local_ice_credentials().ufrag;
        if u != s.ufrag {
            s.ufrag = u.clone();
            self.demux.add_ufrag(u, slot);
        }
    }

    fn add_remote_candidate(&mut self, id: SessionId, cand: &str) -> Result<(), TransportError> {
        let slot = self.slot_of(id).ok_or(TransportError::Closed)?;
        let text = cand.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        if text.is_empty() {
            return Ok(()); // end of candidates
        }
        let c = Candidate::from_sdp_string(text)
            .map_err(|e| TransportError::InvalidCandidate(e.to_string()))?;
        let s = self.sessions.get_mut(slot).ok_or(TransportError::Closed)?;
        if s.remote_candidates >= crate::config::MAX_REMOTE_CANDIDATES {
            self.counters.candidates_refused += 1;
            return Err(TransportError::TooManyCandidates(
                crate::config::MAX_REMOTE_CANDIDATES,
            ));
        }
        s.remote_candidates += 1;
        s.guarded(|s| s.rtc.add_remote_candidate(c));
        self.after_mutation(slot);
        Ok(())
    }

    fn accept_offer(
        &mut self,
        id: SessionId,
        sdp: &str,
        offer: SdpOffer,
    ) -> Result<(String, Vec<TrackInfo>), NegotiationError> {
        let slot = self.slot_of(id).ok_or(NegotiationError::Closed)?;
        let shard = self.id;
        let s = self
            .sessions
            .get_mut(slot)
            .ok_or(NegotiationError::Closed)?;
        let had_tracks = !s.up.is_empty();
        let answer = match s.guarded(|s| s.rtc.sdp_api().accept_offer(offer)) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                let err = NegotiationError::InvalidSdp(e.to_string());
                // str0m may have given up on the session (e.g. missing fingerprint).
                if !s.rtc.is_alive() {
                    s.dead = Some(CloseReason::Failed(e.to_string()));
                    self.doom(slot);
                }
                return Err(err);
            }
            None => {
                self.counters.session_panics += 1;
                self.doom(slot);
                return Err(NegotiationError::SessionFailed(
                    "panic in accept_offer".into(),
                ));
            }
        };
        let answer_sdp = answer_in_offer_order(sdp, &answer.to_sdp_string());
        tracing::trace!(session = id.0, offer = %sdp, answer = %answer_sdp, "publish negotiation");
        let msids = sdp_msids(sdp);
        // Walk the answer's m-lines (validated by str0m) for the received tracks.
        let mut new_ups = Vec::new();
        for mid in sdp_mids(&answer_sdp) {
            let Some(media) = s.rtc.media(mid) else {
                continue;
            };
            let kind = media.kind();
            if kind != MediaKind::Audio && kind != MediaKind::Video {
                continue;
            }
            let receiving = media.direction().is_receiving() && !media.disabled();
            let remote_pts: Vec<_> = media.remote_pts().to_vec();
            let params: Vec<_> = s
                .rtc
                .codec_config()
                .params()
                .iter()
                .filter(|p| remote_pts.contains(&p.pt()))
                .copied()
                .collect();
            let (stream_id, track_id) = match msids.iter().find(|(m, _, _)| *m == mid) {
                Some((_, s, t)) => (s.clone(), t.clone()),
                None => (media.stream_id().to_string(), media.track_id().to_string()),
            };
            let active = receiving && !params.is_empty();
            let rids = match media.rids_rx() {
                Rids::Specific(r) => r.clone(),
                _ => Vec::new(),
            };
            let layers = if kind == MediaKind::Video && rids.len() > 1 {
                rids.len().min(MAX_LAYERS) as u8
            } else {
                1
            };
            match s.up.iter_mut().find(|u| u.mid == mid) {
                Some(u) => {
                    u.info.active = active;
                    if active {
                        *u = UpTrack::new(
                            mid,
                            TrackInfo {
                                params,
                                layers,
                                ..u.info.clone()
                            },
                            &rids,
                        );
                    }
                }
                None if active => {
                    let info = TrackInfo {
                        key: TrackKey::new(shard, next_id()),
                        track_id,
                        stream_id,
                        kind,
                        params,
                        active: true,
                        layers,
                    };
                    new_ups.push(info.key);
                    s.up.push(UpTrack::new(mid, info, &rids));
                }
                None => {}
            }
        }
        s.up_by_ssrc.clear();
        // The dependency descriptor's id, if the offer negotiated it on a video m-line.
        let dd_id = s.up.iter().find_map(|u| {
            s.rtc.media(u.mid).and_then(|m| {
                m.remote_extmap()
                    .iter()
                    .find(|(_, e)| e.as_uri() == crate::config::DEPENDENCY_DESCRIPTOR_URI)
                    .map(|(id, _)| id)
            })
        });
        match (dd_id, s.dd.as_mut()) {
            (Some(id), Some(d)) => d.id = id,
            (Some(id), None) => s.dd = Some(Box::new(DdCapture::new(id))),
            (None, _) => s.dd = None,
        }
        let tracks: Vec<TrackInfo> = s.up.iter().map(|u| u.info.clone()).collect();
        let has_data = answer_sdp.contains("\nm=application ");
        if !had_tracks && !has_data && !tracks.iter().any(|t| t.active) {
            // Nothing we can receive: the offer is useless. Undo nothing (str0m has applied
            // it), but tell the caller clearly.
            self.after_mutation(slot);
            return Err(NegotiationError::NoUsableMedia);
        }
        for key in new_ups {
            if let Some(u) = s.up.iter().find(|u| u.info.key == key) {
                self.ups.insert(key, (slot, u.mid));
            }
        }
        self.sync_ufrag(slot);
        self.after_mutation(slot);
        Ok((answer_sdp, tracks))
    }

    fn add_down_track(
        &mut self,
        id: SessionId,
        spec: DownTrackSpec,
    ) -> Result<String, SubscribeError> {
        let slot = self.slot_of(id).ok_or(SubscribeError::Closed)?;
        let dslot = self.downs.next_slot();
        let s = self.sessions.get_mut(slot).ok_or(SubscribeError::Closed)?;
        let stops = std::mem::take(&mut s.to_stop);
        let anchor = s.anchor_mid;
        // A relay of a simulcast track sends every encoding: one stream per rank.
        let pinned = spec.relay && spec.kind == MediaKind::Video && spec.layers > 1;
        let rids: Vec<Rid> = if pinned {
            (0..spec.layers).map(relay_rid).collect()
        } else {
            Vec::new()
        };
        let simulcast = pinned.then(|| {
            let mut sim = Simulcast::new();
            for r in &rids {
                sim.add_send_layer(SimulcastLayer::new(r));
            }
            sim
        });
        let r = s.guarded(|s| {
            let mut api = s.rtc.sdp_api();
            stop_m_lines(&mut api, &stops, anchor);
            let mid = api.add_media(
                spec.kind,
                Direction::SendOnly,
                Some(spec.stream_id.clone()),
                Some(spec.track_id.clone()),
                simulcast,
            );
            api.apply().map(|(offer, pending)| (mid, offer, pending))
        });
        let (mid, offer, pending) = match r {
            Some(Some(x)) => x,
            Some(None) => return Err(SubscribeError::SessionFailed("no offer produced".into())),
            None => {
                self.counters.session_panics += 1;
                self.doom(slot);
                return Err(SubscribeError::SessionFailed("panic creating offer".into()));
            }
        };
        let offer_sdp = offer.to_sdp_string();
        s.pending_offer = Some(PendingOffer {
            pending,
            mids: sdp_mids(&offer_sdp),
            ice_restart: false,
        });
        s.anchor_mid.get_or_insert(mid);
        // One down-track per encoding sent: the first has the subscription's id, the
        // others are its companions.
        let ids: Vec<DownTrackId> = (0..rids.len().max(1))
            .map(|i| {
                if i == 0 {
                    spec.id
                } else {
                    DownTrackId(next_id())
                }
            })
            .collect();
        for (i, &did) in ids.iter().enumerate() {
            let dslot = if i == 0 {
                dslot
            } else {
                self.downs.next_slot()
            };
            s.downs.push(dslot);
            s.awaiting_answer.push(did);
            let mut down =
                DownTrack::new(did, slot, spec.track, spec.kind, mid, spec.params.clone());
            down.relay = spec.relay;
            down.pin = rids.get(i).map(|r| (i as u8, *r));
            if i == 0 {
                down.companions = ids[1..].to_vec();
            }
            let got = self.downs.insert(down);
            debug_assert_eq!(got, dslot);
            self.down_by_id.insert(did, dslot);
            self.routes.add_local(spec.track, dslot, spec.kind);
        }
        self.after_mutation(slot);
        Ok(offer.to_sdp_string())
    }

    fn accept_viewer_offer(
        &mut self,
        id: SessionId,
        sdp: &str,
        offer: SdpOffer,
        specs: Vec<DownTrackSpec>,
        now: Instant,
    ) -> Result<(String, Vec<DownTrackId>), SubscribeError> {
        let slot = self.slot_of(id).ok_or(SubscribeError::Closed)?;
        let s = self.sessions.get_mut(slot).ok_or(SubscribeError::Closed)?;
        if s.pending_offer.is_some() {
            return Err(SubscribeError::BadOffer(
                "this transport has an offer of its own waiting for an answer".into(),
            ));
        }
        let first = s.downs.is_empty();
        let answer = match s.guarded(|s| s.rtc.sdp_api().accept_offer(offer)) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                if !s.rtc.is_alive() {
                    s.dead = Some(CloseReason::Failed(e.to_string()));
                    self.doom(slot);
                }
                return Err(SubscribeError::BadOffer(e.to_string()));
            }
            None => {
                self.counters.session_panics += 1;
                self.doom(slot);
                return Err(SubscribeError::SessionFailed(
                    "panic in accept_offer".into(),
                ));
            }
        };
        let answer_sdp = answer_in_offer_order(sdp, &answer.to_sdp_string());
        s.remote_ufrag = sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .map(str::to_string);
        let mut bound = Vec::new();
        if first {
            let mut specs: Vec<Option<DownTrackSpec>> = specs.into_iter().map(Some).collect();
            for mid in sdp_mids(&answer_sdp) {
                let Some(media) = s.rtc.media(mid) else {
                    continue;
                };
                if !media.direction().is_sending() {
                    continue;
                }
                let kind = media.kind();
                let remote_pts: Vec<_> = media.remote_pts().to_vec();
                let Some(spec) = specs
                    .iter_mut()
                    .find(|x| x.as_ref().is_some_and(|x| x.kind == kind))
                    .and_then(Option::take)
                else {
                    continue;
                };
                let dslot = self.downs.next_slot();
                let mut d = DownTrack::new(spec.id, slot, spec.track, spec.kind, mid, spec.params);
                for p in &d.spec_params {
                    if let Some(local) = s.rtc.codec_config().match_params(*p) {
                        let lpt = local.pt();
                        if remote_pts.contains(&lpt) {
                            d.pt_map[(*p.pt() & 0x7f) as usize] = *lpt;
                            d.ssrc = Some(0.into());
                        }
                    }
                }
                // Mapped to a payload type the viewer takes: bind it to the m-line's stream.
                let tx = s.rtc.direct_api().stream_tx_by_mid(mid, None).map(|tx| {
                    tx.set_rtx_cache(0, Duration::ZERO, None);
                    tx.set_external_rtx(kind == MediaKind::Video);
                    tx.ssrc()
                });
                if d.ssrc.is_none() || tx.is_none() {
                    continue;
                }
                d.ssrc = tx;
                s.anchor_mid.get_or_insert(mid);
                s.downs.push(dslot);
                if d.kind == MediaKind::Video {
                    d.keyframe_retry.record(now);
                    self.want_keyframe.push((d.track, d.keyframe_rank()));
                }
                let (track, did, dkind) = (d.track, d.id, d.kind);
                let got = self.downs.insert(d);
                debug_assert_eq!(got, dslot);
                self.down_by_id.insert(did, dslot);
                self.routes.add_local(track, dslot, dkind);
                bound.push(did);
            }
        }
        self.sync_ufrag(slot);
        self.after_mutation(slot);
        Ok((answer_sdp, bound))
    }

    fn remove_down_track(&mut self, id: SessionId, down: DownTrackId) {
        let Some(dslot) = self.down_by_id.remove(&down) else {
            return;
        };
        let Some(d) = self.downs.remove(dslot) else {
            return;
        };
        self.routes.remove_local(d.track, dslot);
        for c in &d.companions {
            // The m-line's other encodings: stopped with it.
            if let Some(cslot) = self.down_by_id.remove(c) {
                if let Some(cd) = self.downs.remove(cslot) {
                    self.routes.remove_local(cd.track, cslot);
                }
                if let Some(&slot) = self.by_id.get(&id) {
                    if let Some(s) = self.sessions.get_mut(slot) {
                        s.downs.retain(|x| *x != cslot);
                        s.awaiting_answer.retain(|x| x != c);
                    }
                }
            }
        }
        if let Some(&slot) = self.by_id.get(&id) {
            if let Some(s) = self.sessions.get_mut(slot) {
                s.downs.retain(|x| *x != dslot);
                s.awaiting_answer.retain(|x| *x != down);
                s.to_stop.push(d.mid);
            }
        }
    }

    fn create_offer(
        &mut self,
        id: SessionId,
        ice_restart: bool,
    ) -> Result<Option<String>, NegotiationError> {
        let slot = self.slot_of(id).ok_or(NegotiationError::Closed)?;
        let s = self
            .sessions
            .get_mut(slot)
            .ok_or(NegotiationError::Closed)?;
        let stops = std::mem::take(&mut s.to_stop);
        let anchor = s.anchor_mid;
        let r = s.guarded(|s| {
            let mut api = s.rtc.sdp_api();
            stop_m_lines(&mut api, &stops, anchor);
            if ice_restart {
                api.ice_restart(true);
            }
            api.apply()
        });
        let offer = match r {
            Some(Some((offer, pending))) => {
                let offer_sdp = offer.to_sdp_string();
                s.pending_offer = Some(PendingOffer {
                    pending,
                    mids: sdp_mids(&offer_sdp),
                    ice_restart,
                });
                Some(offer_sdp)
            }
            Some(None) => None,
            None => {
                self.counters.session_panics += 1;
                self.doom(slot);
                return Err(NegotiationError::SessionFailed(
                    "panic creating offer".into(),
                ));
            }
        };
        self.sync_ufrag(slot);
        self.after_mutation(slot);
        Ok(offer)
    }

    fn accept_answer(
        &mut self,
        id: SessionId,
        sdp: &str,
        answer: SdpAnswer,
        now: Instant,
    ) -> Result<(), NegotiationError> {
        let slot = self.slot_of(id).ok_or(NegotiationError::Closed)?;
        let s = self
            .sessions
            .get_mut(slot)
            .ok_or(NegotiationError::Closed)?;
        let offer = s
            .pending_offer
            .as_ref()
            .ok_or(NegotiationError::NoPendingOffer)?;
        if sdp_mids(sdp) != offer.mids {
            return Err(NegotiationError::InvalidSdp(
                "answer m-lines do not match the offer".into(),
            ));
        }
        let ufrag = sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .map(str::to_string);
        if !offer.ice_restart && s.remote_ufrag.is_some() && ufrag != s.remote_ufrag {
            return Err(NegotiationError::InvalidSdp(
                "answer changes ICE credentials without an ICE restart".into(),
            ));
        }
        let Some(PendingOffer { pending, .. }) = s.pending_offer.take() else {
            return Err(NegotiationError::NoPendingOffer);
        };
        match s.guarded(|s| s.rtc.sdp_api().accept_answer(pending, answer)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.after_mutation(slot);
                return Err(NegotiationError::AnswerRejected(e.to_string()));
            }
            None => {
                self.counters.session_panics += 1;
                self.doom(slot);
                return Err(NegotiationError::SessionFailed(
                    "panic in accept_answer".into(),
                ));
            }
        }
        s.remote_ufrag = ufrag;
        // Activate the down-tracks this answer covers.
        let waiting = std::mem::take(&mut s.awaiting_answer);
        for did in waiting {
            let Some(&dslot) = self.down_by_id.get(&did) else {
                continue;
            };
            let Some(d) = self.downs.get_mut(dslot) else {
                continue;
            };
            let mut api = s.rtc.direct_api();
            let ssrc = api.stream_tx_by_mid(d.mid, d.rid()).map(|tx| tx.ssrc());
            let remote_pts: Vec<_> = s
                .rtc
                .media(d.mid)
                .map(|m| m.remote_pts().to_vec())
                .unwrap_or_default();
            let mut mapped = false;
            for p in &d.spec_params {
                if let Some(local) = s.rtc.codec_config().match_params(*p) {
                    let lpt = local.pt();
                    if remote_pts.contains(&lpt) {
                        d.pt_map[(*p.pt() & 0x7f) as usize] = *lpt;
                        mapped = true;
                    }
                }
            }
            if mapped && ssrc.is_some() {
                d.ssrc = ssrc;
                // No retransmission cache and no byte histories for str0m's ratio cap per
                // subscriber: video NACKs come to the packet path, which answers them from
                // the track's shared store within the down-track's `RtxBudget`.
                if let Some(tx) = s.rtc.direct_api().stream_tx_by_mid(d.mid, d.rid()) {
                    tx.set_rtx_cache(0, Duration::ZERO, None);
                    tx.set_external_rtx(d.kind == MediaKind::Video);
                }
                if d.kind == MediaKind::Video {
                    // Ask for a keyframe now; repeats are throttled from here.
                    d.keyframe_retry.record(now);
                    self.want_keyframe.push((d.track, d.keyframe_rank()));
                }
            } else {
                let _ = s.events.send(SessionEvent::DownTrackRejected(did));
            }
        }
        self.after_mutation(slot);
        Ok(())
    }
}

/// The rid of a relay's send stream for the encoding of rank `rank` (the other worker
/// ranks encodings by what they carry, not by name).
fn relay_rid(rank: u8) -> Rid {
    Rid::from(["r0", "r1", "r2", "r3"][usize::from(rank).min(MAX_LAYERS - 1)])
}
