"""Shared building blocks of the wire models: the base classes, bounded ids and bounded JSON.

Wire keys are camelCase (``alias_generator=to_camel``); requests accept *only* the camelCase names,
reject unknown keys (``extra="forbid"``) and do not coerce types (``strict=True``). Nested mediasoup
parameter objects (rtpParameters, rtpCapabilities, dtlsParameters) are checked structurally here
(known fields typed, everything bounded: lists <= 32 items, strings <= 256 chars, nesting <= 6);
deep codec validation is the SFU's job.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

MAX_LIST = 32
MAX_STR = 256
MAX_KEYS = 64
MAX_KEY_LEN = 64
MAX_DEPTH = 6

ID_PATTERN = r"^[A-Za-z0-9_-]+$"

#: An entity id on the wire (participant, transport, producer, consumer, room).
Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=ID_PATTERN)]
RoomId = Id
BoundedStr = Annotated[str, StringConstraints(strict=True, max_length=MAX_STR)]


def check_json(value: Any, depth: int = 0) -> Any:
    """Reject anything that is not small JSON (bounded lists, strings, keys and nesting)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise ValueError(f"string longer than {MAX_STR} characters")
        return value
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ValueError(f"list longer than {MAX_LIST} items")
        for item in value:
            check_json(item, depth + 1)
        return value
    if isinstance(value, dict):
        if len(value) > MAX_KEYS:
            raise ValueError(f"object with more than {MAX_KEYS} keys")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY_LEN:
                raise ValueError(f"object key longer than {MAX_KEY_LEN} characters")
            check_json(item, depth + 1)
        return value
    raise ValueError(f"not a JSON value: {type(value).__name__}")


#: A small JSON object (codec parameters, appData of nested objects...).
BoundedDict = Annotated[dict[str, Any], AfterValidator(check_json)]


class WireModel(BaseModel):
    """Base of every wire model: camelCase aliases, strict, unknown keys rejected."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        frozen=True,
    )

    def wire(self) -> dict:
        """The JSON-able dict sent on the wire (camelCase, optional fields left out when unset)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class OpenWireModel(WireModel):
    """A mediasoup parameter object: known fields typed, extra fields allowed but bounded.

    mediasoup formats grow (e.g. ``msid`` in recent mediasoup-client rtpParameters), so nested
    parameter objects keep what they do not know instead of rejecting it; the top-level request
    models stay ``extra="forbid"``.
    """

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # known fields are typed and bounded by their own validators (exact error locations);
        # the extra ones are checked here, named in the message
        if isinstance(value, dict):
            if len(value) > MAX_KEYS:
                raise ValueError(f"object with more than {MAX_KEYS} keys")
            known = {f.alias or name for name, f in cls.model_fields.items()}
            for key, item in value.items():
                if key in known:
                    continue
                if not isinstance(key, str) or len(key) > MAX_KEY_LEN:
                    raise ValueError(f"object key longer than {MAX_KEY_LEN} characters")
                try:
                    check_json(item, 1)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return value


class OutModel(BaseModel):
    """Base of response and notification models (built by the server, not parsed from clients)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )

    def wire(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)
