// RoomClient against a scripted fake server, with mediasoup-client's FakeHandler (no browser).
// Checks the signaling the page sends (protocol.md) and how it reacts to notifications.
// Run: npm test (node --test). The real browser test is tests/browser/test_study_room.py.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Device, FakeHandler, testFakeParameters } from 'mediasoup-client';
import { FakeMediaStreamTrack } from 'fake-mediastreamtrack';
import { RoomClient } from '../src/roomClient.js';
import { Signaling } from '../src/signaling.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

class FakeSocket {
  constructor(server) {
    this.server = server;
    this.handlers = new Map();
    this.connected = false;
    this.active = false;
  }
  on(event, fn) { if (!this.handlers.has(event)) this.handlers.set(event, new Set()); this.handlers.get(event).add(fn); }
  off(event, fn) { this.handlers.get(event)?.delete(fn); }
  fire(event, ...args) { for (const fn of [...(this.handlers.get(event) || [])]) fn(...args); }
  connect() {
    this.active = true;
    setTimeout(() => {
      if (this.server.refuse) this.fire('connect_error', Object.assign(new Error('refused'), { data: this.server.refuse }));
      else { this.connected = true; this.fire('connect'); }
    });
  }
  emit(event, payload, ack) {
    this.server.calls.push([event, payload]);
    setTimeout(() => ack(this.server.handle(event, payload)));
  }
  disconnect() { if (this.connected) { this.connected = false; this.fire('disconnect', 'io client disconnect'); } }
}

class FakeServer {
  constructor({ participants = [], producers = [], refuse = null, overrides = {} } = {}) {
    this.participants = participants;
    this.producers = producers;
    this.refuse = refuse;
    this.overrides = overrides;
    this.calls = [];
    this.n = 0;
  }
  names() { return this.calls.map(([e]) => e); }
  payloads(event) { return this.calls.filter(([e]) => e === event).map(([, p]) => p); }
  handle(event, payload) {
    if (this.overrides[event]) {
      const answer = this.overrides[event](payload);
      if (answer) return answer;
    }
    const ok = (data = {}) => ({ ok: true, data });
    switch (event) {
      case 'join-room':
        return ok({ participantId: 'me', roomId: payload.roomId, participants: [{ participantId: 'me', displayName: payload.displayName }, ...this.participants],
          producers: this.producers, rtpCapabilities: testFakeParameters.generateRouterRtpCapabilities(), recommendAudioOnly: false });
      case 'create-transport':
        return ok({ ...testFakeParameters.generateTransportRemoteParameters(), direction: payload.direction });
      case 'connect-transport': return ok({ transportId: payload.transportId });
      case 'produce': return ok({ producerId: `prod-${++this.n}` });
      case 'consume': {
        const producer = this.producers.find((p) => p.producerId === payload.producerId) || this.lastNew;
        const params = testFakeParameters.generateConsumerRemoteParameters({
          codecMimeType: producer.kind === 'audio' ? 'audio/opus' : 'video/VP8' });
        return ok({ id: `cons-${++this.n}`, producerId: payload.producerId, kind: producer.kind,
          rtpParameters: params.rtpParameters, type: 'simple', producerPaused: false });
      }
      default: return ok({});
    }
  }
}

function fakeMedia({ deny = false } = {}) {
  const make = (kinds) => {
    const tracks = kinds.map((kind) => new FakeMediaStreamTrack({ kind }));
    return { getTracks: () => tracks, getAudioTracks: () => tracks.filter((t) => t.kind === 'audio'),
      getVideoTracks: () => tracks.filter((t) => t.kind === 'video') };
  };
  return {
    async getUserMedia(c) {
      if (deny) throw Object.assign(new Error('Permission denied'), { name: 'NotAllowedError' });
      return make([...(c.audio ? ['audio'] : []), ...(c.video ? ['video'] : [])]);
    },
    async getDisplayMedia() { return make(['video']); },
  };
}

function makeClient(server, media = fakeMedia()) {
  const socket = new FakeSocket(server);
  const client = new RoomClient({
    connect: (token) => { socket.token = token; return new Signaling(socket, { timeoutMs: 2000 }); },
    createDevice: () => new Device({ handlerFactory: FakeHandler.createFactory(testFakeParameters) }),
    mediaDevices: media,
  });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  return { client, socket, errors };
}

