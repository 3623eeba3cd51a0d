"""RolloutController with an in-test workflow over in-test servers: admission, groups, failures,
filtering, pause, metrics and recovery. (test_rlvr_embedded.py runs the real rlvr workflow.)"""

import asyncio
import collections
import time

import pytest

from areal_core.api.types import ModelRequest, SamplingParams, Trajectory
from areal_core.config.schema import RolloutConfig
from areal_core.errors import ArealError
from areal_core.rollout.client import InferenceUnavailableError, RolloutClient
from areal_core.rollout.controller import RolloutController, version_lag_stats
from rollout_fakes import ScriptedBackend, controller_update_weights


class ScriptedWorkflow:
    """n completions per sample; sample fields script the outcome: ``fail_times`` (raise on the first
    k attempts), ``reject`` (return None), ``rewards`` (one per completion)."""

    def __init__(self, n=2, max_new_tokens=4):
        self.n, self.max_new_tokens = n, max_new_tokens
        self.started: list[str] = []
        self.attempts = collections.Counter()
        self.running = 0
        self.peak = 0

    async def run_episode(self, engine, sample):
        sid = str(sample["id"])
        self.started.append(sid)
        self.attempts[sid] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if sample.get("fail_times", 0) >= self.attempts[sid]:
                raise RuntimeError(f"scripted failure of sample {sid}")
            responses = await asyncio.gather(*(
                engine.agenerate(ModelRequest([1 + i], SamplingParams(max_new_tokens=self.max_new_tokens)))
                for i in range(self.n)))
            if sample.get("reject"):
                return None
            rewards = sample.get("rewards", list(range(self.n)))
            return [Trajectory.from_response(r, rewards[i]) for i, r in enumerate(responses)]
        finally:
            self.running -= 1


def dataset(n, **fields_by_id):
    return [{"id": i, "prompt": f"p{i}", **fields_by_id.get(f"s{i}", {})} for i in range(n)]


@pytest.fixture
def make_controller():
    made = []

    def make(step_s=0.001, addrs=("a:1", "b:1"), keep_group=None, max_consecutive_failures=None, **rollout):
        backend = ScriptedBackend(addrs=addrs, step_s=step_s)
        config = RolloutConfig(**{"batch_size": 2, "max_head_offpolicyness": 0, **rollout})
        ctl = RolloutController(RolloutClient(backend, list(addrs)), config, keep_group=keep_group,
                                max_consecutive_failures=max_consecutive_failures)
        ctl.backend = backend
        made.append(ctl)
        return ctl

    yield make
    for ctl in made:
        ctl.close()


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def groups_of(batch):
    by_group = collections.defaultdict(list)
    for t in batch:
        by_group[t.group_id].append(t)
    return by_group


def test_prepare_batch_returns_exactly_b_whole_groups(make_controller):
    ctl = make_controller(batch_size=3, max_head_offpolicyness=1)
    wf = ScriptedWorkflow(n=2)
    batch = ctl.prepare_batch(dataset(10), wf, timeout_s=10)
    groups = groups_of(batch)
    assert len(batch) == 6 and len(groups) == 3
    for gid, members in groups.items():
        assert len(members) == 2 and len({t.sample_id for t in members}) == 1
        assert gid.startswith(members[0].sample_id + "#")
    # members of a group are adjacent in the batch
    assert [t.group_id for t in batch] == [g for g in groups for _ in range(2)]


def test_admission_follows_the_staleness_formula(make_controller):
    ctl = make_controller(batch_size=2, max_head_offpolicyness=0)
    wf = ScriptedWorkflow()
    ctl.prepare_batch(dataset(20), wf, timeout_s=10)
    # η = 0, v = 0: capacity = (0+0+1)·2 − (accepted + running) -> exactly 2 episodes ever start
    time.sleep(0.1)
    assert len(wf.started) == 2 and ctl.staleness.capacity() == 0
    ctl.engine.weight_version.set(1)  # (0+1+1)·2 − 2 = 2 more
    wait_until(lambda: len(wf.started) == 4 and wf.running == 0)
    time.sleep(0.05)
    assert len(wf.started) == 4
    m = ctl.metrics()
    assert (m["rollout/accepted"], m["rollout/running"], m["rollout/ready"]) == (4, 0, 2)


