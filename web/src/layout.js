// The large-room layout (up to 50 people): a stage (pinned person, else a shared screen, else the
// active speaker), a grid of the videos the server forwards to us (last-N), and everyone else as
// compact avatar tiles with name, muted and speaking indicators. Click a tile to pin it on stage.
//
// The layout only places the tiles ui.js renders (data-place="stage" | "grid" | "avatar" on each
// .tile, styled in style.css) and sends the server our receive constraints (protocol.md
// "set-receive-constraints"): lastN from the number of video tiles that fit on screen (or the
// user's choice), onStage from the pin, maxHeight from the thumbnail size. The server answers with
// "forwarding-changed" {video, onStage}: the participants whose video we get; the rest are avatars.

const HEIGHT_STEPS = [180, 360, 720]; // common simulcast layer heights
const MIN_TILE_WIDTH = 220; // px, as in style.css for the large layout
const MAX_AUTO_LAST_N = 25;
const SEND_DEBOUNCE_MS = 200;

/** The receive constraints for what is visible (pure: unit-tested in web/test/layout.test.js). */
export function constraintsFor({ audioOnly, lastN = null, pinned = null, width = 1280, height = 720, dpr = 1, small = false }) {
  const cols = Math.max(1, Math.floor(width / MIN_TILE_WIDTH));
  const tileW = width / cols;
  const tileH = (tileW * 9) / 16;
  const rows = Math.max(1, Math.floor((height * 0.6) / tileH)); // the grid's share of the viewport
  const fit = Math.min(MAX_AUTO_LAST_N, cols * rows);
  const n = audioOnly ? 0 : (Number.isInteger(lastN) && lastN >= 0 ? lastN : fit);
  const wantHeight = Math.ceil(tileH * dpr);
  const maxHeight = HEIGHT_STEPS.find((h) => h >= wantHeight) || HEIGHT_STEPS[HEIGHT_STEPS.length - 1];
  // the small layout (under 6 people) shows every video large: no thumbnail cap (bandwidth decides)
  return { lastN: n, onStage: pinned ? [pinned] : [], maxHeight: small ? null : maxHeight };
}

/**
 * Where each remote participant goes (pure). `forwarded`: participant ids whose video the server
 * sends us (null: the server never said, so everything with video); `speaker`: the active speaker.
 */
export function placeTiles({ tiles, forwarded, pinned, speaker, audioOnly }) {
  const fwd = forwarded ? new Set(forwarded) : null;
  const present = new Set(tiles.map((t) => t.participantId));
  const hasVideo = (t) => t.hasVideo && !t.cameraOff && !audioOnly && (!fwd || fwd.has(t.participantId));
  const cameras = tiles.filter((t) => t.kind === 'camera');
  const screens = tiles.filter((t) => t.kind === 'screen' && !audioOnly && (!fwd || fwd.has(t.participantId)));
  let stage = null;
  if (pinned && present.has(pinned)) stage = { kind: 'camera', participantId: pinned };
  else if (screens.length) stage = { kind: 'screen', producerId: screens[0].producerId };
  else if (speaker && cameras.length > 2 && cameras.some((t) => t.participantId === speaker && hasVideo(t))) {
    stage = { kind: 'camera', participantId: speaker };
  }
  const places = new Map(); // tile key -> place
  for (const t of tiles) {
    const key = t.kind === 'screen' ? `screen:${t.producerId}` : `p:${t.participantId}`;
    const onStage = stage && (stage.kind === t.kind) &&
      (t.kind === 'screen' ? stage.producerId === t.producerId : stage.participantId === t.participantId);
    if (onStage) places.set(key, 'stage');
    else if (t.kind === 'screen') places.set(key, fwd && !fwd.has(t.participantId) ? 'avatar' : 'grid');
    else places.set(key, hasVideo(t) ? 'grid' : 'avatar');
  }
  return { stage, places };
}

