"""Wire models: every event's good payload is accepted, every bad field is named, nothing but
InvalidRequestError ever escapes parse_request."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyrooms.errors import WIRE_CODES, InvalidRequestError
from studyrooms.protocol import ERROR_CODES, EVENTS, NOTIFICATIONS, RESPONSES, parse_request
from studyrooms.protocol import messages as m

OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
        "parameters": {"minptime": 10, "useinbandfec": 1}, "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]}
RTP_PARAMETERS = {  # what mediasoup-client sends for a Chrome microphone
    "mid": "0",
    "codecs": [OPUS],
    "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": False, "parameters": {}}],
    "encodings": [{"ssrc": 3735928559, "dtx": False}],
    "rtcp": {"cname": "abc", "reducedSize": True},
}
SIMULCAST = {
    "mid": "1",
    "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
                "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]},
               {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}}],
    "encodings": [{"rid": "r0", "active": True, "scalabilityMode": "L1T3", "maxBitrate": 100000},
                  {"rid": "r1", "active": True, "scaleResolutionDownBy": 2.0, "maxBitrate": 300000}],
    "msid": "stream track",  # unknown nested keys are kept (mediasoup formats grow)
}
CAPS = {
    "codecs": [{"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
                "preferredPayloadType": 100, "parameters": {}, "rtcpFeedback": []}],
    "headerExtensions": [{"kind": "video", "uri": "urn:3gpp:video-orientation", "preferredId": 11,
                          "preferredEncrypt": False, "direction": "sendrecv"}],
}
DTLS = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": "AB:CD:EF"}]}

GOOD: dict[str, dict | None] = {
    "join-room": {"roomId": "math-101", "displayName": "Ada"},
    "get-rtp-capabilities": None,
    "create-transport": {"direction": "send"},
    "connect-transport": {"transportId": "t1", "dtlsParameters": DTLS},
    "produce": {"transportId": "t1", "kind": "audio", "rtpParameters": RTP_PARAMETERS, "appData": {"source": "mic"}},
    "consume": {"transportId": "t2", "producerId": "p1", "rtpCapabilities": CAPS},
    "resume-consumer": {"consumerId": "c1"},
    "pause-consumer": {"consumerId": "c1"},
    "pause-producer": {"producerId": "p1"},
    "resume-producer": {"producerId": "p1"},
    "close-producer": {"producerId": "p1"},
    "set-preferred-layers": {"consumerId": "c1", "spatialLayer": 2, "temporalLayer": 1},
    "set-receive-constraints": {"lastN": 2, "onStage": ["p1"], "maxHeight": 180},
    "set-consumer-priority": {"consumerId": "c1", "priority": 200},
    "restart-ice": {"transportId": "t1"},
    "get-stats": None,
    "leave-room": None,
}

# (event, dotted path, bad value, field named in the message)
BAD_FIELDS = [
    ("join-room", "roomId", "", "roomId"),
    ("join-room", "roomId", "x" * 65, "roomId"),
    ("join-room", "roomId", "a/b", "roomId"),
    ("join-room", "roomId", 7, "roomId"),
    ("join-room", "displayName", "   ", "displayName"),
    ("join-room", "displayName", "x" * 65, "displayName"),
    ("join-room", "displayName", "bell\x07", "displayName"),
    ("join-room", "displayName", None, "displayName"),
    ("create-transport", "direction", "both", "direction"),
    ("connect-transport", "transportId", "t" * 65, "transportId"),
    ("connect-transport", "dtlsParameters.role", "master", "dtlsParameters.role"),
    ("connect-transport", "dtlsParameters.fingerprints", [], "dtlsParameters.fingerprints"),
    ("connect-transport", "dtlsParameters.fingerprints", [{"algorithm": "sha-256"}] * 1, "dtlsParameters.fingerprints.0.value"),
    ("connect-transport", "dtlsParameters", "x", "dtlsParameters"),
    ("produce", "kind", "data", "kind"),
    ("produce", "appData.source", "webcam", "appData.source"),
    ("produce", "appData.extra", 1, "appData.extra"),
    ("produce", "rtpParameters.codecs", [], "rtpParameters.codecs"),
    ("produce", "rtpParameters.codecs", [OPUS] * 33, "rtpParameters.codecs"),
    ("produce", "rtpParameters.codecs.0.payloadType", "111", "rtpParameters.codecs.0.payloadType"),
    ("produce", "rtpParameters.codecs.0.payloadType", 128, "rtpParameters.codecs.0.payloadType"),
    ("produce", "rtpParameters.codecs.0.clockRate", 48000.5, "rtpParameters.codecs.0.clockRate"),
    ("produce", "rtpParameters.codecs.0.mimeType", "x" * 300, "rtpParameters.codecs.0.mimeType"),
    ("produce", "rtpParameters.codecs.0.parameters", {"a": "x" * 257}, "rtpParameters.codecs.0.parameters"),
    ("produce", "rtpParameters.encodings", [{}] * 33, "rtpParameters.encodings"),
    ("produce", "rtpParameters.encodings.0.ssrc", -1, "rtpParameters.encodings.0.ssrc"),
    ("produce", "rtpParameters.mid", "m" * 40, "rtpParameters.mid"),
    ("produce", "rtpParameters.bigExtra", "x" * 300, "rtpParameters"),
    ("consume", "producerId", "", "producerId"),
    ("consume", "rtpCapabilities.codecs", "opus", "rtpCapabilities.codecs"),
    ("consume", "rtpCapabilities.codecs.0.kind", "data", "rtpCapabilities.codecs.0.kind"),
    ("consume", "rtpCapabilities.headerExtensions.0.preferredId", 0, "rtpCapabilities.headerExtensions.0.preferredId"),
    ("resume-consumer", "consumerId", ["c1"], "consumerId"),
    ("pause-consumer", "consumerId", "c 1", "consumerId"),
    ("pause-producer", "producerId", None, "producerId"),
    ("resume-producer", "producerId", 1, "producerId"),
    ("close-producer", "producerId", "", "producerId"),
    ("set-preferred-layers", "spatialLayer", -1, "spatialLayer"),
    ("set-preferred-layers", "spatialLayer", True, "spatialLayer"),
    ("set-preferred-layers", "temporalLayer", "1", "temporalLayer"),
    ("set-consumer-priority", "priority", 0, "priority"),
    ("set-consumer-priority", "priority", 256, "priority"),
    ("set-consumer-priority", "priority", "9", "priority"),
    ("set-consumer-priority", "priority", True, "priority"),
    ("restart-ice", "transportId", {}, "transportId"),
    ("set-receive-constraints", "lastN", -1, "lastN"),
    ("set-receive-constraints", "lastN", "2", "lastN"),
    ("set-receive-constraints", "lastN", True, "lastN"),
    ("set-receive-constraints", "onStage", "p1", "onStage"),
    ("set-receive-constraints", "onStage", ["p 1"], "onStage.0"),
    ("set-receive-constraints", "onStage", ["p"] * 9, "onStage"),
    ("set-receive-constraints", "maxHeight", 2.5, "maxHeight"),
    ("set-receive-constraints", "maxHeight", -1, "maxHeight"),
]


def with_value(payload: dict, dotted: str, value) -> dict:
    payload = copy.deepcopy(payload)
    node = payload
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    node[int(last) if isinstance(node, list) else last] = value
    return payload


def without(payload: dict, key: str) -> dict:
    payload = copy.deepcopy(payload)
    del payload[key]
    return payload


def test_registry_matches_the_protocol_table():
    assert set(EVENTS) == set(GOOD) == set(RESPONSES)
    replies = {e: spec.reply_event for e, spec in EVENTS.items() if spec.reply_event}
    assert replies == {
        "get-rtp-capabilities": "rtp-capabilities",
        "create-transport": "transport-created",
        "connect-transport": "transport-connected",
        "produce": "produced",
        "consume": "consumed",
    }
    assert set(NOTIFICATIONS) == {
        "participant-joined", "participant-left", "new-producer", "producer-closed", "consumer-closed",
        "consumer-paused", "consumer-resumed", "recommend-audio-only", "active-speaker", "consumer-layers-changed",
        "forwarding-changed",
        "media-reset", "room-reset",
    }
    assert set(ERROR_CODES) == set(WIRE_CODES)


@pytest.mark.parametrize("event", sorted(GOOD))
def test_good_payload_is_accepted(event):
    payload = GOOD[event]
    model = parse_request(event, payload)
    assert model.wire() == (payload or {})
    if payload is None:
        assert parse_request(event, {}).wire() == {}


def test_nested_parameters_keep_unknown_keys_and_strip_display_name():
    model = parse_request("produce", {"transportId": "t", "kind": "video", "rtpParameters": SIMULCAST})
    assert model.wire()["rtpParameters"] == SIMULCAST
    assert model.source() == "camera"
    assert parse_request("join-room", {"roomId": "r", "displayName": "  Ada  "}).display_name == "Ada"
    assert parse_request("set-preferred-layers", {"consumerId": "c", "spatialLayer": 0}).wire() == {
        "consumerId": "c", "spatialLayer": 0}


@pytest.mark.parametrize("event,path,value,field", BAD_FIELDS, ids=[f"{e}:{p}" for e, p, _, _ in BAD_FIELDS])
def test_each_bad_field_is_named(event, path, value, field):
    with pytest.raises(InvalidRequestError) as info:
        parse_request(event, with_value(GOOD[event], path, value))
    assert info.value.code == "invalid-request"
    assert f" {field}" in info.value.message or f"{field}:" in info.value.message, info.value.message


@pytest.mark.parametrize("event", sorted(e for e, p in GOOD.items() if p))
def test_each_missing_field_is_named(event):
    required = [k for k, f in EVENTS[event].request.model_fields.items() if f.is_required()]
    aliases = {k: EVENTS[event].request.model_fields[k].alias for k in required}
    for name in required:
        with pytest.raises(InvalidRequestError) as info:
            parse_request(event, without(GOOD[event], aliases[name]))
        assert aliases[name] in info.value.message


@pytest.mark.parametrize("event", sorted(GOOD))
def test_unknown_keys_and_snake_case_are_rejected(event):
    for key in ("unknown", "room_id", "transport_id"):
        with pytest.raises(InvalidRequestError) as info:
            parse_request(event, {**(GOOD[event] or {}), key: "x"})
        assert key in info.value.message


@pytest.mark.parametrize("event", sorted(GOOD))
def test_non_object_payloads(event):
    for payload in ([], "x", 3, True):
        with pytest.raises(InvalidRequestError):
            parse_request(event, payload)
    if GOOD[event] is not None:
        with pytest.raises(InvalidRequestError) as info:
            parse_request(event, None)
        assert "payload" in info.value.message


def test_unknown_event():
    with pytest.raises(InvalidRequestError) as info:
        parse_request("hack", {})
    assert "unknown event" in info.value.message
    with pytest.raises(InvalidRequestError):
        parse_request(None, {})  # type: ignore[arg-type]


def test_deep_nesting_is_bounded():
    deep: dict = {}
    node = deep
    for _ in range(20):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(InvalidRequestError):
        parse_request("produce", with_value(GOOD["produce"], "rtpParameters.codecs.0.parameters", deep))


def test_out_models_serialise_camel_case():
    assert m.NewProducer(producer_id="p", participant_id="a", kind="video", source="screen").wire() == {
        "producerId": "p", "participantId": "a", "kind": "video", "source": "screen"}
    assert m.ActiveSpeaker(participant_id=None, volume=-40).wire() == {"participantId": None, "volume": -40}
    assert m.RecommendAudioOnly(participant_count=41, threshold=40).wire() == {"participantCount": 41, "threshold": 40}
    assert m.ErrorEvent(event="produce", code="forbidden", message="no").wire() == {
        "event": "produce", "code": "forbidden", "message": "no"}


# --- property tests -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=40,
)
any_event = st.sampled_from(sorted(GOOD)) | st.text(max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=any_event, payload=json_values)
def test_random_json_only_ever_raises_invalid_request(event, payload):
    try:
        parse_request(event, payload)
    except InvalidRequestError:
        pass


def _paths(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{prefix}.{k}" if prefix else k
            yield p
            yield from _paths(v, p)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            p = f"{prefix}.{i}"
            yield p
            yield from _paths(v, p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_good_payloads_only_ever_raise_invalid_request(data):
    event = data.draw(st.sampled_from(sorted(e for e, p in GOOD.items() if p)))
    payload = GOOD[event]
    path = data.draw(st.sampled_from(list(_paths(payload))))
    mutated = with_value(payload, path, data.draw(json_values))
    try:
        model = parse_request(event, mutated)
    except InvalidRequestError as exc:
        assert exc.message.startswith(event + ":")
    else:
        parse_request(event, model.wire())  # what we forward validates again


@pytest.mark.parametrize(
    "event, payload, expected",
    [
        ("join-room", {"roomId": "maths.101", "displayName": "Ada"},
         "join-room: roomId: use 1-64 letters, digits, '-' or '_' (no spaces or dots)"),
        ("join-room", {"roomId": "x" * 65, "displayName": "Ada"}, "join-room: roomId: must be at most 64 characters"),
        ("join-room", {"roomId": "", "displayName": "Ada"}, "join-room: roomId: must not be empty"),
        ("join-room", {"displayName": "Ada"}, "join-room: roomId: is required"),
        ("join-room", {"roomId": "r", "displayName": "Ada", "x": 1}, "join-room: x: is not a known field"),
        ("join-room", {"roomId": 5, "displayName": "Ada"}, "join-room: roomId: must be text"),
        ("join-room", {"roomId": "r", "displayName": "a\x07b"}, "join-room: displayName: control characters are not allowed"),
        ("create-transport", {"direction": "up"}, "create-transport: direction: must be one of 'send' or 'recv'"),
    ],
)
def test_validation_errors_read_as_words(event, payload, expected):
    with pytest.raises(InvalidRequestError) as info:
        parse_request(event, payload)
    assert info.value.message == expected
    assert "should" not in info.value.message and "Input" not in info.value.message
def test_healing_notifications_have_the_contract_shapes():
    from studyrooms.protocol import messages as m

    producer = m.ProducerInfo(producer_id="p1", participant_id="a", kind="video", source="camera")
    assert m.MediaReset(reason="media worker worker-0 died", producers=[producer]).wire() == {
        "reason": "media worker worker-0 died",
        "producers": [{"producerId": "p1", "participantId": "a", "kind": "video", "source": "camera"}],
    }
    assert m.RoomReset(reason="room host restarted").wire() == {"reason": "room host restarted"}
