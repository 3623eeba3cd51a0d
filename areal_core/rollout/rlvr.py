"""``rlvr``: RL from verifiable rewards. One episode = one prompt → n samples → one reward each.

Episode for one dataset sample::

    prompt   = chat_template(sample[messages_field])          if the sample has messages
             | chat_template([{user: sample[prompt_field]}])  if chat_template (default)
             | sample[prompt_field]                           otherwise (raw text)
    input_ids = tokenizer(prompt)                              [P] token ids
    n concurrent engine.agenerate(input_ids)                   n completions, each [O_i] tokens
    reward_i  = reward(prompt_text, decode(completion_i), sample)
    -> n Trajectory (one group): prompt + completion, loss on the completion only

Reward failures (raise, hang past the timeout, non-number) never crash the run
(:mod:`areal_core.rollout.reward_runner`). ``on_reward_error`` picks what happens next:
``zero`` (default) scores that sample 0.0 and records the error in ``Trajectory.info["reward_error"]``;
``fail_group`` fails the episode, and the rollout controller handles the whole group per
``rollout.group_failure`` (drop and count, or retry).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from pydantic import Field, field_validator

from areal_core.api.protocols import InferenceEngine, Reward
from areal_core.api.types import ModelRequest, SamplingParams, Trajectory
from areal_core.config.base import WorkflowConfigBase
from areal_core.errors import ArealError
from areal_core.rollout.reward_runner import RewardRunner
from areal_core.rollout.sample_ids import sample_id_of


class RLVRConfig(WorkflowConfigBase):
    """Options of the ``rlvr`` workflow (``workflow:`` section of the run config)."""

    n_samples: int = Field(4, ge=1, description="completions per prompt (the group size)")
    max_new_tokens: int = Field(256, ge=1, description="completion length limit in tokens")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(-1, description="keep the k most likely tokens; -1 = no cut")
    stop_token_ids: list[int] = Field(default_factory=list, description="extra stop tokens (the tokenizer's eos always stops)")
    prompt_field: str = Field("prompt", description="sample field holding the prompt text")
    messages_field: str = Field("messages", description="sample field with chat messages [{role, content}] (wins when present)")
    chat_template: bool = Field(
        True, description="render a raw prompt as one user message with the tokenizer's chat template; false: tokenize it as is")
    on_reward_error: Literal["zero", "fail_group"] = Field(
        "zero", description="a reward that raises or times out: zero = score 0.0 and flag the sample "
                            "(info.reward_error); fail_group = fail the episode (rollout.group_failure decides)")

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("top_k must be -1 (no cut) or >= 1")
        return v


class RewardFailedError(ArealError):
    """A reward failed for a sample of an episode run with ``on_reward_error=fail_group``."""


class RLVRWorkflow:
    """``factory(config, reward, tokenizer)``. ``reward`` is a Reward plugin instance, or a
    :class:`RewardRunner` already wrapping one (to set the timeout from ``rollout.reward_timeout_s``)."""

    def __init__(self, config: RLVRConfig, reward: Reward, tokenizer):
        self.config = config
        self.reward = reward if isinstance(reward, RewardRunner) else RewardRunner(reward)
        self.tokenizer = tokenizer
        stops = list(config.stop_token_ids)
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
            stops.append(tokenizer.eos_token_id)
        self.sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                       top_p=config.top_p, top_k=config.top_k, stop_token_ids=stops)

    def encode_prompt(self, sample: dict[str, Any]) -> tuple[str, list[int]]:
        """(prompt text given to the reward, prompt token ids)."""
        c = self.config
        if c.messages_field in sample:
            text = self._render_chat(sample[c.messages_field], sample)
            reward_prompt = text
        elif c.prompt_field in sample:
            reward_prompt = str(sample[c.prompt_field])
            text = self._render_chat([{"role": "user", "content": reward_prompt}], sample) if c.chat_template else reward_prompt
        else:
            raise ArealError(f"rlvr: sample {sample_id_of(sample)!r} has neither {c.prompt_field!r} (workflow.prompt_field) "
                             f"nor {c.messages_field!r} (workflow.messages_field); its keys: {sorted(sample)}")
        input_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not input_ids:
            raise ArealError(f"rlvr: sample {sample_id_of(sample)!r} has an empty prompt")
        return reward_prompt, list(input_ids)

    def _render_chat(self, messages, sample) -> str:
        messages = self.chat_messages(messages, sample)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ArealError("rlvr: the tokenizer has no chat template; set workflow.chat_template: false to use raw prompts")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def chat_messages(self, messages: list[dict[str, Any]], sample: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages given to the chat template (as they are here; ``vision_rlvr`` puts the
        sample's pictures into the first user message)."""
        return messages

    def encode_images(self, sample: dict[str, Any], input_ids: list[int]) -> tuple[list[int], list[str], dict[str, Any]]:
        """(input_ids, image_data, multimodal_inputs) of the prompt: text only here; the
        ``vision_rlvr`` workflow adds the sample's pictures."""
        return input_ids, [], {}

    async def run_episode(self, engine: InferenceEngine, sample: dict[str, Any]) -> list[Trajectory]:
        prompt_text, input_ids = self.encode_prompt(sample)
        input_ids, image_data, media = self.encode_images(sample, input_ids)
        sid = sample_id_of(sample)
        episode = uuid.uuid4().hex[:12]
        requests = [ModelRequest(input_ids=input_ids, sampling=self.sampling, rid=f"{sid}/{episode}/{i}",
                                 image_data=image_data) for i in range(self.config.n_samples)]
        responses = await all_or_cancel([engine.agenerate(r) for r in requests])
        completions = [self.tokenizer.decode(r.output_ids, skip_special_tokens=True) for r in responses]
        outcomes = await asyncio.gather(*(self.reward(prompt_text, c, sample) for c in completions))
        errors = [o.error for o in outcomes if not o.ok]
        if errors and self.config.on_reward_error == "fail_group":
            raise RewardFailedError(f"rlvr: {len(errors)} of {len(outcomes)} rewards failed for sample {sid!r}: {errors[0]}")
        trajectories = []
        for resp, outcome in zip(responses, outcomes):
            info = {"n_interruptions": resp.n_interruptions, "latency_s": resp.latency_s}
            if not outcome.ok:
                info["reward_error"] = outcome.error
            trajectories.append(Trajectory.from_response(resp, outcome.value, group_id=f"{sid}/{episode}",
                                                         sample_id=sid, info=info, multimodal_inputs=media))
        return trajectories


async def all_or_cancel(coros: list) -> list:
    """``asyncio.gather`` that cancels the remaining coroutines when one raises (no orphans)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
