// Entry point: wires the lobby, the RoomClient and the UI; exposes window.studyrooms for tests.

import { Device, version as mediasoupClientVersion } from 'mediasoup-client';
import { io } from 'socket.io-client';
import { Signaling } from './signaling.js';
import { RoomClient } from './roomClient.js';
import { Layout } from './layout.js';
import { fetchRooms, fetchToken, tokenHints } from './api.js';
import { showMessage, clearMessages, setStatus, renderRooms, renderRoom, clearRoom, showView } from './ui.js';

const ROOM_POLL_MS = 3000;
// The server's rule for room ids (studyrooms/protocol/common.py ID_PATTERN), in words for people.
const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const ROOM_ID_RULE = "A room name uses 1-64 letters, digits, '-' or '_' (no spaces or dots), e.g. maths-101.";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const urlToken = params.get('token');

const client = new RoomClient({
  connect: (token) => new Signaling(io(window.location.origin, {
    // resume: true asks the server to keep our participant (and its media) for a while when the
    // socket drops; RoomClient adds the join ack's resumeKey, sent again on every reconnection
    auth: { token, resume: true },
    transports: ['websocket', 'polling'],
    // A lost connection (server restarting, network blip) is retried by socket.io; the client then
    // joins the room again with the same token and resumes its session (RoomClient heals). After the last attempt the page
    // says the server is lost and offers Rejoin.
    reconnection: true,
    reconnectionAttempts: 20,
    reconnectionDelay: 300,
    reconnectionDelayMax: 2000,
  })),
  createDevice: () => new Device(),
  forceRelay: params.get('relay') === '1', // media only through TURN (docs/deployment.md)
});

// Closing or leaving the page closes the socket on purpose: the server takes it as leaving the room
// (a dropped connection instead keeps our participant for a moment, to resume: docs/protocol.md).
window.addEventListener('pagehide', () => {
  if (!client.signaling) return;
  if (client.joined) client.signaling.socket.emit('leave-room', {}); // sent before the close below
  client.signaling.close();
});

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    $('reconnecting').hidden = !(client.joined && client.reconnecting);
    if (client.joined) renderRoom(client);
  });
}

client.on('change', scheduleRender);
const layout = new Layout(client, { grid: $('grid') }); // after the render: places the rendered tiles
client.on('error', ({ code, message }) => showMessage({ code, message }));
client.on('notice', ({ code, message }) => showMessage({ code, message, level: 'info' }));
client.on('recommend-audio-only', ({ participantCount, threshold }) => {
  const who = participantCount ? `${participantCount} people are here` : 'This room is busy';
  $('banner-text').textContent = `${who}${threshold ? ` (more than ${threshold})` : ''}. ` +
    'Switching off incoming video keeps the audio smooth for everyone.';
  $('banner').hidden = false;
});
client.on('disconnected', ({ reason }) => {
  const last = lastJoin;
  showMessage({
    code: 'connection-lost',
    message: `The connection to the server was lost (${reason}). You have left the room.`,
    actions: last ? [{ label: 'Rejoin', onClick: () => joinRoom(last.roomId, last.displayName) }] : [],
  });
  toLobby();
});
client.on('reconnecting', scheduleRender);

let lastJoin = null;

function toLobby() {
  clearRoom();
  showView('lobby');
  setStatus('Not connected');
  $('join-button').disabled = false;
  pollRooms();
}

async function joinRoom(roomId, displayName) {
  clearMessages(['room-full', 'connection-lost', 'unauthorized', 'token-required', 'timeout']);
  lastJoin = { roomId, displayName };
  $('join-button').disabled = true;
  setStatus(`Joining ${roomId}…`);
  try {
    const token = urlToken || await fetchToken(roomId, displayName);
    // A token's name is the display name the others see (SECURITY.md): show the same one here.
    if (urlToken && hints.name) displayName = hints.name;
    const joining = client.join({ roomId, displayName, token });
    // Show the room as soon as the server has accepted us; publishing continues in the background.
    let off = () => {};
    const shown = new Promise((resolve) => { off = client.on('change', () => { if (client.joined) resolve(); }); });
    try { await Promise.race([joining, shown]); } finally { off(); }
    if (client.joined) {
      showView('room');
      setStatus(`In room ${client.roomId} as ${displayName}`);
      renderRoom(client);
      $('btn-leave').focus();
    }
    await joining;
  } catch (err) {
    showMessage({ code: err.code || err.name || 'error', message: err.message || String(err) });
    if (!client.joined) toLobby();
  } finally {
    $('join-button').disabled = client.joined;
  }
}

