// The room's media logic on mediasoup-client: join, transports, publish, consume, pause, leave.
// No DOM here: the UI (ui.js) renders `client.snapshot()` on every 'change' event.

import { RequestError } from './signaling.js';
import { iceOptions, selectedPath } from './ice.js';

/** Camera simulcast: three layers, lowest first. The server may forward only one; all still work. */
export const CAMERA_ENCODINGS = [
  { scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { scaleResolutionDownBy: 1, maxBitrate: 1200000 },
];
export const SCREEN_ENCODINGS = [{ maxBitrate: 1500000 }];
// 960x540 is the smallest capture for which Chrome sends all three simulcast layers (240x135,
// 480x270, 960x540); at 640x480 it drops the top one (its simulcast layer limit by resolution).
export const CAMERA_CONSTRAINTS = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 24 } };

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return () => this._handlers.get(name).delete(fn);
  }
  emit(name, ...args) {
    for (const fn of this._handlers.get(name) || []) {
      try { fn(...args); } catch (err) { console.error(`handler of ${name} failed`, err); }
    }
  }
}

const defaultSource = (kind) => (kind === 'audio' ? 'mic' : 'camera');

/**
 * Events: 'change' (model changed), 'error' ({code, message, where}), 'notice' ({code, message}),
 * 'recommend-audio-only' ({participantCount, threshold}), 'disconnected' ({reason}), 'left'.
 */
export class RoomClient extends Emitter {
  /**
   * @param {object} deps
   * @param {(token: string) => import('./signaling.js').Signaling} deps.connect
   * @param {() => import('mediasoup-client').Device} deps.createDevice
   * @param {MediaDevices} [deps.mediaDevices]
   * @param {boolean} [deps.forceRelay] media only through the TURN relay (the page's ?relay=1)
   */
  constructor({ connect, createDevice, mediaDevices = globalThis.navigator?.mediaDevices, forceRelay = false }) {
    super();
    this.forceRelay = forceRelay;
    this._connect = connect;
    this._createDevice = createDevice;
    this._mediaDevices = mediaDevices;
    this._reset();
  }

  _reset() {
    this.signaling = null;
    this.device = null;
    this.sendTransport = null;
    this.recvTransport = null;
    this.ice = {}; // {iceServers?, iceTransportPolicy?} for every transport of this join (ice.js)
    this.joined = false;
    this.joining = false;
    this.roomId = null;
    this.participantId = null;
    this.displayName = null;
    this.participants = new Map(); // participantId -> {participantId, displayName}
    this.remoteProducers = new Map(); // producerId -> {producerId, participantId, kind, source}
    this.consumers = new Map(); // consumerId -> {consumer, producerId, participantId, kind, source, producerPaused}
    this.producers = { mic: null, camera: null, screen: null }; // source -> mediasoup Producer
    this.localStreams = { camera: null, screen: null };
    this.incomingVideo = true;
    this.activeSpeaker = null;
    this.forwarding = null; // {video, onStage} from 'forwarding-changed'; null until the server says
    this.recommendAudioOnly = false;
    this.simulcast = true;
    this._consuming = new Set(); // producerIds being consumed
    this._leaving = false;
    this.reconnecting = false; // healing in progress (media-reset, room-reset, socket reconnection)
    this._healing = Promise.resolve();
  }

  // ------------------------------------------------------------------ join / leave

