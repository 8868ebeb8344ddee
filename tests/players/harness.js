/* Runs one playback scenario against one real player (hls.js, dash.js, Shaka or Video.js) in the
 * page and returns a JSON report: what the player exposed, what it confirmed through its own events,
 * what the media element and the Web Audio analyser measured. The report states facts; the pytest side
 * decides pass or fail, so a deliberately broken asset shows exactly which step failed and why.
 *
 * window.runScenario(spec) with spec = {
 *   player: 'hls' | 'dash' | 'shaka' | 'videojs', url, tones: [{start, end, freq}],
 *   clockSeconds, nearEnd (seconds before the end to seek to), steps: [...names to run],
 *   revisit (false: switch_all visits each rung once), switchFamilies (switch_all targets only the
 *   first rung of each of these codecs, in order), playerConfig, unsupportedCodecs, segmentWaitMs,
 *   protectionData (dash.js only: setProtectionData, e.g. a ClearKey licence server),
 *   shakaCommonPssh (Shaka: drm.initDataTransform adding the W3C common pssh), settleMs (after a failure)
 * }
 */
'use strict';

const ANALYSER_FFT = 8192; // 5.9 Hz bins at 48 kHz: adjacent test tones are >= 100 Hz apart
const BOUNDARY_GUARD = 0.45; // seconds kept clear of a tone change when measuring
const SETTLE = 0.4; // seconds of uninterrupted playback before the analyser window is trusted

/* hls.js reports stalls after seeks and flushes as non-fatal errors: they are notes, not failures.
   So is 'aborted' (INTERNAL_ABORTED, non-fatal): hls.js cancelling its own in-flight fragment load when a
   forced level switch supersedes it; on a busy machine a switch often lands mid-download. */
