"""`vms gb28181 catalog DEVICE_ID` as an operator runs it, in a process of its own while another process (here the
test's, with GbService on 127.0.0.1 port 0) runs the SIP server: the request goes through the database, the server
asks the device, the command prints the answer's summary. Unknown and offline devices: one line, exit 2."""

from __future__ import annotations

import subprocess

from pydantic import SecretStr

from tests.component.test_gb28181_catalog_on_demand import NVR, answer_query
from tests.e2e.cli import VMS, vms_env, vms_runner
from tests.gb28181 import PASSWORD, RawDevice, wait_for
from vms.gb28181.devices import list_devices
from vms.gb28181.service import GbService
from vms.inventory.service import Inventory


def test_catalog_command_asks_the_device_through_the_running_server(settings, inventory, tmp_path):
    inv = Inventory(
        inventory.settings.model_copy(
            update={"gb28181_password": SecretStr(PASSWORD), "gb28181_allow": ["3713110000"],
                    "gb28181_catalog_interval_s": 0.0}
        ),
        engine=inventory.engine,
    )
    env = vms_env(settings, tmp_path)
    vms = vms_runner(env, no_traceback=True)
    unknown = vms("gb28181", "catalog", NVR, code=2)
    assert "no GB/T 28181 device" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, catalog_quiet_s=1.0, subscribe=False)
    service.server.query_catalog_on_register = False
    service.start()
    dev = RawDevice("udp", service.udp_port or 0, NVR)
    dev.sock.settimeout(20.0)
    try:
        assert dev.register().status == 200
        assert wait_for(lambda: [d for d in list_devices(inv) if d["online"]], timeout=10)
        proc = subprocess.Popen([*VMS, "gb28181", "catalog", NVR, "--timeout", "30"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            answer_query(dev)
            out, errors = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, errors
        assert f"{NVR}: catalog of 1 items, complete; 1 cameras listed (source gb28181:{NVR})" in out
        again = RawDevice("udp", service.udp_port or 0, NVR)
        try:
            assert again.register(expires=0).status == 200
        finally:
            again.close()
        assert wait_for(lambda: not [d for d in list_devices(inv) if d["online"]], timeout=10)
    finally:
        dev.close()
        service.stop()
    offline = vms("gb28181", "catalog", NVR, code=2)
    assert "offline" in offline.stderr and len(offline.stderr.strip().splitlines()) == 1
