"""The connection log's cost (issue 21): setup rate with the log off, on, and on with
its JSON-lines file, in the same run; and its memory and disk at 1 million entries.

The setup rate is the one of benchmarks/core_hotpath.py (the real inventory, index,
runtime and core, every route delta acknowledged at once, no sockets): the CPU
seconds of this process (the writer thread's included) for `--pairs` new
connections, half same-host and half cross-host.  Rounds alternate the order of
the variants (off, on, file / file, on, off ...) so a drift of the shared machine
does not favour one; each round starts from a fresh runtime.  The figure is the
ratio of the median rates, log on / log off.

Memory: `--entries` events of distinct pairs recorded into a ring of that size
(each event with its own addresses and identity tuples, as the core makes them),
measured with tracemalloc.  Disk: the JSON-lines size of the same entries.

    python benchmarks/connlog.py --hosts 20 --containers 2000 --pairs 4000 --rounds 5
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from core_hotpath import Bench

from controller.connlog.log import ConnectionLog, Filters
from controller.connlog.writer import JsonLinesWriter
from controller.datapath.connections import ConnEvent

IPv4 = ipaddress.IPv4Address
VARIANTS = ("off", "on", "file")


def setup_rate(variant: str, args: argparse.Namespace, tmp: Path) -> tuple[float, int]:
    """Setups per CPU second of one round, and the entries the log holds."""
    connlog = None if variant == "off" else ConnectionLog(writing=variant == "file")
    writer = None
    if connlog is not None and variant == "file":
        writer = JsonLinesWriter(connlog, tmp / "connections.jsonl", "bench")
        writer.start()
    b = Bench(args.hosts, None, connlog=connlog)
    b.preload(args.containers)
    c0 = time.process_time()
    b.connect(args.pairs)
    if writer is not None:
        writer.stop()  # its lines are part of the cost
    cpu = time.process_time() - c0
    setups = b.core.state.counters.setups
    assert setups == args.pairs, f"{setups} setups of {args.pairs}"
    return args.pairs / cpu, len(connlog) if connlog is not None else 0


def memory(entries: int) -> tuple[float, float, float, float]:
    """Bytes per entry in the ring (tracemalloc) and in the JSON-lines file, and the
    CPU microseconds of recording one entry and of making its line."""
    # 10,000 containers: as in the core, an entry shares its ends' address and
    # identity objects with the endpoints (controller/datapath/connections.py)
    names = [(f"c{i}", "web", f"h{i % 100}", "default") for i in range(10_000)]
    ips = [IPv4(int(IPv4("10.0.0.2")) + i) for i in range(10_000)]

    def event(i: int) -> ConnEvent:
        a, b = i % 10_000, (i * 7 + 1) % 10_000
        return ConnEvent("expired", ips[a], ips[b], 6, 30_000 + i % 30_000, 443,
                         names[a], names[b], "allow", "same network web", "network", None,
                         "underlay", names[a][2], 1, 12.5 + i % 100, 40 + i % 1000,
                         9000 + i)

    n = min(entries, 100_000)  # one event per record() call, as the runtime does
    events = [event(i) for i in range(n)]
    timed = ConnectionLog(max_entries=n)
    c0 = time.process_time()
    for e in events:
        timed.record([e])
    record_us = (time.process_time() - c0) / n * 1e6
    sample = timed.query(Filters(), 1000).entries
    c0 = time.process_time()
    line = sum(len(json.dumps(e.to_dict("c0"), separators=(",", ":"))) + 1 for e in sample)
    line_us = (time.process_time() - c0) / len(sample) * 1e6
    del events, timed
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    log = ConnectionLog(max_entries=entries)
    for start in range(0, entries, 1000):
        log.record([event(i) for i in range(start, min(entries, start + 1000))])
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / entries, line / len(sample), record_us, line_us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--containers", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                rate, held = setup_rate(variant, args, Path(tmp))
                rates[variant].append(rate)
                print(f"round {r + 1} {variant:>4}: {rate:8.0f} setups/CPU s "
                      f"({held} entries)", flush=True)
    med = {v: statistics.median(x) if x else 0.0 for v, x in rates.items()}
    out: dict[str, object] = {"rates": {v: [round(x) for x in xs] for v, xs in rates.items()}}
    if args.rounds:
        print(f"median setups/CPU s: off {med['off']:.0f}, on {med['on']:.0f}, "
              f"file {med['file']:.0f}; ratio on/off {med['on'] / med['off']:.3f}, "
              f"file/off {med['file'] / med['off']:.3f}")
        out.update(ratio_on=round(med["on"] / med["off"], 3),
                   ratio_file=round(med["file"] / med["off"], 3))
    per_entry, per_line, record_us, line_us = memory(args.entries)
    print(f"{args.entries} entries: {per_entry * args.entries / 2**20:.0f} MiB in memory "
          f"({per_entry:.0f} B each), {per_line * args.entries / 2**20:.0f} MiB as JSON "
          f"lines ({per_line:.0f} B each); CPU per entry: recording {record_us:.1f} us, "
          f"its line {line_us:.1f} us")
    out.update(entries=args.entries, bytes_per_entry=round(per_entry),
               bytes_per_line=round(per_line), record_us=round(record_us, 2),
               line_us=round(line_us, 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
