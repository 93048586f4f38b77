"""The server's log output: every process (driver and actors) at one level, in one format.

``studyrooms serve --log-level INFO`` (or ``STUDYROOMS_LOG_LEVEL``) and ``STUDYROOMS_LOG_FORMAT``
(``text``, the default, or ``json``) apply to the driver and, through the job's runtime
environment (:func:`job_runtime_env`: the variables plus Ray's ``worker_process_setup_hook``), to
every actor process; Ray forwards the actors' stderr to the server's output.

* text: ``2026-01-01 12:00:00,000 INFO studyrooms.room: room maths: p1 joined (2) [room=maths participant=p1]``
  (Ray puts ``(SignalingActor pid=...)`` in front of an actor's lines);
* json: one object per line, ``{"ts", "level", "logger", "msg", "pid", "room_id", "participant_id", ...}``
  (Ray's prefix is switched off, see actors/rayenv.py).

This module does not import Ray at module level.
"""

from __future__ import annotations

import logging
import os
import sys

from studyrooms import observability as obs

LEVEL_ENV = "STUDYROOMS_LOG_LEVEL"
FORMAT_ENV = "STUDYROOMS_LOG_FORMAT"
TAGS_ENV = "STUDYROOMS_DEBUG_TAGS"
#: Ray's ``worker_process_setup_hook`` (a module path: importable on every node)
SETUP_HOOK = "actors.logs.setup_worker_logging"

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: ids bound with studyrooms.observability.log_context, in this order, shown as ``[room=... ...]``
_TEXT_IDS = (("room_id", "room"), ("participant_id", "participant"), ("transport_id", "transport"),
             ("sid", "sid"))

_HANDLER_MARK = "_studyrooms_handler"


class TextFormatter(logging.Formatter):
    """The classic line, followed by the bound ids: ``... [room=maths participant=p1]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = getattr(record, "ids", None) or {}
        tags = " ".join(f"{short}={ids[key]}" for key, short in _TEXT_IDS if ids.get(key))
        return f"{line} [{tags}]" if tags else line


def log_format(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    return "json" if env.get(FORMAT_ENV, "").strip().lower() == "json" else "text"


def configure(level: str | None = None, fmt: str | None = None, *, stream=None) -> logging.Handler:
    """One handler on the root logger (stderr), the id/trace filter, ``level`` for the root.

    Idempotent: a second call replaces the handler this function installed before."""
    from .telemetry import JsonFormatter

    level = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    fmt = fmt or log_format()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(obs.ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    obs.enable_debug_tags(os.environ.get(TAGS_ENV))
    for noisy in ("aiohttp.access", "engineio", "socketio"):  # per-request chatter stays at WARNING
        if logging.getLogger(noisy).level == logging.NOTSET:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def ensure_configured() -> None:
    """An actor process whose job set no logging (a driver without :func:`job_runtime_env`, e.g.
    tests or notebooks) gets the same handler and format, so its lines carry their level."""
    if not logging.getLogger().handlers:
        configure()


def setup_worker_logging() -> None:
    """Ray's ``worker_process_setup_hook``: runs once in every worker process of the job."""
    configure()


def job_runtime_env(level: str, env: dict | None = None) -> dict:
    """The job-level runtime environment carrying the log settings to every actor process."""
    env = os.environ if env is None else env
    env_vars = {LEVEL_ENV: level.upper(), FORMAT_ENV: log_format(env)}
    if env.get(TAGS_ENV):
        env_vars[TAGS_ENV] = env[TAGS_ENV]
    return {"env_vars": env_vars, "worker_process_setup_hook": SETUP_HOOK}