async function leaveRoom() {
  await client.leave();
  toLobby();
}

// ---------------------------------------------------------------- lobby

let pollTimer = null;
let pollRound = 0; // a newer call supersedes one still waiting for its answer: one loop at a time
// Polls while the lobby is shown (after a lost connection too: toLobby() restarts it).
async function pollRooms() {
  clearTimeout(pollTimer);
  const round = ++pollRound;
  if (document.body.dataset.view !== 'lobby') return;
  try {
    const rooms = await fetchRooms();
    if (round !== pollRound) return;
    renderRooms(rooms, pickRoom);
    clearMessages(['rooms-unavailable']);
  } catch (err) {
    if (round !== pollRound) return;
    showMessage({ code: 'rooms-unavailable', message: `Could not load the room list: ${err.message}`, level: 'info' });
  }
  pollTimer = setTimeout(pollRooms, ROOM_POLL_MS);
}

function pickRoom(roomId) {
  $('room-id').value = roomId;
  checkRoomId();
  const form = $('join-form');
  if (form.reportValidity()) form.requestSubmit();
}

/** The browser's own validation bubble, with the rule in words. */
function checkRoomId() {
  const input = $('room-id');
  const value = input.value.trim();
  input.setCustomValidity(value && !ROOM_ID.test(value) ? ROOM_ID_RULE : '');
  return !value || ROOM_ID.test(value);
}
$('room-id').addEventListener('input', checkRoomId);

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const displayName = $('display-name').value.trim();
  const roomId = $('room-id').value.trim();
  if (!displayName || !roomId) return;
  if (!checkRoomId()) {
    showMessage({ code: 'invalid-room', message: ROOM_ID_RULE });
    $('join-form').reportValidity();
    return;
  }
  clearMessages(['invalid-room']);
  try { localStorage.setItem('studyrooms.displayName', displayName); } catch { /* private mode */ }
  joinRoom(roomId, displayName);
});

// ---------------------------------------------------------------- controls

function guarded(fn) {
  return async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try { await fn(); } catch (err) { showMessage({ code: err.code || 'error', message: err.message || String(err) }); }
    finally { button.disabled = false; scheduleRender(); }
  };
}

$('btn-mic').addEventListener('click', guarded(() => client.toggleMic()));
$('btn-camera').addEventListener('click', guarded(() => client.toggleCamera()));
$('btn-screen').addEventListener('click', guarded(() => (client.producers.screen ? client.stopScreenShare() : client.startScreenShare())));
$('btn-incoming-video').addEventListener('click', guarded(() => client.setIncomingVideo(!client.incomingVideo)));
$('banner-video-off').addEventListener('click', guarded(() => client.setIncomingVideo(!client.incomingVideo)));
$('banner-dismiss').addEventListener('click', () => { $('banner').hidden = true; });
$('btn-leave').addEventListener('click', guarded(leaveRoom));
$('enable-sound').addEventListener('click', () => {
  for (const audio of document.querySelectorAll('#grid audio')) audio.play().catch(() => {});
  $('sound-blocked').hidden = true;
});
window.addEventListener('pagehide', () => { if (client.joined) client.leave(); });

// ---------------------------------------------------------------- start

const hints = urlToken ? tokenHints(urlToken) : { room: null, name: null };
let savedName = '';
try { savedName = localStorage.getItem('studyrooms.displayName') || ''; } catch { /* private mode */ }
$('display-name').value = params.get('name') || hints.name || savedName;
$('room-id').value = params.get('room') || hints.room || '';
showView('lobby');
pollRooms();

// Debug and test hooks (read-only views plus the same actions the buttons use).
window.studyrooms = {
  versions: { mediasoupClient: mediasoupClientVersion },
  client,
  layout,
  get state() { return client.snapshot(); },
  stats: () => client.stats(),
  sendStats: () => client.sendStats(),
  icePaths: () => client.icePaths(),
  join: (roomId, displayName) => joinRoom(roomId, displayName),
  leave: () => leaveRoom(),
  toggleMic: () => client.toggleMic(),
  toggleCamera: () => client.toggleCamera(),
  shareScreen: (track) => client.startScreenShare(track || null),
  stopScreenShare: () => client.stopScreenShare(),
  setIncomingVideo: (on) => client.setIncomingVideo(on),
  messages: () => [...document.querySelectorAll('#messages .message')].map((m) => ({
    code: m.dataset.code, text: m.textContent.replace(/\s+/g, ' ').trim(),
  })),
};
