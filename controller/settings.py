"""The options of `daolinet-controller`, as one pydantic-settings model.

Each option is a command-line flag (controller/main.py builds them from the fields:
help, default, bounds) and an environment variable `DAOLINET_<NAME>` (e.g.
`DAOLINET_STORE`, `DAOLINET_LEASE_TTL`); a flag wins over the environment.  The
checks that need no file or store are here, so a bad option is refused before
anything is written.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any, Self

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.api.deps import DEFAULT_METRICS_HOSTS, DEFAULT_READY_WAIT
from controller.api.limits import DEFAULT_MAX_BODY, DEFAULT_MAX_BULK_BODY, MIB
from controller.cliutil import read_secret
from controller.cluster.leases import parse_openflow_target
from controller.connlog.log import DEFAULT_AGE, DEFAULT_ENTRIES, DEFAULT_INTERVAL
from controller.desired.models import Name
from controller.store.url import DEFAULT_STORE_URL

log = logging.getLogger("daolinet.controller")

ENV_PREFIX = "DAOLINET_"
DEFAULT_TOKEN_FILE = "/etc/daolinet/controller.token"
DEFAULT_API_PORT, DEFAULT_OPENFLOW_PORT = 8080, 6653


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    store: str = Field(
        DEFAULT_STORE_URL,
        description="sqlite:///PATH (one controller) or etcd://HOST:PORT,HOST:PORT.../PREFIX "
        "(replicated controllers; the prefix is optional, default daolinet)",
    )
    replica: str | None = Field(
        None, description="name of this controller replica (default: hostname)"
    )
    advertise: str | None = Field(
        None,
        description="API URL agents and other replicas reach this replica at "
        "(default: http://API_HOST:PORT; needed with etcd and a wildcard --api)",
    )
    advertise_openflow: str | None = Field(
        None,
        description="OpenFlow target switches reach this replica at, ssl:IP:PORT (with "
        "--tls-*) or tcp:IP:PORT (default: from --openflow; needed with etcd and a "
        "wildcard --openflow)",
    )
    site: str | None = Field(
        None,
        description="site of this replica (hosts' --site): its switches use "
        "--advertise-openflow, those of other sites --advertise-openflow-remote "
        "(default: none, every switch uses --advertise-openflow)",
    )
    advertise_openflow_remote: str | None = Field(
        None,
        description="OpenFlow target switches of other sites reach this replica at, "
        "ssl:IP:PORT or tcp:IP:PORT, e.g. its WireGuard address (default: "
        "--advertise-openflow; needs --site)",
    )
    lease_ttl: float = Field(
        2.0, ge=1.0, le=60.0,
        description="seconds a silent replica keeps its membership and leadership "
        "(etcd lease TTL)",
    )
    member_hold_down: float = Field(
        10.0, ge=0.0, le=600.0,
        description="seconds a replica that came back waits before the leader gives it "
        "switches other replicas master (its share; 0: at once)",
    )
    token_file: Path = Field(
        Path(DEFAULT_TOKEN_FILE),
        description="API token file (created with a random token if absent)",
    )
    readonly_token_file: Path | None = Field(
        None, description="Token file of a read-only API token (optional)"
    )
    agent_token_file: Path | None = Field(
        None, description="Token file of the host agents' API token (optional; not policy)"
    )
    api: str = Field("0.0.0.0:8080", description="HOST:PORT of the REST API")
    openflow: str = Field("0.0.0.0:6653", description="HOST:PORT of the OpenFlow listener")
    idle_timeout: int = Field(
        10, ge=1, le=65535, description="seconds before an idle route expires"
    )
    packet_in_rate: int = Field(
        200, ge=1, le=1_000_000, description="PacketIns per second a container may cause"
    )
    packet_in_burst: int = Field(
        8, ge=1, le=100_000, description="PacketIns a container may cause at once"
    )
    switch_packet_in_rate: int = Field(
        1000, ge=1, le=1_000_000,
        description="PacketIns per second the controller takes from one switch, whatever "
        "its meters do; more are dropped before any decision (counted in /metrics)",
    )
    switch_packet_in_burst: int = Field(
        500, ge=1, le=1_000_000,
        description="PacketIns the controller takes from one switch at once",
    )
    deny_hold: int = Field(
        3, ge=1, le=3600, description="seconds a denied pair stays dropped after its last packet"
    )
    api_max_body: int = Field(
        DEFAULT_MAX_BODY, ge=1024, le=64 * MIB,
        description="bytes an API request body may have (refused with 413 before it is "
        "parsed; docs/security.md, \"Limits\")",
    )
    api_max_bulk_body: int = Field(
        DEFAULT_MAX_BULK_BODY, ge=1024, le=256 * MIB,
        description="bytes the body of a bulk request between replicas (POST "
        "/api/v1/replicas/needs) may have",
    )
    log_level: str = Field("info", description="debug, info, warning, error")
    connection_log_entries: int = Field(
        DEFAULT_ENTRIES, ge=0, le=10_000_000,
        description="entries the connection log keeps in memory, at most (GET "
        "/api/v1/connections; 0: no connection log; docs/architecture.md, \"Connection log\")",
    )
    connection_log_age: float = Field(
        DEFAULT_AGE, ge=1.0, le=30 * 86_400.0,
        description="seconds the connection log keeps an entry, at most",
    )
    connection_log_interval: float = Field(
        DEFAULT_INTERVAL, ge=1.0, le=3600.0,
        description="seconds a denied pair's log entry keeps counting its packets after "
        "the last one (a denied flood is one entry per pair and interval)",
    )
    connection_log_file: Path | None = Field(
        None, description="append the connection log to this file as JSON lines, for log "
        "shippers (written once a second by a thread of its own; default: none)",
    )
    metrics_hosts: int = Field(
        DEFAULT_METRICS_HOSTS, ge=1, le=100_000,
        description="hosts (by name) and switches (by dpid) with /metrics series of their "
        "own, at most; the others count in the totals only "
        "(docs/architecture.md, \"Metrics and readiness\")",
    )
    ready_wait: float = Field(
        DEFAULT_READY_WAIT, ge=0.0, le=3600.0,
        description="seconds after the start during which /readyz waits for every "
        "registered switch to connect and every agent to stream; past them a missing "
        "one is counted but no longer holds readiness back (docs/operations.md, "
        "\"Readiness\")",
    )
    tls_ca: Path | None = Field(
        None, description="the deployment's CA certificate (PEM); with --tls-cert and "
        "--tls-key: the API and the agent streams are served over HTTPS (hosts and "
        "replicas present their certificates) and switches connect over TLS with their "
        "host's certificate (docs/security.md)"
    )
    tls_cert: Path | None = Field(
        None, description="this replica's certificate (PEM, OU=controller)"
    )
    tls_key: Path | None = Field(None, description="this replica's private key (PEM)")
    insecure_plaintext: bool = Field(
        False, description="run without --tls-*: the API, the agent streams and OpenFlow "
        "in plain text, any host may act for any host with the agent token (development "
        "and tests only; docs/security.md)"
    )
    etcd_tls_ca: Path | None = Field(
        None, description="the etcd cluster's own CA certificate (PEM), not the "
        "deployment's; with --etcd-tls-cert and --etcd-tls-key: etcd is reached over "
        "https with this replica's etcd client certificate; required with an etcd store "
        "and --tls-* (docs/security.md, \"etcd\")"
    )
    etcd_tls_cert: Path | None = Field(
        None, description="this replica's etcd client certificate (PEM, of the etcd CA)"
    )
    etcd_tls_key: Path | None = Field(
        None, description="this replica's etcd client key (PEM)"
    )

    # --- checks (in the order of the messages a user sees first) ------------------
    @field_validator("api")
    @classmethod
    def _check_api(cls, value: str) -> str:
        split_hostport(value, DEFAULT_API_PORT)
        return value

    @field_validator("openflow")
    @classmethod
    def _check_openflow(cls, value: str) -> str:
        split_hostport(value, DEFAULT_OPENFLOW_PORT)
        return value

    @field_validator("site")
    @classmethod
    def _check_site(cls, value: str | None) -> str | None:
        return check_site(value)

    @field_validator("advertise_openflow_remote")
    @classmethod
    def _check_remote(cls, value: str | None) -> str | None:
        return check_target("--advertise-openflow-remote", value)

    @field_validator("advertise_openflow")
    @classmethod
    def _check_advertise_openflow(cls, value: str | None) -> str | None:
        return check_target("--advertise-openflow", value)

    @model_validator(mode="after")
    def _check_together(self) -> Self:
        self._together("tls_ca", "tls_cert", "tls_key")
        if self.tls and self.insecure_plaintext:
            raise ValueError("--insecure-plaintext and --tls-* exclude each other: "
                             "leave out --insecure-plaintext to serve over TLS")
        scheme = "https://" if self.tls else "http://"
        if self.advertise and not self.advertise.startswith(scheme):
            raise ValueError(
                f"--advertise {self.advertise}: the API is served over "
                + ("HTTPS (--tls-* given): give https://HOST:PORT" if self.tls
                   else "plain HTTP (no --tls-*): give http://HOST:PORT"))
        self._check_etcd_tls()
        for option, target in (("--advertise-openflow", self.advertise_openflow),
                               ("--advertise-openflow-remote", self.advertise_openflow_remote)):
            if target and not target.startswith(self.openflow_scheme + ":"):
                raise ValueError(
                    f"{option} {target}: the OpenFlow listener speaks "
                    + ("TLS (--tls-* given): give ssl:IP:PORT" if self.tls
                       else "plain TCP (no --tls-*): give tcp:IP:PORT")
                )
        if self.advertise_openflow_remote and self.site is None:
            raise ValueError(
                "--advertise-openflow-remote needs --site: the switches of the other sites "
                "use it, those of this replica's site --advertise-openflow"
            )
        if self.replicated and (self.api_url is None or self.openflow_target is None):
            raise ValueError(
                "with an etcd store, replicas must be reachable by each other and by the "
                "switches: give --advertise URL and --advertise-openflow ssl:IP:PORT "
                "(or listen on a specific address)"
            )
        if not self.tls and not self.insecure_plaintext:
            raise ValueError(
                "give --tls-ca, --tls-cert and --tls-key (the API, the agent streams and "
                "OpenFlow over TLS; docs/security.md), or --insecure-plaintext to run "
                "them in plain text (development only: anyone on the network may act "
                "as any host)"
            )
        return self

    def _together(self, ca: str, cert: str, key: str) -> None:
        """ValueError unless the options of these fields are given all three or none."""
        flags = ["--" + f.replace("_", "-") for f in (ca, cert, key)]
        given = [flag for flag, f in zip(flags, (ca, cert, key), strict=True)
                 if getattr(self, f) is not None]
        if given and len(given) != 3:
            raise ValueError(f"{flags[0]}, {flags[1]} and {flags[2]} go together (given: "
                             + ", ".join(given) + ")")

    def _check_etcd_tls(self) -> None:
        """etcd trusts its own CA, never the deployment's (docs/security.md, "etcd"):
        with TLS an etcd store needs the etcd client files, and nothing falls back to
        the --tls-* files, whose CA also signs every host's certificate."""
        self._together("etcd_tls_ca", "etcd_tls_cert", "etcd_tls_key")
        if self.etcd_tls_ca is not None and not self.replicated:
            raise ValueError("--etcd-tls-ca, --etcd-tls-cert and --etcd-tls-key are for "
                             "an etcd store (--store etcd://...)")
        if self.replicated and self.tls and self.etcd_tls_ca is None:
            raise ValueError(
                "with an etcd store and --tls-*, give --etcd-tls-ca, --etcd-tls-cert and "
                "--etcd-tls-key: this replica's etcd client certificate, of the etcd "
                "cluster's own CA (docs/security.md, \"etcd\"); the --tls-* files are "
                "not used for etcd, whose CA must not be the deployment's"
            )

    # --- derived -------------------------------------------------------------------
    @property
    def replicated(self) -> bool:
        """Replicated controllers share an etcd store."""
        return self.store.startswith("etcd:")

    @property
    def api_address(self) -> tuple[str, int]:
        return split_hostport(self.api, DEFAULT_API_PORT)

    @property
    def openflow_address(self) -> tuple[str, int]:
        return split_hostport(self.openflow, DEFAULT_OPENFLOW_PORT)

    @property
    def api_url(self) -> str | None:
        """The API URL others reach this replica at (None: nobody can know it)."""
        host, port = self.api_address
        return advertised(self.advertise, host, port, "https://" if self.tls else "http://")

    @property
    def tls(self) -> bool:
        """Whether TLS files are given (all three, `_check_together`)."""
        return self.tls_ca is not None

    @property
    def openflow_scheme(self) -> str:
        """The scheme of our OpenFlow targets: ssl with TLS files, else tcp."""
        return "ssl" if self.tls else "tcp"

    @property
    def openflow_target(self) -> str | None:
        """The OpenFlow target switches reach this replica at (None: unknown)."""
        host, port = self.openflow_address
        return advertised(self.advertise_openflow, host, port, f"{self.openflow_scheme}:")


