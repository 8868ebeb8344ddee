// The demo page (origin/static/index.html) as a listener uses it: the catalog is listed, the demo
// asset plays, every rung can be picked (each confirmed by what the page says it is playing, while
// the media clock keeps moving), and "Automatic" hands control back to hls.js's ABR.

const WAIT = 15000;

async function clock(page, sel) {
  return page.evaluate((s) => document.querySelector(`${s} audio`).currentTime, sel);
}

async function advances(page, sel, seconds) {
  const t0 = await clock(page, sel);
  await page.waitForFunction(([s, t]) => {
    const a = document.querySelector(`${s} audio`);
    return !a.paused && a.currentTime >= t;
  }, [sel, t0 + seconds], { timeout: WAIT });
  return { from: t0, to: await clock(page, sel) };
}

async function nowLine(page, sel) {
  return page.evaluate((s) => document.querySelector(`${s} .now`).textContent, sel);
}

export async function runDemoChecks(page, spec) {
  const out = { ok: false, steps: [], listing: [], picks: [] };
  const sel = `article.asset[data-asset-id="${spec.asset}"]`;
  const step = async (name, fn) => {
    const t0 = Date.now();
    try {
      const data = (await fn()) || {};
      out.steps.push({ name, ok: true, ms: Date.now() - t0, ...data });
    } catch (e) {
      out.steps.push({ name, ok: false, ms: Date.now() - t0, error: String(e.message || e).slice(0, 600) });
      throw e;
    }
  };
  try {
    await step('listed', async () => {
      await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT });
      out.listing = await page.evaluate(() => [...document.querySelectorAll('article.asset')].map((a) => ({
        id: a.dataset.assetId,
        title: a.querySelector('.title').textContent,
        artist: a.querySelector('.artist').textContent,
        duration: a.querySelector('.duration').textContent,
        loudness: a.querySelector('.loudness').textContent,
        master: a.querySelector('.master').textContent,
        rows: [...a.querySelectorAll('tbody tr')].map((r) => ({
          rung: r.dataset.rung, codec: r.querySelector('.codec').textContent, nominal: r.querySelector('.nominal').textContent,
          peak: r.querySelector('.peak').textContent, unplayable: r.classList.contains('unplayable'),
        })),
        options: [...a.querySelectorAll('select.rung option')].map((o) => ({ value: o.value, disabled: o.disabled })),
      })));
    });
    await step('plays', async () => {
      await page.click(`${sel} button.start`); // a listener's click: the player is made now
      await page.waitForFunction((s) => document.querySelector(s).dataset.playing, sel, { timeout: WAIT });
      // The peak column is filled from hls.js's parsed master playlist.
      out.peaks = await page.$$eval(`${sel} tbody tr`, (rows) => rows.map((r) => ({
        rung: r.dataset.rung, peak: r.querySelector('.peak').textContent, unplayable: r.classList.contains('unplayable') })));
      const moved = await advances(page, sel, 1.0);
      return { ...moved, now: await nowLine(page, sel), playing: await page.evaluate((s) => document.querySelector(s).dataset.playing, sel) };
    });
    await step('pick_every_rung', async () => {
      const rungs = await page.$$eval(`${sel} select.rung option`, (os) => os.filter((o) => !o.disabled && o.value !== 'auto').map((o) => o.value));
      const first = await page.evaluate((s) => document.querySelector(s).dataset.playing, sel);
      // Every rung, then back to the first one: crosses codec families both ways.
      for (const rung of [...rungs.filter((r) => r !== first), first]) {
        const t0 = Date.now();
        await page.selectOption(`${sel} select.rung`, rung);
        await page.waitForFunction(([s, r]) => {
          const c = document.querySelector(s);
          return c.dataset.playing === r && c.dataset.mode === 'fixed';
        }, [sel, rung], { timeout: WAIT });
        const moved = await advances(page, sel, 0.3);
        out.picks.push({ rung, ms: Date.now() - t0, ...moved, now: await nowLine(page, sel) });
      }
      return { rungs };
    });
    await step('automatic', async () => {
      await page.selectOption(`${sel} select.rung`, 'auto');
      await page.waitForFunction((s) => document.querySelector(s).dataset.mode === 'automatic', sel, { timeout: WAIT });
      const moved = await advances(page, sel, 0.5);
      return { ...moved, now: await nowLine(page, sel), playing: await page.evaluate((s) => document.querySelector(s).dataset.playing, sel) };
    });
    if (spec.screenshot) {
      await step('screenshot', async () => {
        await page.screenshot({ path: spec.screenshot, fullPage: true });
        return { path: spec.screenshot };
      });
    }
    out.ok = true;
  } catch (e) {
    out.failure = String(e.message || e).slice(0, 600);
  }
  out.errors = await page.evaluate(() => (window.tonearmDemo ? window.tonearmDemo.errors : ['demo.js did not load']));
  return out;
}
