"""`vms gb28181 serve|devices|catalog`: the GB/T 28181 SIP server that devices and lower platforms register to
(vms.gb28181), the devices registered, and a Catalog query on demand.

Registered from vms.cli.main (``register(app)``); its helpers and everything heavy are imported inside the commands:
`vms --help` imports none of it. Catalog queries run inside the server (`serve`, or `vms run`): after each
registration, every VMS_GB28181_CATALOG_INTERVAL_S, and on demand (`catalog` leaves the request in the database for the
server's process to take)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

gb_app = typer.Typer(
    no_args_is_help=True,
    help="GB/T 28181 access: the SIP server devices and lower platforms register to, and the devices registered.",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def register(app: typer.Typer) -> None:
    """Add `vms gb28181 ...` to the `vms` app."""
    app.add_typer(gb_app, name="gb28181")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


@gb_app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="address to listen on (default VMS_GB28181_HOST)")] = None,
    udp_port: Annotated[int | None, typer.Option(help="UDP port (default VMS_GB28181_PORT); -1: no UDP")] = None,
    tcp_port: Annotated[int | None, typer.Option(help="TCP port (default VMS_GB28181_PORT); -1: no TCP")] = None,
) -> None:
    """Run the SIP server in the foreground until interrupted (Ctrl-C): registrations, keepalives, catalogs."""
    import signal
    import threading

    from vms.cli.main import console, errors_to_exit, inventory
    from vms.gb28181.service import GbService

    with errors_to_exit():
        for name, value in (("--udp-port", udp_port), ("--tcp-port", tcp_port)):
            if value is not None and not -1 <= value <= 65535:
                raise ValueError(f"{name} {value}: want a port 0-65535 (0: any free port; -1: off)")
        inv = inventory()
        port = inv.settings.gb28181_port
        udp = None if udp_port == -1 else port if udp_port is None else udp_port
        tcp = None if tcp_port == -1 else port if tcp_port is None else tcp_port
        service = GbService(inv, host=host, udp_port=udp, tcp_port=tcp)
        try:
            service.start()
        except OSError as exc:
            where = (
                f"{service.server.host} (udp {udp if udp is not None else '-'}, tcp {tcp if tcp is not None else '-'})"
            )
            raise OSError(f"cannot listen for GB/T 28181 on {where}: {exc.strerror or exc}") from exc
    settings = inv.settings
    console.print(
        f"vms gb28181: SIP server {settings.gb28181_id} (realm {settings.gb28181_realm}) on {service.server.host}"
        f" udp {service.udp_port or '-'} tcp {service.tcp_port or '-'}; Ctrl-C stops",
        highlight=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        console.print("vms gb28181: stopped", highlight=False)


@gb_app.command("catalog")
def catalog_cmd(
    device_id: Annotated[str, typer.Argument(help="the registered device's ID (`vms gb28181 devices`)")],
    timeout: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="seconds to wait for the device's answer")
    ] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Ask a registered device for its Catalog now and wait for the answer (merged into the inventory as the source
    gb28181:<ID>). The SIP server's process (`vms gb28181 serve` or `vms run`, on this database) takes the request
    within a second or two. Exit 2 when the device is unknown or offline, the query fails, or nothing answers
    within --timeout."""
    from vms.access.apikeys import cli_address
    from vms.cli.main import console, emit_json, errors_to_exit, inventory
    from vms.gb28181.devices import request_catalog, wait_catalog

    with errors_to_exit():
        inv = inventory()
        since = request_catalog(inv, device_id, actor="cli", address=cli_address())
        row = wait_catalog(inv, device_id, since, timeout=timeout)
    if as_json:
        emit_json(row)
        return
    complete = "complete" if row["catalog_complete"] else "incomplete (quiet period or timeout before SumNum items)"
    console.print(
        f"{row['device_id']}: catalog of {row['catalog_items']} items, {complete}; {row['channels']} cameras listed "
        f"(source {row['source']})",
        highlight=False,
    )


@gb_app.command("devices")
def devices_cmd(
    online: Annotated[bool | None, typer.Option("--online/--offline", help="only those online / offline")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The devices and lower platforms registered: ID, name, transport, address, online, last seen, expiry,
    channels (cameras their catalog lists)."""
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory
    from vms.gb28181.devices import list_devices

    with errors_to_exit():
        rows = list_devices(inventory(), online=online)
    if as_json:
        emit_json(rows)
        return
    table = Table("ID", "name", "transport", "address", "online", "last seen", "expires", "channels")
    for r in rows:
        address = f"{r['host']}:{r['port']}" if r["host"] else "-"
        table.add_row(
            r["device_id"],
            r["name"] or "-",
            r["transport"] or "-",
            address,
            "yes" if r["online"] else "no",
            _when(r["last_seen"]),
            _when(r["expires_at"]),
            str(r["channels"]),
        )
    console.print(table)
    console.print(f"{len(rows)} devices, {sum(r['online'] for r in rows)} online", highlight=False)


@gb_app.command("upstream")
def upstream_cmd(as_json: JsonOpt = False) -> None:
    """Cascade upward: the upper platform vms registers to (VMS_GB28181_UPSTREAM_*) and the registration's state as
    the running server (`vms gb28181 serve` or `vms run`, on this data directory) last wrote it: registered or
    retrying, since when, the last keepalive answered, the last error, Catalog queries answered."""
    import os

    from vms.cli.main import console, emit_json, errors_to_exit, inventory
    from vms.gb28181.upstream import read_status, upstream_config

    with errors_to_exit():
        inv = inventory()
        cfg = upstream_config(inv)
        status = read_status(inv.settings) if cfg is not None else None
    running = False
    if status is not None and isinstance(status.get("pid"), int):
        try:
            os.kill(status["pid"], 0)
            running = status.get("state") != "stopped"
        except (OSError, ValueError):
            running = False
    if as_json:
        emit_json({
            "configured": cfg is not None,
            "upstream": None if cfg is None else {
                "id": cfg.upstream_id, "domain": cfg.upstream_domain, "host": cfg.host, "port": cfg.port,
                "transport": cfg.transport, "local_id": cfg.local_id, "password_set": bool(cfg.password),
            },
            "running": running,
            "status": status,
        })  # fmt: skip
        return
    if cfg is None:
        console.print("cascade upward off (set VMS_GB28181_UPSTREAM_HOST to register to an upper platform)")
        return
    console.print(
        f"upper platform {cfg.upstream_id} (domain {cfg.upstream_domain}) at {cfg.host}:{cfg.port} "
        f"{cfg.transport.upper()}; we register as {cfg.local_id}"
        + ("" if cfg.password else " [yellow](no password set)[/yellow]"),
        highlight=False,
    )
    if status is None:
        console.print("state: not started (`vms gb28181 serve` or `vms run` registers)", highlight=False)
        return
    state = status.get("state") if running else f"{status.get('state')} (not running now)"
    console.print(f"state: {state}", highlight=False)
    for key, label in (
        ("registered_at", "registered at"), ("expires_at", "expires at"),
        ("last_keepalive_at", "last keepalive answered"), ("last_error", "last error"),
        ("failures", "failed attempts in a row"), ("next_attempt_at", "next attempt"),
        ("catalog_queries", "Catalog queries answered"), ("catalog_messages", "Catalog messages sent"),
        ("written_at", "as of"),
    ):  # fmt: skip
        if status.get(key) not in (None, 0, ""):
            console.print(f"  {label}: {status[key]}", highlight=False)
