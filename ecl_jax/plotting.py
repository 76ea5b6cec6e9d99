"""Matplotlib figures of runs: accuracy, loss and consensus distance vs epoch.

Curves are the mean over nodes with a band from the worst to the best node, the
figure researchers draw to compare ECL with gossip and the centralised reference.

:func:`compare_runs` (``ecl-jax compare``) overlays finished run folders: colour per
algorithm, line style and marker per run folder, runs labelled by the shortest path
suffix that tells them apart. It reads ``metrics.csv`` strictly (an empty, partial or
truncated file is refused with a :class:`~ecl_jax.errors.DataError` naming it) and
writes only into a folder of its own, never into a run folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import re
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ecl_jax.errors import DataError, RunFolderError
from ecl_jax.records import line_name

__all__ = ["COMPARE_MARKER", "compare_runs", "plot_histories", "plot_run", "read_metrics_csv", "run_labels"]

_STYLE = {
    "centralized": {"color": "black", "linestyle": "--"},
    "ecl-pdmm": {"color": "tab:blue"},
    "ecl-admm": {"color": "tab:orange"},
    "pdmm-isvr": {"color": "tab:green"},
    "admm-isvr": {"color": "tab:red"},
    "admm-isvr-shipped": {"color": "tab:red", "linestyle": "-."},
    "gossip": {"color": "tab:purple"},
    "pairwise-gossip": {"color": "tab:pink"},
    "dsgd": {"color": "tab:brown"},
    "gradient-tracking": {"color": "tab:olive"},
    "local": {"color": "tab:gray", "linestyle": ":"},
}
# Colours for algorithms without an entry above (new rules, pdmm-sgd, ...), in order.
_SPARE_COLORS = ("tab:cyan", "darkblue", "darkgreen", "darkred", "goldenrod", "teal", "indigo", "crimson",
                 "olive", "slategray")
# One line style and one marker per compared run folder (algorithms keep their colour).
_RUN_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1)))
_RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_XLABEL = {
    "epoch": "epoch (samples per node / local data size)",
    "round": "round (K local steps)",
    "step": "step",
    "bytes": "bytes sent per node (mean over nodes)",
}
_X_COLUMN = {"bytes": "bytes_sent_mean"}  # an x axis read from another column


def _series(history: list[dict], key: str, x_axis: str = "epoch"):
    """(x, mean, low, high) of ``key`` over a history: the mean over nodes with the min-max
    band over nodes; with seeds (rows with a ``seed``), the mean over seeds of that node mean
    with a band of +- one standard deviation over seeds, clipped to the seeds' range (x: the
    first seed's)."""
    vals = [r.get(key) for r in history]
    x_axis = _X_COLUMN.get(x_axis, x_axis)
    if any(v is None for v in vals) or any(x_axis not in r for r in history):
        return None
    node_mean = lambda v: np.atleast_1d(np.asarray(v, float))
    if history and "seed" in history[0]:
        rows: dict = {}  # step -> that point's rows, one per seed
        for r in history:
            rows.setdefault(r["step"], []).append(r)
        points = [rows[s] for s in sorted(rows)]
        x = np.array([p[0][x_axis] for p in points])
        by_step = [np.array([node_mean(r[key]).mean() for r in p]) for p in points]
        mean = np.array([m.mean() for m in by_step])
        std = np.array([m.std(ddof=1) if m.size > 1 else 0.0 for m in by_step])
        lo = np.maximum(mean - std, [m.min() for m in by_step])  # within the seeds' values (positive on log axes)
        hi = np.minimum(mean + std, [m.max() for m in by_step])
        return x, mean, lo, hi
    x = np.array([r[x_axis] for r in history])
    arr = [node_mean(v) for v in vals]
    return x, np.array([a.mean() for a in arr]), np.array([a.min() for a in arr]), np.array([a.max() for a in arr])


def _save(fig, path: pathlib.Path) -> None:
    """Render ``fig`` and write it atomically (a reader never sees a half-written image)."""
    from ecl_jax.run_folder import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png")
    atomic_write_bytes(path, buf.getvalue())


