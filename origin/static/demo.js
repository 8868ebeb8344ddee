/* tonearm demo page: lists the published assets a page at a time (/api/assets?q=&limit=&offset=, then
 * /api/assets/<id> for the master's format), with a search on title and artist, and plays each one
 * with hls.js over Media Source Extensions, or natively where the browser plays HLS itself (Safari).
 * The listener can pin a rendition or leave it on automatic; the line under the player says what is
 * being heard and at which bit rate. Every column is filled from the catalog before anything plays:
 * the declared peak is the descriptor's per-rendition HLS BANDWIDTH (renditions[i].bandwidth).
 *
 * Loudness normalisation (on by default, a switch turns it off): each asset plays through Web Audio,
 * MediaElementSource -> GainNode (its gain) -> the page's output bus -> destination. The gain is the
 * descriptor's loudness.gain_db (min(target - integrated, -1 - true peak), computed at ingest to
 * loudness.target_lufs); a descriptor without it gets the same rule computed here with -14 LUFS.
 * Native HLS (Safari) is not routed through Web Audio (WebKit has given MediaElementSource silence for
 * native HLS, and no Safari runs in the tests): there the element's volume applies cuts, no boost.
 *
 * hls.js 1.7.4 cannot switch an existing SourceBuffer from Opus back to AAC (it never calls
 * changeType; see tests/test_players_matrix.py), so a pick that changes the codec family rebuilds
 * the player at the current position instead of switching in place.
 */
'use strict';

const PAGE = 20; // assets a page; ?per=N (1-100) in the page's URL changes it
const MAX_QUERY = 100; // the API's bound on ?q=
const SEARCH_DELAY_MS = 250;
const DEFAULT_TARGET_LUFS = -14;
const TRUE_PEAK_CEILING_DBTP = -1;
const NORMALISE_KEY = 'tonearm.normalise';
const CODEC_NAMES = { mp4a: 'AAC', opus: 'Opus', flac: 'FLAC', alac: 'ALAC', 'ec-3': 'E-AC-3', 'ac-3': 'AC-3' };
const players = new Map(); // asset id -> AssetPlayer, the current page's
const sound = { context: null, output: null, normalise: true };
// For people poking around, and for the browser tests (sound.output is the bus every asset's gain feeds).
window.tonearmDemo = { players, errors: [], sound };

const $ = (root, selector) => root.querySelector(selector);

function family(codecs) {
  return String(codecs || '').split(',')[0].trim().split('.')[0].toLowerCase();
}

function codecLabel(codecs) {
  const name = CODEC_NAMES[family(codecs)] || codecs || '?';
  return codecs === 'mp4a.40.2' ? 'AAC-LC' : codecs === 'mp4a.40.5' ? 'HE-AAC' : name;
}

function kbps(bps) {
  return bps ? `${Math.round(bps / 1000)} kb/s` : 'lossless';
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return '—';
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function loudness(l) {
  if (!l || l.integrated_lufs == null) return '—';
  const parts = [`${l.integrated_lufs.toFixed(1)} LUFS`];
  if (l.loudness_range_lu != null) parts.push(`LRA ${l.loudness_range_lu.toFixed(1)} LU`);
  if (l.true_peak_dbtp != null) parts.push(`peak ${l.true_peak_dbtp.toFixed(1)} dBTP`);
  return parts.join(' · ');
}

/** The declared peak bit rate (HLS BANDWIDTH), or a dash when it is not known. */
function peak(bps) {
  return Number.isFinite(bps) && bps > 0 ? kbps(bps) : '—';
}

/** The normalisation gain of an asset: the descriptor's, or the same rule computed here when it has none.
 *  { db: number | null (null: no gain, e.g. a silent master), target: LUFS, from: 'descriptor' | 'page' } */
function normalisation(l) {
  l = l || {};
  const target = Number.isFinite(l.target_lufs) ? l.target_lufs : DEFAULT_TARGET_LUFS;
  if ('gain_db' in l) return { db: Number.isFinite(l.gain_db) ? l.gain_db : null, target, from: 'descriptor' };
  if (l.silent || !Number.isFinite(l.integrated_lufs) || !Number.isFinite(l.true_peak_dbtp)) {
    return { db: null, target, from: 'page' };
  }
  const db = Math.min(target - l.integrated_lufs, TRUE_PEAK_CEILING_DBTP - l.true_peak_dbtp);
  return { db: Math.round(db * 100) / 100, target, from: 'page' };
}

/** "-3.2 dB", "+4.0 dB", "0.0 dB". */
function decibels(db) {
  const r = Math.round(db * 10) / 10;
  return `${r > 0 ? '+' : r < 0 ? '-' : ''}${Math.abs(r).toFixed(1)} dB`;
}

function lufs(value) {
  return `${value < 0 ? '−' : ''}${Math.abs(value).toFixed(value % 1 ? 1 : 0)} LUFS`;
}

/** The page's audio graph, made on a listener's first click (a user gesture lets it start). */
function audioGraph() {
  if (!sound.context) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    sound.context = new Context();
    sound.output = sound.context.createGain(); // unity: the one place every asset's sound passes
    sound.output.connect(sound.context.destination);
  }
  if (sound.context.state === 'suspended') sound.context.resume().catch(() => {});
  return sound.context;
}

