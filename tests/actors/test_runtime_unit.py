"""Slot planning, the error hop mapping and the CLI's configuration errors (no Ray started)."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from actors.cli import main
from actors.hop import call, to_studyrooms_error
from actors.runtime import NodeInfo, plan_media_slots, signaling_node
from studyrooms.errors import InternalError, NotFoundError, RoomFullError


def node(nid, cpus=2, slots=0, signaling=False, head=False):
    return NodeInfo(nid, "127.0.0.1", cpus, slots, signaling, head)


def test_one_worker_per_slot_interleaved_over_nodes():
    nodes = [node("head", cpus=0, signaling=True, head=True), node("a", slots=2), node("b", slots=1)]
    plan = plan_media_slots(nodes)
    assert [(s.node_id, s.index, s.use_resource) for s in plan] == [("a", 0, True), ("b", 1, True), ("a", 2, True)]
    assert [s.node_id for s in plan_media_slots(nodes, 2)] == ["a", "b"]
    assert signaling_node(nodes).node_id == "head"


def test_the_directory_prefers_the_head_among_several_signaling_nodes():
    """Whatever order Ray lists the nodes in, the directory goes to the head when it can serve
    signaling (another signaling node may be removed: its front fails over, the directory must not)."""
    c, a, head = node("c", cpus=0, signaling=True), node("a", slots=1, signaling=True), node("head", signaling=True, head=True)
    for order in ([c, a, head], [a, head, c], [head, c, a]):
        assert signaling_node(order).node_id == "head"
    assert signaling_node([c, node("head", cpus=0, head=True), a]).node_id == "a"  # the head serves no signaling
    assert signaling_node([node("x"), node("head", head=True)]).node_id == "head"


def test_without_media_slots_one_worker_per_cpu():
    plan = plan_media_slots([node("only", cpus=2, head=True)])
    assert [(s.node_id, s.use_resource) for s in plan] == [("only", False), ("only", False)]
    assert len(plan_media_slots([node("only", cpus=2)], 3)) == 3


def test_hop_keeps_error_kinds():
    err = NotFoundError("router x not found")
    wrapped = RayTaskError("request", "tb", err)
    assert to_studyrooms_error(wrapped) is err
    assert type(to_studyrooms_error(RoomFullError("full"))) is RoomFullError
    died = to_studyrooms_error(ActorDiedError(), "media worker w0")
    assert type(died) is InternalError and "unavailable" in died.message
    assert "unavailable" in to_studyrooms_error(ActorUnavailableError("x", None)).message
    assert type(to_studyrooms_error(RayTaskError("f", "tb", KeyError("k")))) is InternalError


async def test_call_times_out_as_internal_error():
    async def slow():
        await asyncio.sleep(5)

    with pytest.raises(InternalError, match="timed out"):
        await call(slow(), timeout_s=0.05)


@pytest.mark.parametrize(
    "argv, env, needle",
    [
        (["serve", "--host", "0.0.0.0"], {}, "STUDYROOMS_AUTH_SECRET"),
        (["serve"], {"STUDYROOMS_RTC_MIN_PORT": "abc"}, "rtc_min_port"),
        (["serve", "--port", "70000"], {}, "port"),
        (["serve", "--nope"], {}, "unrecognized"),
        (["token", "--room", "r", "--name", "n"], {}, "STUDYROOMS_AUTH_SECRET"),
    ],
)
def test_config_errors_are_one_line_exit_2(argv, env, needle, capsys, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("STUDYROOMS_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_token_is_signed(capsys, monkeypatch):
    monkeypatch.setenv("STUDYROOMS_AUTH_SECRET", "s3cret-for-tests-only-32-bytes!!")
    assert main(["token", "--room", "algebra", "--name", "Amy"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count(".") == 2  # a JWT
