"""The model file format: one ``.npz`` of arrays plus a JSON header, read without pickle.

A model file holds every network's arrays -- ``W1, b1, ...``, ``b0`` of the first, ``net2.W1``,
... of the others (``array_name``) -- the standardisation ``mean``/``scale`` and ``classes``, plus
``header``: UTF-8 JSON stored as a uint8 array with ``format``, ``format_version``, the
``architecture`` (layer sizes, activation, output, loss, input bias, standardisation, dtype,
number of networks), the estimator ``params`` and optional fields (class names, metadata,
training history).

Two levels, both here: ``save``/``load`` turn a ``SavedModel`` (what an estimator holds) into
those arrays and that header and back, filling in what files written before a field existed
mean (``ADDED``); ``write``/``read`` store and check the container. ``read`` checks every header
field against the tables below and every member's name, dtype and shape against the
architecture before any array is loaded, so a damaged or forged file is one ``ModelError``
naming it, and members are opened with ``allow_pickle=False``: a model file can never run code.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esc50ann import __version__
from esc50ann.errors import ConfigError, ModelError, one_line
from esc50ann.fileio import atomic_path, json_default
from esc50ann.mlp import ACTIVATIONS, COSTS, MLP, OUTPUTS
from esc50ann.params import Boolean, InstanceOf, Integral, Interval, ListOf, Options, validate

FORMAT = "esc50ann-model"
FORMAT_VERSION = 1

ARCHITECTURE = {
    "sizes": [ListOf(Interval(Integral, 1), min_len=2)],
    "activation": [Options(*ACTIVATIONS)],
    "output": [Options(*OUTPUTS)],
    "loss": [Options(*COSTS)],
    "input_bias": [Boolean()],
    "standardize": [Boolean()],
    "dtype": [Options("float32", "float64")],
}
ARCHITECTURE_OPTIONAL = {"n_networks": [Interval(Integral, 1, 64)]}
# Fields added after the format was fixed, with the value that reproduces what a file written
# before them means (one network, no mixing, a constant learning rate). Every other param must be
# in the header.
ADDED = {"architecture": {"n_networks": 1},
         "params": {"n_networks": 1, "mixup": 0.0, "lr_schedule": "constant", "lr_floor": 0.0, "warmup_epochs": 0,
                    "lr_step_every": 10, "lr_step_factor": 0.1, "epsilon": 1e-8, "clip_norm": None,
                    "average_epochs": 0, "ensemble": "independent"}}
_CLASS_NAME_PAIR = ListOf(InstanceOf(str, int, float, description="a label"), min_len=2, max_len=2)
# Optional header fields: absent or null is fine, anything else must look like this.
OPTIONAL = {
    "classes_dtype": [InstanceOf(str), None],
    "feature_names_in": [ListOf(InstanceOf(str)), None],
    "class_names": [ListOf(_CLASS_NAME_PAIR), None],  # [[label, name], ...]
    "histories": [ListOf(ListOf(InstanceOf(dict))), None],  # per network
    "best_epochs": [ListOf(Interval(Integral, 0)), None],
    "history": [ListOf(InstanceOf(dict)), None],  # files before "histories": the first network's only
    "best_epoch": [Interval(Integral, 0), None],
    "metadata": [InstanceOf(dict), None],
}


@dataclass
class SavedModel:
    """What a model file holds, as the estimator uses it.

    ``networks`` share one architecture; ``classes`` has shape (n_classes,) and ``class_names``
    (optional) names each of them in that order; ``mean``/``scale`` (n_features,) or None.
    """

    networks: list[MLP]
    classes: np.ndarray
    params: dict
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    class_names: list[str] | None = None
    feature_names_in: list[str] | None = None
    metadata: dict | None = None
    histories: list[list[dict]] = field(default_factory=list)  # per network
    best_epochs: list[int] | None = None


def save(path, model: SavedModel) -> Path:
    """Write ``model`` to ``path`` atomically (see ``write``)."""
    net = model.networks[0]
    arrays = {}
    for k, member in enumerate(model.networks, start=1):  # W1, b1, ... then net2.W1, ...
        arrays.update({array_name(name, k): p for name, p in zip(member.names, member.params)})
    if model.mean is not None:
        arrays["mean"], arrays["scale"] = model.mean, model.scale
    classes = np.asarray(model.classes)
    arrays["classes"] = classes.astype(str) if classes.dtype == object else classes
    header = {
        # From the networks themselves, not the params, which may have been set since fit.
        "architecture": {"sizes": [int(s) for s in net.sizes], "activation": net.activation.name,
                         "output": net.output.name, "loss": net.cost.name, "input_bias": net.input_bias,
                         "standardize": model.mean is not None, "dtype": str(net.dtype),
                         "n_networks": len(model.networks)},
        "params": model.params,
        "classes_dtype": "object" if classes.dtype == object else classes.dtype.str,
        "feature_names_in": model.feature_names_in or None,
        "class_names": None if model.class_names is None else
                       [[_plain(c), str(n)] for c, n in zip(classes, model.class_names)],
        "metadata": model.metadata,
        "histories": model.histories,
        "best_epochs": model.best_epochs,
    }
    return write(path, arrays, header)


def load(path) -> SavedModel:
    """The model stored in ``path``, its networks rebuilt, with ``ADDED``'s values for fields the
    file predates; raise ``ModelError`` naming the file if it is unusable."""
    arrays, header = read(path)
    arch = {**ADDED["architecture"], **header["architecture"]}
    dtype = np.dtype(arch["dtype"])
    n_layers = len(arch["sizes"]) - 1
    networks = [MLP.from_arrays(
        [arrays[array_name(f"W{i}", k)].astype(dtype) for i in range(1, n_layers + 1)],
        [arrays[array_name(f"b{i}", k)] for i in range(1, n_layers + 1)],
        arrays.get(array_name("b0", k)) if arch["input_bias"] else None,
        arch["activation"], arch["output"], arch["loss"]) for k in range(1, arch["n_networks"] + 1)]
    classes = arrays["classes"]
    classes = classes.astype(object) if header.get("classes_dtype") == "object" else classes
    class_names = None
    if header.get("class_names") is not None:
        names = {label: name for label, name in header["class_names"]}
        class_names = [names.get(_plain(c), str(c)) for c in classes]
    return SavedModel(
        networks=networks, classes=classes, params={**ADDED["params"], **header["params"]},
        mean=arrays["mean"] if arch["standardize"] else None, scale=arrays["scale"] if arch["standardize"] else None,
        class_names=class_names, feature_names_in=header.get("feature_names_in") or None,
        metadata=header.get("metadata"),
        histories=header.get("histories") or [header.get("history") or []],
        best_epochs=header.get("best_epochs") or (None if header.get("best_epoch") is None else [header["best_epoch"]]))


def _plain(label):
    """A class label as a plain Python value (numpy scalars are not JSON)."""
    return label.item() if isinstance(label, np.generic) else label


def write(path, arrays: dict[str, np.ndarray], header: dict) -> Path:
    """Write ``arrays`` and ``header`` (completed with format and version) to ``path``, atomically."""
    path = Path(path)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "esc50ann_version": __version__, **header}
    try:
        text = json.dumps(header, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: cannot store the model header ({one_line(exc)})") from None
    for name, array in arrays.items():  # a diverged network is never written as a model
        if np.issubdtype(np.asarray(array).dtype, np.floating) and not np.isfinite(array).all():
            raise ModelError(f"{path}: refusing to save non-finite values in {name!r} (training diverged)")
    arrays = {**arrays, "header": np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a full disk etc.: one line naming path
        np.savez(fh, **arrays)  # a file object, so numpy does not append ".npz"
    return path


def read(path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the checked header of the model file ``path``.

    Raises
    ------
    ModelError
        Missing, unreadable or damaged file, another format or version, an invalid header field,
        or an array missing, of the wrong shape or not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as zf:
            declared = _declared_members(path, zf)
            header = _read_header(path, {"header": _load_member(zf, "header")})
            _check_declared(path, declared, header["architecture"])
            arrays = {name: _load_member(zf, name) for name in declared}  # only now: all checked
    except ModelError:
        raise
    except Exception as exc:  # zip/npy/CRC/truncation errors all mean the same thing here
        raise ModelError(f"{path}: not a readable model file ({one_line(exc)})") from None
    _check_arrays(path, arrays, header["architecture"])
    return arrays, header


MAX_HEADER_BYTES = 64 << 20  # the JSON header (history, class names): generous, but bounded


def _declared_members(path, zf) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every ``.npy`` member, read from the member headers alone."""
    declared = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise ModelError(f"{path}: unexpected member {info.filename!r} in the model file")
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ModelError(f"{path}: member {info.filename!r} has .npy format version {version}")
            shape, _, dtype = read_header(member, max_header_size=10_000)
        if dtype.hasobject:
            raise ModelError(f"{path}: member {info.filename!r} holds Python objects (never loaded)")
        if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
            raise ModelError(f"{path}: member {info.filename!r} declares {shape} {dtype} but holds "
                             f"{info.file_size} bytes")
        declared[info.filename[:-4]] = (tuple(shape), dtype)
    header = declared.get("header")
    if header is None:
        raise ModelError(f"{path}: not an esc50ann model file (no 'header' array)")
    if header[1] != np.uint8 or len(header[0]) != 1 or header[0][0] > MAX_HEADER_BYTES:
        raise ModelError(f"{path}: the model header is not a JSON text of at most {MAX_HEADER_BYTES} bytes")
    return declared