const HLS_BENIGN = new Set(['bufferStalledError', 'bufferNudgeOnStall', 'bufferSeekOverHole', 'aborted']);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function safe(value, depth = 0) {
  if (value === null || value === undefined) return value ?? null;
  if (typeof value !== 'object') return typeof value === 'function' ? undefined : value;
  if (depth > 2) return String(value);
  if (Array.isArray(value)) return value.slice(0, 10).map((v) => safe(v, depth + 1));
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  const out = {};
  for (const k of Object.keys(value).slice(0, 30)) {
    const v = safe(value[k], depth + 1);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

class Run {
  constructor(spec) {
    this.spec = spec;
    this.report = {
      player: spec.player, url: spec.url, ok: false, failedStep: null, failure: null,
      steps: [], errors: [], notes: [], renditions: [], switches: [], tones: [],
      userAgent: navigator.userAgent,
    };
    this.fatal = null;
    this.lastDiscontinuity = 0; // media time from which the analyser sees contiguous audio
    this.audio = document.createElement('audio');
    this.audio.controls = true;
    document.body.appendChild(this.audio);
    for (const name of ['seeking', 'playing']) {
      this.audio.addEventListener(name, () => { this.lastDiscontinuity = this.audio.currentTime; });
    }
    this.audio.addEventListener('error', () => {
      const e = this.audio.error;
      this.fail({ source: 'HTMLMediaElement', code: e && e.code, message: e && e.message });
    });
    // An exception no one caught (a player crashing in an event handler) fails the run at once.
    window.addEventListener('error', (e) => this.fail({ source: 'uncaught', message: String(e.message), where: `${e.filename}:${e.lineno}` }));
  }

  /** A player or media error: recorded, and every pending wait rejects with it. */
  fail(err) {
    const e = safe(err);
    this.report.errors.push(e);
    if (!this.fatal) this.fatal = e;
  }

  /** A problem the player worked around (it plays on): recorded as an error, but waits go on, so the
   *  player's own error event, if one follows, is what ends the run. */
  problem(p) { this.report.errors.push(safe(p)); }

  note(n) { if (this.report.notes.length < 50) this.report.notes.push(safe(n)); }

  async waitUntil(cond, timeoutMs, what) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.fatal) throw new Error(`player error while waiting for ${what}: ${JSON.stringify(this.fatal)}`);
      const v = cond();
      if (v) return v;
      if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(40);
    }
  }

  async step(name, fn) {
    const t0 = performance.now();
    try {
      const data = (await fn()) || {};
      this.report.steps.push({ name, ok: true, ms: Math.round(performance.now() - t0), at: this.audio.currentTime, ...data });
    } catch (e) {
      this.report.steps.push({ name, ok: false, ms: Math.round(performance.now() - t0), error: String(e && e.message || e) });
      this.report.failedStep = name;
      throw e;
    }
  }

  setupAnalyser() {
    this.ctx = new AudioContext();
    const src = this.ctx.createMediaElementSource(this.audio);
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = ANALYSER_FFT;
    this.analyser.smoothingTimeConstant = 0;
    src.connect(this.analyser);
    this.analyser.connect(this.ctx.destination);
    this.bins = new Float32Array(this.analyser.frequencyBinCount);
  }

  /** Dominant frequency (Hz) and its level (dBFS) of what the element is playing right now. */
  dominant() {
    this.analyser.getFloatFrequencyData(this.bins);
    const hz = this.ctx.sampleRate / ANALYSER_FFT;
    let best = -1; let db = -Infinity;
    for (let i = Math.floor(100 / hz); i < Math.min(this.bins.length, Math.ceil(6000 / hz)); i++) {
      if (this.bins[i] > db) { db = this.bins[i]; best = i; }
    }
    // Parabolic interpolation between neighbouring bins gives sub-bin accuracy.
    const a = this.bins[best - 1]; const c = this.bins[best + 1];
    const shift = Number.isFinite(a) && Number.isFinite(c) && a - 2 * db + c !== 0 ? 0.5 * (a - c) / (a - 2 * db + c) : 0;
    return { freq: (best + shift) * hz, db };
  }

  expectedTone(t) {
    const sec = this.spec.tones.find((s) => t >= s.start && t < s.end);
    return sec ? sec.freq : null;
  }

  safeForTone(t) {
    if (t - this.lastDiscontinuity < SETTLE) return false;
    return this.spec.tones.every((s) => Math.abs(t - s.start) >= BOUNDARY_GUARD && Math.abs(t - s.end) >= BOUNDARY_GUARD);
  }

  /** Measure the dominant tone once the playhead is clear of boundaries and discontinuities. */
  async tone(label) {
    const entry = { label };
    try {
      await this.waitUntil(() => !this.audio.paused && this.safeForTone(this.audio.currentTime), 3000, `a measurable position (${label})`);
    } catch (e) {
      if (this.fatal) throw e;
      entry.skipped = `no measurable position near ${this.audio.currentTime.toFixed(2)} s`;
      this.report.tones.push(entry);
      return entry;
    }
    const samples = [];
    for (let i = 0; i < 3; i++) {
      const t = this.audio.currentTime;
      samples.push({ t, expected: this.expectedTone(t), ...this.dominant() });
      await sleep(60);
    }
    samples.sort((x, y) => x.freq - y.freq);
    Object.assign(entry, samples[1]);
    this.report.tones.push(entry);
    return entry;
  }

  /** Playback continues: the media clock moves at least `seconds` within `timeoutMs`. */
  async advances(seconds, timeoutMs, what) {
    const t0 = this.audio.currentTime;
    await this.waitUntil(() => !this.audio.paused && this.audio.currentTime >= t0 + seconds, timeoutMs, what);
    return { from: t0, to: this.audio.currentTime };
  }

  async seek(t, what) {
    const seq = ++this.seekSeq;
    this.seekedSeq = this.seekedSeq || 0;
    this.audio.addEventListener('seeked', () => { this.seekedSeq = seq; }, { once: true });
    this.audio.currentTime = t;
    await this.waitUntil(() => this.seekedSeq === seq, 10000, `seeked (${what})`);
    const moved = await this.advances(0.3, 10000, `playback after seeking to ${t.toFixed(2)} s`);
    return { target: t, ...moved };
  }

  /** Emulate a browser that cannot decode some codecs: MSE answers "not supported" for them, as
   *  it would on a platform without the decoder, so the player must filter those renditions out. */
  static hideCodecs(codecs) {
    for (const name of ['MediaSource', 'ManagedMediaSource', 'WebKitMediaSource']) {
      const MS = window[name];
      if (!MS || MS.__tonearmHidden) continue;
      const original = MS.isTypeSupported.bind(MS);
      MS.isTypeSupported = (type) => !codecs.some((c) => type.toLowerCase().includes(c.toLowerCase())) && original(type);
      MS.__tonearmHidden = true;
    }
  }

  async run() {
    const s = this.spec;
    this.report.flacSupported = MediaSource.isTypeSupported('audio/mp4; codecs="flac"'); // before any hiding
    if (s.unsupportedCodecs) Run.hideCodecs(s.unsupportedCodecs);
    this.seekSeq = 0;
    const adapters = { hls: HlsAdapter, dash: DashAdapter, shaka: ShakaAdapter, videojs: VideojsAdapter };
    const Adapter = adapters[s.player];
    if (!Adapter) throw new Error(`unknown player ${s.player}`);
    this.player = new Adapter(this);
    this.report.playerVersion = this.player.version();
    this.setupAnalyser();
    const steps = new Set(s.steps || ['start', 'clock', 'decoded', 'tone_start', 'switch_all', 'switch_back', 'switch_return', 'seek_middle', 'seek_end', 'ended']);
    try {
      await this.step('start', async () => {
        const t0 = performance.now();
        await this.player.load(s.url);
        this.report.renditions = this.player.renditions();
        // play() settles only once playback starts or fails: never wait on it unbounded.
        this.audio.play().catch((e) => this.note({ playRejected: String(e) }));
        await this.ctx.resume();
        await this.advances(0.05, 15000, 'the media clock to start');
        return { startupMs: Math.round(performance.now() - t0), duration: this.audio.duration, audioContext: this.ctx.state };
      });
      if (steps.has('clock')) {
        await this.step('clock', async () => {
          const w0 = performance.now(); const m0 = this.audio.currentTime;
          await sleep((s.clockSeconds || 2) * 1000);
          const wall = (performance.now() - w0) / 1000; const media = this.audio.currentTime - m0;
          return { wall, media, ratio: media / wall, playbackRate: this.audio.playbackRate };
        });
      }
      if (steps.has('decoded')) {
        await this.step('decoded', async () => {
          const b = this.audio.buffered;
          const ranges = []; for (let i = 0; i < b.length; i++) ranges.push([b.start(i), b.end(i)]);
          return { decodedBytes: this.audio.webkitAudioDecodedByteCount, buffered: ranges, level: this.dominant().db };
        });
      }
      if (steps.has('tone_start')) await this.step('tone_start', async () => this.tone('start'));
      if (steps.has('switch_all')) {
        await this.step('switch_all', async () => {
          const list = this.player.renditions();
          const current = this.player.currentIndex();
          this.report.initialRendition = current;
          const family = (r) => String(r.codecs || '').replace(/^.*codecs=/, '').replace(/"/g, '').split('.')[0].toLowerCase();
          const home = current >= 0 ? family(list[current]) : null;
          // Every rung is an explicit target: the other rungs of the codec playing now, back to the
          // first rung (a real switch too), then the rungs of other codecs (a codec change).
          const same = list.map((_, i) => i).filter((i) => i !== current && family(list[i]) === home);
          const other = list.map((_, i) => i).filter((i) => i !== current && family(list[i]) !== home);
          // With spec.revisit false (a player that cannot return to a rendition it played before), every
          // rung is visited once instead, the other codecs first: both directions of a codec change.
          // spec.switchFamilies (e.g. ['opus', 'flac']): only the first rung of each of those codecs, in that order.
          const named = (s.switchFamilies || []).map((f) => list.findIndex((r, i) => i !== current && family(r) === f));
          const order = s.switchFamilies ? named.filter((i) => i >= 0)
            : s.revisit === false ? [...other, ...same] : [...same, ...(same.length ? [current] : []), ...other];
          for (const i of order) await this.switchStep(i, list);
          this.initial = current;
          return { count: order.length, initial: current, order };
        });
      }
      if (steps.has('switch_back') && this.initial >= 0) {
        // The first rung, when switch_all did not target it (it was the only rung of its codec).
        await this.step('switch_back', async () => {
          const list = this.player.renditions();
          if (this.report.switches.some((x) => x.index === this.initial)) return { needed: false };
          await this.switchStep(this.initial, list);
          return { needed: true, to: this.initial, codecs: list[this.initial].codecs };
        });
      }
      if (steps.has('switch_return') && this.initial >= 0) {
        // Back to the first rung from wherever switch_all ended: a codec change when the ladder mixes codecs.
        await this.step('switch_return', async () => {
          const list = this.player.renditions();
          const from = this.player.currentIndex();
          if (from === this.initial) return { needed: false };
          await this.switchStep(this.initial, list);
          return { needed: true, from, to: this.initial, fromCodecs: list[from] && list[from].codecs, codecs: list[this.initial].codecs };
        });
      }
      const duration = this.audio.duration;
      if (steps.has('seek_middle')) {
        await this.step('seek_middle', async () => {
          const r = await this.seek(duration / 2, 'middle');
          return { ...r, tone: await this.tone('middle') };
        });
      }
      if (steps.has('seek_end')) {
        await this.step('seek_end', async () => {
          const r = await this.seek(Math.max(0, duration - (s.nearEnd || 2.5)), 'near the end');
          return { ...r, tone: await this.tone('near end') };
        });
      }
      if (steps.has('ended')) {
        await this.step('ended', async () => {
          const remaining = (this.audio.duration - this.audio.currentTime) / (this.audio.playbackRate || 1);
          await this.waitUntil(() => this.audio.ended, remaining * 1000 + 8000, 'the ended event');
          return { currentTime: this.audio.currentTime, duration: this.audio.duration };
        });
      }
      this.report.ok = true;
    } catch (e) {
      this.report.failure = String(e && e.message || e);
      // A player may report the cause just after the symptom (e.g. a stall before the error event).
      for (let i = 0; i < 40 && !this.report.errors.length; i++) await sleep(50);
      // spec.settleMs: keep listening that long, so a player's own error that follows the media element's is seen.
      if (s.settleMs) await sleep(s.settleMs);
    } finally {
      this.report.final = {
        currentTime: this.audio.currentTime, duration: this.audio.duration, ended: this.audio.ended,
        decodedBytes: this.audio.webkitAudioDecodedByteCount, rendition: this.safeCurrent(),
      };
      try { await this.player.destroy(); } catch (e) { this.note({ destroy: String(e) }); }
      try { await this.ctx.close(); } catch (e) { /* already closed */ }
    }
    return this.report;
  }

  /** Force rendition i, wait for the player's own confirmation, then prove playback goes on. */
  async switchStep(i, list) {
    const t0 = performance.now();
    const confirmed = await this.player.switchTo(i, list);
    const moved = await this.advances(0.3, 8000, `playback after switching to rendition ${i}`);
    const tone = await this.tone(`after switch to ${i}`);
    this.report.switches.push({
      index: i, bitrate: list[i].bitrate, codecs: list[i].codecs, confirmed,
      ms: Math.round(performance.now() - t0), ...moved, toneFreq: tone.freq ?? null,
    });
  }

  safeCurrent() { try { return this.player.currentIndex(); } catch (e) { return null; } }
}

