"""RewardRunner: sync rewards off the loop with a timeout; failures become outcomes, never exceptions."""

import asyncio
import threading
import time

import pytest

from areal_core.rollout.reward_runner import RewardRunner


def exact_match(prompt, completion, sample):
    return float(completion.strip() == sample["answer"])


async def async_match(prompt, completion, sample):
    await asyncio.sleep(0)
    return float(completion.strip() == sample["answer"])


class CallableReward:
    def __call__(self, prompt, completion, sample):
        return 0.5


@pytest.mark.parametrize("reward", [exact_match, async_match])
async def test_sync_and_async_rewards_score(reward):
    runner = RewardRunner(reward, timeout_s=5)
    assert (await runner("q", " 42 ", {"answer": "42"})).value == 1.0
    assert (await runner("q", "41", {"answer": "42"})).value == 0.0
    assert (await RewardRunner(CallableReward())("q", "", {})).value == 0.5


async def test_sync_reward_runs_off_the_event_loop():
    loop_thread = threading.get_ident()
    seen = []

    def reward(prompt, completion, sample):
        seen.append(threading.get_ident())
        time.sleep(0.2)
        return 1.0

    runner = RewardRunner(reward, timeout_s=5)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    outcomes = await asyncio.gather(*(runner("q", "c", {}) for _ in range(4)))
    t.cancel()
    assert [o.value for o in outcomes] == [1.0] * 4 and loop_thread not in seen
    assert ticks >= 5  # the loop kept running while 4 × 0.2 s of reward ran (concurrently)


async def test_raising_reward_is_a_failed_outcome():
    def broken(prompt, completion, sample):
        raise KeyError("answer")

    outcome = await RewardRunner(broken, timeout_s=5)("q", "c", {"id": 3})
    assert not outcome.ok and outcome.value == 0.0
    assert "reward 'broken' raised KeyError" in outcome.error


async def test_hanging_sync_reward_times_out_and_does_not_block_others():
    release = threading.Event()

    def hangs(prompt, completion, sample):
        release.wait(30)
        return 1.0

    runner = RewardRunner(hangs, timeout_s=0.2)
    start = time.monotonic()
    outcomes = await asyncio.gather(*(runner("q", "c", {}) for _ in range(3)))
    assert time.monotonic() - start < 2
    assert all(not o.ok and "did not return within 0.2s" in o.error for o in outcomes)
    assert runner.threads_running == 3  # abandoned, still hung (daemon threads: no exit blocker)
    release.set()


async def test_hanging_async_reward_is_cancelled():
    cancelled = asyncio.Event()

    async def hangs(prompt, completion, sample):
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    outcome = await RewardRunner(hangs, timeout_s=0.1)("q", "c", {})
    assert not outcome.ok and "did not return within 0.1s" in outcome.error and cancelled.is_set()


@pytest.mark.parametrize("value,message", [(None, "returned None, not a number"), ("yes", "returned 'yes'"),
                                           (float("nan"), "returned nan")])
async def test_non_numbers_are_failures(value, message):
    outcome = await RewardRunner(lambda p, c, s: value, timeout_s=1)("q", "c", {})
    assert not outcome.ok and message in outcome.error