function setNormalise(on) {
  sound.normalise = on;
  try { localStorage.setItem(NORMALISE_KEY, on ? 'on' : 'off'); } catch (e) { /* private mode: not kept */ }
  document.body.dataset.normalise = on ? 'on' : 'off';
  for (const p of players.values()) p.applyGain();
  showLevel();
}

/** The toolbar's line: the asset playing and the gain it gets. */
function showLevel() {
  const el = document.getElementById('level');
  const playing = [...players.values()].find((p) => !p.audio.paused);
  if (!playing) {
    el.textContent = 'Nothing playing';
    delete el.dataset.gainDb;
    return;
  }
  el.dataset.gainDb = String(playing.applied);
  el.textContent = `Playing “${playing.title}”: ${playing.gainLine()}`;
}

async function getJSON(url, signal) {
  const r = await fetch(url, { headers: { Accept: 'application/json' }, signal });
  if (!r.ok) {
    let why = `HTTP ${r.status}`;
    try { why = (await r.json()).error || why; } catch (e) { /* not JSON */ }
    throw new Error(`${url}: ${why}`);
  }
  return r.json();
}

class AssetPlayer {
  constructor(card, asset) {
    this.card = card;
    this.asset = asset;
    this.audio = $(card, 'audio');
    this.select = $(card, 'select.rung');
    this.now = $(card, '.now');
    const playback = asset.playback || {};
    this.url = (playback.segmented || playback.single || {}).hls;
    this.renditions = asset.renditions || [];
    this.title = asset.title || asset.id.slice(0, 12);
    this.norm = normalisation(asset.loudness);
    this.gainNode = null; // made with the player, on the first click
    this.applied = 0; // dB applied to what is heard now
    this.hls = null;
    this.wanted = 'auto';
    this.autoFamily = null; // the codec family hls.js's ABR settled on when left on automatic
    this.select.addEventListener('change', () => this.pick(this.select.value));
    this.audio.addEventListener('play', () => this.onPlay());
    this.audio.addEventListener('pause', () => { card.classList.remove('active'); showLevel(); });
    // The player is made on the first click: a page of assets must not open a MediaSource (and an
    // hls.js worker) per asset before anyone listens.
    this.button = $(card, 'button.start');
    this.button.addEventListener('click', () => this.start());
  }

  start() {
    this.begun = true;
    this.button.hidden = true;
    this.audio.hidden = false;
    this.attach(-1, undefined);
    this.applyGain();
    this.audio.play().catch(() => {});
  }

  /** Route the element through its GainNode (once: an element has one MediaElementSource for life). */
  connect() {
    if (this.gainNode || this.native) return this.gainNode;
    const context = audioGraph();
    if (!context) return null;
    try {
      this.source = context.createMediaElementSource(this.audio);
      this.gainNode = context.createGain();
      this.source.connect(this.gainNode).connect(sound.output);
    } catch (e) {
      window.tonearmDemo.errors.push({ asset: this.asset.id, type: 'webaudio', details: String(e.message || e) });
      this.gainNode = null;
    }
    return this.gainNode;
  }

