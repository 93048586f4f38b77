"""Pure RTP negotiation functions: mediasoup's server-side ``ortc.ts`` over plain dicts.

Everything here works on mediasoup's camelCase JSON (``rtpCapabilities``, ``rtpParameters``,
``rtpMapping``) and is synchronous and side-effect free, except that the ``validate_*`` functions
normalise missing optional fields *in place*, exactly as mediasoup does (``parameters`` -> ``{}``,
``rtcpFeedback`` -> ``[]``, ``fb.parameter`` -> ``""``, audio ``channels`` -> 1, video ``channels``
removed, ``dtx`` -> False, ``encrypt`` -> False, ``rtcp.reducedSize`` -> True, ...).

Errors: malformed input raises :class:`~studyrooms.errors.InvalidRequestError`; well-formed input
that names a codec or feature the router cannot handle raises
:class:`~studyrooms.errors.UnsupportedError`. Nothing else escapes (the fuzz test holds us to it).

Differences from mediasoup, on purpose:

- stricter types: ``bool`` is not a number, a present field of the wrong type is rejected instead
  of being silently replaced, payload types are ints 0..127, SSRCs ints 1..2**32-1, header
  extension ids ints 1..255, duplicate payload types / extension ids / rids / SSRCs are rejected;
- bounds (see the ``MAX_*`` constants): at most 64 codecs and 64 header extensions in
  capabilities (Chrome's native list is ~35 codecs), at most 32 codecs, 32 header extensions and
  4 encodings in rtpParameters, 32 rtcpFeedback entries and 32 codec parameters per codec, strings
  of at most 256 characters;
- H264 profile matching is implemented here (RFC 6184 profile-level-id rules, as the
  ``h264-profile-level-id`` package does) so the runtime needs no extra dependency;
- ``generate_router_rtp_capabilities`` prefers a supported codec that matches strictly (same H264
  profile) before falling back to mediasoup's loose match;
- consumer RTX SSRCs are fresh random SSRCs (mediasoup uses ``ssrc + 1``); pipe consumers keep the
  consumable (mapped) SSRCs of every encoding.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from studyrooms.errors import InvalidRequestError, UnsupportedError
from studyrooms.ids import random_ssrc
from studyrooms.sfu.supported_capabilities import (
    ABS_SEND_TIME_URI,
    DEFAULT_MEDIA_CODECS,
    MID_URI,
    SUPPORTED_RTP_CAPABILITIES,
    TRANSPORT_CC_URI,
)

MAX_CAPABILITY_CODECS = 64
MAX_CAPABILITY_HEADER_EXTENSIONS = 64
MAX_CODECS = 32
MAX_HEADER_EXTENSIONS = 32
MAX_ENCODINGS = 4
MAX_RTCP_FEEDBACK = 32
MAX_CODEC_PARAMETERS = 32
MAX_STRING = 256

# mediasoup's DynamicPayloadTypes order: 100..127 first, then 96..99.
DYNAMIC_PAYLOAD_TYPES: tuple[int, ...] = tuple(range(100, 128)) + (96, 97, 98, 99)

_MIME_RE = re.compile(r"^(audio|video)/([A-Za-z0-9][A-Za-z0-9.+_-]{0,63})$", re.IGNORECASE)
_SCALABILITY_RE = re.compile(r"^[LS]([1-9]\d?)T([1-9]\d?)(_KEY)?")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_UINT32 = 0xFFFFFFFF

SsrcFactory = Callable[[], int]


# --------------------------------------------------------------------------- type checks


def _fail(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def _require_dict(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(f"{path} must be an object")
    return value


def _require_list(value: Any, path: str, limit: int) -> list:
    if not isinstance(value, list):
        raise _fail(f"{path} must be an array")
    if len(value) > limit:
        raise _fail(f"{path} has {len(value)} entries (at most {limit})")
    return value


def _require_str(value: Any, path: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        raise _fail(f"missing {path}" if value is None else f"{path} must be a non-empty string")
    if len(value) > MAX_STRING:
        raise _fail(f"{path} is longer than {MAX_STRING} characters")
    return value


def _require_int(value: Any, path: str, low: int, high: int) -> int:
    if value is None:
        raise _fail(f"missing {path}")
    if not _is_int(value) or not low <= value <= high:
        raise _fail(f"{path} must be an integer {low}..{high}")
    return value


def _optional_str(obj: dict, key: str, path: str) -> None:
    value = obj.get(key)
    if value is not None:
        _require_str(value, f"{path}.{key}", empty_ok=True)


def _optional_bool(obj: dict, key: str, path: str, default: bool | None = None) -> None:
    value = obj.get(key)
    if value is None:
        if default is not None:
            obj[key] = default
    elif not isinstance(value, bool):
        raise _fail(f"{path}.{key} must be a boolean")


def _optional_number(obj: dict, key: str, path: str) -> None:
    value = obj.get(key)
    if value is not None and (not _is_number(value) or value < 0):
        raise _fail(f"{path}.{key} must be a non-negative number")


def _mime_kind(mime_type: Any, path: str) -> str:
    _require_str(mime_type, path)
    match = _MIME_RE.match(mime_type)
    if match is None:
        raise _fail(f"invalid {path} {mime_type!r} (expected 'audio/<codec>' or 'video/<codec>')")
    return match.group(1).lower()


def _validate_parameters(obj: dict, path: str, *, codec: bool) -> None:
    params = obj.get("parameters")
    if params is None:
        obj["parameters"] = {}
        return
    _require_dict(params, f"{path}.parameters")
    if len(params) > MAX_CODEC_PARAMETERS:
        raise _fail(f"{path}.parameters has more than {MAX_CODEC_PARAMETERS} entries")
    for key in list(params):
        value = params[key]
        if not isinstance(key, str) or not key or len(key) > MAX_STRING:
            raise _fail(f"{path}.parameters has an invalid key")
        if value is None:
            params[key] = value = ""
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise _fail(f"{path}.parameters[{key!r}] is longer than {MAX_STRING} characters")
        elif not _is_number(value):
            raise _fail(f"invalid codec parameter {path}.parameters[{key!r}] (string or number)")
        if codec and key == "apt":
            _require_int(value, f"{path}.parameters.apt", 0, 127)


def _validate_rtcp_feedback(codec: dict, path: str) -> None:
    fbs = codec.get("rtcpFeedback")
    if fbs is None:
        codec["rtcpFeedback"] = []
        return
    _require_list(fbs, f"{path}.rtcpFeedback", MAX_RTCP_FEEDBACK)
    for i, fb in enumerate(fbs):
        fb_path = f"{path}.rtcpFeedback[{i}]"
        _require_dict(fb, fb_path)
        _require_str(fb.get("type"), f"{fb_path}.type")
        if fb.get("parameter") is None:
            fb["parameter"] = ""
        else:
            _require_str(fb["parameter"], f"{fb_path}.parameter", empty_ok=True)


def _normalise_channels(codec: dict, kind: str, path: str) -> None:
    if kind == "audio":
        channels = codec.get("channels")
        if channels is None:
            codec["channels"] = 1
        else:
            _require_int(channels, f"{path}.channels", 1, 255)
    else:
        codec.pop("channels", None)


# --------------------------------------------------------------------------- validation


def validate_rtp_codec_capability(codec: Any, path: str = "codec") -> None:
    """mediasoup's validateRtpCodecCapability (``kind`` is overridden from ``mimeType``)."""
    _require_dict(codec, path)
    kind = _mime_kind(codec.get("mimeType"), f"{path}.mimeType")
    given_kind = codec.get("kind")
    if given_kind is not None and given_kind not in ("audio", "video"):
        raise _fail(f"invalid {path}.kind {given_kind!r}")
    codec["kind"] = kind
    if codec.get("preferredPayloadType") is not None:
        _require_int(codec["preferredPayloadType"], f"{path}.preferredPayloadType", 0, 127)
    _require_int(codec.get("clockRate"), f"{path}.clockRate", 1, 10_000_000)
    _normalise_channels(codec, kind, path)
    _validate_parameters(codec, path, codec=True)
    _validate_rtcp_feedback(codec, path)


