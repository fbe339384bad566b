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
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from buf.validate import validate_pb2  # generated here too; it reads the rules in our protos
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
CONTRACTS_ROOT = REPO_ROOT / "libs" / "contracts"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# The top-level packages protoc writes: ours, and protovalidate's rules.
GENERATED_PACKAGES = ("huntaze", "buf")
VALIDATE_PROTO = "buf/validate/validate.proto"
# For the gateway's OpenAPI document: the JSON Schema of every message of ours, and the comment
# of every RPC (the description of its HTTP route).
SCHEMAS_FILE = "huntaze/schemas.json"
METHODS_FILE = "huntaze/methods.json"
GENERATED_JSON = (Path(SCHEMAS_FILE).name, Path(METHODS_FILE).name)


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
    described = out_dir / "huntaze.binpb"
    write_validate_descriptor_set(validate_set)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--descriptor_set_in={validate_set}",
        f"--descriptor_set_out={described}",
        "--include_source_info",
        f"--proto_path={PROTO_ROOT}",
        # `google/api/annotations.proto` (HTTP routes of RPCs), from googleapis-common-protos.
        f"--proto_path={Path(annotations_pb2.__file__).parents[2]}",
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
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(described.read_bytes())
    described.unlink()
    schemas = json_schemas(descriptor_set)
    (out_dir / SCHEMAS_FILE).write_text(json.dumps(schemas, indent=1, sort_keys=True) + "\n")
    methods = method_comments(descriptor_set)
    (out_dir / METHODS_FILE).write_text(json.dumps(methods, indent=1, sort_keys=True) + "\n")


def generated_files(root: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(root)): path
        for path in root.rglob("*")
        if path.is_file()
        and (path.name.endswith(GENERATED_SUFFIXES) or path.name in GENERATED_JSON)
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
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for path in _generated_tree(CONTRACTS_ROOT).values():
            path.unlink()
        for name, path in _generated_tree(Path(tmp)).items():
            destination = CONTRACTS_ROOT / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


# --- JSON Schemas -------------------------------------------------------------------------------

_INTEGER_FORMATS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "int64",
}
_WELL_KNOWN = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.FieldMask": {"type": "string"},
}
# protovalidate rule -> JSON Schema keyword, by kind of value.
RULE_KEYWORDS = {
    "string": {"min_len": "minLength", "max_len": "maxLength", "pattern": "pattern"},
    "number": {
        "gte": "minimum",
        "lte": "maximum",
        "gt": "exclusiveMinimum",
        "lt": "exclusiveMaximum",
    },
    "repeated": {"min_items": "minItems", "max_items": "maxItems"},
    "map": {"min_pairs": "minProperties", "max_pairs": "maxProperties"},
}
_NUMBER_RULES = ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "double", "float")


def rule_keywords(rules: Any) -> dict[str, Any]:
    """The JSON Schema keywords of one field's protovalidate rules (a `buf.validate.FieldRules`),
    for the field's own value (`items` of a repeated field carries its items' keywords, and
    `propertyNames` and `additionalProperties` a map's keys' and values')."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return {}
    typed = getattr(rules, kind)
    keywords: dict[str, Any] = {}
    table = RULE_KEYWORDS["number"] if kind in _NUMBER_RULES else RULE_KEYWORDS.get(kind, {})
    for rule, keyword in table.items():
        if typed.HasField(rule):
            keywords[keyword] = getattr(typed, rule)
    for rule in ("less_than", "greater_than"):
        if kind in _NUMBER_RULES and typed.WhichOneof(rule):
            name = typed.WhichOneof(rule)
            keywords[RULE_KEYWORDS["number"][name]] = getattr(typed, name)
    if kind == "repeated" and typed.HasField("items"):
        keywords["items"] = rule_keywords(typed.items)
    if kind == "map":
        for part, keyword in (("keys", "propertyNames"), ("values", "additionalProperties")):
            if typed.HasField(part):
                keywords[keyword] = rule_keywords(getattr(typed, part))
    return keywords


def field_rules(options: descriptor_pb2.FieldOptions) -> Any:
    """The `(buf.validate.field)` rules of a field, or None."""
    extension = validate_pb2.field
    return options.Extensions[extension] if options.HasExtension(extension) else None


def _comment(locations: dict[tuple[int, ...], str], path: tuple[int, ...]) -> str:
    return " ".join(locations.get(path, "").split())


def _enum_names(enum: descriptor_pb2.EnumDescriptorProto) -> list[str]:
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return [
        "unspecified" if value.number == 0 else value.name.removeprefix(prefix).lower()
        for value in enum.value
    ]


def json_schemas(descriptor_set: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The JSON Schema of every message declared under `proto/`, by full name: members by
    their JSON names, types, enum names, `null` where a field has presence, the protovalidate
    rules as limits and the proto comments as descriptions."""
    enums: dict[str, list[str]] = {}
    maps: dict[str, descriptor_pb2.FieldDescriptorProto] = {}
    for file in descriptor_set.file:
        for message in file.message_type:
            for nested in message.nested_type:
                if nested.options.map_entry:  # `map<K, V> name`: its value field
                    maps[f".{file.package}.{message.name}.{nested.name}"] = nested.field[1]
        for enum in file.enum_type:
            enums[f".{file.package}.{enum.name}"] = _enum_names(enum)
        for message in file.message_type:
            for enum in message.enum_type:
                enums[f".{file.package}.{message.name}.{enum.name}"] = _enum_names(enum)
    schemas: dict[str, Any] = {}
    for file, locations in _our_files(descriptor_set):
        for index, message in enumerate(file.message_type):
            _message_schema(
                file.package,
                message,
                path=(4, index),
                locations=locations,
                enums=enums,
                maps=maps,
                schemas=schemas,
            )
    return schemas


