"""From a :class:`~ecl_jax.config.RunConfig` to a run folder with metrics, plots and checkpoints.

A run folder ``<out_dir>/<name>/`` holds:

* ``config.json`` - the resolved config; ``split.txt`` / ``split.csv`` - samples per node and class;
* ``metrics.csv`` - one row per metric point and algorithm;
* ``accuracy.png``, ``loss.png``, ``consensus.png`` - the side-by-side figures;
* ``checkpoints/<algorithm>.npz`` - the last good carry (state, step, key) and the
  metrics so far. Re-running the same command resumes from there and ends with
  metrics equal bit for bit to an uninterrupted run (randomness depends only on the
  seed and the step). Finished algorithms are not re-run.

This module plans a run and guards its folder; the chunk loop is :meth:`Engine.run`, the
per-chunk jobs (divergence check, history, progress, checkpoints) are the callbacks of
:mod:`ecl_jax.callbacks`, and what is written down lives in :mod:`ecl_jax.records`
(docs/design.md#runner-callbacks).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import math
import os
import pathlib
import sys
import time  # noqa: F401  (tests patch ``runner.time.time`` for ``runner.Progress``)
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import masks, records, run_folder
from ecl_jax.callbacks import (
    Checkpointer,
    DivergenceCheck,
    DivergenceError,
    Progress,
    Recorder,
    StopAfter,
    StopOnInterrupt,
)
from ecl_jax.checkpoint import (
    CHECKPOINT_FORMAT,
    NON_TRAJECTORY_FIELDS,
    check_fingerprint,
    fingerprint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ecl_jax.config import ConfigError, RunConfig, config_to_dict
from ecl_jax.engine import Engine
from ecl_jax.execution import steps_done, tree_bytes
from ecl_jax.errors import RunFolderError
from ecl_jax.node_data import NodeData, stack_splits
from ecl_jax.records import summarize, write_metrics_csv
from ecl_jax.runtime import runtime_from_string
from ecl_jax.registry import (
    ALGORITHM_ALIASES,
    ALGORITHM_NAMES,
    TOPOLOGY_NAMES,
    algorithm_settings,
    build_algorithm,
    build_topology,
    graph_schedule,
)

__all__ = [
    "DivergenceError",
    "build_topology",
    "build_algorithm",
    "ALGORITHM_NAMES",
    "ALGORITHM_ALIASES",
    "TOPOLOGY_NAMES",
    "CHECKPOINT_FORMAT",
    "prepare_data",
    "run_experiment",
    "RunResult",
    "Progress",
    "summarize",
    "write_metrics_csv",
    "save_checkpoint",
    "load_checkpoint",
]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


@dataclasses.dataclass
class PreparedData:
    train: NodeData
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    counts: np.ndarray  # [N, C]
    split_text: str
    source: str
    input_shape: tuple


def prepare_data(config: RunConfig) -> PreparedData:
    """Load the data set, split it over the nodes, stack it node-wise."""
    return _split(config, _load(config), config.partition_seed)


def prepare_splits(config: RunConfig) -> list[PreparedData]:
    """The data of every seed of a run: one split for all (a list of one), or with
    ``split_per_seed`` seed s's own, drawn with partition seed s (docs/outputs.md#seeds)."""
    if not config.split_per_seed:
        return [prepare_data(config)]
    ds = _load(config)
    return [_split(config, ds, seed) for seed in _seeds(config) or [config.seed]]


def _load(config: RunConfig):
    """The data set, subsampled to ``n_train`` / ``n_test`` (the same for every split)."""
    from ecl_jax import datasets

    ds = datasets.load_dataset(config.dataset, data_dir=config.data_dir)
    if config.n_train or config.n_test:
        try:
            ds = datasets.subsample(ds, config.n_train, config.n_test, seed=config.partition_seed or 0)
        except ValueError as err:
            raise ConfigError(f"{err} (data set {config.dataset} has {len(ds.y_train)} training and "
                              f"{len(ds.y_test)} test samples)") from None
    return ds


