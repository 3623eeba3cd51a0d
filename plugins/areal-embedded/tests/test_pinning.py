"""inference.cpus: the server pins itself (every thread) to the given cores, or refuses clearly."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

from areal_core.plugin import ArealError, SupportsCpuPinning
from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig
from areal_embedded.server import pin_to_cpus


def test_cpus_become_a_server_flag():
    argv = EmbeddedBackend(EmbeddedConfig(name="embedded", cpus=[0])).server_command("m", "127.0.0.1", 1)
    assert argv[argv.index("--cpus") + 1] == "0"
    assert "--cpus" not in EmbeddedBackend(EmbeddedConfig(name="embedded")).server_command("m", "127.0.0.1", 1)



def test_pinned_cpus_tell_the_trainer_which_cores_to_leave():
    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", cpus=[0, 2]))
    assert isinstance(backend, SupportsCpuPinning)
    assert backend.pinned_cpus() == frozenset({0, 2})
    assert EmbeddedBackend(EmbeddedConfig(name="embedded")).pinned_cpus() is None

def test_pin_to_cpus_pins_every_thread_and_threads_started_later():
    before = os.sched_getaffinity(0)
    first = min(before)
    started = threading.Event()
    release = threading.Event()
    seen: dict[str, set[int]] = {}

    def early():
        started.set()
        release.wait(10)

    t = threading.Thread(target=early)
    t.start()
    started.wait(10)
    try:
        assert pin_to_cpus(str(first)) == {first}
        assert os.sched_getaffinity(0) == {first}
        assert os.sched_getaffinity(t.native_id) == {first}  # already running: pinned too
        late = threading.Thread(target=lambda: seen.setdefault("late", os.sched_getaffinity(0)))
        late.start()
        late.join()
        assert seen["late"] == {first}
    finally:
        release.set()
        t.join()
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread of the test process that ended meanwhile
                os.sched_setaffinity(int(task), before)


@pytest.mark.parametrize("spec, message", [("x", "comma-separated"), ("100000", "cannot pin to cores"), (",", "no core given")])
def test_bad_cpus_name_the_flag(spec, message):
    before = os.sched_getaffinity(0)
    with pytest.raises(ArealError, match=message):
        pin_to_cpus(spec)
    assert os.sched_getaffinity(0) == before
