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

__all__ = ["RunConfig", "ConfigError", "apply_overrides", "load_config", "config_to_dict", "ALGORITHM_OPTIONS"]


class ConfigError(ValueError):
    """A bad configuration key or value; the message lists what is valid."""


# Options each algorithm accepts in ``RunConfig.options[<algorithm>]`` (name -> type).
ALGORITHM_OPTIONS: dict[str, type] = {
    "lr": float,
    "eta": float,
    "theta": float,
    "rho": float,
    "eta_rule": str,
    "K": int,
    "c": float,
    "fan_in_scaling": bool,
    "dual_smoothing": bool,
    "gradient_coefficient": bool,
    "eta_follows_lr": bool,
    "momentum": float,
    "isvr_rule": str,
}


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
    random_regular | exponential | icml21_random), ``n_nodes``, ``degree`` (random
    regular), ``edge_prob`` (Erdos-Renyi), ``hops`` (multiplex ring).
    Asynchrony: ``edge_schedule`` (e.g. "bernoulli:K=8", "slots:K=8",
    "round_robin:interval=6", "always"), ``node_prob`` (probability a node computes).
    Training: ``algorithms``, ``lr`` (1/mu for ECL), ``eta``, ``K`` (ISVR round
    length), ``batch_size``, ``steps``, ``eval_every``, ``l2``, ``options`` per algorithm.
    ``partition_replace``: with ``classes``/``kdd20_*`` splits every holder of a class
    gets all its samples (the KDD20 code's with-replacement class sampling).
    ``lr_decay``/``lr_decay_every``: step decay lr * lr_decay^floor(step / lr_decay_every)
    for every algorithm (0 = constant lr).
    ``published``: published final values drawn as dashed lines on the plots,
    ``{"test_acc": {"dsgd": 0.654, ...}, "test_loss": {...}}`` (annotation only).
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
    n_nodes: int = 16
    degree: int = 4
    edge_prob: float = 0.3
    hops: int = 2
    edge_schedule: str = "bernoulli:K=4"
    node_prob: float = 1.0
    algorithms: tuple[str, ...] = ("ecl-pdmm", "ecl-admm", "gossip", "centralized")
    lr: float = 0.05
    eta: float = 1.0
    K: int = 8
    batch_size: int = 32
    steps: int = 2000
    eval_every: int = 100
    l2: float = 0.0
    same_init: bool = True
    seed: int = 0
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

    def __post_init__(self):
        positive = ("n_nodes", "batch_size", "eval_every", "K", "checkpoint_every", "eval_batch", "degree", "hops", "partition_k")
        for f in positive:
            v = getattr(self, f)
            if v is None and f == "partition_k":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{f} must be a positive integer, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"steps must be a non-negative integer, got {self.steps!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if isinstance(self.lr_decay_every, bool) or not isinstance(self.lr_decay_every, int) or self.lr_decay_every < 0:
            raise ConfigError(f"lr_decay_every must be a non-negative integer (steps; 0 = no decay), got {self.lr_decay_every!r}")
        if not 0 < self.node_prob <= 1:
            raise ConfigError(f"node_prob must be in (0, 1], got {self.node_prob!r}")
        if self.x_axis not in ("epoch", "round", "step"):
            raise ConfigError(f"x_axis must be 'epoch', 'round' (= step / K) or 'step', got {self.x_axis!r}")
        if not self.algorithms:
            raise ConfigError("algorithms is empty; give at least one, e.g. ecl-pdmm")
        for algo, opts in self.options.items():
            if not isinstance(opts, dict):
                raise ConfigError(f"options[{algo!r}] must be a dict of option -> value, got {opts!r}")
            for k in opts:
                if k not in ALGORITHM_OPTIONS:
                    raise ConfigError(f"unknown option {algo}.{k}; valid options: {sorted(ALGORITHM_OPTIONS)}")


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


def apply_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """Apply ``key=value`` strings (``algo.option=value`` for per-algorithm options)."""
    types_ = _field_types()
    changes: dict[str, Any] = {}
    options = {k: dict(v) for k, v in config.options.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if "." in key:
            algo, opt = key.split(".", 1)
            if opt not in ALGORITHM_OPTIONS:
                raise ConfigError(f"unknown algorithm option {opt!r} in {key!r}; valid options: {sorted(ALGORITHM_OPTIONS)}")
            options.setdefault(algo, {})[opt] = _parse_value(key, raw, ALGORITHM_OPTIONS[opt])
            continue
        if key not in types_:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {sorted(types_)}")
        changes[key] = _parse_value(key, raw, types_[key])
    return dataclasses.replace(config, options=options, **changes)


def load_config(path: str | None) -> RunConfig:
    """Load ``CONFIG`` from an experiment file (``None`` = the default config)."""
    if path is None:
        return RunConfig()
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"ecl_jax_experiment_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = getattr(module, "CONFIG", None)
    if not isinstance(config, RunConfig):
        raise ConfigError(f"{p} must define CONFIG = ecl_jax.config.RunConfig(...); found {type(config).__name__}")
    return config


def config_to_dict(config: RunConfig) -> dict:
    """JSON-friendly dict of a config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))
