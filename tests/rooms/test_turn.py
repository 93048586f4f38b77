"""TURN settings and the TURN REST credentials of the join-room ack (studyrooms/rooms/turn.py).

The credentials are checked against an independent HMAC implementation (openssl) here and against
real coturn in tests/integration/test_turn_coturn.py."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess

import pytest

from roomfakes import FakeDirectory, RecordingNotifier, session
from studyrooms.clock import FakeClock
from studyrooms.config import Settings, TurnSettings
from studyrooms.errors import InvalidRequestError
from studyrooms.ids import IdFactory
from studyrooms.rooms import RoomService
from studyrooms.rooms.turn import ice_servers, turn_credential

SECRET = "s3cret-static-auth-secret"
URLS = "turn:turn.example.org:3478?transport=udp, turn:turn.example.org:3478?transport=tcp, " \
       "turns:turn.example.org:443?transport=tcp"
TURN_ENV = {"STUDYROOMS_TURN_URLS": URLS, "STUDYROOMS_TURN_SECRET": SECRET}


def test_env_names_build_the_turn_section():
    turn = Settings.from_env({**TURN_ENV, "STUDYROOMS_TURN_TTL_S": "600", "STUDYROOMS_TURN_RELAY_ONLY": "true"}).turn
    assert turn.urls == ("turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp",
                         "turns:turn.example.org:443?transport=tcp")
    assert turn.ttl_s == 600 and turn.relay_only and turn.enabled
    assert Settings.from_env(TURN_ENV).turn.ttl_s == 6 * 3600  # default: 6 h
    off = Settings.from_env({}).turn
    assert not off.enabled and off.secret is None and not off.relay_only
    assert off.summary() == "off" and SECRET not in turn.summary() and turn.summary().endswith("600 s; relay-only")


@pytest.mark.parametrize("env, needle", [
    ({"STUDYROOMS_TURN_URLS": URLS}, "STUDYROOMS_TURN_URLS needs STUDYROOMS_TURN_SECRET"),
    ({"STUDYROOMS_TURN_SECRET": SECRET}, "STUDYROOMS_TURN_URLS is empty"),
    ({**TURN_ENV, "STUDYROOMS_TURN_SECRET": "short"}, "at least 16 characters"),
    ({**TURN_ENV, "STUDYROOMS_TURN_URLS": "https://turn.example.org"}, "not a turn:/turns: URL"),
    ({**TURN_ENV, "STUDYROOMS_TURN_URLS": "stun:stun.example.org:3478"}, "not a turn:/turns: URL"),
    ({**TURN_ENV, "STUDYROOMS_TURN_URLS": "turn:a:3478?transport=sctp"}, "not a turn:/turns: URL"),
    ({**TURN_ENV, "STUDYROOMS_TURN_URLS": "turn:a:99999"}, "port out of range"),
    ({**TURN_ENV, "STUDYROOMS_TURN_URLS": "turns:a:443?transport=udp"}, "transport=tcp"),
    ({**TURN_ENV, "STUDYROOMS_TURN_TTL_S": "10"}, "turn.ttl_s"),
    ({**TURN_ENV, "STUDYROOMS_TURN_TTL_S": "six hours"}, "turn.ttl_s"),
    ({"STUDYROOMS_TURN_RELAY_ONLY": "1"}, "STUDYROOMS_TURN_RELAY_ONLY needs STUDYROOMS_TURN_URLS"),
])
def test_bad_turn_settings_are_one_line_errors_without_the_secret(env, needle):
    with pytest.raises(InvalidRequestError) as info:
        Settings.from_env(env)
    message = info.value.message
    assert needle in message and message.startswith("invalid setting turn") and "\n" not in message
    assert SECRET not in message


def test_the_secret_never_shows_in_reprs():
    settings = Settings.from_env(TURN_ENV)
    assert SECRET not in repr(settings) and SECRET not in str(settings.turn)
    assert SECRET not in str(settings.model_dump(mode="json"))


def test_credential_is_coturn_rest_form_checked_with_openssl():
    turn = TurnSettings(urls=("turn:127.0.0.1:3478",), secret=SECRET, ttl_s=3600)
    [server] = ice_servers(turn, "p-42", now_s=1_700_000_000.7)
    assert server["urls"] == ["turn:127.0.0.1:3478"]
    assert server["username"] == f"{1_700_000_000 + 3600}:p-42"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed for this check (Debian's openssl package)"
    digest = subprocess.run([openssl, "dgst", "-sha1", "-hmac", SECRET, "-binary"], input=server["username"].encode(),
                            capture_output=True, check=True, timeout=10).stdout
    assert server["credential"] == base64.b64encode(digest).decode() == turn_credential(SECRET, server["username"])
    assert ice_servers(TurnSettings(), "p-42", 1.0) == []


def _service(settings: Settings, clock: FakeClock) -> RoomService:
    return RoomService(settings, FakeDirectory(1), RecordingNotifier(), clock, "host-1", id_factory=IdFactory("p"))


async def _join(svc: RoomService, sid: str) -> dict:
    return await svc.request(session(sid), "join-room", {"roomId": "maths", "displayName": sid})


async def test_join_ack_carries_fresh_credentials_per_participant_and_rejoin(caplog):
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    svc = _service(Settings.from_env({**TURN_ENV, "STUDYROOMS_TURN_TTL_S": "900"}), clock)
    try:
        a = await _join(svc, "a")
        [server] = a["iceServers"]
        assert set(server) == {"urls", "username", "credential"} and "iceTransportPolicy" not in a
        assert server["urls"] == list(Settings.from_env(TURN_ENV).turn.urls)
        assert server["username"] == f"{int(clock.wall()) + 900}:{a['participantId']}"
        assert server["credential"] == turn_credential(SECRET, server["username"])
        b = await _join(svc, "b")
        assert b["iceServers"][0]["username"].endswith(":" + b["participantId"])
        assert b["iceServers"][0]["credential"] != server["credential"]
        # a rejoin (leave, later join again) is a new participant with new, later credentials
        await svc.request(session("a"), "leave-room", {})
        clock.advance(120)
        again = await _join(svc, "a")
        assert again["participantId"] != a["participantId"]
        assert again["iceServers"][0]["username"] == f"{int(clock.wall()) + 900}:{again['participantId']}"
        logged = "\n".join(r.getMessage() + repr(r.args) + repr(r.__dict__) for r in caplog.records)
        for secret in (SECRET, server["credential"], again["iceServers"][0]["credential"]):
            assert secret not in logged
    finally:
        await svc.close()


async def test_operator_relay_only_is_announced_in_the_ack():
    svc = _service(Settings.from_env({**TURN_ENV, "STUDYROOMS_TURN_RELAY_ONLY": "1"}), FakeClock())
    try:
        ack = await _join(svc, "a")
        assert ack["iceTransportPolicy"] == "relay" and len(ack["iceServers"]) == 1
    finally:
        await svc.close()


async def test_without_turn_the_ack_is_unchanged():
    svc = _service(Settings(), FakeClock())
    try:
        ack = await _join(svc, "a")
        assert "iceServers" not in ack and "iceTransportPolicy" not in ack
        assert set(ack) == {"participantId", "roomId", "participants", "producers", "rtpCapabilities",
                            "recommendAudioOnly"}
    finally:
        await svc.close()
