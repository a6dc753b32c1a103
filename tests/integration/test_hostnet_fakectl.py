"""A minimal stand-in for the controller API, for hostnet's agent integration test.

Not a test module (it holds no tests); test_hostnet_agent.py runs it as
`python test_hostnet_fakectl.py PORT STATE_FILE`.
Listens on 127.0.0.1 only; writes what it saw (acks, registrations) to STATE_FILE.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, WebSocket

TOKEN = "it-token"
app = FastAPI()
state: dict[str, Any] = {"registrations": [], "acks": [], "endpoints": {}, "deleted": []}
STATE_FILE: list[str] = []


def save() -> None:
    if STATE_FILE:
        with open(STATE_FILE[0], "w") as f:
            json.dump(state, f)


def auth(authorization: str | None) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(401, "bad token")


@app.post("/api/v1/hosts")
async def register(body: dict[str, Any], authorization: str | None = Header(None)) -> Any:
    auth(authorization)
    state["registrations"].append(body)
    save()
    return {**body, "dpid": 0xD1, "registered_at": "2024-01-01T00:00:00Z",
            "openflow_targets": ["tcp:127.0.0.1:6699"]}


@app.post("/api/v1/containers")
async def create(body: dict[str, Any], authorization: str | None = Header(None)) -> Any:
    auth(authorization)
    if body["network"] != "blue":
        raise HTTPException(404, f"no network {body['network']}")
    ep = {"id": "ep-it-" + body["name"], "name": body["name"], "network": "blue",
          "host": body["host"], "ip": body.get("ip") or "198.18.5.5",
          "mac": "02:da:c6:12:05:05", "port": "dlit" + body["name"][-6:],
          "prefixlen": 24, "gateway": "198.18.5.1", "mtu": 1450,
          "created_at": "2024-01-01T00:00:00Z"}
    state["endpoints"][ep["name"]] = ep
    save()
    return ep


@app.get("/api/v1/containers")
async def list_(host: str | None = None, authorization: str | None = Header(None)) -> Any:
    auth(authorization)
    return [e for e in state["endpoints"].values() if host in (None, e["host"])]


@app.get("/api/v1/containers/{name}")
async def get(name: str, authorization: str | None = Header(None)) -> Any:
    auth(authorization)
    for e in state["endpoints"].values():
        if name in (e["name"], e["id"]):
            return e
    raise HTTPException(404, f"no container {name}")


@app.delete("/api/v1/containers/{name}")
async def delete(name: str, authorization: str | None = Header(None)) -> Any:
    auth(authorization)
    for key, e in list(state["endpoints"].items()):
        if name in (e["name"], e["id"]):
            del state["endpoints"][key]
            state["deleted"].append(e["id"])
            save()
            return {"deleted": e["id"]}
    raise HTTPException(404, f"no container {name}")


@app.websocket("/api/v1/hosts/{host}/stream")
async def stream(ws: WebSocket, host: str) -> None:
    if ws.headers.get("authorization") != f"Bearer {TOKEN}":
        await ws.close(code=1008)
        return
    await ws.accept()
    await ws.send_json({"type": "snapshot", "seq": 1, "routes": [
        {"kind": "via", "dst": "198.19.7.6", "via": "198.18.7.12"}]})
    state["acks"].append(await ws.receive_json())
    save()
    await ws.send_json({"type": "delta", "seq": 2, "add": [
        {"kind": "via", "dst": "198.19.7.7", "via": "198.18.7.12"}],
        "remove": [{"kind": "via", "dst": "198.19.7.6", "via": "198.18.7.12"}]})
    state["acks"].append(await ws.receive_json())
    save()
    await ws.send_json({"type": "delta", "seq": 3, "add": [
        {"kind": "via", "dst": "198.19.7.8", "via": "203.0.113.1"}], "remove": []})
    state["acks"].append(await ws.receive_json())
    save()
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    STATE_FILE.append(sys.argv[2])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
