"""Each sandbox limit stops or denies what it should, and the sandbox keeps working afterwards."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from areal_agent.sandbox import PythonSandbox, net_namespace_available


def run(code: str, **kw):
    return asyncio.run(PythonSandbox(**kw).run(code))


def test_ordinary_code_runs_and_may_write_its_scratch_dir():
    r = run("open('notes.txt', 'w').write('hi'); print(open('notes.txt').read(), 6 * 7)")
    assert r.ok and r.stdout.strip() == "hi 42"


def test_an_infinite_loop_is_killed_at_the_wall_time():
    start = time.monotonic()
    r = run("while True: pass", wall_time_s=1.0)
    assert not r.ok and r.error.startswith("timeout") and time.monotonic() - start < 5


def test_allocating_10_gb_is_a_memory_error():
    r = run("x = bytearray(10 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert not r.ok and r.error.startswith("memory") and "allocated" not in r.stdout


@pytest.mark.parametrize("code", [
    "import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)",
    "import urllib.request; urllib.request.urlopen('http://example.com', timeout=2)",
])
def test_the_network_is_denied(code):
    r = run(code)
    assert not r.ok and "socket" in r.stderr


@pytest.mark.skipif(not net_namespace_available(), reason="unshare --net does not work here (needs root)")
def test_the_network_namespace_alone_blocks_connections(tmp_path):
    # without the audit hook: the kernel-level guard on its own
    script = tmp_path / "connect.py"
    script.write_text("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
                      "except OSError as e:\n    print('blocked', e.errno)\n")
    res = subprocess.run(["unshare", "--net", "--", sys.executable, str(script)], capture_output=True, text=True, timeout=20, check=False)
    assert res.stdout.startswith("blocked"), res.stderr


@pytest.mark.parametrize("code", [
    "open('/tmp/areal_sandbox_escape.txt', 'w').write('x')",
    "import os; os.remove('/etc/hostname')",
    "import os; os.mkdir('../escape')",
    "import pathlib; pathlib.Path('/tmp/areal_sandbox_escape.txt').write_text('x')",
])
def test_writing_outside_the_scratch_dir_is_denied(code):
    r = run(code)
    assert not r.ok and "PermissionError" in r.stderr
    assert not os.path.exists("/tmp/areal_sandbox_escape.txt")


@pytest.mark.parametrize("code", ["import subprocess; subprocess.run(['ls'])", "import os; os.system('ls')",
                                  "import ctypes"])
def test_processes_and_native_code_are_denied(code):
    r = run(code)
    assert not r.ok and "PermissionError" in r.stderr
