// A small in-memory stand-in for the browser's WebRTC objects, just enough for the client's
// signaling logic. It writes Chrome-shaped SDP, assigns mids on setLocalDescription, fires
// ontrack during setRemoteDescription of an offer, gives received tracks random ids (as
// Chrome may), and rejects operations in the wrong signaling state like a browser does.
// Data channels: createDataChannel adds one m=application line to later offers, and
// receiveDataChannel plays the remote side opening a channel ("datachannel" event).

let counter = 0;
const nextId = (prefix: string) => `${prefix}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;

export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class FakeTrack {
  readonly id: string;
  constructor(readonly kind: "audio" | "video", id?: string) {
    this.id = id ?? nextId("track");
  }
}

export class FakeMediaStream {
  readonly id = nextId("stream");
  constructor(readonly tracks: FakeTrack[] = []) {}
}

export interface FakeCodec {
  mimeType: string;
  clockRate: number;
  sdpFmtpLine?: string;
}

export const VIDEO_CODECS: FakeCodec[] = [
  { mimeType: "video/VP8", clockRate: 90000 },
  { mimeType: "video/rtx", clockRate: 90000 },
  { mimeType: "video/H264", clockRate: 90000, sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f" },
  { mimeType: "video/H264", clockRate: 90000, sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f" },
  { mimeType: "video/VP9", clockRate: 90000, sdpFmtpLine: "profile-id=0" },
  { mimeType: "video/AV1", clockRate: 90000 },
  { mimeType: "video/red", clockRate: 90000 },
  { mimeType: "video/ulpfec", clockRate: 90000 },
];
export const AUDIO_CODECS: FakeCodec[] = [
  { mimeType: "audio/opus", clockRate: 48000 },
  { mimeType: "audio/red", clockRate: 48000 },
  { mimeType: "audio/G722", clockRate: 8000 },
  { mimeType: "audio/PCMU", clockRate: 8000 },
];

export class FakeRtpSender {
  static getCapabilities(kind: string) {
    return { codecs: kind === "video" ? [...VIDEO_CODECS] : [...AUDIO_CODECS], headerExtensions: [] };
  }
  constructor(public track: FakeTrack | null) {}
  async replaceTrack(track: FakeTrack | null) {
    this.track = track;
  }
}

export class FakeTransceiver {
  mid: string | null = null;
  stopped = false;
  codecPreferences: FakeCodec[] | null = null;
  /** The `sendEncodings` given to addTransceiver (simulcast rids or an SVC mode). */
  sendEncodings: RTCRtpEncodingParameters[] = [];
  readonly receiver: { track: FakeTrack };
  readonly sender: FakeRtpSender;
  constructor(
    readonly kind: "audio" | "video",
    public direction: string,
    sendTrack: FakeTrack | null,
    readonly streams: FakeMediaStream[] = [],
  ) {
    this.sender = new FakeRtpSender(sendTrack);
    // Chrome gives received tracks ids of its own choosing.
    this.receiver = { track: new FakeTrack(kind) };
  }
  setCodecPreferences(codecs: FakeCodec[]) {
    this.codecPreferences = codecs;
  }
  stop() {
    this.stopped = true;
    this.direction = "stopped";
  }
}

/** An RTCDataChannel: its init fields, readyState, and close() firing "close". */
export class FakeDataChannel extends EventTarget {
  readyState: "connecting" | "open" | "closing" | "closed" = "connecting";
  readonly ordered: boolean;
  readonly maxRetransmits: number | null;
  readonly maxPacketLifeTime: number | null;
  readonly protocol: string;
  readonly negotiated: boolean;
  onclose: (() => void) | null = null;
  constructor(readonly label: string, init: RTCDataChannelInit = {}) {
    super();
    this.ordered = init.ordered ?? true;
    this.maxRetransmits = init.maxRetransmits ?? null;
    this.maxPacketLifeTime = init.maxPacketLifeTime ?? null;
    this.protocol = init.protocol ?? "";
    this.negotiated = init.negotiated ?? false;
  }
  close() {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    this.dispatchEvent(new Event("close"));
    this.onclose?.();
  }
}

/** The "datachannel" event. */
export class FakeDataChannelEvent extends Event {
  constructor(readonly channel: FakeDataChannel) {
    super("datachannel");
  }
}

type Description = { type: string; sdp: string };

export interface FakeOptions {
  /** Milliseconds each setRemoteDescription takes (to expose missing serialization). */
  remoteDelayMs?: number;
  /** Write msid track ids that differ from track.id (Firefox-like). */
  ownMsidTrackIds?: boolean;
}

export class FakePeerConnection extends EventTarget {
  static instances: FakePeerConnection[] = [];
  static options: FakeOptions = {};

  readonly log: string[] = [];
  readonly candidates: RTCIceCandidateInit[] = [];
  readonly transceivers: FakeTransceiver[] = [];
  /** Channels made with createDataChannel (the local ones). */
  readonly dataChannels: FakeDataChannel[] = [];
  localDescription: Description | null = null;
  remoteDescription: Description | null = null;
  signalingState = "stable";
  connectionState = "new";
  closed = false;
  onicecandidate: ((event: { candidate: unknown }) => void) | null = null;
  onconnectionstatechange: (() => void) | null = null;
  ontrack: ((event: { track: FakeTrack; transceiver: FakeTransceiver; streams: unknown[] }) => void) | null = null;
  ondatachannel: ((event: FakeDataChannelEvent) => void) | null = null;
  private nextMid = 0;
  /** The mid of the m=application line, once an offer with data channels was set. */
  private dataMid: string | null = null;
  private ufrag = "abcd";
  private readonly msidTrackIds = new Map<FakeTransceiver, string>();

  constructor(readonly config: unknown) {
    super();
    FakePeerConnection.instances.push(this);
  }

  static get last(): FakePeerConnection {
    return FakePeerConnection.instances[FakePeerConnection.instances.length - 1];
  }

  addTransceiver(
    track: FakeTrack,
    init: { direction: string; streams?: FakeMediaStream[]; sendEncodings?: RTCRtpEncodingParameters[] },
  ) {
    const t = new FakeTransceiver(track.kind, init.direction, track, init.streams ?? []);
    t.sendEncodings = (init.sendEncodings ?? []).map((e) => ({ ...e }));
    this.transceivers.push(t);
    this.log.push(`addTransceiver:${track.id}`);
    return t;
  }

  createDataChannel(label: string, init: RTCDataChannelInit = {}) {
    if (this.closed) throw new Error("InvalidStateError: the connection is closed");
    if (init.maxRetransmits != null && init.maxPacketLifeTime != null) {
      throw new TypeError("maxRetransmits and maxPacketLifeTime are exclusive");
    }
    const channel = new FakeDataChannel(label, init);
    this.dataChannels.push(channel);
    this.log.push(`createDataChannel:${label}`);
    return channel;
  }

  /** The remote side opens a channel: fires "datachannel" (listeners, then ondatachannel). */
  receiveDataChannel(label: string, init: RTCDataChannelInit = {}): FakeDataChannel {
    const channel = new FakeDataChannel(label, init);
    const event = new FakeDataChannelEvent(channel);
    this.dispatchEvent(event);
    this.ondatachannel?.(event);
    return channel;
  }

  getTransceivers() {
    return [...this.transceivers];
  }

  removeTrack(sender: FakeRtpSender) {
    sender.track = null;
  }

  async createOffer(options?: { iceRestart?: boolean }): Promise<Description> {
    await delay(1);
    if (options?.iceRestart) this.ufrag = nextId("ufrag");
    this.log.push("createOffer");
    return { type: "offer", sdp: this.writeOffer() };
  }

  async createAnswer(): Promise<Description> {
    await delay(1);
    if (this.signalingState !== "have-remote-offer") throw new Error("InvalidStateError: createAnswer in " + this.signalingState);
    this.log.push("createAnswer");
    return { type: "answer", sdp: `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n` };
  }

  async setLocalDescription(description: Description) {
    await delay(1);
    if (description.type === "offer") {
      for (const t of this.transceivers) if (t.mid === null && !t.stopped) t.mid = String(this.nextMid++);
      if (this.dataMid === null && this.dataChannels.length > 0) this.dataMid = String(this.nextMid++);
      // Mids are only known now; the offer written by createOffer used the same numbering.
      this.signalingState = "have-local-offer";
    } else {
      if (this.signalingState !== "have-remote-offer") throw new Error("InvalidStateError: answer in " + this.signalingState);
      this.signalingState = "stable";
    }
    this.localDescription = description;
    this.log.push(`setLocalDescription:${description.type}`);
    setTimeout(() => {
      if (this.closed) return;
      const candidate = { candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: this.ufrag };
      this.onicecandidate?.({ candidate: { ...candidate, toJSON: () => candidate } });
      this.onicecandidate?.({ candidate: null });
    }, 0);
  }

  async setRemoteDescription(description: Description) {
    this.log.push(`setRemoteDescription:${description.type}:start`);
    await delay(FakePeerConnection.options.remoteDelayMs ?? 1);
    if (description.type === "answer" && this.signalingState !== "have-local-offer") {
      throw new Error("InvalidStateError: answer in " + this.signalingState);
    }
    if (description.type === "offer" && this.signalingState !== "stable") {
      throw new Error("InvalidStateError: offer in " + this.signalingState);
    }
    this.remoteDescription = description;
    if (description.type === "answer") {
      this.signalingState = "stable";
    } else {
      this.signalingState = "have-remote-offer";
      this.applyRemoteOffer(description.sdp);
    }
    this.log.push(`setRemoteDescription:${description.type}:done`);
  }

  async addIceCandidate(candidate: RTCIceCandidateInit) {
    if (!this.remoteDescription) throw new Error("InvalidStateError: no remote description");
    if (candidate.candidate === "bad") throw new Error("OperationError: bad candidate");
    this.candidates.push(candidate);
    this.log.push(`addIceCandidate:${candidate.candidate}`);
  }

  async getStats() {
    return new Map([["x", { type: "transport" }]]);
  }

  restartIce() {
    this.log.push("restartIce");
  }

  close() {
    this.closed = true;
    this.connectionState = "closed";
  }

  setConnectionState(state: string) {
    this.connectionState = state;
    this.onconnectionstatechange?.();
  }

  /** Writes a Chrome-like offer for the current transceivers. */
  private writeOffer(): string {
    let mid = this.nextMid;
    const lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0"];
    const mids = this.transceivers.map((t) => t.mid ?? (t.stopped ? null : String(mid++)));
    const dataMid = this.dataChannels.length > 0 ? this.dataMid ?? String(mid++) : null;
    const bundle = [...mids, dataMid].filter((m) => m !== null);
    lines.push(`a=group:BUNDLE ${bundle.join(" ")}`, "a=msid-semantic: WMS");
    this.transceivers.forEach((t, i) => {
      const codecs = t.codecPreferences ?? FakeRtpSender.getCapabilities(t.kind).codecs;
      const pts = codecs.map((_, n) => 96 + n);
      const proto = "UDP/TLS/RTP/SAVPF";
      lines.push(`m=${t.kind} ${t.stopped ? 0 : 9} ${proto} ${pts.join(" ")}`, "c=IN IP4 0.0.0.0");
      lines.push(`a=ice-ufrag:${this.ufrag}`, "a=ice-pwd:0123456789012345678901", "a=setup:actpass");
      if (mids[i] !== null) lines.push(`a=mid:${mids[i]}`);
      lines.push("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid");
      lines.push(t.stopped ? "a=inactive" : `a=${t.direction}`);
      if (!t.stopped && t.sender.track) {
        let trackId = t.sender.track.id;
        if (FakePeerConnection.options.ownMsidTrackIds) {
          if (!this.msidTrackIds.has(t)) this.msidTrackIds.set(t, `{${nextId("ff")}}`);
          trackId = this.msidTrackIds.get(t)!;
        }
        for (const s of t.streams.length ? t.streams : [{ id: "-" }]) lines.push(`a=msid:${s.id} ${trackId}`);
      }
      lines.push("a=rtcp-mux");
      codecs.forEach((c, n) => {
        const [, name] = c.mimeType.split("/");
        lines.push(`a=rtpmap:${96 + n} ${name}/${c.clockRate}${t.kind === "audio" && name === "opus" ? "/2" : ""}`);
      });
      // Simulcast as Chrome writes it: one a=rid per encoding, then a=simulcast.
      const rids = t.stopped ? [] : t.sendEncodings.map((e) => e.rid).filter((r): r is string => !!r);
      if (rids.length > 0) {
        lines.push("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
        for (const rid of rids) lines.push(`a=rid:${rid} send`);
        lines.push(`a=simulcast:send ${rids.join(";")}`);
      }
    });
    if (dataMid !== null) {
      // One SCTP m-line for all channels (last here; a browser keeps it where it was first added).
      lines.push("m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0");
      lines.push(`a=ice-ufrag:${this.ufrag}`, "a=ice-pwd:0123456789012345678901", "a=setup:actpass");
      lines.push(`a=mid:${dataMid}`, "a=sctp-port:5000", "a=max-message-size:262144");
    }
    return lines.join("\r\n") + "\r\n";
  }

  /** Creates transceivers for new remote m-lines and fires ontrack for sending ones. */
  private applyRemoteOffer(sdp: string) {
    const sections = sdp.split(/\r?\nm=/).slice(1);
    for (const section of sections) {
      const kind = section.startsWith("audio") ? "audio" : "video";
      const mid = /a=mid:(\S+)/.exec(section)?.[1];
      if (!mid) continue;
      const sending = /\r?\na=(sendonly|sendrecv)/.test(section) && !/^\w+ 0 /.test(section);
      let t = this.transceivers.find((x) => x.mid === mid);
      if (!t) {
        t = new FakeTransceiver(kind, "recvonly", null);
        t.mid = mid;
        this.transceivers.push(t);
        if (sending) this.ontrack?.({ track: t.receiver.track, transceiver: t, streams: [] });
      }
    }
  }
}

/** Installs the fakes as the WebRTC globals; returns a reset function. */
export function installFakeWebRTC(options: FakeOptions = {}): void {
  FakePeerConnection.instances = [];
  FakePeerConnection.options = options;
  const g = globalThis as Record<string, unknown>;
  g.RTCPeerConnection = FakePeerConnection;
  g.RTCRtpSender = FakeRtpSender;
  g.RTCRtpReceiver = FakeRtpSender;
  g.MediaStream = FakeMediaStream;
}

/** A server (str0m-like) offer sending the given publisher ids, one m-line each. */
export function serverOffer(
  lines: Array<{ mid: string; publisherId: string; kind?: "audio" | "video"; direction?: string; port?: number; stream?: string }>,
  ufrag = "srv1",
): { type: "offer"; sdp: string } {
  const out = ["v=0", "o=str0m-1 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0", `a=group:BUNDLE ${lines.map((l) => l.mid).join(" ")}`];
  out.push("a=ice-lite");
  for (const l of lines) {
    const kind = l.kind ?? "video";
    out.push(`m=${kind} ${l.port ?? 9} UDP/TLS/RTP/SAVPF ${kind === "video" ? 96 : 111}`, "c=IN IP4 0.0.0.0");
    out.push(`a=ice-ufrag:${ufrag}`, "a=ice-pwd:srvpwdsrvpwdsrvpwdsrvpwd", "a=setup:actpass", `a=mid:${l.mid}`);
    out.push(`a=${l.direction ?? "sendonly"}`, `a=msid:${l.stream ?? `stream-${l.publisherId}`} ${l.publisherId}`, "a=rtcp-mux");
    out.push(kind === "video" ? "a=rtpmap:96 VP8/90000" : "a=rtpmap:111 opus/48000/2");
    out.push(`a=ssrc:${1000 + Number(l.mid)} cname:rheomesh`);
  }
  return { type: "offer", sdp: out.join("\r\n") + "\r\n" };
}
