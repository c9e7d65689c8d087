import os
import sys
from pathlib import Path

# The suite's networks and arrays are tiny: BLAS threads cost more to wake than they save.
# (The environment reaches worker processes; threadpool_limits this one, if BLAS is loaded.)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/synth.py, shared by every test module

import synth  # noqa: E402

threadpool_limits(1)


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory) -> Path:
    """A synthetic ESC-50-shaped zip (4 classes x 3 folds x 2 clips), built once per session."""
    return synth.make_archive(tmp_path_factory.mktemp("archive") / "ESC-50-master.zip")


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory) -> Path:
    """A synthetic extracted ESC-50-master folder, built once per session. Treat as read-only."""
    return synth.make_dataset_folder(tmp_path_factory.mktemp("folder"))
