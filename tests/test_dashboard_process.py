"""The dashboard's process beside the gRPC service runs nicer than the service (checkout's
quotes come first on shared cores), and stops with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dashboard_support import config
from oms.dashboard.process import NICENESS_BESIDE_SERVICE, start_beside_service

from service_support import free_port


def niceness(pid: int) -> int:
    # /proc/<pid>/stat: the 19th field is the nice value (after "(comm)", which may hold spaces).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_the_dashboard_beside_the_service_is_niced(tmp_path: Path) -> None:
    process = start_beside_service(config(f"sqlite:///{tmp_path / 'oms.db'}", port=free_port()))
    assert process is not None and process.pid is not None
    try:
        deadline = time.monotonic() + 20
        while niceness(process.pid) == os.nice(0) and time.monotonic() < deadline:
            time.sleep(0.05)  # the child lowers its priority once it has started
        assert niceness(process.pid) > os.nice(0) or os.nice(0) == 19
        assert niceness(process.pid) == min(19, os.nice(0) + NICENESS_BESIDE_SERVICE)
    finally:
        process.terminate()
        process.join(timeout=30)