def load_settings(values: dict[str, Any]) -> ControllerSettings:
    """The settings of these option values; ValueError with the first complaint."""
    try:
        return ControllerSettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        error = (first.get("ctx") or {}).get("error")
        if isinstance(error, ValueError):
            raise ValueError(str(error)) from None
        where = ".".join(str(part) for part in first["loc"]).replace("_", "-")
        raise ValueError(f"--{where}: {first['msg']}") from None


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    """"HOST:PORT", "HOST" or ":PORT" -> (host, port); raises ValueError with the value."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def advertised(value: str | None, host: str, port: int, scheme: str) -> str | None:
    """The URL/target others reach this replica at: `value`, else HOST:PORT unless
    HOST is a wildcard (then nobody can know it: None)."""
    if value:
        return value
    if host in ("", "0.0.0.0", "::"):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6, in a URL as in an OVS target
    return f"{scheme}{host}:{port}"


def check_target(option: str, value: str | None) -> str | None:
    """An --advertise-openflow* value: None when not given, else ssl: or tcp:IP:PORT."""
    if not value:
        return None
    try:
        return parse_openflow_target(value)
    except ValueError as exc:
        raise ValueError(f"{option} {exc}") from None


def check_site(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return TypeAdapter(Name).validate_python(value)
    except ValidationError:
        raise ValueError(
            f"--site {value!r} is not a site name (1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit)"
        ) from None


# --- tokens (files: read, or the admin one created) ---------------------------------
def read_or_create_token(path: Path) -> str:
    """The API token; a new random one is written (mode 0600) when the file is absent."""
    if path.exists():
        return read_secret(path, "token file")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.warning("wrote a new API token to %s", path)
    return token


def read_role_token(path: Path | None, role: str, admin: str) -> str:
    """The token of an optional role (agent, read-only); "" when no file is given.

    Unlike the admin token it is never created: it is given to someone, so it must
    exist, be non-empty and differ from the admin token.
    """
    if path is None:
        return ""
    token = read_secret(path, f"{role} token file")
    if token == admin:
        raise ValueError(f"{role} token file {path} holds the admin token")
    return token


def read_tokens(settings: ControllerSettings) -> tuple[str, str, str]:
    """(admin, read-only, agent) tokens; "" for a role without a token file."""
    token = read_or_create_token(settings.token_file)
    readonly_token = read_role_token(settings.readonly_token_file, "read-only", token)
    agent_token = read_role_token(settings.agent_token_file, "agent", token)
    if readonly_token and readonly_token == agent_token:
        raise ValueError("the read-only and the agent token files hold the same token")
    return token, readonly_token, agent_token
