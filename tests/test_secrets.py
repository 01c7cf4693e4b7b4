"""Secrets stay secret (issue 13 item 15).

* tokens come from a file or the environment, never necessarily from the command line,
  which every local user can read in ``/proc/PID/cmdline``; the old ``--admin-token``
  flag still works but warns;
* a database URL's password never reaches a print or a log line (``oms serve``,
  ``oms migrate``, ``oms load``, the JSON log formatter);
* ``repr(Settings)`` shows neither token nor the URL's password.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from oms.cli import main
from oms.logging import configure_logging
from oms.server import wait_until_serving
from oms.settings import Settings
from oms.v1 import inventory_pb2, inventory_pb2_grpc

from service_support import free_port, postgres_database

PASSWORD = "Pa55-w0rd-never-printed"
TOKEN = "admin-token-never-in-cmdline"


pytestmark = pytest.mark.usefixtures("no_oms_environment")


@pytest.fixture(scope="module")
def pg_url_with_password() -> Iterator[str]:
    """A fresh PostgreSQL database, its URL carrying a password (trust auth ignores it)."""
    for url in postgres_database():
        yield url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql+psycopg://oms:{PASSWORD}@db.internal:5432/oms",
            "postgresql+psycopg://oms:***@db.internal:5432/oms",
        ),
        (f"postgresql://oms:{PASSWORD}@db/oms", "postgresql://oms:***@db/oms"),
        ("postgresql://oms@db/oms", "postgresql://oms@db/oms"),
        ("sqlite:///oms.db", "sqlite:///oms.db"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    from oms.credentials import redact_url

    assert redact_url(url) == shown


def test_redact_text_hides_passwords_of_urls_inside_any_text() -> None:
    from oms.credentials import redact_text

    text = f"could not reach postgresql://oms:{PASSWORD}@db:5432/oms (timeout) and redis://:x@h"
    redacted = redact_text(text)
    assert PASSWORD not in redacted and ":x@" not in redacted
    assert "postgresql://oms:***@db:5432/oms (timeout)" in redacted
    plain = "peer ipv4:127.0.0.1:5000 said a:b@c"
    assert redact_text(plain) == plain


def test_settings_repr_shows_no_secret() -> None:
    settings = Settings(
        database_url=f"postgresql+psycopg://oms:{PASSWORD}@db/oms",
        admin_token=TOKEN,
        checkout_token="checkout-secret",
    )
    shown = repr(settings)
    assert TOKEN not in shown and "checkout-secret" not in shown and PASSWORD not in shown
    assert "admin_token='***'" in shown and "postgresql+psycopg://oms:***@db/oms" in shown
    assert "checkout_token=None" in repr(Settings())


def test_dashboard_config_repr_shows_no_secret() -> None:
    from oms.dashboard.config import DashboardConfig

    config = DashboardConfig(
        database_url=f"postgresql+psycopg://oms:{PASSWORD}@db/oms",
        viewer_token="viewer-secret",
        admin_token=TOKEN,
    )
    shown = repr(config)
    assert TOKEN not in shown and "viewer-secret" not in shown and PASSWORD not in shown
    assert "viewer_token='***'" in shown and "oms:***@db" in shown


def test_json_log_lines_redact_url_passwords() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        log = logging.getLogger("oms.test_secrets")
        log.info("store at %s", f"postgresql://oms:{PASSWORD}@db/oms", extra={"url": PASSWORD})
        try:
            raise RuntimeError(f"connect to postgresql://oms:{PASSWORD}@db/oms failed")
        except RuntimeError:
            log.exception("start-up failed")
    finally:
        configure_logging("INFO", sys.stderr)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "store at postgresql://oms:***@db/oms"
    assert PASSWORD not in lines[1]["exc_info"]
    # A bare value passed as an extra field is not a URL: the caller's responsibility.
    assert lines[0]["url"] == PASSWORD


def test_token_files_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = tmp_path / "admin.token"
    admin.write_text(TOKEN + "\n", encoding="utf-8")
    admin.chmod(0o600)
    settings = Settings.from_env({"OMS_ADMIN_TOKEN_FILE": str(admin)})
    assert settings.admin_token == TOKEN  # the trailing newline an editor adds is not part of it
    assert Settings.from_env({"OMS_CHECKOUT_TOKEN": "c"}).checkout_token == "c"
    with pytest.raises(ValueError, match="set OMS_ADMIN_TOKEN or OMS_ADMIN_TOKEN_FILE, not both"):
        Settings.from_env({"OMS_ADMIN_TOKEN": "x", "OMS_ADMIN_TOKEN_FILE": str(admin)})
    empty = tmp_path / "empty.token"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        Settings.from_env({"OMS_ADMIN_TOKEN_FILE": str(empty)})
    with pytest.raises(ValueError, match="cannot read"):
        Settings.from_env({"OMS_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})


def test_migrate_and_load_print_no_password(
    pg_url_with_password: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--database-url", pg_url_with_password]) == 0
    assert main(["load", "--demo", "--database-url", pg_url_with_password]) == 0
    out, err = capsys.readouterr()
    assert "schema up to date in postgresql+psycopg://postgres:***@" in out
    assert "into postgresql+psycopg://postgres:***@" in out
    assert PASSWORD not in out + err


def _serve(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[str, int, Path]:
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "serve.log"
    command = [
        *(sys.executable, "-m", "oms.cli", "serve", "--no-demo"),
        *("--database-url", url, "--port", str(port), *args),
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    with log.open("w") as handle:
        process = subprocess.Popen(command, stderr=handle, env={**base, **(env or {})})
    try:
        wait_until_serving(f"127.0.0.1:{port}", timeout_s=90.0)
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            request = inventory_pb2.ListLowStockAlertsRequest()
            stub.ListLowStockAlerts(request, metadata=(("authorization", f"Bearer {TOKEN}"),))
        return cmdline, process.pid, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_takes_the_token_from_a_file_and_prints_no_password(
    pg_url_with_password: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN, encoding="utf-8")
    token_file.chmod(0o600)
    cmdline, _, log = _serve(pg_url_with_password, "--admin-token-file", str(token_file))
    assert TOKEN not in cmdline
    text = log.read_text()
    assert "oms serving on" in text and "postgresql+psycopg://postgres:***@" in text
    assert PASSWORD not in text and TOKEN not in text


def test_serve_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oms.db'}"
    cmdline, _, log = _serve(url, env={"OMS_ADMIN_TOKEN": TOKEN})
    assert TOKEN not in cmdline
    assert "deprecated" not in log.read_text()


def test_the_token_flag_still_works_but_warns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oms.db'}"
    _, _, log = _serve(url, "--admin-token", TOKEN)
    text = log.read_text()
    assert "--admin-token is deprecated" in text and "/proc" in text
    assert TOKEN not in text