class HlsAdapter {
  constructor(run) {
    if (!window.Hls || !Hls.isSupported()) throw new Error('hls.js: MediaSource not supported');
    this.run = run;
    this.hls = new Hls(Object.assign({ enableWorker: true }, run.spec.playerConfig || {}));
    this.switched = []; this.fragChanged = [];
    this.hls.on(Hls.Events.ERROR, (_, d) => {
      const e = {
        player: 'hls.js', fatal: d.fatal, type: d.type, details: d.details,
        reason: d.reason || (d.error && d.error.message) || (d.err && d.err.message) || '',
        status: d.response && d.response.code, url: (d.frag && d.frag.url) || (d.context && d.context.url) || d.url || null,
      };
      if (!d.fatal && HLS_BENIGN.has(d.details)) run.note(e); else run.fail(e);
    });
    this.hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => this.switched.push(d.level));
    this.hls.on(Hls.Events.FRAG_CHANGED, (_, d) => this.fragChanged.push(d.frag.level));
  }

  version() { return `hls.js ${Hls.version}`; }

  async load(url) {
    let parsed = null;
    this.hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => { parsed = d; });
    this.hls.attachMedia(this.run.audio);
    this.hls.loadSource(url);
    await this.run.waitUntil(() => parsed, 15000, 'hls.js MANIFEST_PARSED');
  }

  renditions() {
    return this.hls.levels.map((l, i) => ({ index: i, bitrate: l.bitrate, codecs: l.audioCodec || l.codecSet || null, uri: l.url[0] || l.uri }));
  }

  currentIndex() { return this.hls.currentLevel; }

  /** Immediate switch (buffer flushed); confirmed by LEVEL_SWITCHED and then FRAG_CHANGED at the playhead. */
  async switchTo(i) {
    const s0 = this.switched.length; const f0 = this.fragChanged.length;
    this.hls.currentLevel = i;
    await this.run.waitUntil(() => this.switched.slice(s0).includes(i), 10000, `hls.js LEVEL_SWITCHED to ${i}`);
    await this.run.waitUntil(() => this.fragChanged.slice(f0).includes(i), 10000, `hls.js FRAG_CHANGED on level ${i}`);
    return { event: 'LEVEL_SWITCHED', level: i, playing: 'FRAG_CHANGED' };
  }

  async destroy() { this.hls.destroy(); }
}

