"""Run the controller with a sampling profiler inside it (scale.py --profile).

py-spy is not installed here and cProfile sees one thread only, while the
controller's work is spread over os-ken's thread, the API's event loop and the
tick.  This launcher starts a thread that reads every thread's stack
(`sys._current_frames`) every INTERVAL seconds, counts the innermost daolinet,
os-ken or library functions per thread, and rewrites a text report every few
seconds (the controller leaves with os._exit, so nothing runs at exit).
It sleeps until SIGUSR1, which starts the counts afresh; SIGUSR2 writes the
report at once (scale.py frames its load phase with them), so registration and
start-up run without its cost.

    python -m benchmarks.simnet.sampler REPORT_PATH -- CONTROLLER_OPTIONS...
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL = 0.005
WRITE_EVERY = 5.0
DEPTH = 12  # frames kept per sample (innermost first)
# Innermost functions of a thread that waits (not counted as busy).
IDLE = (":wait", ":select", ":poll", ":_worker", ":sleep", ":accept", ":_wait_for_tstate_lock",
        ":recv", ":recv_into", ":readinto", ":get")


def stack(frame: FrameType | None) -> tuple[str, ...]:
    out: list[str] = []
    while frame is not None and len(out) < DEPTH:
        code = frame.f_code
        out.append(f"{Path(code.co_filename).name}:{code.co_name}")
        frame = frame.f_back
    return tuple(out)


def thread_kind(name: str) -> str:
    """'Thread-61 (datapath_connection_factory)' -> 'datapath_connection_factory': os-ken's
    one thread per switch connection are counted together."""
    return name.partition(" (")[2].rstrip(")") or name


RESET = threading.Event()
WRITE = threading.Event()


def sample(report: Path) -> None:
    RESET.wait()
    me = threading.get_ident()
    stacks: collections.Counter[tuple[str, tuple[str, ...]]] = collections.Counter()
    total = 0
    last = time.monotonic()
    while True:
        time.sleep(INTERVAL)
        if RESET.is_set():
            RESET.clear()
            stacks.clear()
            total = 0
        names = {t.ident: thread_kind(t.name) for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            s = stack(frame)
            if s and not s[0].endswith(IDLE):
                stacks[(names.get(ident, str(ident)), s)] += 1
        total += 1
        if WRITE.is_set() or time.monotonic() - last > WRITE_EVERY:
            WRITE.clear()
            write(report, stacks, total)
            last = time.monotonic()


def write(report: Path, stacks: collections.Counter[tuple[str, tuple[str, ...]]],
          total: int) -> None:
    """Per thread: busy samples, then the functions seen anywhere on the busy stacks
    (inclusive) and innermost (exclusive), most frequent first."""
    lines = [f"{total} sampling rounds every {INTERVAL * 1000:.0f} ms"]
    by_thread: dict[str, collections.Counter[tuple[str, ...]]] = collections.defaultdict(
        collections.Counter)
    for (thread, s), n in stacks.items():
        by_thread[thread][s] += n
    for thread, counts in sorted(by_thread.items(), key=lambda kv: -sum(kv[1].values())):
        busy = sum(counts.values())
        inclusive: collections.Counter[str] = collections.Counter()
        exclusive: collections.Counter[str] = collections.Counter()
        for s, n in counts.items():
            exclusive[s[0]] += n
            for fn in set(s):
                inclusive[fn] += n
        lines.append(f"\n== thread {thread}: busy in {busy} of {total} rounds")
        lines += [f"  incl {n:6d} {100 * n / busy:5.1f}% {fn}"
                  for fn, n in inclusive.most_common(25)]
        lines += [f"  self {n:6d} {100 * n / busy:5.1f}% {fn}"
                  for fn, n in exclusive.most_common(15)]
    report.write_text("\n".join(lines) + "\n")


def main() -> None:
    report = Path(sys.argv[1])
    sys.argv = ["daolinet-controller", *sys.argv[3:]]  # after "--"
    signal.signal(signal.SIGUSR1, lambda *_: RESET.set())
    signal.signal(signal.SIGUSR2, lambda *_: WRITE.set())
    threading.Thread(target=sample, args=(report,), name="sampler", daemon=True).start()
    from controller.main import run

    run()


if __name__ == "__main__":
    main()
