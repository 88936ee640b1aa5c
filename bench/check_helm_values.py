"""Check deploy/helm/values.yaml against the dagster chart's own values schema, offline.

    python bench/check_helm_values.py CHART_SCHEMA CHART_VALUES [--values deploy/helm/values.yaml]
        [--compare deploy/helm/dagster-values.schema.json]

CHART_SCHEMA and CHART_VALUES are the chart's ``values.schema.json`` and ``values.yaml``; with Helm
at hand, ``helm pull dagster/dagster --version 1.13.27 --untar`` gives both under ``dagster/``. They
are not part of this repository (docs/deploy.md, "What is validated offline").

What it does, the way ``helm install`` does it before rendering anything:

1. merges our values over the chart's defaults (maps merge key by key, a list or a scalar of ours
   replaces the default, a ``null`` of ours deletes the key), so the keys the chart's schema
   requires and we do not set come from the defaults;
2. validates the merged values against the chart's schema with ``jsonschema`` (draft 2020-12, the
   dialect pydantic writes it in). The schema's ``$ref``s to Kubernetes definitions on the web
   (kubernetesjsonschema.dev, raw.githubusercontent.com/yannh/...) are not fetched: every such
   reference resolves to the empty, permissive schema ``{}``, so Kubernetes objects inside the
   values (resources, security contexts, probes) are not checked here; tests/test_deploy_manifests.py
   checks those against the bundled Kubernetes definitions;
3. makes sure the check is not vacuous: three deliberate mistakes must each be reported;
4. with ``--compare``, walks every property path the hand-written schema constrains and reports
   paths the chart's schema does not have, types it does not allow, and keys it requires that ours
   leaves optional where no chart default fills them (inside a list, or under a key the defaults
   lack); paths the chart's schema does not declare but lets through are printed as notes.

No network. Exit status 1 if the values fail the chart's schema, a deliberate mistake passes, or
``--compare`` finds a path or type the chart's schema rejects.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[1]
JSON_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


# --- merging, as Helm coalesces values ------------------------------------------------------------


def coalesce(defaults: Any, ours: Any) -> Any:
    """Our values over the chart's defaults: maps merge key by key, anything else of ours replaces
    the default, and a ``null`` of ours removes the key (Helm's documented way to unset one)."""
    if not (isinstance(defaults, dict) and isinstance(ours, dict)):
        return copy.deepcopy(ours)
    merged = copy.deepcopy(defaults)
    for key, value in ours.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --- validation with the web references made permissive ------------------------------------------


class _Anything(dict[str, Any]):
    """An empty schema (accepts anything) that any JSON pointer into it also resolves to."""

    def __getitem__(self, key: Any) -> _Anything:
        return _Anything()


def _external_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield ref
        for value in node.values():
            yield from _external_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _external_refs(value)


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    retrieved: set[str] = set()

    def retrieve(uri: str) -> Resource[Any]:
        retrieved.add(uri)
        return Resource.from_contents(_Anything(), default_specification=DRAFT202012)

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]


def _paths(error: jsonschema.ValidationError) -> Iterator[str]:
    """Where an error is, and where the errors under it are (an anyOf reports at its own level)."""
    yield error.json_path
    for sub in error.context or ():
        yield from _paths(sub)


def errors(check: jsonschema.protocols.Validator, instance: Any) -> list[tuple[str, str, set[str]]]:
    """(where, message, every path reported under it), the message of an anyOf failure being that
    of its most relevant alternative."""
    found = []
    for error in check.iter_errors(instance):
        best = jsonschema.exceptions.best_match([error, *(error.context or [])]) if error.context else error
        found.append((error.json_path, f"{best.json_path}: {best.message}", set(_paths(error))))
    return sorted(found, key=lambda item: item[:2])


