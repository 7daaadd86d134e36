#!/usr/bin/env python3
"""Bar chart of a bench run: req/s, p50/p99 latency and CPU per request per target.

usage: chart.py RESULTS_TSV OUT_PNG TITLE
RESULTS_TSV columns: target, rps, p50_ms, p99_ms, non2xx, valid (1/0), cpu_us
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    tsv, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = list(csv.DictReader(open(tsv), delimiter="\t"))
    names = [r["target"] for r in rows]
    rps = [float(r["rps"] or 0) for r in rows]
    p50 = [float(r["p50_ms"] or 0) for r in rows]
    p99 = [float(r["p99_ms"] or 0) for r in rows]
    cpu = [float(r.get("cpu_us") or 0) for r in rows]
    colors = []
    for r in rows:
        if r["valid"] != "1":
            colors.append("#bbbbbb")
        elif r["target"].startswith("authgate"):
            colors.append("#2b7bba")
        elif r["target"].startswith("haproxy"):
            colors.append("#e3882f")
        elif r["target"].startswith("nginx"):
            colors.append("#3a9b4a")
        else:
            colors.append("#777777")

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 5.5))
    y = range(len(names))
    bars = ax1.barh(y, rps, color=colors)
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("requests/s (median of rounds; higher is better)")
    for bar, value, row in zip(bars, rps, rows):
        label = f"{value:,.0f}" if row["valid"] == "1" else "INVALID"
        ax1.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label,
                 va="center", fontsize=8)
    ax1.set_xlim(0, max(rps + [1]) * 1.2)

    height = 0.4
    ax2.barh([i - height / 2 for i in y], p50, height, label="p50", color="#8fbcd9")
    ax2.barh([i + height / 2 for i in y], p99, height, label="p99", color="#1f4e79")
    ax2.set_yticks(list(y), names)
    ax2.invert_yaxis()
    ax2.set_xlabel("latency, ms (median of rounds; lower is better)")
    ax2.legend(loc="lower right")

    bars = ax3.barh(y, cpu, color=colors)
    ax3.set_yticks(list(y), names)
    ax3.invert_yaxis()
    ax3.set_xlabel("CPU per request, µs (target's processes; lower is better)")
    for bar, value in zip(bars, cpu):
        ax3.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.1f}",
                 va="center", fontsize=8)
    ax3.set_xlim(0, max(cpu + [1]) * 1.2)

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