def validate_rtp_header_extension(ext: Any, path: str = "ext") -> None:
    """mediasoup's validateRtpHeaderExtension (capability side: kind, uri, preferredId)."""
    _require_dict(ext, path)
    if ext.get("kind") not in ("audio", "video"):
        raise _fail(f"invalid {path}.kind (must be 'audio' or 'video')")
    _require_str(ext.get("uri"), f"{path}.uri")
    _require_int(ext.get("preferredId"), f"{path}.preferredId", 1, 255)
    _optional_bool(ext, "preferredEncrypt", path, default=False)
    direction = ext.get("direction")
    if direction is None:
        ext["direction"] = "sendrecv"
    elif direction not in _DIRECTIONS:
        raise _fail(f"invalid {path}.direction {direction!r}")


def validate_rtp_capabilities(caps: Any) -> None:
    """Validate and normalise RtpCapabilities in place; raise InvalidRequestError if malformed."""
    _require_dict(caps, "rtpCapabilities")
    for key, limit, check in (
        ("codecs", MAX_CAPABILITY_CODECS, validate_rtp_codec_capability),
        ("headerExtensions", MAX_CAPABILITY_HEADER_EXTENSIONS, validate_rtp_header_extension),
    ):
        items = caps.get(key)
        if items is None:
            caps[key] = items = []
        _require_list(items, f"rtpCapabilities.{key}", limit)
        for i, item in enumerate(items):
            check(item, f"rtpCapabilities.{key}[{i}]")
    fec = caps.get("fecMechanisms")
    if fec is not None:
        for i, mech in enumerate(_require_list(fec, "rtpCapabilities.fecMechanisms", 16)):
            _require_str(mech, f"rtpCapabilities.fecMechanisms[{i}]")


