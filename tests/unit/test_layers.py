"""The package map holds: `vms/` packages import only downward, `probes/` never imports the domain or the API."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom first. A module may import from its own package or from any package listed before it.
LAYERS = [
    "errors",
    "catalog",
    "settings",
    "store",
    "geo",
    "ingest",
    "inventory",
    "discovery",
    "frames",
    "health",
    "gb28181",
    "coverage",
    "access",
    "jobs",
    "cli",
]
RANK = {name: i for i, name in enumerate(LAYERS)}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every imported module name in a file, function-local and TYPE_CHECKING imports included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vms":
                found += [(node.lineno, f"vms.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "vms" or len(parts) < 2:
        return None
    return parts[1]


def test_every_vms_module_belongs_to_a_layer() -> None:
    unknown = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "vms").iterdir()
        if ((p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py")
        and p.stem not in RANK
        and p.stem not in {"__init__", "__main__"}
    ]
    assert unknown == [], f"add these to the layer map in {__file__}: {unknown}"


def test_vms_imports_point_downward_only() -> None:
    wrong = []
    for path in (ROOT / "vms").rglob("*.py"):
        rel = path.relative_to(ROOT / "vms")
        own = rel.parts[0].removesuffix(".py")
        if own not in RANK:
            continue
        for line, module in _imports(path):
            if module.split(".")[0] == "api" and own != "cli":  # the CLI serves the API; nothing else sees it
                wrong.append(f"vms/{rel}:{line} imports the API layer ({module})")
            target = _layer(module)
            if target in RANK and target != own and RANK[target] > RANK[own]:
                wrong.append(f"vms/{rel}:{line} imports {module} ({own} is below {target})")
    assert wrong == []


def test_probes_do_not_import_the_domain_or_the_api() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in (ROOT / "probes").rglob("*.py")
        for line, module in _imports(path)
        if module.split(".")[0] in {"vms", "api"}
    ]
    assert wrong == []
