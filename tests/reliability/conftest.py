"""Hypothesis profiles of the fuzz tests, and the child process that runs their cases.

``ci`` (the default, in ``make test``): derandomized, so every run tries the same examples, a few dozen per test,
no example database. ``fuzz`` (``HYPOTHESIS_PROFILE=fuzz``, ``make fuzz``): random examples, ``ZOO_FUZZ_EXAMPLES``
per test (default 2000), no deadline, failing examples kept in an example database (so that the next ``make fuzz``
tries them first). Hypothesis' files go to ``zoo-hypothesis`` in the system's temporary folder, never into the
repository.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fuzz_worker and the case modules
from fuzz_worker import Worker  # noqa: E402

# hypothesis' caches and example database live outside the repository (by default: .hypothesis/ in the cwd)
HOME = Path(tempfile.gettempdir()) / "zoo-hypothesis"
set_hypothesis_home_dir(HOME)

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=25, derandomize=True, database=None, print_blob=False, **_COMMON)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("ZOO_FUZZ_EXAMPLES", "2000")),
    database=DirectoryBasedExampleDatabase(HOME / "examples"),
    print_blob=True,
    **_COMMON,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def worker():
    """The child process running the cases (``fuzz_worker``), shared by the fuzz tests of the session."""
    child = Worker()
    yield child
    child.close()
