"""Running the dashboard: in its own process beside ``oms serve``, or alone (``oms dashboard``).

Beside the gRPC service the dashboard is one spawned process, whatever
``--workers`` says: its requests (SQL, templates) never take the GIL from a
process solving quotes, and it is one process however many workers serve.
It stops with the service (a daemon child, and it watches its parent in case
the parent dies without cleaning up).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from multiprocessing.process import BaseProcess

from oms.dashboard.config import DashboardConfig

log = logging.getLogger("oms.dashboard")
#: Beside the gRPC service the dashboard runs this much nicer than it: on cores both
#: share, checkout's quotes come first and the pages take the CPU it leaves (on SQLite
#: the dashboard's queries run in this process too). ``oms dashboard`` alone is not niced.
NICENESS_BESIDE_SERVICE = 10


def announce(config: DashboardConfig) -> None:
    """Print where to sign in; with a token made at start, the link carries it (as Jupyter)."""
    if config.generated_token:
        print(
            "oms dashboard: open this link to sign in (the token was made at start; set "
            "OMS_VIEWER_TOKEN_FILE or OMS_VIEWER_TOKEN to choose one):\n"
            f"    {config.login_url(with_token=True)}",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            f"oms dashboard on {config.login_url(with_token=False)} "
            "(sign in with the viewer or admin token)",
            file=sys.stderr,
            flush=True,
        )


def start_beside_service(
    config: DashboardConfig | None, log_level: str = "INFO"
) -> BaseProcess | None:
    """Spawn the dashboard process (None when it is off: no config or port 0)."""
    if config is None or config.port == 0:
        return None
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(
        target=run, args=(config, log_level, os.getpid()), name="oms-dashboard", daemon=True
    )
    process.start()  # the child prints the login link once it listens
    return process


def run(config: DashboardConfig, log_level: str = "INFO", parent: int | None = None) -> None:
    """Serve the dashboard until stopped (SIGINT/SIGTERM, or the parent process ending)."""
    import uvicorn

    from oms.dashboard.app import create_app
    from oms.dashboard.site import dashboard_store
    from oms.logging import configure_logging

    configure_logging(log_level)
    if parent is not None:
        os.nice(NICENESS_BESIDE_SERVICE)
    store = dashboard_store(config.database_url)  # read-only sessions, bounded queries
    app = create_app(config, store)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
    )
    if config.demo_orders:
        # In the background: the page answers at once and fills as orders land.
        threading.Thread(
            target=_seed_quietly, args=(config,), name="oms-demo-orders", daemon=True
        ).start()
    if parent is not None:

        def _orphan_watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            server.should_exit = True

        threading.Thread(target=_orphan_watch, name="oms-orphan-watch", daemon=True).start()

    def _announce_when_listening() -> None:
        # A link printed before the socket is bound would be refused if opened at once.
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            announce(config)

    threading.Thread(target=_announce_when_listening, name="oms-announce", daemon=True).start()
    try:
        server.run()
    finally:
        store.dispose()


def _seed_quietly(config: DashboardConfig) -> None:
    from oms.dashboard.demo import seed

    try:
        seed(config.database_url, config.demo_orders)
    except Exception:  # the demo must never take the dashboard down
        log.exception("placing the demo orders failed")


def serve_alone(config: DashboardConfig | None, log_level: str = "INFO") -> int:
    """``oms dashboard``: migrate the store's schema, then serve the dashboard in this process."""
    from oms.store import Store

    if config is None or config.port == 0:
        print("oms dashboard: the http port is 0 (off); nothing to serve", file=sys.stderr)
        return 2
    store = Store(config.database_url, pool_size=2)
    try:
        store.migrate()
    finally:
        store.dispose()
    run(config, log_level)
    return 0
