"""Session resume over real Socket.IO (docs/protocol.md "Session resume"): ``resume``/``resumeKey``
in the connect ``auth`` payload; a dropped connection keeps the participant and a new socket with
the key gets it back; a socket the client closes on purpose is a leave; keys are refused for
another token identity."""

from __future__ import annotations

import asyncio

from sighelpers import Client


def ok(reply: dict) -> dict:
    assert reply.get("ok") is True, reply
    return reply["data"]


async def connect(stack, auth: dict) -> Client:
    c = Client()
    stack.clients.append(c)
    await c.sio.connect(stack.url, auth=auth, transports=["websocket"], wait_timeout=5)
    return c


async def drop(client: Client) -> None:
    """The connection is lost (no leave-room, no socket.io disconnect): the websocket just closes."""
    await client.sio.eio.ws.close()
    for _ in range(200):
        if not client.sio.connected:
            return
        await asyncio.sleep(0.01)


async def until(predicate, timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_dropped_socket_resumes_through_its_key_and_a_closed_one_leaves(stack):
    ada_token = stack.token("ada", "Ada")
    ada = await connect(stack, {"token": ada_token, "resume": True})
    first = ok(await ada.call("join-room", {"roomId": "room1", "displayName": "Ada"}))
    assert first["resumed"] is False and len(first["resumeKey"]) >= 40
    bob = await connect(stack, {"token": stack.token("bob", "Bob")})
    plain = ok(await bob.call("join-room", {"roomId": "room1", "displayName": "Bob"}))
    assert "resumeKey" not in plain  # a client that did not ask sees the ack of protocol.md §2
    send = ok(await ada.call("create-transport", {"direction": "send"}))

    await drop(ada)
    room = stack.service.rooms["room1"]
    await until(lambda: room.participants[first["participantId"]].detached_at is not None)
    assert bob.got("participant-left") == []

    # the key with another user's token: an ordinary join, not Ada's participant
    eve = await connect(stack, {"token": stack.token("eve", "Eve"), "resumeKey": first["resumeKey"]})
    assert ok(await eve.call("join-room", {"roomId": "room1", "displayName": "Eve"}))["resumed"] is False
    # Ada's client comes back with its key: the same participant, its transport still there
    ada2 = await connect(stack, {"token": ada_token, "resumeKey": first["resumeKey"]})
    back = ok(await ada2.call("join-room", {"roomId": "room1", "displayName": "Ada"}))
    assert back["resumed"] is True and back["participantId"] == first["participantId"]
    assert {p["displayName"] for p in back["participants"]} == {"Bob", "Eve"}
    assert ok(await ada2.call("restart-ice", {"transportId": send["id"]}))  # bound to this socket
    await bob.call("leave-room", {})
    assert (await ada2.wait_for("participant-left"))[0]["displayName"] == "Bob"

    # closing the socket on purpose (socket.io's DISCONNECT packet reaches the server) is leaving:
    # Eve is told at once
    from socketio import packet

    await ada2.sio._send_packet(packet.Packet(packet.DISCONNECT, namespace="/"))
    await asyncio.sleep(0.2)
    await drop(ada2)
    left = await eve.wait_for("participant-left", count=2)  # Bob, then Ada
    assert left[-1]["participantId"] == first["participantId"]
    assert stack.service.dump()["detached"] == 0