class DashAdapter {
  constructor(run) {
    if (!window.dashjs) throw new Error('dash.js not loaded');
    this.run = run;
    const E = dashjs.MediaPlayer.events;
    this.events = E;
    this.p = dashjs.MediaPlayer().create();
    this.p.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      // Forced switches must stick: ABR off for audio (dash.js Settings streaming.abr.autoSwitchBitrate).
      streaming: { abr: { autoSwitchBitrate: { audio: false } } },
      ...(run.spec.playerConfig || {}),
    });
    // EME: spec.protectionData is dash.js's {keySystem: {serverURL, ...}} (MediaPlayer.setProtectionData).
    if (run.spec.protectionData) this.p.setProtectionData(run.spec.protectionData);
    this.rendered = []; this.tracksRendered = [];
    const err = (name) => (e) => run.fail({
      player: 'dash.js', event: name, code: e.error && e.error.code, message: (e.error && e.error.message) || e.message || '',
      data: e.error && e.error.data ? safe(e.error.data) : null,
    });
    this.p.on(E.ERROR, err('error'));
    this.p.on(E.PLAYBACK_ERROR, err('playbackError'));
    this.p.on(E.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType === 'audio' && e.newRepresentation) this.rendered.push(e.newRepresentation.id);
    });
    this.p.on(E.TRACK_CHANGE_RENDERED, (e) => {
      if (e.mediaType === 'audio' && e.newMediaInfo) this.tracksRendered.push(e.newMediaInfo.id);
    });
  }

  version() { return `dash.js ${this.p.getVersion()}`; }

  async load(url) {
    let ready = false;
    this.p.on(this.events.STREAM_INITIALIZED, () => { ready = true; });
    this.p.initialize(this.run.audio, url, false);
    await this.run.waitUntil(() => ready, 15000, 'dash.js STREAM_INITIALIZED');
  }

  /** Every audio Representation of every audio AdaptationSet: a DASH packager may keep one
   *  AdaptationSet per codec (DASH-IF IOP: no codec switching inside a set), and dash.js plays one
   *  AdaptationSet ("track") at a time, so reaching every rung can take a track change first. */
  renditions() {
    const out = [];
    this.p.getTracksFor('audio').forEach((t, ti) => {
      for (const b of t.bitrateList || []) out.push({ index: out.length, track: ti, trackId: t.id, id: b.id, bitrate: b.bandwidth, codecs: t.codec });
    });
    return out;
  }

  currentIndex() {
    const cur = this.p.getCurrentRepresentationForType('audio');
    return cur ? this.renditions().findIndex((r) => r.id === cur.id) : -1;
  }

  /** Track change (TRACK_CHANGE_RENDERED) if needed, then a forced replace of the buffered audio
   *  confirmed by QUALITY_CHANGE_RENDERED for that Representation. */
  async switchTo(i, list) {
    const want = list[i]; const confirmed = { representation: want.id };
    const current = () => this.p.getCurrentTrackFor('audio');
    if (!current() || current().id !== want.trackId) {
      const t0 = this.tracksRendered.length;
      this.p.setCurrentTrack(this.p.getTracksFor('audio')[want.track]);
      await this.run.waitUntil(() => this.tracksRendered.slice(t0).includes(want.trackId), 10000, `dash.js TRACK_CHANGE_RENDERED for AdaptationSet ${want.trackId}`);
      confirmed.track = want.trackId;
      confirmed.trackEvent = 'TRACK_CHANGE_RENDERED';
    }
    const cur = this.p.getCurrentRepresentationForType('audio');
    if (cur && cur.id === want.id && confirmed.track !== undefined) return { event: 'TRACK_CHANGE_RENDERED', ...confirmed };
    const r0 = this.rendered.length;
    const reps = this.p.getRepresentationsByType('audio');
    const k = reps.findIndex((r) => r.id === want.id);
    if (k < 0) throw new Error(`dash.js does not list Representation ${want.id} in its current AdaptationSet`);
    this.p.setRepresentationForTypeByIndex('audio', k, true);
    await this.run.waitUntil(() => this.rendered.slice(r0).includes(want.id), 10000, `dash.js QUALITY_CHANGE_RENDERED for ${want.id}`);
    return { event: 'QUALITY_CHANGE_RENDERED', ...confirmed };
  }

  async destroy() { this.p.destroy(); }
}

