#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Where a kernel's warps wait: from `ncu --page source --csv --print-source sass` (stdin
or a file), the instructions with the most warp stall samples, each with its share of
all samples and its leading stall reasons, and the shares of a few instruction classes.
Used by tools/gpu-round (MOED_GPU_ROUND_STALLS)."""
import csv
import sys

CLASSES = ("HGMMA", "WARPGROUP.DEPBAR", "SYNCS.PHASECHK", "UCGABAR", "LDGSTS", "UTMALDG", "STG", "MUFU")


def main():
    rows = list(csv.reader(open(sys.argv[1], errors="replace") if len(sys.argv) > 1 else sys.stdin))
    header = next((i for i, r in enumerate(rows) if "Source" in [c.strip() for c in r]), None)
    if header is None:
        print("no source table in the input:", *(str(r)[:200] for r in rows[:3]), sep="\n  ")
        return 1
    names = rows[header]
    source = names.index("Source")
    samples = names.index("Warp Stall Sampling (All Samples)")
    reasons = [i for i, n in enumerate(names) if n.startswith("stall_") and "Not Issued" not in n]
    table = [r for r in rows[header + 1:] if len(r) == len(names)]

    def number(text):
        try:
            return float(text.replace(",", "") or 0)
        except ValueError:
            return 0.0

    total = sum(number(r[samples]) for r in table) or 1.0
    waiting = "waiting on an mbarrier (a branch just after SYNCS.PHASECHK)"
    shares = dict.fromkeys(CLASSES + (waiting,), 0.0)
    recent = []
    for r in table:
        text = r[source]
        kind = next((c for c in CLASSES if c in text), None)
        if "BRA" in text and any("SYNCS.PHASECHK" in t for t in recent):
            kind = waiting
        if kind:
            shares[kind] += number(r[samples])
        recent = (recent + [text])[-3:]
    print("%d stall samples over %d instructions; by class:" % (total, len(table)))
    for kind, value in shares.items():
        print("  %5.1f%%  %s" % (100 * value / total, kind))
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    print("top %d instructions (offset from the first):" % count)
    first = int(table[0][0], 16) if table else 0
    for r in sorted(table, key=lambda r: -number(r[samples]))[:count]:
        top = sorted(((number(r[i]), names[i][6:]) for i in reasons), reverse=True)[:2]
        why = ", ".join("%s %.0f%%" % (n, 100 * v / (number(r[samples]) or 1)) for v, n in top if v)
        print("  %5.2f%%  +%-7x %-60s %s" % (100 * number(r[samples]) / total, int(r[0], 16) - first,
                                           r[source].strip()[:60], why))
    return 0


if __name__ == "__main__":
    sys.exit(main())
