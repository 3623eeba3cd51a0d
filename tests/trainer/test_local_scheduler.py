"""The local scheduler: logs per process, health wait, failures quoted from the log, no orphans."""

import os
import sys
import time

import pytest

from areal_core.errors import ArealError
from areal_core.launcher.local import LocalScheduler, LocalSchedulerConfig

SLEEP = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
IGNORE_TERM = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                     "print('ready', flush=True); time.sleep(60)"]


class HttpServerBackend:
    """A backend whose "server" is python's http.server; healthy when GET / answers 200."""

    def server_command(self, model_path, host, port):
        return [sys.executable, "-m", "http.server", str(port), "--bind", host, "--directory", model_path]

    async def health(self, client, addr):
        return (await client.get(f"http://{addr}/")).status_code == 200


class CrashingBackend(HttpServerBackend):
    def server_command(self, model_path, host, port):
        return [sys.executable, "-c", "import sys; print('model file is corrupt', flush=True); sys.exit(3)"]


def wait_for_text(path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.05)


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[1].split()[0] == "Z"


def test_stop_all_terminates_then_kills(tmp_path):
    scheduler = LocalScheduler(LocalSchedulerConfig(stop_timeout_s=0.5), log_dir=tmp_path)
    procs = scheduler.launch("worker", SLEEP, count=2) + scheduler.launch("stubborn", IGNORE_TERM)
    wait_for_text(tmp_path / "stubborn-0.log", "ready")
    wait_for_text(tmp_path / "worker-1.log", "up")
    start = time.monotonic()
    scheduler.stop_all()
    assert time.monotonic() - start < 5
    assert all(not p.alive() for p in procs)
    assert procs[2].popen.returncode == -9  # SIGTERM ignored: killed


def test_servers_start_on_free_ports_and_report_health(tmp_path):
    with LocalScheduler(LocalSchedulerConfig(server_start_timeout_s=30), log_dir=tmp_path / "logs") as scheduler:
        addrs = scheduler.start_inference_servers(HttpServerBackend(), str(tmp_path), 2)
        assert len(set(addrs)) == 2 and all(a.startswith("127.0.0.1:") for a in addrs)
        pids = [p.pid for p in scheduler.processes]
    assert all(gone(pid) for pid in pids)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["server0-0.log", "server1-0.log"]


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(tmp_path, monkeypatch):
    """The race free_port cannot close: the port is taken after it was drawn, before the server binds
    it. The server exits with EADDRINUSE; the scheduler starts it again on another port."""
    import socket

    from areal_core.launcher import local, support

    taker = socket.socket()  # the other process, listening on the port drawn for server0
    taker.bind(("127.0.0.1", 0))
    taker.listen()
    drawn = iter([taker.getsockname()[1]])
    monkeypatch.setattr(local, "free_port", lambda host, avoid=(): next(drawn, None) or support.free_port(host, avoid))
    with taker, LocalScheduler(LocalSchedulerConfig(server_start_timeout_s=30), log_dir=tmp_path / "logs") as scheduler:
        (addr,) = scheduler.start_inference_servers(HttpServerBackend(), str(tmp_path), 1)
        assert addr != f"127.0.0.1:{taker.getsockname()[1]}"
        assert scheduler.servers[addr].alive() and "already in use" not in scheduler.servers[addr].log_tail()
    assert "Address already in use" in (tmp_path / "logs" / "server0-0.log").read_text()


def test_free_ports_are_outside_the_range_the_kernel_hands_out(monkeypatch):
    """Ports for processes about to start lie below the ephemeral range (outgoing connections
    cannot take them meanwhile) and above Ray's worker ports; ``avoid`` is honoured."""
    import socket

    from areal_core.launcher import support

    low = support._ephemeral_low()
    ports = {support.free_port() for _ in range(20)}
    assert all(support.PORT_FLOOR <= p < low for p in ports)
    port = ports.pop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # it is free
    # every port drawn is one to avoid: the OS picks instead (from the ephemeral range)
    monkeypatch.setattr(support._PORT_DRAW, "sample", lambda population, k: [port] * k)
    assert support.free_port(avoid=[port]) >= low


def test_free_ports_do_not_follow_the_seeded_global_random():
    """Engines seed ``random`` with the run's seed; two runs on one node (or one run's later draws)
    must still get different ports (a seeded draw made concurrent runs collide: EADDRINUSE)."""
    import random

    from areal_core.launcher import support

    draws = []
    for _ in range(3):
        random.seed(1)
        draws.append(tuple(support.free_port() for _ in range(4)))
    assert len(set(draws)) == 3


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    with LocalScheduler(log_dir=tmp_path) as scheduler:
        with pytest.raises(ArealError, match=r"(?s)server0-0 .*exited with status 3.*model file is corrupt"):
            scheduler.start_inference_servers(CrashingBackend(), str(tmp_path), 1)


def test_a_failing_rank_fails_wait(tmp_path):
    with LocalScheduler(log_dir=tmp_path) as scheduler:
        ok = scheduler.launch("rank", [sys.executable, "-c", "pass"])
        bad = scheduler.launch("rank_bad", [sys.executable, "-c", "raise SystemExit('boom')"])
        with pytest.raises(ArealError, match=r"(?s)rank_bad-0 .*failed with status 1.*boom"):
            scheduler.wait(ok + bad)
