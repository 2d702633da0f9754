// 13. WHIP ingest (RFC 9725) and WHEP playback with browsers: a page publishes camera + microphone with a
//     plain WHIP client (fetch + RTCPeerConnection, non-trickle: its candidates in the offer)
//     to /whip/{room}/{stream} of a server started with --whip-token; a WebSocket participant
//     of the same room sees a tile named after the stream and decodes it; an ICE restart over
//     PATCH (If-Match: *) keeps it playing. A WHEP viewer page (recvonly offer to
//     /whep/{room}/cam) decodes the same stream, also across an ICE restart over PATCH.
//     DELETE unpublishes it (the viewer drops the tile; the WHEP session ends with it).
//     Missing or wrong token: 401; bad SDP: 400; unknown resource: 404; OPTIONS: CORS.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  closePage, expectGrowth, expectNoAppError, launchBrowser, openPage, startServer, uniqueRoom, until, waitFor,
  whepDecodes, whepView, whipPublish
} from "./helpers.mjs";

const TOKEN = "e2e-whip-token";
let server;
let browser;

before(async () => {
  server = await startServer({ args: ["--whip-token", TOKEN] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  const out = server?.output().trim() ?? "";
  if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
});

/** In page `p`: restart ICE over PATCH; resolves with the new local ufrag and the status. */
function whipRestartIce(p, token) {
  return p.evaluate(async (token) => {
    const { pc, location } = window.whip;
    pc.restartIce();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const ufrag = /a=ice-ufrag:(\S+)/.exec(offer.sdp)[1];
    const pwd = /a=ice-pwd:(\S+)/.exec(offer.sdp)[1];
    const res = await fetch(location, {
      method: "PATCH",
      headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*", Authorization: `Bearer ${token}` },
      body: `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\n`,
    });
    const frag = await res.text();
    if (res.status !== 200) return { status: res.status, frag };
    const serverUfrag = /a=ice-ufrag:(\S+)/.exec(frag)[1];
    const serverPwd = /a=ice-pwd:(\S+)/.exec(frag)[1];
    const answer = window.whip.answer
      .replace(/a=ice-ufrag:\S+/g, `a=ice-ufrag:${serverUfrag}`)
      .replace(/a=ice-pwd:\S+/g, `a=ice-pwd:${serverPwd}`);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    window.whip.answer = answer;
    window.whip.etag = res.headers.get("ETag");
    return { status: res.status, ufrag, serverUfrag, etag: window.whip.etag };
  }, token);
}

/** The ICE ufrags of the WHIP connection's selected candidate pair's transport, now. */
function whipTransport(p) {
  return p.evaluate(async () => {
    const report = await window.whip.pc.getStats();
    for (const r of report.values()) {
      if (r.type === "transport") return { state: r.iceState, local: r.iceLocalUsernameFragment, dtls: r.dtlsState };
    }
    return null;
  });
}

test("a browser publishes over WHIP; a room participant and a WHEP viewer watch; ICE restarts by PATCH; DELETE ends it", { timeout: 120000 }, async () => {
  const room = uniqueRoom("whip");
  const w = await openPage(browser, server.base, "/", "WHIP");
  const v = await openPage(browser, server.base, `/?room=${room}&name=Viewer`, "Viewer");
  try {
    await waitFor(v, () => window.rheomeshApp.joined, 10000, "the viewer joined");
    const ids = await whipPublish(w, `/whip/${room}/cam`, TOKEN);
    assert.match(ids.location, new RegExp(`^/whip/${room}/cam/[0-9a-f]{32}$`));
    assert.ok(ids.etag, "an ETag");

    // The viewer gets both tracks in one tile named after the stream, and decodes them.
    await waitFor(v, () => window.rheomeshApp.tracks === 2, 15000, "the viewer receives the WHIP tracks");
    await waitFor(v, () => document.querySelector("#remote .tile")?.dataset.name === "cam", 5000, "a tile named cam");
    assert.equal((await v.evaluate(() => window.rheomeshApp.tiles)), 1);
    await expectGrowth(v, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(v, ids.audio, "packetsReceived", { minDelta: 20, timeoutMs: 10000 });

    // ICE restart over PATCH: the browser's new credentials, the server's new ones back.
    const before = await whipTransport(w);
    const restart = await whipRestartIce(w, TOKEN);
    assert.equal(restart.status, 200, JSON.stringify(restart));
    assert.notEqual(restart.etag, ids.etag, "a new ETag");
    await waitFor(
      w,
      async (ufrag) => {
        const report = await window.whip.pc.getStats();
        return [...report.values()].some((r) => r.type === "transport" && r.iceLocalUsernameFragment === ufrag && r.iceState === "connected");
      },
      15000,
      "connected again on the new ICE credentials",
      restart.ufrag,
    );
    const afterRestart = await whipTransport(w);
    console.log(`ICE before ${JSON.stringify(before)}, after ${JSON.stringify(afterRestart)}`);
    await expectGrowth(v, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 10000 });

    // A WHEP viewer of the same stream decodes it, also across an ICE restart.
    const wv = await openPage(browser, server.base, "/", "WHEP");
    try {
      const view = await whepView(wv, `/whep/${room}/cam`, TOKEN);
      assert.match(view.location, new RegExp(`^/whep/${room}/cam/[0-9a-f]{32}$`));
      await whepDecodes(wv, 20, 15000);
      const r = await whipRestartIce(wv, TOKEN);
      assert.equal(r.status, 200, JSON.stringify(r));
      await waitFor(
        wv,
        async (ufrag) => {
          const report = await window.whip.pc.getStats();
          return [...report.values()].some((x) => x.type === "transport" && x.iceLocalUsernameFragment === ufrag && x.iceState === "connected");
        },
        15000,
        "the WHEP viewer connected again on the new ICE credentials",
        r.ufrag,
      );
      await whepDecodes(wv, 20, 10000);
      const refused = await wv.evaluate(
        async (room) => (await fetch(`/whep/${room}/cam`, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: "v=0\r\n" })).status,
        room,
      );
      assert.equal(refused, 401, "WHEP wants the token too");
      const unknown = await wv.evaluate(
        async ({ room, token }) =>
          (await fetch(`/whep/${room}/nobody`, { method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` }, body: "v=0\r\n" })).status,
        { room, token: TOKEN },
      );
      assert.equal(unknown, 404, "no such stream");

      // DELETE of the WHIP session: unpublished; the room viewer drops the tile, and the WHEP
      // session ends with it (its resource is gone).
      const status = await w.evaluate(
        async (token) => (await fetch(window.whip.location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } })).status,
        TOKEN,
      );
      assert.equal(status, 200);
      await waitFor(v, () => window.rheomeshApp.tracks === 0 && window.rheomeshApp.tiles === 0, 5000, "the viewer drops the WHIP tile");
      await waitFor(
        wv,
        async (token) => (await fetch(window.whip.location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } })).status === 404,
        5000,
        "the WHEP session ended with its stream",
        TOKEN,
      );
    } finally {
      await closePage(wv);
    }
    await expectNoAppError(v);
  } finally {
    await closePage(w);
    await closePage(v);
  }
});

test("WHIP refuses missing and wrong tokens, bad SDP and unknown resources; OPTIONS answers CORS", { timeout: 30000 }, async () => {
  const base = server.base;
  const offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
  const post = (headers, body = offer) => fetch(`${base}/whip/${uniqueRoom("bad")}/s`, { method: "POST", headers, body });
  let r = await post({ "Content-Type": "application/sdp" });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get("www-authenticate"), "Bearer");
  r = await post({ "Content-Type": "application/sdp", Authorization: "Bearer nope" });
  assert.equal(r.status, 401);
  r = await post({ "Content-Type": "application/sdp", Authorization: `Bearer ${TOKEN}` });
  assert.equal(r.status, 400, await r.text());
  r = await post({ "Content-Type": "text/plain", Authorization: `Bearer ${TOKEN}` });
  assert.equal(r.status, 415);
  r = await post({ "Content-Type": "application/sdp", Authorization: `Bearer ${TOKEN}` }, "not sdp");
  assert.equal(r.status, 400);
  r = await fetch(`${base}/whip/room/s/0123456789abcdef0123456789abcdef`, {
    method: "PATCH",
    headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*", Authorization: `Bearer ${TOKEN}` },
    body: "a=end-of-candidates\r\n",
  });
  assert.equal(r.status, 404);
  r = await fetch(`${base}/whip/room/s/0123456789abcdef0123456789abcdef`, { method: "DELETE", headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 404);
  r = await fetch(`${base}/whip/room/s`, { method: "GET" });
  assert.equal(r.status, 405);
  r = await fetch(`${base}/whip/room/s`, { method: "OPTIONS" });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.match(r.headers.get("access-control-allow-headers"), /Authorization/);
  assert.equal(r.headers.get("accept-post"), "application/sdp");
  // Refused POSTs left no participant behind (the first test's pages may still be leaving).
  await until(
    async () => /^rheomesh_participants 0$/m.test(await (await fetch(`${base}/metrics`)).text()),
    5000,
    "no participant left",
  );
});
