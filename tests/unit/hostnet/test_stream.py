"""The agent's stream loop (hostnet/agent/stream.py): when a newer stream of its host
replaces its own it logs why, at warning, and waits longer after each loss instead of
taking the stream back at once; when a replica refuses it and names the master, it
goes there at once; when its host was removed it stops."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from controller.agents.messages import (
    CLOSE_HOST_REMOVED,
    CLOSE_NOT_SERVED_HERE,
    CLOSE_REASON_MAX,
    CLOSE_REPLACED,
    named_master,
    not_master_reason,
)
from hostnet.agent import stream as stream_mod
from hostnet.agent.client import ControllerClient
from hostnet.agent.stream import Stream, takeover_pause

REPLACED = "replaced by a newer stream of host h1 from 198.18.0.99:40000"
REMOVED = "host h1 was removed from the controller"


class FakeClient:
    """The replica list of ControllerClient, and where each connection went."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.current = 0
        self.token = "tok"

    @property
    def base_url(self) -> str:
        return self.urls[self.current]

    def rotate(self) -> None:
        self.current = (self.current + 1) % len(self.urls)

    def use(self, url: str) -> bool:
        if url not in self.urls:
            return False
        self.current = self.urls.index(url)
        return True


class FakeRegistrar:
    def __init__(self) -> None:
        self.calls = 0

    async def register(self) -> None:
        self.calls += 1


class ScriptedStream(Stream):
    """Each connection ends as the script says (a close code), then `stop` is set."""

    def __init__(self, script: list[int | tuple[int, str]], stop: asyncio.Event,
                 pool: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop,
                 urls: list[str]) -> None:
        fake: Any = None
        self.fake_client = FakeClient(urls)
        self.registrar_calls = FakeRegistrar()
        super().__init__("h1", self.fake_client, self.registrar_calls, fake, fake,  # type: ignore[arg-type]
                         stop, route_exec=pool, loop=loop)
        self.script = list(script)
        self.connects = 0
        self.went_to: list[str] = []

    def _connect(self, token: str) -> None:
        self.connects += 1
        self.went_to.append(self.fake_client.base_url)
        if not self.script:
            self.loop.call_soon_threadsafe(self.stop.set)
            return
        step = self.script.pop(0)
        code, reason = step if isinstance(step, tuple) else (
            step, {CLOSE_REPLACED: REPLACED, CLOSE_HOST_REMOVED: REMOVED}.get(step, "server error"))
        raise ConnectionClosedError(Close(code, reason), None)


def run_stream(script: list[int | tuple[int, str]], monkeypatch: pytest.MonkeyPatch,
               urls: list[str] | None = None) -> tuple[ScriptedStream, list[float]]:
    """Run the loop over `script`; the stream and the pauses it took (the waits are
    shortened)."""
    pauses: list[float] = []
    real_wait_for = asyncio.wait_for

    async def quick_wait_for(aw: Any, timeout: float | None) -> Any:
        pauses.append(float(timeout or 0))
        return await real_wait_for(aw, 0.001)

    monkeypatch.setattr(stream_mod.asyncio, "wait_for", quick_wait_for)

    async def main() -> ScriptedStream:
        with ThreadPoolExecutor(1) as pool:
            s = ScriptedStream(script, asyncio.Event(), pool, asyncio.get_running_loop(),
                               urls or ["http://ctl:8080"])
            await s.run()
            return s

    s = asyncio.run(main())
    assert s.connects == len(script) + 1
    return s, pauses


