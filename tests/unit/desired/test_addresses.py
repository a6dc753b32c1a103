"""The rules of addresses (controller/desired/addresses.py; docs/security.md,
"Validation"): every value the issue named is refused with a message naming the field,
and the values users really use still pass; properties over generated values."""

from __future__ import annotations

import ipaddress
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.desired.addresses import (
    CONTAINER_FORBIDDEN,
    HOST_FORBIDDEN,
    MAX_PREFIX,
    MIN_PREFIX,
    check_container_address,
    check_endpoint,
    check_gateway,
    check_host_address,
    check_subnet,
    field_check,
    usable_endpoint,
)
from controller.desired.errors import Invalid

IP = ipaddress.IPv4Address
NET = ipaddress.IPv4Network

# Non-ASCII decimal digits int() takes (Arabic-Indic, Devanagari, fullwidth, ...).
UNICODE_DIGITS = [
    chr(c) for c in range(0x80, 0x10000)
    if unicodedata.category(chr(c)) == "Nd" and unicodedata.decimal(chr(c), None) is not None
]
settings.register_profile("daolinet-addresses", database=None, deadline=None)


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("0.0.0.0/0", "subnet 0.0.0.0/0 is too large: use /8 or smaller"),
        ("0.0.0.0/1", "subnet 0.0.0.0/1 is too large"),
        ("8.0.0.0/7", "subnet 8.0.0.0/7 is too large"),
        ("0.0.0.0/8", "subnet 0.0.0.0/8 overlaps the 'this network' range 0.0.0.0/8"),
        ("0.1.0.0/16", "subnet 0.1.0.0/16 overlaps the 'this network' range"),
        ("127.0.0.0/8", "subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8"),
        ("127.1.2.0/24", "subnet 127.1.2.0/24 overlaps the loopback range"),
        ("169.254.0.0/16", "subnet 169.254.0.0/16 overlaps the link-local range"),
        ("169.254.7.0/24", "subnet 169.254.7.0/24 overlaps the link-local range"),
        ("169.0.0.0/8", "subnet 169.0.0.0/8 overlaps the link-local range"),
        ("224.0.0.0/8", "subnet 224.0.0.0/8 overlaps the multicast range 224.0.0.0/4"),
        ("239.255.0.0/16", "subnet 239.255.0.0/16 overlaps the multicast range"),
        ("240.0.0.0/8", "subnet 240.0.0.0/8 overlaps the reserved and broadcast range"),
        ("255.255.255.0/24", "subnet 255.255.255.0/24 overlaps the reserved and broadcast"),
        ("255.255.255.252/30", "overlaps the reserved and broadcast range"),
        ("10.1.0.0/31", "subnet 10.1.0.0/31 leaves no room"),
        ("10.1.0.1/32", "subnet 10.1.0.1/32 leaves no room"),
    ],
)
def test_bad_subnets_are_refused_naming_the_field(subnet: str, message: str) -> None:
    with pytest.raises(Invalid, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_subnet("subnet", NET(subnet))


@pytest.mark.parametrize(
    "subnet",
    ["10.20.0.0/16", "192.168.5.0/24", "10.0.0.0/8", "172.16.0.0/12", "100.64.0.0/10",
     "198.18.0.0/15", "192.0.2.0/24", "11.0.0.0/8", "203.0.113.0/30", "1.0.0.0/8",
     "223.255.255.0/24", "126.0.0.0/8", "128.0.0.0/8", "168.0.0.0/8", "170.0.0.0/8"],
)
def test_subnets_users_use_are_accepted(subnet: str) -> None:
    assert check_subnet("subnet", NET(subnet)) == NET(subnet)


def _special(net: NET) -> bool:
    return any(net.overlaps(special) for special, _ in CONTAINER_FORBIDDEN)


@settings(settings.get_profile("daolinet-addresses"), max_examples=300)
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_a_subnet_passes_exactly_when_it_is_sized_and_clear(value: int, prefix: int) -> None:
    net = NET((value, prefix), strict=False)
    ok = MIN_PREFIX <= prefix <= MAX_PREFIX and not _special(net)
    if ok:
        assert check_subnet("subnet", net) == net
    else:
        with pytest.raises(Invalid, match=f"^subnet {net} "):
            check_subnet("subnet", net)


@pytest.mark.parametrize(
    ("address", "container", "host"),
    [
        ("127.0.0.1", "loopback", None),
        ("224.0.0.1", "multicast", "multicast"),
        ("239.1.2.3", "multicast", "multicast"),
        ("0.0.0.0", "'this network'", "'this network'"),
        ("0.1.2.3", "'this network'", "'this network'"),
        ("169.254.1.1", "link-local", None),
        ("255.255.255.255", "reserved and broadcast", "reserved and broadcast"),
        ("240.0.0.1", "reserved and broadcast", "reserved and broadcast"),
        ("10.1.0.5", None, None),
        ("198.18.0.11", None, None),
    ],
)
def test_container_and_host_addresses(address: str, container: str | None,
                                      host: str | None) -> None:
    for check, field, refused in ((check_container_address, "ip", container),
                                  (check_host_address, "address", host)):
        if refused is None:
            assert check(field, IP(address)) == IP(address)
        else:
            with pytest.raises(Invalid, match=f"^{field} {address} is in the {refused} range"):
                check(field, IP(address))


@settings(settings.get_profile("daolinet-addresses"), max_examples=300)
@given(st.integers(0, 2**32 - 1))
def test_addresses_pass_exactly_outside_their_ranges(value: int) -> None:
    addr = IP(value)
    for check, ranges in ((check_container_address, CONTAINER_FORBIDDEN),
                          (check_host_address, HOST_FORBIDDEN)):
        if any(addr in special for special, _ in ranges):
            with pytest.raises(Invalid, match=f"^ip {addr} is in the "):
                check("ip", addr)
        else:
            assert check("ip", addr) == addr


def test_gateway_inside_its_subnet() -> None:
    net = NET("10.9.0.0/24")
    assert check_gateway("gateway", IP("10.9.0.1"), net) == IP("10.9.0.1")
    for gw, why in (("10.9.0.0", "network address"), ("10.9.0.255", "broadcast address"),
                    ("10.9.1.1", "outside subnet")):
        with pytest.raises(Invalid, match=f"^gateway {gw} is .*{why}"):
            check_gateway("gateway", IP(gw), net)


BAD_ENDPOINTS = [
    "1.2.3.4:5_1820", "1.2.3.4:+51820", "1.2.3.4:-1", "1.2.3.4:\u0665\u0661\u0668\u0662\u0660",
    "1.2.3.4:\uff15\uff11\uff18\uff12\uff10", "\u0661.2.3.4:51820", "1.2.3.4: 51820",
    " 1.2.3.4:51820",
    "1.2.3.4:51820\n", "1.2.3.4:0", "1.2.3.4:00", "1.2.3.4:051820", "1.2.3.4:65536",
    "1.2.3.4:99999", "1.2.3.4:", ":51820", "1.2.3.4", "1.2.3:51820", "1.2.3.4.5:51820",
    "01.2.3.4:51820", "256.1.1.1:51820", "example.org:51820", "[::1]:51820",
    "1.2.3.4:51820:1", "", "1.2.3.4:51820.0", "1.2.3.4:0x10",
]


@pytest.mark.parametrize("endpoint", BAD_ENDPOINTS)
def test_bad_endpoints_are_refused_naming_the_field(endpoint: str) -> None:
    with pytest.raises(Invalid, match=r"^wg_endpoint .* is not IPv4:PORT"):
        check_endpoint("wg_endpoint", endpoint)
    assert usable_endpoint(endpoint) is None


@pytest.mark.parametrize(("endpoint", "range_"), [
    ("0.0.0.0:51820", "'this network'"), ("224.0.0.1:51820", "multicast"),
    ("255.255.255.255:51820", "reserved and broadcast"),
])
def test_endpoints_on_no_host_address_are_refused(endpoint: str, range_: str) -> None:
    with pytest.raises(Invalid, match=f"^wg_endpoint .* is in the {range_} range"):
        check_endpoint("wg_endpoint", endpoint)


@pytest.mark.parametrize("endpoint", ["198.51.100.7:51820", "1.2.3.4:1", "1.2.3.4:65535",
                                      "10.0.0.1:51820", "127.0.0.1:51820"])
def test_good_endpoints_pass_unchanged(endpoint: str) -> None:
    assert check_endpoint("wg_endpoint", endpoint) == endpoint
    assert usable_endpoint(endpoint) == endpoint


@settings(settings.get_profile("daolinet-addresses"), max_examples=300)
@given(st.text(alphabet=st.sampled_from("0123456789.:+_- x\u0665\uff15\n"), max_size=24))
def test_an_endpoint_passes_only_in_its_normal_form(text: str) -> None:
    """Whatever passes is exactly IPv4:PORT as Python prints it: nothing else gets by."""
    try:
        check_endpoint("wg_endpoint", text)
    except Invalid as exc:
        assert exc.message.startswith("wg_endpoint ")
        return
    ip, port = text.split(":")
    assert f"{IP(ip)}:{int(port)}" == text and 1 <= int(port) <= 65535


@settings(settings.get_profile("daolinet-addresses"), max_examples=200)
@given(st.integers(1, 2**32 - 1), st.integers(1, 65535), st.data())
def test_a_non_ascii_digit_anywhere_is_refused(value: int, port: int, data: st.DataObject) -> None:
    good = f"{IP(value)}:{port}"
    at = data.draw(st.sampled_from([i for i, c in enumerate(good) if c.isdigit()]))
    digit = data.draw(st.sampled_from([d for d in UNICODE_DIGITS
                                       if unicodedata.decimal(d) == int(good[at])]))
    bad = good[:at] + digit + good[at + 1:]
    with pytest.raises(Invalid, match="is not IPv4:PORT"):
        check_endpoint("wg_endpoint", bad)


def test_field_check_reports_a_value_error_for_pydantic() -> None:
    run = field_check(check_endpoint, "endpoint")
    assert run("1.2.3.4:1") == "1.2.3.4:1"
    with pytest.raises(ValueError, match=r"endpoint '1\.2\.3\.4:5_1820' is not IPv4:PORT"):
        run("1.2.3.4:5_1820")
