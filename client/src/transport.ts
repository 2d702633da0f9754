/**
 * What publish and subscribe transports share: the RTCPeerConnection, ICE candidate
 * trickling (both directions), connection state, stats and closing.
 *
 * A transport never talks to the server: the application carries offers, answers and
 * candidates over its own signaling.
 */
import { TypedEmitter } from "./emitter.js";

/** Events both transports emit. */
export type TransportEvents = {
  /** A local ICE candidate to send to the server (end-of-candidates is not reported). */
  icecandidate: (candidate: RTCIceCandidateInit) => void;
  /** The peer connection's `connectionState` changed. */
  connectionstatechange: (state: RTCPeerConnectionState) => void;
};

/** Base class of {@link PublishTransport} and {@link SubscribeTransport}. */
export abstract class Transport<E extends TransportEvents = TransportEvents> extends TypedEmitter<E> {
  /** The underlying peer connection (exposed for diagnostics; do not renegotiate it yourself). */
  readonly peerConnection: RTCPeerConnection;
  private pendingCandidates: RTCIceCandidateInit[] = [];
  private closed = false;

  constructor(config: RTCConfiguration = {}) {
    super();
    const PeerConnection = (globalThis as { RTCPeerConnection?: typeof RTCPeerConnection }).RTCPeerConnection;
    if (typeof PeerConnection !== "function") {
      throw new Error("rheomesh: RTCPeerConnection is not available in this environment");
    }
    const pc = new PeerConnection(config);
    this.peerConnection = pc;
    pc.onicecandidate = (event) => {
      // A null candidate (gathering complete) or an empty one (legacy end-of-candidates) is not sent.
      if (!event.candidate || !event.candidate.candidate) return;
      this.emit("icecandidate", ...([event.candidate.toJSON()] as Parameters<E["icecandidate"]>));
    };
    pc.onconnectionstatechange = () => {
      this.emit("connectionstatechange", ...([pc.connectionState] as Parameters<E["connectionstatechange"]>));
    };
  }

  /** The peer connection's `connectionState`. */
  get connectionState(): RTCPeerConnectionState {
    return this.peerConnection.connectionState;
  }

  /** True once {@link close} was called. */
  get isClosed(): boolean {
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
  async addIceCandidate(candidate: RTCIceCandidateInit): Promise<void> {
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
  getStats(selector?: MediaStreamTrack | null): Promise<RTCStatsReport> {
    return this.peerConnection.getStats(selector);
  }

  /** Closes the peer connection. Pending operations fail; later calls throw. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pendingCandidates = [];
    this.onClose();
    this.peerConnection.close();
  }

  /** Hook for subclasses: fail whatever is waiting. */
  protected abstract onClose(): void;

  /** Applies the candidates queued while there was no remote description. */
  protected async flushCandidates(): Promise<void> {
    while (this.pendingCandidates.length > 0 && this.peerConnection.remoteDescription && !this.closed) {
      const candidate = this.pendingCandidates.shift()!;
      try {
        await this.applyCandidate(candidate);
      } catch (error) {
        console.warn("rheomesh: a queued ICE candidate was rejected:", error);
      }
    }
  }

  protected assertOpen(operation: string): void {
    if (this.closed) throw new Error(`${operation}: the transport is closed`);
  }

  private async applyCandidate(candidate: RTCIceCandidateInit): Promise<void> {
    const endOfCandidates = !candidate.candidate;
    // Browsers reject a candidate naming no m-line; with BUNDLE the first one is right.
    const init =
      !endOfCandidates && candidate.sdpMid == null && candidate.sdpMLineIndex == null
        ? { ...candidate, sdpMLineIndex: 0 }
        : candidate;
    try {
      await this.peerConnection.addIceCandidate(init);
    } catch (error) {
      // Older browsers reject the end-of-candidates form; ICE works without it.
      if (endOfCandidates) return;
      throw new Error(`addIceCandidate failed: ${errorMessage(error)} (candidate: ${candidate.candidate})`);
    }
  }
}

/** Checks that `description` is a `{type, sdp}` object of the expected type. */
export function checkDescription(
  operation: string,
  description: RTCSessionDescriptionInit,
  type: RTCSdpType,
): RTCSessionDescriptionInit {
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

/** The message of an unknown thrown value. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
