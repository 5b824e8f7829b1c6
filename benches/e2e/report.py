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
# Bar labels under the chart: short enough not to run into each other.
CHART_LABEL = {"kernel": "(c) kernel", "flowgate": "(a) flowgate", "forward": "(b) forward"}


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


def derive(data):
    """Adds per_core_pps: packets forwarded per second of gateway-core time
    the gateway got. Other processes of the machine may run on that core
    too; their time shows as user time that is not flowgate's worker's (the
    kernel variant has no user time of its own there). So the gateway's
    share is 100 % - idle - (user - worker user)."""
    for variant, _ in VARIANTS:
        keys = ["delivered_pps", "gw_idle_pct", "gw_user_pct", "worker_user_pct"]
        series = [data.get((variant, k), []) for k in keys]
        if not all(series) or len({len(x) for x in series}) != 1:
            continue
        for delivered, idle, user, worker_user in zip(*series):
            share = 100.0 - idle - (user - worker_user)
            if share > 5:
                data[(variant, "per_core_pps")].append(delivered * 100.0 / share)


def median(values):
    return statistics.median(values) if values else None


def fmt(value, scale, digits):
    if value is None or value != value:  # missing, or NaN
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
    ("the same per second of gateway-core time the gateway got (Mpps; see below)", "per_core_pps", 1e6, 3),
    ("packets/s offered by the generator meanwhile (Mpps)", "offered_pps", 1e6, 3),
    ("UDP round trip p50 (µs)", "rtt_p50_us", 1, 1),
    ("UDP round trip p99 (µs)", "rtt_p99_us", 1, 1),
    ("HTTP requests/s (wrk → nginx, keep-alive)", "http_rps", 1e3, 1),
]


CPU_ROWS = [
    ("softirq: veth receive and transmit, the sink's XDP drop; for the kernel, its forwarding", "gw_softirq_pct"),
    ("system: flowgate's sendto, in which copy-mode AF_XDP transmits", "gw_sys_pct"),
    ("user: flowgate's worker (and any other process of the machine)", "gw_user_pct"),
    ("idle", "gw_idle_pct"),
    ("flowgate's worker thread in user space", "worker_user_pct"),
    ("flowgate's worker thread in the kernel (its sendto and the softirq work done in it)", "worker_sys_pct"),
]
# Not percentages: thousands per second, where each gateway drops what it
# cannot take, and whether flowgate's worker ever waited.
COUNT_ROWS = [
    ("frames/s dropped by its RPS backlog (thousands)", "backlog_drop_pps"),
    ("frames/s flowgate's XDP program could not queue, socket receive ring full (thousands)", "xsk_rx_ring_full_pps"),
    ("frames/s flowgate's sockets dropped for want of a free frame (thousands)", "xsk_rx_dropped_pps"),
    ("flowgate's empty polls per second (thousands; 0 = never waiting for work)", "idle_polls_ps"),
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
    cpu_lines = [
        "| the gateway's CPU during the flood, % of its time (medians) | "
        + " | ".join(SHORT[v] for v, _ in VARIANTS) + " |",
        "|---|" + "---:|" * len(VARIANTS),
    ]
    for label, metric in CPU_ROWS:
        cells = [fmt(median(data.get((v, metric), [])), 1, 0) for v, _ in VARIANTS]
        cpu_lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, metric in COUNT_ROWS:
        cells = [fmt(median(data.get((v, metric), [])), 1e3, 0) for v, _ in VARIANTS]
        cpu_lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cpu_table = "\n".join(cpu_lines)
    gen = data.get(("generator", "delivered_pps"), [])
    notes = []
    if gen:
        notes.append(
            f"The generator alone, into an XDP drop on the gateway's first interface "
            f"(nothing forwarded): {cell(data, 'generator', 'delivered_pps', 1e6, 3)} Mpps."
        )
    load = data.get(("machine", "load1"), [])
    if load:
        notes.append(
            "1-minute load average of the machine at the start of each run: "
            + ", ".join(f"{x:.2f}" for x in load)
            + " (2 CPUs; other work shares them)."
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
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) if notes else "") + "\n\n" + cpu_table


GNUPLOT_HEAD = r"""
set terminal pngcairo size 1500,500 font ",11" noenhanced
set output '{png}'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set yrange [0:*]
set xtics scale 0
set datafile missing "NaN"
set multiplot layout 1,3 title "{title}"
"""

# Panels: title, then (column, key, colour) for each bar of a cluster.
PANELS = [
    ("Packets forwarded (Mpps, 64-byte UDP)", [(2, "median", "#4472c4")]),
    ("UDP round trip (µs)", [(3, "p50", "#70ad47"), (4, "p99", "#ed7d31")]),
    ("HTTP requests/s (thousands)", [(5, "median", "#7f7f7f")]),
]


def chart(data, png, title):
    rows, have = [], set()
    for variant, _ in VARIANTS:
        cols = []
        for column, (metric, scale) in enumerate(
            [("delivered_pps", 1e6), ("rtt_p50_us", 1), ("rtt_p99_us", 1), ("http_rps", 1e3)], start=2
        ):
            v = median(data.get((variant, metric), []))
            cols.append("NaN" if v is None else f"{v / scale:.4f}")
            if v is not None:
                have.add(column)
        rows.append(f'"{CHART_LABEL[variant]}" ' + " ".join(cols))
    with tempfile.TemporaryDirectory() as tmp:
        dat = os.path.join(tmp, "e2e.dat")
        with open(dat, "w") as f:
            f.write("\n".join(rows) + "\n")
        script = GNUPLOT_HEAD.format(png=png, title=title.replace('"', "'"))
        for panel_title, bars in PANELS:
            script += f'set title "{panel_title}"\n'
            if any(column in have for column, _, _ in bars):
                parts = []
                for i, (column, key, colour) in enumerate(bars):
                    xtic = ":xtic(1)" if i == 0 else ""
                    parts.append(f"'{dat}' using {column}{xtic} title \"{key}\" lc rgb \"{colour}\"")
                script += "plot " + ", ".join(parts) + "\n"
            else:
                script += 'set label 1 "not measured" at graph 0.5, graph 0.5 center\n'
                script += "plot [0:1] [0:1] -1 notitle\nunset label 1\n"
        script += "unset multiplot\n"
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
    derive(data)
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
