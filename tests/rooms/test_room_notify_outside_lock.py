"""The room's lock is never held while clients are notified (ARCHITECTURE habit 15): a notification
whose delivery runs the recipient's disconnect inline (engine.io does so for a socket past its ping
timeout) must not deadlock with that disconnect, and the room's other requests do not wait for it."""

from __future__ import annotations

import asyncio

from roomfakes import session
from studyrooms.rooms.outbox import OutboxLock, send_in_order


class DisconnectingNotifier:
    """Delivering anything to ``hung`` first runs its disconnect (like engine.io's send)."""

    def __init__(self) -> None:
        self.service = None
        self.sent: list[tuple[str, str]] = []
        self.hung_gone = False

    async def notify(self, route: str, sid: str, event: str, data: dict) -> None:
        if sid == "hung" and not self.hung_gone:
            self.hung_gone = True
            await self.service.disconnect(session("hung"))  # needs the room's lock
        self.sent.append((sid, event))


async def test_a_notification_that_disconnects_its_recipient_does_not_deadlock(make_service):
    svc = make_service()
    notifier = DisconnectingNotifier()
    svc.notifier = notifier
    for sid in ("amy", "hung"):
        await svc.request(session(sid), "join-room", {"roomId": "r", "displayName": sid})
    svc.rooms["r"].notifier = notifier
    notifier.service = svc
    # Bob's join notifies hung -> hung's disconnect -> room.leave (the lock) -> participant-left
    ack = await asyncio.wait_for(svc.request(session("bob"), "join-room", {"roomId": "r", "displayName": "Bob"}), 2)
    assert [p["displayName"] for p in ack["participants"]] == ["amy", "hung"]
    stats = await asyncio.wait_for(svc.request(session("amy"), "get-stats", {}), 2)
    assert stats["participantCount"] == 2
    assert ("amy", "participant-joined") in notifier.sent and ("amy", "participant-left") in notifier.sent
    assert ("bob", "participant-left") in notifier.sent


async def test_notifications_wait_for_the_release_and_keep_their_order_per_recipient():
    sent: list[tuple[str, str]] = []
    gate = asyncio.Event()

    async def deliver(recipient: str, event: str, data: dict) -> None:
        if recipient == "slow":
            await gate.wait()
        sent.append((recipient, event))

    async def send(batch):
        await send_in_order(batch, deliver, key=lambda r: r)

    lock = OutboxLock(send)
    assert not lock.post(["a"], "x", {})  # not held: the caller sends now

    async def holder():
        async with lock:
            assert lock.post(["a", "slow"], "first", {}) and lock.post(["a"], "second", {})
            assert lock.pending == 2
            await asyncio.sleep(0.01)
            assert sent == []  # nothing goes out while the lock is held

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    assert sent == [("a", "first"), ("a", "second")] and not task.done()  # a is not held up by slow
    gate.set()
    await asyncio.wait_for(task, 1)
    assert sent[-1] == ("slow", "first")


async def test_the_lock_is_free_while_the_holder_delivers():
    gate = asyncio.Event()
    order: list[str] = []

    async def send(batch):
        order.append("delivering")
        await gate.wait()
        order.append("delivered")

    lock = OutboxLock(send)

    async def holder():
        async with lock:
            lock.post(["x"], "e", {})

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    assert order == ["delivering"] and not lock.locked()
    async with lock:  # another operation runs meanwhile
        order.append("other")
    gate.set()
    await task
    assert order == ["delivering", "other", "delivered"]