def _check_declared(path, declared, arch) -> None:
    """Names, dtypes and shapes of the members against the header, before any array is loaded."""
    expected = expected_shapes(arch)
    unknown = sorted(set(declared) - set(expected) - {"header"})
    if unknown:
        raise ModelError(f"{path}: unknown array {unknown[0]!r} in the model file")
    for name, shape in expected.items():
        if name not in declared:
            raise ModelError(f"{path}: array {name!r} is missing")
        if declared[name][0] != tuple(shape):
            raise ModelError(f"{path}: array {name!r} has shape {declared[name][0]}, the header says {tuple(shape)}")
        if name != "classes" and declared[name][1].kind != "f":
            raise ModelError(f"{path}: array {name!r} is not floating point")


def _load_member(zf, name) -> np.ndarray:
    with zf.open(f"{name}.npy") as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_header(path, arrays):
    if "header" not in arrays:
        raise ModelError(f"{path}: not an esc50ann model file (no 'header' array)")
    raw = arrays["header"]
    try:
        header = json.loads(raw.tobytes().decode("utf-8") if raw.dtype == np.uint8 else str(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: the model header is not valid JSON ({one_line(exc)})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path}: not an esc50ann model file")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {header.get('format_version')!r} "
                         f"is not supported (this esc50ann {__version__} reads {FORMAT_VERSION})")
    arch = header.get("architecture")
    if not isinstance(arch, dict):
        raise ModelError(f"{path}: the model header has no architecture")
    missing = [key for key in ARCHITECTURE if key not in arch]
    if missing:
        raise ModelError(f"{path}: the model header's architecture has no valid {missing[0]!r}")
    try:
        validate(arch, {**ARCHITECTURE, **ARCHITECTURE_OPTIONAL})
    except ConfigError as exc:
        raise ModelError(f"{path}: the model header's architecture has no valid {exc.key!r}") from None
    if not isinstance(header.get("params"), dict):
        raise ModelError(f"{path}: the model header has no params")
    try:
        validate(header, OPTIONAL)
    except ConfigError as exc:
        raise ModelError(f"{path}: the model header's {exc.key!r} is invalid") from None
    if header.get("feature_names_in") and len(header["feature_names_in"]) != arch["sizes"][0]:
        raise ModelError(f"{path}: the model header has {len(header['feature_names_in'])} feature "
                         f"names for {arch['sizes'][0]} inputs")
    return header


