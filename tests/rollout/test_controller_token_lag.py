"""rollout.enforce_token_lag: ready groups holding tokens older than version − η are generated
again (same sample, not a failure) instead of being trained; the staleness counters stay exact."""

import asyncio
import time

from areal_core.api.types import ModelRequest, SamplingParams, Trajectory
from areal_core.config.schema import RolloutConfig
from areal_core.rollout.client import RolloutClient
from areal_core.rollout.controller import RolloutController
from rollout_fakes import ScriptedBackend, controller_update_weights


class TwoSamples:
    async def run_episode(self, engine, sample):
        responses = await asyncio.gather(*(engine.agenerate(ModelRequest([1 + i], SamplingParams(max_new_tokens=3)))
                                           for i in range(2)))
        return [Trajectory.from_response(r, float(i)) for i, r in enumerate(responses)]


def run(enforce: bool):
    config = RolloutConfig(batch_size=2, max_head_offpolicyness=1, enforce_token_lag=enforce)
    client = RolloutClient(ScriptedBackend(addrs=("a:1",), step_s=0.001), ["a:1"])
    controller = RolloutController(client, config)
    rows = [{"id": i} for i in range(20)]
    try:
        workflow = TwoSamples()
        first = controller.prepare_batch(rows, workflow)  # version 0; (η+1)·B = 4 groups start
        deadline = time.monotonic() + 10
        while controller.metrics()["rollout/ready"] < 2:  # the other two groups finish at version 0
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for version in (1, 2):  # two updates without training: the ready groups are now 2 versions old
            controller.pause()
            controller_update_weights(controller, version)
            controller.resume()
        second = controller.prepare_batch(rows, workflow)
        controller.pause()  # freeze the counters: requeued groups no longer count as accepted
        metrics = controller.metrics()
        assert metrics["rollout/accepted"] == metrics["rollout/trained"] + metrics["rollout/ready"]
        return first, second, metrics
    finally:
        controller.close()


def test_stale_ready_groups_are_generated_again():
    _, batch, metrics = run(enforce=True)
    lags = [2 - v for t in batch for m, v in zip(t.loss_mask, t.versions) if m]
    assert max(lags) <= 1
    assert metrics["rollout/requeued"] == 2
    assert {t.sample_id for t in batch} <= {"2", "3", "4", "5"}


def test_without_enforcement_admission_alone_lets_them_train():
    _, batch, metrics = run(enforce=False)
    assert max(2 - v for t in batch for m, v in zip(t.loss_mask, t.versions) if m) == 2
    assert metrics["rollout/requeued"] == 0
