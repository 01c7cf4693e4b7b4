import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test helpers (support.py) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
# Generated networks of exact sizes are shared with the benchmarks.
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store URL on each backend (PostgreSQL skips with a reason when unreachable)."""
    from service_support import postgres_database, sqlite_url

    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        yield from postgres_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (skips with a reason when none is reachable)."""
    from service_support import postgres_database

    yield from postgres_database()


@pytest.fixture
def no_oms_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ``OMS_*`` variables; tests that pass everything explicitly clear them."""
    for name in list(os.environ):
        if name.startswith("OMS_"):
            monkeypatch.delenv(name)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the solver's kernels once (or load them from numba's disk cache) before any
    test: a fresh checkout would otherwise compile them in the first test that quotes a
    large cart, and in every service process a test starts at the same time."""
    from sourcing.solver import warm_up

    warm_up()