  /** Apply (or lift) the normalisation gain, and say so. */
  applyGain() {
    if (!this.begun) { this.renderGain(); return; } // no player yet: nothing to apply
    const wanted = sound.normalise && this.norm.db != null ? this.norm.db : 0;
    const node = this.connect();
    if (node) {
      const t = node.context.currentTime;
      node.gain.cancelScheduledValues(t);
      node.gain.setTargetAtTime(10 ** (wanted / 20), t, 0.015); // ~15 ms: no click
      this.applied = wanted;
    } else {
      // No Web Audio here (native HLS): the element's volume can cut, not boost.
      this.applied = Math.min(0, wanted);
      this.audio.volume = 10 ** (this.applied / 20);
    }
    if (this.native) this.now.textContent = `Native HLS: the browser chooses the rendition · ${this.gainLine()}`;
    this.renderGain();
    this.render();
    showLevel();
  }

  /** What the listener hears now: "gain -3.2 dB", "normalisation off", ... */
  gainLine() {
    if (!sound.normalise) return 'normalisation off';
    if (this.norm.db == null) return 'no gain (loudness unknown)';
    const capped = this.applied !== this.norm.db ? ` (of ${decibels(this.norm.db)}: this player cannot boost)` : '';
    return `gain ${decibels(this.applied)}${capped}`;
  }

  renderGain() {
    const dd = $(this.card, '.gain');
    const n = this.norm;
    dd.dataset.gainDb = n.db == null ? '' : String(n.db);
    dd.classList.toggle('off', !sound.normalise);
    dd.textContent = n.db == null ? '—' : sound.normalise ? decibels(n.db) : `off (${decibels(n.db)})`;
    dd.title = n.db == null ? 'No normalisation gain: the loudness is unknown or the master is silent'
      : `To ${lufs(n.target)}, true peak at most ${TRUE_PEAK_CEILING_DBTP} dBTP`
        + (n.from === 'descriptor' ? ' (from the asset descriptor)' : ' (computed by this page)');
  }

  destroy() {
    this.audio.pause();
    if (this.hls) this.hls.destroy();
    this.hls = null;
    if (this.gainNode) { this.source.disconnect(); this.gainNode.disconnect(); }
    this.audio.removeAttribute('src');
  }

