"""The rlvr workflow with the tiny tokenizer over in-test servers, alone and under the controller."""

import threading

import pytest

from areal_core.config.schema import RolloutConfig
from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_core.rollout.client import RolloutClient
from areal_core.rollout.controller import RolloutController
from areal_core.rollout.reward_runner import RewardRunner
from areal_core.rollout.rlvr import RewardFailedError, RLVRConfig, RLVRWorkflow
from rollout_fakes import ScriptedBackend


@pytest.fixture(scope="module")
def tokenizer():
    from areal_core.testing.tiny import make_tokenizer

    return make_tokenizer()


def length_parity(prompt, completion, sample):
    return float(len(completion) % 2)


def workflow(tokenizer, reward=length_parity, **cfg):
    return RLVRWorkflow(RLVRConfig(name="rlvr", **{"n_samples": 3, "max_new_tokens": 6, **cfg}), reward, tokenizer)


def engine(step_s=0.001):
    backend = ScriptedBackend(addrs=["a:1"], step_s=step_s)
    return RolloutClient(backend, ["a:1"])


async def test_episode_is_one_group_of_n_samples(tokenizer):
    wf = workflow(tokenizer)
    sample = {"id": "q7", "prompt": "What is 1 + 2?", "answer": "3"}
    group = await wf.run_episode(engine(), sample)
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1 + 2?"}],
                                               add_generation_prompt=True)["input_ids"]
    P = len(prompt_ids)
    assert len(group) == 3 and len({t.group_id for t in group}) == 1
    for t in group:
        assert t.sample_id == "q7" and t.input_ids[:P] == prompt_ids
        assert t.loss_mask == [0] * P + [1] * (len(t.input_ids) - P)
        assert t.versions[:P] == [-1] * P and set(t.versions[P:]) == {0}
        completion = tokenizer.decode(t.input_ids[P:], skip_special_tokens=True)
        assert t.reward == len(completion) % 2 and "reward_error" not in t.info


async def test_messages_and_raw_prompts(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert workflow(tokenizer).encode_prompt({"messages": messages}) == (text, tokenizer(text)["input_ids"])
    raw = workflow(tokenizer, chat_template=False).encode_prompt({"id": 1, "prompt": "2+2="})
    assert raw == ("2+2=", tokenizer("2+2=")["input_ids"])
    with pytest.raises(ArealError, match=r"sample '5' has neither 'question' \(workflow.prompt_field\) nor 'messages'"):
        workflow(tokenizer, prompt_field="question").encode_prompt({"id": 5, "prompt": "x"})


async def test_eos_always_stops(tokenizer):
    assert tokenizer.eos_token_id in workflow(tokenizer, stop_token_ids=[7]).sampling.stop_token_ids


def raises(prompt, completion, sample):
    raise ValueError("verifier crashed")


async def test_failed_reward_scores_zero_and_is_flagged(tokenizer):
    group = await workflow(tokenizer, reward=raises).run_episode(engine(), {"id": 1, "prompt": "x"})
    assert [t.reward for t in group] == [0.0] * 3
    assert all("raised ValueError: verifier crashed" in t.info["reward_error"] for t in group)


async def test_failed_reward_can_fail_the_group(tokenizer):
    with pytest.raises(RewardFailedError, match="3 of 3 rewards failed for sample '1'"):
        await workflow(tokenizer, reward=raises, on_reward_error="fail_group").run_episode(engine(), {"id": 1, "prompt": "x"})


@pytest.mark.parametrize("on_reward_error", ["zero", "fail_group"])
def test_raising_and_hanging_rewards_never_crash_the_run(tokenizer, on_reward_error):
    """Sample 1's reward raises, sample 2's hangs past the timeout; the run goes on."""
    release = threading.Event()

    def flaky(prompt, completion, sample):
        if sample["id"] == 1:
            raise RuntimeError("boom")
        if sample["id"] == 2:
            release.wait(30)
        return 1.0

    config = RolloutConfig(batch_size=4, max_head_offpolicyness=0, group_failure="drop", reward_timeout_s=0.3)
    wf = workflow(tokenizer, reward=RewardRunner(flaky, config.reward_timeout_s), on_reward_error=on_reward_error)
    data = [{"id": i, "prompt": f"question {i}"} for i in range(8)]
    with RolloutController(engine(), config) as ctl:
        batch = ctl.prepare_batch(data, wf, timeout_s=30)
        m = ctl.metrics()
    release.set()
    ids = {t.sample_id for t in batch}
    flagged = {t.sample_id for t in batch if "reward_error" in t.info}
    assert len(batch) == 4 * 3
    if on_reward_error == "zero":
        assert flagged == ids & {"1", "2"} and m["rollout/reward_errors"] == 3 * len(flagged)
    else:
        assert not ids & {"1", "2"} and not flagged and m["rollout/dropped"] == 2


def test_registry_builds_rlvr_and_validates_its_config(tokenizer):
    registry = build_registry(entry_points=False)
    wf = registry.create("workflow", "rlvr", {"n_samples": 2, "temperature": 0.0}, reward=length_parity, tokenizer=tokenizer)
    assert isinstance(wf, RLVRWorkflow) and wf.sampling.greedy and wf.config.n_samples == 2
    with pytest.raises(ArealError, match=r"workflow.top_k: .*-1 \(no cut\) or >= 1"):
        registry.create("workflow", "rlvr", {"top_k": 0}, reward=length_parity, tokenizer=tokenizer)
    with pytest.raises(ArealError, match=r"workflow.n_sample"):
        registry.create("workflow", "rlvr", {"n_sample": 2}, reward=length_parity, tokenizer=tokenizer)
