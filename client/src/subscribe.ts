/**
 * SubscribeTransport: the server → browser peer connection. The server is always the
 * offerer; the browser answers.
 *
 * Tracks are matched to publishers by the `a=msid:<stream> <publisherId>` line of their
 * m-line in the current remote description, never by `MediaStreamTrack.id` (browsers may
 * give received tracks ids of their own).
 *
 * Data channels are matched by label: the server opens each subscribed data channel on this
 * connection with the data publisher's id as its label.
 */
import { Mutex } from "./mutex.js";
import { isSending, parseMediaSections, type MediaSection } from "./sdp.js";
import { Transport, checkDescription, errorMessage } from "./transport.js";

/** Options of {@link SubscribeTransport.subscribe}. */
export interface SubscribeOptions {
  /** How long to wait for the track, in milliseconds (default 10000). */
  timeoutMs?: number;
}

/** A received track and the publisher it comes from. */
export interface Subscriber {
  /** The publisher id that was subscribed. */
  id: string;
  /** The received track. */
  track: MediaStreamTrack;
  /**
   * The msid stream id the server gave the track: the publisher's own stream id, shared by
   * the tracks it published together (e.g. camera and microphone); null when absent.
   */
  streamId: string | null;
}

/** Options of {@link SubscribeTransport.subscribeData}. */
export interface SubscribeDataOptions {
  /** How long to wait for the data channel, in milliseconds (default 10000). */
  timeoutMs?: number;
}

/** A received data channel and the data publisher it comes from. */
export interface DataSubscriber {
  /** The data publisher id that was subscribed (the channel's label). */
  publisherId: string;
  /** The channel the server opened; it may still be `connecting` (wait for its `open` event). */
  channel: RTCDataChannel;
}

interface DataWaiter {
  resolve: (subscriber: DataSubscriber) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface Waiter {
  resolve: (subscriber: Subscriber) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Default of {@link SubscribeOptions.timeoutMs} and {@link SubscribeDataOptions.timeoutMs}. */
export const DEFAULT_SUBSCRIBE_TIMEOUT_MS = 10_000;

/** Receives the tracks and data channels the server forwards. */
export class SubscribeTransport extends Transport {
  private readonly negotiation = new Mutex();
  private readonly waiters = new Map<string, Set<Waiter>>();
  private parsed: { sdp: string; sections: MediaSection[] } | null = null;
  /** Data channels the server opened and that are not closed, by label (= publisher id). */
  private readonly channels = new Map<string, RTCDataChannel>();
  private readonly dataWaiters = new Map<string, Set<DataWaiter>>();

  constructor(config: RTCConfiguration = {}) {
    super(config);
    this.peerConnection.ontrack = () => this.resolveWaiters();
    // A listener, not `ondatachannel`: the application may set that one for itself.
    this.peerConnection.addEventListener("datachannel", (event) => this.onDataChannel(event.channel));
  }

  /**
   * Applies a server offer and returns the answer to send back. Calls are serialized: an
   * offer passed while an earlier one is still being processed waits for it.
   */
  async setOffer(offer: RTCSessionDescriptionInit): Promise<RTCSessionDescriptionInit> {
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
      let answer: RTCSessionDescriptionInit;
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
  subscribe(publisherId: string, options: SubscribeOptions = {}): Promise<Subscriber> {
    this.assertOpen("subscribe");
    if (typeof publisherId !== "string" || publisherId === "") {
      return Promise.reject(new Error("subscribe: publisherId must be a non-empty string"));
    }
    const received = this.findReceived(publisherId);
    if (received) return Promise.resolve({ id: publisherId, ...received });
    const timeoutMs = options.timeoutMs ?? DEFAULT_SUBSCRIBE_TIMEOUT_MS;
    return new Promise<Subscriber>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.removeWaiter(publisherId, waiter);
          reject(new Error(`subscribe timeout: ${publisherId}`));
        }, timeoutMs),
      };
      let set = this.waiters.get(publisherId);
      if (!set) {
        set = new Set();
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
  subscribeData(publisherId: string, options: SubscribeDataOptions = {}): Promise<DataSubscriber> {
    this.assertOpen("subscribeData");
    if (typeof publisherId !== "string" || publisherId === "") {
      return Promise.reject(new Error("subscribeData: publisherId must be a non-empty string"));
    }
    const channel = this.channels.get(publisherId);
    if (channel) return Promise.resolve({ publisherId, channel });
    const timeoutMs = options.timeoutMs ?? DEFAULT_SUBSCRIBE_TIMEOUT_MS;
    return new Promise<DataSubscriber>((resolve, reject) => {
      const waiter: DataWaiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          removeFrom(this.dataWaiters, publisherId, waiter);
          reject(
            new Error(`subscribeData timeout: ${publisherId} (no data channel with this label arrived within ${timeoutMs} ms)`),
          );
        }, timeoutMs),
      };
      let set = this.dataWaiters.get(publisherId);
      if (!set) {
        set = new Set();
        this.dataWaiters.set(publisherId, set);
      }
      set.add(waiter);
    });
  }

  /**
   * Local bookkeeping only: pending `subscribe` calls for `publisherId` reject. Send
   * `StopSubscribe` to the server, which renegotiates the m-line away.
   */
  unsubscribe(publisherId: string): void {
    this.rejectWaiters(publisherId, new Error(`unsubscribed: ${publisherId}`));
  }

  /**
   * The track currently received from `publisherId`, or null. The mapping comes from the
   * current remote description's `a=mid` / `a=msid` lines.
   */
  trackOf(publisherId: string): MediaStreamTrack | null {
    return this.findTrack(publisherId);
  }

  /**
   * Marks ICE for restart. The server is the offerer, so the application must then ask it
   * for an ICE-restart offer (`RestartICE`) and pass that offer to `setOffer`.
   */
  restartIce(): void {
    this.assertOpen("restartIce");
    this.peerConnection.restartIce?.();
  }

  protected onClose(): void {
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
  private onDataChannel(channel: RTCDataChannel): void {
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

  private findTrack(publisherId: string): MediaStreamTrack | null {
    return this.findReceived(publisherId)?.track ?? null;
  }

  /** The track received from `publisherId` and its msid stream id, or null. */
  private findReceived(publisherId: string): { track: MediaStreamTrack; streamId: string | null } | null {
    const sdp = this.peerConnection.remoteDescription?.sdp;
    if (!sdp) return null;
    if (this.parsed?.sdp !== sdp) this.parsed = { sdp, sections: parseMediaSections(sdp) };
    const section = this.parsed.sections.find(
      (s) => s.mid !== null && s.msid?.trackId === publisherId && isSending(s),
    );
    if (!section) return null;
    const transceiver = this.peerConnection.getTransceivers().find((t) => t.mid === section.mid);
    const track = transceiver?.receiver.track;
    const stream = section.msid?.streamId;
    return track ? { track, streamId: stream && stream !== "-" ? stream : null } : null;
  }

  private resolveWaiters(): void {
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

  private rejectWaiters(publisherId: string, error: Error): void {
    const set = this.waiters.get(publisherId);
    if (!set) return;
    this.waiters.delete(publisherId);
    for (const waiter of set) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
  }

  private removeWaiter(publisherId: string, waiter: Waiter): void {
    removeFrom(this.waiters, publisherId, waiter);
  }
}

/** Removes `item` from the set of `key`, and the set once it is empty. */
function removeFrom<T>(map: Map<string, Set<T>>, key: string, item: T): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(item);
  if (set.size === 0) map.delete(key);
}