def test_off_policy_runs_ahead_by_eta_batches(make_controller):
    ctl = make_controller(batch_size=2, max_head_offpolicyness=2)
    wf = ScriptedWorkflow()
    ctl.prepare_batch(dataset(20), wf, timeout_s=10)
    # η = 2, v = 0: (2+0+1)·2 = 6 episodes start before any version bump, then no more
    wait_until(lambda: len(wf.started) == 6 and wf.running == 0)
    time.sleep(0.05)
    assert len(wf.started) == 6
    assert len(ctl.prepare_batch(dataset(20), wf, timeout_s=10)) == 4  # the second batch needs no new episode


def test_max_concurrent_rollouts_bounds_concurrency(make_controller):
    ctl = make_controller(step_s=0.005, batch_size=4, max_head_offpolicyness=4, max_concurrent_rollouts=3)
    wf = ScriptedWorkflow()
    ctl.prepare_batch(dataset(30), wf, timeout_s=20)
    assert wf.peak == 3


@pytest.mark.parametrize("as_algorithm", [False, True])
def test_dynamic_filter_rejects_whole_groups(make_controller, as_algorithm):
    def keep(group):  # DAPO: drop groups whose rewards are all equal
        return len({t.reward for t in group}) > 1

    class Algo:  # an Algorithm: the controller uses only its keep_group
        keep_group = staticmethod(keep)

        def train_step(self, batch, actor, critic=None, ref=None):
            raise AssertionError("the controller never trains")

    flat = {f"s{i}": {"rewards": [1.0, 1.0]} for i in range(0, 10, 2)}  # even samples: all-equal rewards
    ctl = make_controller(batch_size=3, max_head_offpolicyness=0, keep_group=Algo() if as_algorithm else keep)
    batch = ctl.prepare_batch(dataset(10, **flat), ScriptedWorkflow(), timeout_s=10)
    ids = {t.sample_id for t in batch}
    assert len(groups_of(batch)) == 3 and all(int(i) % 2 == 1 for i in ids)
    m = ctl.metrics()
    # capacity = (0+0+1)·3 − (accepted + running): rejected groups don't count, so 3 odd + ≥2 even started
    assert m["rollout/rejected"] >= 2 and m["rollout/accepted"] == 3


def test_workflow_returning_none_counts_as_rejected(make_controller):
    ctl = make_controller(batch_size=2)
    batch = ctl.prepare_batch(dataset(6, s0={"reject": True}), ScriptedWorkflow(), timeout_s=10)
    assert "0" not in {t.sample_id for t in batch} and ctl.metrics()["rollout/rejected"] == 1


def test_failed_group_is_dropped_and_counted(make_controller):
    ctl = make_controller(batch_size=3, group_failure="drop")
    batch = ctl.prepare_batch(dataset(10, s1={"fail_times": 99}), ScriptedWorkflow(n=3), timeout_s=10)
    assert "1" not in {t.sample_id for t in batch}
    assert all(len(g) == 3 for g in groups_of(batch).values())  # never a shrunk group
    m = ctl.metrics()
    assert (m["rollout/failed"], m["rollout/dropped"], m["rollout/retried"]) == (1, 1, 0)


def test_failed_group_is_retried(make_controller):
    ctl = make_controller(batch_size=2, group_failure="retry", max_retries=2)
    wf = ScriptedWorkflow()
    batch = ctl.prepare_batch(dataset(2, s0={"fail_times": 2}), wf, timeout_s=10)
    assert {t.sample_id for t in batch} == {"0", "1"} and wf.attempts["0"] == 3
    m = ctl.metrics()
    assert (m["rollout/failed"], m["rollout/retried"], m["rollout/dropped"]) == (2, 2, 0)


