// Drives Debian's Chromium with playwright-core and prints one JSON report on stdout.
//
//   node drive.mjs SPEC.json
//
// SPEC = {
//   "mode": "harness",                      // a player scenario (harness.js) against media URLs
//   "scenario": {...},                      // passed to window.runScenario in the page
//   "stripCors": false,                     // negative control: drop the origin's CORS headers
//   "timeoutMs": 60000
// } or {
//   "mode": "demo", "url": "http://127.0.0.1:PORT/", "asset": "<id>", "screenshot": "docs/demo-page.png"
// }
//
// The harness page and the player libraries are served by a tiny server started here, on its own
// port: the media then come from another origin, so the origin's CORS headers are exercised for real.
// No browser is ever downloaded: executablePath is the system Chromium.
import { chromium } from 'playwright-core';
import { createServer, request as httpRequest } from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.TONEARM_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

const FILES = {
  '/harness.html': ['harness.html', 'text/html; charset=utf-8'],
  '/harness.js': ['harness.js', 'text/javascript'],
  '/lib/hls.js': ['node_modules/hls.js/dist/hls.min.js', 'text/javascript'],
  '/lib/dash.js': ['node_modules/dashjs/dist/modern/umd/dash.all.min.js', 'text/javascript'],
  '/lib/shaka.js': ['node_modules/shaka-player/dist/shaka-player.compiled.js', 'text/javascript'],
  '/lib/video.js': ['node_modules/video.js/dist/video.min.js', 'text/javascript'],
};

function servePage() {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const entry = FILES[path];
    if (path === '/favicon.ico') { res.writeHead(204).end(); return; }
    if (!entry) { res.writeHead(404).end(); return; }
    try {
      const body = await readFile(join(HERE, entry[0]));
      res.writeHead(200, { 'Content-Type': entry[1], 'Cache-Control': 'no-store' }).end(body);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function launch() {
  const profile = await mkdtemp(join(tmpdir(), 'tonearm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    ignoreDefaultArgs: ['--mute-audio'], // the analyser needs the audio graph running
    viewport: { width: 1100, height: 760 },
  });
  return { context, profile };
}

/** Recent Chromium gates loopback cross-origin fetches behind Local Network Access. */
async function grantLocalNetwork(context, origins) {
  for (const origin of origins) {
    try {
      await context.grantPermissions(['local-network-access'], { origin });
    } catch (e) {
      return `local-network-access not grantable: ${e.message.split('\n')[0]}`;
    }
  }
  return 'granted';
}

/** Negative control: a pass-through proxy to the media origin that drops every Access-Control-*
 *  header (bytes, status and other headers unchanged). Route interception cannot do this: the
 *  browser's CORS check does not apply to responses fulfilled by the driver. */
function corsStrippingProxy(mediaOrigin, log) {
  log.strippedCors = 0;
  const target = new URL(mediaOrigin);
  const server = createServer((req, res) => {
    const headers = { ...req.headers, host: target.host };
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (up) => {
      const kept = Object.fromEntries(Object.entries(up.headers).filter(([k]) => !k.startsWith('access-control-')));
      if (Object.keys(kept).length < Object.keys(up.headers).length) log.strippedCors += 1;
      res.writeHead(up.statusCode, kept);
      up.pipe(res);
    });
    upstream.on('error', (e) => { res.writeHead(502).end(String(e)); });
    req.pipe(upstream);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function watch(page, log, verbose = false) {
  const keep = verbose ? 400 : 40;
  page.on('console', (m) => { if ((verbose || ['error', 'warning'].includes(m.type())) && log.console.length < keep) log.console.push(`${m.type()}: ${m.text()}`.slice(0, 400)); });
  page.on('pageerror', (e) => log.pageErrors.push(String(e).slice(0, 400)));
  page.on('requestfailed', (r) => { if (log.failedRequests.length < 20) log.failedRequests.push(`${r.url()} ${r.failure() && r.failure().errorText}`); });
  page.on('response', (r) => { if (r.status() >= 400 && log.httpErrors.length < 20) log.httpErrors.push(`${r.status()} ${r.url()}`); });
}

async function runHarness(spec, context, log) {
  const server = await servePage();
  let proxy = null;
  try {
    const pageOrigin = `http://127.0.0.1:${server.address().port}`;
    const mediaOrigin = new URL(spec.scenario.url).origin;
    log.pageOrigin = pageOrigin;
    let scenario = spec.scenario;
    if (spec.stripCors) {
      proxy = await corsStrippingProxy(mediaOrigin, log);
      const url = new URL(scenario.url);
      url.port = String(proxy.address().port);
      scenario = { ...scenario, url: url.href };
    }
    log.localNetworkAccess = await grantLocalNetwork(context, [pageOrigin, new URL(scenario.url).origin]);
    const page = context.pages()[0] || await context.newPage();
    watch(page, log, Boolean(spec.verbose));
    await page.goto(`${pageOrigin}/harness.html`);
    const budget = (spec.timeoutMs || 60000) - 5000;
    const overrun = new Promise((resolve) => setTimeout(resolve, budget, null));
    const report = await Promise.race([page.evaluate((s) => window.runScenario(s), scenario), overrun]);
    if (report) return report;
    const partial = await page.evaluate(() => window.currentReport || null);
    return partial && { ...partial, ok: false, failure: partial.failure || `scenario overran ${budget} ms` };
  } finally {
    server.close();
    if (proxy) proxy.close();
  }
}

async function runDemo(spec, context, log) {
  const origin = new URL(spec.url).origin;
  log.localNetworkAccess = await grantLocalNetwork(context, [origin]);
  const page = context.pages()[0] || await context.newPage();
  watch(page, log);
  await page.goto(spec.url);
  const { runDemoChecks } = await import('./demo-checks.mjs');
  return await runDemoChecks(page, spec);
}

async function main() {
  const spec = JSON.parse(await readFile(process.argv[2], 'utf8'));
  const log = { console: [], pageErrors: [], failedRequests: [], httpErrors: [] };
  const started = Date.now();
  const { context, profile } = await launch();
  let result; let driverError = null;
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`driver timeout after ${spec.timeoutMs} ms`)), spec.timeoutMs || 60000));
  try {
    const work = spec.mode === 'demo' ? runDemo(spec, context, log) : runHarness(spec, context, log);
    result = await Promise.race([work, timeout]);
  } catch (e) {
    driverError = String(e && e.stack || e).slice(0, 2000);
  } finally {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
  const out = { result: result || null, driverError, browser: log, wallMs: Date.now() - started };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((e) => { process.stdout.write(JSON.stringify({ result: null, driverError: String(e && e.stack || e) }) + '\n'); process.exit(1); });
