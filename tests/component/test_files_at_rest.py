"""Files at rest: the data directory is its owner's only (0700), the SQLite database and its WAL files 0600, loose
ones are tightened at start with a log line, and a key file others can read is refused with a clear message."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from vms.errors import ConfigurationError
from vms.inventory.service import Inventory
from vms.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_settings(data: Path, **kw: object) -> Settings:
    return Settings(data_dir=data, secret_key=Fernet.generate_key().decode(), _env_file=None, **kw)


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # what most systems give: files 0644, folders 0755 unless the service says otherwise
    yield
    os.umask(old)


def test_a_fresh_data_dir_and_database_are_private(tmp_path):
    data = tmp_path / "vms"
    inv = Inventory(sqlite_settings(data))
    inv.upgrade()
    inv.import_regions(Path(__file__).resolve().parents[1] / "data/admin/areas.csv")  # writes through the WAL
    db = data / "vms.sqlite3"
    assert mode(data) == 0o700
    assert mode(db) == 0o600
    wal_files = [p for p in data.iterdir() if p.name.startswith("vms.sqlite3-")]
    assert wal_files, list(data.iterdir())
    assert all(mode(p) == 0o600 for p in wal_files), {p.name: oct(mode(p)) for p in wal_files}
    inv.engine.dispose()


def test_loose_files_are_tightened_at_start_with_a_log_line(tmp_path, caplog):
    data = tmp_path / "vms"
    Inventory(sqlite_settings(data)).upgrade()
    data.chmod(0o755)
    (data / "vms.sqlite3").chmod(0o644)
    with caplog.at_level(logging.WARNING):
        inv = Inventory(sqlite_settings(data))
    assert mode(data) == 0o700 and mode(data / "vms.sqlite3") == 0o600
    assert any("readable by others" in r.getMessage() and "vms.sqlite3" in r.getMessage() for r in caplog.records)
    inv.engine.dispose()


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key = tmp_path / "secret.key"
    key.write_bytes(Fernet.generate_key())
    key.chmod(0o644)
    settings = Settings(data_dir=tmp_path / "data", secret_key_file=key, _env_file=None)
    with pytest.raises(ConfigurationError, match=r"readable by others \(mode 644\).*chmod 600"):
        settings.fernet_key()
    key.chmod(0o640)
    with pytest.raises(ConfigurationError):
        settings.fernet_key()
    key.chmod(0o600)
    assert settings.fernet_key() == key.read_bytes().strip()


def test_a_created_key_file_is_private(tmp_path):
    settings = Settings(data_dir=tmp_path / "fresh", _env_file=None)
    settings.fernet_key()
    assert mode(settings.key_file()) == 0o600 and mode(tmp_path / "fresh") == 0o700


def test_the_cli_says_so_in_one_line(tmp_path, monkeypatch):
    from vms.cli.main import app

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    key = data / "secret.key"
    key.write_bytes(Fernet.generate_key())
    key.chmod(0o644)
    monkeypatch.setenv("VMS_DATA_DIR", str(data))
    monkeypatch.delenv("VMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("VMS_SECRET_KEY", raising=False)
    monkeypatch.setenv("CAMERA_PASSWORD", "p")
    result = CliRunner().invoke(
        app, ["credentials", "add", "x", "--username", "u", "--password-env", "CAMERA_PASSWORD"]
    )
    assert result.exit_code == 2, result.output
    assert "chmod 600" in result.output and "Traceback" not in result.output


def test_private_dirs_made_by_several_threads_at_once(tmp_path) -> None:
    # A frame sweep writes its first samples from several threads: each may find the folder missing.
    import threading

    from vms.store.db import private_dir

    for n in range(20):
        root = tmp_path / f"run{n}" / "samples"
        errors: list[BaseException] = []

        def make(root=root, errors=errors) -> None:
            try:
                private_dir(root)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=make) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not errors and root.is_dir() and (root.stat().st_mode & 0o777) == 0o700
