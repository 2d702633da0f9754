/** Ready-made `encodings` for {@link PublishTransport.publish}. */

/** Three simulcast layers (rids `low`, `mid`, `high`), lowest first. */
export function simulcastEncodings(): RTCRtpEncodingParameters[] {
  return [
    { rid: "low", maxBitrate: 150_000, scaleResolutionDownBy: 4 },
    { rid: "mid", maxBitrate: 500_000, scaleResolutionDownBy: 2 },
    { rid: "high", maxBitrate: 2_500_000, scaleResolutionDownBy: 1 },
  ];
}

/**
 * One SVC encoding (VP9 or AV1) with the given scalability mode; the default `L3T3_KEY` gives
 * three spatial and three temporal layers the server can pick from (`SetPreferredLayer`).
 */
export function SVCEncodings(scalabilityMode = "L3T3_KEY"): RTCRtpEncodingParameters[] {
  return [{ scalabilityMode } as RTCRtpEncodingParameters];
}
