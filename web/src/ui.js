// DOM rendering: the lobby's room list, the tile grid (reconciled from RoomClient.snapshot()),
// control button states and messages. No mediasoup logic here.

const $ = (id) => document.getElementById(id);

const TITLES = {
  'room-full': 'This room is full',
  unauthorized: 'Not authorized',
  forbidden: 'Not allowed',
  'token-required': 'Invitation needed',
  'media-denied': 'Camera and microphone blocked',
  'no-device': 'Device not found',
  'connection-lost': 'Connection lost',
  'media-failed': 'Media connection failed',
  'rate-limited': 'Slow down',
  timeout: 'The server did not answer',
  'screen-cancelled': 'Screen sharing',
  'invalid-room': 'Check the room name',
  'invalid-request': 'Check what you typed',
};

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// ---------------------------------------------------------------- messages

/** Shows `{code, message}`; errors are role=alert. `actions`: [{label, onClick}]. Returns the element. */
export function showMessage({ code, message, level = 'error', actions = [] }) {
  const box = $('messages');
  for (const old of box.querySelectorAll(`.message[data-code="${CSS.escape(code)}"]`)) old.remove();
  const node = el('div', { class: `message message--${level}`, role: level === 'error' ? 'alert' : 'status', 'data-code': code },
    el('div', { class: 'message__body' },
      el('strong', { class: 'message__title', text: TITLES[code] || (level === 'error' ? 'Something went wrong' : 'Note') }),
      el('span', { class: 'message__text', text: ` ${message} ` }),
      el('code', { class: 'message__code', text: code })));
  const buttons = el('div', { class: 'message__actions' });
  for (const action of actions) {
    buttons.append(el('button', { class: 'button', type: 'button', text: action.label, onclick: () => { node.remove(); action.onClick(); } }));
  }
  buttons.append(el('button', { class: 'button button--ghost', type: 'button', 'aria-label': 'Dismiss message', text: 'Dismiss', onclick: () => node.remove() }));
  node.append(buttons);
  box.append(node);
  return node;
}

export function clearMessages(codes = null) {
  for (const node of $('messages').querySelectorAll('.message')) {
    if (!codes || codes.includes(node.dataset.code)) node.remove();
  }
}

export function setStatus(text) { $('status').textContent = text; }

// ---------------------------------------------------------------- lobby

export function renderRooms(rooms, onPick) {
  const list = $('room-list');
  list.replaceChildren();
  $('rooms-empty').hidden = rooms.length > 0;
  for (const room of [...rooms].sort((a, b) => String(a.roomId).localeCompare(String(b.roomId)))) {
    const count = room.participantCount ?? 0;
    const capacity = room.capacity ?? null;
    const full = capacity !== null && count >= capacity;
    const occupancy = capacity !== null ? `${count} / ${capacity}` : `${count}`;
    list.append(el('li', { class: 'room-card', 'data-room-id': room.roomId },
      el('span', { class: 'room-card__name', text: room.roomId }),
      el('span', { class: 'room-card__count', 'aria-label': `${count} ${count === 1 ? 'person' : 'people'}${capacity !== null ? ` of ${capacity}` : ''}`,
        text: `${occupancy} ${count === 1 ? 'person' : 'people'}` }),
      el('button', { class: 'button', type: 'button', disabled: full, text: full ? 'Full' : 'Join',
        'aria-label': `Join room ${room.roomId}`, onclick: () => onPick(room.roomId) })));
  }
}

// ---------------------------------------------------------------- room

/** "Ada Lovelace" -> "AL", "Ada" -> "A", "élodie" -> "É": the first letter or digit of the first two words. */
export function initials(name) {
  const firsts = String(name || '').trim().split(/\s+/)
    .map((word) => Array.from(word).find((ch) => /[\p{L}\p{N}]/u.test(ch)))
    .filter(Boolean);
  return firsts.slice(0, 2).join('').toUpperCase() || '?';
}

function setVideo(video, track) {
  const current = video.srcObject ? video.srcObject.getVideoTracks()[0] : null;
  if (current === (track || null)) return;
  // Until the first frame arrives the tile shows the avatar, not a black box.
  video.closest('.tile').classList.add('tile--waiting');
  video.srcObject = track ? new MediaStream([track]) : null;
  if (track) video.play().catch(() => { /* muted video autoplays; ignore interrupted play() */ });
}

