// src/mutex.ts
var Mutex = class {
  constructor() {
    this.tail = Promise.resolve();
  }
  /** Resolves, in call order, with a `release` function once every earlier holder released. */
  acquire() {
    let release;
    const released = new Promise((resolve) => {
      release = resolve;
    });
    const acquired = this.tail.then(() => {
      let done = false;
      return () => {
        if (done) return;
        done = true;
        release();
      };
    });
    this.tail = this.tail.then(() => released);
    return acquired;
  }
};

// src/sdp.ts
var DIRECTIONS = /* @__PURE__ */ new Set(["sendrecv", "sendonly", "recvonly", "inactive"]);
function parseMsid(value) {
  const parts = value.trim().split(/\s+/);
  if (parts.length === 0 || parts[0] === "") return null;
  return { streamId: parts[0], trackId: parts.length > 1 ? parts[1] : null };
}
function parseMediaSections(sdp) {
  const sections = [];
  let sessionDirection = "sendrecv";
  let current = null;
  const finish = () => {
    if (!current) return;
    const { explicitDirection, ssrcMsid, ...section } = current;
    if (!explicitDirection) section.direction = sessionDirection;
    if (!section.msid) section.msid = ssrcMsid;
    sections.push(section);
  };
  for (const rawLine of sdp.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line.startsWith("m=")) {
      finish();
      const [kind = "", port = ""] = line.slice(2).split(/\s+/);
      const portNumber = Number.parseInt(port, 10);
      current = {
        index: sections.length,
        kind,
        port: Number.isNaN(portNumber) ? 0 : portNumber,
        mid: null,
        direction: "sendrecv",
        msid: null,
        explicitDirection: false,
        ssrcMsid: null
      };
      continue;
    }
    if (!line.startsWith("a=")) continue;
    const attribute = line.slice(2);
    if (DIRECTIONS.has(attribute)) {
      if (current) {
        current.direction = attribute;
        current.explicitDirection = true;
      } else {
        sessionDirection = attribute;
      }
      continue;
    }
    if (!current) continue;
    if (attribute.startsWith("mid:")) {
      current.mid = attribute.slice(4).trim();
    } else if (attribute.startsWith("msid:")) {
      current.msid ?? (current.msid = parseMsid(attribute.slice(5)));
    } else if (attribute.startsWith("ssrc:") && !current.ssrcMsid) {
      const match = /^ssrc:\d+\s+msid:(.*)$/.exec(attribute);
      if (match) current.ssrcMsid = parseMsid(match[1]);
    }
  }
  finish();
  return sections;
}
function isSending(section) {
  return section.port !== 0 && (section.direction === "sendonly" || section.direction === "sendrecv");
}
function trackIdForMid(sdp, mid) {
  const section = parseMediaSections(sdp).find((s) => s.mid === mid);
  return section?.msid?.trackId ?? null;
}
function midForTrackId(sdp, trackId) {
  const section = parseMediaSections(sdp).find(
    (s) => s.mid !== null && s.msid?.trackId === trackId && isSending(s)
  );
  return section?.mid ?? null;
}

// src/emitter.ts
var TypedEmitter = class {
  constructor() {
    this.listeners = /* @__PURE__ */ new Map();
  }
  /** Adds a listener. Adding the same function twice has no effect. */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return this;
  }
  /** Removes a listener added with `on`. Unknown listeners are ignored. */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
    return this;
  }
  /** Removes every listener (of one event, or of all events). */
  removeAllListeners(event) {
    if (event === void 0) this.listeners.clear();
    else this.listeners.delete(event);
    return this;
  }
  /**
   * Calls the listeners of `event`. A throwing listener does not stop the others nor the
   * caller; its error is reported asynchronously, like a DOM event listener's.
   */
  emit(event, ...args) {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (error) {
        setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }
};

