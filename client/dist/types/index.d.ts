/**
 * Rheomesh browser client: publish and subscribe transports for the Rheomesh SFU.
 * Signaling (carrying offers, answers and candidates to the server) is the application's.
 */
export { PublishTransport, preferCodec } from "./publish.js";
export type { PublishCodec, PublishOptions, Publisher, DataPublisher } from "./publish.js";
export { SubscribeTransport, DEFAULT_SUBSCRIBE_TIMEOUT_MS } from "./subscribe.js";
export type { SubscribeOptions, Subscriber, SubscribeDataOptions, DataSubscriber } from "./subscribe.js";
export { Transport } from "./transport.js";
export type { TransportEvents } from "./transport.js";
export { TypedEmitter } from "./emitter.js";
export type { EventMap } from "./emitter.js";
export { simulcastEncodings, SVCEncodings } from "./encodings.js";
export { parseMediaSections, parseMsid, isSending, trackIdForMid, midForTrackId } from "./sdp.js";
export type { MediaSection, Msid, Direction } from "./sdp.js";
