"""Per-packet media plane code: RTP/RTCP byte views, seq/ts rewriting, retransmission buffer,
NACK generation, keyframe detection and request throttling, stream counters.

Pure, synchronous, allocation-light; imports only the kernel (clock, ids) and the stdlib.
"""

from studyrooms.media.keyframe import KeyFrameRequestThrottle, is_keyframe
from studyrooms.media.recv_stream import RecvStream
from studyrooms.media.send_stream import SendStream
from studyrooms.media.vp8 import Vp8PictureRewriter, parse_vp8_descriptor

__all__ = [
    "KeyFrameRequestThrottle",
    "RecvStream",
    "SendStream",
    "Vp8PictureRewriter",
    "is_keyframe",
    "parse_vp8_descriptor",
]
