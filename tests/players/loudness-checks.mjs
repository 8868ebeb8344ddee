// The demo page's loudness normalisation and catalog, as a listener uses them, in Debian's Chromium.
//
//   node loudness-checks.mjs SPEC.json      (prints one JSON report on stdout)
//
// SPEC = {
//   "url": "http://127.0.0.1:PORT/",        // the demo page, served by `tonearm serve`
//   "checks": "loudness" | "catalog",
//   "assets": ["<id>", ...],                // loudness: the assets to play, in order
//   "rung": "aac_256k",                     // loudness: the rendition pinned for every measurement
//   "from": 2.0, "seconds": 4.0,            // loudness: the stretch of media time measured
//   "searches": [{"q": "...", ...}],        // catalog: searches to type
//   "timeoutMs": 120000
// }
//
// loudness: every asset is played with normalisation on, then (the switch clicked off, the playhead
// sent back) again over the same stretch with it off. The level is measured after the asset's
// GainNode: an AnalyserNode on the page's output bus (window.tonearmDemo.sound.output, which every
// asset's gain feeds), its time-domain samples read every 20 ms while the media clock is inside the
// stretch, the mean square of all of them in dB (RMS, dBFS).
//
// catalog: the page as listed (every column before anything plays), next/previous paging, and the
// search box (typed, debounced, the URL following).
import { chromium } from 'playwright-core';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = process.env.TONEARM_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
const WAIT = 20000;

async function launch() {
  const profile = await mkdtemp(join(tmpdir(), 'tonearm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS,
    ignoreDefaultArgs: ['--mute-audio'], // the audio graph must run
    viewport: { width: 1100, height: 900 },
  });
  return { context, profile };
}

function watch(page, log) {
  page.on('console', (m) => { if (['error', 'warning'].includes(m.type()) && log.console.length < 40) log.console.push(`${m.type()}: ${m.text()}`.slice(0, 400)); });
  page.on('pageerror', (e) => log.pageErrors.push(String(e).slice(0, 400)));
  page.on('requestfailed', (r) => { if (log.failedRequests.length < 20) log.failedRequests.push(`${r.url()} ${r.failure() && r.failure().errorText}`); });
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (/\.(m3u8|m4s|mp4|mpd)$/.test(path)) log.media.push(path);
    if (r.status() >= 400 && log.httpErrors.length < 20) log.httpErrors.push(`${r.status()} ${r.url()}`);
  });
}

function stepper(out) {
  return async (name, fn) => {
    const t0 = Date.now();
    try {
      const data = (await fn()) || {};
      out.steps.push({ name, ok: true, ms: Date.now() - t0, ...data });
      return data;
    } catch (e) {
      out.steps.push({ name, ok: false, ms: Date.now() - t0, error: String(e.message || e).slice(0, 600) });
      throw e;
    }
  };
}

/** What each card of the page shows, cell by cell. */
function listing(page) {
  return page.evaluate(() => ({
    q: document.getElementById('assets').dataset.q,
    offset: document.getElementById('assets').dataset.offset,
    total: document.getElementById('assets').dataset.total,
    range: document.getElementById('range').textContent,
    prevDisabled: document.getElementById('prev').disabled,
    nextDisabled: document.getElementById('next').disabled,
    search: location.search,
    status: [...document.querySelectorAll('#assets > p.status')].map((p) => p.textContent).join(' '),
    cards: [...document.querySelectorAll('article.asset')].map((a) => ({
      id: a.dataset.assetId,
      title: a.querySelector('.title').textContent,
      artist: a.querySelector('.artist').textContent,
      duration: a.querySelector('.duration').textContent,
      loudness: a.querySelector('.loudness').textContent,
      gain: a.querySelector('.gain').textContent,
      gainDb: a.querySelector('.gain').dataset.gainDb,
      master: a.querySelector('.master').textContent,
      rows: [...a.querySelectorAll('tbody tr')].map((r) => Object.fromEntries(
        [...r.querySelectorAll('td')].map((td) => [td.className, td.textContent]))),
    })),
  }));
}

async function settled(page, seqBefore) {
  await page.waitForFunction((seq) => {
    const root = document.getElementById('assets');
    return root.dataset.seq && Number(root.dataset.seq) > seq && !root.hasAttribute('aria-busy');
  }, seqBefore, { timeout: WAIT });
}

const seqOf = (page) => page.evaluate(() => Number(document.getElementById('assets').dataset.seq || 0));

async function catalogChecks(page, spec, out) {
  const step = stepper(out);
  await step('listed', async () => {
    await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT });
    out.first = await listing(page);
  });
  await step('next', async () => {
    const seq = await seqOf(page);
    await page.click('#next');
    await settled(page, seq);
    out.second = await listing(page);
  });
  await step('previous', async () => {
    const seq = await seqOf(page);
    await page.click('#prev');
    await settled(page, seq);
    out.back = await listing(page);
  });
  out.searches = [];
  for (const s of spec.searches) {
    await step(`search ${s.q}`, async () => {
      const seq = await seqOf(page);
      await page.fill('#search', '');
      await page.type('#search', s.q, { delay: 15 }); // typed: the page waits for a pause before asking
      await settled(page, seq);
      await page.waitForFunction((q) => document.getElementById('assets').dataset.q === q.trim(), s.q, { timeout: WAIT });
      const seen = await listing(page);
      const requests = await page.evaluate(() => performance.getEntriesByType('resource')
        .map((e) => new URL(e.name).pathname + new URL(e.name).search).filter((u) => u.startsWith('/api/assets?')));
      out.searches.push({ ...s, seen, apiRequests: requests.length });
    });
  }
  out.mediaBeforePlay = out.log.media.slice();
}

