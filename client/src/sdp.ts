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

const DIRECTIONS: ReadonlySet<string> = new Set(["sendrecv", "sendonly", "recvonly", "inactive"]);

/** Parses an msid value (`"<stream> <track>"`, without the `a=msid:` prefix). */
export function parseMsid(value: string): Msid | null {
  const parts = value.trim().split(/\s+/);
  if (parts.length === 0 || parts[0] === "") return null;
  return { streamId: parts[0], trackId: parts.length > 1 ? parts[1] : null };
}

/** Splits an SDP into its m-sections. Unparseable lines are ignored; garbage gives `[]`. */
export function parseMediaSections(sdp: string): MediaSection[] {
  const sections: MediaSection[] = [];
  let sessionDirection: Direction = "sendrecv";
  let current: (MediaSection & { explicitDirection: boolean; ssrcMsid: Msid | null }) | null = null;

  const finish = () => {
    if (!current) return;
    const { explicitDirection, ssrcMsid, ...section } = current;
    if (!explicitDirection) section.direction = sessionDirection;
    if (!section.msid) section.msid = ssrcMsid;
    sections.push(section);
  };

  for (const rawLine of sdp.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line.startsWith("m=")) {
      finish();
      const [kind = "", port = ""] = line.slice(2).split(/\s+/);
      const portNumber = Number.parseInt(port, 10);
      current = {
        index: sections.length,
        kind,
        port: Number.isNaN(portNumber) ? 0 : portNumber,
        mid: null,
        direction: "sendrecv",
        msid: null,
        explicitDirection: false,
        ssrcMsid: null,
      };
      continue;
    }
    if (!line.startsWith("a=")) continue;
    const attribute = line.slice(2);
    if (DIRECTIONS.has(attribute)) {
      if (current) {
        current.direction = attribute as Direction;
        current.explicitDirection = true;
      } else {
        sessionDirection = attribute as Direction;
      }
      continue;
    }
    if (!current) continue;
    if (attribute.startsWith("mid:")) {
      current.mid = attribute.slice(4).trim();
    } else if (attribute.startsWith("msid:")) {
      current.msid ??= parseMsid(attribute.slice(5));
    } else if (attribute.startsWith("ssrc:") && !current.ssrcMsid) {
      // Legacy form: a=ssrc:<ssrc> msid:<stream> <track>
      const match = /^ssrc:\d+\s+msid:(.*)$/.exec(attribute);
      if (match) current.ssrcMsid = parseMsid(match[1]);
    }
  }
  finish();
  return sections;
}

/** True when the writer of the SDP sends media on this m-line (live port, sendonly/sendrecv). */
export function isSending(section: MediaSection): boolean {
  return section.port !== 0 && (section.direction === "sendonly" || section.direction === "sendrecv");
}

/** The msid track id of the m-line with this mid, or null. */
export function trackIdForMid(sdp: string, mid: string): string | null {
  const section = parseMediaSections(sdp).find((s) => s.mid === mid);
  return section?.msid?.trackId ?? null;
}

/**
 * The mid of the live m-line on which the writer of the SDP sends the track `trackId`
 * (matched by msid), or null. Rejected and inactive m-lines are skipped.
 */
export function midForTrackId(sdp: string, trackId: string): string | null {
  const section = parseMediaSections(sdp).find(
    (s) => s.mid !== null && s.msid?.trackId === trackId && isSending(s),
  );
  return section?.mid ?? null;
}
