"""Config fields and helpers shared by the three workflows."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from pydantic import Field

from areal_agent.chat import ChatModel
from areal_agent.export import export_calls
from areal_agent.messages import normalize_messages
from areal_agent.session import Session
from areal_core.plugin import (
    ArealError,
    InferenceEngine,
    RewardRunner,
    SamplingParams,
    Trajectory,
    WorkflowConfigBase,
    sample_id_of,
)


class ChatWorkflowConfig(WorkflowConfigBase):
    """Fields every agent workflow has (``workflow:`` section of the run config)."""

    n_samples: int = Field(4, ge=1, description="episodes per dataset sample (one group)")
    max_new_tokens: int = Field(256, ge=1, description="completion length limit of one model call, in tokens")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    chat_template: str = Field("tokenizer", description="tokenizer: the tokenizer's own template; hermes (or hermes_brief: tools as name(args)): the "
                               "built-in Hermes template with tools (areal_agent.templates); or a Jinja template")
    export: Literal["individual", "concat"] = Field(
        "concat", description="individual: each model call is one sample; concat: a conversation's calls are one "
                              "sample along their shared token prefix (tool outputs / user turns get loss mask 0)")
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="turn discount: reward r_i <- r_i + gamma * r_(i+1)")
    prompt_field: str = Field("prompt", description="sample field with the task text (a user message)")
    messages_field: str = Field("messages", description="sample field with chat messages (wins when present)")
    system_prompt: str | None = Field(None, description="system message put before the sample's messages")
    stream_chunk_tokens: int = Field(8, ge=1, description="a streamed call (stream: true) is generated and sent in rounds of "
                                                          "this many tokens (each round re-submits the prompt)")


def sampling_of(config: ChatWorkflowConfig) -> SamplingParams:
    return SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)


def as_runner(reward) -> RewardRunner | None:
    if reward is None:
        return None
    return reward if isinstance(reward, RewardRunner) else RewardRunner(reward)


def first_messages(config: ChatWorkflowConfig, sample: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(task text given to the reward, opening messages) of a sample."""
    if config.messages_field in sample:
        messages = normalize_messages(list(sample[config.messages_field]), f"sample.{config.messages_field}")
        task = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    elif config.prompt_field in sample:
        task = str(sample[config.prompt_field])
        messages = [{"role": "user", "content": task}]
    else:
        raise ArealError(f"sample {sample_id_of(sample)!r} has neither {config.prompt_field!r} (workflow.prompt_field) "
                         f"nor {config.messages_field!r} (workflow.messages_field); its keys: {sorted(sample)}")
    if config.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    return task, messages


def chat_model(config: ChatWorkflowConfig, tokenizer) -> ChatModel:
    return ChatModel(tokenizer, config.chat_template, config.max_new_tokens, config.stream_chunk_tokens)


def group_ids(sample: dict[str, Any]) -> tuple[str, str]:
    """(sample id, group id) of one episode."""
    sid = sample_id_of(sample)
    return sid, f"{sid}/{uuid.uuid4().hex[:12]}"


def export_sessions(config: ChatWorkflowConfig, sessions: list[Session], sample: dict[str, Any], infos: list[dict]):
    """All sessions of one episode as one group of trajectories."""
    sid, gid = group_ids(sample)
    out = []
    for session, info in zip(sessions, infos):
        out += export_calls(session.calls, config.export, config.gamma, group_id=gid, sample_id=sid,
                            info=dict(info, session_id=session.id))
    return out


class ConversationWorkflow:
    """Base of ``multi_turn`` and ``tool_use``: ``n_samples`` conversations per sample, run on the
    engine directly (no HTTP), exported as one group. Subclasses implement :meth:`converse`."""

    name = ""

    def __init__(self, config: ChatWorkflowConfig, reward, tokenizer):
        if reward is None:
            raise ArealError(f"workflow {self.name} needs a reward (the run config's reward: section)")
        self.config = config
        self.reward: RewardRunner = reward if isinstance(reward, RewardRunner) else RewardRunner(reward)
        self.chat = chat_model(config, tokenizer)
        self.sampling = sampling_of(config)

    async def run_episode(self, engine: InferenceEngine, sample: dict[str, Any]) -> list[Trajectory]:
        task, messages = first_messages(self.config, sample)
        sessions = [Session(id=f"{self.name}-{i}", api_key="") for i in range(self.config.n_samples)]
        infos = await asyncio.gather(*(self.converse(engine, s, task, list(messages), sample) for s in sessions))
        return export_sessions(self.config, sessions, sample, infos)

    async def converse(self, engine: InferenceEngine, session: Session, task: str, messages: list[dict[str, Any]],
                       sample: dict[str, Any]) -> dict[str, Any]:
        """Run one conversation, recording its calls (with rewards) in ``session``; returns its info."""
        raise NotImplementedError