def plot_histories(histories: dict[str, list[dict]], key: str, ylabel: str, path: pathlib.Path,
                   title: str = "", log: bool = False, label_suffix: str = "",
                   x_axis: str = "epoch", reference: dict[str, float] | None = None,
                   styles: dict[str, dict] | None = None, note: str = "") -> pathlib.Path | None:
    """One figure of ``key`` vs epoch for every algorithm; None when no run has ``key``.

    ``reference``: {algorithm: published final value}, drawn as thin dashed lines in
    the algorithm's colour (ours beside theirs), for the algorithms drawn. ``note``: a
    line printed under the axes (why there is no published line). With ``log``, a
    series that is 0 throughout (the centralised model's consensus distance) cannot be
    drawn: it is left out of the legend and named in a note. ``styles``: {history name:
    matplotlib line keywords} (``band_alpha`` sets the min-max band's opacity); histories
    without an entry get their algorithm's default style."""
    plt = _plt()
    # compare with many runs x algorithms: a wider figure with the legend beside the axes
    outside = styles is not None and len(histories) + len(reference or {}) > 6
    fig, ax = plt.subplots(figsize=(10.0, 4.8) if outside else (6.4, 4.2), dpi=120)
    drawn, flat, silent, notes = 0, [], [], [note] if note else []
    for name, hist in histories.items():
        s = _series(hist, key, x_axis)
        if s is None:
            continue
        x, mean, lo, hi = s
        if log and not (hi > 0).any():
            flat.append(name)
            continue
        if x_axis == "bytes" and not (x > 0).any():
            silent.append(name)
            continue
        if styles and name in styles:
            style = dict(styles[name])
        else:
            style = dict(_STYLE.get(name.split("/")[-1], {}))
        band_alpha = style.pop("band_alpha", 0.15)
        seeds = len({r["seed"] for r in hist if "seed" in r})
        spread = f" ({seeds} seeds, band +-1 std)" if seeds > 1 else ""
        (line,) = ax.plot(x, mean, label=name + label_suffix + spread, **style)
        if (hi - lo).max() > 0:
            ax.fill_between(x, lo, hi, alpha=band_alpha, color=line.get_color())
        drawn += 1
    if not drawn and not flat:
        plt.close(fig)
        return None
    if flat:
        notes.append(f"not drawn (0 throughout, no place on a log axis): {', '.join(flat)}")
    if silent:
        notes.append(f"not drawn (sends no messages): {', '.join(silent)}")
    shown = set(histories) | {h[0].get("algorithm") for h in histories.values() if h}
    for name, value in (reference or {}).items():
        if name not in shown:
            continue
        color = _STYLE.get(name, {}).get("color", "gray")
        ax.axhline(float(value), color=color, linestyle=(0, (2, 2)), linewidth=0.9, alpha=0.8,
                   label=f"{name} (published)")
    ax.set_xlabel(_XLABEL[x_axis])
    if x_axis == "bytes":
        from matplotlib.ticker import EngFormatter

        ax.xaxis.set_major_formatter(EngFormatter(unit="B"))  # 500 kB, 2 MB
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=6, color="0.35", ha="left", va="bottom", wrap=True)
    if outside:
        ax.legend(fontsize=6 if drawn > 12 else 7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=2 if drawn > 24 else 1)
    else:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.035 * len(notes), 1, 1) if notes else None)
    _save(fig, pathlib.Path(path))
    plt.close(fig)
    return path


def plot_run(run_dir: pathlib.Path, histories: dict[str, list[dict]], title: str = "",
             x_axis: str = "epoch", published: dict | None = None, published_note: str = "") -> list[pathlib.Path]:
    """accuracy.png, loss.png, consensus.png in ``run_dir`` (mean over nodes, min-max band over
    nodes; with seeds the mean over seeds, band +- one std over seeds).

    ``published``: {"test_acc": {algo: value}, "test_loss": {algo: value}} reference lines;
    ``published_note``: why some or all are missing, printed on the accuracy and loss figures."""
    return _plot_three(pathlib.Path(run_dir), histories, title=title, x_axis=x_axis, published=published,
                       published_note=published_note)


