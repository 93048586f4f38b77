// HTTP side of the protocol: GET /api/rooms, POST /api/token (development mode).

import { RequestError } from './signaling.js';

async function readError(response, what) {
  let code = `http-${response.status}`;
  let message = `${what} failed (HTTP ${response.status})`;
  try {
    const body = await response.json();
    const error = body && (body.error || body);
    if (error && typeof error === 'object') {
      if (error.code) code = error.code;
      if (error.message) message = error.message;
    }
  } catch { /* not JSON */ }
  return new RequestError(code, message);
}

/** -> [{roomId, participantCount, capacity?, ...}] */
export async function fetchRooms(fetchImpl = fetch) {
  const response = await fetchImpl('/api/rooms', { headers: { accept: 'application/json' }, cache: 'no-store' });
  if (!response.ok) throw await readError(response, 'listing rooms');
  const body = await response.json();
  return Array.isArray(body.rooms) ? body.rooms : [];
}

/** Development mode only: the server issues a token for {roomId, displayName}; 403 when it has a secret. */
export async function fetchToken(roomId, displayName, fetchImpl = fetch) {
  const response = await fetchImpl('/api/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ roomId, displayName }),
  });
  if (response.status === 403) {
    throw new RequestError('token-required',
      'This server requires an invitation link: open the link (with ?token=...) you were given.');
  }
  if (!response.ok) throw await readError(response, 'getting a token');
  const body = await response.json();
  if (!body.token) throw new RequestError('internal', 'the server returned no token');
  return body.token;
}

/** Best effort: the room and name a JWT was issued for (unverified; only to prefill the form). */
export function tokenHints(token) {
  try {
    const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    const room = payload.roomId || payload.room || (Array.isArray(payload.rooms) ? payload.rooms[0] : null);
    return { room: typeof room === 'string' ? room : null, name: typeof payload.name === 'string' ? payload.name : null };
  } catch {
    return { room: null, name: null };
  }
}