def _split(config: RunConfig, ds, seed: int | None) -> PreparedData:
    """``ds``'s training set split over the nodes by ``config.partition`` with partition seed ``seed``."""
    from ecl_jax import partition

    kwargs: dict[str, Any] = {}
    method = config.partition
    if method == "k_classes" and config.partition_k is not None:
        kwargs["k"] = config.partition_k
    elif method in ("dirichlet", "quantity_skew"):
        kwargs["alpha"] = config.partition_alpha
    elif method == "classes":
        if config.class_lists is None:
            raise ConfigError("partition='classes' needs class_lists, e.g. [[6,7,8,9],[3,4,5],[0,1,2]]")
        kwargs["class_lists"] = [list(c) for c in config.class_lists]
        kwargs["replace"] = config.partition_replace
    elif method in ("kdd20_mnist", "kdd20_cifar10"):
        kwargs["replace"] = config.partition_replace
    elif method == "icml21":
        if config.partition_k is not None:
            kwargs["classes_per_node"] = config.partition_k
        kwargs["num_classes"] = ds.num_classes
    try:
        parts = partition.partition(ds.y_train, config.n_nodes, method, seed=seed, **kwargs)
    except ValueError as err:
        raise ConfigError(f"data split failed: {err}") from None
    counts = partition.count_table(ds.y_train, parts, ds.num_classes)
    train = partition.node_data(ds.x_train, ds.y_train, parts)
    return PreparedData(
        train=train,
        x_test=ds.x_test,
        y_test=ds.y_test,
        num_classes=ds.num_classes,
        counts=counts,
        split_text=partition.format_count_table(counts),
        source=ds.source,
        input_shape=tuple(ds.x_train.shape[1:]),
    )