def _plot_three(out_dir: pathlib.Path, histories: dict[str, list[dict]], title: str, x_axis: str,
                published: dict | None, styles: dict[str, dict] | None = None,
                published_note: str = "") -> list[pathlib.Path]:
    kw = {"title": title, "x_axis": x_axis, "styles": styles}
    published = published or {}
    out = [
        plot_histories(histories, "test_acc_node", "test accuracy (mean over nodes)", out_dir / "accuracy.png",
                       reference=published.get("test_acc"), note=published_note, **kw),
        plot_histories(histories, "test_loss_node", "test cross-entropy (mean over nodes)", out_dir / "loss.png",
                       reference=published.get("test_loss"), note=published_note, **kw),
        plot_histories(histories, "consensus_distance", "consensus distance (1/N) sum ||w_i - w_bar||^2",
                       out_dir / "consensus.png", log=True, **kw),
        plot_histories(histories, "test_acc_node", "test accuracy (mean over nodes)", out_dir / "accuracy_bytes.png",
                       **dict(kw, x_axis="bytes")),
    ]
    return [p for p in out if p is not None]


# ------------------------------------------------------------------ metrics.csv

REQUIRED_COLUMNS = ("step", "epoch", "algorithm")
_TEXT_COLUMNS = {"algorithm", "run"}
_NUMERIC_COLUMNS = {"step", "epoch", "round", "samples_seen", "wall_time", "consensus_distance", "seed"}
_NUMERIC_PREFIXES = ("test_", "train_", "mean_model_", "messages_", "bytes_")
_NODE_COLUMN = re.compile(r"(.+_node)_(\d+)$")
_WRITTEN_BY = "a metrics.csv written by `ecl-jax run` has the columns step, epoch, algorithm, test_acc_node_<i>, ..."


def _numeric_column(name: str) -> bool:
    return name in _NUMERIC_COLUMNS or name.startswith(_NUMERIC_PREFIXES)