def run_script(script: list[int], monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Run the loop over `script`; the pauses it took (the waits are shortened).  One
    connect per end: two agents of one host do not fight."""
    return run_stream(list(script), monkeypatch)[1]


def test_a_replaced_stream_logs_why_and_backs_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=stream_mod.__name__)
    pauses = run_script([CLOSE_REPLACED] * 3, monkeypatch)
    assert pauses[:3] == [5.0, 10.0, 20.0]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "taken over" in r.getMessage()]
    assert len(warnings) == 3
    assert warnings[0] == (
        f"stream of host h1 taken over at http://ctl:8080: {REPLACED}; another agent of "
        "this host is connected (the newer stream wins); connecting again in 5s")


def test_any_other_end_resets_the_takeover_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses = run_script([CLOSE_REPLACED, CLOSE_REPLACED, 1011, CLOSE_REPLACED], monkeypatch)
    assert pauses[0:2] == [5.0, 10.0]
    assert pauses[2] < 1.0  # an ordinary end: the ordinary, short backoff
    assert pauses[3] == 5.0


def test_the_takeover_pause_is_bounded() -> None:
    assert [takeover_pause(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert takeover_pause(7) == takeover_pause(10_000) == stream_mod.TAKEOVER_BACKOFF_MAX


# --- a refusing replica names the master ----------------------------------------------

A, B, C = "http://ctl-a:8080", "http://ctl-b:8080", "http://ctl-c:8080"


def test_a_named_master_is_the_next_try_without_registering_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hands h1 over to C (the third replica in the agent's list): the agent goes to
    C next, at once, instead of trying B first and backing off."""
    s, pauses = run_stream([(CLOSE_NOT_SERVED_HERE, not_master_reason("h1", C))],
                           monkeypatch, [A, B, C])
    assert s.went_to == [A, C]
    assert pauses[0] == stream_mod.REDIRECT_PAUSE
    assert s.registrar_calls.calls == 0


def test_two_replicas_naming_each_other_are_followed_until_one_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """During a handover the old master names the new one, which (its view a moment
    behind) still names the old: the agent follows the names at the short pause, no
    backoff, until the new master serves."""
    script: list[int | tuple[int, str]] = [
        (CLOSE_NOT_SERVED_HERE, not_master_reason("h1", B if i % 2 == 0 else A))
        for i in range(8)
    ]
    s, pauses = run_stream(script, monkeypatch, [A, B])
    assert s.went_to == [A, B] * 4 + [A]
    assert pauses[:8] == [stream_mod.REDIRECT_PAUSE] * 8


def test_redirects_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas that keep naming each other (a bug, or views that never agree)
    do not make the agent spin: after REDIRECTS_MAX in a row it backs off as after any
    refusal, then follows the names again."""
    n = stream_mod.REDIRECTS_MAX + 3
    script: list[int | tuple[int, str]] = [
        (CLOSE_NOT_SERVED_HERE, not_master_reason("h1", B if i % 2 == 0 else A))
        for i in range(n)
    ]
    _, pauses = run_stream(script, monkeypatch, [A, B])
    most = stream_mod.REDIRECTS_MAX
    assert pauses[:most] == [stream_mod.REDIRECT_PAUSE] * most
    assert pauses[most] >= stream_mod.BACKOFF_MIN / 2
    assert pauses[most + 1] == stream_mod.REDIRECT_PAUSE


def test_a_url_the_operator_did_not_configure_is_not_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bearer token goes where the stream goes: a named URL outside the agent's
    --controller list is ignored (the next configured replica is tried)."""
    s, pauses = run_stream([(CLOSE_NOT_SERVED_HERE, not_master_reason("h1", "http://evil:80"))],
                           monkeypatch, [A, B])
    assert s.went_to == [A, B]
    assert pauses[0] != stream_mod.REDIRECT_PAUSE
    assert s.registrar_calls.calls == 1


def test_a_refusal_without_a_name_tries_the_next_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = run_stream([(CLOSE_NOT_SERVED_HERE, not_master_reason("h1", None))],
                      monkeypatch, [A, B])
    assert s.went_to == [A, B]


def test_the_close_reason_names_the_master_within_the_frame_bound() -> None:
    assert named_master(not_master_reason("h1", B)) == B
    assert named_master(not_master_reason("h1", None)) is None
    assert named_master("not the leader; no leader now") is None
    long_host = "h" * 100
    reason = not_master_reason(long_host, B)
    assert len(reason.encode()) <= CLOSE_REASON_MAX and named_master(reason) == B
    long_url = "http://" + "x" * 120 + ":8080"
    reason = not_master_reason("h1", long_url)
    assert len(reason.encode()) <= CLOSE_REASON_MAX and named_master(reason) is None
    assert len(not_master_reason(long_host, None).encode()) <= CLOSE_REASON_MAX


def test_the_client_goes_only_to_configured_replicas() -> None:
    client = ControllerClient(f"{A},{B}/", "tok")
    assert client.use(B + "/") and client.base_url == B
    assert not client.use("http://evil:80") and client.base_url == B
    asyncio.run(client.aclose())


def test_a_removed_host_stops_the_stream_without_registering_again(
    caplog: pytest.LogCaptureFixture
) -> None:
    """Registering again would bring the removed host back at once (every reconnect
    re-registers): the loop ends instead, with one error line saying why and what
    to do, although the stop event is not set."""
    caplog.set_level(logging.WARNING, logger=stream_mod.__name__)

    async def main() -> ScriptedStream:
        with ThreadPoolExecutor(1) as pool:
            s = ScriptedStream([CLOSE_HOST_REMOVED, 1011], asyncio.Event(), pool,
                               asyncio.get_running_loop(), ["http://ctl:8080"])
            await asyncio.wait_for(s.run(), 5)
            return s

    s = asyncio.run(main())
    assert s.connects == 1 and not s.stop.is_set()
    assert s.registrar_calls.calls == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{REMOVED} (http://ctl:8080): this agent no longer registers it; restart the "
        "agent to register it as a new host"]
