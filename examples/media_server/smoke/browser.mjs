// Browser smoke test: three headless Chromium pages in one room publish/subscribe through the
// example server; checks tiles, decoded video in the chosen codec, audio, leave/close.
//   cargo run --example media_server -- --port 3077 &
//   node examples/media_server/smoke/browser.mjs http://127.0.0.1:3077 VP8
// Needs /usr/bin/chromium (or $CHROMIUM) and playwright-core (client/node_modules, or
// $PLAYWRIGHT_CORE = path of playwright-core/index.mjs). Exit code 1 if a check fails.
const playwright = process.env.PLAYWRIGHT_CORE ??
  new URL("../../../client/node_modules/playwright-core/index.mjs", import.meta.url).href;
const { chromium } = await import(playwright);
const base = process.argv[2] ?? "http://127.0.0.1:3077";
const codec = process.argv[3] ?? "VP8";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required"],
});
const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
const check = (cond, what) => { console.log(`${cond ? "ok  " : "FAIL"} ${what}`); if (!cond) process.exitCode = 1; };
const room = "b" + Date.now();
const a = await ctx.newPage(); a.on("console", (m) => m.type() === "error" && console.log("A:", m.text()));
const b = await ctx.newPage(); b.on("console", (m) => m.type() === "error" && console.log("B:", m.text()));
await a.goto(`${base}/?room=${room}&autopublish=1&codec=${codec}`);
await a.waitForFunction(() => window.rheomeshApp?.published.length === 2, null, { timeout: 15000 });
await b.goto(`${base}/?room=${room}`);
const t0 = Date.now();
await b.waitForFunction(() => { const s = window.rheomeshApp; return s.tiles === 2 && Object.values(s.stats).some((x) => x.framesDecoded > 10 && x.kbps > 0); }, null, { timeout: 20000 }).catch(() => {});
let sb = await b.evaluate(() => JSON.parse(JSON.stringify(window.rheomeshApp)));
check(sb.tiles === 2, `B sees 2 tiles after ${Date.now() - t0} ms`);
const v = Object.values(sb.stats).find((x) => x.kind === "video");
check(v && v.framesDecoded > 10 && v.codec.toUpperCase() === codec, `video decoded: ${JSON.stringify(v)}`);
const au = Object.values(sb.stats).find((x) => x.kind === "audio");
check(au && au.packetsReceived > 10, `audio received: ${JSON.stringify(au)}`);
const overlay = await b.locator(".tile .stats").first().textContent();
check(overlay.length > 0, `overlay: ${JSON.stringify(overlay)}`);
// A stops its video (new offer with the m-line stopped + StopPublish): B drops that tile.
const videoId = await a.evaluate(() => window.rheomeshApp.published[1]);
await a.evaluate((id) => window.rheomeshControls.unpublish(id), videoId);
await b.waitForFunction(() => window.rheomeshApp.tiles === 1, null, { timeout: 10000 }).catch(() => {});
check(await b.evaluate(() => window.rheomeshApp.tiles) === 1, "B drops A's video tile after A unpublishes it");
await a.evaluate(() => window.rheomeshControls.publishCamera());
await b.waitForFunction(() => window.rheomeshApp.tiles === 3, null, { timeout: 10000 }).catch(() => {});
check(await b.evaluate(() => window.rheomeshApp.tiles) === 3, "B gets A's republished camera + mic");
await a.evaluate(() => window.rheomeshControls.unpublish(window.rheomeshApp.published[0]));
await b.waitForFunction(() => window.rheomeshApp.tiles === 2, null, { timeout: 10000 }).catch(() => {});
check(await b.evaluate(() => window.rheomeshApp.tiles) === 2, "B drops A's old audio tile");
// A third participant joins late and also publishes; A should get its tracks.
const c = await ctx.newPage();
await c.goto(`${base}/?room=${room}&autopublish=1`);
await a.waitForFunction(() => window.rheomeshApp.tiles === 2, null, { timeout: 20000 }).catch(() => {});
check(await a.evaluate(() => window.rheomeshApp.tiles) === 2, "A sees C's 2 tracks");
await b.waitForFunction(() => window.rheomeshApp.tiles === 4, null, { timeout: 20000 }).catch(() => {});
check(await b.evaluate(() => window.rheomeshApp.tiles) === 4, "B sees 4 tracks");
// A leaves: B's A-tiles go away.
await a.click("#leave");
await b.waitForFunction(() => window.rheomeshApp.tiles === 2, null, { timeout: 10000 }).catch(() => {});
check(await b.evaluate(() => window.rheomeshApp.tiles) === 2, "B drops A's tiles after A leaves");
// C closes its tab: B's tiles go away.
await c.close();
await b.waitForFunction(() => window.rheomeshApp.tiles === 0, null, { timeout: 10000 }).catch(() => {});
sb = await b.evaluate(() => JSON.parse(JSON.stringify(window.rheomeshApp)));
check(sb.tiles === 0, "B drops C's tiles after C's tab closes");
check(sb.lastError === null, `B lastError: ${sb.lastError}`);
// A fourth participant publishes after everyone else left: B must still receive it.
const d = await ctx.newPage();
await d.goto(`${base}/?room=${room}&autopublish=1`);
await b.waitForFunction(() => window.rheomeshApp.tiles === 2, null, { timeout: 10000 }).catch(() => {});
check(await b.evaluate(() => window.rheomeshApp.tiles) === 2, "B receives a publisher who joins after the room emptied");
await browser.close();