def read_metrics_csv(path: pathlib.Path) -> dict[str, list[dict]]:
    """metrics.csv -> {algorithm: history rows} with per-node columns regrouped into lists.

    Refuses (:class:`DataError` naming the file and the line) a missing, empty or
    header-only file, missing required columns, a line with too few or too many values,
    a last line without its line end (cut while being written) and non-numbers in the
    metric columns. Unknown extra columns are kept (as numbers where they parse).
    With a ``run`` column holding several values, each algorithm and run is its own
    history, named ``"<algorithm> (run <run>)"``; a ``seed`` column (``ecl-jax run
    --seeds``) keeps one history per algorithm, a row per seed and point (drawn as the mean
    and a band over seeds).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file ({_WRITTEN_BY})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text file, so not a metrics.csv ({_WRITTEN_BY})") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror or err}") from None
    if not text.strip():
        raise DataError(f"{path} is empty: the run wrote no metric points (was it interrupted before its first "
                        "evaluation?). Finish the run with `ecl-jax run` on its config.")
    if not text.endswith(("\n", "\r")):
        raise DataError(f"{path} is truncated: its last line has no line end, so the file was cut while it was "
                        "written. Rerun `ecl-jax run` on the same config to write it again.")
    try:
        return _parse_metrics(path, text)
    except csv.Error as err:
        raise DataError(f"{path} is not a readable CSV file ({err})") from None


def _parse_metrics(path: pathlib.Path, text: str) -> dict[str, list[dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [c.strip() for c in next(reader)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    has_acc = any(c == "test_acc_mean" or re.fullmatch(r"test_acc_node_\d+", c) for c in header)
    if missing or not has_acc:
        what = missing + ([] if has_acc else ["test_acc_node_<i> or test_acc_mean"])
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise DataError(f"{path} lacks the column(s) {', '.join(what)} (its header: {shown}); {_WRITTEN_BY}")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise DataError(f"{path}: the header names the column(s) {', '.join(dup)} twice")
    parsed: list[tuple[str, str, dict]] = []
    for values in reader:
        line = reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # blank line
        if len(values) != len(header):
            raise DataError(f"{path}, line {line}: {len(values)} values for {len(header)} columns "
                            "(the line is truncated or corrupted)")
        row: dict = {}
        groups: dict[str, dict[int, float]] = {}
        algorithm = run = ""
        for col, v in zip(header, values):
            v = v.strip()
            if col == "algorithm":
                algorithm = v
                continue
            if col == "run":
                run = v
                continue
            if v == "":
                continue  # this algorithm has no such metric
            try:
                num = float(v)
            except ValueError:
                if _numeric_column(col) or _NODE_COLUMN.match(col):
                    raise DataError(f"{path}, line {line}, column {col!r}: {v!r} is not a number") from None
                row[col] = v  # an unknown text column: keep it
                continue
            m = _NODE_COLUMN.match(col)
            if m:
                groups.setdefault(m.group(1), {})[int(m.group(2))] = num
            else:
                row[col] = num
        if not algorithm:
            raise DataError(f"{path}, line {line}: the algorithm column is empty")
        for col in ("step", "epoch"):
            if col not in row:
                raise DataError(f"{path}, line {line}: the {col} column is empty")
        if not np.isfinite(row["step"]) or row["step"] != int(row["step"]):
            raise DataError(f"{path}, line {line}, column 'step': {row['step']!r} is not a whole number")
        row["step"] = int(row["step"])
        if "seed" in row:  # a batch of seeds (`ecl-jax run --seeds`): one history, a row per seed and point
            if not np.isfinite(row["seed"]) or row["seed"] != int(row["seed"]):
                raise DataError(f"{path}, line {line}, column 'seed': {row['seed']!r} is not a whole number")
            row["seed"] = int(row["seed"])
        for head, d in groups.items():
            row[head] = [d[i] for i in sorted(d)]
        for metric in ("test_acc", "test_loss", "train_loss"):
            if f"{metric}_node" not in row and f"{metric}_mean" in row:
                row[f"{metric}_node"] = [row[f"{metric}_mean"]]  # curves: the mean, no band
                row[f"{metric}_only_mean"] = True  # tables: no worst node to show
        parsed.append((algorithm, run, row))
    if not parsed:
        raise DataError(f"{path} has a header but no rows: the run wrote no metric points. "
                        "Finish the run with `ecl-jax run` on its config.")
    several_runs = len({run for _, run, _ in parsed}) > 1
    histories: dict[str, list[dict]] = {}
    for algorithm, run, row in parsed:
        row["algorithm"] = algorithm
        if run:
            row["run"] = run
        name = line_name(algorithm, run) if several_runs else algorithm
        histories.setdefault(name, []).append(row)
    return histories


# ------------------------------------------------------------------ compare

COMPARE_MARKER = ".ecl_jax_compare"
"""File that marks a folder written by ``ecl-jax compare`` (it may overwrite its own outputs there)."""
COMPARE_TABLE_CSV, COMPARE_TABLE_MD, COMPARE_SERIES_JSON = "compare.csv", "compare.md", "compare.json"
"""The outputs of ``ecl-jax compare`` besides the figures (docs/outputs.md#ecl-jax-compare)."""
_COMPARE_OUTPUTS = ("accuracy.png", "loss.png", "consensus.png", "accuracy_bytes.png", COMPARE_TABLE_CSV, COMPARE_TABLE_MD, COMPARE_SERIES_JSON)
_RUN_FOLDER_SIGNS = ("config.json", "metrics.csv", "checkpoints", "final.json")


@dataclass
class _Run:
    given: str
    path: pathlib.Path  # resolved
    config: dict
    histories: dict[str, list[dict]]
    label: str = ""
    series: dict[str, str] = field(default_factory=dict)  # history name -> legend name


def run_labels(paths: list[str | pathlib.Path]) -> list[str]:
    """The shortest path suffix of each path that no other path ends with.

    ``runs/a/default`` and ``runs/b/default`` -> ``a/default``, ``b/default``;
    ``runs/x`` and ``runs/y`` -> ``x``, ``y``."""
    parts = [pathlib.Path(os.path.abspath(p)).parts for p in paths]
    labels = []
    for i, own in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != i]
        k = 1
        while k < len(own) and any(p[-k:] == own[-k:] for p in others):
            k += 1
        labels.append(str(pathlib.PurePath(*own[-k:])))
    return labels


