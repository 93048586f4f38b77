"""WebRtcServer (mediasoup's): one UDP port shared by all WebRtcTransports of a worker.

Clients are told the same ip:port; the ICE-lite server demuxes their STUN checks by ufrag and then
their DTLS/SRTP datagrams by 5-tuple (studyrooms.net.ice).
"""

from __future__ import annotations

from typing import Any

from ..net.ice import IceLiteServer
from ..net.udp import UdpSocket, bind_udp


class WebRtcServer:
    def __init__(self, sock: UdpSocket, listen_ip: str, announced_ip: str | None) -> None:
        self.socket = sock
        self.ice_server = IceLiteServer(sock)
        self.listen_ip = listen_ip
        self.announced_ip = announced_ip
        self.closed = False

    @classmethod
    async def create(
        cls,
        listen_ip: str,
        announced_ip: str | None = None,
        port: int | None = None,
        port_range: tuple[int, int] | None = None,
        buffer_bytes: int | None = 4 * 1024 * 1024,
    ) -> "WebRtcServer":
        """Bind ``port`` (or one in ``port_range``, or an ephemeral one) on ``listen_ip``."""
        sock = await bind_udp(listen_ip, port, port_range=port_range, buffer_bytes=buffer_bytes)
        return cls(sock, listen_ip, announced_ip)

    @property
    def port(self) -> int:
        return self.socket.local_address[1]

    def candidates_for(self, connection) -> list[dict[str, Any]]:
        return connection.candidates(self.listen_ip, self.announced_ip, self.port)

    def close(self) -> None:
        """Closes the ICE connections of every transport using it (they close), then the socket."""
        if self.closed:
            return
        self.closed = True
        self.ice_server.close()
        self.socket.close()

    def dump(self) -> dict[str, Any]:
        return {
            "listenIp": self.listen_ip,
            "announcedIp": self.announced_ip,
            "port": self.port,
            "closed": self.closed,
            "connectionCount": self.ice_server.connection_count,
        }

    def get_stats(self) -> dict[str, Any]:
        return {"udp": self.socket.stats(), "ice": self.ice_server.stats()}
