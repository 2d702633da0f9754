// Shared helpers for the browser end-to-end tests: the example server (examples/media_server)
// as a child process on a free loopback port, headless Chromium through playwright-core, and
// deadline-bounded polling. Nothing here talks to anything outside 127.0.0.0/8 (9-bwe binds the
// server to a veth pair of its own, inside this machine).
//
// Environment:
//   RHEOMESH_E2E_BIN         server binary to use as is (default: `cargo build --example
//                            media_server` first, then target/debug/examples/media_server;
//                            the page's static files are compiled into the binary)
//   CHROMIUM                 browser executable (default /usr/bin/chromium)
//   RHEOMESH_E2E_SERVER_LOG  1 = echo the server's output as it comes
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { connect, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const VIEWPORT = { width: 1280, height: 720 };

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required",
];

let builtBinary = null;

/** The server binary; builds it (debug) unless RHEOMESH_E2E_BIN names one. */
export function serverBinary() {
  if (process.env.RHEOMESH_E2E_BIN) return process.env.RHEOMESH_E2E_BIN;
  if (builtBinary) return builtBinary;
  const build = spawnSync("cargo", ["build", "--quiet", "--example", "media_server"], {
    cwd: ROOT,
    stdio: ["ignore", "inherit", "inherit"],
    timeout: 10 * 60 * 1000,
  });
  if (build.status !== 0) throw new Error(`cargo build --example media_server failed (status ${build.status})`);
  builtBinary = `${ROOT}target/debug/examples/media_server`;
  if (!existsSync(builtBinary)) throw new Error(`no server binary at ${builtBinary}`);
  return builtBinary;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts the example server on a free port (`--port <free> --shards 2`, bound to 127.0.0.1,
 * then `args`)
 * and resolves once `GET /` answers 200. Returns { base, port, pid, output(), stop() }.
 */
export async function startServer({ timeoutMs = 20000, args = [], bind = "127.0.0.1" } = {}) {
  const bin = serverBinary();
  const port = await freePort();
  const child = spawn(bin, ["--bind", bind, "--port", String(port), "--shards", "2", ...args], {
    cwd: ROOT,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  const collect = (chunk) => {
    output += chunk;
    if (output.length > 200000) output = output.slice(-100000);
    if (process.env.RHEOMESH_E2E_SERVER_LOG === "1") process.stderr.write(chunk);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  let exited = null;
  const exitPromise = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      resolve(exited);
    }),
  );
  const base = `http://${bind}:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`server exited during start (${JSON.stringify(exited)}):\n${output}`);
    try {
      const res = await fetch(`${base}/`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`server not ready on ${base} within ${timeoutMs} ms:\n${output}`);
    }
    await delay(100);
  }
  return {
    base,
    port,
    pid: child.pid,
    output: () => output,
    async stop() {
      if (exited) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      const result = await exitPromise;
      clearTimeout(timer);
      return result;
    },
  };
}

/** Headless Chromium with the flags that work here (TESTING.md); playwright gives it a fresh profile dir. */
export function launchBrowser({ executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium", args = [] } = {}) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    timeout: 30000,
  });
}

// Runs in every page before app.js: records every server → client WebSocket message, and
// every client → server one (window.__e2eSent).
function recordSocket() {
  const log = [];
  const sent = [];
  window.__e2eSocket = log;
  window.__e2eSent = sent;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        try {
          log.push(JSON.parse(event.data));
        } catch {
          log.push({ raw: String(event.data) });
        }
      });
    }
    send(data) {
      try {
        sent.push(JSON.parse(data));
      } catch {
        sent.push({ raw: String(data) });
      }
      return super.send(data);
    }
  };
}

/**
 * Opens `base + path` in a new browser context (own cookies/storage, 1280x720) and returns the
 * page. Page errors and console errors are kept on `page.e2eErrors` (and printed).
 */
export async function openPage(browser, base, path, name = "page") {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.e2eName = name;
  page.e2eErrors = [];
  page.on("pageerror", (e) => {
    page.e2eErrors.push(`pageerror: ${e.message}`);
    console.log(`[${name}] pageerror: ${e.message}`);
  });
  page.on("console", (m) => {
    if (m.type() === "error") {
      page.e2eErrors.push(m.text());
      console.log(`[${name}] console.error: ${m.text()}`);
    }
  });
  await page.addInitScript(recordSocket);
  await page.goto(`${base}${path}`, { timeout: 15000 });
  return page;
}

/** Closes a page's whole context (as a participant closing its browser window). */
export async function closePage(page) {
  await page.context().close();
}

export const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `fn` (run in the page with `arg`) until it returns a truthy value, which it returns.
 * Throws after `timeoutMs` with the last value seen and the page's app state.
 */
export async function waitFor(page, fn, timeoutMs, what = fn.toString(), arg = undefined) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await page.evaluate(fn, arg);
      if (last) return last;
    } catch (e) {
      last = `evaluate threw: ${e.message}`;
    }
    if (Date.now() > deadline) {
      const state = await appState(page).catch((e) => `unavailable: ${e.message}`);
      throw new Error(
        `[${page.e2eName}] timed out after ${timeoutMs} ms waiting for: ${what}\n` +
          `last value: ${JSON.stringify(last)}\napp state: ${JSON.stringify(state)}`,
      );
    }
    await delay(200);
  }
}

/** A JSON copy of window.rheomeshApp. */
export function appState(page) {
  return page.evaluate(() => JSON.parse(JSON.stringify(window.rheomeshApp)));
}

/** All server messages this page's socket received so far. */
export function socketMessages(page) {
  return page.evaluate(() => window.__e2eSocket ?? []);
}

/** All messages this page sent to the server so far. */
export function sentMessages(page) {
  return page.evaluate(() => window.__e2eSent ?? []);
}

/**
 * inbound-rtp stats of the page's subscribe transport straight from RTCPeerConnection.getStats():
 * [{ kind, trackIdentifier, codec, framesDecoded, packetsReceived, bytesReceived }].
 */
export function inboundStats(page) {
  return page.evaluate(async () => {
    const sub = window.rheomeshControls.transports().subscribe;
    if (!sub) return [];
    const report = await sub.getStats();
    const out = [];
    for (const r of report.values()) {
      if (r.type !== "inbound-rtp") continue;
      out.push({
        kind: r.kind,
        trackIdentifier: r.trackIdentifier,
        mid: r.mid,
        codec: report.get(r.codecId)?.mimeType ?? null,
        framesDecoded: r.framesDecoded ?? 0,
        packetsReceived: r.packetsReceived ?? 0,
        bytesReceived: r.bytesReceived ?? 0,
      });
    }
    return out;
  });
}

/**
 * The stats the page computes per remote publisher (rheomeshApp.stats, refreshed every second
 * from getStats()) for `publisherId`, or null.
 */
export function publisherStats(page, publisherId) {
  return page.evaluate((id) => {
    const s = window.rheomeshApp.stats[id];
    return s ? { ...s } : null;
  }, publisherId);
}

/**
 * Waits until the receiving page's counter `field` (framesDecoded / packetsReceived) for
 * `publisherId` is at least `minDelta` above a first sample, i.e. media keeps flowing. The first
 * sample is the value at the call, or, if it is still 0, the first nonzero value (so a single
 * burst of packets is not enough). Returns [before, after].
 */
export async function expectGrowth(page, publisherId, field, { minDelta = 10, timeoutMs = 15000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let before = (await publisherStats(page, publisherId))?.[field] ?? 0;
  if (before === 0) {
    before = await waitFor(
      page,
      ({ id, field }) => window.rheomeshApp.stats[id]?.[field] ?? 0,
      timeoutMs,
      `${field} of ${publisherId} above 0`,
      { id: publisherId, field },
    );
  }
  const after = await waitFor(
    page,
    ({ id, field, target }) => {
      const v = window.rheomeshApp.stats[id]?.[field] ?? 0;
      return v >= target ? v : 0;
    },
    Math.max(1000, deadline - Date.now()),
    `${field} of ${publisherId} grows from ${before} by ${minDelta}`,
    { id: publisherId, field, target: before + minDelta },
  );
  return [before, after];
}

/** Waits until the page has published camera + microphone; returns { audio, video } publisher ids. */
export async function waitPublished(page, timeoutMs = 15000) {
  await waitFor(page, () => window.rheomeshApp?.published.length === 2, timeoutMs, "published camera + microphone");
  return page.evaluate(() => {
    const pub = window.rheomeshControls.transports().publish;
    const ids = { audio: null, video: null };
    for (const t of pub.peerConnection.getTransceivers()) {
      const track = t.sender.track;
      if (track && window.rheomeshApp.published.includes(track.id)) ids[track.kind] = track.id;
    }
    return ids;
  });
}

/**
 * Waits until the page's publish connection has sent more than `minPackets` video packets and
 * returns the codec they go out with (`video/VP8`, ...).
 */
export function sentVideoCodec(page, minPackets = 0, timeoutMs = 15000) {
  return waitFor(
    page,
    async (min) => {
      const report = await window.rheomeshControls.transports().publish.getStats();
      for (const r of report.values()) {
        if (r.type === "outbound-rtp" && r.kind === "video" && r.packetsSent > min) return report.get(r.codecId)?.mimeType ?? null;
      }
      return null;
    },
    timeoutMs,
    "A sends video",
    minPackets,
  );
}

/** Fails the test if the page reported an application error. */
export async function expectNoAppError(page) {
  const { lastError, errors } = await appState(page);
  if (lastError !== null) throw new Error(`[${page.e2eName}] app error: ${lastError} (all: ${JSON.stringify(errors)})`);
}

let roomCounter = 0;
/** A room name unique to this process. */
export function uniqueRoom(prefix = "e2e") {
  roomCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${roomCounter}`;
}

/**
 * One server + one browser for a test file: call in `before`, and `teardown` in `after`.
 * On teardown the server's output is printed if it logged anything at warn or above.
 */
/**
 * Start the server and browser before this file's tests and stop them after. The returned
 * object gets `browser`, `base` and `server` once `before` has run.
 */
export function useSuite() {
  const suite = {};
  before(async () => {
    Object.assign(suite, await setupSuite());
  });
  after(async () => {
    await suite.teardown?.();
  });
  return suite;
}

export async function setupSuite() {
  const server = await startServer();
  const browser = await launchBrowser();
  return {
    server,
    browser,
    base: server.base,
    async teardown() {
      await browser.close().catch(() => {});
      await server.stop();
      const out = server.output().trim();
      if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
    },
  };
}

/**
 * Polls the Node-side `fn` (every 100 ms) until it returns a truthy value, which it returns.
 * Throws after `timeoutMs` with the last value seen. For conditions that combine several pages.
 */
export async function until(fn, timeoutMs, what = fn.toString()) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = `threw: ${e.message}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}\nlast value: ${JSON.stringify(last)}`);
    }
    await delay(100);
  }
}