def _no_metrics_reason(p: pathlib.Path) -> str:
    if (p / "checkpoints").is_dir() and any((p / "checkpoints").glob("*.npz")):
        return ("the run has not finished (metrics.csv is written once every algorithm is done); finish it with "
                "`ecl-jax run` on the same config, which resumes from its checkpoints")
    if (p / "final.json").is_file():
        return ("it holds final values only (final.json), no per-step history, so there are no curves to overlay "
                f"(stored reference results without metrics.csv kept only their final values); "
                f"`ecl-jax run {p / 'config.json'}` reruns it and writes one")
    if (p / "config.json").is_file():
        return f"the run has written no metrics yet; `ecl-jax run {p / 'config.json'}` runs it"
    return "it is not a run folder (a run folder from `ecl-jax run` holds config.json and metrics.csv)"


def _load_run(given: str | pathlib.Path) -> _Run:
    p = pathlib.Path(given)
    if not p.exists():
        raise RunFolderError(f"{given}: no such folder (give run folders written by `ecl-jax run`, each with "
                             "config.json and metrics.csv)")
    if not p.is_dir():
        hint = f"; give its folder {p.parent}" if p.name == "metrics.csv" else ""
        raise RunFolderError(f"{given} is a file, not a run folder{hint}")
    if not (p / "metrics.csv").is_file():
        raise RunFolderError(f"{given} has no metrics.csv: {_no_metrics_reason(p)}")
    config: dict = {}
    cfg = p / "config.json"
    if cfg.is_file():
        try:
            config = json.loads(cfg.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"{cfg} is not valid JSON ({err}); it should be the config.json that "
                            "`ecl-jax run` wrote") from None
        if not isinstance(config, dict):
            raise DataError(f"{cfg} holds a JSON {type(config).__name__}, not the object `ecl-jax run` writes")
    return _Run(str(given), p.resolve(), config, read_metrics_csv(p / "metrics.csv"))


def _shared(runs: list[_Run], key: str):
    """The config value every run has for ``key``, else None."""
    if not all(key in r.config for r in runs):
        return None
    values = {json.dumps(r.config[key], sort_keys=True) for r in runs}
    return runs[0].config[key] if len(values) == 1 else None


def _title(runs: list[_Run], wrap: bool = True) -> str:
    labels = [r.label for r in runs]
    head = ("compare " + " vs ".join(labels)) if len(runs) > 1 else f"run {labels[0]}"
    shared, differ = [], []
    for key in ("dataset", "model", "topology", "n_nodes", "edge_schedule"):
        value = _shared(runs, key)
        if value is None:
            if any(key in r.config for r in runs) and len(runs) > 1:
                differ.append(key)
            continue
        shared.append(f"N={value}" if key == "n_nodes" else f"edges {value}" if key == "edge_schedule" else str(value))
    lines = (textwrap.wrap(head, 80 if len(runs) <= 3 else 120) if wrap else []) or [head]
    if shared:
        lines.append(", ".join(shared))
    if differ:
        lines.append(f"(runs differ in {', '.join(differ)})")
    return "\n".join(lines)


def _algorithm_colors(algorithms: Iterable[str]) -> dict[str, str]:
    colors, spare = {}, iter(_SPARE_COLORS * 4)
    for a in algorithms:
        if a not in colors:
            colors[a] = _STYLE.get(a, {}).get("color") or next(spare, "gray")
    return colors


def _check_out_dir(out: pathlib.Path, runs: list[_Run]) -> None:
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; compare writes its figures and tables into a folder")
    target = out.resolve()
    for r in runs:
        if target == r.path or r.path in target.parents:
            where = "is" if target == r.path else "is inside"
            raise RunFolderError(f"--out {out} {where} the run folder {r.given} being compared; compare writes into "
                                 "a folder of its own, never into a run folder: choose another --out, e.g. runs/compare")
    from ecl_jax.run_folder import MARKER

    for parent in target.parents:
        if (parent / MARKER).is_file():
            raise RunFolderError(f"--out {out} is inside the run folder {parent} (it holds {MARKER}); choose an "
                                 "--out outside run folders, e.g. runs/compare")
    if out.is_dir():
        signs = [n for n in (MARKER,) + _RUN_FOLDER_SIGNS if (out / n).exists()]
        if signs:
            raise RunFolderError(f"--out {out} is a run folder (it holds {', '.join(signs)}); compare never writes "
                                 "into run folders: choose another --out, e.g. runs/compare")
        if not (out / COMPARE_MARKER).is_file():
            clash = [n for n in _COMPARE_OUTPUTS if (out / n).exists()]
            if clash:
                raise RunFolderError(f"--out {out} already holds {', '.join(clash)}, not written by ecl-jax compare "
                                     f"(no {COMPARE_MARKER} file); compare does not overwrite other files: "
                                     "choose another --out")


