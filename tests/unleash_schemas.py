"""The JSON Schemas Unleash 8.2 validates client-metrics bodies with, as test fixtures.

Unleash ships them only as compiled modules in its npm package (no openapi.json), so they are
exported once with `npm pack` + Node and committed under tests/fixtures/unleash-8.2/; the tests
need neither the network nor Node. To export them again (after changing VERSION and INTEGRITY):

    .venv/bin/python -m tests.unleash_schemas            # writes tests/fixtures/unleash-8.2/
    .venv/bin/python -m tests.unleash_schemas --offline  # only from the local npm cache

Validation follows the dialect the schemas are written in: OpenAPI 3.0 Schema Objects (Unleash
builds an `openapi: 3.0.3` document of them), so `nullable` counts and sibling keywords of a
`$ref` do not. `format: date-time` is checked (RFC 3339): Unleash's request validator checks it
too (ajv with ajv-formats). Unlike Unleash, nothing is coerced: Unleash's validator runs with
`coerceTypes`, which turns e.g. `null` into "" for a string field before checking it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from openapi_schema_validator import OAS30Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

PACKAGE = "unleash-server"
VERSION = "8.2.0"
# `npm view unleash-server@8.2.0 dist.integrity`; the export refuses a tarball that differs.
INTEGRITY = "sha512-Fw7n3zsp1/B8Vjz7hvTFFzRmDZzxMqI9hbpGGMfU9wksAIu1ofKTx2HK6XBwd2DgEqy3me4xVGjknngyxRIdPA=="
FIXTURE_DIR = Path(__file__).parent / "fixtures" / "unleash-8.2"
EXPORT_SCRIPT = FIXTURE_DIR / "export.mjs"
SPEC_DIR = "package/dist/lib/openapi/spec/"

BASE_URI = f"urn:{PACKAGE}:{VERSION}:components"
SCHEMA_NAMES = (
    "clientMetricsSchema", "clientApplicationSchema", "bulkMetricsSchema", "bulkRegistrationSchema",
    "clientMetricsEnvSchema", "impactMetricsSchema", "dateSchema",
)


# --- validation ----------------------------------------------------------------------------------

@cache
def components(closed: bool = False) -> dict[str, Any]:
    """The exported components.json; `closed` adds `additionalProperties: false` wherever a schema
    lists `properties` and says nothing about others (our own rule for bodies the proxy sends:
    no field Unleash does not declare; Unleash itself allows undeclared fields)."""
    document = json.loads((FIXTURE_DIR / "components.json").read_text())
    if closed:
        for schema in document["components"]["schemas"].values():
            _close(schema)
    return document


def _close(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for sub in schema.get("properties", {}).values():
        _close(sub)
    for key in ("items", "additionalProperties", "not"):
        _close(schema.get(key))
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key, []):
            _close(sub)


def format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    # jsonschema checks date-time only with rfc3339-validator installed (openapi-schema-validator
    # depends on it); without it the check would pass everything, so fail loudly instead.
    assert "date-time" in checker.checkers, "install rfc3339-validator to check date-time formats"
    return checker


@cache
def validator(name: str, closed: bool = False) -> OAS30Validator:
    """A validator for one of SCHEMA_NAMES, its $refs resolved within components.json."""
    if name not in SCHEMA_NAMES:
        raise KeyError(name)
    registry = Registry().with_resource(BASE_URI, DRAFT4.create_resource(components(closed)))
    return OAS30Validator({"$ref": f"{BASE_URI}#/components/schemas/{name}"}, registry=registry,
                          format_checker=format_checker())


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # A oneOf failure says little on its own; its branches' errors say which field is wrong.
    return [leaf for sub in error.context or [] for leaf in _leaves(sub)] or [error]


def _path(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p!r}]" for p in error.absolute_path) or "(body)"


def errors(name: str, instance: Any, closed: bool = False) -> list[str]:
    """Every way `instance` fails the schema, as sorted "path: message" lines ([] when valid)."""
    return sorted({f"{_path(leaf)}: {leaf.message}"
                   for error in validator(name, closed).iter_errors(instance) for leaf in _leaves(error)})


def error_paths(name: str, instance: Any) -> set[str]:
    """Where `instance` fails the schema: the paths of errors(), without the messages."""
    return {_path(leaf) for error in validator(name).iter_errors(instance) for leaf in _leaves(error)}


def _is_undeclared(error: jsonschema.ValidationError) -> bool:
    return error.validator == "additionalProperties" and error.validator_value is False


def _undeclared_leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The leaves of the oneOf branch the instance matches but for undeclared fields (a counter
    sample with an extra field must not be reported against the histogram branch too)."""
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).extend(_undeclared_leaves(sub))
    return min(branches.values(), key=lambda leaves: sum(not _is_undeclared(leaf) for leaf in leaves))


def undeclared(name: str, instance: Any) -> set[str]:
    """The fields of `instance` that the schema does not declare, as paths like `['bucket']['extra']`.
    Unleash accepts and ignores them: this says what a body carries beyond the schema."""
    found = set()
    for error in validator(name, closed=True).iter_errors(instance):
        for leaf in filter(_is_undeclared, _undeclared_leaves(error)):
            where = _path(leaf) if leaf.absolute_path else ""
            found.update(f"{where}[{key!r}]" for key in leaf.instance if key not in leaf.schema.get("properties", {}))
    return found


# --- export --------------------------------------------------------------------------------------

class ExportUnavailable(RuntimeError):
    """npm, node or the package (offline: not in the npm cache) is not available here."""


def integrity_of(tarball: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()


def export(out_dir: Path, offline: bool = False) -> None:
    """`npm pack` the pinned package into a temp folder, check its integrity, unpack the spec
    modules and let export.mjs write the JSON files into out_dir."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise ExportUnavailable("npm and node are needed to export the schemas")
    with tempfile.TemporaryDirectory(prefix="unleash-schemas-") as tmp:
        work = Path(tmp)
        command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(work)]
        if offline:
            command.append("--offline")
        packed = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
        if packed.returncode != 0:
            raise ExportUnavailable(f"npm pack failed: {packed.stderr.strip()[-800:]}")
        tarball = work / json.loads(packed.stdout)[0]["filename"]
        found = integrity_of(tarball)
        if found != INTEGRITY:
            raise RuntimeError(f"{tarball.name} has integrity {found}, expected {INTEGRITY}")
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and (m.name == "package/package.json"
                                          or (m.name.startswith(SPEC_DIR) and m.name.endswith(".js")))]
            tar.extractall(work / "unpacked", members=members, filter="data")
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([node, str(EXPORT_SCRIPT), str(work / "unpacked" / "package"), str(out_dir)],
                       check=True, timeout=120)


def exported_files(folder: Path) -> dict[str, bytes]:
    """What export() writes: components.json and schemas/*.json, by path relative to folder."""
    paths = [folder / "components.json", *sorted((folder / "schemas").glob("*.json"))]
    return {str(p.relative_to(folder)): p.read_bytes() for p in paths if p.exists()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.unleash_schemas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--offline", action="store_true", help="take the package from the npm cache only")
    args = parser.parse_args(argv)
    try:
        export(args.out, offline=args.offline)
    except ExportUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
