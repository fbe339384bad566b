"""Generates the contracts package from `proto/`.

`python -m huntaze_devstack.protogen` rewrites the checked-in code; `--check` exits non-zero when
the checked-in code differs from what the protos generate now.

Field rules are written in the protos with protovalidate (`buf/validate/validate.proto`). The
protovalidate wheel carries that file only as a serialized descriptor, so it is read from there
into a descriptor set that protoc takes as input, and its Python module is generated into the
contracts package from the same set: nothing third-party is copied by hand.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
CONTRACTS_ROOT = REPO_ROOT / "libs" / "contracts"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# The top-level packages protoc writes: ours, and protovalidate's rules.
GENERATED_PACKAGES = ("huntaze", "buf")
VALIDATE_PROTO = "buf/validate/validate.proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _validate_proto_descriptor() -> bytes:
    """The serialized FileDescriptorProto of `buf/validate/validate.proto` in the protovalidate
    wheel: the first argument of the `file_desc(...)` call of its generated module."""
    spec = importlib.util.find_spec("protovalidate")
    if spec is None or spec.origin is None:
        raise RuntimeError("protovalidate is not installed")
    module = Path(spec.origin).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    for node in ast.walk(ast.parse(module.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "file_desc"
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    raise RuntimeError(f"no serialized descriptor of {VALIDATE_PROTO} in {module}")


def write_validate_descriptor_set(path: Path) -> None:
    """A FileDescriptorSet of `buf/validate/validate.proto` and the well-known types it imports."""
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        module.DESCRIPTOR.CopyToProto(descriptor_set.file.add())
    descriptor_set.file.add().ParseFromString(_validate_proto_descriptor())
    path.write_bytes(descriptor_set.SerializeToString())


def generate(out_dir: Path) -> None:
    """Compiles every proto under `proto/` into `out_dir`, keeping the package layout."""
    bin_dir = Path(sys.executable).parent
    validate_set = out_dir / "buf-validate.binpb"
    write_validate_descriptor_set(validate_set)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--descriptor_set_in={validate_set}",
        f"--proto_path={PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        VALIDATE_PROTO,
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    subprocess.run(command, check=True, cwd=PROTO_ROOT)  # noqa: S603
    validate_set.unlink()


def generated_files(root: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(root)): path
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def _generated_tree(root: Path) -> dict[str, Path]:
    return {
        f"{package}/{name}": path
        for package in GENERATED_PACKAGES
        for name, path in generated_files(root / package).items()
    }


def stale_files() -> list[str]:
    """Names of checked-in files that differ from, lack or outlive the freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        current = _generated_tree(CONTRACTS_ROOT)
        fresh = _generated_tree(fresh_root)
        names = sorted(set(fresh) | set(current))
        return [
            name
            for name in names
            if name not in fresh
            or name not in current
            or not filecmp.cmp(fresh[name], current[name], shallow=False)
        ]


def write() -> None:
    for path in _generated_tree(CONTRACTS_ROOT).values():
        path.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name, path in _generated_tree(Path(tmp)).items():
            destination = CONTRACTS_ROOT / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated code, run `make proto`:", *stale, sep="\n  ")
            raise SystemExit(1)
        print("generated code is fresh")
        return
    write()


if __name__ == "__main__":
    main()
