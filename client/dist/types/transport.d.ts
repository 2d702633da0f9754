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
export declare abstract class Transport<E extends TransportEvents = TransportEvents> extends TypedEmitter<E> {
    /** The underlying peer connection (exposed for diagnostics; do not renegotiate it yourself). */
    readonly peerConnection: RTCPeerConnection;
    private pendingCandidates;
    private closed;
    constructor(config?: RTCConfiguration);
    /** The peer connection's `connectionState`. */
    get connectionState(): RTCPeerConnectionState;
    /** True once {@link close} was called. */
    get isClosed(): boolean;
    /**
     * Adds a remote ICE candidate received from the server. Candidates that arrive before the
     * remote description are queued and applied, in order, right after it is set. An empty
     * `candidate` string means end-of-candidates.
     *
     * Resolves once the candidate is applied or queued; a queued candidate that the browser
     * later rejects is reported with `console.warn` (one bad candidate must not fail a
     * negotiation).
     */
    addIceCandidate(candidate: RTCIceCandidateInit): Promise<void>;
    /** The peer connection's statistics. */
    getStats(selector?: MediaStreamTrack | null): Promise<RTCStatsReport>;
    /** Closes the peer connection. Pending operations fail; later calls throw. Idempotent. */
    close(): void;
    /** Hook for subclasses: fail whatever is waiting. */
    protected abstract onClose(): void;
    /** Applies the candidates queued while there was no remote description. */
    protected flushCandidates(): Promise<void>;
    protected assertOpen(operation: string): void;
    private applyCandidate;
}
/** Checks that `description` is a `{type, sdp}` object of the expected type. */
export declare function checkDescription(operation: string, description: RTCSessionDescriptionInit, type: RTCSdpType): RTCSessionDescriptionInit;
/** The message of an unknown thrown value. */
export declare function errorMessage(error: unknown): string;