def array_name(name: str, network: int) -> str:
    """The stored name of parameter ``name`` (``W1``, ``b0``, ...) of the ``network``-th network
    (from 1) of an ensemble: ``W1`` for the first, ``net2.W1`` for the second, ..."""
    return name if network == 1 else f"net{network}.{name}"


def expected_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every array a model of architecture ``arch`` stores."""
    sizes = arch["sizes"]
    shapes = {}
    for k in range(1, arch.get("n_networks", ADDED["architecture"]["n_networks"]) + 1):
        for i in range(1, len(sizes)):
            shapes[array_name(f"W{i}", k)] = (sizes[i - 1], sizes[i])
            shapes[array_name(f"b{i}", k)] = (sizes[i],)
        if arch["input_bias"]:
            shapes[array_name("b0", k)] = (sizes[0],)
    shapes["classes"] = (sizes[-1],)
    if arch["standardize"]:
        shapes["mean"] = shapes["scale"] = (sizes[0],)
    return shapes


def _check_arrays(path, arrays, arch):
    for name, shape in expected_shapes(arch).items():
        if name not in arrays:
            raise ModelError(f"{path}: array {name!r} is missing")
        if arrays[name].shape != tuple(shape):
            raise ModelError(f"{path}: array {name!r} has shape {arrays[name].shape}, the header says {tuple(shape)}")
        if name != "classes" and (arrays[name].dtype.kind != "f" or not np.isfinite(arrays[name]).all()):
            raise ModelError(f"{path}: array {name!r} is not finite floating point")
