"""The checked-in contracts package must be what `make proto` generates from proto/ today."""

from __future__ import annotations

from huntaze_devstack import protogen


def test_generated_code_matches_the_protos() -> None:
    stale = protogen.stale_files()
    assert stale == [], f"run `make proto`; stale generated files: {stale}"


def test_every_proto_generates_its_modules() -> None:
    for proto in protogen.proto_files():
        module = proto.relative_to(protogen.PROTO_ROOT).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (protogen.CONTRACTS_ROOT / f"{module}{suffix}").is_file(), (module, suffix)


def test_protos_follow_the_package_layout() -> None:
    for proto in protogen.proto_files():
        parts = proto.relative_to(protogen.PROTO_ROOT).parts
        assert parts[0] == "huntaze", parts
        assert parts[2] == "v1", parts
        package = f"package huntaze.{parts[1]}.v1;"
        assert package in proto.read_text(), (proto.name, package)
