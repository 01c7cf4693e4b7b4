"""Server reflection answers on ``grpc.reflection.v1`` as well as ``v1alpha`` (issue 13, item 19).

Over a real loopback channel: raw ``ServerReflectionInfo`` calls on the v1
method path (the v1 messages are the v1alpha ones field for field, so the
v1alpha classes encode them), grpcio-reflection's own v1alpha client, and
``buf curl`` forced to the v1 protocol (skipped where ``buf`` is not installed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as wire
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service_support import running_server, sqlite_url

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def _ask_v1(
    channel: grpc.Channel, *requests: wire.ServerReflectionRequest
) -> list[wire.ServerReflectionResponse]:
    call = channel.stream_stream(
        V1_METHOD,
        request_serializer=wire.ServerReflectionRequest.SerializeToString,
        response_deserializer=wire.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=10))


def _files(
    response: wire.ServerReflectionResponse,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = {}
    for raw in response.file_descriptor_response.file_descriptor_proto:
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[file.name] = file
    return files


def test_v1_reflection_lists_and_describes_the_services(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        listed, checkout, v1_itself, unknown = _ask_v1(
            client.channel,
            wire.ServerReflectionRequest(list_services=""),
            wire.ServerReflectionRequest(file_containing_symbol="oms.v1.CheckoutService"),
            wire.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
            wire.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
        )
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "oms.v1.CheckoutService",
        "oms.v1.FulfilmentService",
        "oms.v1.InventoryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names

    files = _files(checkout)
    (service,) = [s for f in files.values() for s in f.service if s.name == "CheckoutService"]
    assert "QuoteDeliveryOptions" in {m.name for m in service.method}
    assert "google/type/money.proto" in files  # dependencies come along

    v1_file = _files(v1_itself)["grpc/reflection/v1/reflection.proto"]
    assert v1_file.package == "grpc.reflection.v1"
    (method,) = v1_file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert method.client_streaming and method.server_streaming

    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1alpha_reflection_still_answers(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        database = ProtoReflectionDescriptorDatabase(client.channel)
        services = set(database.get_services())
        assert {"oms.v1.CheckoutService", "grpc.reflection.v1.ServerReflection"} <= services
        file = database.FindFileContainingSymbol("oms.v1.InventoryService")
        assert file.package == "oms.v1"


def test_buf_curl_lists_the_methods_over_reflection_v1(tmp_path: Path) -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.skip("buf is not installed (pip install -e '.[dev]' installs it)")
    with running_server(sqlite_url(tmp_path)) as client:
        result = subprocess.run(
            [
                buf,
                "curl",
                "--protocol",
                "grpc",
                "--http2-prior-knowledge",
                "--reflect-protocol",
                "grpc-v1",
                "--list-methods",
                f"http://{client.target}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert "oms.v1.CheckoutService/QuoteDeliveryOptions" in result.stdout.split()
