"""The dashboard in a real browser: Debian's headless Chromium loads the page from a real uvicorn server over a
small inventory (the 18 Hong Kong district polygons, six cameras with health results) and the rendered page is
checked: the four indicators filled, the cameras drawn on the map (coloured by status), a row per region, the
recent status changes, the online-rate trend; with reads closed, the API-key prompt shows, a wrong key is refused
and a read key typed into the prompt opens the page. Every request the page makes stays on the app (no CDN, no
tiles). Screenshots are kept in the test's tmp dir.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: NUL-separated JSON on
file descriptors 3 and 4), so no WebSocket client is needed. Chromium missing: skipped, a failure on CI.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet

import api.app as api_app
from api.app import create_app
from probes.health.results import CheckResult, StageResult
from tests.services import ServiceUnavailable, free_port, skip_or_fail
from vms.access.apikeys import create_key
from vms.catalog.domain import Observation, SourceKind
from vms.health.service import Health
from vms.inventory.ingest import observation_key
from vms.inventory.service import Inventory
from vms.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "cameras"
HOUR = dt.timedelta(hours=1)
# Six Hong Kong traffic cameras (positions from hk_traffic_cameras.csv) and the outcome of their last check.
CAMERAS = [
    ("H429F", "Aberdeen Praya Road near Fish Market", 114.1501576, 22.2485255, "ok"),
    ("H210F", "Aberdeen Tunnel - Wan Chai Side", 114.1791642, 22.27490622, "off"),
    ("H421F", "Aberdeen Tunnel - Aberdeen Side", 114.1766512, 22.25024351, "defect"),
    ("K109F", "Waterloo Road near Kowloon Tong", 114.1770, 22.3330, "ok"),
    ("TC560F", "Tuen Mun Road near Sham Tseng", 114.0590, 22.3680, "ok"),
    ("NOPOS", "A camera without a position", None, None, None),
]
VIEW = (1280, 900)
TIMEOUT = 30.0


# --- Chromium over the DevTools protocol --------------------------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise ServiceUnavailable("chromium not found: apt-get install chromium (deploy/bootstrap.sh --dev installs it)")


class Browser:
    """One headless Chromium, one tab; commands and replies as NUL-terminated JSON over two pipes."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
        self._res_r, res_w = os.pipe()  # Chromium writes replies on fd 4
        args = [
            chromium_binary(),
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            f"--window-size={VIEW[0]},{VIEW[1]}",
            "about:blank",
        ]
        # bash puts the two pipe ends on fds 3 and 4 of the exec'd browser
        script = f'exec "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "chromium", *args],
            pass_fds=(cmd_r, res_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Network.enable"):
            self.call(domain, session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=VIEW[0],
            height=VIEW[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        data: dict[str, Any] = json.loads(msg)
        return data

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def js(self, expression: str) -> Any:
        reply = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """Poll ``expression`` until it is truthy (bounded in time)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.js("document.body ? document.body.dataset.state + ' ' + $('#message').textContent : ''")
                raise AssertionError(f"timed out waiting for {expression} (page: {state})")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        os.close(self._cmd_w)
        os.close(self._res_r)


# --- a small inventory behind two real servers (reads open, reads closed) ----------------------------------


def _inventory(data_dir: Path, db: str, *, open_reads: bool, secret: str) -> Inventory:
    settings = Settings(
        database_url=db, data_dir=data_dir, secret_key=secret, api_open_reads=open_reads, _env_file=None
    )
    return Inventory(settings)


def _fill(inv: Inventory) -> dict[str, int]:
    inv.upgrade()
    inv.import_regions(DATA / "hk_18_districts.geojson", name_property="name_en", actor="test")
    rows = []
    for key, name, lon, lat, _ in CAMERAS:
        row: dict[str, Any] = {"local_id": key, "name": name}
        if lon is not None:
            row |= {"longitude": lon, "latitude": lat}
        rows.append(row)
    obs = [Observation("ledger", SourceKind.LEDGER, observation_key(r), r) for r in rows]
    inv.ingest_observations(obs, source="ledger", kind=SourceKind.LEDGER, snapshot=True, actor="test")
    ids = {c["local_id"]: c["id"] for c in inv.list_cameras(_all(), limit=None)[1]}
    health = Health(inv)
    now = dt.datetime.now(dt.UTC)
    # Two days ago every camera with a position answered (ON); three, two and one hour ago the outcomes of CAMERAS
    # (a camera leaves ON after three failed checks in a row).
    sweeps = [(now - 48 * HOUR, False)] + [(now - h * HOUR, True) for h in (3, 2, 1)]
    for at, as_listed in sweeps:
        sweep = health.start_sweep(["tcp"], "all", at=at)
        results = []
        for key, _, lon, _, outcome in CAMERAS:
            if lon is None:
                continue
            out = outcome if as_listed else "ok"
            stages = (StageResult("tcp", out == "ok", 2.0, None if out == "ok" else "timeout"),)
            results.append(CheckResult(ids[key], at, stages, out, "tcp", None if out == "ok" else "timeout"))  # type: ignore[arg-type]
        health.record(results, sweep)
        health.finish_sweep(sweep, at=at + dt.timedelta(seconds=5))
    return ids


def _all() -> Any:
    from vms.store import repository as repo

    return repo.CameraFilter()


class Server:
    def __init__(self, inv: Inventory) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(inv), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    try:
        chromium_binary()
    except ServiceUnavailable as exc:
        skip_or_fail(exc)
    root = tmp_path_factory.mktemp("dashboard")
    db = f"sqlite:///{root / 'vms.sqlite3'}"
    secret = Fernet.generate_key().decode()
    open_inv = _inventory(root / "data", db, open_reads=True, secret=secret)
    ids = _fill(open_inv)
    closed_inv = _inventory(root / "data", db, open_reads=False, secret=secret)
    key = create_key(closed_inv, "wallboard", "read", actor="test")
    servers = [Server(open_inv), Server(closed_inv)]
    with pytest.MonkeyPatch.context() as mp:  # an app without the coverage statistics' routes
        mp.setattr(api_app, "ROUTES", tuple(m for m in api_app.ROUTES if m.__name__ != "api.routes.coverage"))
        servers.append(Server(open_inv))
    browser = Browser(root / "profile")
    try:
        yield {
            "open": servers[0],
            "closed": servers[1],
            "bare": servers[2],
            "browser": browser,
            "key": key,
            "ids": ids,
        }
    finally:
        browser.close()
        for s in servers:
            s.stop()
        for inv in (open_inv, closed_inv):
            inv.engine.dispose()


def _local_only(urls: list[str], base: str) -> None:
    outside = [u for u in urls if not (u.startswith(base + "/") or u.startswith(("data:", "about:", "blob:")))]
    assert not outside, f"the page asked for something outside the app: {outside}"


# --- tests --------------------------------------------------------------------------------------------------


def test_dashboard_renders_the_inventory(site: dict[str, Any], tmp_path: Path) -> None:
    b: Browser = site["browser"]
    base = site["open"].url
    b.open(base + "/")
    b.wait_for("document.body && document.body.dataset.state === 'ready'")
    b.screenshot(tmp_path / "dashboard.png")
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000

    # the indicators: 3 ON of 6 registered; none intact (no camera has a sampled picture); quality computed
    names = ["online", "intact", "aggregation", "quality", "total"]
    k = b.js(f"Object.fromEntries({json.dumps(names)}.map(i => [i, $('#k-' + i).textContent]))")
    assert k["online"] == "50.0%", k
    assert k["intact"] == "0.0%", k
    assert k["quality"].endswith("%") and k["quality"] != "–", k
    assert k["total"] == "6", k
    assert "3 / 6" in b.js("$('#k-online-n').textContent")

    # five cameras with a position drawn on the canvas, coloured by status (legend counts), one without
    assert b.js("$('#map').dataset.points") == "5"
    legend = b.js("$('#legend').textContent")
    assert "ON 3" in legend and "OFF 1" in legend and "DEFECT 1" in legend and "1 without position" in legend
    # the canvas really has the status colours painted (green ON, red OFF)
    colours = b.js(
        """(() => { const c = document.querySelector('canvas.vms-points'); const d = c.getContext('2d')
            .getImageData(0, 0, c.width, c.height).data; const seen = new Set();
            for (let i = 0; i < d.length; i += 4) if (d[i+3] > 200) seen.add(d[i] + ',' + d[i+1] + ',' + d[i+2]);
            return [...seen]; })()"""
    )
    assert "30,158,69" in colours and "217,48,37" in colours, colours[:20]

    # region polygons on the map (canvas paths of the 18 districts) and a row per region holding cameras
    assert b.js("Object.keys(regionBounds).length") == 18
    rows = b.js(
        "[...document.querySelectorAll('#t-regions tbody tr')].map(tr => [...tr.cells].map(c => c.textContent))"
    )
    by_name = {r[1]: r for r in rows}
    assert len(rows) == 18  # every district, also those without a camera
    assert sum(int(r[2]) for r in rows) == 5  # the camera without a position lies in no district
    assert by_name["SOUTHERN"][2:8] == ["2", "1", "0", "1", "0", "50.0%"], by_name["SOUTHERN"]  # Aberdeen
    assert by_name["WAN CHAI"][2:8] == ["1", "0", "1", "0", "0", "0.0%"], by_name["WAN CHAI"]  # the tunnel's north end

    # recent status changes (the OFF and DEFECT an hour ago) and the online-rate trend of 14 days
    events = b.js("[...document.querySelectorAll('#t-events tbody tr')].map(tr => tr.textContent)")
    assert any("Wan Chai Side" in e and "OFF" in e for e in events), events
    assert any("Aberdeen Side" in e and "DEFECT" in e for e in events), events
    assert b.js("document.querySelectorAll('#trend circle.day').length") >= 2
    _local_only(b.requested_urls(), base)


def test_closed_reads_ask_for_a_key(site: dict[str, Any], tmp_path: Path) -> None:
    b: Browser = site["browser"]
    base = site["closed"].url
    b.open(base + "/")
    b.wait_for("document.body && document.body.dataset.state === 'key'")
    assert b.js("$('#key-prompt').hidden") is False
    assert b.js("$('#k-online').textContent") == "–"
    b.screenshot(tmp_path / "key-prompt.png")

    # a wrong key is refused and asked for again
    b.js("$('#key-input').value = 'vms_wrong'; $('#key-form').requestSubmit(); true")
    b.wait_for("document.body.dataset.state === 'key' && $('#key-error').textContent.includes('refused')")

    # the read key opens the page; it is kept for this tab (sessionStorage), not in localStorage or a cookie
    b.js(f"$('#key-input').value = {json.dumps(site['key'])}; $('#key-form').requestSubmit(); true")
    b.wait_for("document.body.dataset.state === 'ready'")
    assert b.js("$('#k-online').textContent") == "50.0%"
    assert b.js("$('#map').dataset.points") == "5"
    assert b.js("sessionStorage.getItem('vms.apiKey')") == site["key"]
    assert b.js("localStorage.length") == 0 and b.js("document.cookie") == ""
    b.screenshot(tmp_path / "after-key.png")
    _local_only(b.requested_urls(), base)


def test_without_coverage_statistics_the_map_still_works(site: dict[str, Any]) -> None:
    """A server without the coverage statistics (or with them failing): indicators and the region table show
    nothing, the map and the status changes still do."""
    b: Browser = site["browser"]
    b.open(site["bare"].url + "/")
    b.wait_for("document.body && document.body.dataset.state === 'ready'")
    assert b.js("$('#map').dataset.points") == "5"
    assert b.js("$('#k-online').textContent") == "–"
    assert "unavailable" in b.js("$('#k-online-n').textContent")
    assert b.js("document.querySelectorAll('#t-events tbody tr').length") >= 2


def test_docs_are_served_locally(site: dict[str, Any]) -> None:
    b: Browser = site["browser"]
    base = site["open"].url
    b.open(base + "/docs")
    b.wait_for("document.querySelectorAll('.opblock').length > 0")
    assert b.js("document.querySelector('.opblock-summary-path').textContent").startswith("/")
    _local_only(b.requested_urls(), base)


def test_map_data_endpoints(site: dict[str, Any]) -> None:
    base = site["open"].url
    with httpx.Client(base_url=base, timeout=TIMEOUT) as c:
        pts = c.get("/api/v1/dashboard/points").json()
        assert pts["count"] == 5 and pts["without_position"] == 1
        assert sorted(pts["id"]) == sorted(v for k, v in site["ids"].items() if k != "NOPOS")
        on = pts["statuses"].index("ON")
        assert sum(1 for s in pts["status"] if s == on) == 3
        shapes = c.get("/api/v1/dashboard/regions").json()
        assert len(shapes["features"]) == 18 and {"code", "name"} <= set(shapes["features"][0]["properties"])
        southern = next(f["properties"]["code"] for f in shapes["features"] if f["properties"]["name"] == "SOUTHERN")
        some = c.get("/api/v1/dashboard/points", params={"region": southern}).json()
        assert some["count"] == 2 and sorted(some["id"]) == sorted([site["ids"]["H429F"], site["ids"]["H421F"]])
        assert c.get("/api/v1/dashboard/points", params={"region": "N%"}).json()["count"] == 0  # literal, not LIKE
        assert c.get("/api/v1/dashboard/regions", params={"tolerance": 1}).status_code == 422
        events = c.get("/api/v1/events", params={"limit": 2}).json()["items"]
        assert len(events) == 2 and events[0]["at"] >= events[1]["at"]
        assert c.get("/static/../app.py").status_code == 404
        assert c.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    with httpx.Client(base_url=site["closed"].url, timeout=TIMEOUT) as c:
        for path in ("/api/v1/dashboard/points", "/api/v1/dashboard/regions", "/api/v1/events"):
            assert c.get(path).status_code == 401, path
        assert c.get("/static/app.js").status_code == 200  # the page loads without a key, then asks for one
