"""Run inside a network namespace of its own (``unshare --net``, as root): load the deploy's egress
filter for an unprivileged user, then try to connect to listeners on private addresses as that
user and as root. Prints, as JSON, what each of them reached and what each listener accepted."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

USER = "nobody"
# (family, listen address, port, connect address): each listener on its own address and port.
TARGETS = [
    (socket.AF_INET, "127.0.0.1", 5432, "127.0.0.1"),      # a database on loopback
    (socket.AF_INET, "127.0.0.1", 40000, "127.0.0.1"),     # an ephemeral port (chromedriver...)
    (socket.AF_INET, "127.0.0.2", 5433, "127.0.0.2"),      # the rest of 127.0.0.0/8
    (socket.AF_INET, "0.0.0.0", 8081, "0.0.0.0"),          # 0.0.0.0/8 reaches the host itself
    (socket.AF_INET, "10.1.2.3", 80, "10.1.2.3"),
    (socket.AF_INET, "192.168.7.7", 80, "192.168.7.7"),
    (socket.AF_INET, "169.254.169.254", 80, "169.254.169.254"),
    (socket.AF_INET6, "::1", 5434, "::1"),
    (socket.AF_INET6, "::1", 40001, "::1"),
    (socket.AF_INET6, "fd00::7", 80, "fd00::7"),
    (socket.AF_INET6, "::", 8082, "::ffff:127.0.0.1"),     # IPv4-mapped, from an IPv6 socket
    (socket.AF_INET, "203.0.114.5", 8080, "203.0.114.5"),  # the host's own public address
    (socket.AF_INET, "203.0.114.5", 40002, "203.0.114.5"),  # ...on an ephemeral port too
    (socket.AF_INET6, "2001:db9::5", 8083, "2001:db9::5"),
]
SETUP = [  # the private addresses live on loopback: the namespace has no other interface
    "ip link set lo up",
    "ip addr add 10.1.2.3/32 dev lo",
    "ip addr add 192.168.7.7/32 dev lo",
    "ip addr add 169.254.169.254/32 dev lo",
    "ip -6 addr add fd00::7/128 dev lo",
    "ip addr add 203.0.114.5/32 dev lo",  # public addresses of the host's own
    "ip -6 addr add 2001:db9::5/128 dev lo",
]


def listen() -> dict[str, list[int]]:
    accepted: dict[str, list[int]] = {}
    for family, address, port, _ in TARGETS:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen()
        counter = accepted.setdefault(f"{address}:{port}", [0])

        def serve(sock: socket.socket = sock, counter: list[int] = counter) -> None:
            while True:
                conn, _ = sock.accept()
                counter[0] += 1
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
    return accepted


def connect_all() -> dict[str, str]:
    results = {}
    for family, _, port, address in TARGETS:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            try:
                sock.connect((address, port))
                results[f"{address}:{port}"] = "connected"
            except OSError as exc:
                results[f"{address}:{port}"] = type(exc).__name__
    return results


def main() -> None:
    if sys.argv[1] == "connect":
        print(json.dumps(connect_all()))
        return
    rules = Path(sys.argv[1]).read_text().replace('define shootr_user = "shootr"',
                                                  f'define shootr_user = "{USER}"')
    for command in SETUP:
        subprocess.run(command.split(), check=True)
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    accepted = listen()

    def run_as(*prefix: str) -> dict[str, str]:
        out = subprocess.run([*prefix, sys.executable, __file__, "connect"], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    as_user = run_as("setpriv", f"--reuid={USER}", "--regid=nogroup", "--clear-groups")
    accepted_from_user = {k: v[0] for k, v in accepted.items()}
    subprocess.run(["nft", "add", "element", "inet", "shootr_egress", "services4",
                    "{ 127.0.0.1 . tcp . 5432 }"], check=True)
    with_service = run_as("setpriv", f"--reuid={USER}", "--regid=nogroup", "--clear-groups")
    as_root = run_as()
    print(json.dumps({"user": as_user, "accepted_from_user": accepted_from_user,
                      "user_with_service": with_service, "root": as_root}))


if __name__ == "__main__":
    main()
