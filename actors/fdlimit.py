"""File descriptors for a loaded actor process.

Every WebRtcTransport holds a UDP socket (and a TCP listener with ICE-TCP), every participant a
WebSocket on its front: a media worker carrying 500 participants' transports needs well over the
1,024 descriptors most Linux distributions give a process by default (soft limit), and a socket()
past it fails with EMFILE in the middle of a join. Servers raise their soft limit to the hard limit
the administrator allows; the media workers and the signaling fronts do so when they start.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("studyrooms.actors.fdlimit")


def raise_nofile_limit(want: int | None = None) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``want`` (default: the hard limit, capped at
    1,048,576); returns the soft limit now in force. Never raises: a platform without it, or a
    refusal, leaves the limit as it was (logged)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else 1 << 20
    target = min(want or ceiling, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        logger.warning("open-file limit is %d: a loaded media worker or front may run out of sockets "
                       "(raise the hard limit: `ulimit -Hn`, LimitNOFILE= in systemd)", soft)
    return soft