def _seed_mean(hist: list[dict]) -> dict:
    """A history's last row; with seeds, the seeds' last rows averaged (per node, then the
    scalars), with ``run`` saying over how many seeds."""
    from ecl_jax.records import last_points

    rows = last_points(hist)
    if isinstance(rows, dict):
        return rows
    out = dict(rows[-1], run=f"mean of {len(rows)} seeds")
    for k, v in rows[-1].items():
        if isinstance(v, list):
            out[k] = np.mean([r[k] for r in rows], axis=0).tolist()
        elif isinstance(v, float):  # step and seed are ints: kept
            out[k] = float(np.mean([r[k] for r in rows]))
    return out


def _final_rows(runs: list[_Run]) -> list[dict]:
    rows = []
    for r in runs:
        pub = r.config.get("published") or {}
        for name, hist in r.histories.items():
            last = _seed_mean(hist)
            algo = last["algorithm"]
            acc = last.get("test_acc_node")
            loss = last.get("test_loss_node")
            rows.append({
                "run_folder": r.label,
                "path": r.given,
                "algorithm": algo,
                "run": last.get("run", ""),
                "step": last["step"],
                "epoch": last["epoch"],
                "round": last.get("round", ""),
                "samples_seen": last.get("samples_seen", ""),
                "wall_time": last.get("wall_time", ""),
                "test_acc_mean": float(np.mean(acc)) if acc else "",
                # without per-node columns the worst node is unknown: blank, never the mean
                "test_acc_min": float(np.min(acc)) if acc and not last.get("test_acc_only_mean") else "",
                "test_loss_mean": float(np.mean(loss)) if loss else "",
                "mean_model_test_acc": last.get("mean_model_test_acc", ""),
                "consensus_distance": last.get("consensus_distance", ""),
                "published_test_acc": (pub.get("test_acc") or {}).get(algo, ""),
                "published_test_loss": (pub.get("test_loss") or {}).get(algo, ""),
                "legend": r.series[name],
            })
    return rows


def _fmt(v, spec: str, scale: float = 1.0) -> str:
    return "" if v in ("", None) else format(float(v) * scale, spec)


