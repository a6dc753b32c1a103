"""The names the Docker plugin records for an endpoint (hostnet/docker/driver.py,
`docker_names`): Docker's aliases and hostname, without what Docker adds itself
and without anything that is no DNS name."""

from __future__ import annotations

from typing import Any

from controller.desired.models import MAX_ALIASES
from hostnet.docker.driver import docker_names

DOCKER_ID = "0123456789ab" + "c" * 52


def _info(aliases: list[str] | None, hostname: str, endpoint: str = "ep1") -> dict[str, Any]:
    return {
        "Id": DOCKER_ID,
        "Config": {"Hostname": hostname},
        "NetworkSettings": {"Networks": {
            "other": {"EndpointID": "ep0", "Aliases": ["not-this-one"]},
            "names": {"EndpointID": endpoint, "Aliases": aliases},
        }},
    }


def test_aliases_and_hostname_of_the_endpoint() -> None:
    info = _info(["api", "box1", "w1", "0123456789ab", "Api", "www.example.test"], "box1")
    assert docker_names(info, "ep1", "w1") == (["api", "Api", "www.example.test"], "box1")


def test_dockers_own_hostname_and_no_aliases() -> None:
    assert docker_names(_info(None, "0123456789ab"), "ep1", "w1") == ([], None)
    assert docker_names(None, "ep1", "w1") == ([], None)


def test_what_is_no_dns_name_is_left_out_and_the_count_is_bounded() -> None:
    bad = ["a b", "-x", "x" * 64, "ok..no", "é"]
    many = [f"a{n}" for n in range(MAX_ALIASES + 5)]
    aliases, hostname = docker_names(_info(bad + many, "bad host"), "ep1", "w1")
    assert aliases == many[:MAX_ALIASES] and hostname is None
