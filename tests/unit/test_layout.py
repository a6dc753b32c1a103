"""The layout shows the design (docs/architecture.md, "Layout"): packages by concern,
imports that follow the layering, modules of one job, and docs that cite what exists.

Each rule reads the source tree, so a change that breaks the layering fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.unit.layering import imports

ROOT = Path(__file__).resolve().parents[2]
CODE = ("controller", "hostnet")
MAX_MODULE_LINES = 600
MAX_PACKAGE_MODULES = 12

# package -> daolinet packages it must not import (prefix match on module names)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "controller.datapath": (
        "controller.api", "controller.cluster", "controller.store", "controller.openflow",
        "controller.agents", "controller.daolictl", "controller.main", "os_ken", "fastapi",
        "hostnet",
    ),
    "controller.store": (
        "controller.datapath", "controller.desired", "controller.cluster",
        "controller.openflow", "controller.api", "controller.agents", "controller.daolictl",
        "controller.main", "os_ken", "fastapi", "hostnet",
    ),
    "controller.desired": (
        "controller.datapath", "controller.cluster", "controller.openflow", "controller.api",
        "controller.agents", "controller.daolictl", "controller.main", "os_ken", "fastapi",
        "hostnet",
    ),
    "controller.daolictl": (
        "controller.datapath", "controller.desired", "controller.store", "controller.cluster",
        "controller.openflow", "controller.api", "controller.agents", "controller.main",
        "os_ken", "hostnet",
    ),
    "controller.cluster": ("controller.api", "controller.openflow", "controller.main",
                           "os_ken", "hostnet"),
    "controller.agents": ("controller.api", "controller.openflow", "controller.cluster",
                          "controller.store", "controller.main", "os_ken", "hostnet"),
    "controller.openflow": ("controller.api", "controller.main", "hostnet"),
    "controller.trust": (
        "controller.datapath", "controller.desired", "controller.cluster",
        "controller.openflow", "controller.api", "controller.agents", "controller.daolictl",
        "controller.main", "controller.settings", "os_ken", "fastapi", "hostnet",
    ),
    "controller.api": ("controller.openflow", "controller.main", "os_ken", "hostnet"),
    "controller.livemap": ("controller.openflow", "controller.main", "controller.agents",
                           "controller.store", "os_ken", "hostnet"),
    "controller.connlog": (
        "controller.api", "controller.cluster", "controller.store", "controller.openflow",
        "controller.agents", "controller.daolictl", "controller.main", "controller.settings",
        "os_ken", "fastapi", "hostnet",
    ),
}


def _modules() -> list[Path]:
    return sorted(p for top in CODE for p in (ROOT / top).rglob("*.py"))


def _dotted(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_allows(package: str) -> None:
    broken = [
        f"{_dotted(p)} imports {name}"
        for p in _modules()
        if _matches(_dotted(p), package)
        for name in sorted(imports(p, names=True))
        if any(_matches(name, bad) for bad in FORBIDDEN[package])
    ]
    assert broken == []


def test_the_layering_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The check above would catch a violation (it is not vacuous)."""
    bad = tmp_path / "m.py"
    bad.write_text("from controller.api.deps import ApiContext\nimport os_ken.base\n")
    assert {"controller.api.deps.ApiContext", "os_ken.base"} <= imports(bad, names=True)
    assert any(_matches(n, "controller.api") for n in imports(bad, names=True))


def test_no_module_is_over_the_size_limit() -> None:
    tests = sorted((ROOT / "tests").rglob("*.py"))
    big = {
        str(p.relative_to(ROOT)): n
        for p in [*_modules(), *tests]
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}


def test_packages_stay_small_and_say_their_job() -> None:
    for top in CODE:
        for init in (ROOT / top).rglob("__init__.py"):
            package = init.parent
            modules = [p for p in package.glob("*.py") if p.name != "__init__.py"]
            assert len(modules) <= MAX_PACKAGE_MODULES, f"{package}: {len(modules)} modules"
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc, f"{init.relative_to(ROOT)} has no docstring saying its job"


def _headings() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


CITATION = re.compile(r'architecture\.md[,:]?\s*(?:section\s*)?\(?"([^"]+)"')


def _citations() -> list[tuple[str, str]]:
    files = [*_modules(), *sorted((ROOT / "tests").rglob("*.py")),
             *sorted((ROOT / "benchmarks").glob("*.py"))]
    out = []
    for p in files:
        if p == Path(__file__).resolve():
            continue  # this file's patterns are not citations
        text = re.sub(r"\s*\n\s*#?\s*", " ", p.read_text())  # citations wrap lines
        out += [(str(p.relative_to(ROOT)), m.group(1)) for m in CITATION.finditer(text)]
    return out


def test_every_cited_section_of_the_architecture_exists() -> None:
    headings = _headings()
    cited = _citations()
    assert cited, "no citation found: the pattern no longer matches the code's style"
    missing = sorted({f"{where}: {section!r}" for where, section in cited
                      if not any(h.startswith(section) for h in headings)})
    assert missing == []


def test_every_source_file_the_docs_name_exists() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {
        (doc.name, m.group(0))
        for doc in docs
        for m in re.finditer(r"\b(?:controller|hostnet|tests|benchmarks)/[\w/]+\.py\b",
                             doc.read_text())
    }
    assert named, "no path found: the pattern no longer matches the docs' style"
    missing = sorted(f"{doc}: {path}" for doc, path in named if not (ROOT / path).exists())
    assert missing == []
