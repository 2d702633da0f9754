import { Transport } from "./transport.js";
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
/** Default of {@link SubscribeOptions.timeoutMs} and {@link SubscribeDataOptions.timeoutMs}. */
export declare const DEFAULT_SUBSCRIBE_TIMEOUT_MS = 10000;
/** Receives the tracks and data channels the server forwards. */
export declare class SubscribeTransport extends Transport {
    private readonly negotiation;
    private readonly waiters;
    private parsed;
    /** Data channels the server opened and that are not closed, by label (= publisher id). */
    private readonly channels;
    private readonly dataWaiters;
    constructor(config?: RTCConfiguration);
    /**
     * Applies a server offer and returns the answer to send back. Calls are serialized: an
     * offer passed while an earlier one is still being processed waits for it.
     */
    setOffer(offer: RTCSessionDescriptionInit): Promise<RTCSessionDescriptionInit>;
    /**
     * Resolves with the track of publisher `publisherId` once its m-line has been negotiated
     * (immediately if it already is). Rejects after `timeoutMs`, on `unsubscribe` and on
     * `close`. Send the `Subscribe` request to the server separately.
     */
    subscribe(publisherId: string, options?: SubscribeOptions): Promise<Subscriber>;
    /**
     * Resolves with the data channel of data publisher `publisherId` once the server has opened
     * it on this connection (immediately if it already has). Rejects after `timeoutMs` and on
     * `close`. Send the `SubscribeData` request to the server separately and answer its offer
     * with {@link setOffer}; the channel arrives after that, once SCTP is up.
     *
     * A channel is forgotten when it closes: a later call waits for a new one.
     */
    subscribeData(publisherId: string, options?: SubscribeDataOptions): Promise<DataSubscriber>;
    /**
     * Local bookkeeping only: pending `subscribe` calls for `publisherId` reject. Send
     * `StopSubscribe` to the server, which renegotiates the m-line away.
     */
    unsubscribe(publisherId: string): void;
    /**
     * The track currently received from `publisherId`, or null. The mapping comes from the
     * current remote description's `a=mid` / `a=msid` lines.
     */
    trackOf(publisherId: string): MediaStreamTrack | null;
    /**
     * Marks ICE for restart. The server is the offerer, so the application must then ask it
     * for an ICE-restart offer (`RestartICE`) and pass that offer to `setOffer`.
     */
    restartIce(): void;
    protected onClose(): void;
    /** Records a channel the server opened and resolves the `subscribeData` calls waiting for it. */
    private onDataChannel;
    private findTrack;
    /** The track received from `publisherId` and its msid stream id, or null. */
    private findReceived;
    private resolveWaiters;
    private rejectWaiters;
    private removeWaiter;
}
