"""Parameter constraints: one declarative way to say what a setting may hold.

Every settings object of the package declares a table ``{name: [constraint, ...]}`` in the
manner of scikit-learn's ``_parameter_constraints`` -- the feature configuration
(``FeatureConfig``), the estimator (``ANNClassifier``), the pipeline file's sections and a model
file's header -- and checks values with :func:`validate`: a value is valid when any one
constraint of its list accepts it. The error names the key and says what it must be::

    validate({"n_mels": 0}, {"n_mels": [Interval(Integral, 1, None)]})
    # ConfigError: n_mels must be an integer >= 1 (got 0)

A ``bool`` is never taken for a number (``True`` is an ``int`` in Python, not in a config file).
The same vocabulary describes the JSON files the package reads back (``Document``): their shape
is checked in one place per kind of file before any field is used.
"""
from __future__ import annotations

import math
import re
from numbers import Integral, Real
from typing import Any, Iterable

import numpy as np

from esc50ann.errors import ConfigError

__all__ = ["Interval", "Options", "Boolean", "InstanceOf", "ListOf", "DictOf", "Pattern", "Document", "validate",
           "reject_unknown", "Integral", "Real"]


class Interval:
    """A number of type ``kind`` (``Integral`` or ``Real``) between ``low`` and ``high``.

    ``closed`` says which ends belong to it: ``"both"``, ``"left"``, ``"right"`` or ``"neither"``;
    ``None`` for an end means unbounded. A ``Real`` must be finite.
    """

    def __init__(self, kind, low=None, high=None, *, closed="both"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.kind):
            return False
        if self.kind is Real and not math.isfinite(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        noun = "an integer" if self.kind is Integral else "a float"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        if self.low is not None and self.high is not None:
            return f"{noun} in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if left == '[' else '>'} {self.low}"
        if self.high is not None:
            return f"{noun} {'<=' if right == ']' else '<'} {self.high}"
        return noun


class Options:
    """One of the given values (strings mostly), of the same type: ``True`` is not ``1``."""

    def __init__(self, *choices):
        self.choices = tuple(choices)

    def accepts(self, value) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


class Boolean:
    """``True`` or ``False`` (a Python or NumPy bool, never 0 or 1)."""

    def accepts(self, value) -> bool:
        return isinstance(value, (bool, np.bool_))

    def __str__(self) -> str:
        return "a boolean (true or false)"


class InstanceOf:
    """An instance of ``types`` (bools excluded unless ``bool`` is one of them)."""

    def __init__(self, *types: type, description: str | None = None):
        self.types, self.description = types, description

    def accepts(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.description or " or ".join(f"a {t.__name__}" for t in self.types)


class ListOf:
    """A list or tuple of ``min_len`` to ``max_len`` items, each accepted by ``item``."""

    def __init__(self, item, *, min_len: int = 0, max_len: int | None = None):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def accepts(self, value) -> bool:
        return (isinstance(value, (list, tuple)) and self.min_len <= len(value)
                and (self.max_len is None or len(value) <= self.max_len)
                and all(self.item.accepts(v) for v in value))

    def __str__(self) -> str:
        if self.max_len == self.min_len:
            count = f" of {self.min_len}"
        elif self.min_len:
            count = f" of at least {self.min_len}"
        else:
            count = ""
        return f"a list{count} of items that are each {self.item}"


class Pattern:
    """A string matching the regular expression ``regex`` in full."""

    def __init__(self, regex: str, description: str):
        self.regex, self.description = re.compile(regex), description

    def accepts(self, value) -> bool:
        return isinstance(value, str) and self.regex.fullmatch(value) is not None

    def __str__(self) -> str:
        return self.description


class DictOf:
    """A mapping (a JSON object) of string keys to values that one of ``values`` accepts (a
    constraint, or None for the value None)."""

    def __init__(self, *values, description: str | None = None):
        self.values, self.description = values, description

    def accepts(self, value) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and any(_accepts(c, v) for c in self.values)
                                               for k, v in value.items())

    def __str__(self) -> str:
        return self.description or f"an object whose values are each {_describe(self.values)}"


class Document:
    """A JSON object of a known shape: ``required`` keys (each must be present) and ``optional`` ones
    (may be absent), each ``key -> [constraint, ...]`` as ``validate`` takes them; other keys are
    allowed. Every JSON file the package reads back declares one (a cache manifest, a task file,
    a run's metrics, ...) and its reader checks it with ``problem`` before using any field.

    Nest them for objects inside objects: ``Document({"name": [InstanceOf(str)]})``.
    """

    def __init__(self, required: dict[str, list], optional: dict[str, list] | None = None, *,
                 description: str = "an object"):
        self.required, self.optional, self.description = required, optional or {}, description

    def problem(self, doc) -> str | None:
        """What is wrong with ``doc`` in one line (the first thing found), or None."""
        if not isinstance(doc, dict):
            return f"expected {self.description}, got {_json_type(doc)}"
        missing = [key for key in self.required if key not in doc]
        if missing:
            return f"no {missing[0]!r}"
        try:
            validate(doc, {**self.required, **self.optional})
        except ConfigError as exc:
            return str(exc)
        return None

    def accepts(self, value) -> bool:
        return self.problem(value) is None

    def __str__(self) -> str:
        return self.description


def _json_type(value) -> str:
    """The JSON name of a parsed value's type ("an array", "a string", ...)."""
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string"),
                       ((int, float), "a number"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


def _accepts(constraint, value) -> bool:
    return value is None if constraint is None else constraint.accepts(value)


def _describe(constraints) -> str:
    return " or ".join("None" if c is None else str(c) for c in constraints)


def validate(values: dict[str, Any], constraints: dict[str, list], *, where: str = "") -> None:
    """Check every key of ``values`` that ``constraints`` lists.

    Parameters
    ----------
    values : dict
        Name -> value.
    constraints : dict
        Name -> list of accepted forms (constraint objects above, or ``None`` for the value None).
    where : str
        Put in front of the key in the message (say ``"p.toml: training."``).

    Raises
    ------
    ConfigError
        For the first invalid value: ``"{where}{key} must be {forms} (got {value!r})"``;
        its ``key`` attribute holds the key.
    """
    for key, allowed in constraints.items():
        if key in values and not any(_accepts(c, values[key]) for c in allowed):
            error = ConfigError(f"{where}{key} must be {_describe(allowed)} (got {_short(values[key])})")
            error.key = key
            raise error


def reject_unknown(keys: Iterable[str], allowed: Iterable[str], *, where: str = "", prefix: str = "") -> None:
    """Raise ``ConfigError`` naming the first key of ``keys`` that is not in ``allowed``
    (as ``'{prefix}{key}'``, after ``where``)."""
    allowed = sorted(allowed)
    for key in keys:
        if key not in allowed:
            raise ConfigError(f"{where}unknown key '{prefix}{key}' (expected one of: {', '.join(allowed)})")


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
