"""Synthetic study-room participants that speak the real protocol end to end.

Socket.IO join, ICE (controlling side, toward the server's ICE-lite), DTLS (client), SRTP, and
pre-encoded RTP at realistic rates (Opus 50 packets/s ~100 bytes; VP8 camera ~100 packets/s ~1100
bytes, optionally three simulcast encodings; screen share), consuming what the server sends and
measuring loss, jitter and one-way latency (a send timestamp in the last 16 payload bytes).

Plain asyncio, no Ray: ``actors/loadtest.py`` runs shards of participants as Ray actors and
``benchmarks/scale.py`` runs them in-process. Results folder schema: ``results.py``.
"""
