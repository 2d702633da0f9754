/**
 * PublishTransport: the browser → server peer connection. The browser is always the offerer.
 *
 * Each publish / publishData / unpublish / ICE restart produces one offer; the next one waits
 * until the application has passed the previous offer's answer to
 * {@link PublishTransport.setAnswer} (two offers in flight would make the first answer
 * inapplicable).
 */
import { Mutex } from "./mutex.js";
import { trackIdForMid } from "./sdp.js";
import { Transport, checkDescription, errorMessage } from "./transport.js";

/** Codecs a publisher can prefer. */
export type PublishCodec = "VP8" | "VP9" | "H264" | "AV1" | "opus";

/** Options of {@link PublishTransport.publish}. */
export interface PublishOptions {
  /** Codec to put first in the offer (the others stay offered, after it). */
  codec?: PublishCodec;
  /** `sendEncodings` of the transceiver: simulcast layers or an SVC `scalabilityMode`. */
  encodings?: RTCRtpEncodingParameters[];
  /**
   * The stream the track belongs to: its id becomes the msid stream id of the m-line, which
   * the server keeps in every subscriber's offer, so that subscribers can tell which tracks
   * go together (a participant's camera and microphone). Default: a stream of its own.
   */
  stream?: MediaStream;
}

/** The result of {@link PublishTransport.publish}. */
export interface Publisher {
  /** The publisher id: the track id of this m-line's `a=msid` line. Send it with `Publish`. */
  id: string;
  /** The offer to send to the server; pass its answer to `setAnswer`. */
  offer: RTCSessionDescriptionInit;
}

/** The result of {@link PublishTransport.publishData}. */
export interface DataPublisher {
  /** The data publisher id: the channel's label (a fresh UUID). Send it with `PublishData`. */
  id: string;
  /** The data channel to send on (it opens once the server has answered and SCTP is up). */
  channel: RTCDataChannel;
  /** The offer to send to the server; pass its answer to `setAnswer`. */
  offer: RTCSessionDescriptionInit;
}

const CODEC_MIME_TYPES: Record<PublishCodec, string> = {
  VP8: "video/VP8",
  VP9: "video/VP9",
  H264: "video/H264",
  AV1: "video/AV1",
  opus: "audio/opus",
};

/**
 * `codecs` with every entry of `mimeType` moved to the front, keeping the relative order of
 * both groups (so RTX/RED/FEC entries stay offered). Null when `mimeType` is absent.
 */
export function preferCodec<C extends { mimeType: string }>(codecs: readonly C[], mimeType: string): C[] | null {
  const wanted = mimeType.toLowerCase();
  const preferred = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (preferred.length === 0) return null;
  return [...preferred, ...codecs.filter((c) => c.mimeType.toLowerCase() !== wanted)];
}

/** Sends local tracks to the server. */
export class PublishTransport extends Transport {
  private readonly negotiation = new Mutex();
  /** Releases `negotiation` once the answer to the outstanding offer has been applied. */
  private releaseOnAnswer: (() => void) | null = null;
  private readonly transceivers = new Map<string, RTCRtpTransceiver>();

  constructor(config: RTCConfiguration = {}) {
    super(config);
  }

