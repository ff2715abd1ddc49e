"""Non-INVITE client transactions (RFC 3261 17.1.2) shared by the SIP server (its Catalog queries, SUBSCRIBEs) and
the upstream client (REGISTER, keepalives, Catalog answers): the request retransmitted on UDP by timer E (T1
doubling to T2; T2 after a provisional response), the final response matched by the top Via's branch, given up
after timer F (64 x T1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from probes.gb28181.message import SipMessage, parse_via

__all__ = ["T1", "T2", "ClientTransactions", "NoPath", "TransactionTimeout"]

T1: Final = 0.5  # RFC 3261 timer T1 (round-trip estimate)
T2: Final = 4.0  # the cap of non-INVITE retransmission intervals


class NoPath(Exception):
    """The request could not be sent at all (no socket, no connection to the peer)."""


class TransactionTimeout(Exception):
    """No final response within timer F."""


@dataclass(slots=True)
class _Tx:
    data: bytes
    send: Callable[[bytes], bool]
    future: asyncio.Future[SipMessage]
    interval: float
    handle: asyncio.TimerHandle | None = None


class ClientTransactions:
    """The transactions in flight, by branch. ``count`` gets the names of what happens (``retransmissions``,
    ``timeouts``, ``stray_responses``) with ``prefix`` before them."""

    def __init__(self, count: Callable[[str], None], *, prefix: str = "") -> None:
        self._txs: dict[str, _Tx] = {}
        self._count = count
        self._prefix = prefix

    def __len__(self) -> int:
        return len(self._txs)

    async def request(
        self, branch: str, data: bytes, send: Callable[[bytes], bool], *, retransmit: bool, t1: float = T1
    ) -> SipMessage:
        """Send ``data`` (a request whose top Via has ``branch``) and wait for its final response. ``send`` returns
        False when there is no way to the peer (NoPath). ``retransmit``: on UDP."""
        loop = asyncio.get_running_loop()
        tx = _Tx(data, send, loop.create_future(), t1)
        self._txs[branch] = tx
        try:
            if not send(data):
                raise NoPath
            if retransmit:
                tx.handle = loop.call_later(tx.interval, self._retransmit, branch)
            try:
                return await asyncio.wait_for(asyncio.shield(tx.future), 64 * t1)
            except TimeoutError:
                self._count(f"{self._prefix}timeouts")
                raise TransactionTimeout from None
        finally:
            if tx.handle is not None:
                tx.handle.cancel()
            self._txs.pop(branch, None)

    def _retransmit(self, branch: str) -> None:
        tx = self._txs.get(branch)
        if tx is None or tx.future.done():
            return
        self._count(f"{self._prefix}retransmissions")
        with contextlib.suppress(Exception):  # the next retransmission or timer F decides
            tx.send(tx.data)
        tx.interval = min(tx.interval * 2, T2)
        tx.handle = asyncio.get_running_loop().call_later(tx.interval, self._retransmit, branch)

    def response(self, msg: SipMessage) -> bool:
        """Hand a response to its transaction; False (and counted) when none waits for it."""
        vias = msg.vias()
        branch = parse_via(vias[0]).branch if vias else None
        tx = self._txs.get(branch or "")
        if tx is None:
            self._count("stray_responses")
            return False
        if msg.status < 200:  # provisional: keep waiting, retransmit at T2 (RFC 3261 17.1.2.2)
            tx.interval = T2
        elif not tx.future.done():
            tx.future.set_result(msg)
        return True

    def fail_all(self, exc: Exception) -> None:
        """Every transaction in flight ends with ``exc`` (stopped, connection lost)."""
        for tx in list(self._txs.values()):
            if tx.handle is not None:
                tx.handle.cancel()
            if not tx.future.done():
                tx.future.set_exception(exc)
                tx.future.exception()  # retrieved: a caller may be gone already (no "never retrieved" warning)
