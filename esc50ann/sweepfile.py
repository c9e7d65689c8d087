"""Sweep files: a base pipeline and the values to try for any of its dotted keys, read and checked.

    pipeline = "default"                 # a built-in name, or a file (relative to the sweep file)
    mode = "grid"                        # or "random" (then n_samples and seed)
    [values]
    "training.learning_rate" = [1e-4, 3e-4, 1e-3]
    "model.hidden_layer_sizes" = [[512], [1024]]
    "training.weight_decay" = { loguniform = [1e-5, 1e-2] }   # random mode only (also uniform)

Every value is checked as a pipeline file checks it (``esc50ann.config``); ``Sweep`` holds the
resolved configurations. Running them is ``esc50ann.sweep``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esc50ann import config as config_mod
from esc50ann.errors import ConfigError
from esc50ann.params import InstanceOf, Integral, Interval, Options, reject_unknown, validate

RANGES = ("loguniform", "uniform")
# More configurations than any real search tries (each is a nested CV: folds x folds fits), and
# refused before one is built: a grid of a million took over an hour just to set up.
MAX_CONFIGURATIONS = 10_000
_CONSTRAINTS = {
    "pipeline": [InstanceOf(str)],
    "mode": [Options("grid", "random")],
    "n_samples": [Interval(Integral, 1, MAX_CONFIGURATIONS), None],
    "seed": [Interval(Integral, 0)],
    "cluster": [InstanceOf(str), None],
    "name": [InstanceOf(str), None],
}


# --------------------------------------------------------------------------- the sweep file

@dataclass
class Sweep:
    """A parsed, checked sweep: the base pipeline and the configurations to try.

    ``configurations[k]`` maps dotted keys to values; ``pipelines[k]`` is the resolved
    ``PipelineConfig`` for it.
    """

    name: str
    base: config_mod.PipelineConfig
    values: dict[str, Any]
    mode: str = "grid"
    n_samples: int | None = None
    seed: int = 0
    cluster: str | None = None
    source_file: str | None = None
    configurations: list[dict[str, Any]] = field(default_factory=list)
    pipelines: list[config_mod.PipelineConfig] = field(default_factory=list, repr=False)

    def __repr__(self):
        return (f"Sweep({self.name!r}: {len(self.configurations)} configurations of {self.base.name!r} "
                f"over {', '.join(self.values)}; {self.mode})")

    @classmethod
    def from_toml(cls, path) -> "Sweep":
        """Read and check a sweep file, or a built-in sweep by name (see the module docstring)."""
        path = config_mod.find(path, "sweeps")
        return cls.from_dict(config_mod.read_toml(path, "sweep"), where=str(path), folder=path.parent)

    @classmethod
    def from_dict(cls, doc: dict, *, where: str = "<sweep>", folder: Path | None = None) -> "Sweep":
        reject_unknown(sorted(doc), {*_CONSTRAINTS, "values"}, where=f"{where}: ")
        settings = {"pipeline": "default", "mode": "grid", "n_samples": None, "seed": 0, "cluster": None,
                    "name": None, **{k: v for k, v in doc.items() if k != "values"}}
        validate(settings, _CONSTRAINTS, where=f"{where}: ")
        base_path = Path(settings["pipeline"])
        if folder is not None and not base_path.is_absolute() and (folder / base_path).is_file():
            base_path = folder / base_path
        base = config_mod.load(config_mod.find(base_path))
        values = _flatten(doc.get("values"), where)
        if settings["mode"] == "random" and settings["n_samples"] is None:
            raise ConfigError(f"{where}: n_samples: random mode needs the number of configurations to draw")
        sweep = cls(name=settings["name"] or Path(where).stem, base=base, values=values, mode=settings["mode"],
                    n_samples=settings["n_samples"], seed=settings["seed"], cluster=settings["cluster"],
                    source_file=where)
        sweep.configurations = (_grid(values, where) if sweep.mode == "grid"
                                else _sample(values, sweep.n_samples, sweep.seed))
        for key, options in values.items():  # every listed value checked as a pipeline file checks it
            for value in options if isinstance(options, list) else []:
                config_mod.override(base, {key: value}, where=f"{where}: values")
        sweep.pipelines = [config_mod.override(base, c, where=f"{where}: values") for c in sweep.configurations]
        return sweep


def _flatten(table, where) -> dict[str, Any]:
    """``[values]`` as dotted key -> list of values or range table; nested tables flattened."""
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: [values] must be a table with at least one key to sweep")
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and not (set(value) & set(RANGES)):
                walk(dotted + ".", value)
            else:
                flat[dotted] = _check_values(dotted, value, where)

    walk("", table)
    return flat


def _check_values(key, value, where):
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: values.{key}: empty list, nothing to try")
        if len(value) > MAX_CONFIGURATIONS:
            raise ConfigError(f"{where}: values.{key}: {len(value):,} values, more than the {MAX_CONFIGURATIONS:,} "
                              "configurations a sweep may have; split it into several sweep files")
        return value
    if isinstance(value, dict):
        kind, = value.keys() if len(value) == 1 else (None,)
        bounds = value.get(kind)
        if (kind not in RANGES or not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not bounds[0] < bounds[1] or (kind == "loguniform" and bounds[0] <= 0)):
            raise ConfigError(f"{where}: values.{key}: a range is {{ loguniform = [low, high] }} or "
                              "{ uniform = [low, high] } with low < high (and low > 0 for loguniform)")
        return value
    raise ConfigError(f"{where}: values.{key}: expected a list of values or a range, not {type(value).__name__}")


def _grid(values, where) -> list[dict[str, Any]]:
    ranges = [k for k, v in values.items() if isinstance(v, dict)]
    if ranges:
        raise ConfigError(f"{where}: values.{ranges[0]}: a range needs mode = \"random\" (a grid takes lists)")
    keys = list(values)
    size = math.prod(len(values[k]) for k in keys)  # counted before anything is built
    if size > MAX_CONFIGURATIONS:
        raise ConfigError(f"{where}: the grid has {size:,} configurations ({' x '.join(str(len(values[k])) for k in keys)}), "
                          f"more than the {MAX_CONFIGURATIONS:,} a sweep may have; try mode = \"random\" with "
                          "n_samples, or split it into several sweep files")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))]


def _sample(values, n, seed) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    configurations = []
    for _ in range(n):
        config = {}
        for key, options in values.items():
            if isinstance(options, list):
                config[key] = options[int(rng.integers(len(options)))]
                continue
            (kind, (low, high)), = options.items()
            x = math.exp(rng.uniform(math.log(low), math.log(high))) if kind == "loguniform" else rng.uniform(low, high)
            config[key] = int(round(x)) if isinstance(low, int) and isinstance(high, int) else float(x)
        configurations.append(config)
    return configurations
