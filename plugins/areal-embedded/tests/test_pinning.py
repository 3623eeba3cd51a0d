"""inference.cpus: the server pins itself (every thread) to the given cores, or refuses clearly."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

from areal_core.plugin import ArealError, SupportsCpuPinning
from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig
from areal_embedded.cpus import auto_cpus
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


def test_auto_takes_the_first_cores_and_leaves_at_least_one():
    assert auto_cpus(1, {3, 5, 7}) == {3}  # the cores this process may use, not 0..k-1
    assert auto_cpus(2, {3, 5, 7}) == {3, 5}
    assert auto_cpus(1, {4}) is None  # one core: nothing to keep generation off
    assert auto_cpus(2, {0, 1}) is None


def test_auto_cpus_counts_servers_times_threads_and_matches_the_server():
    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", cpus="auto", n_servers=2, threads=3))
    argv = backend.server_command("m", "127.0.0.1", 1)
    assert argv[argv.index("--cpus") + 1] == "auto:6"
    one = EmbeddedBackend(EmbeddedConfig(name="embedded", cpus="auto"))
    expected = auto_cpus(1)
    assert one.pinned_cpus() == (frozenset(expected) if expected is not None else None)


def test_pin_to_cpus_auto_pins_the_first_core_or_nothing():
    before = os.sched_getaffinity(0)
    try:
        pinned = pin_to_cpus("auto:1")
        if len(before) > 1:
            assert pinned == {min(before)} == os.sched_getaffinity(0)
        else:
            assert pinned is None and os.sched_getaffinity(0) == before
        assert pin_to_cpus(f"auto:{len(before)}") is None  # no core left for the trainer: not pinned
    finally:
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task), before)


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


@pytest.mark.parametrize("spec, message", [("x", "comma-separated"), ("100000", "cannot pin to cores"), (",", "no core given"),
                                           ("auto:two", "auto:K")])
def test_bad_cpus_name_the_flag(spec, message):
    before = os.sched_getaffinity(0)
    with pytest.raises(ArealError, match=message):
        pin_to_cpus(spec)
    assert os.sched_getaffinity(0) == before
