"""Ports for local servers: parallel test workers each choose from a range of their own."""

from __future__ import annotations

import socket

from edge.tools.localbroker import PORT_RANGE, free_port


def quiet_range() -> int:
    """The first of five free ports below the workers' ranges (20000 on) and the kernel's ephemeral ports, where
    nothing of the suite binds (beside a kernel-chosen port, another worker's connection took a neighbour: CI)."""
    for low in range(15000, 19995, 5):
        try:
            for port in range(low, low + 5):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return low
        except OSError:
            continue
    raise AssertionError("no five free ports in 15000-19999")


def test_ports_come_from_the_range_in_turn_and_skip_one_in_use(monkeypatch):
    with socket.socket() as taken:
        low = quiet_range()
        busy = low + 2
        taken.bind(("127.0.0.1", busy))
        monkeypatch.setenv(PORT_RANGE, f"{low}-{low + 4}")
        taken.listen()
        ports = [free_port() for _ in range(8)]
    assert all(low <= p <= low + 4 for p in ports) and busy not in ports
    assert len(set(ports[:4])) == 4  # in turn: not the same port twice before the range comes round


def test_without_a_range_the_kernel_chooses(monkeypatch):
    monkeypatch.delenv(PORT_RANGE, raising=False)
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it
