"""The images hold the product only, and their packaging says exactly what the product needs.

Read from the sources (every import, including those inside functions): the operator and the agent import
nothing of the workbench (sipfleet.localenv, bench, demo, cli) nor each other; the third-party distributions
they import are exactly the dependencies of images/<component>/pyproject.toml; constraints.txt pins each of them
to a version the pyproject allows, and agrees with the development pyproject's exact pins.
The built images themselves are checked in tests/integration/test_images_build.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from sipfleet.localenv.imagebuild import pins
from sipfleet.localenv.imagebuild.targets import allowed_paths, targets

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("operator", "agent")
PRODUCT_PACKAGES = {"sipfleet", "sipfleet_operator", "sipfleet_agent"}
WORKBENCH = ("sipfleet.localenv", "sipfleet.bench", "sipfleet.demo", "sipfleet.cli")


def product_files(component: str) -> list[Path]:
    text = (REPO / "images" / f"Dockerfile.{component}.dockerignore").read_text()
    files: list[Path] = []
    for rel in allowed_paths(text):
        p = REPO / rel
        if p.is_dir():
            files.extend(sorted(p.rglob("*.py")))
        elif p.suffix == ".py":
            files.append(p)
    return files


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = list(rel.with_suffix("").parts)
    if parts[0] in ("operator", "agent"):
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("component", COMPONENTS)
def test_product_imports_nothing_of_the_workbench(component):
    other = "sipfleet_agent" if component == "operator" else "sipfleet_operator"
    files = product_files(component)
    assert any(f.name == "main.py" for f in files)
    bad = {}
    for f in files:
        found = {n for n in imports(f) if n.startswith(WORKBENCH) or n == other or n.startswith(other + ".")}
        if found:
            bad[str(f.relative_to(REPO))] = sorted(found)
    assert not bad, f"the {component} image would import modules it does not hold: {bad}"


def third_party(component: str) -> set[str]:
    names = set()
    for f in product_files(component):
        for n in imports(f):
            top = n.split(".")[0]
            if top and top not in sys.stdlib_module_names and top not in PRODUCT_PACKAGES and top != "__future__":
                names.add(top)
    return names


@pytest.mark.parametrize("component", COMPONENTS)
def test_dependencies_are_what_the_product_imports(component):
    target = targets()[component]
    declared = {pins.canonical_name(Requirement(r).name) for r in pins.dependencies(target)}
    dists = importlib.metadata.packages_distributions()
    imported = set()
    for top in third_party(component):
        assert top in dists, f"{top} is imported by the {component} but no installed distribution provides it"
        imported.update(pins.canonical_name(d) for d in dists[top])
    assert imported == declared, (f"imported but not declared: {sorted(imported - declared)}; "
                                  f"declared but not imported: {sorted(declared - imported)}")


@pytest.mark.parametrize("component", COMPONENTS)
def test_constraints_pin_every_dependency_within_its_range(component):
    target = targets()[component]
    locked = pins.parse_pins(pins.constraints_path(target).read_text())
    for raw in pins.dependencies(target):
        req = Requirement(raw)
        name = pins.canonical_name(req.name)
        assert name in locked, f"{name} is not in images/{component}/constraints.txt (sipfleet images lock)"
        assert req.specifier.contains(Version(locked[name]), prereleases=True), (raw, locked[name])
    assert "sipfleet" not in locked and not any(n.startswith("sipfleet-") for n in locked)
    for test_only in ("pytest", "pytest-timeout", "cryptography"):
        assert test_only not in locked


def test_exact_pins_agree_with_the_development_install():
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    exact = {pins.canonical_name(Requirement(r).name): str(Requirement(r).specifier)
             for r in dev if str(Requirement(r).specifier).startswith("==")}
    for component in COMPONENTS:
        locked = pins.parse_pins(pins.constraints_path(targets()[component]).read_text())
        for name, spec in exact.items():
            if name in locked:
                assert f"=={locked[name]}" == spec, (component, name, locked[name], spec)


@pytest.mark.parametrize("component", COMPONENTS)
def test_product_pyproject_packages_every_copied_package(component):
    project = tomllib.loads((REPO / "images" / component / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    found = {module_name(f) for f in product_files(component) if f.name == "__init__.py"}
    assert packages == found
    assert not any(p.startswith(WORKBENCH) for p in packages)
    (script,) = project["project"]["scripts"]
    assert script == f"sipfleet-{component}"


def test_parse_pins_refuses_ranges():
    assert pins.parse_pins("# c\nfoo-bar==1.2\n\nBaz_q==3\n") == {"foo-bar": "1.2", "baz-q": "3"}
    with pytest.raises(ValueError):
        pins.parse_pins("foo>=1\n")
