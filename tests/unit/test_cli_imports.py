"""`vms --help` starts fast: importing the CLI and printing its help imports none of the heavy modules (those are
imported by the commands that need them). A structural check in a fresh interpreter, not a timing."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "sqlalchemy",
    "alembic",
    "pydantic_settings",
    "fastapi",
    "uvicorn",
    "api",
    "probes",
    "vms.inventory",
    "vms.store",
    "vms.ingest",
    "vms.geo",
    "vms.discovery",
    "vms.jobs",
    "numpy",
    "shapely",
    "pyproj",
    "cv2",
    "openpyxl",
    "lxml",
    "cryptography",
    "psycopg",
)

PROGRAM = """
import contextlib, io, json, sys
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    sys.argv = ["vms", "--help"]
    from vms.cli import main
    main()
print(json.dumps({"help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def test_vms_help_imports_no_heavy_module():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "cameras" in result["help"] and "serve" in result["help"]
    loaded = [m for m in result["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == [], f"`vms --help` imported {loaded}"
