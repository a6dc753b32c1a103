"""The agent's stream loop (hostnet/agent/stream.py) when a newer stream of its host
replaces its own: it logs why, at warning, and waits longer after each loss instead of
taking the stream back at once."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from controller.agents.messages import CLOSE_REPLACED
from hostnet.agent import stream as stream_mod
from hostnet.agent.stream import Stream, takeover_pause

REPLACED = "replaced by a newer stream of host h1 from 198.18.0.99:40000"


class FakeClient:
    base_url = "http://ctl:8080"
    urls = ("http://ctl:8080",)
    token = "tok"

    def rotate(self) -> None:
        pass


class FakeRegistrar:
    def __init__(self) -> None:
        self.calls = 0

    async def register(self) -> None:
        self.calls += 1


class ScriptedStream(Stream):
    """Each connection ends as the script says (a close code), then `stop` is set."""

    def __init__(self, script: list[int], stop: asyncio.Event, pool: ThreadPoolExecutor,
                 loop: asyncio.AbstractEventLoop) -> None:
        fake: Any = None
        super().__init__("h1", FakeClient(), FakeRegistrar(), fake, fake, stop,  # type: ignore[arg-type]
                         route_exec=pool, loop=loop)
        self.script = list(script)
        self.connects = 0

    def _connect(self, token: str) -> bool:
        self.connects += 1
        if not self.script:
            self.loop.call_soon_threadsafe(self.stop.set)
            return True
        code = self.script.pop(0)
        reason = REPLACED if code == CLOSE_REPLACED else "server error"
        raise ConnectionClosedError(Close(code, reason), None)


def run_script(script: list[int], monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Run the loop over `script`; the pauses it took (the waits are shortened)."""
    pauses: list[float] = []
    real_wait_for = asyncio.wait_for

    async def quick_wait_for(aw: Any, timeout: float | None) -> Any:
        pauses.append(float(timeout or 0))
        return await real_wait_for(aw, 0.001)

    monkeypatch.setattr(stream_mod.asyncio, "wait_for", quick_wait_for)

    async def main() -> ScriptedStream:
        with ThreadPoolExecutor(1) as pool:
            s = ScriptedStream(script, asyncio.Event(), pool, asyncio.get_running_loop())
            await s.run()
            return s

    s = asyncio.run(main())
    assert s.connects == len(script) + 1  # no fight: one connect per end
    return pauses


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
