"""What ``oms serve`` leaves behind and says at start (issue 13, item 18).

* The SQLite store's files (the database, its WAL and shared memory, and the
  ``.writelock`` beside it that orders writers across server processes) are
  ignored by the repository's ``.gitignore``: a checkout where ``oms serve``
  ran has nothing untracked.
* Alembic's dozen INFO lines no longer precede the one useful line: a
  migration logs one line saying what changed, and nothing when nothing did.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from oms.store import Store

from service_support import hand_network

ROOT = Path(__file__).resolve().parents[1]


def test_the_store_files_leave_a_checkout_clean(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run([git, "-C", str(tmp_path), "add", ".gitignore"], check=True)
    store = Store(f"sqlite:///{tmp_path / 'oms.db'}", pool_size=2)
    try:
        store.migrate()
        store.load_network(hand_network(), reason="test")
        left = sorted(p.name for p in tmp_path.iterdir() if p.name not in (".git", ".gitignore"))
        assert "oms.db.writelock" in left and "oms.db-wal" in left  # while it runs
        status = subprocess.run(
            [git, "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        store.dispose()
    assert [line for line in status.splitlines() if not line.startswith("A ")] == []


def test_a_migration_logs_one_line_and_alembic_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'oms.db'}", pool_size=2)
    try:
        with caplog.at_level(logging.DEBUG):
            store.migrate()
            first = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
            caplog.clear()
            store.migrate()
            second = [r for r in caplog.records if r.levelno >= logging.INFO]
    finally:
        store.dispose()
    assert len(first) == 1, first
    name, message = first[0]
    assert name == "oms.store" and message.startswith("store schema migrated from empty to 00")
    assert second == []
