"""studyrooms.sfu.ortc / parameters / supported_capabilities against real client parameters.

Fixtures are described in tests/sfu/fixtures/README.md. The aiortc side is generated for real with
pymediasoup (the test client); Chrome's device capabilities are derived from Chrome's native ones
with pymediasoup's port of mediasoup-client's ortc (getExtendedRtpCapabilities/getRecvRtpCapabilities).
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import h264_profile_level_id as h264_reference
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymediasoup import Device
from pymediasoup import ortc as client_ortc
from pymediasoup.handlers.aiortc_handler import AiortcHandler
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

from studyrooms.errors import InvalidRequestError, StudyRoomsError, UnsupportedError
from studyrooms.sfu import ortc
from studyrooms.sfu.parameters import (
    ConsumerStreamParams,
    ProducerStreamParams,
    codec_name,
    consumer_stream_params,
    producer_stream_params,
)
from studyrooms.sfu.supported_capabilities import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    DEFAULT_MEDIA_CODECS,
    MID_URI,
    RID_URI,
    RRID_URI,
    SUPPORTED_RTP_CAPABILITIES,
    TOFFSET_URI,
    TRANSPORT_CC_URI,
    VIDEO_ORIENTATION_URI,
)

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def counter_ssrcs(start: int = 1000):
    it = itertools.count(start)
    return lambda: next(it)


@pytest.fixture
def router_caps() -> dict:
    return ortc.generate_router_rtp_capabilities()


def dump(model) -> dict:
    return model.model_dump(exclude_none=True)


async def aiortc_device(router_caps: dict) -> Device:
    device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[]))
    await device.load(RtpCapabilities(**copy.deepcopy(router_caps)))
    return device


def chrome_device_caps(router_caps: dict) -> dict:
    """What mediasoup-client's ``device.rtpCapabilities`` is on Chrome for this router."""
    native = RtpCapabilities(**load("chrome_native_rtp_capabilities"))
    client_ortc.validateAndNormalizeRtpCapabilities(native)
    remote = RtpCapabilities(**copy.deepcopy(router_caps))
    client_ortc.validateAndNormalizeRtpCapabilities(remote)
    extended = client_ortc.getExtendedRtpCapabilities(native, remote)
    return dump(client_ortc.getRecvRtpCapabilities(extended))


def produce(name: str, router_caps: dict, kind: str | None = None):
    params = load(name)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps, ssrc_factory=counter_ssrcs(5000))
    kind = kind or params["codecs"][0]["mimeType"].split("/")[0]
    consumable = ortc.get_consumable_rtp_parameters(kind, params, router_caps, mapping)
    return params, mapping, consumable


consume = ortc.get_consumer_rtp_parameters


def codec_pts(params: dict) -> list[tuple[str, int]]:
    return [(c["mimeType"], c["payloadType"]) for c in params["codecs"]]


def uris(params: dict) -> dict[str, int]:
    return {e["uri"]: e["id"] for e in params["headerExtensions"]}


# --------------------------------------------------------------------------- capabilities


def test_supported_capabilities_have_transport_cc_remb_and_mediasoup_ids():
    caps = SUPPORTED_RTP_CAPABILITIES
    for codec in caps["codecs"]:
        assert {"type": "transport-cc", "parameter": ""} in codec["rtcpFeedback"]
        if codec["kind"] == "video":
            assert codec["rtcpFeedback"] == [
                {"type": "nack", "parameter": ""},
                {"type": "nack", "parameter": "pli"},
                {"type": "ccm", "parameter": "fir"},
                {"type": "goog-remb", "parameter": ""},
                {"type": "transport-cc", "parameter": ""},
            ]
    mimes = [c["mimeType"] for c in caps["codecs"]]
    assert mimes == ["audio/opus", "video/VP8", "video/VP9", "video/H264", "video/H264"]
    assert [c["parameters"].get("profile-level-id") for c in caps["codecs"][3:]] == ["42e01f", "4d0032"]
    ids = {(e["kind"], e["uri"]): (e["preferredId"], e["direction"]) for e in caps["headerExtensions"]}
    assert ids == {
        ("audio", MID_URI): (1, "sendrecv"),
        ("video", MID_URI): (1, "sendrecv"),
        ("video", RID_URI): (2, "recvonly"),
        ("video", RRID_URI): (3, "recvonly"),
        ("audio", ABS_SEND_TIME_URI): (4, "sendrecv"),
        ("video", ABS_SEND_TIME_URI): (4, "sendrecv"),
        ("audio", TRANSPORT_CC_URI): (5, "sendrecv"),
        ("video", TRANSPORT_CC_URI): (5, "sendrecv"),
        ("audio", AUDIO_LEVEL_URI): (10, "sendrecv"),
        ("video", VIDEO_ORIENTATION_URI): (11, "sendrecv"),
        ("video", TOFFSET_URI): (12, "sendrecv"),
    }


def test_default_router_capabilities_shape(router_caps):
    codecs = router_caps["codecs"]
    assert [(c["mimeType"], c["preferredPayloadType"]) for c in codecs] == [
        ("audio/opus", 100),
        ("video/VP8", 101),
        ("video/rtx", 102),
        ("video/H264", 103),
        ("video/rtx", 104),
    ]
    assert codecs[0] == {
        "kind": "audio",
        "mimeType": "audio/opus",
        "clockRate": 48000,
        "channels": 2,
        "preferredPayloadType": 100,
        "parameters": {"useinbandfec": 1},
        "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
    }
    assert codecs[2] == {
        "kind": "video",
        "mimeType": "video/rtx",
        "clockRate": 90000,
        "preferredPayloadType": 102,
        "parameters": {"apt": 101},
        "rtcpFeedback": [],
    }
    assert codecs[4]["parameters"] == {"apt": 103}
    assert codecs[3]["parameters"] == {
        "packetization-mode": 1,
        "profile-level-id": "42e01f",
        "level-asymmetry-allowed": 1,
    }
    assert "channels" not in codecs[1]
    assert router_caps["headerExtensions"] == SUPPORTED_RTP_CAPABILITIES["headerExtensions"]
    for ext in router_caps["headerExtensions"]:
        assert set(ext) == {"kind", "uri", "preferredId", "preferredEncrypt", "direction"}
    # transport-cc on every media codec (audio too, as mediasoup), never on RTX
    assert all(("transport-cc" in [fb["type"] for fb in c["rtcpFeedback"]]) != (c["mimeType"] == "video/rtx")
               for c in codecs)
    # generation copies: mutating the result leaves the constants alone
    router_caps["headerExtensions"].clear()
    assert SUPPORTED_RTP_CAPABILITIES["headerExtensions"]


