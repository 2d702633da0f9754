/**
 * SubscribeTransport: the server → browser peer connection. The server is always the
 * offerer; the browser answers.
 *
 * Tracks are matched to publishers by the `a=msid:<stream> <publisherId>` line of their
 * m-line in the current remote description, never by `MediaStreamTrack.id` (browsers may
 * give received tracks ids of their own).
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
}

interface Waiter {
  resolve: (subscriber: Subscriber) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Default of {@link SubscribeOptions.timeoutMs}. */
export const DEFAULT_SUBSCRIBE_TIMEOUT_MS = 10_000;

/** Receives the tracks the server forwards. */
export class SubscribeTransport extends Transport {
  private readonly negotiation = new Mutex();
  private readonly waiters = new Map<string, Set<Waiter>>();
  private parsed: { sdp: string; sections: MediaSection[] } | null = null;

  constructor(config: RTCConfiguration = {}) {
    super(config);
    this.peerConnection.ontrack = () => this.resolveWaiters();
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
    const track = this.findTrack(publisherId);
    if (track) return Promise.resolve({ id: publisherId, track });
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
  }

  private findTrack(publisherId: string): MediaStreamTrack | null {
    const sdp = this.peerConnection.remoteDescription?.sdp;
    if (!sdp) return null;
    if (this.parsed?.sdp !== sdp) this.parsed = { sdp, sections: parseMediaSections(sdp) };
    const section = this.parsed.sections.find(
      (s) => s.mid !== null && s.msid?.trackId === publisherId && isSending(s),
    );
    if (!section) return null;
    const transceiver = this.peerConnection.getTransceivers().find((t) => t.mid === section.mid);
    return transceiver?.receiver.track ?? null;
  }

  private resolveWaiters(): void {
    for (const [publisherId, set] of [...this.waiters]) {
      const track = this.findTrack(publisherId);
      if (!track) continue;
      this.waiters.delete(publisherId);
      for (const waiter of set) {
        clearTimeout(waiter.timer);
        waiter.resolve({ id: publisherId, track });
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
    const set = this.waiters.get(publisherId);
    if (!set) return;
    set.delete(waiter);
    if (set.size === 0) this.waiters.delete(publisherId);
  }
}