/**
 * Video outbound-rtp stats of the page's publish transport straight from getStats(), one entry
 * per encoding (simulcast: per rid), sorted by frameWidth (lowest first):
 * [{ rid, mid, ssrc, frameWidth, frameHeight, framesSent, framesEncoded, keyFramesEncoded,
 *    pliCount, firCount, nackCount, active, qualityLimitationReason, scalabilityMode }].
 */
export function outboundVideoStats(page) {
  return page.evaluate(async () => {
    const pub = window.rheomeshControls.transports().publish;
    if (!pub) return [];
    const report = await pub.getStats();
    const out = [];
    for (const r of report.values()) {
      if (r.type !== "outbound-rtp" || r.kind !== "video") continue;
      out.push({
        rid: r.rid ?? null,
        mid: r.mid ?? null,
        ssrc: r.ssrc,
        frameWidth: r.frameWidth ?? 0,
        frameHeight: r.frameHeight ?? 0,
        framesSent: r.framesSent ?? 0,
        framesEncoded: r.framesEncoded ?? 0,
        keyFramesEncoded: r.keyFramesEncoded ?? 0,
        pliCount: r.pliCount ?? 0,
        firCount: r.firCount ?? 0,
        nackCount: r.nackCount ?? 0,
        active: r.active ?? true,
        qualityLimitationReason: r.qualityLimitationReason ?? null,
        scalabilityMode: r.scalabilityMode ?? null,
      });
    }
    return out.sort((x, y) => x.frameWidth - y.frameWidth);
  });
}

