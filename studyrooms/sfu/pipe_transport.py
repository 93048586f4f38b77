"""PipeTransport (mediasoup's): plain RTP/RTCP between two routers on different workers.

Network-wise it is a PlainTransport that is always connected explicitly, both ways:
``a.connect(b.tuple ip/port)`` and ``b.connect(a.tuple ip/port)``; optional SRTP with exchanged
keys. What travels over it (every stream of a producer, unchanged) is the routers' business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..clock import Clock
from .options import PlainTransportOptions, WorkerOptions
from .plain_transport import PlainTransport

if TYPE_CHECKING:
    from .router import Router


class PipeTransport(PlainTransport):
    kind = "pipe"

    @classmethod
    async def create_pipe(
        cls,
        router: "Router",
        transport_id: str,
        *,
        worker_options: WorkerOptions,
        listen_ip: str | None = None,
        announced_ip: str | None = None,
        port: int | None = None,
        enable_srtp: bool = False,
        app_data: dict | None = None,
        clock: Clock | None = None,
    ) -> "PipeTransport":
        options = PlainTransportOptions(
            listen_ip=listen_ip or worker_options.listen_ip,
            announced_ip=announced_ip,
            port=port,
            rtcp_mux=True,
            comedia=False,
            enable_srtp=enable_srtp,
            srtp_crypto_suite="AEAD_AES_256_GCM" if enable_srtp else "AES_CM_128_HMAC_SHA1_80",
            app_data=dict(app_data or {}),
        )
        transport = await cls.create(router, transport_id, options=options, worker_options=worker_options, clock=clock)
        assert isinstance(transport, PipeTransport)
        return transport
