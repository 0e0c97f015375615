"""The session guard of tests/conftest.py: a real Binance host is never contacted."""

from __future__ import annotations

import socket

import pytest
import requests


@pytest.mark.parametrize("host", ["fapi.binance.com", "data.binance.vision", "api.binance.com"])
def test_real_binance_hosts_are_refused(host):
    with pytest.raises(socket.gaierror, match="never contact the internet"):
        socket.getaddrinfo(host, 443)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"https://{host}/", timeout=5)


def test_loopback_still_resolves():
    assert socket.getaddrinfo("127.0.0.1", 80)
    assert socket.getaddrinfo("localhost", 80)