/**
 * Starts sampling, inside the page, the inbound-rtp of the track received from `publisherId`
 * every `intervalMs` (getStats of that receiver; one sample in flight at a time). Samples:
 * { at (Date.now()), framesDecoded, frameWidth, frameHeight, freezeCount, totalFreezesDuration,
 *   nackCount, pliCount, firCount, keyFramesDecoded, packetsLost }. Read them with
 * `inboundSamples`, stop with `stopInboundSampler`.
 */
export function startInboundSampler(page, publisherId, intervalMs = 100) {
  return page.evaluate(
    ({ id, intervalMs }) => {
      window.__e2eSamplers ??= {};
      if (window.__e2eSamplers[id]) return;
      const sampler = { samples: [], stopped: false };
      window.__e2eSamplers[id] = sampler;
      const tick = async () => {
        while (!sampler.stopped) {
          try {
            const sub = window.rheomeshControls.transports().subscribe;
            const track = sub?.trackOf(id);
            if (track) {
              const report = await sub.getStats(track);
              for (const r of report.values()) {
                if (r.type !== "inbound-rtp" || r.kind !== "video") continue;
                sampler.samples.push({
                  at: Date.now(),
                  framesDecoded: r.framesDecoded ?? 0,
                  frameWidth: r.frameWidth ?? 0,
                  frameHeight: r.frameHeight ?? 0,
                  freezeCount: r.freezeCount ?? 0,
                  totalFreezesDuration: r.totalFreezesDuration ?? 0,
                  nackCount: r.nackCount ?? 0,
                  pliCount: r.pliCount ?? 0,
                  firCount: r.firCount ?? 0,
                  keyFramesDecoded: r.keyFramesDecoded ?? 0,
                  packetsLost: r.packetsLost ?? 0,
                  packetsReceived: r.packetsReceived ?? 0,
                  framesReceived: r.framesReceived ?? 0,
                  framesDropped: r.framesDropped ?? 0,
                  jitterBufferDelay: r.jitterBufferDelay ?? 0,
                  jitterBufferEmittedCount: r.jitterBufferEmittedCount ?? 0,
                });
                if (sampler.samples.length > 5000) sampler.samples.splice(0, 1000);
                break;
              }
            }
          } catch {
            // transport closed meanwhile: the test notices missing samples
          }
          await new Promise((resolve) => setTimeout(resolve, intervalMs));
        }
      };
      void tick();
    },
    { id: publisherId, intervalMs },
  );
}