def make_eval_fn(model, eval_batch: int) -> Callable:
    """Test metrics per node and of the mean model, in batches of ``eval_batch``."""
    from ecl_jax.engine import mean_params
    from ecl_jax.models import predict_logits

    logits_fn = predict_logits(model)

    def eval_fn(params, eval_data):
        x, y = eval_data
        n_test = x.shape[0]
        nb = max(1, math.ceil(n_test / eval_batch))
        pad = nb * eval_batch - n_test
        xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((nb, eval_batch) + x.shape[1:])
        yp = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]).reshape(nb, eval_batch)
        wp = (jnp.arange(nb * eval_batch) < n_test).reshape(nb, eval_batch).astype(jnp.float32)
        wbar = mean_params(params)

        def stats(p, xb, yb, wb):
            logits = logits_fn(p, xb)
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            nll = -jnp.take_along_axis(logp, yb[:, None].astype(jnp.int32), 1)[:, 0]
            correct = (logits.argmax(-1) == yb).astype(jnp.float32)
            return jnp.stack([(nll * wb).sum(), (correct * wb).sum()])

        def body(acc, batch):
            xb, yb, wb = batch
            per_node = jax.vmap(stats, in_axes=(0, None, None, None))(params, xb, yb, wb)
            mean_m = stats(wbar, xb, yb, wb)
            return (acc[0] + per_node, acc[1] + mean_m), None

        n = jax.tree_util.tree_leaves(params)[0].shape[0]
        (per_node, mean_m), _ = jax.lax.scan(body, (jnp.zeros((n, 2)), jnp.zeros(2)), (xp, yp, wp))
        per_node, mean_m = per_node / n_test, mean_m / n_test
        return {
            "test_loss_node": per_node[:, 0],
            "test_acc_node": per_node[:, 1],
            "mean_model_test_loss": mean_m[0],
            "mean_model_test_acc": mean_m[1],
        }

    return eval_fn


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What :func:`run_experiment` returns: the run folder and per-algorithm histories."""

    run_dir: pathlib.Path
    histories: dict[str, list[dict]]
    final: dict[str, dict]
    plots: list[pathlib.Path]


def split_hash(train: NodeData) -> str:
    """A short hash of the node split (every node's samples, labels and counts)."""
    return _hash_arrays(train.x, train.y, train.count)


def _hash_arrays(*arrays) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclasses.dataclass
class _RunPlan:
    """A validated run: everything built before a single file is touched."""

    config: RunConfig
    run_dir: pathlib.Path
    topology: Any
    algorithms: list
    data: "PreparedData"  # the first seed's (with split_per_seed; the test set is every seed's)
    fingerprints: dict
    grids: dict  # algorithm -> its sweep points ({option: value} each; [{}] without a sweep)
    splits: list  # every seed's PreparedData with split_per_seed, else [data]


def _plan_run(config: RunConfig) -> _RunPlan:
    """Validate the whole config (graph, algorithms, model, schedules, data) without writing."""
    from ecl_jax import models

    run_folder.check_run_name(config.name)
    topology = build_topology(config)
    grids = {a: sweep_points(config, a) for a in config.algorithms}
    algorithms = [build_algorithm(a, config, grids[a][0]) for a in config.algorithms]
    try:
        models.get_model(config.model, num_classes=10)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    splits = prepare_splits(config)
    data = splits[0]
    algorithms = [_swept_algorithm(config, name, grids[name], topology, data) if len(grids[name]) > 1 else a
                  for name, a in zip(config.algorithms, algorithms)]
    resolved = config_to_dict(config)
    data_id = {"dataset": config.dataset, "source": data.source,
               "split": "+".join(split_hash(d.train) for d in splits),
               "test": _hash_arrays(data.x_test, data.y_test)}  # resuming on another test set would mix curves
    prints = {
        a.name: fingerprint(resolved, a.name, config.options.get(a.name, {}), algorithm_settings(a), data_id)
        for a in algorithms
    }
    grids = {a.name: grids[n] for n, a in zip(config.algorithms, algorithms)}
    return _RunPlan(config, pathlib.Path(config.out_dir) / config.name, topology, algorithms, data, prints, grids,
                    splits)


def sweep_points(config: RunConfig, name: str) -> list[dict]:
    """Algorithm ``name``'s points of ``config.sweep``: {option: value} for every combination
    of the swept values that reach it (the first key varying slowest); ``[{}]`` without."""
    from ecl_jax.config import sweep_targets

    axes = [(opt, [float(v) for v in values]) for key, values in config.sweep.items()
            for algo, opt in sweep_targets(config, key) if algo == name]
    return [dict(zip([opt for opt, _ in axes], combo)) for combo in itertools.product(*(v for _, v in axes))]


def _varying(points: list[dict]) -> list[str]:
    """The options whose value differs between points (the others are fixed settings)."""
    return [k for k in points[0] if len({p[k] for p in points}) > 1]


def _swept_algorithm(config: RunConfig, name: str, points: list[dict], topology, data):
    """Algorithm ``name`` with its swept options injected (:func:`~ecl_jax.algorithms.inject_hyperparams`),
    after every point was built and checked to be the same program (:func:`~ecl_jax.algorithms.check_sweep`)."""
    from ecl_jax import models
    from ecl_jax.algorithms import check_sweep, inject_hyperparams

    build = lambda **values: build_algorithm(name, config, values)
    model = models.get_model(config.model, num_classes=data.num_classes)
    params = jax.eval_shape(lambda k: models.init_node_params(model, k, config.n_nodes, data.input_shape,
                                                              same_init=config.same_init), jax.random.PRNGKey(0))
    try:
        check_sweep(build, points, params, topology)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"sweep of {name}: {err}") from None
    return inject_hyperparams(build, static_args=[k for k in points[0] if k not in _varying(points)])(**points[0])


def _run_tags(config: RunConfig, points: list[dict]) -> list[dict] | None:
    """Each run's tags in a batch (run r = point g, seed s with r = g * seeds + s): the
    point's ``run`` label and values when the grid has several points, the ``seed`` with
    several seeds; None for one run."""
    varying = _varying(points) if len(points) > 1 else []
    if not varying and config.seeds == 1:
        return None
    tags = []
    for point in points:
        here = {k: point[k] for k in varying}
        label = {"run": " ".join(f"{k}={v:g}" for k, v in here.items()), **here} if varying else {}
        for seed in _seeds(config) or [config.seed]:
            tags.append(dict(label, **({"seed": seed} if config.seeds > 1 else {})))
    return tags


def _run_label(tags: dict) -> str:
    """A run of a batch in words: ``seed 3``, ``eta=0.5``, ``eta=0.5 seed 3``."""
    return " ".join(([tags["run"]] if "run" in tags else []) + ([f"seed {tags['seed']}"] if "seed" in tags else []))


def _read_json(path: pathlib.Path) -> dict:
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict):
            raise ValueError(f"holds a {type(d).__name__}, not an object")
        return d
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunFolderError(
            f"{path} is unreadable or corrupted ({err}); delete that file (the checkpoints still hold the "
            "progress) or re-run with --fresh to start the run over"
        ) from None