export class Layout {
  constructor(client, { grid, win = window } = {}) {
    this.client = client;
    this.grid = grid;
    this.win = win;
    this.pinned = null;
    this.lastN = null; // the user's choice; null: as many as fit
    const fromUrl = new URLSearchParams(win.location.search).get('lastN');
    if (fromUrl !== null && /^\d+$/.test(fromUrl)) this.lastN = Number(fromUrl);
    this.sent = null; // JSON of the constraints the server has
    this.sentFor = null; // participantId they were sent for (a rejoin starts over)
    this._timer = null;
    this._queued = false;
    client.on('change', () => this.schedule());
    win.addEventListener('resize', () => this.schedule());
    grid.addEventListener('click', (event) => {
      const tile = event.target.closest('.tile');
      if (!tile || tile.dataset.self === 'true' || !tile.dataset.participantId) return;
      this.pin(this.pinned === tile.dataset.participantId ? null : tile.dataset.participantId);
    });
  }

  /** Pin a participant on stage (null: unpin). */
  pin(participantId) {
    this.pinned = participantId || null;
    this.schedule();
  }

  /** How many videos we want (null: as many as fit on screen). */
  setLastN(n) {
    this.lastN = Number.isInteger(n) && n >= 0 ? n : null;
    this.schedule();
  }

  schedule() {
    if (this._queued) return;
    this._queued = true;
    queueMicrotask(() => { this._queued = false; this.apply(); });
  }

  /** A JSON-able picture for tests and debugging. */
  get state() {
    const places = {};
    for (const tile of this.grid.querySelectorAll('.tile')) places[tile.dataset.key] = tile.dataset.place || null;
    return { pinned: this.pinned, lastN: this.lastN, forwarding: this.client.forwarding || null,
      constraints: this.sent ? JSON.parse(this.sent) : null, places };
  }

  apply() {
    const client = this.client;
    if (!client.joined) { this.sent = null; return; }
    const snap = client.snapshot();
    if (this.pinned && !snap.participants.some((p) => p.participantId === this.pinned)) this.pinned = null;
    const audioOnly = !snap.incomingVideo;
    const forwarded = client.forwarding ? client.forwarding.video : null;
    const { places } = placeTiles({ tiles: snap.tiles, forwarded, pinned: this.pinned, speaker: client.activeSpeaker, audioOnly });
    this.grid.dataset.layout = snap.participants.length >= 6 ? 'large' : 'small';
    for (const tile of this.grid.querySelectorAll('.tile')) {
      const place = tile.dataset.self === 'true' ? 'grid' : places.get(tile.dataset.key) || 'grid';
      if (tile.dataset.place !== place) tile.dataset.place = place;
      tile.classList.toggle('tile--pinned', Boolean(this.pinned) && tile.dataset.participantId === this.pinned && tile.dataset.kind === 'camera');
      tile.title = tile.dataset.self === 'true' ? '' : (this.pinned === tile.dataset.participantId ? 'Click to unpin' : 'Click to pin on stage');
    }
    this._send(constraintsFor({ audioOnly, lastN: this.lastN, pinned: this.pinned, width: this.grid.clientWidth || this.win.innerWidth,
      height: this.win.innerHeight, dpr: this.win.devicePixelRatio || 1, small: this.grid.dataset.layout === 'small' }),
    snap.participantId);
  }

  _send(constraints, participantId) {
    const json = JSON.stringify(constraints);
    if (this.sentFor !== participantId) { this.sent = null; this.sentFor = participantId; }
    if (json === this.sent || !this.client.signaling) return;
    clearTimeout(this._timer);
    this._timer = setTimeout(async () => {
      if (json === this.sent || !this.client.joined) return;
      this.sent = json;
      try {
        await this.client.signaling.request('set-receive-constraints', constraints);
      } catch (err) {
        this.sent = null; // e.g. the pinned person just left: try again on the next change
        console.warn('set-receive-constraints failed', err);
      }
    }, SEND_DEBOUNCE_MS);
  }
}
