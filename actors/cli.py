"""``studyrooms``: the console script.

``studyrooms serve``  starts a local Ray on loopback (or attaches to ``--address`` / ``RAY_ADDRESS``),
                      starts the actor system, prints the URL and serves until Ctrl-C / SIGTERM.
``studyrooms token``  prints a signed join token (``STUDYROOMS_AUTH_SECRET``).
``studyrooms loadtest`` synthetic participants as Ray actors against the app (or ``--url``); see actors/loadtest.py.

Configuration errors print one line on stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Sequence

EXIT_CONFIG = 2


class ConfigError(Exception):
    """One line for the user; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2 (argparse prints usage + error)
        raise ConfigError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="studyrooms", description="StudyRooms SFU on Ray")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the server (local Ray unless --address/RAY_ADDRESS)")
    serve.add_argument("--host", help="HTTP/Socket.IO listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP/Socket.IO port (default 8080; 0 = any free port)")
    serve.add_argument("--workers", type=int, help="media workers in total (default: one per media slot/core)")
    serve.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else a local Ray)")
    serve.add_argument("--rtc-min-port", type=int, help="lowest UDP port for media")
    serve.add_argument("--rtc-max-port", type=int, help="highest UDP port for media")
    serve.add_argument("--announced-ip", help="IP put in ICE candidates (public address behind NAT)")
    serve.add_argument("--listen-ip", help="IP the media workers bind (default 127.0.0.1)")
    serve.add_argument("--log-level", default=os.environ.get("STUDYROOMS_LOG_LEVEL", "INFO"),
                       help="DEBUG, INFO (default), WARNING, ERROR: the driver and every actor "
                            "(STUDYROOMS_LOG_FORMAT=json for one JSON object per line)")
    token = sub.add_parser("token", help="print a signed join token")
    token.add_argument("--room", required=True, action="append", help="room id (repeat for several; * = any)")
    token.add_argument("--name", required=True, help="display name")
    token.add_argument("--user", help="user id (default: the name)")
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default: server.token_ttl_s)")
    load = sub.add_parser("loadtest", help="synthetic participants as Ray actors; writes a results folder")
    load.add_argument("--rooms", type=int, default=2)
    load.add_argument("--participants", type=int, default=5, help="participants per room")
    load.add_argument("--duration", type=float, default=20.0, help="measured media window, seconds")
    load.add_argument("--url", help="a running server (default: start the app on this Ray)")
    load.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else a local Ray)")
    load.add_argument("--shards", type=int, help="load-generator actors (default: one per room, up to the CPUs)")
    load.add_argument("--workers", type=int, help="media workers when the app is started here")
    load.add_argument("--screen-share", type=int, default=1, help="participants per room also sharing a screen")
    load.add_argument("--simulcast", action="store_true", help="cameras send three simulcast encodings")
    load.add_argument("--join-gap", type=float, default=0.3, help="seconds between joins within a room")
    load.add_argument("--out", help="results parent folder (default benchmarks/results/loadtest)")
    load.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_settings(args: argparse.Namespace, env: dict | None = None):
    """Settings from the environment plus the command line (the command line wins)."""
    from studyrooms.config import Settings, is_loopback
    from studyrooms.errors import StudyRoomsError

    server: dict = {}
    media: dict = {}
    for name, key in (("host", "host"), ("port", "port"), ("workers", "num_workers"), ("address", "ray_address")):
        value = getattr(args, name, None)
        if value is not None:
            server[key] = value
    for name in ("rtc_min_port", "rtc_max_port", "announced_ip", "listen_ip"):
        value = getattr(args, name, None)
        if value is not None:
            media[name] = value
    try:
        settings = Settings.from_env(env, server=server, media=media)
    except StudyRoomsError as exc:
        raise ConfigError(f"studyrooms: {exc.message}") from None
    if not is_loopback(settings.server.host) and not settings.server.auth_secret:
        raise ConfigError(
            f"studyrooms: refusing to listen on {settings.server.host} without STUDYROOMS_AUTH_SECRET "
            "(open development mode is loopback-only)"
        )
    return settings


