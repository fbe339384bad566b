"""Generates the contracts package from `proto/`.

`python -m huntaze_devstack.protogen` rewrites the checked-in code; `--check` exits non-zero when
the checked-in code differs from what the protos generate now.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
CONTRACTS_ROOT = REPO_ROOT / "libs" / "contracts"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Compiles every proto under `proto/` into `out_dir`, keeping the package layout."""
    bin_dir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    subprocess.run(command, check=True, cwd=PROTO_ROOT)  # noqa: S603


def generated_files(root: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(root)): path
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def stale_files() -> list[str]:
    """Names of checked-in files that differ from, lack or outlive the freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        current = generated_files(CONTRACTS_ROOT / "huntaze")
        fresh = generated_files(fresh_root / "huntaze")
        names = sorted(set(fresh) | set(current))
        return [
            name
            for name in names
            if name not in fresh
            or name not in current
            or not filecmp.cmp(fresh[name], current[name], shallow=False)
        ]


def write() -> None:
    target = CONTRACTS_ROOT / "huntaze"
    for path in generated_files(target).values():
        path.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name, path in generated_files(Path(tmp) / "huntaze").items():
            destination = target / name
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
