"""Crossing the Ray hop: awaiting a remote call with the studyrooms error tree intact.

A :class:`studyrooms.errors.StudyRoomsError` raised inside an actor pickles with its wire code, but
Ray wraps it in a ``RayTaskError``; :func:`call` unwraps it so the caller sees the very class that
was raised (a ``NotFoundError`` in a media worker is a ``NotFoundError`` in the room host). Ray's own
failures become studyrooms errors too: a dead or unreachable actor is an ``InternalError`` whose
message says "unavailable", and so is a call that times out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from studyrooms.errors import InternalError, StudyRoomsError

logger = logging.getLogger("studyrooms.actors")

#: Bound on every control call across the hop (a media worker answers in ~1-3 ms).
DEFAULT_TIMEOUT_S = 30.0


def to_studyrooms_error(exc: BaseException, what: str = "actor") -> StudyRoomsError:
    """Map any exception coming out of ``await ref`` to a studyrooms error."""
    if isinstance(exc, StudyRoomsError) and not isinstance(exc, RayTaskError):
        return exc
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, StudyRoomsError):
            return cause  # the very object raised remotely (it pickled with its code)
        if cause is not None and not isinstance(cause, RayError):
            return InternalError(f"{what} failed: {type(cause).__name__}: {cause}")
        if isinstance(cause, RayError):
            return to_studyrooms_error(cause, what)
        return InternalError(f"{what} failed")
    if isinstance(exc, RayActorError):  # ActorDiedError, ActorUnavailableError
        return InternalError(f"{what} unavailable: {type(exc).__name__}")
    if isinstance(exc, (asyncio.TimeoutError, GetTimeoutError)):
        return InternalError(f"{what} unavailable: timed out")
    if isinstance(exc, RayError):
        return InternalError(f"{what} unavailable: {type(exc).__name__}")
    return InternalError(f"{what} failed: {type(exc).__name__}: {exc}")


async def call(ref: Awaitable[Any], *, what: str = "actor", timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Any:
    """``await`` an ObjectRef; raise only studyrooms errors."""
    try:
        if timeout_s is None:
            return await ref
        return await asyncio.wait_for(_as_future(ref), timeout_s)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything becomes a studyrooms error
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise to_studyrooms_error(exc, what) from exc  # __cause__: the Ray error, for callers that care


async def call_restarting(make_ref: Any, *, what: str = "actor", timeout_s: float = DEFAULT_TIMEOUT_S,
                          retry_s: float = 8.0) -> Any:
    """:func:`call` of ``make_ref()``, submitted again while the actor is restarting (Ray answers
    ``ActorUnavailableError`` until the new process is up, design/ray.md §5). Only for calls whose
    first try cannot have had an effect that survives: the actor's process and state are new."""
    from ray.exceptions import ActorUnavailableError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_s
    while True:
        try:
            return await call(make_ref(), what=what, timeout_s=timeout_s)
        except StudyRoomsError as exc:
            if not isinstance(exc.__cause__, ActorUnavailableError) or loop.time() > deadline:
                raise
            logger.info("%s is restarting: trying again", what)
            await asyncio.sleep(0.2)


def _as_future(ref: Any) -> Any:
    if isinstance(ref, ray.ObjectRef):
        return asyncio.wrap_future(ref.future())  # wait_for can cancel a future, not an ObjectRef
    return ref