class ShakaAdapter {
  constructor(run) {
    if (!window.shaka) throw new Error('Shaka Player not loaded');
    shaka.polyfill.installAll();
    if (!shaka.Player.isBrowserSupported()) throw new Error('Shaka: browser not supported');
    this.run = run;
    this.p = new shaka.Player();
    // Forced switches must stick: ABR off (shaka.extern.AbrConfiguration.enabled); the quality
    // observer reports what reaches the playhead ('mediaqualitychanged'), off by default.
    this.p.configure({ abr: { enabled: false }, streaming: { observeQualityChanges: true }, ...(run.spec.playerConfig || {}) });
    if (run.spec.shakaCommonPssh) this.p.configure('drm.initDataTransform', ShakaAdapter.commonPssh);
    this.variants = []; this.qualities = [];
    this.p.addEventListener('error', (e) => {
      const d = e.detail || {};
      run.fail({ player: 'shaka', code: d.code, category: d.category, severity: d.severity, message: d.message || '', data: safe(d.data) });
    });
    this.p.addEventListener('variantchanged', (e) => this.variants.push(e.newTrack && e.newTrack.id));
    this.p.addEventListener('mediaqualitychanged', (e) => {
      const q = e.mediaQuality || {};
      this.qualities.push({ bandwidth: q.bandwidth, codecs: q.codecs, position: e.position });
    });
  }