def _check_folder(plan: _RunPlan) -> tuple[list[str], dict[str, int]]:
    """Check an existing run folder against the plan; return the algorithms it already holds
    (beyond the plan's) and {algorithm: steps still to run} for the plan's unfinished ones, in run order.

    Refuses (before anything runs) a folder with results of another config, a checkpoint
    of another run (fingerprint), or a checkpoint past the requested steps.
    """
    config, run_dir = plan.config, plan.run_dir
    ckpt_dir = run_dir / "checkpoints"
    present = sorted(p.stem for p in ckpt_dir.glob("*.npz")) if ckpt_dir.is_dir() else []
    has_results = bool(present) or (run_dir / "metrics.csv").exists() or (run_dir / "final.json").exists()
    cfg_path = run_dir / "config.json"
    old_algos: list[str] = []
    if cfg_path.exists():
        old = _read_json(cfg_path)
        old_algos = [a for a in old.get("algorithms", []) if isinstance(a, str)]
        if has_results:
            resolved = config_to_dict(config)
            defaults = config_to_dict(RunConfig())
            # A key missing from an older config.json is the same run if it has its default now.
            diff = sorted(
                k for k in set(old) | set(resolved)
                if k not in NON_TRAJECTORY_FIELDS and old.get(k, defaults.get(k)) != resolved.get(k)
            )
            if diff:
                shown = ", ".join(f"{k}: {old.get(k, defaults.get(k))!r} there, {resolved.get(k)!r} now" for k in diff[:5])
                raise ConfigError(
                    f"{run_dir} holds a run with a different config (keys {diff}: {shown}); "
                    "use --fresh to overwrite it or --set name=... for a new folder"
                )
    left = {}
    for name, expected in plan.fingerprints.items():
        path = ckpt_dir / f"{name}.npz"
        done = 0
        if path.exists():
            meta = read_meta(path)
            check_fingerprint(path, meta, expected)
            if meta["step"] is not None and meta["step"] > config.steps:
                raise ConfigError(
                    f"{path} is already at step {meta['step']}, past steps={config.steps}; ask for "
                    f"steps >= {meta['step']} (a finished run can be extended, not shortened) or --set name=... "
                    "for a new run"
                )
            done = meta["step"] or 0
        if done < config.steps:
            left[name] = config.steps - done
    return [a for a in old_algos if a in present and a not in plan.fingerprints], left


def run_experiment(
    config: RunConfig,
    *,
    quiet: bool = False,
    fresh: bool = False,
    stop_after_chunks: int | None = None,
) -> RunResult:
    """Run every algorithm of ``config`` (resuming where checkpoints exist).

    Safe by construction: the whole config and the data are validated before any file is
    written; ``fresh`` empties only a folder that ecl_jax made (marker file), after that
    validation; the folder is locked against a second process; each checkpoint must carry
    this run's fingerprint to be resumed; every file a later run reads is written
    atomically. A finished run asked for more ``steps`` continues from its checkpoints.
    Each algorithm is one :meth:`Engine.run` with the callbacks of :mod:`ecl_jax.callbacks`
    (docs/design.md#runner-callbacks).

    ``stop_after_chunks`` simulates an interruption (tests): the run raises
    KeyboardInterrupt after that many chunks, with the checkpoint written.
    """
    plan = _plan_run(config)
    run_dir = plan.run_dir
    _refuse_foreign_folder(run_dir, fresh)
    run_folder.create(run_dir)
    try:
        lock = run_folder.RunLock(run_dir).acquire()
    except OSError as err:
        shown = None if fresh else _finished_read_only(plan, err, quiet)
        if shown is None:
            raise
        return shown
    try:
        if fresh:
            run_folder.clear(run_dir)
        earlier, left = _check_folder(plan)
        _write_run_files(plan, earlier, quiet)
        inputs = _training_inputs(plan)
        histories = {name: read_meta(run_dir / "checkpoints" / f"{name}.npz")["history"] for name in earlier}
        stop = None if stop_after_chunks is None else StopAfter(stop_after_chunks, config.steps)
        first = next(iter(left), None)  # the one timed for the long-run notice
        for algorithm in plan.algorithms:
            histories[algorithm.name] = _run_algorithm(plan, inputs, algorithm, quiet=quiet, stop=stop,
                                                       announce=left if algorithm.name == first else None)
        return _finish(plan, histories)
    finally:
        lock.release()