  /**
   * Adds `track` as a new send-only m-line and creates the offer for it.
   *
   * For compatibility with the original client, the second argument may also be a bare
   * encodings array.
   */
  async publish(track: MediaStreamTrack, options: PublishOptions | RTCRtpEncodingParameters[] = {}): Promise<Publisher> {
    this.assertOpen("publish");
    if (!track || typeof track !== "object" || typeof track.id !== "string") {
      throw new Error("publish: expected a MediaStreamTrack");
    }
    const { codec, encodings, stream } = Array.isArray(options)
      ? { codec: undefined, encodings: options, stream: undefined }
      : options;
    const codecs = codec === undefined ? null : codecOrder(track.kind, codec);

    return this.negotiate("publish", () => {
      const init: RTCRtpTransceiverInit = { direction: "sendonly" };
      // A stream makes the msid line carry this track's id (`a=msid:<stream> <track.id>`).
      if (stream) init.streams = [stream];
      else if (typeof MediaStream === "function") init.streams = [new MediaStream([track])];
      if (encodings && encodings.length > 0) init.sendEncodings = encodings;
      const transceiver = this.peerConnection.addTransceiver(track, init);
      if (codecs) {
        try {
          setCodecPreferences(transceiver, codecs, codec!);
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
  async publishData(init: RTCDataChannelInit = {}): Promise<DataPublisher> {
    this.assertOpen("publishData");
    if (init === null || typeof init !== "object") {
      throw new Error("publishData: expected an RTCDataChannelInit object");
    }
    if (init.negotiated) {
      throw new Error("publishData: negotiated channels are not supported (the server needs the in-band open)");
    }
    const options: RTCDataChannelInit = { ...init, ordered: init.ordered ?? true };
    return this.negotiate("publishData", () => {
      const label = randomUUID();
      return { label, channel: this.peerConnection.createDataChannel(label, options) };
    }, ({ label, channel }, offer) => ({ id: label, channel, offer }), ({ channel }) => channel.close());
  }

  /**
   * Stops sending the publisher `id` (its m-line is stopped) and returns the new offer to
   * send to the server. The local track itself is left running: the application owns it.
   */
  async unpublish(id: string): Promise<RTCSessionDescriptionInit> {
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
  async replaceTrack(id: string, track: MediaStreamTrack | null): Promise<void> {
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
  async restartIce(): Promise<RTCSessionDescriptionInit> {
    this.assertOpen("restartIce");
    return this.negotiate("restartIce", () => undefined, (_, offer) => offer, undefined, { iceRestart: true });
  }

  /** Applies the server's answer to the last offer, then any queued remote candidates. */
  async setAnswer(answer: RTCSessionDescriptionInit): Promise<void> {
    this.assertOpen("setAnswer");
    const description = checkDescription("setAnswer", answer, "answer");
    const release = this.releaseOnAnswer;
    if (!release) throw new Error("setAnswer: no offer is waiting for an answer");
    try {
      await this.peerConnection.setRemoteDescription(description);
    } catch (error) {
      throw new Error(`setAnswer: the browser rejected the answer: ${errorMessage(error)}`);
    } finally {
      // Even a rejected answer ends this round: the next offer supersedes it.
      if (this.releaseOnAnswer === release) this.releaseOnAnswer = null;
      release();
    }
    await this.flushCandidates();
  }

  protected onClose(): void {
    this.transceivers.clear();
    const release = this.releaseOnAnswer;
    this.releaseOnAnswer = null;
    release?.();
  }

  /**
   * One offer round: waits for the previous round's answer, runs `change`, creates and sets
   * the offer, and leaves the lock held until `setAnswer`. On failure `undo` reverts `change`.
   */
  private async negotiate<T, R>(
    operation: string,
    change: () => T,
    result: (changed: T, offer: RTCSessionDescriptionInit) => R,
    undo?: (changed: T) => void,
    offerOptions?: RTCOfferOptions,
  ): Promise<R> {
    const release = await this.negotiation.acquire();
    let changed: T | undefined;
    let applied = false;
    try {
      this.assertOpen(operation);
      changed = change();
      applied = true;
      const created = await this.peerConnection.createOffer(offerOptions);
      await this.peerConnection.setLocalDescription(created);
      this.assertOpen(operation);
      const local = this.peerConnection.localDescription ?? created;
      const offer: RTCSessionDescriptionInit = { type: "offer", sdp: local.sdp };
      const value = result(changed, offer);
      this.releaseOnAnswer = release;
      return value;
    } catch (error) {
      if (applied && undo && !this.isClosed) {
        try {
          undo(changed as T);
        } catch {
          // Best effort: the original error is the one to report.
        }
      }
      release();
      if (error instanceof Error && error.message.startsWith(`${operation}:`)) throw error;
      throw new Error(`${operation}: ${errorMessage(error)}`);
    }
  }
}

/**
 * A random (version 4) UUID. `crypto.randomUUID` only exists in secure contexts; elsewhere
 * (a page served over plain http from a LAN address) the UUID is built from
 * `crypto.getRandomValues`, which every context has.
 */
function randomUUID(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  if (typeof c?.getRandomValues !== "function") throw new Error("publishData: crypto.getRandomValues is not available");
  const bytes = c.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Validates `codec` for a track of `kind` and returns the codec list to prefer. */
function codecOrder(kind: string, codec: PublishCodec): RTCRtpCodec[] {
  const mimeType = CODEC_MIME_TYPES[codec];
  if (!mimeType) throw new Error(`publish: unknown codec "${codec}" (expected VP8, VP9, H264, AV1 or opus)`);
  const codecKind = mimeType.split("/")[0];
  if (codecKind !== kind) throw new Error(`publish: codec ${codec} is for ${codecKind} but the track is ${kind}`);
  const Sender = (globalThis as { RTCRtpSender?: typeof RTCRtpSender }).RTCRtpSender;
  const capabilities = Sender?.getCapabilities?.(kind);
  if (!capabilities) throw new Error("publish: this browser cannot list its codecs (RTCRtpSender.getCapabilities)");
  const ordered = preferCodec(capabilities.codecs, mimeType);
  if (!ordered) throw new Error(`publish: this browser cannot send ${codec}`);
  return ordered;
}

/**
 * Applies a codec order. Browsers that validate preferences against the *receive* codecs
 * reject some send-only entries; then the receive capabilities, in the same order, are used.
 */
function setCodecPreferences(transceiver: RTCRtpTransceiver, codecs: RTCRtpCodec[], codec: PublishCodec): void {
  if (typeof transceiver.setCodecPreferences !== "function") {
    throw new Error("publish: this browser cannot prefer a codec (RTCRtpTransceiver.setCodecPreferences)");
  }
  try {
    transceiver.setCodecPreferences(codecs);
    return;
  } catch (sendError) {
    const Receiver = (globalThis as { RTCRtpReceiver?: typeof RTCRtpReceiver }).RTCRtpReceiver;
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

/**
 * Takes a published track off the connection. The first m-line of the connection is the
 * BUNDLE tag: rejecting it (what `stop()` does) makes Chrome drop the transport the whole
 * group runs on, and an ICE-lite server cannot follow. So that one is only made inactive
 * (its sender detached); every other m-line is stopped (port 0).
 */
function stopTransceiver(pc: RTCPeerConnection, transceiver: RTCRtpTransceiver): void {
  const first = pc.getTransceivers().find((t) => t.mid !== null && !isStopped(t));
  if (first === transceiver || typeof transceiver.stop !== "function") {
    void transceiver.sender.replaceTrack(null).catch(() => undefined);
    transceiver.direction = "inactive";
    return;
  }
  transceiver.stop();
}

function isStopped(t: RTCRtpTransceiver): boolean {
  return (t as { stopped?: boolean }).stopped === true || t.currentDirection === "stopped";
}
