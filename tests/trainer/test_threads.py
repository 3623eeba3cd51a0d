"""trainer.torch_threads: the trainer's torch thread count, leaving pinned server cores alone."""

from __future__ import annotations

import os

import pytest
import torch

from areal_core.trainer.threads import apply_torch_threads, default_threads, is_local_host


class PinnedBackend:
    """An inference backend reporting pinned cores (the SupportsCpuPinning capability)."""

    def __init__(self, cpus):
        self.cpus = cpus

    def pinned_cpus(self):
        return frozenset(self.cpus) if self.cpus is not None else None


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_leaves_the_pinned_cores():
    assert default_threads({0, 1, 2, 3}, frozenset({0})) == 3
    assert default_threads({0, 1}, frozenset({0, 1})) == 1  # every core pinned: still one thread
    assert default_threads({2, 3}, frozenset({0})) == 2  # pinned cores outside the trainer's set cost nothing
    assert default_threads({0, 1}, None) is None  # nothing pinned: torch's default
    assert default_threads({0, 1}, frozenset()) is None


def test_local_hosts():
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("[::1]")
    assert not is_local_host("10.1.2.3") and not is_local_host("node-that-is-not-here")


def test_apply_uses_free_cores_of_a_local_pinned_server(restore_threads):
    affinity = sorted(os.sched_getaffinity(0))
    torch.set_num_threads(len(affinity))
    expected = max(1, len(affinity) - 1)
    assert apply_torch_threads(None, PinnedBackend([affinity[0]]), ["127.0.0.1:5000"]) == expected
    assert torch.get_num_threads() == expected


def test_apply_keeps_torch_default_without_pinning_or_for_remote_servers(restore_threads):
    torch.set_num_threads(3)
    assert apply_torch_threads(None, PinnedBackend(None), ["127.0.0.1:5000"]) == 3
    assert apply_torch_threads(None, PinnedBackend([0]), ["10.1.2.3:5000"]) == 3
    assert apply_torch_threads(None, object(), ["127.0.0.1:5000"]) == 3  # a backend without the capability


def test_a_synchronous_run_trains_on_the_pinned_servers_cores_too(restore_threads):
    """η = 0: the servers are idle while the trainer trains, so their cores count as free."""
    torch.set_num_threads(3)
    assert apply_torch_threads(None, PinnedBackend([0]), ["127.0.0.1:5000"], synchronous=True) == 3
    assert apply_torch_threads(4, PinnedBackend([0]), ["127.0.0.1:5000"], synchronous=True) == 4


def test_configured_threads_win(restore_threads):
    assert apply_torch_threads(2, PinnedBackend([0]), ["127.0.0.1:5000"]) == 2
    assert torch.get_num_threads() == 2
