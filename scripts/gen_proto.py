"""Regenerate the Python code for ``proto/oms/v1`` into ``src/oms/v1``.

Usage: ``python scripts/gen_proto.py [OUT_DIR]`` (default ``src``). The output
is deterministic for a given grpcio-tools and mypy-protobuf, so
``tests/test_proto_contract.py`` can regenerate into a temporary folder and
compare. Never edit the generated files by hand.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc with the Python, gRPC and mypy plugins; return the files written."""
    # Only our own package: proto/google/type holds copies of googleapis' files for buf
    # to resolve imports offline; their Python code comes from googleapis-common-protos.
    protos = sorted(
        p.relative_to(PROTO_DIR).as_posix() for p in (PROTO_DIR / "oms").rglob("*.proto")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_dir / "oms" / "v1"
    (package / "__init__.py").write_text('"""Generated from proto/oms/v1 by scripts/gen_proto.py."""\n')
    return sorted(p for p in package.iterdir() if p.is_file())


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src"
    target = out / "oms" / "v1"
    if target.exists():
        shutil.rmtree(target)
    for path in generate(out):
        print(path.relative_to(out))


if __name__ == "__main__":
    main()
