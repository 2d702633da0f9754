// 6. Hostile and careless clients against the example server, while a browser call runs in
//    another room of the same server: a WebSocket client that floods malformed frames and never
//    reads its socket is disconnected (and counted in /metrics) instead of making the server
//    buffer replies without limit; the server's memory stays bounded; the call keeps decoding.
//    The attacker speaks WebSocket by hand (raw TCP), so it can stop reading.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import {
  closePage, expectGrowth, expectNoAppError, openPage, startServer, uniqueRoom, useSuite, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

/** The server's resident memory, KiB. */
function rssKiB(pid) {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/);
  return Number(m[1]);
}

/** The example server's participant count, from /metrics. */
async function participantsOf(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(text.match(/^rheomesh_participants (\d+)/m)?.[1] ?? NaN);
}

/** A masked client text frame (RFC 6455 §5.2), payload under 126 bytes. */
function textFrame(payload) {
  const data = Buffer.from(payload);
  const mask = randomBytes(4);
  const frame = Buffer.alloc(6 + data.length);
  frame[0] = 0x81;
  frame[1] = 0x80 | data.length;
  mask.copy(frame, 2);
  for (let i = 0; i < data.length; i++) frame[6 + i] = data[i] ^ mask[i % 4];
  return frame;
}

/** Raw TCP to the server's WebSocket endpoint; resolves once the 101 response arrived. */
function openRawSocket(port, room) {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let head = "";
    const onData = (chunk) => {
      head += chunk.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      sock.off("data", onData);
      if (!head.startsWith("HTTP/1.1 101")) reject(new Error(`no upgrade: ${head.split("\r\n")[0]}`));
      else resolve(sock);
    };
    sock.on("data", onData);
    sock.on("error", reject);
    sock.write(
      `GET /socket?room=${room} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n` +
        `Sec-WebSocket-Version: 13\r\n\r\n`,
    );
  });
}

test("a client that floods and never reads is disconnected; the call goes on", { timeout: 120000 }, async () => {
  const room = uniqueRoom("call");
  const a = await openPage(suite.browser, suite.base, `/?room=${room}&autopublish=1`, "A");
  const v = await openPage(suite.browser, suite.base, `/?room=${room}`, "V");
  try {
    const ids = await waitPublished(a);
    await expectGrowth(v, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    const pid = suite.server.pid;
    const before = rssKiB(pid);
    const participantsBefore = await participantsOf(suite.base);

    // Flood: malformed frames (each would get an Error reply), never reading a byte.
    const sock = await openRawSocket(suite.server.port, uniqueRoom("attacker"));
    sock.pause();
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => textFrame("{not json")));
    let closed = false;
    let sent = 0;
    sock.on("close", () => (closed = true));
    sock.on("error", () => (closed = true));
    const deadline = Date.now() + 60000;
    let peak = before;
    while (!closed && Date.now() < deadline) {
      if (!sock.write(batch)) {
        await new Promise((r) => {
          const t = setTimeout(r, 200);
          sock.once("drain", () => { clearTimeout(t); r(); });
        });
      }
      sent += 1000;
      peak = Math.max(peak, rssKiB(pid));
      await new Promise((r) => setImmediate(r));
    }
    sock.destroy();
    assert.ok(closed, `the server kept a non-reading client for 60 s (${sent} frames sent)`);
    const growthMiB = (peak - before) / 1024;
    console.log(`attacker sent ${sent} frames before being disconnected; server RSS ${before} KiB -> peak ${peak} KiB`);
    assert.ok(growthMiB < 64, `server RSS grew ${growthMiB.toFixed(1)} MiB under the flood`);

    const metrics = await (await fetch(`${suite.base}/metrics`)).text();
    const m = metrics.match(/rheomesh_ws_disconnected_total\{reason="not_reading"\} (\d+)/);
    assert.ok(m && Number(m[1]) >= 1, "the disconnect is counted in /metrics");

    // Back to baseline: the attacker's participant is gone and its memory returned.
    const settle = Date.now() + 10000;
    let after = rssKiB(pid);
    while (Date.now() < settle) {
      after = rssKiB(pid);
      if ((await participantsOf(suite.base)) <= participantsBefore && after - before < 16 * 1024) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`after the disconnect: server RSS ${after} KiB, participants ${await participantsOf(suite.base)}`);
    // (≤: pages of earlier test files may still be leaving.)
    assert.ok((await participantsOf(suite.base)) <= participantsBefore, "the attacker is still a participant");
    assert.ok(after - before < 16 * 1024, `server RSS stayed ${((after - before) / 1024).toFixed(1)} MiB above the baseline`);

    // The call in the other room still decodes.
    await expectGrowth(v, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectNoAppError(v);
  } finally {
    await closePage(v);
    await closePage(a);
  }
});

