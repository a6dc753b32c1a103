"""Which Ansible collections the deployment and the tests name, and which are installed.

A collection is named by a fully qualified name (namespace.collection.plugin) in a
module key, a test (`is ns.c.test`), a filter (`| ns.c.filter`), a lookup, a
connection or a callback.  A dotted word counts only when its first two parts are a
collection the `ansible` package installed, so file names (`wireguard.json.j2`) do not.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[3]
BUILTIN = frozenset({"ansible.builtin", "ansible.legacy"})
ANSIBLE_FILES = ("*.yml", "*.yaml", "*.j2", "*.cfg")
FQCN = re.compile(r"(?<![\w./-])([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z_][a-z0-9_]*\b")


def installed_collections() -> dict[str, str]:
    """namespace.name -> version of every collection in the installed ansible_collections."""
    spec = importlib.util.find_spec("ansible_collections")
    assert spec is not None and spec.submodule_search_locations, "ansible is not installed"
    found: dict[str, str] = {}
    for location in spec.submodule_search_locations:
        for manifest in Path(location).glob("*/*/MANIFEST.json"):
            info = json.loads(manifest.read_text())["collection_info"]
            found[f"{info['namespace']}.{info['name']}"] = info["version"]
    return found


def ansible_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
            continue
        for pattern in ANSIBLE_FILES:
            files.extend(path.rglob(pattern))
    return sorted(set(files))


def named_collections(paths: Iterable[Path], known: Iterable[str]) -> dict[str, set[str]]:
    """Collection -> the files (relative to the repository) that name it."""
    known_set = set(known) - BUILTIN
    named: dict[str, set[str]] = {}
    for path in ansible_files(paths):
        for match in FQCN.finditer(path.read_text()):
            if match.group(1) in known_set:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                named.setdefault(match.group(1), set()).add(str(where))
    return named


def required(path: Path) -> dict[str, str]:
    """namespace.name -> pinned version of a requirements file."""
    data = yaml.safe_load(path.read_text())
    pinned: dict[str, str] = {}
    for entry in data["collections"]:
        pinned[entry["name"]] = str(entry.get("version", ""))
    return pinned
