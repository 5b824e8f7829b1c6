#!/usr/bin/python3
"""Turns the harness's raw results into a markdown table and a PNG chart.

    report.py RESULTS.tsv OUT.md OUT.png --command CMD --machine TEXT --date DATE

RESULTS.tsv has one measurement a line: `run variant metric value`, where
metric is offered_pps, delivered_pps, rtt_p50_us, rtt_p99_us, rtt_lost or
http_rps, and a variant that could not be measured has `failed` lines.
Every figure in the table is the median over the runs, followed by the
single runs in brackets. The chart (gnuplot) shows the medians.
"""
import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile

VARIANTS = [
    ("kernel", "(c) kernel: nftables DNAT + conntrack"),
    ("flowgate", "(a) flowgate: NAT + Maglev + conntrack"),
    ("forward", "(b) raw AF_XDP forward-only (I/O floor)"),
]
SHORT = {"kernel": "kernel NAT", "flowgate": "flowgate", "forward": "AF_XDP forward-only"}


def load(path):
    data = collections.defaultdict(list)
    failed = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue
            run, variant, metric, value = parts
            if metric == "failed":
                failed[variant].append(value)
                continue
            try:
                data[(variant, metric)].append(float(value))
            except ValueError:
                continue
    return data, failed


def median(values):
    return statistics.median(values) if values else None


def fmt(value, scale, digits):
    if value is None:
        return "—"
    return f"{value / scale:,.{digits}f}".replace(",", " ")


def cell(data, variant, metric, scale, digits):
    values = data.get((variant, metric), [])
    if not values:
        return "not measured"
    singles = ", ".join(fmt(v, scale, digits) for v in values)
    if len(values) == 1:
        return fmt(values[0], scale, digits)
    return f"**{fmt(median(values), scale, digits)}** ({singles})"


def ratio(data, metric, top, bottom):
    a = median(data.get((top, metric), []))
    b = median(data.get((bottom, metric), []))
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


ROWS = [
    ("packets/s forwarded, 64-byte UDP, 16 384 flows (Mpps)", "delivered_pps", 1e6, 3),
    ("packets/s offered by the generator meanwhile (Mpps)", "offered_pps", 1e6, 3),
    ("UDP round trip p50 (µs)", "rtt_p50_us", 1, 1),
    ("UDP round trip p99 (µs)", "rtt_p99_us", 1, 1),
    ("HTTP requests/s (wrk → nginx, keep-alive)", "http_rps", 1e3, 1),
]


def table(data, failed, flows):
    head = "| | " + " | ".join(label for _, label in VARIANTS) + " | (a)/(c) | (a)/(b) |"
    lines = [head, "|---|" + "---:|" * (len(VARIANTS) + 2)]
    for label, metric, scale, digits in ROWS:
        label = label.replace("16 384", f"{flows:,}".replace(",", " "))
        if metric == "http_rps":
            label = label + " (thousands)"
        cells = [cell(data, v, metric, scale, digits) for v, _ in VARIANTS]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {ratio(data, metric, 'flowgate', 'kernel')} | {ratio(data, metric, 'flowgate', 'forward')} |"
        )
    gen = data.get(("generator", "delivered_pps"), [])
    notes = []
    if gen:
        notes.append(
            f"The generator alone, into an XDP drop on the gateway's first interface "
            f"(nothing forwarded): {cell(data, 'generator', 'delivered_pps', 1e6, 3)} Mpps."
        )
    lost = [(v, data.get((v, "rtt_lost"), [])) for v, _ in VARIANTS]
    lost_text = ", ".join(f"{SHORT[v]} {int(sum(x))}" for v, x in lost if x)
    if lost_text:
        notes.append(f"Round trips lost (no echo within 100 ms), all runs together: {lost_text}.")
    for variant, reasons in failed.items():
        notes.append(
            f"**{SHORT.get(variant, variant)} could not be measured** in "
            f"{len(reasons)} run(s): {', '.join(sorted(set(reasons)))}."
        )
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) if notes else "")


GNUPLOT = r"""
set terminal pngcairo size 1500,500 font ",11"
set output '{png}'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set yrange [0:*]
set xtics scale 0
set multiplot layout 1,3 title "{title}"
set title "Packets forwarded (Mpps, 64-byte UDP)"
plot '{dat}' using 2:xtic(1) title "median" lc rgb "#4472c4"
set title "UDP round trip (µs)"
plot '{dat}' using 3:xtic(1) title "p50" lc rgb "#70ad47", '' using 4 title "p99" lc rgb "#ed7d31"
set title "HTTP requests/s (thousands)"
plot '{dat}' using 5:xtic(1) title "median" lc rgb "#7f7f7f"
unset multiplot
"""


def chart(data, png, title):
    rows = []
    for variant, _ in VARIANTS:
        def m(metric, scale):
            v = median(data.get((variant, metric), []))
            return "NaN" if v is None else f"{v / scale:.4f}"

        rows.append(
            f'"{SHORT[variant]}" {m("delivered_pps", 1e6)} {m("rtt_p50_us", 1)} '
            f'{m("rtt_p99_us", 1)} {m("http_rps", 1e3)}'
        )
    with tempfile.TemporaryDirectory() as tmp:
        dat = os.path.join(tmp, "e2e.dat")
        with open(dat, "w") as f:
            f.write("\n".join(rows) + "\n")
        script = GNUPLOT.format(png=png, dat=dat, title=title.replace('"', "'"))
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("markdown")
    ap.add_argument("png")
    ap.add_argument("--command", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--flows", type=int, default=16384)
    ap.add_argument("--runs", type=int, required=True)
    args = ap.parse_args()
    data, failed = load(args.results)
    body = table(data, failed, args.flows)
    with open(args.markdown, "w") as f:
        f.write(
            f"Measured {args.date} with `{args.command}` ({args.runs} run(s) per variant, "
            f"variants alternating; medians in bold, single runs in brackets).\n"
            f"Machine: {args.machine}.\n\n{body}\n"
        )
    chart(data, args.png, f"flowgate vs raw AF_XDP vs kernel NAT, {args.date}, medians of {args.runs} run(s)")
    print(body)


if __name__ == "__main__":
    sys.exit(main())
