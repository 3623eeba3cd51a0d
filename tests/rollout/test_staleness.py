"""Staleness admission: capacity = min(C − running, (η + v + 1)·B − (accepted + running))."""

import pytest

from areal_core.api.types import WeightVersion
from areal_core.config.schema import RolloutConfig
from areal_core.errors import ArealError
from areal_core.rollout.staleness import StalenessManager


def manager(eta, B, C, version=0, accepted=0, running=0):
    m = StalenessManager(batch_size=B, max_head_offpolicyness=eta, max_concurrent_rollouts=C,
                         weight_version=WeightVersion(version))
    m.accepted, m.running = accepted, running
    return m


@pytest.mark.parametrize("eta,B,C,version,accepted,running,expected", [
    # synchronous RL at the start: min(64 − 0, (0+0+1)·8 − (0+0)) = min(64, 8) = 8
    (0, 8, 64, 0, 0, 0, 8),
    # synchronous, one batch in flight: min(64 − 8, 1·8 − (0+8)) = min(56, 0) = 0
    (0, 8, 64, 0, 0, 8, 0),
    # synchronous, batch 0 accepted, version not yet bumped: min(64, 8 − 8) = 0
    (0, 8, 64, 0, 8, 0, 0),
    # ... after the update to version 1: min(64, (0+1+1)·8 − 8) = min(64, 8) = 8
    (0, 8, 64, 1, 8, 0, 8),
    # η = 2, v = 3, B = 4: staleness bound (2+3+1)·4 = 24; 24 − (13 + 5) = 6; concurrency 16 − 5 = 11 -> 6
    (2, 4, 16, 3, 13, 5, 6),
    # concurrency binds: η = 4, v = 10, B = 32: (4+10+1)·32 − (300+10) = 480 − 310 = 170; C − running = 16 − 10 = 6
    (4, 32, 16, 10, 300, 10, 6),
    # ahead of the bound (e.g. right after recovery): (1+2+1)·2 − (9+0) = 8 − 9 = −1
    (1, 2, 8, 2, 9, 0, -1),
    # η = 1, v = 0, B = 3, nothing yet: min(10, (1+0+1)·3 − 0) = min(10, 6) = 6
    (1, 3, 10, 0, 0, 0, 6),
    # same, 4 running and 1 accepted: min(10 − 4, 6 − (1+4)) = min(6, 1) = 1
    (1, 3, 10, 0, 1, 4, 1),
])
def test_capacity_hand_computed(eta, B, C, version, accepted, running, expected):
    assert manager(eta, B, C, version, accepted, running).capacity() == expected


def test_try_start_counts_and_stops_at_capacity():
    # η = 1, B = 2, C = 3: min(3 − r, (1+0+1)·2 − (a + r)) -> starts allowed: 3 (concurrency binds at r = 3)
    m = manager(1, 2, 3)
    assert [m.try_start() for _ in range(4)] == [True, True, True, False]
    assert m.running == 3
    # one finishes accepted: min(3 − 2, 4 − (1 + 2)) = min(1, 1) = 1
    m.on_accept()
    assert m.capacity() == 1 and m.try_start() and not m.try_start()
    # rejected and failed episodes free their slot without counting as accepted: running 3 -> 1
    m.on_reject()
    m.on_fail()
    assert (m.accepted, m.rejected, m.failed, m.running) == (1, 1, 1, 1)
    # min(3 − 1, 4 − (1 + 1)) = min(2, 2) = 2
    assert m.capacity() == 2
    # version 1 raises the staleness bound by B: min(3 − 1, (1+1+1)·2 − 2) = min(2, 4) = 2
    m.weight_version.set(1)
    assert m.capacity() == 2


def test_finish_without_running_is_an_error():
    with pytest.raises(ArealError, match="none was running"):
        manager(0, 1, 1).on_accept()


def test_recovery_restarts_accepted_at_version_times_batch():
    m = manager(2, 4, 64, version=3, accepted=17, running=5)
    m.rejected, m.failed = 2, 1
    state = m.state_dict()
    assert state == {"version": 3, "accepted": 17, "rejected": 2, "failed": 1}
    # the trainer restores the run's weight version; the manager only reads it
    fresh = StalenessManager.from_config(RolloutConfig(batch_size=4, max_head_offpolicyness=2), WeightVersion(3))
    fresh.load_state_dict(state)
    # accepted = v·B = 3·4 = 12 (the 5 groups accepted beyond the 12 trained are re-generated), running 0
    assert (fresh.version, fresh.accepted, fresh.running, fresh.rejected, fresh.failed) == (3, 12, 0, 2, 1)
    # capacity = min(64 − 0, (2+3+1)·4 − 12) = min(64, 12) = 12
    assert fresh.capacity() == 12


def test_invalid_settings_name_the_field():
    with pytest.raises(ArealError, match="batch_size"):
        StalenessManager(batch_size=0, max_head_offpolicyness=0, max_concurrent_rollouts=1)
    with pytest.raises(ArealError, match="max_head_offpolicyness"):
        StalenessManager(batch_size=1, max_head_offpolicyness=-1, max_concurrent_rollouts=1)