def test_router_capabilities_custom_codecs_and_payload_types():
    media = [
        {"kind": "video", "mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 0}},
        {"mimeType": "audio/OPUS", "clockRate": 48000, "channels": 2, "preferredPayloadType": 111},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 96},
        {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
         "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032", "level-asymmetry-allowed": 1}},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 96},  # taken
    ]
    before = copy.deepcopy(media)
    caps = ortc.generate_router_rtp_capabilities(media)
    assert media == before  # input untouched
    got = [(c["mimeType"], c["preferredPayloadType"], c["parameters"].get("apt")) for c in caps["codecs"]]
    assert got == [
        ("video/VP9", 100, None),
        ("video/rtx", 101, 100),
        ("audio/opus", 111, None),
        ("video/VP8", 96, None),
        ("video/rtx", 102, 96),
        ("video/H264", 103, None),
        ("video/rtx", 104, 103),
        ("video/VP8", 105, None),  # preferred 96 not free: next dynamic one
        ("video/rtx", 106, 105),
    ]
    assert caps["codecs"][0]["parameters"] == {"profile-id": 0}
    assert caps["codecs"][5]["parameters"]["profile-level-id"] == "4d0032"


@pytest.mark.parametrize(
    "codec",
    [
        {"kind": "video", "mimeType": "video/AV1", "clockRate": 90000},
        {"kind": "video", "mimeType": "video/H265", "clockRate": 90000},
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 1},
        {"kind": "audio", "mimeType": "audio/PCMU", "clockRate": 8000},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 48000},
    ],
)
def test_router_capabilities_unsupported_codec(codec):
    with pytest.raises(UnsupportedError, match=codec["mimeType"].replace("/", "/")):
        ortc.generate_router_rtp_capabilities([codec])


@pytest.mark.parametrize(
    "media",
    [
        "opus",
        [{"mimeType": "video/rtx", "clockRate": 90000, "parameters": {"apt": 100}}],
        [{"mimeType": "vp8", "clockRate": 90000}],
        [{"mimeType": "video/VP8"}],
        [{"mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 300}],
        [{"mimeType": "video/VP8", "clockRate": 90000}] * 33,
    ],
)
def test_router_capabilities_malformed_media_codecs(media):
    with pytest.raises(InvalidRequestError):
        ortc.generate_router_rtp_capabilities(media)


def test_dynamic_payload_types_run_out():
    media = [{"mimeType": "video/VP8", "clockRate": 90000}] * 17  # 34 PTs needed, 32 dynamic
    with pytest.raises(UnsupportedError, match="payload types"):
        ortc.generate_router_rtp_capabilities(media)


def test_router_capabilities_follow_mediasoup_client_rules(router_caps):
    """mediasoup-client's Device.load: validateRtpCapabilities (kind audio|video from mimeType,
    numeric clockRate, optional numeric preferredPayloadType - pymediasoup requires it -, apt a
    number, ext kind audio|video, numeric preferredId), then codec matching by mimeType/clockRate/
    channels (+ H264 packetization-mode/profile, VP9 profile-id) and RTX pairing through apt."""
    caps = RtpCapabilities(**copy.deepcopy(router_caps))
    client_ortc.validateAndNormalizeRtpCapabilities(caps)
    for codec in router_caps["codecs"]:
        assert isinstance(codec["preferredPayloadType"], int)
        assert codec["kind"] == codec["mimeType"].split("/")[0]
        if codec["mimeType"] == "video/rtx":
            assert isinstance(codec["parameters"]["apt"], int)
    pts = [c["preferredPayloadType"] for c in router_caps["codecs"]]
    assert len(pts) == len(set(pts))


async def test_pymediasoup_device_loads_router_capabilities(router_caps):
    device = await aiortc_device(router_caps)
    assert device.loaded
    assert device.canProduce("audio") and device.canProduce("video")
    caps = dump(device.rtpCapabilities)
    got = [(c["mimeType"], c["preferredPayloadType"], c["parameters"].get("apt")) for c in caps["codecs"]]
    assert got == [
        ("audio/opus", 100, None),
        ("video/VP8", 101, None),
        ("video/rtx", 102, 101),
        ("video/H264", 103, None),
        ("video/rtx", 104, 103),
    ]
    exts = {(e["kind"], e["uri"]): e["preferredId"] for e in caps["headerExtensions"]}
    assert exts == {
        ("audio", MID_URI): 1,
        ("video", MID_URI): 1,
        ("video", ABS_SEND_TIME_URI): 4,
        ("audio", AUDIO_LEVEL_URI): 10,
    }
    # our own validator accepts what the client reports
    ortc.validate_rtp_capabilities(caps)


async def test_aiortc_sending_parameters_match_fixtures(router_caps):
    device = await aiortc_device(router_caps)
    for kind, name in (("video", "aiortc_vp8_producer"), ("audio", "aiortc_opus_producer")):
        sending = client_ortc.getSendingRtpParameters(kind, device._extendedRtpCapabilities)
        sending.codecs = client_ortc.reduceCodecs(sending.codecs, None)
        generated = dump(sending)
        fixture = load(name)
        assert generated["codecs"] == fixture["codecs"]
        assert generated["headerExtensions"] == fixture["headerExtensions"]
    assert [c["payloadType"] for c in load("aiortc_vp8_producer")["codecs"]] == [97, 98]
    assert uris(load("aiortc_vp8_producer")) == {MID_URI: 1, ABS_SEND_TIME_URI: 3}
    assert uris(load("aiortc_opus_producer")) == {MID_URI: 1, AUDIO_LEVEL_URI: 2}


def test_chrome_device_capabilities_against_router(router_caps):
    caps = chrome_device_caps(router_caps)
    ortc.validate_rtp_capabilities(caps)
    got = [(c["mimeType"], c["preferredPayloadType"]) for c in caps["codecs"]]
    assert got == [
        ("audio/opus", 100),
        ("video/VP8", 101),
        ("video/rtx", 102),
        ("video/H264", 103),
        ("video/rtx", 104),
    ]
    h264 = caps["codecs"][3]
    assert h264["parameters"]["profile-level-id"] == "42e01f"
    assert h264["parameters"]["packetization-mode"] == 1
    exts = {(e["kind"], e["uri"]): e["preferredId"] for e in caps["headerExtensions"]}
    assert exts[("video", MID_URI)] == 1 and exts[("audio", AUDIO_LEVEL_URI)] == 10
    assert exts[("video", TOFFSET_URI)] == 12 and exts[("video", VIDEO_ORIENTATION_URI)] == 11
    assert exts[("video", TRANSPORT_CC_URI)] == 5 and exts[("audio", TRANSPORT_CC_URI)] == 5


# --------------------------------------------------------------------------- validation


def test_validation_normalises_missing_fields_like_mediasoup():
    params = {
        "codecs": [
            {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000},
            {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "channels": 1,
             "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": None}]},
        ],
    }
    ortc.validate_rtp_parameters(params)
    assert params["codecs"][0]["channels"] == 1
    assert params["codecs"][0]["parameters"] == {} and params["codecs"][0]["rtcpFeedback"] == []
    assert "channels" not in params["codecs"][1]
    assert params["codecs"][1]["rtcpFeedback"] == [{"type": "nack", "parameter": ""}] * 2
    assert params["headerExtensions"] == [] and params["encodings"] == []
    assert params["rtcp"] == {"reducedSize": True}

    ext_params = {"codecs": [], "headerExtensions": [{"uri": MID_URI, "id": 1}], "encodings": [{"ssrc": 1}]}
    ortc.validate_rtp_parameters(ext_params)
    assert ext_params["headerExtensions"][0] == {"uri": MID_URI, "id": 1, "encrypt": False, "parameters": {}}
    assert ext_params["encodings"][0] == {"ssrc": 1, "dtx": False}

    caps = {"codecs": [{"mimeType": "Video/VP8", "clockRate": 90000}], "headerExtensions": [
        {"kind": "video", "uri": MID_URI, "preferredId": 1}]}
    ortc.validate_rtp_capabilities(caps)
    assert caps["codecs"][0]["kind"] == "video"
    assert caps["headerExtensions"][0]["direction"] == "sendrecv"
    assert caps["headerExtensions"][0]["preferredEncrypt"] is False
    empty: dict = {}
    ortc.validate_rtp_capabilities(empty)
    assert empty == {"codecs": [], "headerExtensions": []}


