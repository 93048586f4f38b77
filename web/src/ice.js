// TURN for users behind strict networks: the iceServers of the join-room ack (TURN REST credentials,
// fresh per join) and the relay-only policy (`?relay=1` on the page, or the operator's
// STUDYROOMS_TURN_RELAY_ONLY which the ack announces as iceTransportPolicy: "relay").
// See docs/deployment.md. Credentials are handed to the transports only: never logged or shown.

import { RequestError } from './signaling.js';

/**
 * Transport options to spread into createSendTransport/createRecvTransport. Without TURN on the
 * server and without relay-only this is `{}` (nothing changes).
 * @param {object} joinData the join-room ack data
 * @param {{forceRelay?: boolean}} [opts] forceRelay: the page was opened with ?relay=1
 */
export function iceOptions(joinData, { forceRelay = false } = {}) {
  const iceServers = Array.isArray(joinData?.iceServers) ? joinData.iceServers : [];
  const relay = forceRelay || joinData?.iceTransportPolicy === 'relay';
  if (relay && iceServers.length === 0) {
    throw new RequestError('turn-unavailable',
      'Relay-only mode (?relay=1) needs a TURN server, and this server offers none.');
  }
  if (relay) return { iceServers, iceTransportPolicy: 'relay' };
  return iceServers.length ? { iceServers } : {};
}

/**
 * The transport's selected ICE candidate pair from getStats(): how the media actually flows
 * (candidate types, protocol, and for relayed candidates the protocol to the TURN server).
 */
export async function selectedPath(transport) {
  if (!transport) return null;
  const report = await transport.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) || pair;
  });
  if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated) pair = s; });
  if (!pair) return { state: transport.connectionState, selected: false };
  const local = byId.get(pair.localCandidateId) || {};
  const remote = byId.get(pair.remoteCandidateId) || {};
  return {
    state: transport.connectionState,
    selected: true,
    localType: local.candidateType || null,
    remoteType: remote.candidateType || null,
    protocol: local.protocol || null,
    relayProtocol: local.relayProtocol || null,
    bytesSent: pair.bytesSent || 0,
    bytesReceived: pair.bytesReceived || 0,
  };
}