def test_retries_exhausted_drop_the_group(make_controller):
    ctl = make_controller(batch_size=2, group_failure="retry", max_retries=1)
    wf = ScriptedWorkflow()
    batch = ctl.prepare_batch(dataset(4, s0={"fail_times": 5}), wf, timeout_s=10)
    assert "0" not in {t.sample_id for t in batch} and wf.attempts["0"] == 2
    m = ctl.metrics()
    assert (m["rollout/failed"], m["rollout/retried"], m["rollout/dropped"]) == (2, 1, 1)


def test_failures_in_a_row_stop_the_run_with_the_last_error(make_controller):
    ctl = make_controller(batch_size=2, max_consecutive_failures=4)
    always = {f"s{i}": {"fail_times": 99} for i in range(10)}
    with pytest.raises(ArealError, match=r"4 episodes failed in a row; .*scripted failure of sample"):
        ctl.prepare_batch(dataset(10, **always), ScriptedWorkflow(), timeout_s=10)


def test_unreachable_servers_stop_the_run(make_controller):
    ctl = make_controller(batch_size=2)
    for s in ctl.backend.servers.values():
        s.dead = True
    with pytest.raises(InferenceUnavailableError, match="a:1.*\n.*b:1"):
        ctl.prepare_batch(dataset(4), ScriptedWorkflow(), timeout_s=10)
    assert set(ctl.in_flight_sample_ids()) >= {"0", "1"}  # kept for recovery, not lost


def test_pause_holds_generation_and_resume_continues(make_controller):
    ctl = make_controller(step_s=0.01, batch_size=2, max_head_offpolicyness=1)
    wf = ScriptedWorkflow(max_new_tokens=30)
    ctl._call(ctl._set_source(dataset(8), wf))
    wait_until(lambda: wf.running == 4 and sum(s.tokens for s in ctl.backend.servers.values()) >= 4 * 2 * 5)
    ctl.pause()
    assert all(s.paused for s in ctl.backend.servers.values())
    started = len(wf.started)
    time.sleep(0.2)
    assert len(wf.started) == started and ctl.metrics()["rollout/accepted"] == 0  # held mid-generation
    controller_update_weights(ctl, 1)
    ctl.resume()
    batch = ctl.wait(2, timeout_s=10)
    versions = [v for t in batch for v in t.versions if v >= 0]
    assert 0 in versions and 1 in versions  # trajectories span the update
    m = ctl.metrics()
    assert m["rollout/version"] == 1 and m["inference/interruptions"] >= 1 and "inference/sync_s" in m
    assert 0 < m["rollout/version_lag_mean"] < 1 and m["rollout/version_lag_max"] == 1


def test_version_lag_stats_by_hand():
    t1 = Trajectory([9, 1, 2, 3], [0, 1, 1, 1], [0.0] * 4, [-1, 3, 4, 5], 0.0)
    t2 = Trajectory([9, 1], [0, 1], [0.0] * 2, [-1, 5], 0.0)
    stats = version_lag_stats([t1, t2], version=5, max_bucket=2)
    # lags of the 4 trained tokens: 5−3=2, 5−4=1, 5−5=0, 5−5=0 -> mean 3/4, max 2
    assert stats["rollout/version_lag_mean"] == 0.75 and stats["rollout/version_lag_max"] == 2
    assert stats["rollout/version_lag_min"] == 0
    assert stats["rollout/version_lag_hist/0"] == 0.5 and stats["rollout/version_lag_hist/1"] == 0.25
    assert stats["rollout/version_lag_hist/>=2"] == 0.25 and stats["rollout/trained_tokens"] == 4