_CANNOT_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _finished_read_only(plan: _RunPlan, err: OSError, quiet: bool) -> RunResult | None:
    """The results of a finished run whose folder cannot be written (``err`` from taking its
    lock: read-only, permission), read from its checkpoints without writing anything; None
    when the folder holds no finished run of this config (then ``err`` stands)."""
    if err.errno not in _CANNOT_WRITE or not (plan.run_dir / "checkpoints").is_dir():
        return None
    earlier, left = _check_folder(plan)  # reads only; refuses another run's checkpoints as usual
    names = earlier + [a.name for a in plan.algorithms]
    if left or not all((plan.run_dir / "checkpoints" / f"{n}.npz").is_file() for n in names):
        return None
    histories = {n: read_meta(plan.run_dir / "checkpoints" / f"{n}.npz")["history"] for n in names}
    if not quiet:
        print(f"note: {plan.run_dir} cannot be written ({os.strerror(err.errno).lower()}); the run is finished, so "
              "its results are read from its checkpoints and no file is rewritten", file=sys.stderr)
    plots = [p for p in (plan.run_dir / f"{k}.png" for k in ("accuracy", "loss", "consensus")) if p.is_file()]
    return RunResult(plan.run_dir, histories, _last_points(histories), plots)


def _refuse_foreign_folder(run_dir: pathlib.Path, fresh: bool) -> None:
    """Refuse a non-empty ``run_dir`` without the ownership marker (before anything is written)."""
    if run_dir.exists() and not run_folder.is_run_folder(run_dir) and (not run_dir.is_dir() or any(run_dir.iterdir())):
        looks_old = (run_dir / "config.json").exists() and (run_dir / "checkpoints").is_dir()
        why = (" It looks like a run folder of an older ecl_jax, whose checkpoints cannot be verified;"
               " move it away to keep it." if looks_old else "")
        action = "delete" if fresh else "write into"
        raise RunFolderError(
            f"{run_dir} exists and was not made by ecl_jax (no {run_folder.MARKER} file), so ecl_jax will not "
            f"{action} it.{why} Choose another --set name=... or out_dir=..."
        )


def _write_run_files(plan: _RunPlan, earlier: list[str], quiet: bool) -> None:
    """``checkpoints/``, ``config.json`` (with the algorithms run earlier), ``split.txt`` / ``split.csv``."""
    config, run_dir, data = plan.config, plan.run_dir, plan.data
    resolved = config_to_dict(config)
    resolved["algorithms"] = list(dict.fromkeys(earlier + list(config.algorithms)))
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    records.write_config(run_dir / "config.json", resolved)
    header = f"data: {config.dataset} ({data.source}); partition: {config.partition}; topology: {plan.topology!r}"
    seeds = (_seeds(config) or [config.seed]) if config.split_per_seed else None
    text = data.split_text if seeds is None else "\n\n".join(
        f"seed {seed} (partition seed {seed}):\n{d.split_text}" for seed, d in zip(seeds, plan.splits))
    counts = data.counts if seeds is None else [d.counts for d in plan.splits]
    records.write_split(run_dir, header, text, counts, data.num_classes, seeds=seeds)
    if not quiet:
        print(f"run folder: {run_dir}\n{plan.topology!r}\n{text}", file=sys.stderr)


class _TrainingInputs(NamedTuple):
    """What every algorithm of a run shares: model, loss, initial models, key, schedules, data."""

    model: Any
    loss_fn: Callable
    params0: Any
    run_key: jax.Array
    edge_schedule: Callable
    node_schedule: Callable
    runtime: Any
    eval_fn: Callable
    eval_data: tuple
    train: NodeData  # with split_per_seed and several seeds: [seeds, N, M, ...], one split per seed
    mean_count: float | list  # mean samples per node; per seed with split_per_seed
    per_seed_data: bool


