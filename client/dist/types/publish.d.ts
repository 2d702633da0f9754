import { Transport } from "./transport.js";
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
/**
 * `codecs` with every entry of `mimeType` moved to the front, keeping the relative order of
 * both groups (so RTX/RED/FEC entries stay offered). Null when `mimeType` is absent.
 */
export declare function preferCodec<C extends {
    mimeType: string;
}>(codecs: readonly C[], mimeType: string): C[] | null;
/** Sends local tracks to the server. */
export declare class PublishTransport extends Transport {
    private readonly negotiation;
    /** Releases `negotiation` once the answer to the outstanding offer has been applied. */
    private releaseOnAnswer;
    private readonly transceivers;
    constructor(config?: RTCConfiguration);
    /**
     * Adds `track` as a new send-only m-line and creates the offer for it.
     *
     * For compatibility with the original client, the second argument may also be a bare
     * encodings array.
     */
    publish(track: MediaStreamTrack, options?: PublishOptions | RTCRtpEncodingParameters[]): Promise<Publisher>;
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
    publishData(init?: RTCDataChannelInit): Promise<DataPublisher>;
    /**
     * Stops sending the publisher `id` (its m-line is stopped) and returns the new offer to
     * send to the server. The local track itself is left running: the application owns it.
     */
    unpublish(id: string): Promise<RTCSessionDescriptionInit>;
    /**
     * Sends `track` in place of what publisher `id` sends now (another camera or microphone),
     * without renegotiation: the publisher id, the m-line and its subscribers stay. `null`
     * sends nothing until a track is given again. The kind must match.
     */
    replaceTrack(id: string, track: MediaStreamTrack | null): Promise<void>;
    /** Restarts ICE: returns an offer with new ICE credentials to send to the server. */
    restartIce(): Promise<RTCSessionDescriptionInit>;
    /** Applies the server's answer to the last offer, then any queued remote candidates. */
    setAnswer(answer: RTCSessionDescriptionInit): Promise<void>;
    protected onClose(): void;
    /**
     * One offer round: waits for the previous round's answer, runs `change`, creates and sets
     * the offer, and leaves the lock held until `setAnswer`. On failure `undo` reverts `change`.
     */
    private negotiate;
}