def _validate_codec_parameters(codec: Any, path: str) -> None:
    _require_dict(codec, path)
    kind = _mime_kind(codec.get("mimeType"), f"{path}.mimeType")
    _require_int(codec.get("payloadType"), f"{path}.payloadType", 0, 127)
    _require_int(codec.get("clockRate"), f"{path}.clockRate", 1, 10_000_000)
    _normalise_channels(codec, kind, path)
    _validate_parameters(codec, path, codec=True)
    _validate_rtcp_feedback(codec, path)
    if is_rtx_codec(codec) and "apt" not in codec["parameters"]:
        raise _fail(f"missing {path}.parameters.apt (RTX codec)")


def _validate_header_extension_parameters(ext: Any, path: str) -> None:
    _require_dict(ext, path)
    _require_str(ext.get("uri"), f"{path}.uri")
    _require_int(ext.get("id"), f"{path}.id", 1, 255)
    _optional_bool(ext, "encrypt", path, default=False)
    _validate_parameters(ext, path, codec=False)


def _validate_ssrc(value: Any, path: str) -> int:
    return _require_int(value, path, 1, _UINT32)


def _validate_encoding(enc: Any, path: str) -> None:
    _require_dict(enc, path)
    if enc.get("ssrc") is not None:
        _validate_ssrc(enc["ssrc"], f"{path}.ssrc")
    if enc.get("rid") is not None:
        _require_str(enc["rid"], f"{path}.rid")
    if enc.get("codecPayloadType") is not None:
        _require_int(enc["codecPayloadType"], f"{path}.codecPayloadType", 0, 127)
    rtx = enc.get("rtx")
    if rtx is not None:
        _require_dict(rtx, f"{path}.rtx")
        _validate_ssrc(rtx.get("ssrc"), f"{path}.rtx.ssrc")
    _optional_bool(enc, "dtx", path, default=False)
    _optional_bool(enc, "active", path)
    _optional_bool(enc, "adaptivePtime", path)
    if enc.get("scalabilityMode") is not None:
        _require_str(enc["scalabilityMode"], f"{path}.scalabilityMode")
    for key in ("maxBitrate", "maxFramerate", "scaleResolutionDownBy"):
        _optional_number(enc, key, path)
    for key in ("priority", "networkPriority"):
        _optional_str(enc, key, path)


def validate_rtp_parameters(params: Any) -> None:
    """Validate and normalise RtpParameters in place; raise InvalidRequestError if malformed."""
    path = "rtpParameters"
    _require_dict(params, path)
    _optional_str(params, "mid", path)
    _optional_str(params, "msid", path)
    codecs = params.get("codecs")
    if codecs is None:
        raise _fail("missing rtpParameters.codecs")
    _require_list(codecs, f"{path}.codecs", MAX_CODECS)
    seen_pts: set[int] = set()
    for i, codec in enumerate(codecs):
        _validate_codec_parameters(codec, f"{path}.codecs[{i}]")
        if codec["payloadType"] in seen_pts:
            raise _fail(f"duplicated payloadType {codec['payloadType']} in rtpParameters.codecs")
        seen_pts.add(codec["payloadType"])

    exts = params.get("headerExtensions")
    if exts is None:
        params["headerExtensions"] = exts = []
    _require_list(exts, f"{path}.headerExtensions", MAX_HEADER_EXTENSIONS)
    seen_ids: set[int] = set()
    for i, ext in enumerate(exts):
        _validate_header_extension_parameters(ext, f"{path}.headerExtensions[{i}]")
        if ext["id"] in seen_ids:
            raise _fail(f"duplicated header extension id {ext['id']} in rtpParameters.headerExtensions")
        seen_ids.add(ext["id"])

    encodings = params.get("encodings")
    if encodings is None:
        params["encodings"] = encodings = []
    _require_list(encodings, f"{path}.encodings", MAX_ENCODINGS)
    for i, enc in enumerate(encodings):
        _validate_encoding(enc, f"{path}.encodings[{i}]")

    rtcp = params.get("rtcp")
    if rtcp is None:
        params["rtcp"] = rtcp = {}
    _require_dict(rtcp, f"{path}.rtcp")
    _optional_str(rtcp, "cname", f"{path}.rtcp")
    _optional_bool(rtcp, "reducedSize", f"{path}.rtcp", default=True)
    _optional_bool(rtcp, "mux", f"{path}.rtcp")


# --------------------------------------------------------------------------- codec matching


def is_rtx_codec(codec: dict) -> bool:
    return str(codec.get("mimeType", "")).lower().endswith("/rtx")