def _training_inputs(plan: _RunPlan) -> _TrainingInputs:
    """Build the model, loss, initial node models (same for every algorithm), schedules and data."""
    from ecl_jax import models

    config, data = plan.config, plan.data
    model = models.get_model(config.model, num_classes=data.num_classes)
    params0, run_keys = [], []
    for seed in _seeds(config) or [config.seed]:  # seed s: initial models and the run's key from PRNGKey(s)
        init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
        params0.append(models.init_node_params(model, init_key, config.n_nodes, data.input_shape,
                                               same_init=config.same_init))
        run_keys.append(run_key)
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs) if len(xs) > 1 else xs[0]
    return _TrainingInputs(
        model=model,
        loss_fn=models.classification_loss(model, l2=config.l2),
        params0=stack(params0),
        run_key=stack(run_keys),
        edge_schedule=_edge_schedule(config),
        node_schedule=masks.AllNodes() if config.node_prob >= 1 else masks.BernoulliNodes(config.node_prob),
        runtime=runtime_from_string(config.runtime, config.n_nodes),
        eval_fn=make_eval_fn(model, min(config.eval_batch, len(data.y_test))),
        eval_data=(jnp.asarray(data.x_test), jnp.asarray(data.y_test)),
        train=NodeData(*(jnp.asarray(a) for a in stack_splits([d.train for d in plan.splits]))),
        mean_count=[float(np.mean(np.asarray(d.train.count))) for d in plan.splits],
        per_seed_data=len(plan.splits) > 1,
    )


def _edge_schedule(config: RunConfig):
    """The config's edge schedule, on a changing graph only over the step's edges
    (:class:`~ecl_jax.masks.ChangingGraph`)."""
    schedule = masks.edge_schedule_from_string(config.edge_schedule)
    graph = graph_schedule(config)
    return schedule if graph is None else masks.ChangingGraph(graph, schedule)


def _seeds(config: RunConfig) -> list[int] | None:
    """The seeds of a batch of runs (``seeds`` > 1: seed, seed + 1, ...), else None (one run)."""
    return None if config.seeds == 1 else [config.seed + r for r in range(config.seeds)]


LONG_RUN_S = 600.0
"""A run estimated to take longer than this (10 min) says so before it starts (docs/outputs.md#long-runs)."""

TIMED_CARRY_MAX_BYTES = 1 << 30
"""Above this carry size the run is not timed up front (timing holds a second copy of the carry)."""