const bob = { participantId: 'bob', displayName: 'Bob' };
const bobMic = { producerId: 'bob-mic', participantId: 'bob', kind: 'audio', source: 'mic' };
const bobCam = { producerId: 'bob-cam', participantId: 'bob', kind: 'video', source: 'camera' };

test('join: load, two transports, consume existing producers, publish mic and simulcast camera', async () => {
  const server = new FakeServer({ participants: [bob], producers: [bobMic, bobCam] });
  const { client, socket, errors } = makeClient(server);
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 'tok' });
  await tick(10);
  assert.deepEqual(errors, []);
  assert.equal(socket.token, 'tok');
  const names = server.names();
  assert.equal(names[0], 'join-room');
  assert.deepEqual(server.payloads('join-room')[0], { roomId: 'r1', displayName: 'Ann' });
  assert.deepEqual(server.payloads('create-transport').map((p) => p.direction).sort(), ['recv', 'send']);
  assert.equal(server.payloads('consume').length, 2);
  for (const p of server.payloads('consume')) assert.deepEqual(Object.keys(p).sort(), ['producerId', 'rtpCapabilities', 'transportId']);
  assert.equal(server.payloads('resume-consumer').length, 2);
  const produced = server.payloads('produce');
  assert.deepEqual(produced.map((p) => p.appData).sort((a, b) => a.source.localeCompare(b.source)), [{ source: 'camera' }, { source: 'mic' }]);
  for (const p of produced) assert.deepEqual(Object.keys(p).sort(), ['appData', 'kind', 'rtpParameters', 'transportId']);
  const cam = produced.find((p) => p.kind === 'video');
  assert.equal(cam.rtpParameters.encodings.length, 3, 'camera is simulcast with three encodings');
  assert.ok(server.payloads('connect-transport').length >= 1);
  const snap = client.snapshot();
  assert.equal(snap.joined, true);
  assert.deepEqual(snap.tiles.map((t) => [t.displayName, t.kind, t.hasVideo, t.hasAudio]), [['Bob', 'camera', true, true]]);
  assert.equal(snap.local.camera.encodings, 3);
  await client.leave();
  assert.equal(server.names().at(-1), 'leave-room');
  assert.equal(client.joined, false);
  assert.equal(socket.connected, false);
});

test('room-full: join rejects with the code and closes the socket', async () => {
  const server = new FakeServer({ overrides: { 'join-room': () => ({ ok: false, error: { code: 'room-full', message: 'room r1 is full (3)' } }) } });
  const { client, socket } = makeClient(server);
  await assert.rejects(client.join({ roomId: 'r1', displayName: 'Ann', token: 't' }), (err) => err.code === 'room-full' && /full/.test(err.message));
  assert.equal(client.joined, false);
  assert.equal(socket.connected, false);
});

test('unauthorized connect_error is reported with its code', async () => {
  const server = new FakeServer({ refuse: { code: 'unauthorized', message: 'bad token' } });
  const { client } = makeClient(server);
  await assert.rejects(client.join({ roomId: 'r1', displayName: 'Ann', token: 'x' }), (err) => err.code === 'unauthorized');
});

test('notifications: new-producer is consumed; producer-closed, consumer-closed and participant-left remove tiles', async () => {
  const server = new FakeServer();
  const { client, socket } = makeClient(server);
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't', publish: false });
  socket.fire('participant-joined', bob);
  assert.equal(client.snapshot().tiles.length, 1);
  for (const p of [bobMic, bobCam, { producerId: 'bob-screen', participantId: 'bob', kind: 'video', source: 'screen' }]) {
    server.lastNew = p;
    socket.fire('new-producer', p);
    await tick(20);
  }
  let snap = client.snapshot();
  assert.deepEqual(snap.tiles.map((t) => t.kind), ['camera', 'screen']);
  assert.equal(snap.consumers.length, 3);
  socket.fire('producer-closed', { producerId: 'bob-screen', participantId: 'bob' });
  snap = client.snapshot();
  assert.deepEqual(snap.tiles.map((t) => t.kind), ['camera']);
  const camConsumer = snap.consumers.find((c) => c.kind === 'video');
  socket.fire('consumer-paused', { consumerId: camConsumer.consumerId });
  assert.equal(client.snapshot().tiles[0].cameraOff, true);
  socket.fire('consumer-closed', { consumerId: camConsumer.consumerId, producerId: 'bob-cam' });
  assert.equal(client.snapshot().tiles[0].hasVideo, false);
  socket.fire('participant-left', bob);
  snap = client.snapshot();
  assert.equal(snap.tiles.length, 0);
  assert.equal(snap.consumers.length, 0);
  await client.leave();
});

