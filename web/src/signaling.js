// Socket.IO signaling: one socket per joined room, requests with acks ({ok, data} / {ok:false, error}).
// See /work/shared/design/protocol.md.

export const REQUEST_TIMEOUT_MS = 15000;

/** A failed request: `code` is the server's stable error code (or a local one: timeout, disconnected). */
export class RequestError extends Error {
  constructor(code, message, event = null) {
    super(message || code);
    this.name = 'RequestError';
    this.code = code || 'internal';
    this.event = event;
  }
}

/**
 * Wraps a socket.io-client Socket. `socket` only needs `on`, `off`, `emit` (with an ack callback),
 * `connected`, `disconnect` and `connect`, so tests can pass a fake.
 */
export class Signaling {
  constructor(socket, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    this.socket = socket;
    this.timeoutMs = timeoutMs;
  }

  /** Resolves once connected; rejects with RequestError(code) on connect_error (e.g. unauthorized). */
  waitConnected(timeoutMs = this.timeoutMs) {
    const socket = this.socket;
    if (socket.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (fn, arg) => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('connect_error', onError);
        fn(arg);
      };
      const onConnect = () => done(resolve);
      const onError = (err) => {
        const data = (err && err.data) || {};
        done(reject, new RequestError(data.code || 'connect-failed',
          data.message || (err && err.message) || 'could not connect to the server'));
      };
      const timer = setTimeout(
        () => done(reject, new RequestError('timeout', 'the server did not answer the connection')), timeoutMs);
      socket.on('connect', onConnect);
      socket.on('connect_error', onError);
      if (typeof socket.connect === 'function' && !socket.active) socket.connect();
    });
  }

  /** emit(event, payload) and wait for the ack; resolves with `data`, rejects with RequestError. */
  request(event, payload = {}) {
    const socket = this.socket;
    return new Promise((resolve, reject) => {
      if (!socket.connected) {
        reject(new RequestError('disconnected', `not connected (${event})`, event));
        return;
      }
      let settled = false;
      const finish = (fn, arg) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('disconnect', onDisconnect);
        fn(arg);
      };
      const onDisconnect = () => finish(reject, new RequestError('disconnected', `connection lost during ${event}`, event));
      const timer = setTimeout(
        () => finish(reject, new RequestError('timeout', `no answer to ${event} within ${this.timeoutMs / 1000} s`, event)),
        this.timeoutMs);
      socket.on('disconnect', onDisconnect);
      socket.emit(event, payload, (ack) => {
        if (ack && ack.ok === true) finish(resolve, ack.data === undefined ? {} : ack.data);
        else {
          const error = (ack && ack.error) || {};
          finish(reject, new RequestError(error.code || 'internal', error.message || `bad answer to ${event}`, event));
        }
      });
    });
  }

  on(event, handler) { this.socket.on(event, handler); }

  close() {
    try { this.socket.disconnect(); } catch { /* already closed */ }
  }
}