def test_real_fixtures_validate():
    for name in ("chrome_vp8_producer", "chrome_opus_producer", "chrome_vp8_simulcast_producer",
                 "aiortc_vp8_producer", "aiortc_opus_producer"):
        ortc.validate_rtp_parameters(load(name))
    native = load("chrome_native_rtp_capabilities")
    ortc.validate_rtp_capabilities(native)
    assert native["codecs"][0]["rtcpFeedback"] == [{"type": "transport-cc", "parameter": ""}]
    assert native["codecs"][2]["channels"] == 1  # G722/8000 without channels


def _vp8(**changes) -> dict:
    params = load("chrome_vp8_producer")
    for path, value in changes.items():
        target = params
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        if value is KeyError:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return params


MALFORMED = {
    "not an object": ["codecs"],
    "no codecs": _vp8(codecs=KeyError),
    "codecs not a list": _vp8(codecs={"0": 1}),
    "codec not an object": _vp8(codecs__0="VP8"),
    "mimeType without kind": _vp8(codecs__0__mimeType="VP8"),
    "mimeType other kind": _vp8(codecs__0__mimeType="text/VP8"),
    "mimeType not a string": _vp8(codecs__0__mimeType=8),
    "payloadType too big": _vp8(codecs__0__payloadType=128),
    "payloadType negative": _vp8(codecs__0__payloadType=-1),
    "payloadType bool": _vp8(codecs__0__payloadType=True),
    "payloadType string": _vp8(codecs__0__payloadType="96"),
    "payloadType float": _vp8(codecs__0__payloadType=96.0),
    "payloadType missing": _vp8(codecs__0__payloadType=KeyError),
    "duplicated payloadType": _vp8(codecs__1__payloadType=96),
    "clockRate string": _vp8(codecs__0__clockRate="90000"),
    "clockRate zero": _vp8(codecs__0__clockRate=0),
    "audio channels zero": load("chrome_opus_producer") | {"codecs": [
        load("chrome_opus_producer")["codecs"][0] | {"channels": 0}]},
    "parameters a list": _vp8(codecs__0__parameters=[1]),
    "parameter value a list": _vp8(codecs__0__parameters={"x": [1]}),
    "parameter value bool": _vp8(codecs__0__parameters={"x": True}),
    "apt a string": _vp8(codecs__1__parameters={"apt": "96"}),
    "rtx without apt": _vp8(codecs__1__parameters={}),
    "rtcpFeedback not a list": _vp8(codecs__0__rtcpFeedback="nack"),
    "feedback without type": _vp8(codecs__0__rtcpFeedback=[{"parameter": "pli"}]),
    "feedback parameter int": _vp8(codecs__0__rtcpFeedback=[{"type": "nack", "parameter": 1}]),
    "headerExtensions not a list": _vp8(headerExtensions={}),
    "ext id zero": _vp8(headerExtensions__0__id=0),
    "ext id 256": _vp8(headerExtensions__0__id=256),
    "ext id string": _vp8(headerExtensions__0__id="9"),
    "ext uri missing": _vp8(headerExtensions__0__uri=KeyError),
    "ext encrypt string": _vp8(headerExtensions__0__encrypt="no"),
    "duplicated ext id": _vp8(headerExtensions__1__id=9),
    "encodings not a list": _vp8(encodings={"ssrc": 1}),
    "too many encodings": _vp8(encodings=[{"rid": f"r{i}"} for i in range(5)]),
    "ssrc string": _vp8(encodings__0__ssrc="3942161802"),
    "ssrc too big": _vp8(encodings__0__ssrc=2**32),
    "ssrc zero": _vp8(encodings__0__ssrc=0),
    "rtx not an object": _vp8(encodings__0__rtx=5),
    "rtx without ssrc": _vp8(encodings__0__rtx={}),
    "rid not a string": _vp8(encodings__0__rid=0.5),
    "dtx a string": _vp8(encodings__0__dtx="false"),
    "scalabilityMode an int": _vp8(encodings__0__scalabilityMode=13),
    "maxBitrate a string": _vp8(encodings__0__maxBitrate="1M"),
    "rtcp not an object": _vp8(rtcp="x"),
    "cname an int": _vp8(rtcp__cname=7),
    "reducedSize a string": _vp8(rtcp__reducedSize="yes"),
    "mid an int": _vp8(mid=0),
    "mimeType too long": _vp8(codecs__0__mimeType="video/" + "x" * 300),
}


