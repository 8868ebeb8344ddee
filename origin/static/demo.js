/* tonearm demo page: lists the published assets (/api/assets, then /api/assets/<id> for loudness
 * and ladder) and plays each one with hls.js over Media Source Extensions, or natively where the
 * browser plays HLS itself (Safari). The listener can pin a rendition or leave it on automatic;
 * the line under the player says what is being heard and at which bit rate.
 *
 * hls.js 1.7.4 cannot switch an existing SourceBuffer from Opus back to AAC (it never calls
 * changeType; see tests/test_players_matrix.py), so a pick that changes the codec family rebuilds
 * the player at the current position instead of switching in place.
 */
'use strict';

const PAGE = 50;
const CODEC_NAMES = { mp4a: 'AAC', opus: 'Opus', flac: 'FLAC', alac: 'ALAC', 'ec-3': 'E-AC-3', 'ac-3': 'AC-3' };
const players = new Map(); // asset id -> AssetPlayer
window.tonearmDemo = { players, errors: [] }; // for people poking around, and for the browser test

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

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' } });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

/** Every published asset, page by page (the API caps a page). */
async function listAssets() {
  const items = [];
  for (let offset = 0; ; offset += PAGE) {
    const page = await getJSON(`/api/assets?limit=${PAGE}&offset=${offset}`);
    items.push(...page.items);
    if (!page.items.length || items.length >= page.total) return items;
  }
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
    this.hls = null;
    this.wanted = 'auto';
    this.autoFamily = null; // the codec family hls.js's ABR settled on when left on automatic
    this.select.addEventListener('change', () => this.pick(this.select.value));
    this.audio.addEventListener('play', () => this.onPlay());
    this.audio.addEventListener('pause', () => card.classList.remove('active'));
    // The player is made on the first click: a page of assets must not open a MediaSource (and an
    // hls.js worker) per asset before anyone listens.
    this.button = $(card, 'button.start');
    this.button.addEventListener('click', () => this.start());
  }

  start() {
    this.button.hidden = true;
    this.audio.hidden = false;
    this.attach(-1, undefined);
    this.audio.play().catch(() => {});
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
      row.querySelector('.peak').textContent = level ? kbps(level.bitrate) : '—';
    }
    if (this.pendingLevel === undefined) this.pendingLevel = this.wanted === 'auto' ? null : this.levelIndex(this.wanted);
    if (this.pendingLevel != null && this.pendingLevel >= 0) this.hls.loadLevel = this.pendingLevel;
    if (this.loadAt !== undefined) this.startLoad();
  }

  onPlay() {
    for (const other of players.values()) if (other !== this) other.audio.pause();
    this.card.classList.add('active');
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
      estimate > 0 && estimate !== this.hls.config.abrEwmaDefaultEstimate ? ` · network ≈ ${(estimate / 1e6).toFixed(1)} Mb/s` : '', tag);
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
  const rate = asset.sample_rate ? `${(asset.sample_rate / 1000).toLocaleString('en')} kHz` : '';
  $(node, '.master').textContent = [String(asset.codec || '').toUpperCase(), rate, asset.channels && `${asset.channels} ch`].filter(Boolean).join(' · ');
  const body = $(node, 'tbody');
  const select = $(node, 'select.rung');
  for (const r of asset.renditions || []) {
    const row = document.createElement('tr');
    row.dataset.rung = r.name;
    for (const [cls, text] of [['name', r.name], ['codec', codecLabel(r.codecs)], ['nominal', kbps(r.nominal_bitrate)],
      ['peak', '—'], ['channels', r.channels === 1 ? 'mono' : r.channels === 2 ? 'stereo' : `${r.channels} ch`]]) {
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

async function main() {
  const root = document.getElementById('assets');
  try {
    const summaries = await listAssets();
    const details = await Promise.all(summaries.map((a) => getJSON(`/api/assets/${a.id}`).catch(() => a)));
    root.innerHTML = '';
    if (!details.length) {
      root.innerHTML = '<p class="status">Nothing is published yet: <code>tonearm ingest FILE</code> adds a master.</p>';
      return;
    }
    for (const asset of details) {
      const node = card(asset);
      root.append(node);
      players.set(asset.id, new AssetPlayer(node, asset));
    }
  } catch (e) {
    root.innerHTML = '';
    const p = document.createElement('p');
    p.className = 'status error';
    p.textContent = `Could not load the catalog: ${e.message}`;
    root.append(p);
  }
  document.body.dataset.ready = 'true';
}

main();