test('mute, incoming video off/on, screen share and stop', async () => {
  const server = new FakeServer({ participants: [bob], producers: [bobMic, bobCam] });
  const { client, errors } = makeClient(server);
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  const mic = client.producers.mic;
  await client.toggleMic();
  assert.equal(mic.paused, true);
  assert.deepEqual(server.payloads('pause-producer'), [{ producerId: mic.id }]);
  await client.toggleMic();
  assert.equal(mic.paused, false);
  assert.deepEqual(server.payloads('resume-producer'), [{ producerId: mic.id }]);

  const videoConsumer = [...client.consumers.values()].find((c) => c.kind === 'video');
  await client.setIncomingVideo(false);
  assert.deepEqual(server.payloads('pause-consumer'), [{ consumerId: videoConsumer.consumerId }]);
  assert.equal(videoConsumer.consumer.paused, true);
  await client.setIncomingVideo(true);
  assert.equal(videoConsumer.consumer.paused, false);

  await client.startScreenShare();
  const screenProduce = server.payloads('produce').find((p) => p.appData.source === 'screen');
  assert.ok(screenProduce, 'screen produced with source "screen"');
  const screenId = client.producers.screen.id;
  await client.stopScreenShare();
  assert.deepEqual(server.payloads('close-producer'), [{ producerId: screenId }]);
  assert.equal(client.producers.screen, null);
  assert.deepEqual(errors, []);
  await client.leave();
});

test('a server that refuses simulcast gets one encoding', async () => {
  const server = new FakeServer({ overrides: { produce: (p) => (p.rtpParameters.encodings.length > 1
    ? { ok: false, error: { code: 'unsupported', message: 'simulcast not supported' } } : null) } });
  const { client, errors } = makeClient(server);
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  assert.ok(client.producers.camera, 'camera published');
  assert.equal(client.producers.camera.rtpParameters.encodings.length, 1);
  assert.deepEqual(errors, []);
  await client.leave();
});

test('denied camera and microphone: joined, nothing published, a media-denied error', async () => {
  const server = new FakeServer();
  const { client, errors } = makeClient(server, fakeMedia({ deny: true }));
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  assert.equal(client.joined, true);
  assert.equal(server.payloads('produce').length, 0);
  assert.deepEqual(errors.map((e) => e.code), ['media-denied']);
  await client.leave();
});

test('a connection that will not come back tears the room down and says so', async () => {
  const server = new FakeServer({ participants: [bob], producers: [bobMic] });
  const { client, socket } = makeClient(server);
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  const lost = new Promise((resolve) => client.on('disconnected', resolve));
  socket.connected = false;
  socket.active = false; // socket.io will not reconnect (e.g. the server closed the socket)
  socket.fire('disconnect', 'io server disconnect');
  assert.deepEqual(await lost, { reason: 'io server disconnect' });
  await tick(10);
  assert.equal(client.joined, false);
  assert.equal(client.consumers.size, 0);
});

test('media-reset: new transports, the same tracks published again (a muted mic stays muted), listed producers consumed', async () => {
  const server = new FakeServer({ participants: [bob], producers: [bobMic] });
  const { client, socket, errors } = makeClient(server);
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  await tick(10);
  await client.toggleMic(); // mute
  const micTrack = client.producers.mic.track;
  const oldSend = client.sendTransport.id;
  const before = server.calls.length;
  server.producers = [bobCam]; // Bob's mic was on the dead worker; his camera was not
  socket.fire('media-reset', { reason: 'media worker worker-0 died', producers: [bobCam] });
  assert.equal(client.snapshot().reconnecting, true);
  await client._healing;
  await tick(10);
  assert.deepEqual(errors, []);
  const after = server.calls.slice(before).map(([e]) => e);
  assert.equal(after.filter((e) => e === 'create-transport').length, 2);
  assert.equal(after.includes('join-room'), false, 'membership is kept: no join-room');
  assert.notEqual(client.sendTransport.id, oldSend);
  const produced = server.calls.slice(before).filter(([e]) => e === 'produce').map(([, p]) => p.appData.source).sort();
  assert.deepEqual(produced, ['camera', 'mic']);
  assert.equal(client.producers.mic.track, micTrack, 'the same microphone track');
  assert.equal(client.producers.mic.paused, true, 'a muted mic stays muted');
  assert.ok(after.includes('pause-producer'));
  assert.deepEqual(server.calls.slice(before).filter(([e]) => e === 'consume').map(([, p]) => p.producerId), ['bob-cam']);
  const snap = client.snapshot();
  assert.equal(snap.reconnecting, false);
  assert.deepEqual(snap.consumers.map((c) => c.producerId), ['bob-cam']);
  await client.leave();
});