def test_recovery_neither_loses_nor_repeats_samples(make_controller):
    data = dataset(20)
    ctl = make_controller(batch_size=2, max_head_offpolicyness=1)
    wf = ScriptedWorkflow()
    trained = []
    for step in range(3):
        trained += [t.sample_id for t in ctl.prepare_batch(data, wf, timeout_s=10)[::2]]
        ctl.engine.weight_version.set(step + 1)
    state = ctl.state_dict()
    in_flight = [e["sample_id"] for e in state["in_flight"]]
    assert in_flight and not set(in_flight) & set(trained)
    ctl.close()  # the "crash": whatever was in flight is lost with the process

    resumed = make_controller(batch_size=2, max_head_offpolicyness=1)
    resumed.load_state_dict(state)
    resumed.engine.weight_version.set(3)  # the trainer restores the run's version
    assert resumed.staleness.accepted == 3 * 2  # v·B
    wf2 = ScriptedWorkflow()
    for step in range(3, 8):
        trained += [t.sample_id for t in resumed.prepare_batch(data, wf2, timeout_s=10)[::2]]
        resumed.engine.weight_version.set(step + 1)
    assert wf2.started[:len(in_flight)] == in_flight  # the interrupted samples run first
    assert len(trained) == len(set(trained)) == 16  # nothing trained twice
    taken = int(resumed.state_dict()["data_position"]["index"])
    left = set(resumed.in_flight_sample_ids()) | {str(i) for i in range(taken, 20)}
    assert set(trained) | left == {str(i) for i in range(20)}  # nothing lost


def test_bad_dataloader_items_are_a_clear_error(make_controller):
    ctl = make_controller(batch_size=1)
    with pytest.raises(ArealError, match="sample dicts or lists of them .*got str"):
        ctl.prepare_batch(["not a dict"], ScriptedWorkflow(), timeout_s=10)


def test_generator_dataloader_runs_out_with_a_clear_error(make_controller):
    ctl = make_controller(batch_size=3)
    with pytest.raises(ArealError, match="yielded no samples in epoch 1"):
        ctl.prepare_batch((s for s in dataset(2)), ScriptedWorkflow(), timeout_s=10)


def test_batches_of_samples_and_epochs(make_controller):
    ctl = make_controller(batch_size=4, max_head_offpolicyness=0)
    wf = ScriptedWorkflow()
    loader = [dataset(3)[:2], dataset(3)[2:]]  # a dataloader yielding lists of samples
    batch = ctl.prepare_batch(loader, wf, timeout_s=10)
    assert sorted(t.sample_id for t in batch[::2]) == ["0", "0", "1", "2"]  # epoch 1 started over
    assert ctl.state_dict()["data_position"] == {"epoch": 1, "index": 1}


def test_timeout_names_the_counters(make_controller):
    ctl = make_controller(batch_size=2)
    with pytest.raises(ArealError, match=r"not ready after 0.2s \(version 0, running"):
        ctl.wait(2, timeout_s=0.2)


def test_shutdown_closes_workflows_that_hold_resources(make_controller):
    """A workflow with ``aclose`` (e.g. one serving an HTTP proxy) is closed once, on the controller's
    loop, when the controller shuts down; whether it ran a batch or a submitted sample."""

    class ClosingWorkflow(ScriptedWorkflow):
        def __init__(self):
            super().__init__(n=2)
            self.closed_on: list[asyncio.AbstractEventLoop] = []

        async def aclose(self):
            self.closed_on.append(asyncio.get_running_loop())

    ctl = make_controller(batch_size=1)
    batch_wf, submitted_wf = ClosingWorkflow(), ClosingWorkflow()
    ctl.prepare_batch(dataset(4), batch_wf, timeout_s=10)
    ctl.submit({"id": "extra"}, submitted_wf)
    ctl.close()
    assert len(batch_wf.closed_on) == 1 and len(submitted_wf.closed_on) == 1
    assert batch_wf.closed_on[0] is submitted_wf.closed_on[0] is not None