  /** Create the player; `level` pins a rendition from the start (null: automatic). */
  attach(startPosition, level) {
    if (!this.url) {
      // A public catalog never hands out signed URLs (signing_required): they come from `tonearm sign`
      // or from a service holding the catalog key.
      this.now.textContent = this.asset.signing_required
        ? 'This origin only plays signed URLs, and the public catalog does not hand them out.'
        : 'No HLS playback URL for this asset.';
      return;
    }
    if (window.Hls && Hls.isSupported()) {
      const hls = new Hls({ autoStartLoad: false, startPosition });
      this.hls = hls;
      this.parsed = false;
      this.started = false;
      this.bufferFamily = null;
      this.pendingLevel = level;
      this.loadAt = undefined;
      hls.on(Hls.Events.MANIFEST_PARSED, () => this.onParsed());
      hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => { this.bufferFamily = family(this.levelCodecs(d.frag.level)); });
      hls.on(Hls.Events.FRAG_CHANGED, (_, d) => this.onPlaying(d.frag.level));
      hls.on(Hls.Events.ERROR, (_, d) => this.onError(d));
      hls.attachMedia(this.audio);
      hls.loadSource(this.url);
    } else if (this.audio.canPlayType('application/vnd.apple.mpegurl')) {
      this.native = true; // no MediaElementSource for native HLS: the gain goes on the element's volume
      this.audio.src = this.url; // Safari: native HLS picks the rendition itself
      this.select.disabled = true;
      this.select.title = 'Native HLS chooses the rendition';
      this.now.textContent = 'Native HLS: the browser chooses the rendition.';
    } else {
      this.now.textContent = 'This browser can play neither HLS nor Media Source Extensions.';
    }
  }

  levelCodecs(i) {
    const l = this.hls && this.hls.levels[i];
    return l ? l.audioCodec || l.codecSet || '' : '';
  }

  /** The rendition a level plays: its name is a path segment of the level's playlist URL. */
  nameOf(level) {
    const url = (level.url && level.url[0]) || level.uri || '';
    const r = this.renditions.find((x) => url.includes(`/${x.name}/`) || url.endsWith(`/${x.name}.m3u8`));
    return r ? r.name : level.name || kbps(level.bitrate);
  }

  levelIndex(name) {
    return this.hls.levels.findIndex((l) => this.nameOf(l) === name);
  }

  onParsed() {
    this.parsed = true;
    const playable = new Set(this.hls.levels.map((l) => this.nameOf(l)));
    for (const opt of this.select.options) {
      if (opt.value === 'auto') continue;
      opt.disabled = !playable.has(opt.value);
      if (opt.disabled) opt.textContent = `${opt.dataset.label} (not playable here)`;
    }
    for (const row of this.card.querySelectorAll('tbody tr')) {
      const level = this.hls.levels[this.levelIndex(row.dataset.rung)];
      row.classList.toggle('unplayable', !level);
      const cell = row.querySelector('.peak');
      if (cell.textContent === '—' && level) cell.textContent = peak(level.bitrate); // a descriptor without the figure
    }
    if (this.pendingLevel === undefined) this.pendingLevel = this.wanted === 'auto' ? null : this.levelIndex(this.wanted);
    if (this.pendingLevel != null && this.pendingLevel >= 0) this.hls.loadLevel = this.pendingLevel;
    if (this.loadAt !== undefined) this.startLoad();
  }

  onPlay() {
    for (const other of players.values()) if (other !== this) other.audio.pause();
    if (this.gainNode) audioGraph(); // resumes the context if the browser suspended it
    this.card.classList.add('active');
    showLevel();
    if (this.hls && !this.started) {
      if (this.loadAt === undefined) this.loadAt = this.audio.currentTime || -1;
      if (this.parsed) this.startLoad();
    }
  }

  startLoad() {
    if (this.started) return;
    this.started = true;
    this.hls.startLoad(this.loadAt);
  }

  /** A listener's pick: 'auto' or a rendition name. */
  pick(value) {
    this.wanted = value;
    if (!this.hls || !this.parsed) return;
    const target = value === 'auto' ? -1 : this.levelIndex(value);
    if (value !== 'auto' && target < 0) return;
    const targetFamily = target >= 0 ? family(this.levelCodecs(target))
      : this.autoFamily || family(this.levelCodecs(this.hls.firstLevel));
    if (this.bufferFamily && targetFamily !== this.bufferFamily) {
      this.rebuild(target);
    } else if (this.started) {
      this.hls.currentLevel = target; // immediate: flush the buffer, reload at the playhead
    } else {
      this.hls.loadLevel = target;
      this.pendingLevel = target;
    }
    this.render();
  }

  /** Codec-family change: a fresh MediaSource whose SourceBuffer is made for the new codec. */
  rebuild(level) {
    const at = this.audio.currentTime;
    const playing = !this.audio.paused;
    this.hls.destroy();
    this.attach(at, level);
    if (playing) {
      this.loadAt = at;
      this.audio.play().catch(() => {});
    }
  }

  onPlaying(levelIndex) {
    this.playing = levelIndex;
    if (this.wanted === 'auto' && this.hls.autoLevelEnabled) this.autoFamily = family(this.levelCodecs(levelIndex));
    this.render();
  }

  render() {
    const level = this.hls && this.playing != null ? this.hls.levels[this.playing] : null;
    const mode = this.wanted === 'auto' ? 'automatic' : 'fixed';
    this.card.dataset.mode = mode;
    if (!level) return;
    const name = this.nameOf(level);
    this.card.dataset.playing = name;
    const estimate = this.hls.bandwidthEstimate;
    this.now.innerHTML = '';
    const strong = document.createElement('strong');
    strong.textContent = name;
    const tag = document.createElement('span');
    tag.className = 'mode';
    tag.textContent = mode;
    this.now.append('Now playing ', strong, ` · ${codecLabel(level.audioCodec || level.codecSet)} · ${kbps(level.bitrate)} peak`,
      // Until a fragment was measured, hls.js reports its configured default: not worth showing.
      estimate > 0 && estimate !== this.hls.config.abrEwmaDefaultEstimate ? ` · network ≈ ${(estimate / 1e6).toFixed(1)} Mb/s` : '',
      ` · ${this.gainLine()}`, tag);
    for (const row of this.card.querySelectorAll('tbody tr')) row.classList.toggle('playing', row.dataset.rung === name);
  }

  onError(d) {
    window.tonearmDemo.errors.push({ asset: this.asset.id, fatal: d.fatal, type: d.type, details: d.details });
    if (!d.fatal) return;
    if (d.type === Hls.ErrorTypes.NETWORK_ERROR) {
      this.hls.startLoad();
    } else if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
      this.hls.recoverMediaError();
    } else {
      this.now.textContent = `Playback failed: ${d.details}`;
      this.hls.destroy();
      this.hls = null;
    }
  }
}

