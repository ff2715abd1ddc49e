"""Runtime dependencies are what the service imports: every third-party module that vms/, probes/ or api/ imports
is a declared runtime dependency, and every runtime dependency is imported there (test-only libraries go to `dev`)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = ("vms", "probes", "api")

# Distributions whose import name is not their own name (the installed metadata says so too; this covers a
# dependency that is declared but not installed yet).
IMPORT_NAMES: dict[str, set[str]] = {
    "opencv-python-headless": {"cv2"},
    "opencv-python": {"cv2"},
    "pyyaml": {"yaml"},
    "pyshp": {"shapefile"},
    "pydantic-settings": {"pydantic_settings"},
    "onvif-zeep-async": {"onvif"},
    "psycopg": {"psycopg"},
    "python-dateutil": {"dateutil"},
    "pillow": {"PIL"},
    "beautifulsoup4": {"bs4"},
}

# Modules that are not pip dependencies of the service, with the reason.
NOT_PIP = {
    "gi": "Debian's python3-gi: probes/sim/rtsp_server_gst.py runs under /usr/bin/python3, never in the venv",
}

# Runtime dependencies declared for a use that imports them outside vms/, probes/ and api/, with the reason.
DECLARED_NOT_IMPORTED: dict[str, str] = {}

# Optional extras of the service: extra -> the only files that may import its libraries (the rest of the service
# imports those files only when the feature is asked for, with a clear error when the extra is not installed).
OPTIONAL_EXTRAS: dict[str, tuple[str, ...]] = {
    "celery": ("vms/jobs/celery_app.py",),  # VMS_EXECUTOR=celery and `vms worker`; redis is Celery's broker client
}


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _dist_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _normalise(match.group(1))


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def runtime_dependencies() -> set[str]:
    return {_dist_name(r) for r in _pyproject()["project"]["dependencies"]}


@cache
def _installed_modules() -> dict[str, set[str]]:
    by_dist: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for d in dists:
            by_dist.setdefault(_normalise(d), set()).add(module)
    return by_dist


def import_names(dist: str) -> set[str]:
    """The top-level modules a distribution provides: the known map, the installed metadata, its own name."""
    names = set(IMPORT_NAMES.get(dist, ())) | _installed_modules().get(dist, set())
    names.add(dist.replace("-", "_"))
    return names


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def service_imports() -> Iterator[tuple[str, str]]:
    """(top-level module, file:line) for every absolute import that runs in vms/, probes/ and api/."""
    for package in SERVICE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                if _type_checking_only(node, parents):
                    continue
                for module in modules:
                    yield module.partition(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}"


def optional_modules() -> dict[str, str]:
    """Top-level module -> the optional extra that provides it."""
    extras = _pyproject()["project"]["optional-dependencies"]
    return {
        name: extra
        for extra in OPTIONAL_EXTRAS
        for dist in (_dist_name(r) for r in extras[extra])
        for name in import_names(dist)
    }


def third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for module, where in service_imports():
        if module in sys.stdlib_module_names or module in SERVICE_PACKAGES or module == "__future__":
            continue
        found.setdefault(module, []).append(where)
    return found


def test_the_import_scan_sees_the_service_libraries() -> None:
    found = third_party_imports()
    # a scan that found nothing would pass every check below
    assert {"sqlalchemy", "typer", "fastapi", "lxml", "cv2"} <= set(found)


def test_every_imported_library_is_a_runtime_dependency() -> None:
    provided = {name for dist in runtime_dependencies() for name in import_names(dist)}
    optional = optional_modules()
    missing = {
        module: places[:3]
        for module, places in third_party_imports().items()
        if module not in provided and module not in NOT_PIP and module not in optional
    }
    assert not missing, f"imported by the service but not in [project] dependencies: {missing}"


def test_optional_extras_are_imported_only_where_allowed() -> None:
    optional = optional_modules()
    assert "celery" in optional
    strays = {
        module: [p for p in places if p.partition(":")[0] not in OPTIONAL_EXTRAS[optional[module]]]
        for module, places in third_party_imports().items()
        if module in optional
    }
    strays = {module: places for module, places in strays.items() if places}
    assert not strays, f"optional libraries imported outside their extra's files: {strays}"
    dev = {_dist_name(r) for r in _pyproject()["project"]["optional-dependencies"]["dev"]}
    for extra in OPTIONAL_EXTRAS:
        wanted = {_dist_name(r) for r in _pyproject()["project"]["optional-dependencies"][extra]}
        assert wanted <= dev, f"the tests need the {extra!r} extra: add {sorted(wanted - dev)} to dev"


def test_every_runtime_dependency_is_imported_by_the_service() -> None:
    imported = set(third_party_imports())
    unused = sorted(
        dist
        for dist in runtime_dependencies()
        if not import_names(dist) & imported and dist not in DECLARED_NOT_IMPORTED
    )
    assert not unused, f"runtime dependencies that vms/, probes/, api/ never import (move them to an extra): {unused}"


def test_the_onvif_reference_client_is_a_dev_dependency_only() -> None:
    project = _pyproject()["project"]
    assert "onvif-zeep-async" not in runtime_dependencies()
    assert "onvif-zeep-async" in {_dist_name(r) for r in project["optional-dependencies"]["dev"]}
    assert not {"onvif", "zeep"} & set(third_party_imports())


def test_the_scan_maps_distribution_names_to_import_names() -> None:
    assert "cv2" in import_names("opencv-python-headless")
    assert "yaml" in import_names("pyyaml")
    assert "shapefile" in import_names("pyshp")
    assert "pydantic_settings" in import_names("pydantic-settings")
    assert _dist_name("psycopg[binary]>=3.1") == "psycopg"
    assert _dist_name("SQLAlchemy>=2.0,<3") == "sqlalchemy"