  /** drm.initDataTransform for ClearKey from HLS: Shaka maps the Widevine EXT-X-KEY (keySystemsMapping)
   *  to org.w3.clearkey but keeps its Widevine pssh as 'cenc' init data, which the ClearKey CDM refuses
   *  ("No supported PSSH box found"); this adds the W3C common pssh (version 1) for the key ids Shaka
   *  read from KEYID, as the init segment carries it. Other init data passes through. */
  static commonPssh(initData, initDataType, drmInfo) {
    if (initDataType !== 'cenc' || !drmInfo || drmInfo.keySystem !== 'org.w3.clearkey' || !drmInfo.keyIds || !drmInfo.keyIds.size) return initData;
    const common = [0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b];
    const kids = [...drmInfo.keyIds].map((h) => h.match(/../g).map((b) => parseInt(b, 16)));
    const size = 32 + 16 * kids.length + 4;
    const be = (n) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
    const box = [...be(size), 0x70, 0x73, 0x73, 0x68, 1, 0, 0, 0, ...common, ...be(kids.length), ...kids.flat(), 0, 0, 0, 0];
    const out = new Uint8Array(initData.length + box.length);
    out.set(initData, 0); out.set(box, initData.length);
    return out;
  }

  version() { return `Shaka ${shaka.Player.version}`; }

  async load(url) {
    await this.p.attach(this.run.audio);
    try {
      await this.p.load(url);
    } catch (e) {
      this.run.fail({ player: 'shaka', code: e.code, category: e.category, severity: e.severity, message: e.message || '', data: safe(e.data) });
      throw e;
    }
  }

  tracks() { return this.p.getVariantTracks().slice().sort((a, b) => a.bandwidth - b.bandwidth); }

  renditions() {
    return this.tracks().map((t, i) => ({ index: i, id: t.id, bitrate: t.bandwidth, audioBandwidth: t.audioBandwidth, codecs: t.audioCodec || t.codecs }));
  }

  currentIndex() { return this.tracks().findIndex((t) => t.active); }

  /** selectVariantTrack with a buffer clear; confirmed by 'variantchanged' and then 'mediaqualitychanged'. */
  async switchTo(i) {
    const track = this.tracks()[i];
    const v0 = this.variants.length; const q0 = this.qualities.length;
    this.p.selectVariantTrack(track, true);
    await this.run.waitUntil(() => this.variants.slice(v0).includes(track.id), 10000, `Shaka variantchanged to ${track.id}`);
    const want = track.audioBandwidth || track.bandwidth;
    const q = await this.run.waitUntil(
      () => this.qualities.slice(q0).find((x) => x.codecs === track.audioCodec && (!want || x.bandwidth === want)),
      10000, `Shaka mediaqualitychanged to ${track.audioCodec} @ ${want} (seen ${JSON.stringify(this.qualities.slice(q0))})`);
    const active = this.tracks().find((t) => t.active);
    if (!active || active.id !== track.id) throw new Error(`Shaka active track is ${active && active.id}, wanted ${track.id}`);
    return { event: 'variantchanged', track: track.id, playing: 'mediaqualitychanged', bandwidth: q.bandwidth };
  }

  async destroy() { await this.p.destroy(); }
}