# ---------------------------------------------------------------------------------------- serve
async def _serve(settings, started_ray: bool) -> int:
    from .app import start_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)  # main thread of the driver: allowed here
    t0 = time.monotonic()
    workers = settings.server.num_workers
    progress(f"starting the actors ({f'{workers} media workers' if workers else 'a media worker per core'}, "
             "room hosts, signaling)...")
    starting = asyncio.ensure_future(start_app(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # interrupted while starting: start_app kills what it created
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return 0
    stopping.cancel()
    app = starting.result()  # raises a StudyRoomsError if the start failed
    where = "local Ray" if started_ray else "Ray cluster"
    print(serving_line(app.urls, len(app.workers), where, time.monotonic() - t0), flush=True)
    progress(f"ready: open {app.url} in a browser (Ctrl-C stops the server)")
    try:
        await stop.wait()
    finally:
        print("StudyRooms stopping...", file=sys.stderr, flush=True)
        await app.stop()
    return 0


def serving_line(urls: list[str], workers: int, where: str, up_s: float) -> str:
    """The one stdout line: every signaling front's URL (the first is the one to open; any of them
    serves any room, so a load balancer may spread clients over all of them)."""
    fronts = f", {len(urls)} signaling fronts" if len(urls) > 1 else ""
    return (f"StudyRooms serving on {' '.join(urls)} ({workers} media workers{fronts}, {where}, "
            f"up in {up_s:.1f} s)")


def progress(message: str) -> None:
    """One line per start-up phase on stderr (stdout carries only the "serving on <url>" line)."""
    print(f"studyrooms: {message}", file=sys.stderr, flush=True)


def serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from . import logs

    level = args.log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"studyrooms: --log-level: expected DEBUG, INFO, WARNING or ERROR, not {args.log_level!r}")
    os.environ[logs.LEVEL_ENV] = level
    logs.configure(level)
    logging.getLogger("studyrooms.cli").info("TURN: %s", settings.turn.summary())
    from studyrooms.errors import StudyRoomsError

    from studyrooms.media import fastpath

    from .rayenv import is_local

    local = is_local(settings.server.ray_address)
    progress("starting a local Ray (loopback only)..." if local else
             f"attaching to the Ray cluster at {settings.server.ray_address or os.environ.get('RAY_ADDRESS')}...")
    from .runtime import init_ray

    import ray

    try:  # STUDYROOMS_MEDIA_FAST_PATH=on without the compiled core: refuse to start (auto warns once)
        fastpath.configure(settings.media.fast_path)
    except StudyRoomsError as exc:
        print(f"studyrooms: could not start: {exc.message}", file=sys.stderr, flush=True)
        return 1

    try:
        started = init_ray(settings.server.ray_address, media_slots=settings.server.num_workers,
                           runtime_env=logs.job_runtime_env(level))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"studyrooms: could not start or reach Ray: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_serve(settings, started))
    except StudyRoomsError as exc:
        print(f"studyrooms: could not start: {exc.message}", file=sys.stderr, flush=True)
        return 1
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------- token
def token(args: argparse.Namespace) -> int:
    from studyrooms.config import Settings
    from studyrooms.errors import StudyRoomsError

    try:
        settings = Settings.from_env()
    except StudyRoomsError as exc:
        raise ConfigError(f"studyrooms: {exc.message}") from None
    secret = settings.server.auth_secret
    if not secret:
        raise ConfigError("studyrooms: STUDYROOMS_AUTH_SECRET is not set")
    ttl = args.ttl or settings.server.token_ttl_s
    print(issue_token(secret, user_id=args.user or args.name, display_name=args.name, rooms=args.room, ttl_s=ttl))
    return 0


def issue_token(secret: str, *, user_id: str, display_name: str, rooms: list[str], ttl_s: int) -> str:
    """Sign with the signaling layer's own function when it has one (the format is its contract)."""
    try:
        from studyrooms.signaling import auth  # type: ignore[attr-defined]

        for name in ("issue_token", "make_token", "create_token", "encode_token"):
            fn = getattr(auth, name, None)
            if callable(fn):
                return fn(secret, user_id=user_id, display_name=display_name, rooms=rooms, ttl_s=ttl_s)
    except ImportError:
        pass
    import jwt

    now = int(time.time())
    claims = {"sub": user_id, "name": display_name, "rooms": rooms, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command in ("serve", "loadtest"):  # before anything imports Ray (actors/rayenv.py)
            from .logs import log_format
            from .rayenv import prepare

            # the cluster address as load_settings will see it: --address, else the settings' variable
            address = getattr(args, "address", None) or os.environ.get("STUDYROOMS_SERVER_RAY_ADDRESS")
            prepare(address, log_format=log_format())
        if args.command == "serve":
            code = serve(args)
        elif args.command == "loadtest":
            from .loadtest import main as loadtest

            code = loadtest(args)
        else:
            code = token(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        code = EXIT_CONFIG
    except KeyboardInterrupt:
        code = 130
    if __name__ == "__main__" or argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
