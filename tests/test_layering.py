"""Imports run one way, down the README's layout table, and no package reaches into another's internals.

Standard library only: every module's imports are read with ``ast`` (those inside functions and
``TYPE_CHECKING`` blocks too), so a lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qresnet"

# The README's layout table, top to bottom: a module may import its own layer and the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("qresnet.cli",),
    ("qresnet.jobs",),
    ("qresnet.study",),
    ("qresnet.run",),
    ("qresnet.config", "qresnet.data", "qresnet.download"),
    ("qresnet.nn",),
    ("qresnet.qnn",),
    ("qresnet.backends",),
    ("qresnet.circuits",),
    ("qresnet.choices", "qresnet.errors", "qresnet.provenance", "qresnet.residual", "qresnet.values", "qresnet"),
]


def rank(module: str) -> int:
    """0 for the top layer; the longest matching prefix decides."""
    best, found = -1, None
    for depth, names in enumerate(LAYERS):
        for name in names:
            prefix = name != "qresnet" and module.startswith(name + ".")  # the package itself: its __init__ only
            if (module == name or prefix) and len(name) > best:
                best, found = len(name), depth
    if found is None:
        raise AssertionError(f"{module} is in no layer of the layout table: add it to LAYERS and the README")
    return found


def home(module: str) -> str:
    """The package a module belongs to: ``qresnet.backends.engine.simulate`` -> ``qresnet.backends.engine``."""
    return module.rsplit(".", 1)[0]


def is_private_to(target: str, importer: str) -> bool:
    """Whether ``target`` is internal to a package the importer is outside of: a module more than one level
    inside another package (``qresnet.backends.engine.simulate`` seen from ``qresnet.qnn``), or one named ``_x``."""
    if any(part.startswith("_") for part in target.split(".")):
        return True
    parts = target.split(".")
    for cut in range(2, len(parts) - 1):  # every package strictly above the target, below the top package
        package = ".".join(parts[:cut])
        inside = importer == package or importer.startswith(package + ".")
        if not inside and len(parts) - cut > 1:
            return True
    return False


def imports(module: str, source: str) -> set[str]:
    """Every ``qresnet`` module ``source`` imports (``from X import name`` counts X)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the importer's package
                base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
                found.add(".".join(base + [node.module]))
            else:
                found.add(node.module)
    return {name for name in found if name == "qresnet" or name.startswith("qresnet.")}


def violations(sources: dict[str, str]) -> list[str]:
    """One line per upward import or import of another package's internals."""
    out = []
    for module, source in sorted(sources.items()):
        for target in sorted(imports(module, source)):
            if rank(target) < rank(module):
                out.append(f"{module} imports {target}, a layer above it")
            elif is_private_to(target, module):
                out.append(f"{module} imports {target}, internal to another package")
    return out


def package_sources() -> dict[str, str]:
    sources = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[module] = path.read_text()
    return sources


def test_imports_run_down_the_layout_table():
    assert violations(package_sources()) == []


def test_an_upward_or_internal_import_is_caught():
    sources = package_sources()
    upward = {**sources, "qresnet.nn.quanv": sources["qresnet.nn.quanv"] + "\nfrom qresnet.run.train import train\n"}
    assert violations(upward) == ["qresnet.nn.quanv imports qresnet.run.train, a layer above it"]
    lazy = {**sources, "qresnet.backends.spec": sources["qresnet.backends.spec"]
            + "\ndef f():\n    import qresnet.jobs.ledger\n"}
    assert violations(lazy) == ["qresnet.backends.spec imports qresnet.jobs.ledger, a layer above it"]
    internal = {**sources, "qresnet.qnn.gradient": sources["qresnet.qnn.gradient"]
                + "\nfrom qresnet.backends.engine.simulate import heisenberg\n"}
    assert violations(internal) == ["qresnet.qnn.gradient imports qresnet.backends.engine.simulate, "
                                    "internal to another package"]


def test_every_module_has_a_layer():
    for module in package_sources():
        rank(module)


def test_the_readme_table_names_every_layer():
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("## Layout", 1)[1]
    for names in LAYERS[:-1]:
        for name in names:
            last = name.rsplit(".", 1)[1]
            assert f"`qresnet/{last}" in table or f"`{last}.py`" in table, f"the README's layout table does not name {name}"