// src/transport.ts
var Transport = class extends TypedEmitter {
  constructor(config = {}) {
    super();
    this.pendingCandidates = [];
    this.closed = false;
    const PeerConnection = globalThis.RTCPeerConnection;
    if (typeof PeerConnection !== "function") {
      throw new Error("rheomesh: RTCPeerConnection is not available in this environment");
    }
    const pc = new PeerConnection(config);
    this.peerConnection = pc;
    pc.onicecandidate = (event) => {
      if (!event.candidate || !event.candidate.candidate) return;
      this.emit("icecandidate", ...[event.candidate.toJSON()]);
    };
    pc.onconnectionstatechange = () => {
      this.emit("connectionstatechange", ...[pc.connectionState]);
    };
  }
  /** The peer connection's `connectionState`. */
  get connectionState() {
    return this.peerConnection.connectionState;
  }
  /** True once {@link close} was called. */
  get isClosed() {
    return this.closed;
  }
  /**
   * Adds a remote ICE candidate received from the server. Candidates that arrive before the
   * remote description are queued and applied, in order, right after it is set. An empty
   * `candidate` string means end-of-candidates.
   *
   * Resolves once the candidate is applied or queued; a queued candidate that the browser
   * later rejects is reported with `console.warn` (one bad candidate must not fail a
   * negotiation).
   */
  async addIceCandidate(candidate) {
    this.assertOpen("addIceCandidate");
    if (candidate === null || typeof candidate !== "object") {
      throw new Error("addIceCandidate: expected an RTCIceCandidateInit object");
    }
    if (!this.peerConnection.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.applyCandidate(candidate);
  }
  /** The peer connection's statistics. */
  getStats(selector) {
    return this.peerConnection.getStats(selector);
  }
  /** Closes the peer connection. Pending operations fail; later calls throw. Idempotent. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.pendingCandidates = [];
    this.onClose();
    this.peerConnection.close();
  }
  /** Applies the candidates queued while there was no remote description. */
  async flushCandidates() {
    while (this.pendingCandidates.length > 0 && this.peerConnection.remoteDescription && !this.closed) {
      const candidate = this.pendingCandidates.shift();
      try {
        await this.applyCandidate(candidate);
      } catch (error) {
        console.warn("rheomesh: a queued ICE candidate was rejected:", error);
      }
    }
  }
  assertOpen(operation) {
    if (this.closed) throw new Error(`${operation}: the transport is closed`);
  }
  async applyCandidate(candidate) {
    const endOfCandidates = !candidate.candidate;
    const init = !endOfCandidates && candidate.sdpMid == null && candidate.sdpMLineIndex == null ? { ...candidate, sdpMLineIndex: 0 } : candidate;
    try {
      await this.peerConnection.addIceCandidate(init);
    } catch (error) {
      if (endOfCandidates) return;
      throw new Error(`addIceCandidate failed: ${errorMessage(error)} (candidate: ${candidate.candidate})`);
    }
  }
};
function checkDescription(operation, description, type) {
  if (description === null || typeof description !== "object") {
    throw new Error(`${operation}: expected a {type, sdp} object`);
  }
  if (description.type !== type) {
    throw new Error(`${operation}: expected a description of type "${type}", got "${description.type}"`);
  }
  if (typeof description.sdp !== "string" || description.sdp.length === 0) {
    throw new Error(`${operation}: the description has no sdp`);
  }
  return { type: description.type, sdp: description.sdp };
}
function errorMessage(error) {
  return error instanceof Error ? error.message : String(error);
}

// src/publish.ts
var CODEC_MIME_TYPES = {
  VP8: "video/VP8",
  VP9: "video/VP9",
  H264: "video/H264",
  AV1: "video/AV1",
  opus: "audio/opus"
};
function preferCodec(codecs, mimeType) {
  const wanted = mimeType.toLowerCase();
  const preferred = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (preferred.length === 0) return null;
  return [...preferred, ...codecs.filter((c) => c.mimeType.toLowerCase() !== wanted)];
}
var PublishTransport = class extends Transport {
  constructor(config = {}) {
    super(config);
    this.negotiation = new Mutex();
    /** Releases `negotiation` once the answer to the outstanding offer has been applied. */
    this.releaseOnAnswer = null;
    this.transceivers = /* @__PURE__ */ new Map();
  }
  /**
   * Adds `track` as a new send-only m-line and creates the offer for it.
   *
   * For compatibility with the original client, the second argument may also be a bare
   * encodings array.
   */
  async publish(track, options = {}) {
    this.assertOpen("publish");
    if (!track || typeof track !== "object" || typeof track.id !== "string") {
      throw new Error("publish: expected a MediaStreamTrack");
    }
    const { codec, encodings, stream } = Array.isArray(options) ? { codec: void 0, encodings: options, stream: void 0 } : options;
    const codecs = codec === void 0 ? null : codecOrder(track.kind, codec);
    return this.negotiate("publish", () => {
      const init = { direction: "sendonly" };
      if (stream) init.streams = [stream];
      else if (typeof MediaStream === "function") init.streams = [new MediaStream([track])];
      if (encodings && encodings.length > 0) init.sendEncodings = encodings;
      const transceiver = this.peerConnection.addTransceiver(track, init);
      if (codecs) {
        try {
          setCodecPreferences(transceiver, codecs, codec);
        } catch (error) {
          stopTransceiver(this.peerConnection, transceiver);
          throw error;
        }
      }
      return transceiver;
    }, (transceiver, offer) => {
      const mid = transceiver.mid;
      const id = (mid !== null && offer.sdp ? trackIdForMid(offer.sdp, mid) : null) ?? track.id;
      this.transceivers.set(id, transceiver);
      return { id, offer };
    }, (transceiver) => stopTransceiver(this.peerConnection, transceiver));
  }
  /**
   * Opens a data channel labelled with a fresh UUID (the data publisher id) and creates the
   * offer that carries it, in the same one-offer-at-a-time order as {@link publish}: send
   * `offer` to the server (`Offer`), then `id` (`PublishData{label: id}`), and pass the answer
   * to {@link setAnswer}.
   *
   * `init` is given to `createDataChannel`; its fields override the default `ordered: true`.
   * `negotiated: true` is refused: the server learns a channel's label from the in-band open
   * message, which a negotiated channel never sends.
   */
  async publishData(init = {}) {
    this.assertOpen("publishData");
    if (init === null || typeof init !== "object") {
      throw new Error("publishData: expected an RTCDataChannelInit object");
    }
    if (init.negotiated) {
      throw new Error("publishData: negotiated channels are not supported (the server needs the in-band open)");
    }
    const options = { ...init, ordered: init.ordered ?? true };
    return this.negotiate("publishData", () => {
      const label = randomUUID();
      return { label, channel: this.peerConnection.createDataChannel(label, options) };
    }, ({ label, channel }, offer) => ({ id: label, channel, offer }), ({ channel }) => channel.close());
  }
  /**
   * Stops sending the publisher `id` (its m-line is stopped) and returns the new offer to
   * send to the server. The local track itself is left running: the application owns it.
   */
  async unpublish(id) {
    this.assertOpen("unpublish");
    const transceiver = this.transceivers.get(id);
    if (!transceiver) throw new Error(`unpublish: unknown publisher id: ${id}`);
    this.transceivers.delete(id);
    return this.negotiate("unpublish", () => stopTransceiver(this.peerConnection, transceiver), (_, offer) => offer);
  }
  /**
   * Sends `track` in place of what publisher `id` sends now (another camera or microphone),
   * without renegotiation: the publisher id, the m-line and its subscribers stay. `null`
   * sends nothing until a track is given again. The kind must match.
   */
  async replaceTrack(id, track) {
    this.assertOpen("replaceTrack");
    const transceiver = this.transceivers.get(id);
    if (!transceiver) throw new Error(`replaceTrack: unknown publisher id: ${id}`);
    const current = transceiver.sender.track;
    if (track && current && track.kind !== current.kind) {
      throw new Error(`replaceTrack: ${id} sends ${current.kind}, not ${track.kind}`);
    }
    try {
      await transceiver.sender.replaceTrack(track);
    } catch (error) {
      throw new Error(`replaceTrack: the browser refused the track: ${errorMessage(error)}`);
    }
  }
  /** Restarts ICE: returns an offer with new ICE credentials to send to the server. */
  async restartIce() {
    this.assertOpen("restartIce");
    return this.negotiate("restartIce", () => void 0, (_, offer) => offer, void 0, { iceRestart: true });
  }
  /** Applies the server's answer to the last offer, then any queued remote candidates. */
  async setAnswer(answer) {
    this.assertOpen("setAnswer");
    const description = checkDescription("setAnswer", answer, "answer");
    const release = this.releaseOnAnswer;
    if (!release) throw new Error("setAnswer: no offer is waiting for an answer");
    try {
      await this.peerConnection.setRemoteDescription(description);
    } catch (error) {
      throw new Error(`setAnswer: the browser rejected the answer: ${errorMessage(error)}`);
    } finally {
      if (this.releaseOnAnswer === release) this.releaseOnAnswer = null;
      release();
    }
    await this.flushCandidates();
  }
  onClose() {
    this.transceivers.clear();
    const release = this.releaseOnAnswer;
    this.releaseOnAnswer = null;
    release?.();
  }
  /**
   * One offer round: waits for the previous round's answer, runs `change`, creates and sets
   * the offer, and leaves the lock held until `setAnswer`. On failure `undo` reverts `change`.
   */
  async negotiate(operation, change, result, undo, offerOptions) {
    const release = await this.negotiation.acquire();
    let changed;
    let applied = false;
    try {
      this.assertOpen(operation);
      changed = change();
      applied = true;
      const created = await this.peerConnection.createOffer(offerOptions);
      await this.peerConnection.setLocalDescription(created);
      this.assertOpen(operation);
      const local = this.peerConnection.localDescription ?? created;
      const offer = { type: "offer", sdp: local.sdp };
      const value = result(changed, offer);
      this.releaseOnAnswer = release;
      return value;
    } catch (error) {
      if (applied && undo && !this.isClosed) {
        try {
          undo(changed);
        } catch {
        }
      }
      release();
      if (error instanceof Error && error.message.startsWith(`${operation}:`)) throw error;
      throw new Error(`${operation}: ${errorMessage(error)}`);
    }
  }
};
function randomUUID() {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  if (typeof c?.getRandomValues !== "function") throw new Error("publishData: crypto.getRandomValues is not available");
  const bytes = c.getRandomValues(new Uint8Array(16));
  bytes[6] = bytes[6] & 15 | 64;
  bytes[8] = bytes[8] & 63 | 128;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
function codecOrder(kind, codec) {
  const mimeType = CODEC_MIME_TYPES[codec];
  if (!mimeType) throw new Error(`publish: unknown codec "${codec}" (expected VP8, VP9, H264, AV1 or opus)`);
  const codecKind = mimeType.split("/")[0];
  if (codecKind !== kind) throw new Error(`publish: codec ${codec} is for ${codecKind} but the track is ${kind}`);
  const Sender = globalThis.RTCRtpSender;
  const capabilities = Sender?.getCapabilities?.(kind);
  if (!capabilities) throw new Error("publish: this browser cannot list its codecs (RTCRtpSender.getCapabilities)");
  const ordered = preferCodec(capabilities.codecs, mimeType);
  if (!ordered) throw new Error(`publish: this browser cannot send ${codec}`);
  return ordered;
}
function setCodecPreferences(transceiver, codecs, codec) {
  if (typeof transceiver.setCodecPreferences !== "function") {
    throw new Error("publish: this browser cannot prefer a codec (RTCRtpTransceiver.setCodecPreferences)");
  }
  try {
    transceiver.setCodecPreferences(codecs);
    return;
  } catch (sendError) {
    const Receiver = globalThis.RTCRtpReceiver;
    const receive = Receiver?.getCapabilities?.(codecs[0].mimeType.split("/")[0]);
    const ordered = receive ? preferCodec(receive.codecs, codecs[0].mimeType) : null;
    if (!ordered) throw new Error(`publish: cannot prefer ${codec}: ${errorMessage(sendError)}`);
    try {
      transceiver.setCodecPreferences(ordered);
    } catch (error) {
      throw new Error(`publish: cannot prefer ${codec}: ${errorMessage(error)}`);
    }
  }
}
function stopTransceiver(pc, transceiver) {
  const first = pc.getTransceivers().find((t) => t.mid !== null && !isStopped(t));
  if (first === transceiver || typeof transceiver.stop !== "function") {
    void transceiver.sender.replaceTrack(null).catch(() => void 0);
    transceiver.direction = "inactive";
    return;
  }
  transceiver.stop();
}
function isStopped(t) {
  return t.stopped === true || t.currentDirection === "stopped";
}

// src/subscribe.ts
var DEFAULT_SUBSCRIBE_TIMEOUT_MS = 1e4;
var SubscribeTransport = class extends Transport {
  constructor(config = {}) {
    super(config);
    this.negotiation = new Mutex();
    this.waiters = /* @__PURE__ */ new Map();
    this.parsed = null;
    /** Data channels the server opened and that are not closed, by label (= publisher id). */
    this.channels = /* @__PURE__ */ new Map();
    this.dataWaiters = /* @__PURE__ */ new Map();
    this.peerConnection.ontrack = () => this.resolveWaiters();
    this.peerConnection.addEventListener("datachannel", (event) => this.onDataChannel(event.channel));
  }
  /**
   * Applies a server offer and returns the answer to send back. Calls are serialized: an
   * offer passed while an earlier one is still being processed waits for it.
   */
  async setOffer(offer) {
    this.assertOpen("setOffer");
    const description = checkDescription("setOffer", offer, "offer");
    const release = await this.negotiation.acquire();
    try {
      this.assertOpen("setOffer");
      try {
        await this.peerConnection.setRemoteDescription(description);
      } catch (error) {
        throw new Error(`setOffer: the browser rejected the offer: ${errorMessage(error)}`);
      }
      await this.flushCandidates();
      let answer;
      try {
        answer = await this.peerConnection.createAnswer();
        await this.peerConnection.setLocalDescription(answer);
      } catch (error) {
        throw new Error(`setOffer: could not create the answer: ${errorMessage(error)}`);
      }
      this.assertOpen("setOffer");
      this.resolveWaiters();
      const local = this.peerConnection.localDescription ?? answer;
      return { type: "answer", sdp: local.sdp };
    } finally {
      release();
    }
  }
  /**
   * Resolves with the track of publisher `publisherId` once its m-line has been negotiated
   * (immediately if it already is). Rejects after `timeoutMs`, on `unsubscribe` and on
   * `close`. Send the `Subscribe` request to the server separately.
   */
  subscribe(publisherId, options = {}) {
    this.assertOpen("subscribe");
    if (typeof publisherId !== "string" || publisherId === "") {
      return Promise.reject(new Error("subscribe: publisherId must be a non-empty string"));
    }
    const received = this.findReceived(publisherId);
    if (received) return Promise.resolve({ id: publisherId, ...received });
    const timeoutMs = options.timeoutMs ?? DEFAULT_SUBSCRIBE_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.removeWaiter(publisherId, waiter);
          reject(new Error(`subscribe timeout: ${publisherId}`));
        }, timeoutMs)
      };
      let set = this.waiters.get(publisherId);
      if (!set) {
        set = /* @__PURE__ */ new Set();
        this.waiters.set(publisherId, set);
      }
      set.add(waiter);
    });
  }
  /**
   * Resolves with the data channel of data publisher `publisherId` once the server has opened
   * it on this connection (immediately if it already has). Rejects after `timeoutMs` and on
   * `close`. Send the `SubscribeData` request to the server separately and answer its offer
   * with {@link setOffer}; the channel arrives after that, once SCTP is up.
   *
   * A channel is forgotten when it closes: a later call waits for a new one.
   */
  subscribeData(publisherId, options = {}) {
    this.assertOpen("subscribeData");
    if (typeof publisherId !== "string" || publisherId === "") {
      return Promise.reject(new Error("subscribeData: publisherId must be a non-empty string"));
    }
    const channel = this.channels.get(publisherId);
    if (channel) return Promise.resolve({ publisherId, channel });
    const timeoutMs = options.timeoutMs ?? DEFAULT_SUBSCRIBE_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          removeFrom(this.dataWaiters, publisherId, waiter);
          reject(
            new Error(`subscribeData timeout: ${publisherId} (no data channel with this label arrived within ${timeoutMs} ms)`)
          );
        }, timeoutMs)
      };
      let set = this.dataWaiters.get(publisherId);
      if (!set) {
        set = /* @__PURE__ */ new Set();
        this.dataWaiters.set(publisherId, set);
      }
      set.add(waiter);
    });
  }
  /**
   * Local bookkeeping only: pending `subscribe` calls for `publisherId` reject. Send
   * `StopSubscribe` to the server, which renegotiates the m-line away.
   */
  unsubscribe(publisherId) {
    this.rejectWaiters(publisherId, new Error(`unsubscribed: ${publisherId}`));
  }
  /**
   * The track currently received from `publisherId`, or null. The mapping comes from the
   * current remote description's `a=mid` / `a=msid` lines.
   */
  trackOf(publisherId) {
    return this.findTrack(publisherId);
  }
  /**
   * Marks ICE for restart. The server is the offerer, so the application must then ask it
   * for an ICE-restart offer (`RestartICE`) and pass that offer to `setOffer`.
   */
  restartIce() {
    this.assertOpen("restartIce");
    this.peerConnection.restartIce?.();
  }
  onClose() {
    for (const publisherId of [...this.waiters.keys()]) {
      this.rejectWaiters(publisherId, new Error(`subscribe: the transport was closed: ${publisherId}`));
    }
    for (const [publisherId, set] of [...this.dataWaiters]) {
      this.dataWaiters.delete(publisherId);
      for (const waiter of set) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error(`subscribeData: the transport was closed: ${publisherId}`));
      }
    }
    this.channels.clear();
  }
  /** Records a channel the server opened and resolves the `subscribeData` calls waiting for it. */
  onDataChannel(channel) {
    if (this.isClosed || channel.readyState === "closed") return;
    const label = channel.label;
    this.channels.set(label, channel);
    channel.addEventListener("close", () => {
      if (this.channels.get(label) === channel) this.channels.delete(label);
    });
    const set = this.dataWaiters.get(label);
    if (!set) return;
    this.dataWaiters.delete(label);
    for (const waiter of set) {
      clearTimeout(waiter.timer);
      waiter.resolve({ publisherId: label, channel });
    }
  }
  findTrack(publisherId) {
    return this.findReceived(publisherId)?.track ?? null;
  }
  /** The track received from `publisherId` and its msid stream id, or null. */
  findReceived(publisherId) {
    const sdp = this.peerConnection.remoteDescription?.sdp;
    if (!sdp) return null;
    if (this.parsed?.sdp !== sdp) this.parsed = { sdp, sections: parseMediaSections(sdp) };
    const section = this.parsed.sections.find(
      (s) => s.mid !== null && s.msid?.trackId === publisherId && isSending(s)
    );
    if (!section) return null;
    const transceiver = this.peerConnection.getTransceivers().find((t) => t.mid === section.mid);
    const track = transceiver?.receiver.track;
    const stream = section.msid?.streamId;
    return track ? { track, streamId: stream && stream !== "-" ? stream : null } : null;
  }
  resolveWaiters() {
    for (const [publisherId, set] of [...this.waiters]) {
      const received = this.findReceived(publisherId);
      if (!received) continue;
      this.waiters.delete(publisherId);
      for (const waiter of set) {
        clearTimeout(waiter.timer);
        waiter.resolve({ id: publisherId, ...received });
      }
    }
  }
  rejectWaiters(publisherId, error) {
    const set = this.waiters.get(publisherId);
    if (!set) return;
    this.waiters.delete(publisherId);
    for (const waiter of set) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
  }
  removeWaiter(publisherId, waiter) {
    removeFrom(this.waiters, publisherId, waiter);
  }
};
function removeFrom(map, key, item) {
  const set = map.get(key);
  if (!set) return;
  set.delete(item);
  if (set.size === 0) map.delete(key);
}

// src/encodings.ts
function simulcastEncodings() {
  return [
    { rid: "low", maxBitrate: 15e4, scaleResolutionDownBy: 4 },
    { rid: "mid", maxBitrate: 5e5, scaleResolutionDownBy: 2 },
    { rid: "high", maxBitrate: 25e5, scaleResolutionDownBy: 1 }
  ];
}
function SVCEncodings(scalabilityMode = "L3T3_KEY") {
  return [{ scalabilityMode }];
}
export {
  DEFAULT_SUBSCRIBE_TIMEOUT_MS,
  PublishTransport,
  SVCEncodings,
  SubscribeTransport,
  Transport,
  TypedEmitter,
  isSending,
  midForTrackId,
  parseMediaSections,
  parseMsid,
  preferCodec,
  simulcastEncodings,
  trackIdForMid
};
