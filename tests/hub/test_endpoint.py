"""zoo.hub.endpoint: one TCP connection tells a reachable endpoint (or its proxy) from one that does not answer."""

import socket

import pytest

from zoo.hub.endpoint import unreachable


@pytest.fixture
def listening():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more: connections are refused
    return port


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_a_listening_endpoint_is_reachable(listening):
    assert unreachable(f"http://127.0.0.1:{listening}") is None


def test_a_refused_connection_says_so(closed_port):
    assert unreachable(f"http://127.0.0.1:{closed_port}") == f"127.0.0.1:{closed_port}: Connection refused"


def test_an_unknown_host_says_so():
    reason = unreachable("https://no-such-host.invalid")
    assert reason is not None and reason.startswith("no-such-host.invalid:443: ")


def test_behind_a_proxy_the_proxy_is_asked(listening, closed_port, monkeypatch):
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listening}")
    assert unreachable("https://no-such-host.invalid") is None  # the proxy answers; it resolves the host itself
    monkeypatch.setenv("https_proxy", f"127.0.0.1:{closed_port}")
    assert unreachable("https://no-such-host.invalid") == f"127.0.0.1:{closed_port}: Connection refused"
    monkeypatch.setenv("no_proxy", "no-such-host.invalid")
    assert unreachable("https://no-such-host.invalid").startswith("no-such-host.invalid:443: ")
