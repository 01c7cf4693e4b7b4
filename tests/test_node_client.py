"""The service as a client in another language sees it: Node's @grpc/grpc-js (issue 13).

``tests/node_client/client.js`` loads the repo's ``proto/`` with
@grpc/proto-loader (and the google protos from the installed
googleapis-common-protos and grpcio-tools, not copies) and calls a real server
on loopback:

* ``errors``: a quote with 5,000 unknown SKUs and one with a 1 MB SKU each get
  INVALID_ARGUMENT naming the field in a trailer under 8 KB, and the same
  channel then serves a normal quote (with a 208 KB trailer grpc-js used to hang,
  and its channel with it);
* ``no-deadline``: four concurrent quotes without a deadline are all OK
  (they used to overflow the admission wait: INTERNAL; fixed in 3d77647).

The npm packages are installed by ``npm ci`` from the committed lockfile into a
cache directory (``OMS_NODE_CACHE``, default ``~/.cache/oms-node-client``), once
per lockfile. Without node and npm the tests skip, unless
``OMS_REQUIRE_NODE_CLIENT=1`` (CI sets it), where they fail.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc_tools
import pytest
from google.rpc import status_pb2

from service_support import Client, hand_network, running_server, sqlite_url

CLIENT_DIR = Path(__file__).parent / "node_client"
PROTO_DIR = Path(__file__).parent.parent / "proto"
REQUIRED = os.environ.get("OMS_REQUIRE_NODE_CLIENT") == "1"
MAX_TRAILER_BYTES = 8192
INVALID_ARGUMENT, OK = 3, 0


def unavailable(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"{reason} (OMS_REQUIRE_NODE_CLIENT=1: this test must run here)")
    pytest.skip(reason)


def include_dirs() -> list[str]:
    """proto/, googleapis' google/rpc (googleapis-common-protos), google/protobuf (grpcio-tools)."""
    googleapis = Path(status_pb2.__file__).parents[2]
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    for need in (googleapis / "google/rpc/status.proto", well_known / "google/protobuf/any.proto"):
        if not need.is_file():
            unavailable(f"{need} is not installed")
    return [str(PROTO_DIR), str(googleapis), str(well_known)]


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm ci`` of tests/node_client into the cache, once per lockfile."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node and npm are not on PATH")
    manifest = [CLIENT_DIR / "package.json", CLIENT_DIR / "package-lock.json"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in manifest)).hexdigest()[:16]
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = Path(os.environ.get("OMS_NODE_CACHE", default_cache / "oms-node-client"))
    installed = cache / digest
    ready = installed / "node_modules" / "@grpc" / "grpc-js" / "package.json"
    if ready.is_file():
        return installed / "node_modules"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be installing the same
        if ready.is_file():
            return installed / "node_modules"
        staging = Path(tempfile.mkdtemp(dir=cache, prefix="staging-"))
        for path in manifest:
            shutil.copy(path, staging / path.name)
        try:
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            unavailable("npm ci took over 10 minutes")
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            unavailable(f"npm ci failed: {done.stderr.strip()[-500:]}")
        staging.rename(installed)
    return installed / "node_modules"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_server(sqlite_url(tmp_path_factory.mktemp("node")), hand_network()) as client:
        yield client


def run_client(node_modules: Path, target: str, case: str) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, NODE_PATH=str(node_modules))
    command = ["node", str(CLIENT_DIR / "client.js"), target, case, *include_dirs()]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the Node client hung: {exc.stdout!r} {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {r["call"]: r for r in results}


def test_node_client_gets_small_errors_and_keeps_its_channel(
    node_modules: Path, server: Client
) -> None:
    results = run_client(node_modules, server.target, "errors")
    for call, field in (("5000-unknown-skus", "lines"), ("1mb-sku", "lines[0].sku")):
        result = results[call]
        assert result["code"] == INVALID_ARGUMENT, result
        assert result["fields"] == [field], result
        assert result["trailer_bytes"] < MAX_TRAILER_BYTES, result
    assert "5000 lines exceed the limit of 200" in results["5000-unknown-skus"]["message"]
    normal = results["normal-quote"]
    assert normal["code"] == OK and normal["options"] >= 1, normal


def test_node_client_without_deadlines_gets_every_quote(node_modules: Path, server: Client) -> None:
    results = run_client(node_modules, server.target, "no-deadline")
    assert len(results) == 4
    assert all(r["code"] == OK and r["options"] >= 1 for r in results.values()), results