@pytest.mark.parametrize("params", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_rtp_parameters(params, router_caps):
    with pytest.raises(InvalidRequestError):
        ortc.validate_rtp_parameters(params)
    with pytest.raises(InvalidRequestError):
        ortc.get_producer_rtp_parameters_mapping(copy.deepcopy(params), router_caps)


@pytest.mark.parametrize(
    "caps",
    [
        [],
        {"codecs": {}},
        {"codecs": [{"mimeType": "video/VP8"}]},
        {"codecs": [{"mimeType": "video/VP8", "clockRate": 90000, "kind": "data"}]},
        {"codecs": [{"mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": "101"}]},
        {"headerExtensions": [{"uri": MID_URI, "preferredId": 1}]},  # kind is mandatory
        {"headerExtensions": [{"kind": "video", "uri": MID_URI, "preferredId": "1"}]},
        {"headerExtensions": [{"kind": "video", "uri": MID_URI, "preferredId": 1, "direction": "up"}]},
        {"codecs": [{"mimeType": "video/VP8", "clockRate": 90000}] * 65},
    ],
)
def test_malformed_rtp_capabilities(caps):
    with pytest.raises(InvalidRequestError):
        ortc.validate_rtp_capabilities(caps)


def test_producer_structure_errors(router_caps):
    cases = {
        "first codec is RTX": _vp8(codecs=list(reversed(load("chrome_vp8_producer")["codecs"]))),
        "RTX apt points nowhere": _vp8(codecs__1__parameters={"apt": 95}),
        "simulcast encoding without rid or ssrc": _vp8(encodings=[{"rid": "r0"}, {}]),
        "duplicated rid": _vp8(encodings=[{"rid": "r0"}, {"rid": "r0"}]),
        "duplicated ssrc": _vp8(encodings=[{"ssrc": 5, "rtx": {"ssrc": 5}}]),
        "no codecs": _vp8(codecs=[]),
        "mixed kinds": _vp8(
            codecs=load("chrome_vp8_producer")["codecs"] + load("chrome_opus_producer")["codecs"]
        ),
    }
    for name, params in cases.items():
        with pytest.raises(InvalidRequestError):
            ortc.get_producer_rtp_parameters_mapping(params, router_caps)
            pytest.fail(name)
    with pytest.raises(InvalidRequestError, match="kind"):
        ortc.get_producer_rtp_parameters_mapping(load("chrome_vp8_producer"), router_caps, kind="audio")


# --------------------------------------------------------------------------- producer mapping


def test_chrome_vp8_mapping(router_caps):
    params = load("chrome_vp8_producer")
    mapping = ortc.get_producer_rtp_parameters_mapping(
        params, router_caps, kind="video", ssrc_factory=lambda: 777
    )
    assert mapping == {
        "codecs": [
            {"payloadType": 96, "mappedPayloadType": 101},
            {"payloadType": 97, "mappedPayloadType": 102},
        ],
        "encodings": [{"mappedSsrc": 777, "ssrc": 3942161802, "rtxSsrc": 1180344575}],
    }
    ext_map = ortc.get_producer_header_extension_mapping(params, router_caps, "video")
    # toffset 1, abs-send-time 2, video-orientation 3, transport-cc 4, mid 9, rid 10, rrid 11
    assert ext_map == {9: 1, 10: 2, 11: 3, 2: 4, 4: 5, 3: 11, 1: 12}


def test_chrome_opus_mapping(router_caps):
    params = load("chrome_opus_producer")
    mapping = ortc.get_producer_rtp_parameters_mapping(
        params, router_caps, kind="audio", ssrc_factory=lambda: 9
    )
    assert mapping == {
        "codecs": [{"payloadType": 111, "mappedPayloadType": 100}],
        "encodings": [{"mappedSsrc": 9, "ssrc": 2204862935}],
    }
    assert ortc.get_producer_header_extension_mapping(params, router_caps, "audio") == {9: 1, 2: 4, 14: 10}
    # audio ids are never mapped through video entries
    assert ortc.get_producer_header_extension_mapping(params, router_caps, "video") == {9: 1, 2: 4}


def test_chrome_simulcast_mapping(router_caps):
    params = load("chrome_vp8_simulcast_producer")
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps, ssrc_factory=lambda: 2**32 - 2)
    assert mapping["encodings"] == [
        {"mappedSsrc": 2**32 - 2, "rid": "r0", "scalabilityMode": "L1T3"},
        {"mappedSsrc": 2**32 - 1, "rid": "r1", "scalabilityMode": "L1T3"},
        {"mappedSsrc": 1, "rid": "r2", "scalabilityMode": "L1T3"},  # wraps, never 0
    ]


def test_aiortc_mapping(router_caps):
    video = load("aiortc_vp8_producer")
    mapping = ortc.get_producer_rtp_parameters_mapping(video, router_caps, ssrc_factory=lambda: 42)
    assert mapping["codecs"] == [
        {"payloadType": 97, "mappedPayloadType": 101},
        {"payloadType": 98, "mappedPayloadType": 102},
    ]
    assert mapping["encodings"] == [{"mappedSsrc": 42, "ssrc": 1253863376, "rtxSsrc": 1525690116}]
    assert ortc.get_producer_header_extension_mapping(video, router_caps, "video") == {1: 1, 3: 4}
    audio = load("aiortc_opus_producer")
    assert ortc.get_producer_rtp_parameters_mapping(audio, router_caps)["codecs"] == [
        {"payloadType": 96, "mappedPayloadType": 100}
    ]
    assert ortc.get_producer_header_extension_mapping(audio, router_caps, "audio") == {1: 1, 2: 10}