  /** Full join flow. Throws RequestError (e.g. code 'room-full'); on failure everything is closed. */
  async join({ roomId, displayName, token, publish = true }) {
    if (this.joined || this.joining) throw new RequestError('invalid-state', 'already in a room');
    this.joining = true;
    this.roomId = roomId;
    this.displayName = displayName;
    try {
      this.signaling = this._connect(token);
      this._listen(this.signaling);
      await this.signaling.waitConnected();
      const joinData = await this.signaling.request('join-room', { roomId, displayName });
      this._keepResumeKey(joinData);
      this.participantId = joinData.participantId;
      this.roomId = joinData.roomId || roomId;
      for (const p of joinData.participants || []) {
        if (p.participantId !== this.participantId) this.participants.set(p.participantId, { ...p });
      }
      for (const p of joinData.producers || []) {
        if (p.participantId !== this.participantId) this._addRemoteProducer(p);
      }
      this.ice = iceOptions(joinData, { forceRelay: this.forceRelay });
      this.device = this._createDevice();
      await this.device.load({ routerRtpCapabilities: joinData.rtpCapabilities });
      const [sendParams, recvParams] = await Promise.all([
        this.signaling.request('create-transport', { direction: 'send' }),
        this.signaling.request('create-transport', { direction: 'recv' }),
      ]);
      this.sendTransport = this.device.createSendTransport({ ...transportOptions(sendParams), ...this.ice });
      this.recvTransport = this.device.createRecvTransport({ ...transportOptions(recvParams), ...this.ice });
      this._wireTransport(this.sendTransport, 'send');
      this._wireTransport(this.recvTransport, 'recv');
      this.sendTransport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
        this.signaling
          .request('produce', { transportId: this.sendTransport.id, kind, rtpParameters, appData: { source: appData.source } })
          .then(({ producerId }) => callback({ id: producerId }), errback);
      });
      this.joined = true;
      this.joining = false;
      if (joinData.recommendAudioOnly) this._onRecommendAudioOnly({ participantCount: this.participants.size + 1 });
      this.emit('change');
      // Consume whoever is already publishing (in parallel; each one is independent).
      await Promise.all([...this.remoteProducers.values()].map((p) => this._consume(p)));
      if (publish) await this.publishMicAndCamera();
    } catch (err) {
      const wasJoined = this.joined;
      this.joining = false;
      if (!wasJoined) await this._teardown();
      throw err;
    }
  }

  /** Leave the room: tell the server, close everything locally. Safe to call twice. */
  async leave() {
    if (!this.signaling) return;
    this._leaving = true;
    if (this.joined && this.signaling.socket.connected) {
      try { await this.signaling.request('leave-room', {}); } catch (err) { console.warn('leave-room failed', err); }
    }
    await this._teardown();
    this.emit('left');
    this.emit('change');
  }

  async _teardown() {
    for (const source of Object.keys(this.producers)) {
      const producer = this.producers[source];
      if (producer) { try { producer.close(); } catch { /* closed */ } }
    }
    for (const stream of Object.values(this.localStreams)) stopStream(stream);
    for (const { consumer } of this.consumers.values()) { try { consumer.close(); } catch { /* closed */ } }
    for (const t of [this.sendTransport, this.recvTransport]) { if (t) { try { t.close(); } catch { /* closed */ } } }
    if (this.signaling) this.signaling.close();
    this._reset();
  }

  // ------------------------------------------------------------------ notifications

  _listen(signaling) {
    const on = (event, fn) => signaling.on(event, (data) => {
      if (!this.joined && !this.joining) return;
      try { fn(data || {}); } catch (err) { console.error(`handling ${event} failed`, err); }
    });
    on('participant-joined', ({ participantId, displayName }) => {
      if (participantId === this.participantId) return;
      this.participants.set(participantId, { participantId, displayName });
      this.emit('change');
    });
    on('participant-left', ({ participantId }) => this._removeParticipant(participantId));
    on('new-producer', (p) => {
      if (p.participantId === this.participantId) return;
      this._addRemoteProducer(p);
      this.emit('change');
      if (this.recvTransport) this._consume(this.remoteProducers.get(p.producerId));
    });
    on('producer-closed', ({ producerId }) => this._removeRemoteProducer(producerId));
    on('consumer-closed', ({ consumerId }) => this._closeConsumer(consumerId));
    on('consumer-paused', ({ consumerId }) => this._markProducerPaused(consumerId, true));
    on('consumer-resumed', ({ consumerId }) => this._markProducerPaused(consumerId, false));
    on('recommend-audio-only', (data) => this._onRecommendAudioOnly(data));
    on('active-speaker', ({ participantId }) => { this.activeSpeaker = participantId || null; this.emit('change'); });
    // last-N: the participants whose video the server forwards to us (layout.js shows the rest as avatars)
    on('forwarding-changed', (data) => { this.forwarding = data; this.emit('change'); });
    on('error', ({ event, code, message }) => console.warn('server error event', event, code, message));
    on('media-reset', ({ reason, producers }) => this._heal(() => this._resetMedia(producers || []), `media-reset: ${reason}`));
    on('room-reset', ({ reason }) => this._heal(() => this._rejoin(), `room-reset: ${reason}`));
    signaling.on('disconnect', (reason) => {
      if (this._leaving || (!this.joined && !this.joining)) return;
      const manager = signaling.socket.io;
      const willReconnect = signaling.socket.active
        && !(manager && typeof manager.reconnection === 'function' && !manager.reconnection());
      if (this.joined && willReconnect) { // socket.io reconnects by itself: then we join again
        this.reconnecting = true;
        this.emit('reconnecting', { reason });
        this.emit('change');
        return;
      }
      this._lost(reason);
    });
    signaling.on('connect', () => {
      if (this.joined && this.reconnecting && !this._leaving) this._heal(() => this._rejoin(), 'reconnected');
    });
    if (signaling.socket.io && typeof signaling.socket.io.on === 'function') {
      signaling.socket.io.on('reconnect_failed', () => { if (this.joined && !this._leaving) this._lost('the server is unreachable'); });
    }
  }

  _lost(reason) {
    this.emit('disconnected', { reason });
    this._teardown().then(() => this.emit('change'));
  }

  // ------------------------------------------------------------------ healing (docs/protocol.md "Healing")

  /** Run one healing step after the previous one; the "reconnecting" indicator shows meanwhile. */
  _heal(step, why) {
    console.info('healing:', why);
    this.reconnecting = true;
    this.emit('change');
    this._healing = this._healing.then(step).catch((err) => {
      if (this.joined) this._error(err, `reconnect (${why})`);
    }).finally(() => {
      if (this.signaling && this.signaling.socket.connected) this.reconnecting = false;
      this.emit('change');
    });
    return this._healing;
  }

  /**
   * Session resume (docs/protocol.md): the join ack's `resumeKey` goes into the socket's auth
   * payload, which socket.io sends again on every reconnection; kept in memory only (a second tab
   * or a reload is a new participant).
   */
  _keepResumeKey(joinData) {
    const socket = this.signaling && this.signaling.socket;
    if (!socket || !joinData.resumeKey) return;
    socket.auth = { ...(socket.auth && typeof socket.auth === 'object' ? socket.auth : {}), resumeKey: joinData.resumeKey };
  }

  /**
   * After room-reset or a socket reconnection: join-room again (same token). A resumed session
   * (`resumed: true`, same participant) keeps its transports and media and only catches up with
   * the room; otherwise (grace over, server restarted) media is rebuilt.
   */
  async _rejoin() {
    if (!this.joined || !this.signaling) return;
    const joinData = await this.signaling.request('join-room', { roomId: this.roomId, displayName: this.displayName });
    this._keepResumeKey(joinData);
    if (joinData.resumed && joinData.participantId === this.participantId && this.sendTransport && this.recvTransport) {
      await this._catchUp(joinData);
      return;
    }
    this.participantId = joinData.participantId;
    this.participants = new Map();
    for (const p of joinData.participants || []) {
      if (p.participantId !== this.participantId) this.participants.set(p.participantId, { ...p });
    }
    await this._resetMedia((joinData.producers || []).filter((p) => p.participantId !== this.participantId));
  }

  /** A resumed session: the room as it is now (who left or published while the socket was away). */
  async _catchUp(joinData) {
    const others = (joinData.participants || []).filter((p) => p.participantId !== this.participantId);
    const present = new Set(others.map((p) => p.participantId));
    for (const id of [...this.participants.keys()]) if (!present.has(id)) this._removeParticipant(id);
    for (const p of others) this.participants.set(p.participantId, { ...this.participants.get(p.participantId), ...p });
    const producers = (joinData.producers || []).filter((p) => p.participantId !== this.participantId);
    const live = new Set(producers.map((p) => p.producerId));
    for (const id of [...this.remoteProducers.keys()]) if (!live.has(id)) this._removeRemoteProducer(id);
    const fresh = producers.filter((p) => !this.remoteProducers.has(p.producerId));
    for (const p of fresh) this._addRemoteProducer(p);
    this.emit('change');
    await Promise.all(fresh.map((p) => this._consume(this.remoteProducers.get(p.producerId))));
  }

  /**
   * media-reset: the server's transports, producers and consumers of ours are gone. Close ours
   * (keeping the local tracks), create new transports, publish again with the same on/off state,
   * consume `producers` (and later new-producer).
   */
  async _resetMedia(producers) {
    if (!this.joined || !this.signaling) return;
    const kept = {};
    for (const source of Object.keys(this.producers)) {
      const producer = this.producers[source];
      if (producer && producer.track && producer.track.readyState === 'live') {
        kept[source] = { track: producer.track, paused: producer.paused };
      }
      this.producers[source] = null;
    }
    for (const { consumer } of this.consumers.values()) { try { consumer.close(); } catch { /* closed */ } }
    this.consumers.clear();
    const [oldSend, oldRecv] = [this.sendTransport, this.recvTransport];
    this.sendTransport = null;
    this.recvTransport = null;
    for (const t of [oldSend, oldRecv]) { if (t) { try { t.close(); } catch { /* closed */ } } }
    this.remoteProducers = new Map();
    for (const p of producers) this._addRemoteProducer(p);
    this.emit('change');
    const [sendParams, recvParams] = await Promise.all([
      this.signaling.request('create-transport', { direction: 'send' }),
      this.signaling.request('create-transport', { direction: 'recv' }),
    ]);
    // same TURN servers / relay policy as the join that handed them out
    const send = this.device.createSendTransport({ ...transportOptions(sendParams), ...this.ice });
    const recv = this.device.createRecvTransport({ ...transportOptions(recvParams), ...this.ice });
    this._wireTransport(send, 'send');
    this._wireTransport(recv, 'recv');
    send.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
      this.signaling
        .request('produce', { transportId: send.id, kind, rtpParameters, appData: { source: appData.source } })
        .then(({ producerId }) => callback({ id: producerId }), errback);
    });
    this.sendTransport = send;
    this.recvTransport = recv;
    await Promise.all([...this.remoteProducers.values()].map((p) => this._consume(p)));
    if (kept.mic) await this._produceMic(kept.mic.track);
    if (kept.camera) await this._produceCamera(kept.camera.track);
    if (kept.screen) {
      const stream = this.localStreams.screen;
      this.localStreams.screen = null;
      await this.startScreenShare(kept.screen.track);
      if (!this.producers.screen) stopStream(stream);
    }
    for (const source of ['mic', 'camera']) { // keep a muted mic muted, a paused camera paused
      if (kept[source] && kept[source].paused && this.producers[source]) await this._setProducerPaused(this.producers[source], true);
    }
    this.emit('change');
  }

  _onRecommendAudioOnly({ participantCount, threshold }) {
    this.recommendAudioOnly = true;
    this.emit('recommend-audio-only', { participantCount, threshold });
    this.emit('change');
  }

  _addRemoteProducer(p) {
    const info = { producerId: p.producerId, participantId: p.participantId, kind: p.kind, source: p.source || defaultSource(p.kind) };
    this.remoteProducers.set(p.producerId, info);
    if (!this.participants.has(p.participantId)) {
      this.participants.set(p.participantId, { participantId: p.participantId, displayName: p.displayName || 'Guest' });
    }
  }

  _removeRemoteProducer(producerId) {
    this.remoteProducers.delete(producerId);
    for (const [consumerId, c] of this.consumers) if (c.producerId === producerId) this._closeConsumer(consumerId, false);
    this.emit('change');
  }

  _removeParticipant(participantId) {
    this.participants.delete(participantId);
    for (const [producerId, p] of this.remoteProducers) if (p.participantId === participantId) this.remoteProducers.delete(producerId);
    for (const [consumerId, c] of this.consumers) if (c.participantId === participantId) this._closeConsumer(consumerId, false);
    if (this.activeSpeaker === participantId) this.activeSpeaker = null;
    this.emit('change');
  }

  _closeConsumer(consumerId, emit = true) {
    const c = this.consumers.get(consumerId);
    if (!c) return;
    this.consumers.delete(consumerId);
    try { c.consumer.close(); } catch { /* closed */ }
    if (emit) this.emit('change');
  }

  _markProducerPaused(consumerId, paused) {
    const c = this.consumers.get(consumerId);
    if (!c) return;
    c.producerPaused = paused;
    this.emit('change');
  }

  _wireTransport(transport, direction) {
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.signaling.request('connect-transport', { transportId: transport.id, dtlsParameters }).then(() => callback(), errback);
    });
    let restarted = false;
    transport.on('connectionstatechange', (state) => {
      this.emit('change');
      if (state === 'failed' && this.joined) {
        if (!restarted) {
          restarted = true;
          this.signaling.request('restart-ice', { transportId: transport.id })
            .then(({ iceParameters }) => transport.restartIce({ iceParameters }))
            .catch((err) => this._error(err, `restart-ice (${direction})`));
        } else {
          this.emit('error', { code: 'media-failed', message: `The ${direction} media connection failed.`, where: direction });
        }
      }
    });
  }

  _error(err, where) {
    const code = err && err.code ? err.code : (err && err.name) || 'error';
    this.emit('error', { code, message: (err && err.message) || String(err), where });
  }

  // ------------------------------------------------------------------ consuming

  async _consume(p) {
    if (!p || !this.recvTransport || this._consuming.has(p.producerId)) return;
    for (const c of this.consumers.values()) if (c.producerId === p.producerId) return;
    this._consuming.add(p.producerId);
    try {
      const data = await this.signaling.request('consume', {
        transportId: this.recvTransport.id,
        producerId: p.producerId,
        rtpCapabilities: this.device.rtpCapabilities,
      });
      const consumer = await this.recvTransport.consume({
        id: data.id,
        producerId: data.producerId,
        kind: data.kind,
        rtpParameters: data.rtpParameters,
        appData: { participantId: p.participantId, source: p.source },
      });
      // The producer (or its owner) may have gone while we were consuming.
      if (!this.remoteProducers.has(p.producerId) || !this.joined) {
        consumer.close();
        return;
      }
      const entry = {
        consumer,
        consumerId: consumer.id,
        producerId: p.producerId,
        participantId: p.participantId,
        kind: consumer.kind,
        source: p.source,
        producerPaused: Boolean(data.producerPaused),
      };
      this.consumers.set(consumer.id, entry);
      consumer.on('transportclose', () => this._closeConsumer(consumer.id));
      consumer.on('trackended', () => this._closeConsumer(consumer.id));
      if (consumer.kind === 'video' && !this.incomingVideo) {
        consumer.pause();
      } else {
        await this.signaling.request('resume-consumer', { consumerId: consumer.id });
      }
      this.emit('change');
    } catch (err) {
      if (this.joined) this._error(err, `consume ${p.kind} of ${p.participantId}`);
    } finally {
      this._consuming.delete(p.producerId);
    }
  }

  /** Incoming video on/off (audio-only mode): pause-consumer / resume-consumer for every video consumer. */
  async setIncomingVideo(enabled) {
    this.incomingVideo = Boolean(enabled);
    this.emit('change');
    const videos = [...this.consumers.values()].filter((c) => c.kind === 'video');
    await Promise.all(videos.map(async ({ consumer }) => {
      try {
        if (enabled) {
          await this.signaling.request('resume-consumer', { consumerId: consumer.id });
          consumer.resume();
        } else {
          consumer.pause();
          await this.signaling.request('pause-consumer', { consumerId: consumer.id });
        }
      } catch (err) { this._error(err, enabled ? 'resume-consumer' : 'pause-consumer'); }
    }));
    this.emit('change');
  }

  // ------------------------------------------------------------------ publishing

  _vp8() {
    return this.device.rtpCapabilities.codecs.find((c) => c.mimeType.toLowerCase() === 'video/vp8');
  }

  /** getUserMedia for mic and camera and produce both. A denial is reported, the room stays joined. */
  async publishMicAndCamera() {
    let stream;
    try {
      stream = await this._mediaDevices.getUserMedia({ audio: true, video: CAMERA_CONSTRAINTS });
    } catch (err) {
      if (err && err.name === 'NotAllowedError') {
        this.emit('error', {
          code: 'media-denied',
          message: 'Camera and microphone access was denied. You are in the room but others cannot see or hear you. ' +
            'Allow access in your browser, then press the microphone or camera button.',
          where: 'getUserMedia',
        });
        return;
      }
      // No camera (or no mic): publish what exists.
      await this.publishMic().catch(() => {});
      await this.publishCamera().catch(() => {});
      return;
    }
    const [audio] = stream.getAudioTracks();
    const [video] = stream.getVideoTracks();
    await Promise.all([
      audio ? this._produceMic(audio) : null,
      video ? this._produceCamera(video) : null,
    ]);
  }

  async publishMic() {
    if (this.producers.mic) return;
    try {
      const stream = await this._mediaDevices.getUserMedia({ audio: true });
      await this._produceMic(stream.getAudioTracks()[0]);
    } catch (err) { this._mediaError(err, 'microphone'); throw err; }
  }

  async publishCamera() {
    if (this.producers.camera) return;
    try {
      const stream = await this._mediaDevices.getUserMedia({ video: CAMERA_CONSTRAINTS });
      await this._produceCamera(stream.getVideoTracks()[0]);
    } catch (err) { this._mediaError(err, 'camera'); throw err; }
  }

  _mediaError(err, what) {
    if (err && err.name === 'NotAllowedError') {
      this.emit('error', { code: 'media-denied', message: `Access to the ${what} was denied by the browser.`, where: what });
    } else if (err && err.name === 'NotFoundError') {
      this.emit('error', { code: 'no-device', message: `No ${what} was found.`, where: what });
    } else {
      this._error(err, what);
    }
  }

  async _produceMic(track) {
    try {
      this.producers.mic = await this.sendTransport.produce({
        track,
        stopTracks: false,
        codecOptions: { opusStereo: false, opusFec: true },
        appData: { source: 'mic' },
      });
      this._watchProducer('mic');
    } catch (err) {
      track.stop();
      this._error(err, 'publish microphone');
    }
    this.emit('change');
  }

  async _produceCamera(track) {
    this.localStreams.camera = makeStream(track);
    const codec = this._vp8();
    const attempt = (encodings) => this.sendTransport.produce({
      track,
      stopTracks: false,
      encodings,
      codec,
      codecOptions: { videoGoogleStartBitrate: 1000 },
      appData: { source: 'camera' },
    });
    try {
      try {
        this.producers.camera = await attempt(this.simulcast ? CAMERA_ENCODINGS : undefined);
      } catch (err) {
        // A server that refuses simulcast gets one plain encoding instead.
        if (!this.simulcast || !(err && (err.code === 'unsupported' || err.code === 'invalid-request'))) throw err;
        console.warn('simulcast refused, publishing one encoding:', err.message);
        this.simulcast = false;
        this.producers.camera = await attempt([{ maxBitrate: 900000 }]);
      }
      this._watchProducer('camera');
    } catch (err) {
      stopStream(this.localStreams.camera);
      this.localStreams.camera = null;
      this._error(err, 'publish camera');
    }
    this.emit('change');
  }

  _watchProducer(source) {
    const producer = this.producers[source];
    producer.on('transportclose', () => { if (this.producers[source] === producer) this.producers[source] = null; this.emit('change'); });
    producer.on('trackended', () => {
      if (source === 'screen') this.stopScreenShare();
      else this.emit('error', { code: 'track-ended', message: `Your ${source === 'mic' ? 'microphone' : 'camera'} stopped.`, where: source });
    });
  }

  /** Mute / unmute the microphone (pause-producer / resume-producer). Publishes it if it is not yet. */
  async toggleMic() {
    const producer = this.producers.mic;
    if (!producer) { await this.publishMic().catch(() => {}); return; }
    await this._setProducerPaused(producer, !producer.paused);
  }

  /** Camera off: pause the producer and stop the camera; on: a fresh track, replaceTrack, resume. */
  async toggleCamera() {
    const producer = this.producers.camera;
    if (!producer) { await this.publishCamera().catch(() => {}); return; }
    if (!producer.paused) {
      await this._setProducerPaused(producer, true);
      stopStream(this.localStreams.camera);
      this.localStreams.camera = null;
      this.emit('change');
      return;
    }
    try {
      const stream = await this._mediaDevices.getUserMedia({ video: CAMERA_CONSTRAINTS });
      const track = stream.getVideoTracks()[0];
      await producer.replaceTrack({ track });
      this.localStreams.camera = makeStream(track);
      await this._setProducerPaused(producer, false);
    } catch (err) { this._mediaError(err, 'camera'); }
    this.emit('change');
  }

  async _setProducerPaused(producer, paused) {
    try {
      if (paused) {
        producer.pause();
        await this.signaling.request('pause-producer', { producerId: producer.id });
      } else {
        await this.signaling.request('resume-producer', { producerId: producer.id });
        producer.resume();
      }
    } catch (err) { this._error(err, paused ? 'pause-producer' : 'resume-producer'); }
    this.emit('change');
  }

  /**
   * Share the screen as a second video producer (source "screen"). `track` lets tests pass a
   * canvas track; the product always asks getDisplayMedia.
   */
  async startScreenShare(track = null) {
    if (this.producers.screen) return;
    let screenTrack = track;
    if (!screenTrack) {
      let stream;
      try {
        stream = await this._mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
      } catch (err) {
        if (err && err.name === 'NotAllowedError') {
          this.emit('notice', { code: 'screen-cancelled', message: 'Screen sharing was cancelled or not allowed.' });
        } else this._error(err, 'share screen');
        return;
      }
      screenTrack = stream.getVideoTracks()[0];
    }
    this.localStreams.screen = makeStream(screenTrack);
    try {
      this.producers.screen = await this.sendTransport.produce({
        track: screenTrack,
        stopTracks: false,
        encodings: SCREEN_ENCODINGS,
        codec: this._vp8(),
        appData: { source: 'screen' },
      });
      this._watchProducer('screen');
    } catch (err) {
      stopStream(this.localStreams.screen);
      this.localStreams.screen = null;
      this._error(err, 'share screen');
    }
    this.emit('change');
  }

  /** Stop sharing: close-producer on the server, close and stop locally. */
  async stopScreenShare() {
    const producer = this.producers.screen;
    if (!producer) return;
    this.producers.screen = null;
    producer.close();
    stopStream(this.localStreams.screen);
    this.localStreams.screen = null;
    this.emit('change');
    try { await this.signaling.request('close-producer', { producerId: producer.id }); } catch (err) { this._error(err, 'close-producer'); }
  }

  // ------------------------------------------------------------------ views for UI, tests and debugging

  /** A plain, JSON-able picture of the room (window.studyrooms.state uses it). */
  snapshot() {
    const tiles = [];
    for (const p of this.participants.values()) {
      const mine = [...this.consumers.values()].filter((c) => c.participantId === p.participantId);
      const camera = mine.find((c) => c.kind === 'video' && c.source !== 'screen');
      const audio = mine.filter((c) => c.kind === 'audio');
      tiles.push({
        participantId: p.participantId,
        displayName: p.displayName,
        kind: 'camera',
        hasVideo: Boolean(camera),
        videoConsumerId: camera ? camera.consumerId : null,
        hasAudio: audio.length > 0,
        audioConsumerIds: audio.map((c) => c.consumerId),
        micMuted: audio.length === 0 || audio.every((c) => c.producerPaused),
        // "Camera off": the camera is paused, or this person publishes no camera at all.
        cameraOff: camera ? camera.producerPaused : ![...this.remoteProducers.values()].some(
          (r) => r.participantId === p.participantId && r.kind === 'video' && r.source !== 'screen'),
        speaking: this.activeSpeaker === p.participantId,
      });
      for (const s of mine.filter((c) => c.kind === 'video' && c.source === 'screen')) {
        tiles.push({
          participantId: p.participantId, displayName: p.displayName, kind: 'screen', hasVideo: true,
          videoConsumerId: s.consumerId, producerId: s.producerId,
        });
      }
    }
    return {
      joined: this.joined,
      joining: this.joining,
      roomId: this.roomId,
      participantId: this.participantId,
      displayName: this.displayName,
      participants: [...this.participants.values()].map((p) => ({ ...p })),
      remoteProducers: [...this.remoteProducers.values()].map((p) => ({ ...p })),
      consumers: [...this.consumers.values()].map((c) => ({
        consumerId: c.consumerId, producerId: c.producerId, participantId: c.participantId, kind: c.kind,
        source: c.source, producerPaused: c.producerPaused, paused: c.consumer.paused,
      })),
      local: {
        mic: this.producers.mic ? { producerId: this.producers.mic.id, paused: this.producers.mic.paused } : null,
        camera: this.producers.camera ? { producerId: this.producers.camera.id, paused: this.producers.camera.paused,
          encodings: this.producers.camera.rtpParameters.encodings.length } : null,
        screen: this.producers.screen ? { producerId: this.producers.screen.id } : null,
      },
      transports: {
        send: this.sendTransport ? this.sendTransport.connectionState : null,
        recv: this.recvTransport ? this.recvTransport.connectionState : null,
        iceTransportPolicy: this.ice.iceTransportPolicy || 'all',
        turn: Boolean(this.ice.iceServers),
      },
      incomingVideo: this.incomingVideo,
      recommendAudioOnly: this.recommendAudioOnly,
      reconnecting: this.reconnecting,
      tiles,
    };
  }

  /** Per-consumer receive stats from the recv transport's getStats() (inbound-rtp by track id). */
  async stats() {
    if (!this.recvTransport) return [];
    const report = await this.recvTransport.getStats();
    const byTrack = new Map();
    const byMid = new Map();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.trackIdentifier) byTrack.set(s.trackIdentifier, s);
      if (s.mid !== undefined) byMid.set(String(s.mid), s);
    });
    return [...this.consumers.values()].map((c) => {
      const s = byTrack.get(c.consumer.track.id) || byMid.get(String(c.consumer.rtpParameters.mid)) || {};
      return {
        consumerId: c.consumerId, producerId: c.producerId, participantId: c.participantId, kind: c.kind, source: c.source,
        packetsReceived: s.packetsReceived || 0,
        bytesReceived: s.bytesReceived || 0,
        framesDecoded: s.framesDecoded || 0,
        frameWidth: s.frameWidth || 0,
        frameHeight: s.frameHeight || 0,
        packetsLost: s.packetsLost || 0,
        decoderImplementation: s.decoderImplementation || null,
      };
    });
  }

  /** Outbound stats of the send transport (per encoding), for diagnostics. */
  /** The selected ICE candidate pair of each transport (relay or direct, UDP or TCP). */
  async icePaths() {
    return { send: await selectedPath(this.sendTransport), recv: await selectedPath(this.recvTransport) };
  }

  async sendStats() {
    if (!this.sendTransport) return [];
    const out = [];
    (await this.sendTransport.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out.push({ kind: s.kind, rid: s.rid || null, bytesSent: s.bytesSent, framesEncoded: s.framesEncoded,
          frameWidth: s.frameWidth, frameHeight: s.frameHeight, qualityLimitationReason: s.qualityLimitationReason });
      }
    });
    return out;
  }
}

function transportOptions({ id, iceParameters, iceCandidates, dtlsParameters, sctpParameters }) {
  return { id, iceParameters, iceCandidates, dtlsParameters, sctpParameters };
}

function stopStream(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) { try { track.stop(); } catch { /* stopped */ } }
}

function makeStream(track) {
  return typeof MediaStream === 'function' ? new MediaStream([track]) : { getTracks: () => [track] };
}
