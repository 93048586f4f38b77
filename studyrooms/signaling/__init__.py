"""Socket.IO signaling edge: authentication, validation, dispatch to the RoomsPort, acks and
notification delivery. Knows nothing of the SFU, the media plane or room state."""

from __future__ import annotations

from .auth import Identity, dev_secret, issue_token, verify_token
from .ports import RoomsPort
from .server import SignalingServer

__all__ = ["Identity", "RoomsPort", "SignalingServer", "dev_secret", "issue_token", "verify_token"]
