"""WebRtcServer (mediasoup's): one UDP port shared by all WebRtcTransports of a worker, and with
ICE-TCP one TCP port too (the same number where free).

Clients are told the same ip:port; the ICE-lite server demuxes their STUN checks by ufrag and then
their DTLS/SRTP datagrams by 5-tuple (studyrooms.net.ice).
"""

from __future__ import annotations

from typing import Any

from ..media import ingress
from ..net.ice import IceLiteServer
from ..net.tcp import TcpListener, bind_tcp
from ..net.udp import UdpSocket, bind_udp


class WebRtcServer:
    def __init__(self, sock: UdpSocket, listen_ip: str, announced_ip: str | None,
                 tcp: TcpListener | None = None) -> None:
        self.socket = sock
        self.tcp = tcp
        self.ice_server = IceLiteServer(sock, tcp=tcp)
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
        enable_tcp: bool = False,
    ) -> "WebRtcServer":
        """Bind ``port`` (or one in ``port_range``, or an ephemeral one) on ``listen_ip``; with
        ``enable_tcp`` also listen on TCP (the UDP port's number if free, else one of the range)."""
        sock = await bind_udp(listen_ip, port, port_range=port_range, buffer_bytes=buffer_bytes,
                              compiled_reader=ingress.available())
        tcp = None
        if enable_tcp:
            try:
                tcp = await bind_tcp(listen_ip, sock.local_address[1], port_range=port_range)
            except BaseException:
                sock.close()
                raise
        return cls(sock, listen_ip, announced_ip, tcp)

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
        if self.tcp is not None:
            self.tcp.close()

    def dump(self) -> dict[str, Any]:
        return {
            "listenIp": self.listen_ip,
            "announcedIp": self.announced_ip,
            "port": self.port,
            "tcpPort": self.tcp.port if self.tcp is not None else None,
            "closed": self.closed,
            "connectionCount": self.ice_server.connection_count,
        }

    def get_stats(self) -> dict[str, Any]:
        out = {"udp": self.socket.stats(), "ice": self.ice_server.stats()}
        if self.tcp is not None:
            out["tcp"] = self.tcp.stats()
        return out
