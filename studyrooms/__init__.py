"""StudyRooms: a mediasoup-compatible SFU in Python (the plain library; never imports Ray)."""

__version__ = "0.1.0"
