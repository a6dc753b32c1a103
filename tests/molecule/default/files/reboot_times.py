#!/usr/bin/env python3
"""The reboot's figures, from a ping log and Docker's start times.

Usage: reboot_times.py HOST_STARTED PINGER_STARTED DAOLINET_STARTED BRIDGE_STARTED
with busybox `ping -i 0.1` output on stdin.  Every time is Docker's `.State.StartedAt`
(RFC 3339, nanoseconds), read on the one clock the lab's containers share.

The pinger sends a request every 0.1 s from PINGER_STARTED on, so request `seq=n`
left about 0.1 n s later; the first request answered after the longest run of
unanswered ones is the first answer after the reboot.  Prints one JSON object:
  first_answer_s  from the host's start to that answer (daolinet, across sites)
  daolinet_start_s, bridge_start_s
                  from the host's start to Docker starting the container on the
                  daolinet network / on a bridge network (the baseline: Docker alone)
  lost            requests unanswered in that run
  last_answer_s   the last answer in the log, from the host's start
first_answer_s and lost are null when the log holds no answer after the host's start.
"""

import itertools
import json
import re
import sys
from datetime import datetime

INTERVAL = 0.1


def started(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        raise SystemExit(f"not an RFC 3339 time: {text!r}")
    whole, fraction, zone = match.groups()
    base = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return base.timestamp() + float("0." + (fraction or "0"))


def main() -> None:
    host, pinger, daolinet, bridge = (started(arg) for arg in sys.argv[1:5])
    answered = sorted({int(n) for n in re.findall(r"bytes from .*seq=(\d+)", sys.stdin.read())})
    if len(answered) < 2:
        raise SystemExit(f"too few answered pings to find the reboot: {answered}")
    gap_start, gap_end = max(itertools.pairwise(answered), key=lambda pair: pair[1] - pair[0])
    first_answer: float | None = round(pinger + gap_end * INTERVAL - host, 2)
    last_answer = round(pinger + answered[-1] * INTERVAL - host, 2)
    if first_answer is not None and first_answer < 0:
        # No answer after the host's start in this log: busybox ping ends when it
        # cannot send (seen once in the lab), so its log says nothing of the return.
        first_answer = None
    print(json.dumps({
        "first_answer_s": first_answer,
        "last_answer_s": last_answer,
        "daolinet_start_s": round(daolinet - host, 2),
        "bridge_start_s": round(bridge - host, 2),
        "lost": gap_end - gap_start - 1 if first_answer is not None else None,
    }))


if __name__ == "__main__":
    main()
