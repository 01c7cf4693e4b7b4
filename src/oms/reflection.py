"""Server reflection on both protocol versions: ``grpc.reflection.v1`` and ``v1alpha``.

Current clients (``buf curl``, grpcurl, Postman, grpc-java and grpc-go's
tooling) ask ``grpc.reflection.v1`` first; older ones only know ``v1alpha``.
grpcio-reflection implements only ``v1alpha``. The two protocols are the
same messages, field for field and number for number, under another package
(compare grpc-proto's ``grpc/reflection/v1/reflection.proto`` with
``v1alpha``), so one servicer answers both: the ``v1`` method is the
``v1alpha`` behaviour with the same wire encoding. The ``v1`` file descriptor
(the ``v1alpha`` one renamed) goes into the default pool, so that reflection
can describe the ``v1`` service too.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """The ``v1alpha`` reflection file under the ``v1`` name, package and options."""
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(file)
    old = f".{file.package}."
    file.name, file.package = V1_FILE, V1_PACKAGE
    file.options.Clear()
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.java_multiple_files = True
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_outer_classname = "ServerReflectionProto"
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # setting it on a scalar field would corrupt it
                field.type_name = field.type_name.replace(old, f".{V1_PACKAGE}.")
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, f".{V1_PACKAGE}.")
            method.output_type = method.output_type.replace(old, f".{V1_PACKAGE}.")
    return file


def _register_v1_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(_v1_file().SerializeToString())


def enable_server_reflection(service_names: Sequence[str], server: grpc.Server) -> None:
    """Serve reflection (both versions) listing ``service_names`` and the reflection services."""
    _register_v1_file()
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1_method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    v1 = grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1_method})
    server.add_generic_rpc_handlers((v1,))