def test_mapping_without_encodings_maps_one_stream(router_caps):
    params = load("aiortc_vp8_producer")
    params["encodings"] = []
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps, ssrc_factory=lambda: 3)
    assert mapping["encodings"] == [{"mappedSsrc": 3}]


def h264_producer(profile_level_id: str, packetization_mode: int = 1) -> dict:
    params = load("chrome_vp8_producer")
    params["codecs"][0] |= {
        "mimeType": "video/H264",
        "payloadType": 109,
        "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": packetization_mode,
                       "profile-level-id": profile_level_id},
    }
    params["codecs"][1] |= {"payloadType": 114, "parameters": {"apt": 109}}
    return params


def test_h264_mapping_and_profile_rules(router_caps):
    ok = h264_producer("42e01f")
    assert ortc.get_producer_rtp_parameters_mapping(ok, router_caps)["codecs"] == [
        {"payloadType": 109, "mappedPayloadType": 103},
        {"payloadType": 114, "mappedPayloadType": 104},
    ]
    # Same profile (constrained baseline) at another level: accepted, level kept (asymmetry allowed)
    other_level = h264_producer("42e034")
    ortc.get_producer_rtp_parameters_mapping(other_level, router_caps)
    assert other_level["codecs"][0]["parameters"]["profile-level-id"] == "42e034"
    # 4d.. is constrained baseline too when constraint_set1 is set (4de01f)
    ortc.get_producer_rtp_parameters_mapping(h264_producer("4de01f"), router_caps)

    for plid in ("64001f", "4d001f", "42001f", "640c1f", "zzzzzz"):
        with pytest.raises(UnsupportedError, match="video/H264"):
            ortc.get_producer_rtp_parameters_mapping(h264_producer(plid), router_caps)
    with pytest.raises(UnsupportedError, match="video/H264"):
        ortc.get_producer_rtp_parameters_mapping(h264_producer("42e01f", packetization_mode=0), router_caps)

    main_router = ortc.generate_router_rtp_capabilities([
        {"mimeType": "video/H264", "clockRate": 90000,
         "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032", "level-asymmetry-allowed": 1}}
    ])
    assert ortc.get_producer_rtp_parameters_mapping(h264_producer("4d001f"), main_router)["codecs"][0] == {
        "payloadType": 109, "mappedPayloadType": 100}


def test_unsupported_producer_codecs(router_caps):
    av1 = load("chrome_vp8_producer")
    av1["codecs"] = [{"mimeType": "video/AV1", "payloadType": 45, "clockRate": 90000,
                      "parameters": {"level-idx": 5, "profile": 0, "tier": 0}},
                     {"mimeType": "video/rtx", "payloadType": 46, "clockRate": 90000,
                      "parameters": {"apt": 45}}]
    with pytest.raises(UnsupportedError, match="video/AV1"):
        ortc.get_producer_rtp_parameters_mapping(av1, router_caps)

    vp9_router = ortc.generate_router_rtp_capabilities([{"mimeType": "video/VP9", "clockRate": 90000}])
    vp9 = load("chrome_vp8_producer")
    vp9["codecs"][0] |= {"mimeType": "video/VP9", "payloadType": 100, "parameters": {"profile-id": 2}}
    vp9["codecs"][1]["parameters"]["apt"] = 100
    with pytest.raises(UnsupportedError, match="video/VP9"):
        ortc.get_producer_rtp_parameters_mapping(copy.deepcopy(vp9), vp9_router)
    vp9["codecs"][0]["parameters"]["profile-id"] = 0
    assert ortc.get_producer_rtp_parameters_mapping(vp9, vp9_router)["codecs"][0]["mappedPayloadType"] == 100

    # a router without VP8 at all
    with pytest.raises(UnsupportedError, match="video/VP8"):
        ortc.get_producer_rtp_parameters_mapping(load("chrome_vp8_producer"), vp9_router)

    # a router whose VP8 has no RTX (hand-made capabilities)
    no_rtx = copy.deepcopy(router_caps)
    no_rtx["codecs"] = [c for c in no_rtx["codecs"] if c["mimeType"] != "video/rtx"]
    with pytest.raises(UnsupportedError, match="RTX"):
        ortc.get_producer_rtp_parameters_mapping(load("chrome_vp8_producer"), no_rtx)


def test_h264_profile_parser_agrees_with_reference():
    for value in ("42e01f", "42001f", "4d001f", "4d0032", "64001f", "640c1f", "42f00b", "42100b", "4de01f",
                  "58a01e", "580014", "42e00b", "000000", "ffffff", "42e0zz", "42e0", "42e01f00"):
        mine = ortc.parse_h264_profile_level_id(value)
        ref = h264_reference.parseProfileLevelId(value)
        assert (mine is None) == (ref is None), value


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFFFF), st.booleans(), st.booleans())
def test_h264_strict_match_agrees_with_reference(a, b, asym_a, asym_b):
    pa = {"packetization-mode": 1, "profile-level-id": f"{a:06x}", "level-asymmetry-allowed": int(asym_a)}
    pb = {"packetization-mode": 1, "profile-level-id": f"{b:06x}", "level-asymmetry-allowed": int(asym_b)}
    ca = {"mimeType": "video/H264", "clockRate": 90000, "parameters": dict(pa)}
    cb = {"mimeType": "video/H264", "clockRate": 90000, "parameters": dict(pb)}
    same = bool(h264_reference.isSameProfile(pa, pb))
    if same:
        expected = h264_reference.generateProfileLevelIdForAnswer(pa, pb)
    assert ortc.match_codecs(ca, cb, strict=True, modify=True) == same
    if same:
        assert ca["parameters"].get("profile-level-id") == expected


# --------------------------------------------------------------------------- consumers


