"""Self / total share per function of a py-spy ``--format raw`` profile (collapsed stacks).

    python -m benchmarks.pyspy_summary PROFILE.raw.txt [--top 25]
"""

from __future__ import annotations

import argparse
import collections

SKIP = {"<module>", "main", "run", "Runner.run", "wrapper", "run_until_complete", "run_forever", "uv_run",
        "Loop__run", "Loop__Loop__run", "Py_DECREF", "Py_XDECREF"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    total = 0
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    with open(a.profile) as f:
        for line in f:
            line = line.rstrip()
            if not line:
                continue
            stack, n = line.rsplit(" ", 1)
            count = int(n)
            total += count
            frames = [fr.split(" (")[0] for fr in stack.split(";")]
            own[frames[-1]] += count
            for fr in set(frames):
                incl[fr] += count
    print(f"{total} samples\n\n| function | self % | total % |\n|---|---|---|")
    shown = 0
    for fr, count in incl.most_common():
        if fr in SKIP or fr.startswith("0x"):
            continue
        print(f"| {fr} | {100 * own[fr] / total:.1f} | {100 * count / total:.1f} |")
        shown += 1
        if shown >= a.top:
            break


if __name__ == "__main__":
    main()