test('room-reset and a socket reconnection: join-room again with the same socket and token, no teardown', async () => {
  const server = new FakeServer({ participants: [bob], producers: [bobMic] });
  const { client, socket, errors } = makeClient(server);
  const lost = [];
  client.on('disconnected', (e) => lost.push(e));
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  await tick(10);
  socket.fire('room-reset', { reason: 'room host restarted' });
  await client._healing;
  assert.equal(server.payloads('join-room').length, 2);
  socket.connected = false; // socket.io keeps `active` and reconnects by itself
  socket.fire('disconnect', 'transport close');
  assert.equal(client.joined, true);
  assert.equal(client.snapshot().reconnecting, true);
  socket.connected = true;
  socket.fire('connect');
  await tick(0);
  await client._healing;
  await tick(10);
  assert.equal(server.payloads('join-room').length, 3);
  assert.deepEqual(server.payloads('join-room')[2], { roomId: 'r1', displayName: 'Ann' });
  assert.deepEqual(lost, []);
  assert.deepEqual(errors, []);
  assert.equal(client.snapshot().reconnecting, false);
  assert.equal(client.snapshot().consumers.length, 1);
  await client.leave();
});

test('session resume: the key rides in the socket auth; a resumed re-join keeps transports and media and catches up', async () => {
  const server = new FakeServer({ participants: [bob], producers: [bobMic, bobCam] });
  let joins = 0;
  server.overrides['join-room'] = (payload) => {
    joins += 1;
    const base = server.handle.call({ ...server, overrides: {} }, 'join-room', payload);
    return { ok: true, data: { ...base.data, resumeKey: 'k-123', resumed: joins > 1 } };
  };
  const { client, socket, errors } = makeClient(server);
  socket.auth = { token: 't', resume: true };
  await client.join({ roomId: 'r1', displayName: 'Ann', token: 't' });
  await tick(10);
  assert.deepEqual(socket.auth, { token: 't', resume: true, resumeKey: 'k-123' });
  const [send, recv] = [client.sendTransport.id, client.recvTransport.id];
  const mic = client.producers.mic;
  const before = server.calls.length;
  // while the socket was away: Bob's camera closed, Cid joined and published a microphone
  const cid = { participantId: 'cid', displayName: 'Cid' };
  const cidMic = { producerId: 'cid-mic', participantId: 'cid', kind: 'audio', source: 'mic' };
  server.participants = [bob, cid];
  server.producers = [bobMic, cidMic];
  socket.connected = false;
  socket.fire('disconnect', 'transport close');
  socket.connected = true;
  socket.fire('connect');
  await tick(0);
  await client._healing;
  await tick(10);
  const after = server.calls.slice(before).map(([e]) => e);
  assert.deepEqual(errors, []);
  assert.equal(after.includes('create-transport'), false, 'the transports are kept');
  assert.equal(after.includes('produce'), false, 'the producers are kept');
  assert.deepEqual(server.calls.slice(before).filter(([e]) => e === 'consume').map(([, p]) => p.producerId), ['cid-mic']);
  assert.equal(client.sendTransport.id, send);
  assert.equal(client.recvTransport.id, recv);
  assert.equal(client.producers.mic, mic);
  const snap = client.snapshot();
  assert.deepEqual(snap.consumers.map((c) => c.producerId).sort(), ['bob-mic', 'cid-mic']);
  assert.equal(snap.reconnecting, false);
  assert.ok(client.participants.has('cid'));
  await client.leave();
});