def _our_files(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> Iterator[tuple[descriptor_pb2.FileDescriptorProto, dict[tuple[int, ...], str]]]:
    """Each file of ours (package `huntaze.*`) with its leading comments by source path."""
    for file in descriptor_set.file:
        if file.package.startswith("huntaze."):
            locations = {
                tuple(location.path): location.leading_comments
                for location in file.source_code_info.location
            }
            yield file, locations


def method_comments(descriptor_set: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """The comment of every RPC of ours that has one, by the method's full name."""
    comments: dict[str, str] = {}
    for file, locations in _our_files(descriptor_set):
        for service_index, service in enumerate(file.service):
            for index, method in enumerate(service.method):
                comment = _comment(locations, (6, service_index, 2, index))
                if comment:
                    comments[f"{file.package}.{service.name}.{method.name}"] = comment
    return comments


def _message_schema(
    scope: str,
    message: descriptor_pb2.DescriptorProto,
    *,
    path: tuple[int, ...],
    locations: dict[tuple[int, ...], str],
    enums: dict[str, list[str]],
    maps: dict[str, descriptor_pb2.FieldDescriptorProto],
    schemas: dict[str, Any],
) -> None:
    name = f"{scope}.{message.name}"
    properties: dict[str, Any] = {}
    for index, field in enumerate(message.field):
        schema = _field_schema(field, enums, maps)
        rules = field_rules(field.options)
        if rules is not None:
            keywords = rule_keywords(rules)
            for part in ("items", "additionalProperties"):
                if part in schema:
                    schema[part].update(keywords.pop(part, {}))
            schema.update(keywords)
        description = _comment(locations, (*path, 2, index))
        in_real_oneof = field.HasField("oneof_index") and not field.proto3_optional
        nullable = field.proto3_optional or (
            field.type == field.TYPE_MESSAGE
            and field.label != field.LABEL_REPEATED
            and field.type_name != ".google.protobuf.Struct"
            and not in_real_oneof
        )
        member: dict[str, Any] = {"anyOf": [schema, {"type": "null"}]} if nullable else schema
        if description:
            member["description"] = description
        properties[field.json_name] = member
    message_schema: dict[str, Any] = {"type": "object", "properties": properties}
    description = _comment(locations, path)
    if description:
        message_schema["description"] = description
    schemas[name] = message_schema
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            _message_schema(
                name,
                nested,
                path=(*path, 3, index),
                locations=locations,
                enums=enums,
                maps=maps,
                schemas=schemas,
            )


def _field_schema(
    field: descriptor_pb2.FieldDescriptorProto,
    enums: dict[str, list[str]],
    maps: dict[str, descriptor_pb2.FieldDescriptorProto],
) -> dict[str, Any]:
    kinds = descriptor_pb2.FieldDescriptorProto
    single: dict[str, Any]
    if field.type_name in maps:  # an object (JSON keys are strings)
        values = _field_schema(maps[field.type_name], enums, maps)
        return {"type": "object", "additionalProperties": values}
    if field.type == kinds.TYPE_MESSAGE:
        single = dict(_WELL_KNOWN.get(field.type_name, {"$ref": field.type_name.lstrip(".")}))
    elif field.type == kinds.TYPE_ENUM:
        single = {"type": "string", "enum": enums[field.type_name]}
    elif field.type in _INTEGER_FORMATS:
        single = {"type": "integer", "format": _INTEGER_FORMATS[field.type]}
    elif field.type in (kinds.TYPE_DOUBLE, kinds.TYPE_FLOAT):
        single = {"type": "number"}
    elif field.type == kinds.TYPE_BOOL:
        single = {"type": "boolean"}
    elif field.type == kinds.TYPE_BYTES:
        single = {"type": "string", "format": "byte"}
    else:
        single = {"type": "string"}
    if field.label == kinds.LABEL_REPEATED:
        return {"type": "array", "items": single}
    return single


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
