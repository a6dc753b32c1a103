#!/usr/bin/python3
"""Reads this host's controller replica from its /metrics (run on a replica host).

    replica.py status [API...]  one JSON line: a list of {"up", "leader", "mastered"},
                                one per API URL given (default this host's replica)
    replica.py watch SWITCHES   waits (60 s at most) until this replica leads and SWITCHES
                                switches have confirmed it as their master (with two
                                replicas, what the survivor of a kill ends up with);
                                prints {"leader_at": epoch seconds, "was_leader": at start}
    replica.py gaps SWITCHES STOPFILE API...
                                polls the replicas every 0.1 s until STOPFILE exists (600 s
                                at most); prints {"longest_gap", "samples", "leaders"}: the
                                longest time the replicas together had fewer than SWITCHES
                                switches confirmed (masters are spread over them), and the
                                order in which replicas led

Over https (the lab's replicas serve their API with TLS) it verifies the replicas
against the deployment's CA and presents this host's certificate (a replica's on a
replica host, a Docker host's on a Docker host: rolling.yml watches from one), which
/metrics needs under TLS (docs/security.md).

Timestamps are this host's clock, which the lab's containers share with each other, so
the time of a kill on another replica's host can be subtracted from them.
"""

import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request

PKI = "/etc/daolinet/pki"
# This host's certificate: a replica's, else a Docker host's.
OWN = next((name for name in ("controller", "host") if os.path.exists(f"{PKI}/{name}.crt")),
           None)
LOCAL = f"{'https' if OWN else 'http'}://127.0.0.1:8080"


def tls_context() -> ssl.SSLContext | None:
    if OWN is None:
        return None
    context = ssl.create_default_context(cafile=f"{PKI}/ca.crt")
    context.load_cert_chain(f"{PKI}/{OWN}.crt", f"{PKI}/{OWN}.key")
    return context


CONTEXT = tls_context()
ERRORS: list[str] = []  # why replicas did not answer (the last few), for the reports


def status(api: str = LOCAL) -> dict[str, bool | int]:
    try:
        with urllib.request.urlopen(f"{api}/metrics", timeout=1, context=CONTEXT) as answer:
            text = answer.read().decode()
    except (OSError, urllib.error.URLError) as exc:
        ERRORS[:] = [*ERRORS[-4:], f"{api}: {exc}"]
        return {"up": False, "leader": False, "mastered": 0}

    def gauge(name: str) -> int:
        # The Prometheus text format (prometheus_client writes "2.0"): an unlabelled
        # sample is "NAME VALUE [TIMESTAMP]", the value a float.  This host's
        # /usr/bin/python3 has no prometheus_client, so the line is read here.
        found = re.search(rf"^{name}(?:{{}})? (\S+)(?: \S+)?$", text, re.M)
        try:
            return int(float(found.group(1))) if found else 0
        except ValueError:  # NaN, or not a number
            return 0

    return {
        "up": True,
        "leader": gauge("daolinet_replica_leader") == 1,
        "mastered": gauge("daolinet_switches_mastered"),
    }


def watch(switches: int) -> dict[str, bool | int | float | None]:
    first = status()
    deadline = time.time() + 60
    while time.time() < deadline:
        now = time.time()
        state = status()
        if state["leader"] and state["mastered"] >= switches:
            return {"leader_at": now, "was_leader": first["leader"], **state}
        time.sleep(0.05)
    return {"leader_at": None, "was_leader": first["leader"], **status()}


def gaps(switches: int, stopfile: str, apis: list[str]) -> dict[str, object]:
    longest, samples = 0.0, 0
    leaders: list[str] = []
    served_at = time.monotonic()
    deadline = served_at + 600
    while not os.path.exists(stopfile) and time.monotonic() < deadline:
        now = time.monotonic()
        samples += 1
        states = [status(api) for api in apis]
        leading = [api for api, state in zip(apis, states, strict=True) if state["leader"]]
        if leading and (not leaders or leaders[-1] != leading[0]):
            leaders.append(leading[0])
        if sum(int(state["mastered"]) for state in states) >= switches:
            served_at = now
        longest = max(longest, now - served_at)
        time.sleep(0.1)
    return {"longest_gap": round(longest, 2), "samples": samples, "leaders": leaders,
            "last_errors": ERRORS}


if __name__ == "__main__":
    if sys.argv[1:2] == ["status"]:
        print(json.dumps([status(api) for api in sys.argv[2:] or [LOCAL]]))
    elif sys.argv[1:2] == ["watch"] and len(sys.argv) == 3:
        print(json.dumps(watch(int(sys.argv[2]))))
    elif sys.argv[1:2] == ["gaps"] and len(sys.argv) >= 5:
        print(json.dumps(gaps(int(sys.argv[2]), sys.argv[3], sys.argv[4:])))
    else:
        sys.exit(__doc__)