def _as_int(value: Any, default: int = 0) -> Any:
    """Codec parameters arrive as numbers (mediasoup-client) or strings (some SDP parsers)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


# H264 profile-level-id (RFC 6184 section 8.1; the rules of webrtc's h264_profile_level_id.cc).
_H264_PROFILE_PATTERNS: tuple[tuple[int, str, str], ...] = (
    (0x42, "x1xx0000", "constrained-baseline"),
    (0x4D, "1xxx0000", "constrained-baseline"),
    (0x58, "11xx0000", "constrained-baseline"),
    (0x42, "x0xx0000", "baseline"),
    (0x58, "10xx0000", "baseline"),
    (0x4D, "0x0x0000", "main"),
    (0x64, "00000000", "high"),
    (0x64, "00001100", "constrained-high"),
)
_H264_PROFILE_PREFIX = {
    "constrained-baseline": "42e0",
    "baseline": "4200",
    "main": "4d00",
    "constrained-high": "640c",
    "high": "6400",
}
_H264_LEVEL_1B = 0  # internal marker for level 1b
_H264_LEVELS = frozenset({10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52})


def _bit_pattern_match(pattern: str, value: int) -> bool:
    for i, ch in enumerate(pattern):
        bit = (value >> (7 - i)) & 1
        if ch != "x" and int(ch) != bit:
            return False
    return True


def parse_h264_profile_level_id(value: Any) -> tuple[str, int] | None:
    """``"42e01f"`` -> ``("constrained-baseline", 31)``; None if invalid. Level 1b is 0."""
    if not isinstance(value, str) or len(value) != 6:
        return None
    try:
        numeric = int(value, 16)
    except ValueError:
        return None
    if numeric == 0:
        return None
    level_idc = numeric & 0xFF
    profile_iop = (numeric >> 8) & 0xFF
    profile_idc = (numeric >> 16) & 0xFF
    if level_idc == 11 and profile_iop & 0x10:
        level = _H264_LEVEL_1B
    elif level_idc in _H264_LEVELS:
        level = level_idc
    else:
        return None
    for idc, pattern, profile in _H264_PROFILE_PATTERNS:
        if profile_idc == idc and _bit_pattern_match(pattern, profile_iop):
            return profile, level
    return None


def _h264_sdp_profile(params: dict) -> tuple[str, int] | None:
    value = params.get("profile-level-id")
    if value is None:
        return ("constrained-baseline", 31)  # webrtc's default when absent (42e01f)
    return parse_h264_profile_level_id(value)


def _h264_level_less(a: int, b: int) -> bool:
    if a == _H264_LEVEL_1B:
        return b not in (10, _H264_LEVEL_1B)
    if b == _H264_LEVEL_1B:
        return a != 10
    return a < b


def _h264_profile_string(profile: str, level: int) -> str | None:
    if level == _H264_LEVEL_1B:
        return {"constrained-baseline": "42f00b", "baseline": "42100b", "main": "4d100b"}.get(profile)
    return f"{_H264_PROFILE_PREFIX[profile]}{level:02x}"


def _h264_answer_profile_level_id(local: dict, remote: dict) -> str | None:
    """generateProfileLevelIdForAnswer; raises ValueError on mismatch/invalid input."""
    if not local.get("profile-level-id") and not remote.get("profile-level-id"):
        return None
    lp, rp = _h264_sdp_profile(local), _h264_sdp_profile(remote)
    if lp is None or rp is None or lp[0] != rp[0]:
        raise ValueError("H264 profile mismatch")
    asymmetry = _as_int(local.get("level-asymmetry-allowed")) == 1 and _as_int(
        remote.get("level-asymmetry-allowed")
    ) == 1
    level = lp[1] if asymmetry else (lp[1] if _h264_level_less(lp[1], rp[1]) else rp[1])
    return _h264_profile_string(lp[0], level)


def match_codecs(a: dict, b: dict, *, strict: bool = False, modify: bool = False) -> bool:
    """mediasoup's matchCodecs: mimeType (case-insensitive), clockRate, channels; in strict mode
    also H264 packetization-mode + profile and VP9 profile-id. ``modify`` rewrites ``a``'s H264
    profile-level-id to the negotiated answer, as mediasoup does for producer codecs."""
    mime = str(a.get("mimeType", "")).lower()
    if mime != str(b.get("mimeType", "")).lower():
        return False
    if a.get("clockRate") != b.get("clockRate") or a.get("channels") != b.get("channels"):
        return False
    a_params, b_params = a.get("parameters") or {}, b.get("parameters") or {}
    if mime in ("video/h264", "video/h264-svc") and strict:
        if _as_int(a_params.get("packetization-mode")) != _as_int(b_params.get("packetization-mode")):
            return False
        a_profile, b_profile = _h264_sdp_profile(a_params), _h264_sdp_profile(b_params)
        if a_profile is None or b_profile is None or a_profile[0] != b_profile[0]:
            return False
        try:
            selected = _h264_answer_profile_level_id(a_params, b_params)
        except ValueError:
            return False
        if modify:
            if selected:
                a_params["profile-level-id"] = selected
            else:
                a_params.pop("profile-level-id", None)
    elif mime == "video/vp9" and strict:
        if _as_int(a_params.get("profile-id")) != _as_int(b_params.get("profile-id")):
            return False
    return True


def reduce_rtcp_feedback(codec_a: dict, codec_b: dict) -> list[dict]:
    """Feedback of ``codec_a`` (in its order) that ``codec_b`` also lists (mediasoup's rule)."""
    out = []
    for a_fb in codec_a.get("rtcpFeedback") or []:
        for b_fb in codec_b.get("rtcpFeedback") or []:
            if b_fb.get("type") == a_fb.get("type") and (
                (b_fb.get("parameter") or "") == (a_fb.get("parameter") or "")
            ):
                out.append({"type": a_fb["type"], "parameter": a_fb.get("parameter") or ""})
                break
    return out


# --------------------------------------------------------------------------- scalability modes


def parse_scalability_mode(mode: str | None) -> tuple[int, int, bool]:
    """``"L1T3"`` -> ``(1, 3, False)``; ``"L3T3_KEY"`` -> ``(3, 3, True)``; invalid -> ``(1, 1, False)``."""
    match = _SCALABILITY_RE.match(mode) if isinstance(mode, str) else None
    if match is None:
        return 1, 1, False
    return int(match.group(1)), int(match.group(2)), bool(match.group(3))


# --------------------------------------------------------------------------- router capabilities


def generate_router_rtp_capabilities(media_codecs: list[dict] | None = None) -> dict:
    """mediasoup's generateRouterRtpCapabilities; ``media_codecs`` defaults to DEFAULT_MEDIA_CODECS.

    Each codec gets its preferredPayloadType if given and free, else the next dynamic one (100
    upward); every video codec is followed by ``video/rtx`` with ``{"apt": pt}``. The input is
    not modified. Raises UnsupportedError for a codec outside SUPPORTED_RTP_CAPABILITIES.
    """
    if media_codecs is None:
        media_codecs = DEFAULT_MEDIA_CODECS
    media_codecs = copy.deepcopy(_require_list(media_codecs, "mediaCodecs", MAX_CODECS))
    supported = copy.deepcopy(SUPPORTED_RTP_CAPABILITIES)
    validate_rtp_capabilities(supported)

    for i, media_codec in enumerate(media_codecs):
        validate_rtp_codec_capability(media_codec, f"mediaCodecs[{i}]")
    requested_pts = {c.get("preferredPayloadType") for c in media_codecs}
    dynamic = [pt for pt in DYNAMIC_PAYLOAD_TYPES if pt not in requested_pts]
    caps: dict[str, Any] = {"codecs": [], "headerExtensions": supported["headerExtensions"]}
    used: set[int] = set()

    def take_dynamic() -> int:
        while dynamic:
            pt = dynamic.pop(0)
            if pt not in used:
                return pt
        raise UnsupportedError("cannot allocate more dynamic codec payload types")

    for media_codec in media_codecs:
        if is_rtx_codec(media_codec):
            raise InvalidRequestError("mediaCodecs must not list RTX codecs (they are added per video codec)")
        matched = next(
            (s for s in supported["codecs"] if match_codecs(media_codec, s, strict=True)), None
        ) or next((s for s in supported["codecs"] if match_codecs(media_codec, s)), None)
        if matched is None:
            raise UnsupportedError(f"media codec not supported [mimeType:{media_codec['mimeType']}]")
        codec = copy.deepcopy(matched)
        pt = media_codec.get("preferredPayloadType")
        if pt is None or pt in used:  # honoured if given and still free
            pt = take_dynamic()
        used.add(pt)
        codec["preferredPayloadType"] = pt
        codec["parameters"] = {**codec["parameters"], **media_codec["parameters"]}
        caps["codecs"].append(_capability_shape(codec))
        if codec["kind"] == "video":
            rtx_pt = take_dynamic()
            used.add(rtx_pt)
            caps["codecs"].append(
                {
                    "kind": "video",
                    "mimeType": "video/rtx",
                    "clockRate": codec["clockRate"],
                    "preferredPayloadType": rtx_pt,
                    "parameters": {"apt": pt},
                    "rtcpFeedback": [],
                }
            )
    return caps


def _capability_shape(codec: dict) -> dict:
    out = {
        "kind": codec["kind"],
        "mimeType": codec["mimeType"],
        "clockRate": codec["clockRate"],
    }
    if codec["kind"] == "audio":
        out["channels"] = codec["channels"]
    out["preferredPayloadType"] = codec["preferredPayloadType"]
    out["parameters"] = codec["parameters"]
    out["rtcpFeedback"] = codec["rtcpFeedback"]
    return out


# --------------------------------------------------------------------------- producer side


def _codec_kind(codec: dict) -> str:
    return str(codec["mimeType"]).split("/", 1)[0].lower()


def get_producer_rtp_parameters_mapping(
    rtp_parameters: dict,
    router_caps: dict,
    *,
    kind: str | None = None,
    ssrc_factory: SsrcFactory = random_ssrc,
) -> dict:
    """mediasoup's getProducerRtpParametersMapping.

    Returns ``{"codecs": [{"payloadType", "mappedPayloadType"}], "encodings": [{"mappedSsrc",
    "ssrc"?, "rid"?, "rtxSsrc"?, "scalabilityMode"?}]}``. ``rtp_parameters`` is validated (and
    normalised) first; H264 producer codecs get their profile-level-id set to the negotiated one.
    Raises UnsupportedError when a media codec (or its RTX) has no router counterpart,
    InvalidRequestError when the parameters are malformed or inconsistent.
    """
    validate_rtp_parameters(rtp_parameters)
    codecs = rtp_parameters["codecs"]
    if not codecs:
        raise InvalidRequestError("rtpParameters.codecs is empty")
    if is_rtx_codec(codecs[0]):
        raise InvalidRequestError("the first codec in rtpParameters.codecs must be a media codec")
    kinds = {_codec_kind(c) for c in codecs}
    if len(kinds) != 1 or (kind is not None and kinds != {kind}):
        raise InvalidRequestError(f"rtpParameters.codecs do not all match kind {kind or sorted(kinds)}")
    cap_codecs = router_caps.get("codecs") or []

    matched: list[tuple[dict, dict]] = []
    by_pt: dict[int, dict] = {}
    for codec in codecs:
        if is_rtx_codec(codec):
            continue
        cap = next(
            (
                c
                for c in cap_codecs
                if not is_rtx_codec(c) and match_codecs(codec, c, strict=True, modify=True)
            ),
            None,
        )
        if cap is None:
            raise UnsupportedError(
                f"unsupported codec [mimeType:{codec['mimeType']}, payloadType:{codec['payloadType']}]"
            )
        matched.append((codec, cap))
        by_pt[codec["payloadType"]] = cap
    for codec in codecs:
        if not is_rtx_codec(codec):
            continue
        apt = codec["parameters"]["apt"]
        media_cap = by_pt.get(apt)
        if media_cap is None:
            raise InvalidRequestError(
                f"missing media codec for RTX payloadType {codec['payloadType']} (apt {apt})"
            )
        rtx_cap = _rtx_codec_for(cap_codecs, media_cap["preferredPayloadType"])
        if rtx_cap is None:
            raise UnsupportedError(
                f"no RTX codec for capability codec PT {media_cap['preferredPayloadType']}"
            )
        matched.append((codec, rtx_cap))

    encodings = rtp_parameters["encodings"] or [{}]
    _check_encodings(encodings)
    base = ssrc_factory()
    mapped_encodings = []
    for i, enc in enumerate(encodings):
        entry: dict[str, Any] = {"mappedSsrc": ((base + i - 1) % _UINT32) + 1}
        if enc.get("rid"):
            entry["rid"] = enc["rid"]
        if enc.get("ssrc"):
            entry["ssrc"] = enc["ssrc"]
        if enc.get("rtx"):
            entry["rtxSsrc"] = enc["rtx"]["ssrc"]
        if enc.get("scalabilityMode"):
            entry["scalabilityMode"] = enc["scalabilityMode"]
        mapped_encodings.append(entry)
    return {
        "codecs": [
            {"payloadType": c["payloadType"], "mappedPayloadType": cap["preferredPayloadType"]}
            for c, cap in matched
        ],
        "encodings": mapped_encodings,
    }


def _rtx_codec_for(codecs: list[dict], apt: int) -> dict | None:
    """The RTX codec associated with media payload type ``apt``, if any."""
    for codec in codecs:
        if is_rtx_codec(codec) and (codec.get("parameters") or {}).get("apt") == apt:
            return codec
    return None


def _check_encodings(encodings: list[dict]) -> None:
    rids: set[str] = set()
    ssrcs: set[int] = set()
    for i, enc in enumerate(encodings):
        if len(encodings) > 1 and not enc.get("rid") and not enc.get("ssrc"):
            raise InvalidRequestError(f"rtpParameters.encodings[{i}] needs a rid or an ssrc (simulcast)")
        if enc.get("rid"):
            if enc["rid"] in rids:
                raise InvalidRequestError(f"duplicated rid {enc['rid']!r} in rtpParameters.encodings")
            rids.add(enc["rid"])
        for ssrc in (enc.get("ssrc"), (enc.get("rtx") or {}).get("ssrc")):
            if ssrc:
                if ssrc in ssrcs:
                    raise InvalidRequestError(f"duplicated ssrc {ssrc} in rtpParameters.encodings")
                ssrcs.add(ssrc)


def get_producer_header_extension_mapping(
    rtp_parameters: dict, router_caps: dict, kind: str
) -> dict[int, int]:
    """Client header extension id -> router id, for the URIs the router can receive for ``kind``
    (mid, rid and rrid included; unsupported ones such as transport-cc are left out)."""
    router_ids = {
        ext["uri"]: ext["preferredId"]
        for ext in router_caps.get("headerExtensions") or []
        if ext.get("kind") == kind and ext.get("direction", "sendrecv") in ("sendrecv", "recvonly")
    }
    return {
        ext["id"]: router_ids[ext["uri"]]
        for ext in rtp_parameters.get("headerExtensions") or []
        if ext.get("uri") in router_ids
    }


def get_consumable_rtp_parameters(kind: str, rtp_parameters: dict, router_caps: dict, mapping: dict) -> dict:
    """mediasoup's getConsumableRtpParameters: the producer's stream in router terms (router PTs,
    router extension ids usable towards consumers, encodings with ``ssrc`` = mappedSsrc)."""
    mapped_pt = {c["payloadType"]: c["mappedPayloadType"] for c in mapping["codecs"]}
    cap_codecs = router_caps.get("codecs") or []
    consumable: dict[str, Any] = {"codecs": [], "headerExtensions": [], "encodings": [], "rtcp": {}}
    for codec in rtp_parameters["codecs"]:
        if is_rtx_codec(codec):
            continue
        pt = mapped_pt[codec["payloadType"]]
        cap = next(c for c in cap_codecs if c.get("preferredPayloadType") == pt)
        media = {
            "mimeType": cap["mimeType"],
            "payloadType": pt,
            "clockRate": cap["clockRate"],
            "parameters": copy.deepcopy(codec.get("parameters") or {}),  # keep the producer's
            "rtcpFeedback": copy.deepcopy(cap.get("rtcpFeedback") or []),
        }
        if "channels" in cap:
            media["channels"] = cap["channels"]
        consumable["codecs"].append(media)
        rtx_cap = _rtx_codec_for(cap_codecs, pt)
        if rtx_cap is not None:
            consumable["codecs"].append(
                {
                    "mimeType": rtx_cap["mimeType"],
                    "payloadType": rtx_cap["preferredPayloadType"],
                    "clockRate": rtx_cap["clockRate"],
                    "parameters": copy.deepcopy(rtx_cap.get("parameters") or {}),
                    "rtcpFeedback": copy.deepcopy(rtx_cap.get("rtcpFeedback") or []),
                }
            )
    for ext in router_caps.get("headerExtensions") or []:
        if ext.get("kind") != kind or ext.get("direction", "sendrecv") not in ("sendrecv", "sendonly"):
            continue
        consumable["headerExtensions"].append(
            {
                "uri": ext["uri"],
                "id": ext["preferredId"],
                "encrypt": bool(ext.get("preferredEncrypt")),
                "parameters": {},
            }
        )
    for enc, mapped in zip(rtp_parameters["encodings"] or [{}], mapping["encodings"], strict=False):
        dropped = ("rid", "rtx", "codecPayloadType", "ssrc")
        out = {k: copy.deepcopy(v) for k, v in enc.items() if k not in dropped}
        out["ssrc"] = mapped["mappedSsrc"]
        consumable["encodings"].append(out)
    cname = (rtp_parameters.get("rtcp") or {}).get("cname")
    consumable["rtcp"] = {**({"cname": cname} if cname else {}), "reducedSize": True, "mux": True}
    return consumable


# --------------------------------------------------------------------------- consumer side


def _validated_copy(caps: Any) -> dict:
    caps = copy.deepcopy(caps)
    validate_rtp_capabilities(caps)
    return caps


def can_consume(consumable_params: dict, caps: dict) -> bool:
    """mediasoup's canConsume: True if the first codec the endpoint can receive is a media codec.
    Malformed ``caps`` raise InvalidRequestError (they are not silently "incompatible")."""
    caps = _validated_copy(caps)
    matching = [
        codec
        for codec in consumable_params["codecs"]
        if any(match_codecs(cap, codec, strict=True) for cap in caps["codecs"])
    ]
    return bool(matching) and not is_rtx_codec(matching[0])


def get_consumer_rtp_parameters(
    consumable_params: dict,
    caps: dict,
    pipe: bool = False,
    enable_rtx: bool = True,
    *,
    ssrc_factory: SsrcFactory = random_ssrc,
) -> dict:
    """mediasoup's getConsumerRtpParameters: what a consumer endpoint is told (``mid`` is set by
    the caller). Codecs: the consumable codecs the endpoint supports, reduced to the first media
    codec and its RTX (RTX only if ``enable_rtx`` and both sides have it; without RTX generic NACK
    is dropped too, as in mediasoup). rtcpFeedback is intersected with the endpoint's, then
    transport-cc/goog-remb chosen by the negotiated extensions. One encoding with a fresh ssrc (all
    encodings when ``pipe``). Raises UnsupportedError if no media codec is compatible."""
    caps = _validated_copy(caps)
    kind = _codec_kind(consumable_params["codecs"][0]) if consumable_params.get("codecs") else None
    codecs: list[dict] = []
    for codec in consumable_params["codecs"]:
        if not enable_rtx and is_rtx_codec(codec):
            continue
        cap = next((c for c in caps["codecs"] if match_codecs(c, codec, strict=True)), None)
        if cap is None:
            continue
        out = copy.deepcopy(codec)
        out["rtcpFeedback"] = [
            fb
            for fb in reduce_rtcp_feedback(codec, cap)
            if enable_rtx or fb["type"] != "nack" or fb["parameter"]
        ]
        codecs.append(out)
    # Keep the first media codec and the RTX codec associated with it.
    media = next((c for c in codecs if not is_rtx_codec(c)), None)
    if media is None:
        raise UnsupportedError("no compatible media codecs")
    selected = [media]
    rtx = _rtx_codec_for(codecs, media["payloadType"])
    if rtx is not None:
        selected.append(rtx)

    header_extensions = [
        copy.deepcopy(ext)
        for ext in consumable_params.get("headerExtensions") or []
        if any(
            cap_ext["preferredId"] == ext["id"]
            and cap_ext["uri"] == ext["uri"]
            and (kind is None or cap_ext.get("kind") in (None, kind))
            for cap_ext in caps["headerExtensions"]
        )
    ]
    _reduce_bwe_feedback(selected, header_extensions)

    rtcp = copy.deepcopy(consumable_params.get("rtcp") or {})
    rtcp.update(reducedSize=True, mux=True)
    params: dict[str, Any] = {
        "codecs": selected,
        "headerExtensions": header_extensions,
        "encodings": [],
        "rtcp": rtcp,
    }
    encodings = consumable_params.get("encodings") or []
    if pipe:
        for enc in encodings:
            out = copy.deepcopy(enc)
            out["ssrc"] = ssrc_factory()
            if rtx is not None:
                out["rtx"] = {"ssrc": _fresh_ssrc(ssrc_factory, {out["ssrc"]})}
            else:
                out.pop("rtx", None)
            params["encodings"].append(out)
        return params

    ssrc = ssrc_factory()
    encoding: dict[str, Any] = {"ssrc": ssrc}
    if rtx is not None:
        encoding["rtx"] = {"ssrc": _fresh_ssrc(ssrc_factory, {ssrc})}
    mode = next((e["scalabilityMode"] for e in encodings if e.get("scalabilityMode")), None)
    if len(encodings) > 1:
        _, temporal, _ = parse_scalability_mode(mode)
        mode = f"L{len(encodings)}T{temporal}"
    if mode:
        encoding["scalabilityMode"] = mode
    max_bitrate = max((e.get("maxBitrate") or 0 for e in encodings), default=0)
    if max_bitrate:
        encoding["maxBitrate"] = max_bitrate
    params["encodings"].append(encoding)
    return params


def _fresh_ssrc(factory: SsrcFactory, taken: set[int]) -> int:
    while True:
        ssrc = factory()
        if ssrc not in taken:
            return ssrc


def _reduce_bwe_feedback(codecs: list[dict], header_extensions: list[dict]) -> None:
    uris = {ext["uri"] for ext in header_extensions}
    if TRANSPORT_CC_URI in uris:
        drop = {"goog-remb"}
    elif ABS_SEND_TIME_URI in uris:
        drop = {"transport-cc"}
    else:
        drop = {"transport-cc", "goog-remb"}
    for codec in codecs:
        codec["rtcpFeedback"] = [fb for fb in codec["rtcpFeedback"] if fb["type"] not in drop]


def get_pipe_consumer_rtp_parameters(
    consumable_params: dict, enable_rtx: bool = False, *, ssrc_factory: SsrcFactory = random_ssrc
) -> dict:
    """mediasoup's getPipeConsumerRtpParameters: every codec (RTX only with ``enable_rtx``), feedback
    reduced to PLI/FIR (+ NACK with RTX), no MID/BWE extensions, and all encodings kept with their
    consumable (mapped) SSRCs (+ a fresh RTX SSRC each with ``enable_rtx``)."""
    codecs = []
    for codec in consumable_params["codecs"]:
        if not enable_rtx and is_rtx_codec(codec):
            continue
        out = copy.deepcopy(codec)
        out["rtcpFeedback"] = [
            fb
            for fb in out.get("rtcpFeedback") or []
            if (fb["type"] == "nack" and fb.get("parameter") == "pli")
            or (fb["type"] == "ccm" and fb.get("parameter") == "fir")
            or (enable_rtx and fb["type"] == "nack" and not fb.get("parameter"))
        ]
        codecs.append(out)
    header_extensions = [
        copy.deepcopy(ext)
        for ext in consumable_params.get("headerExtensions") or []
        if ext["uri"] not in (MID_URI, ABS_SEND_TIME_URI, TRANSPORT_CC_URI)
    ]
    encodings = []
    taken = {e["ssrc"] for e in consumable_params.get("encodings") or []}
    for enc in consumable_params.get("encodings") or []:
        out = copy.deepcopy(enc)
        if enable_rtx:
            rtx_ssrc = _fresh_ssrc(ssrc_factory, taken)
            taken.add(rtx_ssrc)
            out["rtx"] = {"ssrc": rtx_ssrc}
        else:
            out.pop("rtx", None)
        encodings.append(out)
    return {
        "codecs": codecs,
        "headerExtensions": header_extensions,
        "encodings": encodings,
        "rtcp": copy.deepcopy(consumable_params.get("rtcp") or {}),
    }
