"""`vms gb28181 serve` with VMS_GB28181_UPSTREAM_* registers vms to an upper platform (our GbServer on 127.0.0.1
plays it), and `vms gb28181 upstream` shows the registration's state; off without a host."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.e2e.cli import VMS, run_vms, vms_env
from tests.gb28181 import MemoryDirectory, ServerThread, wait_for

LOCAL_ID = "37131100002000000001"
UP_ID = "37000000002000000001"


def test_serve_registers_upward_and_upstream_shows_it(settings, inventory, tmp_path):
    off = run_vms(vms_env(settings, tmp_path), "gb28181", "upstream")
    assert off.returncode == 0 and "cascade upward off" in off.stdout, off.stderr
    directory = MemoryDirectory(passwords={LOCAL_ID: "up-cli-pw"})
    with ServerThread(directory) as platform:
        env = vms_env(
            settings, tmp_path, VMS_GB28181_PORT="0", VMS_GB28181_UPSTREAM_HOST="127.0.0.1",
            VMS_GB28181_UPSTREAM_PORT=str(platform.port("udp")), VMS_GB28181_UPSTREAM_ID=UP_ID,
            VMS_GB28181_UPSTREAM_PASSWORD="up-cli-pw", VMS_GB28181_UPSTREAM_KEEPALIVE_S="0.5",
        )  # fmt: skip
        serve = subprocess.Popen([*VMS, "gb28181", "serve"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: bool(directory.registrations) or serve.poll() is not None, 30)
            assert directory.registrations, serve.communicate(timeout=5)
            assert wait_for(lambda: bool(directory.keepalives), 20)
            shown = run_vms(env, "gb28181", "upstream", "--json")
            assert shown.returncode == 0, shown.stderr
            doc = json.loads(shown.stdout)
            assert doc["configured"] and doc["running"] and doc["status"]["state"] == "registered"
            assert doc["upstream"]["password_set"] and "up-cli-pw" not in shown.stdout
            text = run_vms(env, "gb28181", "upstream")
            assert "state: registered" in text.stdout and f"at 127.0.0.1:{platform.port('udp')}" in text.stdout
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.communicate(timeout=5)
        assert wait_for(lambda: bool(directory.unregistrations), 5)  # a stop unregisters (Expires: 0)
