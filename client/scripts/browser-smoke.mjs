// Real-browser check of dist/rheomesh.js in headless Chromium (not part of `npm test`).
// Loopback only: PublishTransport -> plain RTCPeerConnection ("server") whose received tracks
// are re-offered by a second plain peer connection to a SubscribeTransport, all in one page.
// Needs /usr/bin/chromium (apt-get install -y chromium) or CHROMIUM=/path. Run `npm run build` first.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
if (!existsSync(executablePath)) {
  console.error(`browser-smoke: no Chromium at ${executablePath} (apt-get install -y chromium, or set CHROMIUM)`);
  process.exit(1);
}
const bundle = readFileSync(new URL("../dist/rheomesh.js", import.meta.url));
const page = `<!doctype html><script type="module">import * as rm from "/rheomesh.js"; window.rm = rm;</script>`;
const server = http
  .createServer((req, res) => {
    const js = req.url === "/rheomesh.js";
    res.writeHead(200, { "content-type": js ? "text/javascript" : "text/html" });
    res.end(js ? bundle : page);
  })
  .listen(0, "127.0.0.1");
await new Promise((resolve) => server.once("listening", resolve));

const browser = await chromium.launch({
  executablePath,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
  ],
});
try {
  const tab = await browser.newPage();
  tab.on("pageerror", (e) => console.error("[page error]", e));
  await tab.goto(`http://127.0.0.1:${server.address().port}/`);
  await tab.waitForFunction(() => window.rm !== undefined, null, { timeout: 10_000 });
  const out = await tab.evaluate(scenario);
  console.log(JSON.stringify(out, null, 2));
  assert.equal(out.videoId, out.videoTrackId, "publish id is track.id");
  assert.equal(out.videoMsid, out.videoTrackId, "the offer's a=msid carries track.id");
  assert.equal(out.audioId, out.audioTrackId);
  assert.match(out.firstVideoRtpmap, /VP9\/90000/, "preferred codec is first");
  assert.equal(out.pubState, "connected");
  assert.deepEqual(out.subscribedKinds, ["video", "audio"]);
  assert.equal(out.subState, "connected");
  assert.ok(out.framesDecoded > 10, "video decoded on the subscribe transport");
  assert.equal(out.trackAfterInactive, null, "an inactive m-line maps to no track");
  assert.equal(out.timeout, "subscribe timeout: nope");
  assert.equal(out.unpublishPort, 0);
  assert.notEqual(out.ufragAfterRestart, out.ufragBefore);
  console.log("browser-smoke: ok");
} finally {
  await browser.close();
  server.close();
}

// Runs in the page.
async function scenario() {
  const rm = window.rm;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const waitFor = async (what, ms) => {
    const end = Date.now() + ms;
    while (!(await what()) && Date.now() < end) await sleep(50);
  };
  const ufrag = (sdp) => /a=ice-ufrag:(\S+)/.exec(sdp)[1];
  const out = {};
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const [video] = stream.getVideoTracks();
  const [audio] = stream.getAudioTracks();
  out.videoTrackId = video.id;
  out.audioTrackId = audio.id;

  const pub = new rm.PublishTransport({});
  const srv = new RTCPeerConnection({});
  pub.on("icecandidate", (c) => srv.addIceCandidate(c));
  srv.onicecandidate = (e) => pub.addIceCandidate(e.candidate ? e.candidate.toJSON() : { candidate: "" });
  const received = [];
  srv.ontrack = (e) => received.push(e.track);
  const answer = async (offer) => {
    await srv.setRemoteDescription(offer);
    await srv.setLocalDescription(await srv.createAnswer());
    await pub.setAnswer({ type: "answer", sdp: srv.localDescription.sdp });
  };
  // Two publishes at once, as the getting-started guide's forEach(async ...) does.
  const pendingVideo = pub.publish(video, { codec: "VP9" });
  const pendingAudio = pub.publish(audio, { codec: "opus" });
  const v = await pendingVideo;
  out.videoId = v.id;
  out.videoMsid = rm.parseMediaSections(v.offer.sdp)[0].msid.trackId;
  out.firstVideoRtpmap = v.offer.sdp.split("\r\n").find((l) => l.startsWith("a=rtpmap:"));
  out.ufragBefore = ufrag(v.offer.sdp);
  await answer(v.offer);
  const a = await pendingAudio;
  out.audioId = a.id;
  await answer(a.offer);
  await waitFor(() => pub.connectionState === "connected", 5000);
  out.pubState = pub.connectionState;

  const fwd = new RTCPeerConnection({});
  const sub = new rm.SubscribeTransport({});
  sub.on("icecandidate", (c) => fwd.addIceCandidate(c));
  fwd.onicecandidate = (e) => sub.addIceCandidate(e.candidate ? e.candidate.toJSON() : { candidate: "" });
  for (const t of received) fwd.addTransceiver(t, { direction: "sendonly", streams: [new MediaStream([t])] });
  await fwd.setLocalDescription(await fwd.createOffer());
  const ids = rm.parseMediaSections(fwd.localDescription.sdp).map((s) => s.msid.trackId);
  const pending = ids.map((id) => sub.subscribe(id, { timeoutMs: 5000 }));
  await fwd.setRemoteDescription(await sub.setOffer({ type: "offer", sdp: fwd.localDescription.sdp }));
  out.subscribedKinds = (await Promise.all(pending)).map((s) => s.track.kind);
  let frames = 0;
  await waitFor(async () => {
    (await sub.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded ?? 0;
    });
    return frames > 10;
  }, 8000);
  out.framesDecoded = frames;
  out.subState = sub.connectionState;

  fwd.getTransceivers()[0].direction = "inactive";
  await fwd.setLocalDescription(await fwd.createOffer());
  await fwd.setRemoteDescription(await sub.setOffer({ type: "offer", sdp: fwd.localDescription.sdp }));
  out.trackAfterInactive = sub.trackOf(ids[0]);
  try {
    await sub.subscribe("nope", { timeoutMs: 100 });
  } catch (e) {
    out.timeout = e.message;
  }

  const unpublishOffer = await pub.unpublish(v.id);
  out.unpublishPort = rm.parseMediaSections(unpublishOffer.sdp)[0].port;
  await answer(unpublishOffer);
  out.ufragAfterRestart = ufrag((await pub.restartIce()).sdp);
  pub.close();
  sub.close();
  srv.close();
  fwd.close();
  return out;
}