def test_chrome_consumer_of_chrome_vp8(router_caps):
    _, mapping, consumable = produce("chrome_vp8_producer", router_caps)
    assert [c["payloadType"] for c in consumable["codecs"]] == [101, 102]
    assert consumable["encodings"] == [{"dtx": False, "ssrc": mapping["encodings"][0]["mappedSsrc"]}]
    # recvonly rid/rrid are not usable towards consumers
    assert uris(consumable) == {MID_URI: 1, ABS_SEND_TIME_URI: 4, TRANSPORT_CC_URI: 5, VIDEO_ORIENTATION_URI: 11,
                                TOFFSET_URI: 12}

    caps = chrome_device_caps(router_caps)
    assert ortc.can_consume(consumable, caps)
    params = ortc.get_consumer_rtp_parameters(consumable, caps, ssrc_factory=counter_ssrcs(10))
    assert params["codecs"] == [
        {"mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000, "parameters": {}, "rtcpFeedback": [
            {"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
            {"type": "ccm", "parameter": "fir"}, {"type": "transport-cc", "parameter": ""}]},
        {"mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000, "parameters": {"apt": 101},
         "rtcpFeedback": []},
    ]
    # transport-cc negotiated: goog-remb dropped (mediasoup's rule)
    assert uris(params) == {MID_URI: 1, ABS_SEND_TIME_URI: 4, TRANSPORT_CC_URI: 5, VIDEO_ORIENTATION_URI: 11,
                            TOFFSET_URI: 12}
    assert params["encodings"] == [{"ssrc": 10, "rtx": {"ssrc": 11}}]
    assert params["rtcp"] == {"cname": "Hq3BWnnZcuQ9a6Jq", "reducedSize": True, "mux": True}
    assert "mid" not in params  # the caller sets it

    # consumer parameters are acceptable to the client library (canReceive after validation)
    native = RtpCapabilities(**load("chrome_native_rtp_capabilities"))
    client_ortc.validateAndNormalizeRtpCapabilities(native)
    remote = RtpCapabilities(**copy.deepcopy(router_caps))
    extended = client_ortc.getExtendedRtpCapabilities(native, remote)
    assert client_ortc.canReceive(RtpParameters(**(params | {"mid": "0"})), extended)


async def test_aiortc_consumer_of_chrome_producers(router_caps):
    device = await aiortc_device(router_caps)
    caps = dump(device.rtpCapabilities)
    _, _, consumable = produce("chrome_vp8_producer", router_caps)
    params = ortc.get_consumer_rtp_parameters(consumable, caps, ssrc_factory=counter_ssrcs(20))
    assert codec_pts(params) == [("video/VP8", 101), ("video/rtx", 102)]
    # aiortc does not do FIR: feedback reduced to what it supports
    assert params["codecs"][0]["rtcpFeedback"] == [
        {"type": "nack", "parameter": ""},
        {"type": "nack", "parameter": "pli"},
        {"type": "goog-remb", "parameter": ""},
    ]
    assert uris(params) == {MID_URI: 1, ABS_SEND_TIME_URI: 4}
    assert params["encodings"] == [{"ssrc": 20, "rtx": {"ssrc": 21}}]
    assert client_ortc.canReceive(RtpParameters(**(params | {"mid": "0"})), device._extendedRtpCapabilities)

    _, _, audio = produce("chrome_opus_producer", router_caps)
    aparams = ortc.get_consumer_rtp_parameters(audio, caps, ssrc_factory=counter_ssrcs(30))
    assert aparams["codecs"] == [
        {"mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000, "channels": 2,
         "parameters": {"minptime": 10, "useinbandfec": 1}, "rtcpFeedback": []}
    ]
    # aiortc receives no abs-send-time for audio; no transport-cc anywhere
    assert uris(aparams) == {MID_URI: 1, AUDIO_LEVEL_URI: 10}
    assert aparams["encodings"] == [{"ssrc": 30}]
    assert client_ortc.canReceive(RtpParameters(**(aparams | {"mid": "1"})), device._extendedRtpCapabilities)


async def test_chrome_consumer_of_aiortc_producer(router_caps):
    _, _, consumable = produce("aiortc_vp8_producer", router_caps)
    params = consume(consumable, chrome_device_caps(router_caps), ssrc_factory=counter_ssrcs(1))
    assert codec_pts(params) == [("video/VP8", 101), ("video/rtx", 102)]
    assert params["rtcp"]["cname"] == "{4b2c6a1e-2f0d-4d8a-9a43-2b7c1f0e6d55}"
    _, _, audio = produce("aiortc_opus_producer", router_caps)
    aparams = consume(audio, chrome_device_caps(router_caps), ssrc_factory=counter_ssrcs(1))
    assert [c["payloadType"] for c in aparams["codecs"]] == [100]
    assert uris(aparams) == {MID_URI: 1, ABS_SEND_TIME_URI: 4, TRANSPORT_CC_URI: 5, AUDIO_LEVEL_URI: 10}


def test_simulcast_consumer_gets_one_stream_with_scalability_mode(router_caps):
    _, mapping, consumable = produce("chrome_vp8_simulcast_producer", router_caps)
    assert [e["ssrc"] for e in consumable["encodings"]] == [e["mappedSsrc"] for e in mapping["encodings"]]
    assert all("rid" not in e for e in consumable["encodings"])
    params = consume(consumable, chrome_device_caps(router_caps), ssrc_factory=counter_ssrcs(50))
    assert params["encodings"] == [
        {"ssrc": 50, "rtx": {"ssrc": 51}, "scalabilityMode": "L3T3", "maxBitrate": 1500000}
    ]
    # two encodings, no scalabilityMode at all -> L2T1
    two = copy.deepcopy(consumable)
    two["encodings"] = [{"ssrc": 1}, {"ssrc": 2}]
    assert consume(two, chrome_device_caps(router_caps))["encodings"][0]["scalabilityMode"] == "L2T1"
    # a single SVC-ish encoding keeps its mode
    one = copy.deepcopy(consumable)
    one["encodings"] = [{"ssrc": 1, "scalabilityMode": "L1T3"}]
    assert consume(one, chrome_device_caps(router_caps))["encodings"][0]["scalabilityMode"] == "L1T3"


