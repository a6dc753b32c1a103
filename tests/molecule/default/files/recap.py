#!/usr/bin/env python3
"""Summarise an ansible-playbook run made with the ansible.posix.json callback.

Reads the callback's JSON on stdin and prints one JSON object:
  {"stats":   {host: {"changed": n, "failures": n, "unreachable": n, ...}},
   "changed": {host: ["role : task", ...]},   # tasks and handlers that changed
   "failed":  {host: ["role : task: message", ...]}}
so that a verify play can assert which tasks changed on which host.
"""

import json
import sys


def main() -> None:
    text = sys.stdin.read()
    # Anything printed before the callback's document (warnings) is not JSON.
    run = json.loads(text[text.index("{"):])
    changed: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    for play in run.get("plays", []):
        for task in play.get("tasks", []):
            name = task["task"]["name"]
            for host, result in task.get("hosts", {}).items():
                if result.get("changed"):
                    changed.setdefault(host, []).append(name)
                if result.get("failed") or result.get("unreachable"):
                    msg = str(result.get("msg", ""))[:300]
                    failed.setdefault(host, []).append(f"{name}: {msg}")
    for host in run.get("stats", {}):
        changed.setdefault(host, [])
        failed.setdefault(host, [])
    json.dump({"stats": run.get("stats", {}), "changed": changed, "failed": failed},
              sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