function card(asset) {
  const node = document.getElementById('asset-card').content.firstElementChild.cloneNode(true);
  node.dataset.assetId = asset.id;
  $(node, '.title').textContent = asset.title || asset.source_name || asset.id.slice(0, 12);
  $(node, '.artist').textContent = asset.artist || 'Unknown artist';
  $(node, '.duration').textContent = duration(asset.duration_s);
  $(node, '.loudness').textContent = loudness(asset.loudness);
  // .gain is written by the player (renderGain), which knows whether normalisation is on
  const rate = asset.sample_rate ? `${(asset.sample_rate / 1000).toLocaleString('en')} kHz` : '';
  $(node, '.master').textContent = [String(asset.codec || '').toUpperCase(), rate, asset.channels && `${asset.channels} ch`].filter(Boolean).join(' · ');
  const body = $(node, 'tbody');
  const select = $(node, 'select.rung');
  for (const r of asset.renditions || []) {
    const row = document.createElement('tr');
    row.dataset.rung = r.name;
    for (const [cls, text] of [['name', r.name], ['codec', codecLabel(r.codecs)], ['nominal', kbps(r.nominal_bitrate)],
      ['peak', peak(r.bandwidth)], ['channels', r.channels === 1 ? 'mono' : r.channels === 2 ? 'stereo' : `${r.channels} ch`]]) {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = text;
      row.append(td);
    }
    body.append(row);
    const opt = document.createElement('option');
    opt.value = r.name;
    opt.dataset.label = `${r.name} (${codecLabel(r.codecs)}, ${kbps(r.nominal_bitrate)})`;
    opt.textContent = opt.dataset.label;
    select.append(opt);
  }
  const links = $(node, '.links');
  const pb = asset.playback || {};
  for (const [label, url] of [['HLS', pb.segmented && pb.segmented.hls], ['DASH', pb.segmented && pb.segmented.dash],
    ['HLS single-file', pb.single && pb.single.hls], ['DASH single-file', pb.single && pb.single.dash]]) {
    if (!url) continue;
    const a = document.createElement('a');
    a.href = url;
    a.textContent = label;
    links.append(a);
  }
  return node;
}

/** What the catalog shows: the search, the page, and the last answer. */
const view = { q: '', offset: 0, per: PAGE, total: 0, seq: 0, abort: null };

function readLocation() {
  const params = new URLSearchParams(location.search);
  view.q = (params.get('q') || '').slice(0, MAX_QUERY);
  view.offset = Math.max(0, parseInt(params.get('offset'), 10) || 0);
  const per = parseInt(params.get('per'), 10);
  view.per = per >= 1 && per <= 100 ? per : PAGE;
}

function writeLocation() {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of [['q', view.q], ['offset', view.offset ? String(view.offset) : '']]) {
    if (value) params.set(key, value); else params.delete(key);
  }
  const qs = params.toString();
  history.replaceState(null, '', `${location.pathname}${qs ? `?${qs}` : ''}`);
}

function status(root, text, error) {
  const p = document.createElement('p');
  p.className = error ? 'status error' : 'status';
  p.textContent = text;
  root.replaceChildren(p);
}

