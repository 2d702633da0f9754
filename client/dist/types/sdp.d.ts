/**
 * Read-only SDP helpers: find which m-line carries which track.
 *
 * This module only *reads* SDP. Rheomesh never rewrites SDP (browsers reject re-assigned
 * header-extension ids, and each side negotiates its own ids anyway).
 */
/** Media direction of an m-line, from the point of view of the side that wrote the SDP. */
export type Direction = "sendrecv" | "sendonly" | "recvonly" | "inactive";
/** The value of an `a=msid:<stream> <track>` attribute. */
export interface Msid {
    /** The MediaStream id (`-` when the sender named no stream). */
    streamId: string;
    /** The track id (the "appdata" part), or null when absent. */
    trackId: string | null;
}
/** What Rheomesh needs to know about one m-line. */
export interface MediaSection {
    /** Zero-based position of the m-line in the SDP (the `sdpMLineIndex`). */
    index: number;
    /** `audio`, `video`, `application`, ... */
    kind: string;
    /** The m-line port; 0 means the m-line is rejected or stopped. */
    port: number;
    /** The `a=mid` value, or null when absent. */
    mid: string | null;
    /** The `a=sendrecv|sendonly|recvonly|inactive` direction (session-level default applies). */
    direction: Direction;
    /** The first `a=msid`, falling back to the legacy `a=ssrc:<n> msid:` form; null when absent. */
    msid: Msid | null;
}
/** Parses an msid value (`"<stream> <track>"`, without the `a=msid:` prefix). */
export declare function parseMsid(value: string): Msid | null;
/** Splits an SDP into its m-sections. Unparseable lines are ignored; garbage gives `[]`. */
export declare function parseMediaSections(sdp: string): MediaSection[];
/** True when the writer of the SDP sends media on this m-line (live port, sendonly/sendrecv). */
export declare function isSending(section: MediaSection): boolean;
/** The msid track id of the m-line with this mid, or null. */
export declare function trackIdForMid(sdp: string, mid: string): string | null;
/**
 * The mid of the live m-line on which the writer of the SDP sends the track `trackId`
 * (matched by msid), or null. Rejected and inactive m-lines are skipped.
 */
export declare function midForTrackId(sdp: string, trackId: string): string | null;
