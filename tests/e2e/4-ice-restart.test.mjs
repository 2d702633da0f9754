// 4. ICE restart of a publisher: the page sends a new offer with fresh ICE credentials, the
//    server answers with fresh credentials of its own, the browser moves to a candidate pair of
//    the new ICE generation, and the viewer's framesDecoded keeps growing afterwards.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  closePage, expectGrowth, expectNoAppError, openPage, useSuite, uniqueRoom, waitFor, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

// ICE state of the publish transport: SDP credentials and what getStats() says is in use.
function publisherIce(page) {
  return page.evaluate(async () => {
    const pc = window.rheomeshControls.transports().publish.peerConnection;
    const ufrag = (sdp) => /a=ice-ufrag:(\S+)/.exec(sdp ?? "")?.[1] ?? null;
    const report = await pc.getStats();
    let transport = null;
    let packetsSent = 0;
    for (const r of report.values()) {
      if (r.type === "transport") transport = r;
      if (r.type === "outbound-rtp" && r.kind === "video") packetsSent += r.packetsSent ?? 0;
    }
    const pair = transport?.selectedCandidatePairId ? report.get(transport.selectedCandidatePairId) : null;
    return {
      localUfrag: ufrag(pc.localDescription?.sdp),
      remoteUfrag: ufrag(pc.remoteDescription?.sdp),
      signalingState: pc.signalingState,
      connectionState: pc.connectionState,
      iceConnectionState: pc.iceConnectionState,
      transportUfrag: transport?.iceLocalUsernameFragment ?? null,
      dtlsState: transport?.dtlsState ?? null,
      pairState: pair?.state ?? null,
      pairResponsesReceived: pair?.responsesReceived ?? 0,
      packetsSent,
    };
  });
}

test("publisher ICE restart keeps the viewer's video flowing", { timeout: 90000 }, async () => {
  const room = uniqueRoom("icerestart");
  const a = await openPage(suite.browser, suite.base, `/?room=${room}&autopublish=1`, "A");
  const b = await openPage(suite.browser, suite.base, `/?room=${room}`, "B");
  try {
    const ids = await waitPublished(a);
    await waitFor(b, () => window.rheomeshApp.tracks === 2, 15000, "B has A's 2 tracks");
    await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });

    const before = await publisherIce(a);
    assert.equal(before.connectionState, "connected", `A connected before: ${JSON.stringify(before)}`);
    assert.ok(before.localUfrag && before.remoteUfrag, `A has ICE credentials: ${JSON.stringify(before)}`);
    assert.equal(before.transportUfrag, before.localUfrag, "getStats transport uses the SDP credentials");
    const answersBefore = await a.evaluate(() => window.__e2eSocket.filter((m) => m.action === "Answer").length);

    await a.evaluate(() => window.rheomeshControls.restartPublisherIce());

    // Restart complete: new credentials on both sides, answer applied, and the selected pair
    // belongs to the new ICE generation (Chromium only switches to it once the server
    // answered connectivity checks with the new credentials).
    const afterState = await waitFor(
      a,
      async (before) => {
        const pc = window.rheomeshControls.transports().publish.peerConnection;
        const ufrag = (sdp) => /a=ice-ufrag:(\S+)/.exec(sdp ?? "")?.[1] ?? null;
        const local = ufrag(pc.localDescription?.sdp);
        const remote = ufrag(pc.remoteDescription?.sdp);
        if (local === before.localUfrag || remote === before.remoteUfrag) return null;
        if (pc.signalingState !== "stable" || pc.connectionState !== "connected") return null;
        const report = await pc.getStats();
        for (const r of report.values()) {
          if (r.type !== "transport") continue;
          const pair = report.get(r.selectedCandidatePairId);
          const lc = pair && report.get(pair.localCandidateId);
          const rc = pair && report.get(pair.remoteCandidateId);
          if (
            r.iceLocalUsernameFragment === local &&
            r.dtlsState === "connected" &&
            pair?.state === "succeeded" &&
            pair.responsesReceived > 0 &&
            lc?.usernameFragment === local &&
            rc?.usernameFragment === remote
          ) {
            return { local, remote, pair: pair.id };
          }
        }
        return null;
      },
      15000,
      "A's ICE restart completes (new ufrags, stable, new-generation pair selected)",
      before,
    );
    const answersAfter = await a.evaluate(() => window.__e2eSocket.filter((m) => m.action === "Answer").length);
    assert.ok(answersAfter > answersBefore, "the server answered the restart offer");
    console.log(`ICE restart: ufrag ${before.localUfrag}/${before.remoteUfrag} -> ${afterState.local}/${afterState.remote}`);

    // Media keeps flowing after the restart, over two consecutive windows.
    const sentBefore = (await publisherIce(a)).packetsSent;
    const [f0, f1] = await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 20, timeoutMs: 10000 });
    const [f2, f3] = await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 20, timeoutMs: 10000 });
    const after = await publisherIce(a);
    assert.ok(after.packetsSent > sentBefore, "A keeps sending");
    assert.equal(after.transportUfrag, afterState.local, "A still on the new ICE generation");
    assert.equal(after.connectionState, "connected");
    console.log(`B framesDecoded after restart: ${f0} -> ${f1} -> ${f3} (${f2})`);
    await expectNoAppError(a);
    await expectNoAppError(b);
  } finally {
    await closePage(a);
    await closePage(b);
  }
});
