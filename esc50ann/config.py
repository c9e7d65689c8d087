"""Pipeline files: ``pipelines/*.toml`` read, checked and resolved into one ``PipelineConfig``.

A pipeline file has a ``name`` and five tables::

    name = "default"
    [dataset]     source, subset ("esc50" | "esc10"), folds, sha256
    [features]    the fields of ``esc50ann.features.FeatureConfig``
    [model]       network shape: hidden_layer_sizes, activation, output, loss, input_bias
    [training]    solver, learning_rate, momentum, batch_size, max_epochs, weight_decay,
                  patience, standardize, dtype, random_state
    [evaluation]  validation ("auto" | "none"), refit, n_jobs

Every key is optional (a missing key takes its default), but an unknown key or a value of
the wrong type is an error naming the key and the file: a typo never falls back silently.
"""
from __future__ import annotations

import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from esc50ann.errors import ConfigError
from esc50ann.features import FeatureConfig

# Accepted TOML types per key, for the sections that feed the estimator.
# (The estimator validates values; this layer only guarantees names and types.)
MODEL_KEYS: dict[str, tuple[type, ...]] = {
    "hidden_layer_sizes": (list,),
    "activation": (str,),
    "output": (str,),
    "loss": (str,),
    "input_bias": (bool,),
}
TRAINING_KEYS: dict[str, tuple[type, ...]] = {
    "solver": (str,),
    "learning_rate": (float, int),
    "momentum": (float, int),
    "batch_size": (int,),
    "max_epochs": (int,),
    "weight_decay": (float, int),
    "patience": (int,),  # 0 disables early stopping
    "standardize": (bool,),
    "dtype": (str,),
    "random_state": (int,),
}


@dataclass(frozen=True)
class DatasetSection:
    source: str | None = None  # URL, zip or folder; None = the CLI/env/default source
    subset: str = "esc50"  # "esc50" or "esc10"
    folds: tuple[int, ...] = ()  # test folds to run; () = every fold the metadata lists
    sha256: str | None = None  # optional checksum of the downloaded archive


@dataclass(frozen=True)
class EvaluationSection:
    validation: str = "auto"  # "auto": a whole training fold drives early stopping; "none"
    refit: bool = True  # after early stopping, retrain on train+validation for the best epoch count
    n_jobs: int = 1  # folds trained in parallel


@dataclass(frozen=True)
class PipelineConfig:
    """A resolved pipeline: every value explicit, ready to run."""

    name: str = "pipeline"
    dataset: DatasetSection = field(default_factory=DatasetSection)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: dict[str, Any] = field(default_factory=dict)  # ANNClassifier params
    training: dict[str, Any] = field(default_factory=dict)  # ANNClassifier params
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    source_file: str | None = None  # the pipeline file it was read from

    def estimator_params(self) -> dict[str, Any]:
        """The ``ANNClassifier`` keyword arguments: [model] and [training] merged."""
        params = {**self.model, **self.training}
        if "hidden_layer_sizes" in params:
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        if params.get("patience") == 0:
            params["patience"] = None
        return params

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (what a run's metrics.json records)."""
        return {
            "name": self.name,
            "dataset": asdict(self.dataset),
            "features": self.features.to_dict(),
            "model": dict(self.model),
            "training": dict(self.training),
            "evaluation": asdict(self.evaluation),
            "source_file": self.source_file,
        }


def load(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline file.

    Raises
    ------
    ConfigError
        Missing file, invalid TOML, unknown key, wrong type or invalid value; the message names
        the file and the key.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipeline file not found") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read pipeline file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return from_dict(doc, where=str(path))


def from_dict(doc: dict[str, Any], where: str = "<config>") -> PipelineConfig:
    """Check a parsed pipeline document (see module docstring) and resolve it."""
    sections = {"dataset", "features", "model", "training", "evaluation"}
    _reject_unknown(doc, sections | {"name"}, where, "")
    for name in sections:
        if not isinstance(doc.get(name, {}), dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
    name = doc.get("name", Path(where).stem if where != "<config>" else "pipeline")
    _check_type(name, (str,), where, "name")

    dataset = _dataclass_section(DatasetSection, doc.get("dataset", {}), where, "dataset")
    if dataset.subset not in ("esc50", "esc10"):
        raise ConfigError(f"{where}: dataset.subset must be 'esc50' or 'esc10', not {dataset.subset!r}")
    evaluation = _dataclass_section(EvaluationSection, doc.get("evaluation", {}), where, "evaluation")
    if evaluation.validation not in ("auto", "none"):
        raise ConfigError(f"{where}: evaluation.validation must be 'auto' or 'none', not {evaluation.validation!r}")
    if evaluation.n_jobs == 0 or evaluation.n_jobs < -1:
        raise ConfigError(f"{where}: evaluation.n_jobs must be a positive number of processes or -1 (all cores), "
                          f"not {evaluation.n_jobs}")
    features = _dataclass_section(FeatureConfig, doc.get("features", {}), where, "features")
    model = _keyed_section(MODEL_KEYS, doc.get("model", {}), where, "model")
    training = _keyed_section(TRAINING_KEYS, doc.get("training", {}), where, "training")
    config = PipelineConfig(name=name, dataset=dataset, features=features, model=model,
                            training=training, evaluation=evaluation, source_file=where)
    _check_estimator_params(config, where)
    return config


def _reject_unknown(table: dict, allowed: set[str], where: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' (expected one of: {', '.join(sorted(allowed))})")


def _check_type(value: Any, types: tuple[type, ...], where: str, key: str) -> None:
    # bool is an int in Python; a TOML `true` is never a valid number here.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        expected = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: {key} must be {expected}, not {type(value).__name__} {value!r}")


def _hint_types(hint) -> tuple[type, ...]:
    """TOML types accepted for a dataclass field annotation (int | None -> (int,), float -> (float, int))."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
    types: list[type] = []
    for arg in args:
        if arg is type(None):
            continue
        origin = typing.get_origin(arg) or arg
        types.append(list if origin in (tuple, list) else origin)
        if origin is float:
            types.append(int)
    return tuple(types)


def _dataclass_section(cls, table: dict, where: str, section: str):
    hints = typing.get_type_hints(cls)
    _reject_unknown(table, {f.name for f in fields(cls)}, where, f"{section}.")
    values = {}
    for key, value in table.items():
        _check_type(value, _hint_types(hints[key]), where, f"{section}.{key}")
        values[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: [{section}] {exc}") from None


def _keyed_section(schema: dict[str, tuple[type, ...]], table: dict, where: str, section: str) -> dict:
    _reject_unknown(table, set(schema), where, f"{section}.")
    for key, value in table.items():
        _check_type(value, schema[key], where, f"{section}.{key}")
    return dict(table)


def _check_estimator_params(config: PipelineConfig, where: str) -> None:
    """Let the estimator's own up-front validation judge the values, naming the file."""
    from esc50ann.model import ANNClassifier

    try:
        ANNClassifier(**config.estimator_params())._validate_params()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