def _markdown(title: str, rows: list[dict]) -> str:
    head, _, rest = title.partition("\n")
    lines = ["# " + head, ""] + ([rest.replace("\n", "; "), ""] if rest else []) + [
             ("| run | algorithm | step | epoch | test acc % (mean) | worst node % | published acc % | test loss "
             "| mean-model acc % | consensus | wall s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        algo = r["algorithm"] + (f" (run {r['run']})" if r["run"] != "" else "")
        lines.append(
            f"| {r['run_folder']} | {algo} | {r['step']} | {_fmt(r['epoch'], '.2f')} | "
            f"{_fmt(r['test_acc_mean'], '.2f', 100)} | {_fmt(r['test_acc_min'], '.2f', 100)} | "
            f"{_fmt(r['published_test_acc'], '.2f', 100)} | {_fmt(r['test_loss_mean'], '.4f')} | "
            f"{_fmt(r['mean_model_test_acc'], '.2f', 100)} | {_fmt(r['consensus_distance'], '.3g')} | "
            f"{_fmt(r['wall_time'], '.1f')} |")
    if any(r["test_acc_min"] == "" and r["test_acc_mean"] != "" for r in rows):
        lines += ["", "A blank worst node: that run's metrics.csv has only the mean accuracy "
                      "(no test_acc_node_<i> columns), so its worst node is not known."]
    return "\n".join(lines) + "\n"


def compare_runs(run_dirs: Iterable[str | pathlib.Path], out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Overlay finished runs (their metrics.csv) in ``out_dir``; the paths written.

    Writes accuracy.png, loss.png, consensus.png (colour per algorithm, line style and
    marker per run folder; legend "<run label>: <algorithm>"), the final values per run
    folder and algorithm as a CSV and a Markdown table, and the runs, series and their
    styles as JSON (file names and contents: docs/outputs.md#ecl-jax-compare). Every input is read and checked before anything is
    written. Raises :class:`RunFolderError` / :class:`DataError` (messages name the
    folder or file) when there is nothing to compare, an input is not a finished run
    folder, its metrics.csv is empty or partial, or ``out_dir`` is a run folder, one of
    the inputs, or holds files that compare did not write. Files are written
    atomically; nothing is deleted.
    """
    given = [str(d) for d in run_dirs]
    if not given:
        raise RunFolderError("nothing to compare: give one or more run folders written by `ecl-jax run` "
                             "(each with config.json and metrics.csv), e.g. ecl-jax compare runs/a runs/b")
    runs: list[_Run] = []
    for d in given:
        run = _load_run(d)
        same = next((r for r in runs if r.path == run.path), None)
        if same is not None:
            print(f"note: {d} is the same folder as {same.given}; compared once", file=sys.stderr)
            continue
        runs.append(run)
    out = pathlib.Path(out_dir)
    _check_out_dir(out, runs)

    for r, label in zip(runs, run_labels([r.given for r in runs])):
        r.label = label
    colors = _algorithm_colors(h[0]["algorithm"] for r in runs for h in r.histories.values())
    merged: dict[str, list[dict]] = {}
    styles: dict[str, dict] = {}
    series_info = []
    for i, r in enumerate(runs):
        for name, hist in r.histories.items():
            algo = hist[0]["algorithm"]
            legend = f"{r.label}: {name}"
            if len(runs) == 1:  # one run: the look of its own plots
                style = dict(_STYLE.get(algo, {}), color=colors[algo])
            else:
                style = {"color": colors[algo], "linestyle": _RUN_LINESTYLES[i % len(_RUN_LINESTYLES)],
                             "marker": _RUN_MARKERS[i % len(_RUN_MARKERS)], "markersize": 4,
                             "markevery": (0.02 * (i % 5), 0.1), "band_alpha": 0.08}
            style.setdefault("linestyle", "-")
            r.series[name] = legend
            merged[legend] = hist
            styles[legend] = style
            series_info.append({"legend": legend, "run_folder": r.label, "path": r.given, "algorithm": algo,
                                "run": hist[0].get("run", ""), "color": style["color"],
                                "linestyle": style["linestyle"], "marker": style.get("marker", "")})

    x_axis = _shared(runs, "x_axis")
    if x_axis not in _XLABEL or not all(x_axis in row for h in merged.values() for row in h):
        x_axis = "epoch"
    published = _shared(runs, "published") or None
    title = _title(runs)
    rows = _final_rows(runs)

    from ecl_jax.run_folder import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    if not (out / COMPARE_MARKER).is_file():
        atomic_write_text(out / COMPARE_MARKER, json.dumps({"made_by": "ecl_jax compare"}) + "\n")
    written = _plot_three(out, merged, title=title, x_axis=x_axis, published=published, styles=styles)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / COMPARE_TABLE_CSV, buf.getvalue())
    atomic_write_text(out / COMPARE_TABLE_MD, _markdown(_title(runs, wrap=False), rows))
    written += [out / COMPARE_TABLE_CSV, out / COMPARE_TABLE_MD]
    info = {
        "title": title,
        "x_axis": x_axis,
        "runs": [{"label": r.label, "path": r.given, "resolved": str(r.path),
                  **{k: r.config.get(k) for k in ("name", "dataset", "model", "topology", "n_nodes") if k in r.config},
                  "series": list(r.histories)} for r in runs],
        "series": series_info,
        "outputs": [p.name for p in written] + [COMPARE_SERIES_JSON],
    }
    atomic_write_text(out / COMPARE_SERIES_JSON, json.dumps(info, indent=2) + "\n")
    written.append(out / COMPARE_SERIES_JSON)
    stale = [n for n in _COMPARE_OUTPUTS if (out / n).exists() and out / n not in written]
    if stale:
        print(f"note: {out} still holds {', '.join(stale)} from an earlier compare (not redrawn: these runs have "
              "no such metric)", file=sys.stderr)
    return written
