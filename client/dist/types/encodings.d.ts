/** Ready-made `encodings` for {@link PublishTransport.publish}. */
/** Three simulcast layers (rids `low`, `mid`, `high`), lowest first. */
export declare function simulcastEncodings(): RTCRtpEncodingParameters[];
/**
 * One SVC encoding (VP9 or AV1) with the given scalability mode; the default `L3T3_KEY` gives
 * three spatial and three temporal layers the server can pick from (`SetPreferredLayer`).
 */
export declare function SVCEncodings(scalabilityMode?: string): RTCRtpEncodingParameters[];
