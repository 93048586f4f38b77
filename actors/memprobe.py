"""What a process holds, for finding what an episode left behind (benchmarks.memory_episode, tests).

:func:`census` counts live Python objects by type (after a full collection), asyncio tasks, and
reads the kernel's and glibc's view of the memory: ``/proc/self/smaps_rollup`` (RSS, anonymous,
file-backed) and ``mallinfo2`` (bytes glibc has handed out vs. holds free in its heaps). Comparing
two censuses tells a leak (objects or ``in_use`` grow) from fragmentation (``in_use`` back near the
baseline, ``free`` kept). :func:`diff` gives the types whose counts changed most.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
from collections import Counter


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _mallinfo2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()


def malloc_stats() -> dict:
    """glibc's main view, MiB: ``inUse`` (handed out: live native + Python arenas), ``free`` (held
    in heaps, not returned), ``mmapped`` (large blocks, returned on free)."""
    if _MALLINFO2 is None:
        return {}
    m = _MALLINFO2()
    mib = 1 << 20
    return {"inUseMiB": round(m.uordblks / mib, 1), "freeMiB": round(m.fordblks / mib, 1),
            "mmappedMiB": round(m.hblkhd / mib, 1), "heapMiB": round(m.arena / mib, 1)}


def pymalloc_stats() -> dict:
    """Python's small-object allocator (``sys._debugmallocstats``), MiB: ``arenas`` (1 MiB each,
    mmapped; several in a row show as one mapping), ``used`` (bytes in allocated blocks) and the
    rest of those arenas (free blocks, free pools: fragmentation that holds whole arenas)."""
    import tempfile

    out: dict = {}
    try:
        with tempfile.TemporaryFile(mode="w+") as tmp:
            saved = os.dup(2)
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read()
    except (OSError, AttributeError):
        return out
    mib = 1 << 20
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip().replace(",", "")
        if not value.isdigit():
            continue
        if key == "# arenas allocated current":
            out["arenas"] = int(value)
        elif key == "# arenas highwater mark":
            out["arenasPeak"] = int(value)
        elif key == "# bytes in allocated blocks":
            out["usedMiB"] = round(int(value) / mib, 1)
        elif key == "# bytes in available blocks":
            out["freeBlocksMiB"] = round(int(value) / mib, 1)
        elif key.startswith("# bytes lost to"):
            out["lostMiB"] = round(out.get("lostMiB", 0) + int(value) / mib, 1)
        elif key.endswith("unused pools * 16384 bytes") or "unused pools" in key:
            out["unusedPoolsMiB"] = round(int(value) / mib, 1)
    return out


def smaps() -> dict:
    out: dict = {}
    try:
        with open("/proc/self/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Anonymous", "Private_Dirty", "Shared_Clean", "Swap"):
                    out[key + "MiB"] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def anon_mappings() -> dict:
    """Resident anonymous memory by kind of mapping, MiB: ``brk`` (glibc's main heap), ``arenas``
    (glibc's thread arenas: 64 MiB-aligned reservations), ``small`` (mappings up to 1 MiB: Python's
    object arenas, small mmaps) and ``other``, with the count of each."""
    out: dict = {}
    try:
        with open("/proc/self/smaps") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    current: tuple | None = None
    largest: list = []  # (rss KiB, size KiB, kind, perms) of the "other" and "arenas" mappings
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            name = head[5] if len(head) > 5 else ""
            size = hi - lo
            if name == "[heap]":
                kind = "brk"
            elif name:
                kind = None  # file-backed, stack, vdso...
            elif lo % (64 << 20) == 0 and "rw" in head[1]:
                kind = "arenas"
            elif size <= (1 << 20) + 4096:
                kind = "small"
            else:
                kind = "other"
            current = (kind, size, head[1])
        elif head and head[0] == "Rss:" and current is not None and current[0] is not None:
            entry = out.setdefault(current[0], [0.0, 0])
            entry[0] += int(head[1]) / 1024
            entry[1] += 1
            if current[0] in ("other", "arenas"):
                largest.append((int(head[1]), current[1] // 1024, current[0], current[2]))
    result: dict = {k: {"rssMiB": round(v[0], 1), "count": v[1]} for k, v in out.items()}
    result["largest"] = [{"rssKiB": r, "sizeKiB": sz, "kind": k, "perms": p}
                         for r, sz, k, p in sorted(largest, reverse=True)[:8]]
    return result


#: the media plane's own objects and its libraries' (what a closed transport or consumer leaves if it leaks)
MEDIA_MODULES = ("studyrooms.sfu", "studyrooms.net", "studyrooms.media", "pylibsrtp", "aiortc", "aioice")


def census(top: int = 0, trim: bool = False, collect: bool = True) -> dict:
    """Objects by type name (``top`` > 0: only the most numerous), tasks, threads, smaps and malloc
    stats; ``trim``: also call ``malloc_trim(0)`` and report the RSS before and after it.
    ``cycles``: what the first full collection found unreachable (reference cycles that only the
    collector frees), by type. ``collect=False``: count as things are, unreachable cycles included
    (nothing collected first). ``media``: the live objects of :data:`MEDIA_MODULES`' classes."""
    cycles = collect_cycles() if collect else None
    trimmed = None
    if trim:
        from studyrooms.sfu.memory import rss_bytes, trim as malloc_trim

        before = rss_bytes()
        malloc_trim()
        trimmed = {"rssBeforeMiB": round(before / (1 << 20), 1), "rssAfterMiB": round(rss_bytes() / (1 << 20), 1)}
    objects = gc.get_objects()
    counts = Counter(type(o).__qualname__ for o in objects)
    media = Counter(f"{t.__module__}.{t.__qualname__}" for t in map(type, objects)
                    if str(t.__module__).startswith(MEDIA_MODULES))
    del objects
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop
        tasks = None
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = None
    return {"objects": dict(counts.most_common(top) if top else counts), "objectCount": sum(counts.values()),
            "media": dict(media),
            "tasks": tasks, "threads": threads, "garbage": len(gc.garbage), "smaps": smaps(),
            "anon": anon_mappings(), "malloc": malloc_stats(), "pymalloc": pymalloc_stats(), "trim": trimmed,
            "cycles": cycles}


def collect_cycles(top: int = 20) -> dict:
    """A full collection that reports the unreachable objects it freed, by type (most first)."""
    from studyrooms.sfu.memory import rss_bytes

    before = rss_bytes()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        counts = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    gc.collect()
    return {"found": found, "types": dict(counts.most_common(top)),
            "rssFreedMiB": round((before - rss_bytes()) / (1 << 20), 1)}


def diff(before: dict, after: dict, limit: int = 15) -> list[tuple[str, int]]:
    """The types whose live count changed most between two censuses (largest growth first)."""
    a, b = before["objects"], after["objects"]
    delta = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    return sorted(((k, d) for k, d in delta.items() if d), key=lambda kv: -kv[1])[:limit]