def _about(seconds: float) -> str:
    """A duration in words: ``14 min``, ``2 h 05 min``."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def _announce_long_run(engine: Engine, carry, train: NodeData, eval_data, plan: _RunPlan, left: dict[str, int]) -> None:
    """Time one chunk of the first algorithm (:meth:`Engine.time_chunk`) and, when all the
    steps left would take more than :data:`LONG_RUN_S`, say so on stderr before the run
    starts (also with --quiet). Only runs long enough for the timing to cost little are
    timed: a python-loop plan with 50 steps left or more (it times 3 steps), a scan plan
    with 20 chunks left or more (it times one)."""
    total, every = sum(left.values()), plan.config.eval_every
    python = engine.plan(carry, train).loop == "python"
    nbytes = tree_bytes(carry)
    if total < (50 if python else 20 * every) or nbytes > TIMED_CARRY_MAX_BYTES:
        return
    per_step = engine.time_chunk(carry, train, plan.config.steps, eval_data) / every
    estimate = per_step * total
    if estimate <= LONG_RUN_S:
        return
    first = next(iter(left))
    others = "" if len(left) == 1 else f"; the other {len(left) - 1} assumed as costly as {first}"
    print(f"note: this run takes about {_about(estimate)}: {total:,} steps left over {len(left)} "
          f"algorithm{'s' * (len(left) > 1)} at {per_step:.3g} s per step with evaluation, timed on {first} on "
          f"this machine{others}. Ctrl-C stops it; the same command resumes from the last checkpoint.",
          file=sys.stderr, flush=True)


def _run_algorithm(plan: _RunPlan, inputs: _TrainingInputs, algorithm, *, quiet: bool,
                   stop: StopAfter | None, announce: dict[str, int] | None = None) -> list[dict]:
    """One algorithm, resumed from its checkpoint if there is one, as one :meth:`Engine.run`; its history.

    ``announce``: {algorithm: steps left} of the whole run, given with its first
    algorithm: time it first and say so if the run is long (:func:`_announce_long_run`)."""
    config, name = plan.config, algorithm.name
    points = plan.grids[name]
    tags = _run_tags(config, points)
    engine = Engine(
        algorithm, plan.topology, inputs.loss_fn, batch_size=config.batch_size,
        epoch_samples=config.epoch_samples or None, edge_schedule=inputs.edge_schedule,
        node_schedule=inputs.node_schedule, eval_every=config.eval_every, eval_fn=inputs.eval_fn,
        runtime=inputs.runtime, runs=None if tags is None else len(tags), data_per_run=inputs.per_seed_data,
    )
    params0, run_key = (_over_points(t, len(points), config.seeds) for t in (inputs.params0, inputs.run_key))
    train = _over_points(inputs.train, len(points), config.seeds) if inputs.per_seed_data else inputs.train
    mean_count = inputs.mean_count * len(points) if inputs.per_seed_data else inputs.mean_count[0]  # run r: seed r % seeds
    hyper = ({k: np.array([p[k] for p in points for _ in range(config.seeds)]) for k in _varying(points)}
             if len(points) > 1 else None)
    ckpt = plan.run_dir / "checkpoints" / f"{name}.npz"
    carry, history, wall0, saved_step = None, [], 0.0, None
    if ckpt.exists():
        carry, history, wall0 = load_checkpoint(ckpt, engine.init(params0, run_key, hyper),
                                                plan.fingerprints[name])
        saved_step = steps_done(carry)
        if not quiet:
            print(f"[{name}] resuming from step {saved_step}", file=sys.stderr)
    template = carry if carry is not None else jax.eval_shape(engine.init, params0, run_key, hyper)
    if not quiet:
        print(f"[{name}] plan: {engine.plan(template, train)}", file=sys.stderr)
    if announce:
        if carry is None:
            carry = engine.init(params0, run_key, hyper)  # the run continues from it
        _announce_long_run(engine, carry, train, inputs.eval_data, plan, announce)
    progress = Progress(name, config.steps, quiet)
    recorder = Recorder(name, config, mean_count, history, wall0, runs=tags, message_bytes=engine.message_bytes(template))
    checkpointer = Checkpointer(ckpt, recorder, every=config.checkpoint_every, total_steps=config.steps,
                                fingerprint=plan.fingerprints[name], saved_step=saved_step)
    labels = None if tags is None else [_run_label(t) for t in tags]
    callbacks = [DivergenceCheck(algorithm, checkpointer, runs=labels), recorder, progress, checkpointer, StopOnInterrupt()]
    if stop is not None:
        callbacks.append(stop)
    engine.run(params0, train, config.steps, run_key, eval_data=inputs.eval_data, carry=carry,
               callbacks=callbacks, hyperparams=hyper)
    return recorder.history


def _over_points(tree, points: int, seeds: int):
    """The seeds' initial models or keys (a leading seed axis when ``seeds`` > 1) repeated
    for every point of a sweep: run r = point g, seed s with r = g * seeds + s."""
    if points == 1:
        return tree
    repeat = (lambda x: jnp.stack([x] * points)) if seeds == 1 else (lambda x: jnp.concatenate([x] * points))
    return jax.tree_util.tree_map(repeat, tree)


def _finish(plan: _RunPlan, histories: dict[str, list[dict]]) -> RunResult:
    """``metrics.csv``, the figures and ``final.json`` of every algorithm in the folder."""
    from ecl_jax import plotting

    config, run_dir = plan.config, plan.run_dir
    write_metrics_csv(run_dir / "metrics.csv", histories, config.n_nodes)
    plots = plotting.plot_run(run_dir, records.lines(histories), title=_title(config, plan.topology),
                              x_axis=config.x_axis, published=config.published, published_note=config.published_note)
    final = _last_points(histories)
    records.write_final(run_dir / "final.json", final)
    return RunResult(run_dir, histories, final, plots)


def _last_points(histories: dict[str, list[dict]]) -> dict[str, dict | list[dict]]:
    """Each line's last metric point (an algorithm, or one point of its sweep:
    :func:`ecl_jax.records.lines`; what final.json and the printed table show; with seeds,
    every seed's row: :func:`ecl_jax.records.last_points`)."""
    return {k: records.last_points(h) for k, h in records.lines(histories).items() if h}


def _title(config: RunConfig, topology) -> str:
    return (f"{config.dataset}, {config.model}, {topology.name} (N={config.n_nodes}), "
            f"{config.partition} split, edges {config.edge_schedule}"
            + ("" if config.runtime == "lockstep" else f", runtime {config.runtime.partition(':')[0]}"))