/** The samples `startInboundSampler` took for `publisherId` at or after `sinceMs` (Date.now()). */
export function inboundSamples(page, publisherId, sinceMs = 0) {
  return page.evaluate(
    ({ id, sinceMs }) => (window.__e2eSamplers?.[id]?.samples ?? []).filter((s) => s.at >= sinceMs),
    { id: publisherId, sinceMs },
  );
}

export function stopInboundSampler(page, publisherId) {
  return page.evaluate((id) => {
    const sampler = window.__e2eSamplers?.[id];
    if (sampler) sampler.stopped = true;
  }, publisherId);
}

/**
 * The longest time (ms) during which `samples` (from `startInboundSampler`) saw framesDecoded
 * stand still: from a sample where it had grown to the last sample before it grows again. A
 * lower bound of the real stall (by up to one sampling interval), so that a sampler that was
 * itself held up is not taken for a stall; pair it with inbound-rtp's own freeze statistics.
 */
export function longestDecodeStall(samples) {
  if (samples.length === 0) return Infinity;
  let since = samples[0].at;
  let longest = 0;
  for (let i = 1; i < samples.length; i++) {
    if (samples[i].framesDecoded > samples[i - 1].framesDecoded) {
      longest = Math.max(longest, samples[i - 1].at - since);
      since = samples[i].at;
    }
  }
  return Math.max(longest, samples[samples.length - 1].at - since);
}

// ---- Redis, for the cluster tests ----

/** One PING to Redis on `port`: true if it answered +PONG. */
function redisPing(port) {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    let data = "";
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.on("error", () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (chunk) => {
      data += chunk;
      if (data.includes("\r\n")) done(data.startsWith("+PONG"));
    });
  });
}

/**
 * A redis-server of the test's own on a free loopback port, with no persistence (installed by
 * scripts/test.sh); `stop()` ends it.
 */
export async function startRedis() {
  const port = await freePort();
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (c) => (output += c));
  child.stderr.on("data", (c) => (output += c));
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  child.on("error", (e) => (exited = { error: e.message }));
  const deadline = Date.now() + 10000;
  while (!(await redisPing(port))) {
    if (exited) throw new Error(`redis-server exited (${JSON.stringify(exited)}); is it installed (scripts/test.sh)?\n${output}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server not answering on ${port} within 10 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}/`,
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await gone;
      clearTimeout(timer);
    },
  };
}