function makeTile({ key, participantId, kind, self }) {
  const video = el('video', { class: 'tile__video', autoplay: true, playsinline: true, muted: true });
  video.muted = true;
  const shown = () => { if (video.videoWidth > 0) video.closest('.tile').classList.remove('tile--waiting'); };
  video.addEventListener('loadeddata', shown);
  video.addEventListener('resize', shown);
  const tile = el('article', { class: `tile tile--${kind}${self ? ' tile--self' : ''}`, 'data-key': key,
    'data-participant-id': participantId, 'data-kind': kind, 'data-self': self ? 'true' : null },
  el('div', { class: 'tile__media' }, video, el('div', { class: 'tile__avatar', 'aria-hidden': 'true' })),
  el('div', { class: 'tile__label' },
    el('span', { class: 'tile__name' }),
    el('span', { class: 'tile__badges' })),
  el('div', { class: 'tile__audio', hidden: true }));
  return tile;
}

function updateTile(tile, { name, label, videoTrack, badges, speaking, showVideo, person = name }) {
  tile.setAttribute('aria-label', label);
  tile.querySelector('.tile__name').textContent = name;
  tile.querySelector('.tile__avatar').textContent = initials(person); // the person's name, not "(you)"
  tile.classList.toggle('tile--speaking', Boolean(speaking));
  tile.classList.toggle('tile--no-video', !showVideo);
  tile.dataset.hasVideo = showVideo ? 'true' : 'false';
  setVideo(tile.querySelector('video'), videoTrack);
  const badgeBox = tile.querySelector('.tile__badges');
  badgeBox.replaceChildren(...badges.map((b) => el('span', { class: `badge badge--${b.kind}`, text: b.text })));
}

function syncAudio(tile, consumers, onBlocked) {
  const box = tile.querySelector('.tile__audio');
  const wanted = new Map(consumers.map((c) => [c.consumerId, c]));
  for (const audio of [...box.querySelectorAll('audio')]) {
    if (!wanted.has(audio.dataset.consumerId)) { audio.srcObject = null; audio.remove(); }
  }
  for (const [consumerId, c] of wanted) {
    if (box.querySelector(`audio[data-consumer-id="${CSS.escape(consumerId)}"]`)) continue;
    const audio = el('audio', { autoplay: true, 'data-consumer-id': consumerId });
    audio.srcObject = new MediaStream([c.consumer.track]);
    box.append(audio);
    audio.play().catch((err) => { if (err && err.name === 'NotAllowedError') onBlocked(); });
  }
}

