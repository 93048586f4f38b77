"""Typed events with safe emit (mediasoup's EnhancedEventEmitter, in Python).

A listener that raises is logged and never breaks the emitter or the other listeners: a bad
observer must not take down a media worker. Listeners are plain callables (sync); an entity that
needs async work schedules it itself.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

logger = logging.getLogger("studyrooms.events")

Listener = Callable[..., Any]


class EventEmitter:
    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def on(self, event: str, listener: Listener) -> Listener:
        self._listeners.setdefault(event, []).append(listener)
        return listener

    def once(self, event: str, listener: Listener) -> Listener:
        def wrapper(*args: Any) -> None:
            self.off(event, wrapper)
            listener(*args)

        return self.on(event, wrapper)

    def off(self, event: str, listener: Listener) -> None:
        listeners = self._listeners.get(event)
        if listeners and listener in listeners:
            listeners.remove(listener)

    def remove_all_listeners(self, event: str | None = None) -> None:
        if event is None:
            self._listeners.clear()
        else:
            self._listeners.pop(event, None)

    def listener_count(self, event: str) -> int:
        return len(self._listeners.get(event, ()))

    def emit(self, event: str, *args: Any) -> bool:
        listeners = self._listeners.get(event)
        if not listeners:
            return False
        for listener in tuple(listeners):
            try:
                listener(*args)
            except Exception:  # noqa: BLE001 - a listener must never break the emitter
                logger.exception("listener for %r failed", event)
        return True
