"""The report: rows -> the markdown tables and the targets of issue #5, and the files
``results.csv``, ``results.md``, ``machine.json``, ``targets.json`` (the runner writes
``results.jsonl`` row by row); :func:`rebuild` is ``--report`` (tables from a jsonl).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .common import BATCH, describe, load_avg


def fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _best(rows, kind, **match):
    """The fastest measurement of one configuration over every row that measured it:
    plain rows plus the float32 precision-speed, 1-device and (for ring, default
    layout) shift-layout rows, which run the same program. Timings on a shared machine
    only err on the slow side, so the best of them is the fairest estimate; both sides
    of every ratio are taken the same way."""
    same = []
    for r in rows:
        if r.get("status") != "ok" or any(r.get(k) != v for k, v in match.items()):
            continue
        if r.get("precision", "float32") != "float32" or int(r.get("devices", 1)) != 1:
            continue
        k = r.get("kind")
        if k == kind or (kind == "engine" and k in ("devices", "layout") and r.get("layout") in ("shift", None)
                          and r.get("topology") in ("ring", "exponential")):
            same.append(r)
    return max(same, key=lambda r: r["node_steps_per_s"]) if same else None


def _ok(rows, kind):
    return [r for r in rows if r.get("kind") == kind and r.get("status") == "ok"]


def _engine_rows(rows):
    return [r for r in rows if r.get("kind") == "engine" and not r.get("tag")]


def summarize(rows: list[dict], machine: dict) -> tuple[str, dict]:
    """Markdown report and the target figures (issue #5)."""
    lines: list[str] = []
    add = lines.append
    targets: dict[str, Any] = {}
    add("# ecl_jax benchmark results\n")
    add(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"{machine['platform']}; Python {machine['python']}, jax {machine['jax']} / jaxlib {machine['jaxlib']} "
        f"({machine['backend']}). Run {machine['date']}, load average {machine['load_avg_start']} at start, "
        f"{machine.get('load_avg_end', '-')} at end. Batch {BATCH} per node.\n")

    # ---------------------------------------------------------------- throughput
    add("## Throughput: vectorised engine vs per-node loops vs the big-batch model\n")
    add("node-steps/s = N x steps / s (one node-step = one minibatch of 32 on one node), the best of all rows that ran the same program (see `_best`). "
        "`loop` = per-node Python loop over one jitted node step (`loop-node`) and over "
        "jitted per-node / per-edge ops (`loop-ops`), same maths. `big-batch` = one model "
        "on the concatenated batch (N x 32 samples per step); `vs big-batch` = samples/s "
        "of the decentralised run / samples/s of the big-batch model. Memory: peak RSS "
        "of the process; state = algorithm state bytes / (N P + 2E P) floats (ECL) or N P (gossip).\n")
    add("| model | algorithm | graph | N | node-steps/s | vs loop-node | vs loop-ops | vs big-batch | compile s | peak RSS MB | state / ideal |")
    add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in _engine_rows(rows):
        if r.get("status") != "ok":
            add(f"| {r['model']} | {r['algorithm']} | {r['topology']} | {r['n']} | {r['status']} | | | | | | |")
            continue
        ln = _best(rows, "loop", variant="loop-node", model=r["model"], algorithm=r["algorithm"],
                   topology=r["topology"], n=r["n"])
        lo = _best(rows, "loop", variant="loop-ops", model=r["model"], algorithm=r["algorithm"],
                   topology=r["topology"], n=r["n"])
        bb = _best(rows, "bigbatch", model=r["model"], n=r["n"])
        r = dict(r, **{k: v for k, v in (_best(rows, "engine", model=r["model"], algorithm=r["algorithm"],
                                                 topology=r["topology"], n=r["n"]) or r).items()
                       if k in ("node_steps_per_s", "samples_per_s")})
        vs_ln = r["node_steps_per_s"] / ln["node_steps_per_s"] if ln else None
        vs_lo = r["node_steps_per_s"] / lo["node_steps_per_s"] if lo else None
        vs_bb = r["samples_per_s"] / bb["samples_per_s"] if bb else None
        ratio = r["state_mb"] / r["ideal_state_mb"] if r.get("ideal_state_mb") else None
        add(f"| {r['model']} | {r['algorithm']} | {r['topology']} | {r['n']} | {fmt(r['node_steps_per_s'], 4)} | "
            f"{fmt(vs_ln)}x | {fmt(vs_lo)}x | {fmt(vs_bb)}x | {fmt(r['compile_s'])} | {fmt(r['peak_rss_mb'], 4)} | {fmt(ratio)} |")
    add("")
    user = [r for r in rows if r.get("kind") == "user_rule" and r.get("status") == "ok"]
    if user:
        add("### A user's rule on the fast path\n")
        add("`notebooks/02_new_update_rule.py`'s heavy-ball ECL-PDMM (its own source, executed) against the "
            "built-in ECL-PDMM: same engine, model, data and masks, chunks timed interleaved; ratio = "
            "heavy-ball / built-in per round (median and range).\n")
        add("| model | graph | N | layout | heavy-ball node-steps/s | ECL-PDMM node-steps/s | ratio (median) | ratio range |")
        add("|---|---|---:|---|---:|---:|---:|---|")
        for r in user:
            add(f"| {r['model']} | {r['topology']} | {r['n']} | {r['layout']} | {fmt(r['node_steps_per_s'], 4)} | "
                f"{fmt(r['builtin_node_steps_per_s'], 4)} | {fmt(r['ratio_median'])} | "
                f"{fmt(r['ratio_min'])}-{fmt(r['ratio_max'])} |")
            targets["user_rule_vs_builtin"] = r["ratio_median"]
        add("")
    add("Reference rows (per-node loops and big-batch model):\n")
    add("| kind | model | algorithm | graph | N | node-steps/s | samples/s | s/step | compile s | peak RSS MB |")
    add("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("kind") in ("loop", "bigbatch") and not r.get("tag"):
            if r.get("status") != "ok":
                add(f"| {r.get('variant', r['kind'])} | {r['model']} | {r.get('algorithm', '-')} | {r.get('topology', '-')} | {r['n']} | {r['status']} | | | | |")
                continue
            add(f"| {r.get('variant', r['kind'])} | {r['model']} | {r.get('algorithm', '-')} | {r.get('topology', '-')} | {r['n']} | "
                f"{fmt(r['node_steps_per_s'], 4)} | {fmt(r['samples_per_s'], 4)} | {fmt(r['step_s'])} | {fmt(r['compile_s'])} | {fmt(r['peak_rss_mb'], 4)} |")
    add("")

    # ---------------------------------------------------------------- layouts
    lay = [r for r in rows if r.get("kind") == "layout"]
    if lay:
        add("## Per-edge layouts (ECL-PDMM, ring)\n")
        add("`shift`: static rolls of the node axis; `slots`: neighbour slots with gathers and dense slot sums; "
            "`edges`: gather + sorted segment_sum over the directed edge list (the naive prototype's design).\n")
        add("| model | N | layout | node-steps/s | vs big-batch | peak RSS MB |")
        add("|---|---:|---|---:|---:|---:|")
        for r in lay:
            if r.get("status") != "ok":
                add(f"| {r['model']} | {r['n']} | {r['layout']} | {r['status']} | | |")
                continue
            bb = _best(rows, "bigbatch", model=r["model"], n=r["n"])
            vs_bb = r["samples_per_s"] / bb["samples_per_s"] if bb else None
            add(f"| {r['model']} | {r['n']} | {r['layout']} | {fmt(r['node_steps_per_s'], 4)} | {fmt(vs_bb)}x | {fmt(r['peak_rss_mb'], 4)} |")
        add("")

    # ---------------------------------------------------------------- bandwidth
    upd = _ok(rows, "update")
    if upd:
        add("## Communication bandwidth\n")
        add("`update` = algorithm step with fixed gradients (primal update + dual exchange + aggregation); "
            "`exchange` = reflection, exchange and aggregation alone. GB/s of their minimal traffic "
            "(ECL: update reads w, g, z and writes w, z; exchange reads z, w and writes z). "
            "Elementwise reference in the same process over the same number of floats: `a <- c a + b` "
            "in a loop (in place) and as fresh jitted calls (new output buffer per call, the regime of the "
            "prototype's 5.5 GB/s).\n")
        add("| model | algorithm | graph | layout | N | update GB/s | exchange GB/s | elementwise loop GB/s | elementwise fresh GB/s | exchange / loop | exchange / fresh |")
        add("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in upd:
            add(f"| {r['model']} | {r['algorithm']} | {r['topology']} | {r['layout']} | {r['n']} | {fmt(r['update_gbs'])} | "
                f"{fmt(r['exchange_gbs'])} | {fmt(r['ew_loop_gbs'])} | {fmt(r['ew_fresh_gbs'])} | "
                f"{fmt(r['exchange_gbs'] / r['ew_loop_gbs'])} | {fmt(r['exchange_gbs'] / r['ew_fresh_gbs'])} |")
        add("")

    # ---------------------------------------------------------------- large N
    big = [r for r in rows if r.get("kind") == "largeN"]
    if big:
        add("## Large N (logistic regression, ECL-PDMM)\n")
        add("| graph | N | E | node-steps/s | compile s | state MB | ideal MB | data MB | peak RSS MB |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in big:
            if r.get("status") != "ok":
                add(f"| {r['topology']} | {r['n']} | | {r['status']} | | | | | |")
                continue
            add(f"| {r['topology']} | {r['n']} | {r['n_edges']} | {fmt(r['node_steps_per_s'], 4)} | {fmt(r['compile_s'])} | "
                f"{fmt(r['state_mb'], 4)} | {fmt(r['ideal_state_mb'], 4)} | {fmt(r['data_mb'], 4)} | {fmt(r['peak_rss_mb'], 4)} |")
        for topo in sorted({r["topology"] for r in big}):
            pts = [(r["n"], r["peak_rss_mb"]) for r in big if r["topology"] == topo and r.get("status") == "ok"]
            if len(pts) >= 3:
                fit = _linear_fit(pts)
                add(f"\n{topo}: peak RSS = {fit['intercept']:.0f} MB + {fit['slope'] * 1000:.1f} MB per 1000 nodes "
                    f"(R^2 = {fit['r2']:.4f}, {len(pts)} sizes).")
                targets[f"largeN_{topo}_r2"] = fit["r2"]
            targets[f"largeN_{topo}_max_n"] = max((n for n, _ in pts), default=None)
            targets[f"largeN_{topo}_peak_mb"] = max((m for _, m in pts), default=None)
        add("")

    # ---------------------------------------------------------------- devices
    dev = [r for r in rows if r.get("kind") == "devices"]
    if dev:
        add("## 1 vs 4 devices (node axis sharded; 4 fake CPU devices on the same cores)\n")
        add("| model | graph | N | devices | node-steps/s | collectives in the compiled chunk (>= N elements) |")
        add("|---|---|---:|---:|---:|---|")
        for r in dev:
            if r.get("status") != "ok":
                add(f"| {r['model']} | {r['topology']} | {r['n']} | {r['devices']} | {r['status']} | |")
                continue
            col = ", ".join(r.get("collectives") or []) or "none"
            add(f"| {r['model']} | {r['topology']} | {r['n']} | {r['devices']} | {fmt(r['node_steps_per_s'], 4)} | {col} |")
        add("")

    # ---------------------------------------------------------------- precision
    pr = [r for r in rows if r.get("tag") == "precision-speed" or r.get("kind") == "precision"]
    if pr:
        add("## Mixed precision (bfloat16 compute, float32 state)\n")
        add("| kind | model | N | precision | node-steps/s | samples/s | test acc (mean model) | test acc (nodes) | test loss |")
        add("|---|---|---:|---|---:|---:|---:|---:|---:|")
        for r in pr:
            if r.get("status") != "ok":
                add(f"| {r['kind']} | {r['model']} | {r['n']} | {r.get('precision')} | {r['status']} | | | | |")
                continue
            add(f"| {r['kind']} | {r['model']} | {r['n']} | {r.get('precision', 'float32')} | {fmt(r.get('node_steps_per_s'), 4)} | "
                f"{fmt(r.get('samples_per_s'), 4)} | {fmt(r.get('test_acc_mean_model'), 4)} | {fmt(r.get('test_acc_nodes'), 4)} | "
                f"{fmt(r.get('test_loss_mean_model'), 4)} |")
        add("")

    # ---------------------------------------------------------------- targets
    add("## Targets (issue #5)\n")
    for model in ("logistic", "mlp"):
        e = _best(rows, "engine", model=model, algorithm="ecl-pdmm", topology="ring", n=64)
        for variant in ("loop-node", "loop-ops"):
            lp = _best(rows, "loop", variant=variant, model=model, algorithm="ecl-pdmm", topology="ring", n=64)
            if e and lp:
                targets[f"{model}_n64_vs_{variant}"] = e["node_steps_per_s"] / lp["node_steps_per_s"]
    for n in (512, 256):
        e = _best(rows, "engine", model="mlp", algorithm="ecl-pdmm", topology="ring", n=n)
        bb = _best(rows, "bigbatch", model="mlp", n=n)
        if e and bb:
            targets[f"mlp_n{n}_vs_bigbatch"] = e["samples_per_s"] / bb["samples_per_s"]
            break
    ex = [r for r in upd if r["algorithm"] == "ecl-pdmm" and r["layout"] == "shift"]
    if ex:
        loop_r = [r["exchange_gbs"] / r["ew_loop_gbs"] for r in ex]
        fresh_r = [r["exchange_gbs"] / r["ew_fresh_gbs"] for r in ex]
        targets["exchange_vs_elementwise_loop_min"] = min(loop_r)
        targets["exchange_vs_elementwise_loop_max"] = max(loop_r)
        targets["exchange_vs_elementwise_fresh_min"] = min(fresh_r)
    ratios = [r["state_mb"] / r["ideal_state_mb"] for r in _engine_rows(rows)
              if r.get("status") == "ok" and r["algorithm"] == "ecl-pdmm" and r.get("ideal_state_mb")]
    if ratios:
        targets["state_over_ideal_max"] = max(ratios)
    add("| target | measured | goal |")
    add("|---|---:|---:|")
    goals = {
        "logistic_n64_vs_loop-node": ">= 10", "logistic_n64_vs_loop-ops": ">= 10",
        "mlp_n64_vs_loop-node": ">= 10", "mlp_n64_vs_loop-ops": ">= 10",
        "mlp_n512_vs_bigbatch": ">= 0.5", "mlp_n256_vs_bigbatch": ">= 0.5 (at N = 512)",
        "exchange_vs_elementwise_loop_min": ">= 0.5", "exchange_vs_elementwise_loop_max": ">= 0.5",
        "exchange_vs_elementwise_fresh_min": ">= 0.5",
        "state_over_ideal_max": "<= 1.5",
    }
    for k, v in targets.items():
        add(f"| {k} | {fmt(v)} | {goals.get(k, '-')} |")
    add("")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        add("## Not run / failed\n")
        for r in failed:
            add(f"- {describe(r)}: {r['status']}")
        add("")
    return "\n".join(lines), targets


def _linear_fit(pts):
    import numpy as np

    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - ((y - pred) ** 2).sum() / ss if ss > 0 else 1.0
    return dict(slope=float(slope), intercept=float(intercept), r2=float(r2))


CSV_FIELDS = (
    "kind", "variant", "model", "algorithm", "topology", "layout", "n", "devices", "precision", "tag", "status",
    "node_steps_per_s", "samples_per_s", "step_s", "step_s_median", "compile_s", "params_per_node", "n_edges",
    "max_degree", "state_mb", "ideal_state_mb", "data_mb", "peak_rss_mb", "rss_after_import_mb", "update_s",
    "update_gbs", "exchange_s", "exchange_gbs", "ew_loop_gbs", "ew_fresh_gbs", "test_acc_mean_model",
    "test_acc_nodes", "test_loss_mean_model", "loop_mode", "collectives", "steps", "repeats", "worker_wall_s",
    "load_avg_end",
)


def write_outputs(rows: list[dict], machine: dict, out_dir: Path) -> tuple[Path, Path, dict]:
    machine = dict(machine, load_avg_end=load_avg())
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    md, targets = summarize(rows, machine)
    md_path = out_dir / "results.md"
    md_path.write_text(md + "\n")
    (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    (out_dir / "targets.json").write_text(json.dumps(targets, indent=2) + "\n")
    return csv_path, md_path, targets




def rebuild(jsonl: Path, out_dir: Path, machine: dict) -> tuple[Path, Path, dict]:
    """``--report``: the outputs again from a ``results.jsonl``, with the ``machine.json``
    beside it when there is one (else ``machine``)."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    out_dir.mkdir(parents=True, exist_ok=True)
    old = jsonl.parent / "machine.json"
    if old.exists():
        machine = json.loads(old.read_text())
    return write_outputs(rows, machine, out_dir)
