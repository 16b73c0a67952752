"""The fault proxy itself, spoken to in raw RESP over a plain socket: each control does what the
suite relies on (a real client would hide some of it by reconnecting)."""

import socket

import pytest

from tests.conftest import wait_until


class Raw:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)

    def ask(self, *words):
        self.sock.sendall(b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
        return self.sock.recv(65536)

    def close(self):
        self.sock.close()


@pytest.fixture
def raw():
    made = []

    def connect(p):
        made.append(Raw(p.port))
        return made[-1]

    yield connect
    for each in made:
        each.close()


def test_passes_traffic_and_counts_it(proxy, redis_server, raw):
    p = proxy(redis_server.port)
    assert raw(p).ask(b"PING") == b"+PONG\r\n"
    assert p.accepted == 1
    # Each direction counts what it has sent once sendall returns: poll.
    wait_until(lambda: p.bytes_up == 14 and p.bytes_down == 7, message="the bytes to be counted")


def test_cut_closes_open_connections_and_lets_new_ones_pass(proxy, redis_server, raw):
    p = proxy(redis_server.port)
    client = raw(p)
    assert client.ask(b"PING") == b"+PONG\r\n"
    p.cut()
    assert client.sock.recv(10) == b""  # FIN
    assert raw(p).ask(b"PING") == b"+PONG\r\n"


def test_reset_sends_rst(proxy, redis_server, raw):
    p = proxy(redis_server.port)
    client = raw(p)
    assert client.ask(b"PING") == b"+PONG\r\n"
    p.reset()
    with pytest.raises(ConnectionResetError):
        client.sock.recv(10)


def test_down_closes_new_connections_until_passed_again(proxy, redis_server, raw):
    p = proxy(redis_server.port)
    p.down()
    client = raw(p)
    assert client.sock.recv(10) == b""
    wait_until(lambda: p.refused == 1, message="the refusal to be counted")
    p.pass_()
    assert raw(p).ask(b"PING") == b"+PONG\r\n"


def test_stall_holds_replies_until_passed(proxy, redis_server, raw):
    p = proxy(redis_server.port)
    client = raw(p)
    p.stall()
    client.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        client.ask(b"PING")
    p.pass_()
    client.sock.settimeout(2)
    assert client.sock.recv(10) == b"+PONG\r\n"


@pytest.mark.parametrize("action", ["cut", "reset"])
def test_armed_trigger_breaks_the_reply_after_the_server_did_the_work(
    proxy, redis_server, raw, action
):
    p = proxy(redis_server.port)
    direct = redis_server.client()
    direct.delete("proxy:list")
    client = raw(p)
    assert client.ask(b"RPUSH", b"proxy:list", b"before") == b":1\r\n"
    trigger = p.arm(action, after=1, request=b"marker")
    try:
        assert client.ask(b"RPUSH", b"proxy:list", b"marker") == b":"
        assert client.sock.recv(10) == b""
    except ConnectionResetError:
        assert action == "reset"
    assert trigger.fired.is_set()
    assert direct.lrange("proxy:list", 0, -1) == [b"before", b"marker"]  # done, never answered
    assert raw(p).ask(b"RPUSH", b"proxy:list", b"after") == b":3\r\n"  # it fires once


def test_armed_stall_mid_reply_then_resume(proxy, redis_server, raw):
    p = proxy(redis_server.port)
    redis_server.client().set("proxy:big", "x" * 1000)
    client = raw(p)
    p.arm("stall", after=10, reply=b"xxxx")
    assert client.ask(b"GET", b"proxy:big") == b"$1000\r\nxxx"
    client.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        client.sock.recv(10)
    p.pass_()
    client.sock.settimeout(2)
    rest = b""
    while len(rest) < 999:
        rest += client.sock.recv(2000)
    assert rest == b"x" * 997 + b"\r\n"
