"""The route stream from the controller (protocol: docs/architecture.md; messages:
controller/agents/messages.py).

The connection lives on the route thread, which also owns the kernel route table:
a delta is read, applied and acknowledged with no thread hand-off, because every
hop here adds to the first packet of a new connection.  Commands are handed to the
event loop and answered from there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
from concurrent.futures import Executor
from typing import Any

from pydantic import ValidationError
from websockets.exceptions import ConnectionClosedError, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection

from controller.agents.messages import (
    CLOSE_HOST_REMOVED,
    CLOSE_NOT_SERVED_HERE,
    CLOSE_REPLACED,
    STATE_KINDS,
    STATE_MESSAGE,
    Ack,
    CommandMessage,
    DeltaMessage,
    MeshMessage,
    Nack,
    NamesMessage,
    NatMessage,
    named_master,
)
from controller.trust.wsclient import connect as ws_connect
from hostnet.agent.client import ControllerClient, ControllerError, bearer, stream_url
from hostnet.agent.commands import Commands
from hostnet.agent.metrics.instruments import AgentMetrics
from hostnet.agent.names import NamesTable
from hostnet.agent.registration import BACKOFF_MIN, Registrar, next_backoff
from hostnet.agent.tunnel import Tunnel
from hostnet.host.nat import NatError, NatTable
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import OvsError
from hostnet.host.routes import KernelRouteTable
from hostnet.host.wireguard import WireGuardError
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)

REPLICA_BACKOFF_MAX = 0.5  # with several controller replicas, during an election
# A replica that does not master this host names the one that does (4503): the agent
# goes there at once.  During a handover the two replicas' views of the assignment
# differ for a moment (each names the other); the agent follows the names, this far
# apart, at most REDIRECTS_MAX times in a row before it backs off as after any refusal
# (the stream is the host's only path to its routes: every pause delays new
# connections of its containers).
REDIRECT_PAUSE = 0.05
REDIRECTS_MAX = 60
# After a newer stream of this host replaced ours (CLOSE_REPLACED): another agent of
# this host runs (or ran: a reconnect race ends the older stream, which this agent
# no longer listens to).  The newer wins; this agent waits before it takes the stream
# back, longer after each loss, so two agents of one host never fight in a loop.
TAKEOVER_BACKOFF_MIN = 5.0
TAKEOVER_BACKOFF_MAX = 300.0


def takeover_pause(losses: int) -> float:
    """Seconds to wait after the `losses`-th replacement in a row (1, 2, ...)."""
    return min(TAKEOVER_BACKOFF_MAX, TAKEOVER_BACKOFF_MIN * 2.0 ** min(losses - 1, 16))


class StateApplier:
    """Applies the numbered messages (snapshot, delta, nat, mesh, names) on the route
    thread, counting the routes held and the messages that failed (`metrics`)."""

    def __init__(self, table: KernelRouteTable, nat: NatTable, tunnel: Tunnel,
                 names: NamesTable, metrics: AgentMetrics | None = None) -> None:
        self.table = table
        self.nat = nat
        self.tunnel = tunnel
        self.names = names
        self.metrics = metrics or AgentMetrics()
        self._held: set[str] = set()  # destinations of the routes applied

    def apply(self, msg: Any) -> dict[str, Any] | None:
        """Apply one stream message (route thread only); the ack/nack to send."""
        if not isinstance(msg, dict):
            log.warning("ignoring stream message that is not an object")
            return None
        kind, seq = msg.get("type"), msg.get("seq")
        if kind not in STATE_KINDS or not isinstance(seq, int):
            log.warning("ignoring stream message type=%r seq=%r", kind, seq)
            return None
        try:
            self._apply(STATE_MESSAGE.validate_python(msg))
        except ValidationError as exc:
            err = " ".join(str(exc).split())
            log.error("%s %d rejected: %s", kind, seq, err)
            nack = Nack(seq=seq, error=f"invalid {kind}: {err}")
        except (NetlinkError, NatError, WireGuardError, ValueError) as exc:
            log.error("%s %d failed: %s", kind, seq, exc)
            nack = Nack(seq=seq, error=str(exc))
        except Exception as exc:  # a bug: say so to the controller, keep the stream
            log.exception("%s %d failed unexpectedly", kind, seq)
            nack = Nack(seq=seq, error=f"{type(exc).__name__}: {exc}")
        else:
            return Ack(seq=seq).wire()
        self.metrics.reconcile_failed(kind)
        return nack.wire()

    def _apply(self, msg: Any) -> None:
        wg = self.tunnel.wg
        if isinstance(msg, NamesMessage):
            self.names.load(msg.tables)  # the name responder answers from it at once
            log.info("names %d: %d containers", msg.seq, len(msg.tables))
        elif isinstance(msg, MeshMessage):
            self.tunnel.apply_mesh(msg.hosts)
            log.info("mesh %d: %d peers", msg.seq, self.tunnel.peer_count())
        elif isinstance(msg, NatMessage):
            self.nat.apply(msg.rules)
            log.info("nat %d: %d rules", msg.seq, len(msg.rules))
        elif isinstance(msg, DeltaMessage):
            if wg is not None:
                wg.change_routes(msg.add, ())
            self.table.apply_delta(msg.add, msg.remove)
            self._held.difference_update(str(r.dst) for r in msg.remove)
            self._held.update(str(r.dst) for r in msg.add)
            self.metrics.held(len(self._held))
            if wg is not None:
                wg.change_routes((), msg.remove)  # after the routes are gone
            log.debug("delta %d: +%d -%d", msg.seq, len(msg.add), len(msg.remove))
        else:
            if wg is not None:
                wg.set_routes(msg.routes)  # allowed-ips before the routes use them
            plan = self.table.apply_snapshot(msg.routes)
            self._held = {str(r.dst) for r in msg.routes}
            self.metrics.held(len(self._held))
            log.info(
                "snapshot %d: %d routes (+%d, -%d routes, -%d neighbours)", msg.seq,
                len(msg.routes), len(plan.install), len(plan.delete_routes),
                len(plan.delete_neighbours),
            )


class Stream:
    """Keeps the stream to a controller replica up until `stop` is set."""

    def __init__(
        self,
        host: str,
        client: ControllerClient,
        registrar: Registrar,
        applier: StateApplier,
        commands: Commands,
        stop: asyncio.Event,
        *,
        route_exec: Executor,
        loop: asyncio.AbstractEventLoop,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.host = host
        self.metrics = metrics or AgentMetrics()
        self.client = client
        self.registrar = registrar
        self.applier = applier
        self.commands = commands
        self.stop = stop
        self.route_exec = route_exec
        self.loop = loop
        self._ws: ClientConnection | None = None
        self._running: set[concurrent.futures.Future[None]] = set()
        self._received = False  # the current connection delivered a message
        self._resync = False  # we end the connection to get the whole state again

    def close(self) -> None:
        """End the blocking connection on the route thread (at stop)."""
        ws = self._ws
        if ws is not None:
            ws.close()

    def resync(self) -> None:
        """Ask for the host's whole state again: end this connection; the loop connects
        again at once to the same replica, whose first messages (mesh, snapshot) are
        level-triggered and put back what the host lost."""
        self._resync = True
        self.close()

    def cancel_commands(self) -> None:
        for future in list(self._running):
            future.cancel()

    async def run(self) -> None:
        """Keep the stream up, moving on to the next controller replica when one
        refuses it (it does not master this host's switch) or goes away; the backoff
        grows only once every replica has been tried.  A stream replaced by a newer one
        of this host waits longer (`takeover_pause`) before it connects again.  A stream
        closed because the host was removed (CLOSE_HOST_REMOVED) ends the loop: the
        agent does not register the host again until it is restarted."""
        delay = BACKOFF_MIN
        register = False  # registered just before the stream starts
        tried = 0
        losses = 0  # replacements in a row (reset by any other end of a stream)
        redirects = 0  # 4503 closes in a row that named a replica of ours
        while not self.stop.is_set():
            replaced = False
            redirect: str | None = None
            try:
                if register:
                    await self.registrar.register()  # the controller may have restarted
                register = True
                self._received = False
                await in_thread(self.route_exec, self._connect, self.client.token)
                if not self._resync:
                    log.warning("stream closed by the controller %s", self.client.base_url)
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                log.warning("stream refused by %s: HTTP %s%s", self.client.base_url,
                            exc.response.status_code, refusal_detail(exc.response.body))
            except ConnectionClosedError as exc:
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                code = exc.rcvd.code if exc.rcvd is not None else None
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_HOST_REMOVED:
                    log.error("%s (%s): this agent no longer registers it; restart the "
                              "agent to register it as a new host", reason,
                              self.client.base_url)
                    return
                replaced = code == CLOSE_REPLACED
                if code == CLOSE_NOT_SERVED_HERE:
                    redirect = named_master(reason)
                if not replaced:
                    log.warning("stream of %s ended: %s", self.client.base_url,
                                reason or " ".join(str(exc).split()))
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("stream lost: %s", " ".join(str(exc).split()) or type(exc).__name__)
            except ControllerError as exc:
                log.warning("re-registration failed: %s", exc.detail)
            except (OvsError, NetlinkError) as exc:
                log.error("bridge update after re-registration failed: %s", exc)
            except Exception:  # never let the stream die: log and reconnect
                log.exception("stream failed unexpectedly")
            if self._received:  # the stream served: the next refusals are a new series
                redirects = tried = 0
                delay = BACKOFF_MIN
            if self._resync:  # we ended it for a fresh snapshot: the same replica, now
                self._resync = False
                register = False
                log.info("stream of %s: connecting again for the whole state",
                         self.client.base_url)
                continue
            if (redirect is not None and redirects < REDIRECTS_MAX
                    and self.client.use(redirect)):
                # the replica that refused knew this host (no registration needed)
                redirects += 1
                losses = 0
                register = False
                pause = REDIRECT_PAUSE
            elif replaced:
                redirects = 0
                losses += 1
                pause = takeover_pause(losses)
                log.warning(
                    "stream of host %s taken over at %s: %s; another agent of this host is "
                    "connected (the newer stream wins); connecting again in %gs",
                    self.host, self.client.base_url, reason, pause)
            else:
                redirects = 0
                losses = 0
                tried += 1
                self.client.rotate()
                pause = BACKOFF_MIN / 2
                if tried >= len(self.client.urls):
                    pause, delay, tried = delay, next_backoff(delay), 0
                    if len(self.client.urls) > 1:
                        # replicas: one of them is being elected; look again soon
                        pause = min(pause, REPLICA_BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=pause)

    def _connect(self, token: str | None) -> None:
        """One stream connection (route thread); `_received` says whether it delivered
        a message (read by `run` however the connection ended)."""
        url = stream_url(self.client.base_url, self.host)
        tls = self.client.tls
        with ws_connect(
            url,
            additional_headers=bearer(token),
            # wss: the host's certificate, which names the host whose stream this is
            ssl=tls.refresh() if tls is not None and url.startswith("wss:") else None,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            max_size=64 * 1024 * 1024,
        ) as ws:
            self._ws = ws
            self.metrics.stream_opened()
            try:
                if self.stop.is_set():
                    return
                log.info("stream connected to %s", url)
                for raw in ws:
                    self._received = True
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        log.warning("ignoring stream message that is not JSON")
                        continue
                    if isinstance(msg, dict) and msg.get("type") == "command":
                        self._dispatch_command(ws, msg)
                        continue
                    reply = self.applier.apply(msg)
                    if reply is not None:
                        ws.send(json.dumps(reply))
            finally:
                self._ws = None
                self.metrics.stream_closed()

    def _dispatch_command(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        """Run a command on the event loop (route thread: never wait for it here)."""
        try:
            cmd = CommandMessage.model_validate(msg)
        except ValidationError as exc:
            log.warning("ignoring command: %s", " ".join(str(exc).split()))
            return
        future = asyncio.run_coroutine_threadsafe(self._command(ws, cmd), self.loop)
        self._running.add(future)
        future.add_done_callback(self._running.discard)

    async def _command(self, ws: ClientConnection, cmd: CommandMessage) -> None:
        reply = await self.commands.run(cmd)
        with contextlib.suppress(WebSocketException, OSError):
            await in_thread(None, ws.send, json.dumps(reply.wire()))


def refusal_detail(body: bytes | bytearray | None) -> str:
    """`: <detail>` of a refused stream's JSON answer (the controller names why:
    another host's stream, a revoked certificate), or ""."""
    try:
        detail = json.loads(bytes(body or b"")).get("detail")
    except (ValueError, AttributeError):
        return ""
    return f": {detail}" if isinstance(detail, str) else ""