def _set(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    mutated = copy.deepcopy(values)
    *parents, last = path.split(".")
    node: Any = mutated
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return mutated


# Deliberate mistakes the chart's schema must report (paths exist in our values.yaml).
MISTAKES = {
    "secret given as a bare name": ("runLauncher.config.k8sRunLauncher.envSecrets", ["a-secret"]),
    "unknown run launcher type": ("runLauncher.type", "K8sLauncher"),
    "telemetry flag as a string": ("telemetry.enabled", "no"),
}


# --- comparing the hand-written schema with the chart's ------------------------------------------


def _both(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two schemas that both apply, as one (enough for what ``compare`` reads: keys of the second
    win, except that required keys add up)."""
    both = {**first, **second}
    if "required" in first and "required" in second:
        both["required"] = [*first["required"], *second["required"]]
    return both


class Schemas:
    """Follows ``#/$defs/...`` references inside one schema document."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def deref(self, node: Any, seen: tuple[str, ...] = ()) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            ref = node["$ref"]
            if ref in seen:
                break
            seen = (*seen, ref)
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings} if siblings else target
        return node

    def branches(self, node: Any) -> list[dict[str, Any]]:
        """The alternatives a node allows (anyOf/oneOf flattened), each dereferenced."""
        node = self.deref(node)
        if not isinstance(node, dict):
            return []
        for key in ("anyOf", "oneOf"):
            if key in node:
                rest = {k: v for k, v in node.items() if k != key}
                return [b for option in node[key] for b in self.branches(_both(rest, self.deref(option)))]
        return [node]

    def types(self, node: Any) -> frozenset[str] | None:
        """JSON types a node allows; None when it does not say (anything goes)."""
        allowed: set[str] = set()
        for branch in self.branches(node):
            if "const" in branch or "enum" in branch:
                values = [branch["const"]] if "const" in branch else branch["enum"]
                allowed |= {_json_type(v) for v in values}
                continue
            declared = branch.get("type")
            if declared is None:
                return None
            allowed |= {declared} if isinstance(declared, str) else set(declared)
        if "integer" in allowed or "number" in allowed:
            allowed.add("integer")
        return frozenset(allowed)

    def child(self, node: Any, key: str) -> tuple[Any, str]:
        """The subschema for property ``key`` (or ``[]`` for array items) and how it was found:
        ``declared``, ``additional`` (an object that lets undeclared keys through) or
        ``forbidden`` (``additionalProperties: false``, or no object allowed at all)."""
        found: list[Any] = []
        open_ = False
        for branch in self.branches(node):
            declared = branch.get("type")
            allows = {declared} if isinstance(declared, str) else set(declared or JSON_TYPES)
            for part in [branch, *[self.deref(p) for p in branch.get("allOf", [])]]:
                if key == "[]":
                    if "items" in part:
                        found.append(part["items"])
                    continue
                properties = part.get("properties", {})
                if key in properties:
                    found.append(properties[key])
                elif "object" in allows and part.get("additionalProperties", True) is not False:
                    open_ = True
        if found:
            return ({"anyOf": found} if len(found) > 1 else found[0]), "declared"
        return {}, ("additional" if open_ else "forbidden")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _filled(defaults: Any, path: str) -> bool:
    """Whether the chart's defaults hold a value at ``path`` (inside a list never: ours replaces it)."""
    node = defaults
    for part in path.replace("[]", ".[]").split("."):
        if part == "[]" or not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def compare(ours: dict[str, Any], chart: dict[str, Any], defaults: dict[str, Any]) -> tuple[list[str], list[str], int]:
    """Every property path our schema constrains, looked up in the chart's schema: declared there
    with a compatible type, and nothing the chart requires left optional (unless its defaults fill
    it). Returns (disagreements, notes, number of distinct paths checked)."""
    mine, theirs = Schemas(ours), Schemas(chart)
    problems: dict[str, None] = {}
    notes: dict[str, None] = {}
    checked: set[str] = set()

    def walk(my_node: Any, their_node: Any, path: str, depth: int) -> None:
        if depth > 12:
            return
        my_required = set().union(*(b.get("required", []) for b in mine.branches(my_node)))
        for their_branch in theirs.branches(their_node):
            for key in sorted(set(their_branch.get("required", [])) - my_required):
                where = f"{path}.{key}" if path else key
                if not _filled(defaults, where):
                    problems[f"{where}: required by the chart's schema, not by ours, and no default fills it"] = None
        for branch in mine.branches(my_node):
            children: list[str] = list(branch.get("properties", {}))
            if "items" in branch:
                children.append("[]")
            for key in children:
                my_child = branch["items"] if key == "[]" else branch["properties"][key]
                child_path = f"{path}{key}" if key == "[]" else f"{path}.{key}" if path else key
                their_child, how = theirs.child(their_node, key)
                checked.add(child_path)
                if how == "forbidden":
                    problems[f"{child_path}: not in the chart's schema, which allows no other keys here"] = None
                    continue
                if how == "additional":
                    notes[f"{child_path}: not declared by the chart's schema (its object takes any key)"] = None
                    continue
                my_types, their_types = mine.types(my_child), theirs.types(their_child)
                if my_types is not None and their_types is not None and not my_types <= their_types:
                    problems[
                        f"{child_path}: ours allows {sorted(my_types)}, the chart's schema {sorted(their_types)}"
                    ] = None
                walk(my_child, their_child, child_path, depth + 1)

    walk(ours, chart, "", 0)
    return list(problems), list(notes), len(checked)


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart_schema", type=Path, help="the chart's values.schema.json")
    parser.add_argument("chart_values", type=Path, help="the chart's default values.yaml")
    parser.add_argument("--values", type=Path, default=REPO / "deploy" / "helm" / "values.yaml")
    parser.add_argument("--compare", type=Path, help="a hand-written schema to compare with the chart's")
    args = parser.parse_args(argv)

    chart_schema = json.loads(args.chart_schema.read_text())
    defaults = yaml.safe_load(args.chart_values.read_text()) or {}
    ours = yaml.safe_load(args.values.read_text()) or {}
    merged = coalesce(defaults, ours)
    check = validator(chart_schema)
    web_refs = sorted(set(_external_refs(chart_schema)))
    print(f"chart schema: {args.chart_schema} ({len(web_refs)} distinct web $refs, resolved to {{}})")
    print(f"values: {args.values} over {args.chart_values}")

    failed = False
    default_errors = errors(check, defaults)
    if default_errors:
        print(f"note: the chart's own defaults fail its schema in {len(default_errors)} place(s):")
        for where, message, _ in default_errors:
            print(f"  {where}: {message}")

    found = errors(check, merged)
    print(f"errors in the merged values: {len(found)}")
    for where, message, _ in found:
        print(f"  {where}: {message}")
    failed |= bool(found)

    for name, (path, value) in MISTAKES.items():
        reported = set().union(*(paths for *_, paths in errors(check, coalesce(defaults, _set(ours, path, value)))))
        hit = any(where == f"$.{path}" or where.startswith(f"$.{path}[") for where in reported)
        print(f"deliberate mistake, {name} ({path}): {'reported' if hit else 'NOT reported'}")
        failed |= not hit

    if args.compare:
        problems, notes, checked = compare(json.loads(args.compare.read_text()), chart_schema, defaults)
        print(f"compared {checked} property paths of {args.compare} with the chart's schema")
        for note in notes:
            print(f"  note: {note}")
        for problem in problems:
            print(f"  DISAGREES: {problem}")
        print(f"disagreements: {len(problems)}")
        failed |= bool(problems)

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