/** Show the page of the catalog at view.offset for view.q. A newer call supersedes an older one. */
async function showPage() {
  const root = document.getElementById('assets');
  const seq = ++view.seq;
  if (view.abort) view.abort.abort();
  const abort = new AbortController();
  view.abort = abort;
  root.setAttribute('aria-busy', 'true');
  try {
    const query = new URLSearchParams({ limit: String(view.per), offset: String(view.offset) });
    if (view.q) query.set('q', view.q);
    const page = await getJSON(`/api/assets?${query}`, abort.signal);
    if (page.total > 0 && view.offset >= page.total) { // past the end (an old link): the last page
      view.offset = Math.floor((page.total - 1) / view.per) * view.per;
      return showPage();
    }
    // The summaries carry loudness and the ladder; the master's format is in the detail.
    const assets = await Promise.all(page.items.map((a) => getJSON(`/api/assets/${a.id}`, abort.signal)
      .then((d) => ({ ...a, ...d })).catch(() => a)));
    if (seq !== view.seq) return;
    view.total = page.total;
    render(root, assets);
  } catch (e) {
    if (seq !== view.seq) return;
    view.total = 0;
    for (const p of players.values()) p.destroy();
    players.clear();
    status(root, `Could not load the catalog: ${e.message}`, true);
  }
  root.removeAttribute('aria-busy');
  root.dataset.q = view.q;
  root.dataset.offset = String(view.offset);
  root.dataset.total = String(view.total);
  root.dataset.seq = String(seq);
  pager();
  writeLocation();
  document.body.dataset.ready = 'true';
}

function render(root, assets) {
  // A player that is playing and still on the page keeps playing; every other one is let go.
  const keep = new Map();
  for (const [id, p] of players) {
    if (!p.audio.paused && assets.some((a) => a.id === id)) keep.set(id, p); else p.destroy();
  }
  players.clear();
  if (!assets.length) {
    status(root, view.q ? `Nothing matches “${view.q}”.`
      : 'Nothing is published yet: tonearm ingest FILE adds a master.');
    return;
  }
  const nodes = [];
  for (const asset of assets) {
    let player = keep.get(asset.id);
    if (!player) {
      player = new AssetPlayer(card(asset), asset);
      player.renderGain();
    }
    players.set(asset.id, player);
    nodes.push(player.card);
  }
  root.replaceChildren(...nodes);
  const targets = new Set([...players.values()].map((p) => p.norm.target));
  if (targets.size === 1) document.querySelector('.switch .target').textContent = `to ${lufs([...targets][0])}`;
  showLevel();
}

function pager() {
  const nav = document.querySelector('nav.pager');
  const shown = players.size;
  nav.hidden = view.total === 0;
  document.getElementById('prev').disabled = view.offset === 0;
  document.getElementById('next').disabled = view.offset + view.per >= view.total;
  const n = (x) => x.toLocaleString('en');
  document.getElementById('range').textContent = shown
    ? `${n(view.offset + 1)}–${n(view.offset + shown)} of ${n(view.total)}${view.q ? ' found' : ''}` : '';
}

function main() {
  readLocation();
  try { sound.normalise = localStorage.getItem(NORMALISE_KEY) !== 'off'; } catch (e) { /* default: on */ }
  document.body.dataset.normalise = sound.normalise ? 'on' : 'off';
  const toggle = document.getElementById('normalise');
  toggle.checked = sound.normalise;
  toggle.addEventListener('change', () => setNormalise(toggle.checked));

  const search = document.getElementById('search');
  search.value = view.q;
  let timer = null;
  const run = () => {
    clearTimeout(timer);
    const q = search.value.trim().slice(0, MAX_QUERY);
    if (q === view.q) return;
    view.q = q;
    view.offset = 0;
    showPage();
  };
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(run, SEARCH_DELAY_MS); });
  document.getElementById('search-form').addEventListener('submit', (e) => { e.preventDefault(); run(); });
  document.getElementById('prev').addEventListener('click', () => {
    view.offset = Math.max(0, view.offset - view.per);
    showPage();
  });
  document.getElementById('next').addEventListener('click', () => {
    view.offset += view.per;
    showPage();
  });
  showPage();
}

main();
