"""Study-room domain above the SFU: Room, Participant, policy, RoomService (plain objects).

Talks to media workers only through :class:`~studyrooms.rooms.ports.WorkerPort` (never imports
``studyrooms.sfu``/``net``/``media``); see docs/worker-api.md for the methods it calls.
"""

from __future__ import annotations

from .limits import TokenBucket
from .local import LocalNotifier, LocalRoomsPort
from .participant import Participant
from .ports import DirectoryPort, NotifierPort, WorkerPort
from .room import Room
from .service import RoomService

__all__ = [
    "DirectoryPort",
    "LocalNotifier",
    "LocalRoomsPort",
    "NotifierPort",
    "Participant",
    "Room",
    "RoomService",
    "TokenBucket",
    "WorkerPort",
]
