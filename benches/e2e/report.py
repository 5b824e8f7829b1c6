#!/usr/bin/python3
"""Turns the harness's raw results into a markdown table and a PNG chart.

    report.py RESULTS.tsv OUT.md OUT.png --command CMD --machine TEXT --date DATE ...

RESULTS.tsv has one measurement a line: `run variant metric value`; a
variant that could not be measured has `failed` lines. Metrics are the
flood's (`flood_*`), the search's (`capacity_*`: the passing trial at the
highest rate), and rtt_p50_us, rtt_p99_us, rtt_lost, http_rps. Each figure
in the table is the median over the runs with the spread (min–max) when
there are several. The chart (gnuplot) shows medians with min–max bars and
the generator's own ceiling.
"""
import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile

VARIANTS = [
    ("kernel", "kernel: nftables DNAT + conntrack"),
    ("flowgate", "flowgate, XDP fast path"),
    ("userspace", "flowgate, userspace only"),
    ("forward", "raw AF_XDP forward-only"),
]
SHORT = {
    "kernel": "kernel NAT",
    "flowgate": "flowgate (XDP)",
    "userspace": "flowgate (userspace)",
    "forward": "AF_XDP forward-only",
    "generator": "generator alone",
}


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
    if value is None or value != value:  # missing, or NaN
        return "—"
    return f"{value / scale:,.{digits}f}".replace(",", " ")


def cell(data, variant, metric, scale, digits):
    values = data.get((variant, metric), [])
    if not values:
        return "—"
    if len(values) == 1:
        return fmt(values[0], scale, digits)
    return (
        f"**{fmt(median(values), scale, digits)}** "
        f"({fmt(min(values), scale, digits)}–{fmt(max(values), scale, digits)})"
    )


def ratio(data, metric, top, bottom):
    a = median(data.get((top, metric), []))
    b = median(data.get((bottom, metric), []))
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


ROWS = [
    ("**capacity**: highest rate with ≤ {loss} loss, 64-byte UDP, {flows} flows (Mpps)", "capacity_offered_pps", 1e6, 3),
    ("… its loss in that trial (ppm)", "capacity_loss_ppm", 1, 0),
    ("… Mpps per core-second of the gateway at that rate", "capacity_mpps_per_core", 1, 3),
    ("… the gateway's CPU at that rate (% of one core)", "capacity_core_pct", 1, 0),
    ("trials of the search", "capacity_trials", 1, 0),
    ("under flood: forwarded (Mpps)", "flood_pps", 1e6, 3),
    ("under flood: offered by the generator meanwhile (Mpps)", "flood_offered_pps", 1e6, 3),
    ("under flood: Mpps per core-second of the gateway", "flood_mpps_per_core", 1, 3),
    ("under flood: the gateway's CPU (% of one core)", "flood_core_pct", 1, 0),
    ("wrong frames at the sink under flood (per second; must be 0)", "flood_wrong_pps", 1, 0),
    ("UDP round trip p50 (µs)", "rtt_p50_us", 1, 1),
    ("UDP round trip p99 (µs)", "rtt_p99_us", 1, 1),
    ("HTTP requests/s (wrk → nginx, keep-alive; thousands)", "http_rps", 1e3, 1),
]

CPU_ROWS = [
    ("GW_CPU softirq (veth transmit and the sink's drop; for the kernel, its forwarding)", "flood_gw_softirq_pct", 1, 0),
    ("GW_CPU system", "flood_gw_sys_pct", 1, 0),
    ("GW_CPU user (flowgate's worker, and any other process of the machine)", "flood_gw_user_pct", 1, 0),
    ("GW_CPU idle", "flood_gw_idle_pct", 1, 0),
    ("flowgate's worker in user space", "flood_worker_user_pct", 1, 0),
    ("flowgate's worker in the kernel (its sendto, and softirq work done in it)", "flood_worker_sys_pct", 1, 0),
    ("flowgate's XDP programs, ns per run (bpf_stats)", "flood_xdp_ns_pp", 1, 1),
    ("the sink's XDP drop, ns per frame (bpf_stats)", "flood_sink_ns_pp", 1, 1),
    ("frames/s dropped by GW_CPU's RPS backlog (thousands)", "flood_backlog_drop_pps", 1e3, 0),
    ("frames/s flowgate's XDP program could not queue, socket receive ring full (thousands)", "flood_xsk_rx_ring_full_pps", 1e3, 0),
    ("frames/s flowgate's sockets dropped for want of a free frame (thousands)", "flood_xsk_rx_dropped_pps", 1e3, 0),
    ("flowgate's empty polls per second (thousands)", "flood_idle_polls_ps", 1e3, 0),
    ("frames flowgate's workers sent per transmit wakeup (sendto)", "flood_frames_per_tx_wakeup", 1, 1),
]


