"""The deploy's egress filter (``deploy/shootr-egress.nft``): it covers every kind of address the
application refuses, on IPv4 and IPv6, and it really stops the workers' user, in a network
namespace of the test's own (nothing on the machine is touched)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from demo_project.shootr.urlsafety import address_kind

pytestmark = pytest.mark.demo

DEPLOY = Path(__file__).resolve().parent.parent.parent / "demo_project" / "deploy"
RULES = DEPLOY / "shootr-egress.nft"
PROBE = Path(__file__).resolve().parent / "egress_probe.py"

REFUSED = ["0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "100.100.100.200", "127.0.0.1",
           "127.255.0.9", "169.254.169.254", "172.16.0.1", "192.168.1.1", "224.0.0.1",
           "255.255.255.255", "::", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1",
           "fc00::1", "fd00:ec2::254", "fe80::1", "ff02::1", "64:ff9b::a00:1",
           "64:ff9b::7f00:1", "2002:a00:1::1", "2002:7f00:1::"]
PUBLIC = ["8.8.8.8", "93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"]


def networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    text = RULES.read_text()
    body = re.search(rf"set {name} \{{.*?elements = \{{(.*?)\}}", text, re.S)
    assert body, f"no set {name} in {RULES}"
    items = re.sub(r"#[^\n]*", "", body.group(1)).replace("\n", " ").split(",")
    return [ipaddress.ip_network(item.strip()) for item in items if item.strip()]


def covered(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in networks("private4" if ip.version == 4 else "private6"))


@pytest.mark.parametrize("address", REFUSED)
def test_the_filter_covers_what_the_application_refuses(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is not None  # the two agree on it
    assert covered(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_the_filter_leaves_public_addresses_alone(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None
    assert not covered(address)


def test_the_deploy_readme_installs_this_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "shootr-egress.nft" in readme
    assert "ip daddr {" not in readme  # no IPv4-only rule of its own to drift from the file


def test_the_filter_stops_the_workers_user(tmp_path: Path) -> None:
    missing = [tool for tool in ("unshare", "nft", "setpriv", "ip") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'network namespaces'}")
    done = subprocess.run(["unshare", "--net", sys.executable, str(PROBE), str(RULES)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"no network namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    ephemeral = {"127.0.0.1:40000", "::1:40001"}
    # The control: root is not filtered, and reaches every listener.
    assert set(seen["root"].values()) == {"connected"}
    # The workers' user reaches only loopback's ephemeral ports (chromedriver, Chromium, proxy).
    assert {k for k, v in seen["user"].items() if v == "connected"} == ephemeral
    assert {k for k, v in seen["accepted_from_user"].items() if v} == {"127.0.0.1:40000",
                                                                      "::1:40001"}
    # A service added to the set, as the file's header says, is reachable.
    assert {k for k, v in seen["user_with_service"].items() if v == "connected"} == {
        *ephemeral, "127.0.0.1:5432"}
