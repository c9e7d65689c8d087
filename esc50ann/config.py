"""Pipeline files: ``pipelines/*.toml`` read, checked and resolved into one ``PipelineConfig``.

A pipeline file has a ``name``, a one-line ``description`` and five tables::

    name = "default"
    description = "what it is for"
    [dataset]     source, subset ("esc50" | "esc10"), folds, sha256; for other datasets
                  metadata, audio_dir, file_column, label_column, fold_column, group_column,
                  group_pattern, n_folds (``esc50ann.layouts.Settings``)
    [features]    the fields of ``esc50ann.features.FeatureConfig``
    [model]       network shape: hidden_layer_sizes, activation, output, loss, input_bias,
                  n_networks (an ensemble), ensemble ("independent" | "snapshots")
    [training]    solver, learning_rate, lr_schedule, lr_floor, warmup_epochs, lr_step_every,
                  lr_step_factor, momentum, epsilon, clip_norm (0: off), average_epochs,
                  batch_size, max_epochs, weight_decay, mixup, patience (0: off), standardize,
                  dtype, random_state
    [evaluation]  validation ("auto" | "none"), refit, n_jobs

Every key is optional (a missing key takes its default), but an unknown key or a value of the
wrong type is an error naming the key and the file: a typo never falls back silently. Values
are checked by the same constraint tables the objects use themselves (``esc50ann.params``):
``FeatureConfig``'s, ``ANNClassifier``'s and the two sections' below.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from esc50ann.errors import ConfigError
from esc50ann.layouts import Settings
from esc50ann.recipe import FeatureConfig
from esc50ann.model import ANNClassifier, default_params
from esc50ann.params import Boolean, InstanceOf, Integral, Interval, ListOf, Options, Pattern, reject_unknown, validate

SECTIONS = ("dataset", "features", "model", "training", "evaluation")
# Which estimator parameters each section sets (ANNClassifier's constraint table checks them).
MODEL_KEYS = ("hidden_layer_sizes", "activation", "output", "loss", "input_bias", "n_networks", "ensemble")
TRAINING_KEYS = ("solver", "learning_rate", "lr_schedule", "lr_floor", "warmup_epochs", "lr_step_every",
                 "lr_step_factor", "momentum", "epsilon", "clip_norm", "average_epochs", "batch_size",
                 "max_epochs", "weight_decay", "mixup",
                 "patience", "standardize", "dtype", "random_state")


@dataclass(frozen=True)
class DatasetSection(Settings):
    """``[dataset]``: which dataset and which clips; the keys of ``esc50ann.layouts.Settings`` say
    how to read one that is not ESC-50 (so this section is what ``dataset.prepare`` takes)."""

    source: str | None = None  # URL, zip or folder; None = the CLI/env/default source
    subset: str = "esc50"  # "esc50" or "esc10"
    folds: tuple[int, ...] = ()  # test folds to run; () = every fold the metadata lists
    sha256: str | None = None  # optional checksum of the downloaded archive

    _constraints = {
        **Settings._constraints,
        "source": [InstanceOf(str), None],
        "subset": [Options("esc50", "esc10")],
        "folds": [ListOf(Interval(Integral, 1))],
        "sha256": [Pattern(r"[0-9a-fA-F]{64}", "64 hexadecimal digits"), None],
    }

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "folds", tuple(self.folds))


@dataclass(frozen=True)
class EvaluationSection:
    validation: str = "auto"  # "auto": a whole training fold drives early stopping; "none"
    refit: bool = True  # after early stopping, retrain on train+validation for the best epoch count
    n_jobs: int = 1  # folds trained in parallel; -1: all cores (esc50ann.parallel.n_processes)

    _constraints = {
        "validation": [Options("auto", "none")],
        "refit": [Boolean()],
        "n_jobs": [Interval(Integral)],  # any: 0 none, -1 all cores, capped at the cores
    }

    def __post_init__(self):
        validate(asdict(self), self._constraints)


@dataclass(frozen=True)
class PipelineConfig:
    """A resolved pipeline: every value explicit, ready to run."""

    name: str = "pipeline"
    description: str = ""
    dataset: DatasetSection = field(default_factory=DatasetSection)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: dict[str, Any] = field(default_factory=dict)  # ANNClassifier params, every MODEL_KEYS one
    training: dict[str, Any] = field(default_factory=dict)  # ANNClassifier params, every TRAINING_KEYS one
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    source_file: str | None = None  # the pipeline file it was read from

    def estimator_params(self) -> dict[str, Any]:
        """The ``ANNClassifier`` keyword arguments: [model] and [training] merged."""
        params = {**self.model, **self.training}
        if "hidden_layer_sizes" in params:
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        return params

    def to_doc(self) -> dict[str, Any]:
        """The pipeline as a document of the file's shape (``from_dict`` reads it back)."""
        dataset = asdict(self.dataset)
        dataset["folds"] = list(dataset["folds"])
        return {
            "name": self.name,
            "description": self.description,
            "dataset": dataset,
            "features": self.features.to_dict(),
            "model": dict(self.model),
            "training": dict(self.training),
            "evaluation": asdict(self.evaluation),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (what a run's metrics.json records)."""
        return {**self.to_doc(), "source_file": self.source_file}


def builtin_pipelines(kind: str = "pipelines") -> dict[str, Path]:
    """The files shipped with the package: name -> file. ``kind`` ``"pipelines"`` (the
    repository's ``pipelines/``) or ``"sweeps"`` (its ``sweeps/``)."""
    folder = files(f"esc50ann.{kind}")
    return {Path(item.name).stem: Path(str(item)) for item in sorted(folder.iterdir(), key=lambda i: Path(i.name).stem)
            if item.name.endswith(".toml")}


def find(name_or_path: str | Path | None = None, kind: str = "pipelines") -> Path:
    """A pipeline (or, with ``kind="sweeps"``, sweep) file: an existing path as given, else a
    built-in one of that name.

    Raises
    ------
    ConfigError
        Neither a file nor a built-in name; the message lists the built-in names.
    """
    path = Path(name_or_path or "default")
    if path.is_file():
        return path
    builtin = builtin_pipelines(kind)
    # "quick", "quick.toml" and "pipelines/quick.toml" (the checkout's path) all name a built-in.
    name = path.stem if path.suffix == ".toml" and path.parent in (Path("."), Path(kind)) else str(path)
    if name in builtin:
        return builtin[name]
    noun = kind[:-1]
    raise ConfigError(f"{name_or_path}: {noun} file not found (built-in {kind}: {', '.join(builtin)})")


def load(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline file.

    Raises
    ------
    ConfigError
        Missing file, invalid TOML, unknown key, wrong type or invalid value; the message names
        the file and the key.
    """
    return from_dict(read_toml(path, "pipeline"), where=str(path))


def read_toml(path: str | Path, kind: str) -> dict[str, Any]:
    """The TOML document in ``path`` (a ``kind`` file: "pipeline", "sweep").

    Raises
    ------
    ConfigError
        Missing or unreadable file, not UTF-8, invalid TOML; the message names the file.
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} file not found") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read {kind} file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def from_dict(doc: dict[str, Any], where: str = "<config>") -> PipelineConfig:
    """Check a parsed pipeline document (see module docstring) and resolve it."""
    reject_unknown(doc, {*SECTIONS, "name", "description"}, where=f"{where}: ")
    for name in SECTIONS:
        if not isinstance(doc.get(name, {}), dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
    name = doc.get("name", Path(where).stem if where != "<config>" else "pipeline")
    description = doc.get("description", "")
    validate({"name": name, "description": description},
             {"name": [InstanceOf(str)], "description": [InstanceOf(str)]}, where=f"{where}: ")
    config = PipelineConfig(
        name=name,
        description=description,
        dataset=_section(DatasetSection, doc.get("dataset", {}), where, "dataset"),
        features=_section(FeatureConfig, doc.get("features", {}), where, "features"),
        model=_estimator_section(MODEL_KEYS, doc.get("model", {}), where, "model"),
        training=_estimator_section(TRAINING_KEYS, doc.get("training", {}), where, "training"),
        evaluation=_section(EvaluationSection, doc.get("evaluation", {}), where, "evaluation"),
        source_file=where,
    )
    # Settings that cannot go together are refused here, before any clip is read, as at fit.
    stopping = config.evaluation.validation == "auto" and config.training["patience"] is not None
    try:
        ANNClassifier(**config.estimator_params())._check_combination(stopping=stopping, part=False)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config


def override(config: PipelineConfig, values: dict[str, Any], *, where: str | None = None) -> PipelineConfig:
    """A copy of ``config`` with dotted keys set, checked exactly as a pipeline file is.

    Parameters
    ----------
    config : PipelineConfig
    values : dict
        ``"section.key" -> value`` (``"training.learning_rate": 0.01``); ``"name"`` for the name.
    where : str, optional
        What error messages name as the origin of the values (say ``"--set"`` or a sweep file);
        default the pipeline's own file.

    Raises
    ------
    ConfigError
        An unknown section or key, a wrong type or an invalid value, naming the key.
    """
    where = where or config.source_file or "<config>"
    doc = config.to_doc()
    for dotted, value in values.items():
        section, _, key = dotted.rpartition(".")
        if not section and key in ("name", "description"):
            doc[key] = value
        elif section in SECTIONS and key:
            doc[section][key] = value
        else:
            raise ConfigError(f"{where}: unknown key '{dotted}' (expected name or section.key with a section "
                              f"of {', '.join(SECTIONS)})")
    return replace(from_dict(doc, where=where), source_file=config.source_file)


def _section(cls, table: dict, where: str, section: str):
    """``cls(**table)``: unknown keys refused, values checked by ``cls``'s own constraints."""
    reject_unknown(table, cls._constraints, where=f"{where}: ", prefix=f"{section}.")
    try:
        return cls(**table)
    except ConfigError as exc:  # names the key; add the file and the section
        raise ConfigError(f"{where}: {section}.{exc}") from None


def _estimator_section(keys: tuple[str, ...], table: dict, where: str, section: str) -> dict:
    """The table, checked against ``ANNClassifier``'s constraints, every key of ``keys`` resolved
    (a missing one takes the estimator's default). TOML has no None: ``patience = 0`` and
    ``clip_norm = 0`` stand for the estimator's None (no early stopping, no clipping)."""
    reject_unknown(table, keys, where=f"{where}: ", prefix=f"{section}.")
    for key, types in (("patience", (int,)), ("clip_norm", (int, float))):
        if type(table.get(key)) in types and table[key] == 0:
            table = {**table, key: None}
    validate(table, ANNClassifier._parameter_constraints, where=f"{where}: {section}.")
    defaults = default_params()
    return {key: table.get(key, defaults[key]) for key in keys}