test("a participant whose network vanished is removed within 20 s", { timeout: 60000 }, async () => {
  const participants = () => participantsOf(suite.base);
  // Earlier tests' pages leave asynchronously: start from an empty server.
  const settle = Date.now() + 15000;
  while ((await participants()) !== 0 && Date.now() < settle) await new Promise((r) => setTimeout(r, 100));
  const base = await participants();
  assert.equal(base, 0, "participants of earlier tests are still there");
  // Joins, then neither reads nor writes: no pong will ever come, and no FIN either.
  const sock = await openRawSocket(suite.server.port, uniqueRoom("vanished"));
  sock.pause();
  let closed = false;
  sock.on("close", () => (closed = true));
  sock.on("error", () => (closed = true));
  const start = Date.now();
  assert.equal(await participants(), base + 1, "the silent client joined");
  while ((await participants()) !== base && Date.now() - start < 25000) {
    await new Promise((r) => setTimeout(r, 200));
  }
  const took = Date.now() - start;
  console.log(`silent participant removed after ${took} ms`);
  assert.equal(await participants(), base, "the server kept a silent participant for 25 s");
  // The connection is closed too: reading now finds the server's pings, then the end.
  sock.resume();
  const end = Date.now() + 5000;
  while (!closed && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  sock.destroy();
  assert.ok(closed, "the server left the connection open");
  const metrics = await (await fetch(`${suite.base}/metrics`)).text();
  const m = metrics.match(/rheomesh_ws_disconnected_total\{reason="keepalive"\} (\d+)/);
  assert.ok(m && Number(m[1]) >= 1, "the keepalive disconnect is counted in /metrics");
});

test("half-sent requests time out, and connections past the cap are closed and logged", { timeout: 60000 }, async () => {
  const server = await startServer({ args: ["--max-connections", "20", "--header-timeout-secs", "2"] });
  try {
    const N = 25;
    const start = Date.now();
    const closedAt = await Promise.all(
      Array.from({ length: N }, () => new Promise((resolve) => {
        const sock = connect(server.port, "127.0.0.1");
        // Half a request: the headers never end.
        sock.on("connect", () => sock.write("GET /socket?room=half HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
        sock.on("data", () => {});
        sock.on("close", () => resolve(Date.now() - start));
        sock.on("error", () => {});
        setTimeout(() => { sock.destroy(); resolve(Infinity); }, 15000);
      })),
    );
    const early = closedAt.filter((t) => t < 1500).length;
    const timedOut = closedAt.filter((t) => t >= 1500 && t < 8000).length;
    console.log(`closed at once (over the cap): ${early}; closed by the request deadline: ${timedOut}; ms: ${closedAt.join(",")}`);
    assert.ok(early >= N - 20, `only ${early} connections were refused over the cap`);
    assert.equal(early + timedOut, N, "a half-sent request kept its connection past the deadline");
    assert.match(server.output(), /connection limit reached/, "the cap is logged");
    // Descriptors are back: the server serves again and counted both.
    const metrics = await (await fetch(`${server.base}/metrics`)).text();
    const count = (name) => Number(metrics.match(new RegExp(`^${name} (\\d+)`, "m"))?.[1] ?? 0);
    assert.ok(count("rheomesh_http_connections_refused_total") >= N - 20, "refusals are counted");
    assert.ok(count("rheomesh_http_request_timeouts_total") >= timedOut, "timeouts are counted");
  } finally {
    await server.stop();
  }
});
