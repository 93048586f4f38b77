"""Ratio table of a `compare.sh` run: StudyRooms (compiled core) against the other forwarders of the
same run, per (input rate, fan-out), from bench.py's results.jsonl.

    python benchmarks/harness/ratios.py OUT_DIR/results.jsonl [--subject studyrooms-compiled]

Medians of CPU µs per forwarded packet over the repetitions, and the median of the per-repetition
ratios (repetition k of each label = its k-th line for that cell, compare.sh interleaves them).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

# mediasoup 3.27.1 figures of issue 13 (same harness, same box, earlier run), for the "<= 0.7x" target
MEDIASOUP_1000PPS = {1: 31.1, 10: 8.8, 50: 6.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--subject", default="studyrooms-compiled")
    a = ap.parse_args()
    runs: dict[tuple, list[float]] = defaultdict(list)
    with open(a.results) as f:
        for line in f:
            r = json.loads(line)
            runs[(r["label"], r["pps_in"], r["consumers"])].append(r["us_per_fwd_pkt"])
    labels = sorted({k[0] for k in runs} - {a.subject})
    cells = sorted({(k[1], k[2]) for k in runs if k[0] == a.subject})
    head = " | ".join(f"{x} µs" for x in [a.subject] + labels)
    ratios = " | ".join(f"{a.subject} / {x}" for x in labels)
    print(f"| in pps | N | {head} | {ratios} |")
    print("|---" * (2 + 1 + 2 * len(labels)) + "|")
    for pps, n in cells:
        subj = runs[(a.subject, pps, n)]
        vals = [statistics.median(subj)]
        rats = []
        for x in labels:
            other = runs.get((x, pps, n))
            vals.append(statistics.median(other) if other else None)
            if other:
                paired = [s / o for s, o in zip(subj, other) if o]
                rats.append(f"{statistics.median(subj) / statistics.median(other):.2f} "
                            f"(paired {statistics.median(paired):.2f})" if paired else "-")
            else:
                rats.append("-")
        v = " | ".join("-" if x is None else f"{x:.2f}" for x in vals)
        print(f"| {pps:.0f} | {n} | {v} | {' | '.join(rats)} |")
    print(f"\n{a.subject} against mediasoup 3.27.1's figures in issue 13 (1000 pps; target <= 0.7x):\n")
    print("| N | mediasoup µs | " + a.subject + " µs | ratio |\n|---|---|---|---|")
    for n, ms in MEDIASOUP_1000PPS.items():
        subj = runs.get((a.subject, 1000.0, n))
        if subj:
            print(f"| {n} | {ms} | {statistics.median(subj):.2f} | {statistics.median(subj) / ms:.2f} |")


if __name__ == "__main__":
    main()