// ---- WHIP / WHEP ----

/** Defines `window.postOffer(pc, path, token)` in page `p`: the WHIP/WHEP client's POST —
 *  a non-trickle offer (candidates gathered, bounded), 201 expected, the answer applied;
 *  leaves `window.whip` = { pc, answer, location, etag }. */
export function definePostOffer(p) {
  return p.evaluate(() => {
    window.postOffer = async (pc, path, token) => {
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
        setTimeout(resolve, 3000);
      });
      const res = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const answer = await res.text();
      if (res.status !== 201) throw new Error(`POST ${path}: ${res.status} ${answer}`);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      window.whip = { pc, answer, location: res.headers.get("Location"), etag: res.headers.get("ETag") };
    };
  });
}

/** In page `p`: publish camera + microphone over WHIP to `path`; resolves with the ids. */
export async function whipPublish(p, path, token) {
  await definePostOffer(p);
  return p.evaluate(
    async ({ path, token }) => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      const pc = new RTCPeerConnection();
      for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: "sendonly", streams: [stream] });
      await window.postOffer(pc, path, token);
      return {
        location: window.whip.location,
        etag: window.whip.etag,
        audio: stream.getAudioTracks()[0].id,
        video: stream.getVideoTracks()[0].id,
      };
    },
    { path, token },
  );
}

/** In page `p`: view `path` over WHEP (a recvonly audio + video offer). */
export async function whepView(p, path, token) {
  await definePostOffer(p);
  return p.evaluate(
    async ({ path, token }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
      await window.postOffer(pc, path, token);
      return { location: window.whip.location };
    },
    { path, token },
  );
}

/** In page `p` (a WHEP viewer): video frames decoded so far. */
export function whepFrames(p) {
  return p.evaluate(async () => {
    const report = await window.whip.pc.getStats();
    let frames = 0;
    for (const r of report.values()) if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded ?? 0;
    return frames;
  });
}

/** Waits until the WHEP viewer in `p` decodes `delta` more frames. */
export async function whepDecodes(p, delta, timeoutMs, what = "the WHEP viewer decodes") {
  const start = await whepFrames(p);
  await until(async () => (await whepFrames(p)) >= start + delta, timeoutMs, `${what}: ${delta} more frames after ${start}`);
}

// ---- two example servers as a cluster on Redis ----

/**
 * A `redis-server` of the test's own and two example servers on it (`nodeArgs(redis, id)`
 * gives each one's arguments; ids "n1" and "n2"), and a browser: { redis, node1, node2,
 * browser }. Stop them with `stopCluster`.
 */
export async function startCluster(nodeArgs) {
  const ctx = {};
  ctx.redis = await startRedis();
  ctx.node1 = await startServer({ args: nodeArgs(ctx.redis, "n1") });
  ctx.node2 = await startServer({ args: nodeArgs(ctx.redis, "n2") });
  ctx.browser = await launchBrowser();
  return ctx;
}

/** Stop what `startCluster` started (and `more` servers), printing a server's errors. */
export async function stopCluster(ctx, more = []) {
  await ctx.browser?.close().catch(() => {});
  for (const s of [ctx.node1, ...more, ctx.node2]) {
    if (!s) continue;
    await s.stop();
    const out = s.output().trim();
    if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
  }
  await ctx.redis?.stop();
}

/** A reader of `server`'s /metrics: `gauge(name)` is `rheomesh_{name}`'s value (NaN if absent). */
export async function metricsOf(server) {
  const text = await (await fetch(`${server.base}/metrics`)).text();
  return (name) => Number(text.match(new RegExp(`^rheomesh_${name} (\\d+)`, "m"))?.[1] ?? NaN);
}

/**
 * Pages of `browser` on several servers, closed together: `open(server, path, name)` opens
 * one (as `openPage`), `close(page)` closes one early, `closeAll()` the rest.
 */
export function pageSet(browser) {
  const pages = [];
  return {
    async open(server, path, name) {
      const page = await openPage(browser, server.base, path, name);
      pages.push(page);
      return page;
    },
    async close(page) {
      pages.splice(pages.indexOf(page), 1);
      await closePage(page);
    },
    async closeAll() {
      for (const page of pages.splice(0)) await closePage(page).catch(() => {});
    },
  };
}
