"""Rewards fail loudly (issue 16): a broken verifier stops the run, values are checked, hung
synchronous rewards hold a bounded number of threads, and a blocked event loop is reported."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from areal_core.config.schema import RolloutConfig
from areal_core.errors import ArealError
from areal_core.rollout.client import RolloutClient
from areal_core.rollout.controller import RolloutController
from areal_core.rollout.reward_runner import RewardFailureRateError, RewardRunner
from areal_core.rollout.rlvr import RLVRConfig, RLVRWorkflow
from areal_core.rollout.watchdog import LoopWatchdog
from rollout_fakes import ScriptedBackend


@pytest.fixture(scope="module")
def tokenizer():
    from areal_core.testing.tiny import make_tokenizer

    return make_tokenizer()


def controller(config):
    return RolloutController(RolloutClient(ScriptedBackend(addrs=["a:1"], step_s=0.001), ["a:1"]), config)


def rlvr(tokenizer, runner):
    return RLVRWorkflow(RLVRConfig(name="rlvr", n_samples=2, max_new_tokens=4), runner, tokenizer)


DATA = [{"id": i, "prompt": f"question {i}"} for i in range(64)]


def test_a_reward_that_always_raises_stops_the_run(tokenizer):
    """It used to finish with rc 0, all rewards 0 and grad norm 0."""
    def broken(prompt, completion, sample):
        raise KeyError("answer")

    config = RolloutConfig(batch_size=4, max_head_offpolicyness=0, reward_failure_window=8)
    runner = RewardRunner.from_config(broken, config)
    with controller(config) as ctl, pytest.raises(RewardFailureRateError) as err:
        ctl.prepare_batch(DATA, rlvr(tokenizer, runner), timeout_s=30)
    assert "rewards failed for 100% of the last 8 samples" in str(err.value)
    assert "reward_max_failure_share=0.5" in str(err.value) and "KeyError" in str(err.value)


def test_occasional_failures_below_the_share_keep_running(tokenizer):
    calls = iter(range(10_000))

    def flaky(prompt, completion, sample):
        if next(calls) % 4 == 0:
            raise ValueError("flaky")
        return 1.0

    config = RolloutConfig(batch_size=4, max_head_offpolicyness=4, reward_failure_window=8)
    with controller(config) as ctl:
        for _ in range(3):
            assert len(ctl.prepare_batch(DATA, rlvr(tokenizer, RewardRunner.from_config(flaky, config)),
                                         timeout_s=30)) == 8


@pytest.mark.parametrize("value,words", [
    (float("nan"), "nan, not a finite number"), (float("inf"), "inf, not a finite number"),
    ("1.0", "'1.0', not a number"), (None, "None, not a number"), ([1.0], "[1.0], not a number"),
    (1e300, "beyond rollout.reward_max_abs=1e+06"), (torch.tensor([1.0, 2.0]), "not a single number"),
])
def test_non_numbers_fail_their_sample_with_the_reason(value, words):
    outcome = asyncio.run(RewardRunner(lambda p, c, s: value)("p", "c", {}))
    assert not outcome.ok and outcome.value == 0.0 and words in outcome.error


@pytest.mark.parametrize("value,expected", [(True, 1.0), (False, 0.0), (3, 3.0), (np.float32(0.5), 0.5),
                                            (np.int64(2), 2.0), (torch.tensor(0.25), 0.25), (-1e6, -1e6)])
def test_numbers_are_coerced(value, expected, log_text):
    outcome = asyncio.run(RewardRunner(lambda p, c, s: value)("p", "c", {}))
    assert outcome.ok and outcome.value == expected
    if not isinstance(value, float):
        assert "reward value coerced to float" in log_text.getvalue()


def test_hung_sync_rewards_hold_a_bounded_number_of_threads():
    """A hanging sync reward used to leak one thread per call (104 threads after 4 steps)."""
    release = threading.Event()

    def hangs(prompt, completion, sample):
        release.wait(60)
        return 1.0

    runner = RewardRunner(hangs, timeout_s=0.2, max_threads=3, max_failure_share=1.0)
    before = threading.active_count()

    async def many():
        return await asyncio.gather(*(runner("p", "c", {}) for _ in range(40)))

    try:
        outcomes = asyncio.run(many())
        assert all(not o.ok for o in outcomes)
        assert runner.threads_running == 3
        assert threading.active_count() - before <= 3
        assert any("all 3 reward threads busy" in o.error for o in outcomes)
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while runner.threads_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.threads_running == 0
    assert asyncio.run(runner("p", "c", {})).ok  # slots come back when the calls return


def test_a_blocked_event_loop_is_reported_with_the_culprit(log_text):
    """``time.sleep`` inside ``async def`` used to hang the run with no log line."""
    async def blocking_reward(prompt, completion, sample):
        time.sleep(1.5)
        return 1.0

    async def main():
        dog = LoopWatchdog(asyncio.get_running_loop(), warn_s=0.5, interval_s=0.1)
        dog.start()
        await asyncio.sleep(0.3)  # the watchdog learns the loop's thread
        await RewardRunner(blocking_reward, timeout_s=10)("p", "c", {})
        await asyncio.sleep(0.3)
        dog.stop()
        return dog.stalls

    assert asyncio.run(main()) == 1
    text = log_text.getvalue()
    assert "event loop blocked" in text and "blocking_reward" in text and "time.sleep(1.5)" in text
    assert "event loop running again" in text


def test_closing_a_controller_whose_loop_is_blocked_is_quick(tokenizer):
    """Ctrl-C used to take 64 s and end with "Cannot close a running event loop"."""
    release = threading.Event()

    async def blocks_forever(prompt, completion, sample):
        release.wait(30)
        return 1.0

    config = RolloutConfig(batch_size=2, max_head_offpolicyness=0, loop_lag_warn_s=0.3)
    ctl = controller(config)
    try:
        with pytest.raises(ArealError, match="not ready after 2s"):
            ctl.prepare_batch(DATA, rlvr(tokenizer, RewardRunner(blocks_forever)), timeout_s=2)
        start = time.monotonic()
        ctl.close()
        assert time.monotonic() - start < 5
    finally:
        release.set()
