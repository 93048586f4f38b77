// TURN on the page (src/ice.js + RoomClient): the join-room ack's iceServers reach both transports,
// ?relay=1 / the operator's iceTransportPolicy "relay" set relay-only, relay without TURN fails the
// join clearly, and without TURN nothing changes. Real browser + coturn: tests/browser/test_turn.py.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Device, FakeHandler, testFakeParameters } from 'mediasoup-client';
import { RoomClient } from '../src/roomClient.js';
import { Signaling } from '../src/signaling.js';
import { iceOptions } from '../src/ice.js';

const TURN = [{ urls: ['turn:turn.example.org:3478?transport=udp'], username: '1700000000:me', credential: 'c2VjcmV0' }];

/** A socket that answers the join flow; `joinExtras` is merged into the join-room ack. */
function fakeSocket(joinExtras, calls) {
  const handlers = new Map();
  const fire = (event, ...args) => { for (const fn of handlers.get(event) || []) fn(...args); };
  const socket = {
    connected: false,
    on(event, fn) { if (!handlers.has(event)) handlers.set(event, new Set()); handlers.get(event).add(fn); },
    off(event, fn) { handlers.get(event)?.delete(fn); },
    connect() { setTimeout(() => { socket.connected = true; fire('connect'); }); },
    disconnect() { if (socket.connected) { socket.connected = false; fire('disconnect', 'io client disconnect'); } },
    emit(event, payload, ack) {
      calls.push(event);
      const ok = (data) => setTimeout(() => ack({ ok: true, data }));
      if (event === 'join-room') {
        ok({ participantId: 'me', roomId: payload.roomId, participants: [], producers: [],
          rtpCapabilities: testFakeParameters.generateRouterRtpCapabilities(), recommendAudioOnly: false, ...joinExtras });
      } else if (event === 'create-transport') {
        ok({ ...testFakeParameters.generateTransportRemoteParameters(), direction: payload.direction });
      } else ok({});
    },
  };
  return socket;
}

async function joinWith(joinExtras, { forceRelay = false } = {}) {
  const calls = [];
  const seen = []; // the options each createSendTransport / createRecvTransport got
  const client = new RoomClient({
    connect: () => new Signaling(fakeSocket(joinExtras, calls), { timeoutMs: 2000 }),
    createDevice: () => {
      const device = new Device({ handlerFactory: FakeHandler.createFactory(testFakeParameters) });
      for (const name of ['createSendTransport', 'createRecvTransport']) {
        const original = device[name].bind(device);
        device[name] = (options) => { seen.push({ name, options }); return original(options); };
      }
      return device;
    },
    forceRelay,
  });
  const joined = client.join({ roomId: 'r1', displayName: 'Ann', token: 't', publish: false });
  return { client, calls, seen, joined };
}

test('without TURN: transports get no iceServers and no policy (nothing changes)', async () => {
  const { client, seen, joined } = await joinWith({});
  await joined;
  assert.equal(seen.length, 2);
  for (const { options } of seen) {
    assert.equal('iceServers' in options, false);
    assert.equal('iceTransportPolicy' in options, false);
  }
  assert.deepEqual([client.snapshot().transports.iceTransportPolicy, client.snapshot().transports.turn], ['all', false]);
  await client.leave();
});

test('iceServers of the join-room ack reach both transports; policy stays "all"', async () => {
  const { client, seen, joined } = await joinWith({ iceServers: TURN });
  await joined;
  assert.deepEqual(seen.map((s) => s.name).sort(), ['createRecvTransport', 'createSendTransport']);
  for (const { options } of seen) {
    assert.deepEqual(options.iceServers, TURN);
    assert.equal('iceTransportPolicy' in options, false);
  }
  assert.equal(client.snapshot().transports.turn, true);
  await client.leave();
});

test('?relay=1 (forceRelay) and the operator setting make both transports relay-only', async () => {
  for (const [extras, forceRelay] of [[{ iceServers: TURN }, true], [{ iceServers: TURN, iceTransportPolicy: 'relay' }, false]]) {
    const { client, seen, joined } = await joinWith(extras, { forceRelay });
    await joined;
    for (const { options } of seen) {
      assert.equal(options.iceTransportPolicy, 'relay');
      assert.deepEqual(options.iceServers, TURN);
    }
    assert.equal(client.snapshot().transports.iceTransportPolicy, 'relay');
    await client.leave();
  }
});

test('relay-only without a TURN server fails the join with turn-unavailable before any transport', async () => {
  const { client, calls, joined } = await joinWith({}, { forceRelay: true });
  await assert.rejects(joined, (err) => err.code === 'turn-unavailable' && /TURN/.test(err.message));
  assert.deepEqual(calls, ['join-room']);
  assert.equal(client.joined, false);
  assert.throws(() => iceOptions({ iceServers: [], iceTransportPolicy: 'relay' }), (err) => err.code === 'turn-unavailable');
});