/* Video.js 8 and the HLS/DASH engine it bundles, VHS (@videojs/http-streaming; video.min.js carries
 * it, and videojs-contrib-quality-levels). VHS reports much of what goes wrong as warnings on
 * videojs.log and tech events (a rendition excluded after a failed request or append, a retried
 * playlist), not as player errors: each is recorded as an error here (a clean run has none) without
 * ending the run, so the player's own 'error' event, when one comes, is what ends a broken run.
 * spec.playerConfig: VHS options (html5.vhs). */
class VideojsAdapter {
  constructor(run) {
    if (!window.videojs) throw new Error('Video.js not loaded');
    this.run = run;
    this.mediaChanges = []; this.requests = []; this.changeTypes = []; this.usage = new Set(); this.seen = new Set();
    for (const level of ['warn', 'error']) {
      const original = videojs.log[level];
      videojs.log[level] = (...args) => {
        const message = args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'object' ? JSON.stringify(safe(a)) : String(a))).join(' ').slice(0, 400);
        // video.js logs each player error again ("(CODE:n MEDIA_ERR_...) ..."): the error event records it.
        if (!/^\(CODE:\d+ /.test(message)) run.problem({ player: 'video.js', source: `videojs.log.${level}`, message });
        return original.apply(videojs.log, args);
      };
    }
    // Every SourceBuffer.changeType call: how VHS changes codec inside its one audio SourceBuffer.
    const sb = window.SourceBuffer && SourceBuffer.prototype;
    if (sb && sb.changeType && !sb.__tonearmWrapped) {
      const original = sb.changeType; const calls = this.changeTypes;
      sb.changeType = function (type) { calls.push({ type, at: run.audio.currentTime }); return original.call(this, type); };
      sb.__tonearmWrapped = true;
    }
    this.p = videojs(run.audio, {
      preload: 'auto',
      html5: { vhs: { overrideNative: true, ...(run.spec.playerConfig || {}) }, nativeAudioTracks: false, nativeVideoTracks: false },
    });
    this.p.on('error', () => {
      const e = this.p.error() || {};
      run.fail({ player: 'video.js', code: e.code, message: e.message || '', errorType: (e.metadata && e.metadata.errorType) || null, metadata: safe(e.metadata) });
    });
  }

  version() { return `Video.js ${videojs.VERSION} (VHS ${videojs.VhsHandler.version()['@videojs/http-streaming']})`; }

  get vhs() { const tech = this.p.tech(true); return tech && tech.vhs; }

  async load(url) {
    const type = /\.mpd(\?|$)/.test(url) ? 'application/dash+xml' : 'application/x-mpegURL';
    let metadata = false;
    this.p.one('loadedmetadata', () => { metadata = true; });
    this.p.src({ src: url, type });
    const vhs = await this.run.waitUntil(() => this.vhs, 15000, 'the Video.js VHS source handler');
    const tech = this.p.tech(true);
    // Every rendition VHS has switched to, the initial one included: its loader keeps them.
    const media = () => { const m = vhs.playlists.media(); if (m) this.seen.add(m.id); return m; };
    vhs.playlists.on('mediachange', () => { const m = media(); this.mediaChanges.push(m && m.id); });
    vhs.playlists.on('loadedplaylist', media);
    vhs.xhr.onResponse((request, error, response) => {
      if (this.requests.length < 400) {
        this.requests.push({ uri: request.uri, range: (request.headers && request.headers.Range) || null, status: response && response.statusCode, at: performance.now(), mediaTime: this.run.audio.currentTime });
      }
    });
    for (const name of ['excludeplaylist', 'retryplaylist']) {
      tech.on(name, () => {
        const m = vhs.playlists.media();
        this.run.problem({ player: 'video.js', source: `vhs ${name}`, playlist: m && m.id });
      });
    }
    tech.on('usage', (e) => this.usage.add(e.name));
    await this.run.waitUntil(() => metadata && media() && this.p.qualityLevels().length, 15000, 'Video.js loadedmetadata and its quality levels');
  }

  reps() { return this.vhs.representations(); }

  renditions() {
    return this.reps().map((r, i) => ({ index: i, id: r.id, bitrate: r.bandwidth, codecs: (r.codecs && r.codecs.audio) || null }));
  }

  currentIndex() {
    const m = this.vhs.playlists.media();
    return m ? this.reps().findIndex((r) => r.id === m.id) : -1;
  }

  /** VHS representations API: every other representation disabled, the target disabled and enabled
   *  again (enabling a disabled one is what makes VHS switch at once, its "fast quality change" that
   *  empties the buffer). Confirmed by the playlist loader's 'mediachange' for it, then
   *  qualityLevels().selectedIndex and playlists.media(), then a media segment listed in that
   *  rendition's playlist (for a single file, one of its byte ranges) fetched after the switch.
   *
   *  VHS 3.17.5 switches synchronously to a VOD playlist its loader has held before (loaded earlier
   *  in the session; the initial one, say): 'mediachange' then fires inside the debounced
   *  fastQualityChange_, before it sets waitingForFastQualityPlaylistReceived_, so the loaders are
   *  not reset, nothing is flushed, and what is buffered of the previous rendition plays on (all of
   *  it here). Such a switch never gets its segment: spec.revisit false keeps switch_all from asking. */
  async switchTo(i, list) {
    const want = list[i];
    const reps = this.reps();
    const target = reps.find((r) => r.id === want.id);
    if (!target) throw new Error(`VHS does not list representation ${want.id}`);
    // A switch made as a segment's append completes is taken over by VHS's own ABR switch (its
    // 'bandwidthupdate' lands inside fastQualityChange_'s 100 ms debounce, switches first, and
    // flushes nothing). So first let the buffer reach the end of this short stream and the last
    // segment settle for 300 ms: no download or append is then in progress (waiting up to 3 s).
    const w0 = performance.now();
    const end = () => { const b = this.run.audio.buffered; return b.length ? b.end(b.length - 1) : 0; };
    const quiet = () => !this.requests.length || performance.now() - this.requests[this.requests.length - 1].at > 300;
    try {
      await this.run.waitUntil(() => end() >= this.run.audio.duration - 0.2 && quiet(), 3000, 'the VHS buffer to reach the end');
    } catch (e) {
      if (this.run.fatal) throw e;
    }
    const bufferWaitMs = Math.round(performance.now() - w0);
    const m0 = this.mediaChanges.length; const t0 = performance.now();
    const revisit = this.seen.has(want.id);
    for (const r of reps) if (r !== target) r.enabled(false);
    target.enabled(false);
    target.enabled(true);
    await this.run.waitUntil(() => this.mediaChanges.slice(m0).includes(want.id), 10000, `VHS mediachange to ${want.id}`);
    const levels = this.p.qualityLevels();
    await this.run.waitUntil(() => levels.selectedIndex >= 0 && levels[levels.selectedIndex].id === want.id, 10000, `qualityLevels().selectedIndex on ${want.id}`);
    const m = this.vhs.playlists.media();
    if (!m || m.id !== want.id) throw new Error(`VHS playlists.media() is ${m && m.id}, wanted ${want.id}`);
    const confirmed = { event: 'mediachange', id: want.id, selectedIndex: levels.selectedIndex, revisit, bufferWaitMs };
    this.run.note({ videojsSwitch: confirmed });
    // The segment fetched must hold the playhead of the moment: a fast switch reloads from there.
    // (Segments fetched for the end of a still-growing buffer do not count: they are heard later.)
    const key = (uri, range) => `${uri} ${range || ''}`;
    const spans = () => {
      const out = new Map(); let t = 0;
      for (const x of m.segments || []) {
        const range = x.byterange ? `bytes=${x.byterange.offset}-${x.byterange.offset + x.byterange.length - 1}` : null;
        out.set(key(x.resolvedUri, range), [t, t + x.duration]); t += x.duration;
      }
      return out;
    };
    const atPlayhead = (r) => { const span = spans().get(key(r.uri, r.range)); return span && span[0] <= r.mediaTime + 0.05 && r.mediaTime < span[1]; };
    const seg = await this.run.waitUntil(() => this.requests.find((r) => r.at >= t0 && atPlayhead(r)),
      this.run.spec.segmentWaitMs || 10000, `a segment of ${want.id} at the playhead fetched after the switch`);
    return { ...confirmed, segment: seg.uri.split('/').slice(-2).join('/'), range: seg.range, segmentAt: seg.mediaTime };
  }

  async destroy() {
    Object.assign(this.run.report, {
      changeTypes: this.changeTypes, usage: [...this.usage],
      requests: this.requests.slice(0, 60).map((r) => `${r.status} ${r.uri.split('/').slice(-2).join('/')}${r.range ? ` ${r.range}` : ''}`),
    });
    this.p.dispose();
  }
}

window.runScenario = async (spec) => {
  const run = new Run(spec);
  window.currentReport = run.report; // read by drive.mjs if the scenario overruns its time
  return run.run();
};
