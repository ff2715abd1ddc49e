"""`vms gb28181 serve` and `vms gb28181 devices` as an operator runs them: the server in the foreground on a free
port, a device registering with the domain password over UDP, the device listed; a bad port is one line, exit 2."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

from tests.e2e.cli import VMS, vms_env, vms_runner
from tests.gb28181 import PASSWORD, RawDevice
from tests.services import interrupt

DEVICE = "37131100001320000031"


def test_serve_registers_a_device_and_devices_lists_it(settings, tmp_path):
    env = vms_env(
        settings,
        tmp_path,
        VMS_GB28181_PASSWORD=PASSWORD,
        VMS_GB28181_ALLOW="3713110000",
        VMS_GB28181_HOST="127.0.0.1",
        VMS_GB28181_PORT="0",
    )
    vms = vms_runner(env, no_traceback=True)
    bad = vms("gb28181", "serve", "--udp-port", "70000", code=2)
    assert "--udp-port 70000" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = vms("gb28181", "serve", "--udp-port", str(taken.getsockname()[1]), "--tcp-port", "-1", code=2)
    assert "cannot listen for GB/T 28181" in busy.stderr and len(busy.stderr.strip().splitlines()) == 1
    proc = subprocess.Popen(
        [*VMS, "gb28181", "serve", "--tcp-port", "-1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "vms gb28181: SIP server ... udp PORT tcp -; Ctrl-C stops"
        port = re.search(r"udp (\d+) tcp -", line)
        assert port is not None, line
        dev = RawDevice("udp", int(port.group(1)), DEVICE)
        try:
            assert dev.register().status == 200
            listed: list[dict] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not listed:
                listed = json.loads(vms("gb28181", "devices", "--online", "--json").stdout)
                time.sleep(0.3)
        finally:
            dev.close()
        assert [d["device_id"] for d in listed] == [DEVICE]
        assert listed[0]["transport"] == "udp" and listed[0]["port"] == dev.port and listed[0]["online"]
    finally:
        out = interrupt(proc)
    assert "Traceback" not in out, out
    assert "stopped" in out
    table = vms("gb28181", "devices").stdout
    assert DEVICE in table and "1 devices" in table and PASSWORD not in table