def test_consumer_without_rtx(router_caps):
    _, _, consumable = produce("chrome_vp8_producer", router_caps)
    params = ortc.get_consumer_rtp_parameters(consumable, chrome_device_caps(router_caps), enable_rtx=False)
    assert [c["mimeType"] for c in params["codecs"]] == ["video/VP8"]
    assert {"type": "nack", "parameter": ""} not in params["codecs"][0]["rtcpFeedback"]
    assert {"type": "nack", "parameter": "pli"} in params["codecs"][0]["rtcpFeedback"]
    assert "rtx" not in params["encodings"][0]
    # a consumer whose capabilities have no RTX gets none either
    caps = chrome_device_caps(router_caps)
    caps["codecs"] = [c for c in caps["codecs"] if c["mimeType"] != "video/rtx"]
    params = ortc.get_consumer_rtp_parameters(consumable, caps)
    assert [c["mimeType"] for c in params["codecs"]] == ["video/VP8"] and "rtx" not in params["encodings"][0]


def test_consumer_rtcp_feedback_follows_bwe_extension(router_caps):
    _, _, consumable = produce("chrome_vp8_producer", router_caps)
    caps = chrome_device_caps(router_caps)
    caps["headerExtensions"] = [e for e in caps["headerExtensions"] if e["uri"] != ABS_SEND_TIME_URI]
    params = ortc.get_consumer_rtp_parameters(consumable, caps)
    assert all(fb["type"] != "goog-remb" for fb in params["codecs"][0]["rtcpFeedback"])
    assert ABS_SEND_TIME_URI not in uris(params)


def test_cannot_consume_without_codec(router_caps):
    _, _, consumable = produce("chrome_vp8_producer", router_caps)
    audio_only = chrome_device_caps(router_caps)
    audio_only["codecs"] = [c for c in audio_only["codecs"] if c["kind"] == "audio"]
    assert not ortc.can_consume(consumable, audio_only)
    with pytest.raises(UnsupportedError):
        ortc.get_consumer_rtp_parameters(consumable, audio_only)
    # only RTX in common is not enough
    rtx_only = chrome_device_caps(router_caps)
    rtx_only["codecs"] = [c for c in rtx_only["codecs"] if c["mimeType"] == "video/rtx"]
    assert not ortc.can_consume(consumable, rtx_only)
    assert not ortc.can_consume(consumable, {})
    with pytest.raises(InvalidRequestError):
        ortc.can_consume(consumable, {"codecs": "all"})
    # H264 producer vs consumer that only has VP8
    _, _, h264 = produce_params(h264_producer("42e01f"), router_caps)
    assert ortc.can_consume(h264, chrome_device_caps(router_caps))
    vp8_only = chrome_device_caps(router_caps)
    vp8_only["codecs"] = [c for c in vp8_only["codecs"] if c["mimeType"] != "video/H264"]
    assert not ortc.can_consume(h264, vp8_only)
    params = ortc.get_consumer_rtp_parameters(h264, chrome_device_caps(router_caps))
    assert codec_pts(params) == [("video/H264", 103), ("video/rtx", 104)]


def produce_params(params: dict, router_caps: dict):
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)
    return params, mapping, ortc.get_consumable_rtp_parameters("video", params, router_caps, mapping)


def test_caller_capabilities_are_not_mutated(router_caps):
    _, _, consumable = produce("chrome_vp8_producer", router_caps)
    native = load("chrome_native_rtp_capabilities")
    before = copy.deepcopy(native)
    ortc.can_consume(consumable, native)
    ortc.get_consumer_rtp_parameters(consumable, chrome_device_caps(router_caps))
    assert native == before


def test_pipe_consumer_parameters(router_caps):
    _, mapping, consumable = produce("chrome_vp8_simulcast_producer", router_caps)
    mapped = [e["mappedSsrc"] for e in mapping["encodings"]]
    pipe = ortc.get_pipe_consumer_rtp_parameters(consumable)
    assert [c["mimeType"] for c in pipe["codecs"]] == ["video/VP8"]
    assert pipe["codecs"][0]["rtcpFeedback"] == [
        {"type": "nack", "parameter": "pli"},
        {"type": "ccm", "parameter": "fir"},
    ]
    assert uris(pipe) == {VIDEO_ORIENTATION_URI: 11, TOFFSET_URI: 12}
    assert [e["ssrc"] for e in pipe["encodings"]] == mapped
    assert [e["scalabilityMode"] for e in pipe["encodings"]] == ["L1T3"] * 3
    assert all("rtx" not in e for e in pipe["encodings"])

    with_rtx = ortc.get_pipe_consumer_rtp_parameters(
        consumable, enable_rtx=True, ssrc_factory=counter_ssrcs(7)
    )
    assert [c["mimeType"] for c in with_rtx["codecs"]] == ["video/VP8", "video/rtx"]
    assert {"type": "nack", "parameter": ""} in with_rtx["codecs"][0]["rtcpFeedback"]
    assert [e["rtx"]["ssrc"] for e in with_rtx["encodings"]] == [7, 8, 9]
    assert [e["ssrc"] for e in with_rtx["encodings"]] == mapped

    # get_consumer_rtp_parameters(pipe=True): all encodings, fresh SSRCs
    piped = consume(consumable, router_caps, pipe=True, ssrc_factory=counter_ssrcs(100))
    assert len(piped["encodings"]) == 3
    assert [e["ssrc"] for e in piped["encodings"]] == [100, 102, 104]
    assert [e["rtx"]["ssrc"] for e in piped["encodings"]] == [101, 103, 105]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("L1T3", (1, 3, False)),
        ("L3T3_KEY", (3, 3, True)),
        ("S2T1", (2, 1, False)),
        ("L10T12", (10, 12, False)),
        ("L0T1", (1, 1, False)),
        ("bogus", (1, 1, False)),
        (None, (1, 1, False)),
        ("", (1, 1, False)),
    ],
)
def test_parse_scalability_mode(mode, expected):
    assert ortc.parse_scalability_mode(mode) == expected


# --------------------------------------------------------------------------- value types


