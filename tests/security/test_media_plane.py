"""DTLS/SRTP and hostile UDP on the real media plane, while a pymediasoup pair keeps decoding.

* A wrong DTLS fingerprint fails the transport (closed, 'dtls-failed', nothing ever sent).
* Media is never sent unencrypted: before DTLS a consumer's transport sends nothing.
* From the ICE-validated tuple (the real client's own UDP socket): SRTP with a bad auth tag,
  replayed SRTP, plain RTP, truncated DTLS records, well-encrypted RTP/RTCP with garbage inside are
  dropped and counted; the transport stays up.
* On the shared port and on a per-transport port: random bytes, truncated/malformed STUN, STUN with
  wrong credentials or unknown ufrag are dropped and counted.
Throughout: no exception reaches the datagram callbacks or the loop, and the pair's video keeps
decoding.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest
import pytest_asyncio
from aioice import stun

from studyrooms.config import MediaSettings
from studyrooms.standalone import start_standalone
from support.peer import Peer

from sechelpers import LoopErrors, eventually, find, join, settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The HMAC key is"),
]


class Pair:
    pass


async def make_pair(port_mode: str) -> Pair:
    w = Pair()
    w.app = await start_standalone(settings(media=MediaSettings(port_mode=port_mode)), num_workers=1, port=0)
    w.a = await join(w.app, "media", "Alice")
    w.b = await join(w.app, "media", "Bob")
    w.pa, w.pb = Peer(w.a.signal, video=True), Peer(w.b.signal)
    await w.pa.load(w.a.joined["rtpCapabilities"])
    await w.pb.load(w.b.joined["rtpCapabilities"])
    w.producer_id = (await w.pa.produce(video=True))["video"]
    w.counter = await w.pb.consume(w.producer_id)
    assert await w.counter.wait_frames(5, timeout=20) >= 5
    w.server_send = find(w.app, "transport", w.pa.send_transport.id)
    w.errors = LoopErrors().install()
    return w


async def close_pair(w: Pair) -> None:
    w.errors.uninstall()
    await w.pa.close()
    await w.pb.close()
    await w.a.close()
    await w.b.close()
    await w.app.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair():
    w = await make_pair("shared")
    yield w
    await close_pair(w)


def client_path(peer_transport):
    """The client's aiortc DTLS transport and a function sending raw datagrams from its ICE-selected
    socket to the SFU: the exact 5-tuple the SFU validated."""
    pc = peer_transport._handler._pc
    tr = pc.getTransceivers()[0]
    dtls = (tr.sender if tr.sender.track is not None else tr.receiver).transport
    pair = next(iter(dtls.transport._connection._nominated.values()))

    def send(data: bytes) -> None:
        pair.protocol.transport.sendto(data, pair.remote_addr)

    return dtls, send


def rtp(ssrc: int, seq: int, pt: int = 97, payload: bytes = b"\x90\x80" + b"x" * 100, first: int = 0x80) -> bytes:
    return struct.pack("!BBHII", first, pt, seq & 0xFFFF, seq * 3000, ssrc) + payload


async def media_keeps_flowing(w: Pair) -> None:
    before = w.counter.frames
    assert await w.counter.wait_frames(10, timeout=10) >= before + 10, "the pair's video stopped"
    assert not w.errors.loop_errors, w.errors.loop_errors
    stats = w.app.workers[0].get_stats()
    if stats["udp"] is not None:
        assert stats["udp"]["udp"]["handlerErrors"] == 0
    assert not w.server_send.closed and w.server_send.dtls_state == "connected"


# --- DTLS ---------------------------------------------------------------------------------------


class TamperingSignal:
    """Signals like the real client but lies about its certificate fingerprint on connect."""

    def __init__(self, inner, app) -> None:
        self.inner, self.app = inner, app
        self.transports: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def connect_transport(self, transport_id: str, dtls_parameters: dict) -> None:
        self.transports.append(find(self.app, "transport", transport_id))
        lie = {**dtls_parameters, "fingerprints": [
            {"algorithm": f["algorithm"], "value": ":".join(["AB"] * (len(f["value"].split(":"))))}
            for f in dtls_parameters["fingerprints"]]}
        await self.inner.connect_transport(transport_id, lie)


async def test_fingerprint_mismatch_fails_the_transport_and_no_media_flows(pair):
    w = pair
    c = await join(w.app, "media", "Mallory")
    signal = TamperingSignal(c.signal, w.app)
    peer = Peer(signal)
    try:
        await peer.load(c.joined["rtpCapabilities"])
        counter = await peer.consume(w.producer_id)
        (transport,) = signal.transports
        assert await eventually(lambda: transport.closed, timeout=15)
        assert transport.closed_reason == "dtls-failed" and transport.dtls.failure_reason == "fingerprint"
        assert transport.tx_rtp == 0 and transport.dtls.srtp is None
        await asyncio.sleep(0.5)
        assert counter.frames == 0
        # the room dropped it and told the client its consumer is gone
        assert await eventually(lambda: any(n == "consumer-closed" for n, _ in c.events), timeout=5)
        room = w.app.service.rooms["media"]
        assert transport.id not in room._transport_owner
    finally:
        await peer.close()
        await c.close()
    await media_keeps_flowing(w)


async def test_nothing_is_sent_before_dtls(pair):
    """A consumer on a transport whose DTLS never ran: the SFU never sends its media in clear."""
    w = pair
    c = await join(w.app, "media", "NoDtls")
    try:
        tid = (await c.signal.call("create-transport", {"direction": "recv"}))["id"]
        reply = await c.signal.call("consume", {"transportId": tid, "producerId": w.producer_id,
                                                "rtpCapabilities": c.joined["rtpCapabilities"]})
        await c.signal.call("resume-consumer", {"consumerId": reply["id"]})
        transport = find(w.app, "transport", tid)
        consumer = find(w.app, "consumer", reply["id"])
        rx0 = w.server_send.rx_rtp
        await asyncio.sleep(1.5)
        assert w.server_send.rx_rtp > rx0 + 20  # the producer is sending all along
        assert not consumer.paused and not transport.media_ready
        assert transport.tx_rtp == transport.tx_rtcp == transport.tx_bytes == 0
    finally:
        await c.close()


# --- SRTP from the validated tuple --------------------------------------------------------------


async def test_bad_auth_tags_replays_and_plain_rtp_are_dropped_and_counted(pair):
    w = pair
    dtls, send = client_path(w.pa.send_transport)
    tx = dtls._tx_srtp  # the client's own outbound SRTP session (right key)
    s0 = w.server_send.get_stats()
    ssrc = 0x0BADF00D
    good = [tx.protect(rtp(ssrc, 1000 + i)) for i in range(20)]
    for packet in good[:10]:  # bad tags: the last byte of the auth tag flipped
        send(packet[:-1] + bytes([packet[-1] ^ 0xFF]))
    for packet in good[10:]:  # valid once (unknown SSRC: dropped by the listener) ...
        send(packet)
    for packet in good[10:]:  # ... then replayed
        send(packet)
    real_ssrc = w.pa.producers[w.producer_id].rtpSender._ssrc
    for i in range(10):  # plain RTP with the real producer's SSRC: never forwarded
        send(rtp(real_ssrc, 50_000 + i))
    await asyncio.sleep(0.5)
    s1 = w.server_send.get_stats()
    assert s1["srtpAuthFailures"] - s0["srtpAuthFailures"] == 20  # 10 bad tags + 10 plain
    assert s1["srtpReplayFailures"] - s0["srtpReplayFailures"] == 10
    assert s1["packetsDropped"] - s0["packetsDropped"] == 10  # the valid-once unknown-SSRC ones
    await media_keeps_flowing(w)


async def test_truncated_dtls_and_garbage_inside_valid_srtp_are_dropped(pair):
    w = pair
    dtls, send = client_path(w.pa.send_transport)
    tx = dtls._tx_srtp  # only ever used for SSRCs the client does not send (its own streams must not move)
    s0 = w.server_send.get_stats()
    # truncated / bogus DTLS records after the handshake
    for blob in (b"\x16\xfe\xfd", b"\x17\xfe\xfd\x00\x01" + os.urandom(20), b"\x15\xfe\xfd" + b"\x00" * 8,
                 b"\x16\xfe\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10" + os.urandom(5)):
        send(blob)
    # well-encrypted RTP whose header lies: CSRC count 15, extension with a huge length, padding
    sent = 0
    bodies = [
        rtp(0x0EE0EE01, 7, first=0x8F, payload=os.urandom(64)),  # 15 CSRCs, then nothing
        rtp(0x0EE0EE02, 8, first=0x90, payload=b"\xbe\xde\x00\x40" + os.urandom(8)),  # ext longer than packet
        rtp(0x0EE0EE03, 9, first=0xA0, payload=os.urandom(10) + b"\xff"),  # padding longer than payload
        rtp(0x0EE0EE04, 10, first=0xBF, payload=os.urandom(80)),  # everything at once
    ]
    for body in bodies:
        try:
            send(tx.protect(body))
            sent += 1
        except Exception:  # noqa: BLE001 - libsrtp itself refuses some of these headers
            pass
    assert sent >= 2
    # well-encrypted RTCP with bad lengths / unknown types / truncated feedback
    for body in (
        struct.pack("!BBHI", 0x81, 205, 0xFFFF, 1) + os.urandom(8),  # NACK claiming a huge length
        struct.pack("!BBHII", 0x8F, 206, 2, 1, 2),  # REMB-shaped but truncated
        struct.pack("!BBHI", 0x80, 250, 1, 1),  # unknown type
        struct.pack("!BBHIIII", 0x81, 201, 7, 1, 2, 3, 4),  # RR with a block cut short
    ):
        send(tx.protect_rtcp(body))
    await asyncio.sleep(0.5)
    s1 = w.server_send.get_stats()
    assert not w.server_send.closed, "garbage from the validated tuple closed the transport"
    assert s1["dtlsDatagramsDropped"] >= s0["dtlsDatagramsDropped"]
    # they decrypted fine (type 250 is outside RFC 5761's RTCP range, so it is tried as RTP and fails)
    assert s1["srtpAuthFailures"] - s0["srtpAuthFailures"] <= 1
    assert s1["rtcpPacketsReceived"] - s0["rtcpPacketsReceived"] >= 3
    await media_keeps_flowing(w)


# --- garbage on the UDP ports -------------------------------------------------------------------


def stun_request(username: str | None, password: str | None, *, priority: bool = True) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    if username is not None:
        msg.attributes["USERNAME"] = username
    if priority:
        msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLING"] = 1
    if password is not None:
        msg.add_message_integrity(password.encode())
    return bytes(msg)


def garbage_datagrams(ufrag: str) -> list[bytes]:
    valid = stun_request(f"{ufrag}:x", "wrong-password")
    return [
        os.urandom(1), os.urandom(100), os.urandom(1400), b"\x00", b"\x00\x01\x00", valid[:12], valid[:-3],
        b"\x00\x01\x00\x08" + os.urandom(16),  # header claims 8 bytes of attributes that are junk
        bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)),  # a stray response: ignored
        stun_request("nobody:x", "pw"),  # unknown ufrag
        valid,  # right ufrag, wrong password -> 401
        stun_request(f"{ufrag}:x", None),  # no MESSAGE-INTEGRITY -> 400
        b"\x16\xfe\xfd" + os.urandom(40),  # DTLS from an unknown tuple
        b"\x80\x60" + os.urandom(40),  # SRTP from an unknown tuple
    ]


async def blast(port: int, datagrams: list[bytes], rounds: int = 20) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        for _ in range(rounds):
            for d in datagrams:
                sock.sendto(d, ("127.0.0.1", port))
            await asyncio.sleep(0.005)
    finally:
        sock.close()


async def test_garbage_on_the_shared_port_is_dropped_and_counted(pair):
    w = pair
    worker = w.app.workers[0]
    ufrag = w.server_send.ice.ufrag
    i0 = worker.get_stats()["udp"]["ice"]
    await blast(worker.webrtc_server.port, garbage_datagrams(ufrag))
    await asyncio.sleep(0.3)
    i1 = worker.get_stats()["udp"]["ice"]
    assert i1["malformed"] > i0["malformed"]
    assert i1["stunUnauthorized"] - i0["stunUnauthorized"] == 20
    assert i1["stunUnknownUfrag"] - i0["stunUnknownUfrag"] == 20
    assert i1["stunBadRequest"] - i0["stunBadRequest"] >= 20
    assert i1["stunIgnored"] > i0["stunIgnored"]
    assert i1["unknownTuple"] - i0["unknownTuple"] >= 40
    assert i1["stunSuccess"] - i0["stunSuccess"] < 40  # only the real clients' consent checks
    assert w.server_send.ice.selected_tuple is not None and w.server_send.ice.state in ("connected", "completed")
    await media_keeps_flowing(w)


async def test_garbage_on_a_per_transport_port_is_dropped_and_counted():
    w = await make_pair("per-transport")
    try:
        transport = w.server_send
        port = transport.get_stats()["udp"]["localPort"]
        assert w.app.workers[0].webrtc_server is None
        i0 = transport._ice_server.stats()
        await blast(port, garbage_datagrams(transport.ice.ufrag))
        await asyncio.sleep(0.3)
        i1 = transport._ice_server.stats()
        assert i1["stunUnauthorized"] - i0["stunUnauthorized"] == 20
        assert i1["malformed"] > i0["malformed"] and i1["unknownTuple"] - i0["unknownTuple"] >= 40
        assert transport.get_stats()["udp"]["handlerErrors"] == 0
        await media_keeps_flowing(w)
    finally:
        await close_pair(w)