/** Play one asset from its start and wait until its pinned rendition is heard. */
async function begin(page, sel, rung) {
  await page.selectOption(`${sel} select.rung`, rung); // pinned before the player exists: it starts there
  await page.click(`${sel} button.start`);
  await page.waitForFunction(([s, r]) => document.querySelector(s).dataset.playing === r, [sel, rung], { timeout: WAIT });
}

/** RMS (dB) after the GainNodes while the media clock of `sel` runs from `from` to `to`. */
function measure(page, sel, from, to) {
  return page.evaluate(([s, a, b]) => new Promise((resolve, reject) => {
    const { sound } = window.tonearmDemo;
    if (!sound.context || !sound.output) { reject(new Error('the page made no audio graph')); return; }
    if (!window.tonearmAnalyser) {
      const an = sound.context.createAnalyser();
      an.fftSize = 2048; // 43 ms at 48 kHz: read every 20 ms, every sample is seen at least once
      sound.output.connect(an);
      window.tonearmAnalyser = an;
    }
    const an = window.tonearmAnalyser;
    const audio = document.querySelector(`${s} audio`);
    const buf = new Float32Array(an.fftSize);
    let sum = 0; let windows = 0; let first = null; let last = null; let peak = 0;
    const deadline = Date.now() + (b - a) * 1000 + 15000;
    const timer = setInterval(() => {
      const t = audio.currentTime;
      if (Date.now() > deadline) { clearInterval(timer); reject(new Error(`clock stuck at ${t} (wanted ${a}..${b})`)); return; }
      if (t < a || audio.paused) return;
      an.getFloatTimeDomainData(buf);
      let ms = 0;
      for (const v of buf) { ms += v * v; peak = Math.max(peak, Math.abs(v)); }
      sum += ms / buf.length; windows += 1;
      if (first === null) first = t;
      last = t;
      if (t >= b) {
        clearInterval(timer);
        resolve({ rmsDb: 10 * Math.log10(sum / windows), peakDb: 20 * Math.log10(peak), windows, from: first, to: last,
                  sampleRate: sound.context.sampleRate, contextState: sound.context.state });
      }
    }, 20);
  }), [sel, from, to]);
}

async function seekTo(page, sel, t) {
  await page.evaluate(([s, at]) => new Promise((resolve) => {
    const a = document.querySelector(`${s} audio`);
    a.addEventListener('seeked', () => resolve(), { once: true });
    a.currentTime = at;
  }), [sel, t]);
}

const pageState = (page, sel) => page.evaluate((s) => {
  const c = document.querySelector(s);
  const p = window.tonearmDemo.players.get(c.dataset.assetId);
  return {
    switchOn: document.getElementById('normalise').checked,
    gain: c.querySelector('.gain').textContent,
    now: c.querySelector('.now').textContent,
    level: document.getElementById('level').textContent,
    levelGainDb: document.getElementById('level').dataset.gainDb,
    applied: p.applied,
    nodeGain: p.gainNode ? p.gainNode.gain.value : null,
    playing: c.dataset.playing,
  };
}, sel);

async function loudnessChecks(page, spec, out) {
  const step = stepper(out);
  const { from, seconds, rung } = spec;
  await step('listed', async () => {
    await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT });
    out.switchDefault = await page.evaluate(() => document.getElementById('normalise').checked);
    out.listing = await listing(page);
  });
  out.plays = [];
  for (const id of spec.assets) {
    const sel = `article.asset[data-asset-id="${id}"]`;
    const play = { id };
    out.plays.push(play);
    await step(`on ${id.slice(0, 8)}`, async () => {
      if (!(await page.isChecked('#normalise'))) await page.click('#normalise');
      await begin(page, sel, rung);
      play.on = await measure(page, sel, from, from + seconds);
      play.onState = await pageState(page, sel);
    });
    await step(`off ${id.slice(0, 8)}`, async () => {
      await page.click('#normalise'); // off, while it plays
      play.offState = await pageState(page, sel);
      await seekTo(page, sel, from - 0.5);
      play.off = await measure(page, sel, from, from + seconds);
      await page.click('#normalise'); // on again for the next asset
      await page.evaluate((s) => document.querySelector(`${s} audio`).pause(), sel);
    });
  }
}

async function main() {
  const spec = JSON.parse(await readFile(process.argv[2], 'utf8'));
  const log = { console: [], pageErrors: [], failedRequests: [], httpErrors: [], media: [] };
  const out = { ok: false, steps: [], log };
  const { context, profile } = await launch();
  let driverError = null;
  const budget = (spec.timeoutMs || 120000) - 5000;
  try {
    const origin = new URL(spec.url).origin;
    try {
      await context.grantPermissions(['local-network-access'], { origin });
    } catch (e) {
      log.localNetworkAccess = `not grantable: ${e.message.split('\n')[0]}`;
    }
    const page = context.pages()[0] || await context.newPage();
    watch(page, log);
    await page.goto(spec.url);
    const work = spec.checks === 'catalog' ? catalogChecks(page, spec, out) : loudnessChecks(page, spec, out);
    const overrun = new Promise((_, reject) => setTimeout(() => reject(new Error(`checks overran ${budget} ms`)), budget));
    try {
      await Promise.race([work, overrun]);
      out.ok = true;
    } catch (e) {
      out.failure = String(e.message || e).slice(0, 600);
    }
    out.errors = await page.evaluate(() => (window.tonearmDemo ? window.tonearmDemo.errors : ['demo.js did not load']));
  } catch (e) {
    driverError = String(e && e.stack || e).slice(0, 2000);
  } finally {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
  process.stdout.write(JSON.stringify({ result: out, driverError }) + '\n');
  process.exit(0);
}

main().catch((e) => { process.stdout.write(JSON.stringify({ result: null, driverError: String(e && e.stack || e) }) + '\n'); process.exit(1); });