def test_producer_stream_params(router_caps):
    params = load("chrome_vp8_producer")
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps, ssrc_factory=lambda: 77)
    (stream,) = producer_stream_params(params, mapping)
    assert stream == ProducerStreamParams(
        ssrc=3942161802, rid=None, rtx_ssrc=1180344575, payload_type_map={96: 101, 97: 102},
        rtx_payload_type=97, codec="vp8", clock_rate=90000, kind="video", payload_type=96,
        mapped_payload_type=101, mapped_rtx_payload_type=102, mapped_ssrc=77, spatial_layer=0,
        temporal_layers=1, scalability_mode=None,
        header_extension_ids={"mid": 9, "rid": 10, "rrid": 11, "abs_send_time": 2, "transport_cc": 4,
                              "video_orientation": 3, "toffset": 1},
    )
    sim = load("chrome_vp8_simulcast_producer")
    sim_streams = producer_stream_params(sim, ortc.get_producer_rtp_parameters_mapping(sim, router_caps))
    assert [(s.rid, s.ssrc, s.spatial_layer, s.temporal_layers) for s in sim_streams] == [
        ("r0", None, 0, 3), ("r1", None, 1, 3), ("r2", None, 2, 3)]
    audio = load("aiortc_opus_producer")
    (a,) = producer_stream_params(audio, ortc.get_producer_rtp_parameters_mapping(audio, router_caps))
    got = (a.codec, a.kind, a.clock_rate, a.payload_type_map, a.rtx_payload_type)
    assert got == ("opus", "audio", 48000, {96: 100}, None)
    with pytest.raises(AttributeError):
        a.ssrc = 1  # frozen


def test_consumer_stream_params(router_caps):
    _, _, consumable = produce("chrome_vp8_simulcast_producer", router_caps)
    params = consume(consumable, chrome_device_caps(router_caps), ssrc_factory=counter_ssrcs(5))
    params["mid"] = "3"
    stream = consumer_stream_params(params)
    assert stream == ConsumerStreamParams(
        ssrc=5, payload_type=101, rtx_ssrc=6, rtx_payload_type=102, clock_rate=90000, codec="vp8", mid="3",
        kind="video", spatial_layers=3, temporal_layers=3, nack=True, pli=True, fir=True, remb=False,
        header_extension_ids={"mid": 1, "abs_send_time": 4, "transport_cc": 5, "video_orientation": 11,
                              "toffset": 12},
    )
    with pytest.raises(InvalidRequestError):
        consumer_stream_params({"codecs": params["codecs"], "encodings": []})


def test_codec_name():
    assert [codec_name(m) for m in ("audio/opus", "video/VP8", "video/vp9", "video/H264", "video/rtx")] == [
        "opus", "vp8", "vp9", "h264", "rtx"]


def test_default_media_codecs_constant_is_what_routers_use():
    default = ortc.generate_router_rtp_capabilities()
    assert ortc.generate_router_rtp_capabilities(DEFAULT_MEDIA_CODECS) == default


# --------------------------------------------------------------------------- fuzz

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = ["mimeType", "payloadType", "clockRate", "channels", "parameters", "rtcpFeedback", "type",
        "parameter", "uri", "id", "encrypt", "ssrc", "rid", "rtx", "dtx", "scalabilityMode", "cname",
        "reducedSize", "mid", "codecs", "headerExtensions", "encodings", "rtcp", "apt", "kind",
        "preferredId", "preferredPayloadType", "direction", "maxBitrate"]
rtp_like = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=30,
)


def _mutate(obj, path_choices, value):
    """Replace one nested value of a real fixture."""
    target = obj
    for choice in path_choices[:-1]:
        if isinstance(target, dict) and target:
            target = target[sorted(target)[choice % len(target)]]
        elif isinstance(target, list) and target:
            target = target[choice % len(target)]
        else:
            break
    if isinstance(target, dict) and target:
        target[sorted(target)[path_choices[-1] % len(target)]] = value
    elif isinstance(target, list) and target:
        target[path_choices[-1] % len(target)] = value
    return obj


ROUTER_CAPS = ortc.generate_router_rtp_capabilities()
CHROME_CAPS = chrome_device_caps(ROUTER_CAPS)
PRODUCERS = ["chrome_vp8_producer", "chrome_opus_producer", "chrome_vp8_simulcast_producer",
             "aiortc_vp8_producer", "aiortc_opus_producer"]


def _pipeline(params, caps) -> None:
    try:
        mapping = ortc.get_producer_rtp_parameters_mapping(params, ROUTER_CAPS)
        kind = params["codecs"][0]["mimeType"].split("/")[0].lower()
        ortc.get_producer_header_extension_mapping(params, ROUTER_CAPS, kind)
        consumable = ortc.get_consumable_rtp_parameters(kind, params, ROUTER_CAPS, mapping)
        producer_stream_params(params, mapping)
        ortc.get_pipe_consumer_rtp_parameters(consumable, enable_rtx=True)
        if ortc.can_consume(consumable, caps):
            consumer_stream_params(ortc.get_consumer_rtp_parameters(consumable, caps) | {"mid": "0"})
    except StudyRoomsError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(anything=st.one_of(json_values, rtp_like))
def test_fuzz_random_values_only_raise_studyrooms_errors(anything):
    for fn in (ortc.validate_rtp_parameters, ortc.validate_rtp_capabilities):
        try:
            fn(copy.deepcopy(anything))
        except StudyRoomsError:
            pass
    try:
        ortc.generate_router_rtp_capabilities(copy.deepcopy(anything))
    except StudyRoomsError:
        pass
    _pipeline(copy.deepcopy(anything), {"codecs": []})
    _, _, consumable = produce("chrome_vp8_producer", ROUTER_CAPS)
    try:
        ortc.can_consume(consumable, copy.deepcopy(anything))
        ortc.get_consumer_rtp_parameters(consumable, copy.deepcopy(anything))
    except StudyRoomsError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(PRODUCERS),
    path=st.lists(st.integers(0, 50), min_size=1, max_size=5),
    value=st.one_of(json_values, rtp_like),
    caps_path=st.lists(st.integers(0, 50), min_size=1, max_size=5),
    caps_value=st.one_of(json_values, rtp_like),
)
def test_fuzz_mutated_real_parameters_only_raise_studyrooms_errors(name, path, value, caps_path, caps_value):
    params = _mutate(load(name), path, value)
    caps = _mutate(copy.deepcopy(CHROME_CAPS), caps_path, caps_value)
    _pipeline(params, caps)