/** Reconciles the grid with the client's model. */
export function renderRoom(client) {
  const snap = client.snapshot();
  $('room-name').textContent = snap.roomId || '';
  const count = snap.participants.length + (snap.joined ? 1 : 0);
  $('room-count').textContent = `${count} ${count === 1 ? 'person' : 'people'} here`;

  const grid = $('grid');
  const existing = new Map([...grid.querySelectorAll('.tile')].map((t) => [t.dataset.key, t]));
  const order = []; // camera tiles: self first, then the others in join order
  const screens = []; // shared screens go on top, full width
  const onBlocked = () => { $('sound-blocked').hidden = false; };

  if (snap.joined) {
    const key = 'self';
    const tile = existing.get(key) || makeTile({ key, participantId: snap.participantId, kind: 'camera', self: true });
    const camTrack = client.localStreams.camera ? client.localStreams.camera.getVideoTracks()[0] : null;
    const badges = [];
    if (!snap.local.mic || snap.local.mic.paused) badges.push({ kind: 'muted', text: 'Muted' });
    if (!snap.local.camera || snap.local.camera.paused) badges.push({ kind: 'off', text: 'Camera off' });
    updateTile(tile, { name: `${snap.displayName} (you)`, person: snap.displayName, label: `You, ${snap.displayName}`, videoTrack: camTrack,
      badges, speaking: snap.participantId && client.activeSpeaker === snap.participantId,
      showVideo: Boolean(camTrack) && snap.local.camera && !snap.local.camera.paused });
    order.push(tile);
    if (client.localStreams.screen) {
      const skey = 'self-screen';
      const stile = existing.get(skey) || makeTile({ key: skey, participantId: snap.participantId, kind: 'screen', self: true });
      updateTile(stile, { name: 'Your screen', person: snap.displayName, label: 'Your shared screen', videoTrack: client.localStreams.screen.getVideoTracks()[0],
        badges: [{ kind: 'screen', text: 'Sharing' }], showVideo: true });
      order.push(stile); // your own screen: a normal-size preview, not the big stage
    }
  }

  for (const t of snap.tiles) {
    const key = t.kind === 'screen' ? `screen:${t.producerId}` : `p:${t.participantId}`;
    const tile = existing.get(key) || makeTile({ key, participantId: t.participantId, kind: t.kind, self: false });
    const videoEntry = t.videoConsumerId ? client.consumers.get(t.videoConsumerId) : null;
    const videoOn = Boolean(videoEntry) && snap.incomingVideo && !(t.kind === 'camera' && t.cameraOff);
    if (t.kind === 'screen') {
      updateTile(tile, { name: `${t.displayName}'s screen`, person: t.displayName, label: `Screen shared by ${t.displayName}`,
        videoTrack: videoEntry ? videoEntry.consumer.track : null, badges: [{ kind: 'screen', text: 'Screen' }],
        showVideo: videoOn });
      screens.push(tile);
      continue;
    } else {
      const badges = [];
      if (t.micMuted) badges.push({ kind: 'muted', text: 'Muted' });
      if (t.cameraOff) badges.push({ kind: 'off', text: 'Camera off' });
      else if (!snap.incomingVideo) badges.push({ kind: 'off', text: 'Video paused' });
      updateTile(tile, { name: t.displayName, label: t.displayName, videoTrack: videoEntry ? videoEntry.consumer.track : null,
        badges, speaking: t.speaking, showVideo: videoOn });
      syncAudio(tile, t.audioConsumerIds.map((id) => client.consumers.get(id)).filter(Boolean), onBlocked);
    }
    order.push(tile);
  }

  order.unshift(...screens);
  const keep = new Set(order);
  for (const tile of existing.values()) {
    if (!keep.has(tile)) {
      for (const media of tile.querySelectorAll('video, audio')) media.srcObject = null;
      tile.remove();
    }
  }
  order.forEach((tile, i) => { if (grid.children[i] !== tile) grid.insertBefore(tile, grid.children[i] || null); });
  grid.dataset.count = String(order.length - screens.length);
  grid.dataset.screens = String(screens.length);
  fitStage();

  // Controls.
  const mic = $('btn-mic');
  const micMuted = !snap.local.mic || snap.local.mic.paused;
  mic.textContent = !snap.local.mic ? 'Start microphone' : micMuted ? 'Unmute' : 'Mute';
  mic.setAttribute('aria-pressed', String(Boolean(snap.local.mic) && micMuted));
  const cam = $('btn-camera');
  const camOff = !snap.local.camera || snap.local.camera.paused;
  cam.textContent = !snap.local.camera ? 'Start camera' : camOff ? 'Camera on' : 'Camera off';
  cam.setAttribute('aria-pressed', String(Boolean(snap.local.camera) && camOff));
  const screen = $('btn-screen');
  screen.textContent = snap.local.screen ? 'Stop sharing' : 'Share screen';
  screen.setAttribute('aria-pressed', String(Boolean(snap.local.screen)));
  const incoming = $('btn-incoming-video');
  incoming.textContent = `Incoming video: ${snap.incomingVideo ? 'on' : 'off'}`;
  incoming.setAttribute('aria-pressed', String(snap.incomingVideo));
  $('banner-video-off').textContent = snap.incomingVideo ? 'Turn off incoming video' : 'Turn incoming video back on';
}

/** A shared screen takes the height left once the camera strip fits above the fixed control bar. */
export function fitStage() {
  const grid = $('grid');
  const stage = grid.querySelector('.tile--screen:not(.tile--self)');
  if (!stage || grid.dataset.screens === '0') { grid.style.removeProperty('--stage-height'); return; }
  const barTop = window.innerHeight - $('controls').offsetHeight;
  const top = stage.getBoundingClientRect().top + window.scrollY; // page coordinates: scrolling does not matter
  const cameras = [...grid.querySelectorAll('.tile')].filter((t) => !t.matches('.tile--screen:not(.tile--self)'));
  const strip = cameras.length ? Math.max(...cameras.map((t) => t.getBoundingClientRect().bottom + window.scrollY))
    - Math.min(...cameras.map((t) => t.getBoundingClientRect().top + window.scrollY)) : 0;
  const gap = parseFloat(getComputedStyle(grid).rowGap) || 0;
  const wanted = Math.min(0.62 * window.innerHeight, 0.52 * window.innerWidth);
  const height = Math.max(180, Math.min(wanted, barTop - top - (strip ? strip + gap : 0) - 8));
  grid.style.setProperty('--stage-height', `${Math.floor(height)}px`);
}

if (typeof window !== 'undefined') { // (absent under Node's test runner)
  window.addEventListener('resize', () => { if (document.body.dataset.view === 'room') fitStage(); });
}

export function clearRoom() {
  const grid = $('grid');
  for (const media of grid.querySelectorAll('video, audio')) media.srcObject = null;
  grid.replaceChildren();
  $('banner').hidden = true;
  $('sound-blocked').hidden = true;
}

export function showView(view) {
  $('lobby').hidden = view !== 'lobby';
  $('room').hidden = view !== 'room';
  document.body.dataset.view = view;
}