def table(data, failed, args):
    variants = [(v, label) for v, label in VARIANTS if any(k[0] == v for k in data) or v in failed]
    head = "| | " + " | ".join(label for _, label in variants) + " | XDP / kernel | userspace / kernel |"
    lines = [head, "|---|" + "---:|" * (len(variants) + 2)]
    loss = f"{args.loss_ppm / 1e4:g} %"
    flows = f"{args.flows:,}".replace(",", " ")
    for label, metric, scale, digits in ROWS:
        label = label.format(loss=loss, flows=flows)
        cells = [cell(data, v, metric, scale, digits) for v, _ in variants]
        ratios = ["—", "—"]
        if metric in ("capacity_offered_pps", "capacity_mpps_per_core", "flood_pps", "flood_mpps_per_core", "http_rps"):
            ratios = [ratio(data, metric, "flowgate", "kernel"), ratio(data, metric, "userspace", "kernel")]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    cpu_lines = [
        "| under flood, medians | " + " | ".join(SHORT[v] for v, _ in variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for label, metric, scale, digits in CPU_ROWS:
        cells = [fmt(median(data.get((v, metric), [])), scale, digits) for v, _ in variants]
        cpu_lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = []
    gen_flood = data.get(("generator", "flood_pps"), [])
    if gen_flood:
        notes.append(
            "**The generator's ceiling** (the generator alone into an XDP drop on the gateway's "
            f"port 0, nothing forwarded): {cell(data, 'generator', 'flood_pps', 1e6, 3)} Mpps flooding, "
            f"{cell(data, 'generator', 'capacity_offered_pps', 1e6, 3)} Mpps offered evenly "
            "(the search's highest passing rate)."
        )
    def idle_words(policy):
        return (
            "(spinning on the rings, never sleeping)"
            if policy == "busy"
            else "(spinning a while, then 50 µs naps)"
        )

    notes.append(
        "Idle policies, for the round trips and the CPU: the userspace and forward-only variants' "
        f"workers `idle = \"{args.idle}\"` {idle_words(args.idle)}; the fast path variant's workers "
        f"`idle = \"{args.fast_idle}\"` {idle_words(args.fast_idle)}; the XDP fast path and the "
        "kernel run in softirq, woken by the frame (no busy polling, `net.core.busy_poll = 0`)."
    )
    load = data.get(("machine", "load1"), [])
    if load:
        notes.append(
            "Load average (1 min) at the start of each run: "
            + ", ".join(f"{x:.2f}" for x in load)
            + f"; at the end: {args.load_end} (2 CPUs; the machine's other work shares them)."
        )
    lost = [(v, data.get((v, "rtt_lost"), [])) for v, _ in variants]
    lost_text = ", ".join(f"{SHORT[v]} {int(sum(x))}" for v, x in lost if x)
    if lost_text:
        notes.append(f"Round trips lost (no echo within 100 ms), all runs together: {lost_text}.")
    for variant, reasons in failed.items():
        notes.append(
            f"**{SHORT.get(variant, variant)}: not measured or wrong** in "
            f"{len(reasons)} case(s): {', '.join(sorted(set(reasons)))}."
        )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n\n" + "\n".join(cpu_lines)


GNUPLOT = r"""
set terminal pngcairo size 1100,520 font ",11" noenhanced
set output '{png}'
set title "{title}"
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set yrange [0:{ymax}]
set xtics scale 0
set ylabel "Mpps, 64-byte UDP"
set datafile missing "NaN"
{ceiling}
plot '{dat}' using 2:3:4:xtic(1) title "capacity (≤ {loss} loss)" lc rgb "#4472c4", \
     '' using 5:6:7 title "under flood" lc rgb "#a5a5a5"
"""


def generator_lines(data, peak):
    """gnuplot lines for the generator's own ceilings (flooding, and at an
    even rate, which bounds every capacity), and the chart's new peak."""
    lines = []
    for metric, what, colour, offset in (
        ("flood_pps", "generator alone, flooding", "#c00000", 0.7),
        ("capacity_offered_pps", "generator alone, even rate", "#7030a0", -1.0),
    ):
        value = median(data.get(("generator", metric), []))
        if not value:
            continue
        mpps = value / 1e6
        peak = max(peak, mpps)
        lines.append(
            f"set arrow from graph 0, first {mpps:.4f} to graph 1, first {mpps:.4f} "
            f'nohead dt 2 lw 2 lc rgb "{colour}"\n'
            f'set label "{what}: {mpps:.3f} Mpps" at graph 0.02, first {mpps:.4f} '
            f'offset 0,{offset} tc rgb "{colour}"'
        )
    return "\n".join(lines), peak


def chart(data, png, title, loss):
    rows, peak = [], 0.0
    for variant, _ in VARIANTS:
        cols = []
        for metric in ("capacity_offered_pps", "flood_pps"):
            values = data.get((variant, metric), [])
            if values:
                cols += [f"{median(values) / 1e6:.4f}", f"{min(values) / 1e6:.4f}", f"{max(values) / 1e6:.4f}"]
                peak = max(peak, max(values) / 1e6)
            else:
                cols += ["NaN"] * 3
        rows.append(f'"{SHORT[variant]}" ' + " ".join(cols))
    ceiling, peak = generator_lines(data, peak)
    with tempfile.TemporaryDirectory() as tmp:
        dat = os.path.join(tmp, "e2e.dat")
        with open(dat, "w") as f:
            f.write("\n".join(rows) + "\n")
        script = GNUPLOT.format(
            png=png, title=title.replace('"', "'"), dat=dat, ceiling=ceiling, ymax=f"{peak * 1.2 or 1:.3f}", loss=loss
        )
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
    ap.add_argument("--idle", default="busy")
    ap.add_argument("--fast-idle", default="busy")
    ap.add_argument("--loss-ppm", type=float, default=1000)
    ap.add_argument("--trial-seconds", type=int, default=5)
    ap.add_argument("--load-end", default="?")
    args = ap.parse_args()
    data, failed = load(args.results)
    body = table(data, failed, args)
    with open(args.markdown, "w") as f:
        f.write(
            f"Measured {args.date} with `{args.command}` ({args.runs} run(s), variants alternating; "
            f"medians in bold, min–max in brackets; trials of {args.trial_seconds} s).\n"
            f"Machine: {args.machine}.\n\n{body}\n"
        )
    loss = f"{args.loss_ppm / 1e4:g} %"
    chart(data, args.png, f"flowgate vs raw AF_XDP vs kernel NAT, {args.date}, {args.runs} run(s)", loss)
    print(body)


if __name__ == "__main__":
    sys.exit(main())
