"""``agent``: train an existing agent. It talks to the proxy as if it were OpenAI; areal records
every call, and the agent's return value (or the reward plugin) says how well it did.

Episode for one dataset sample (n = ``n_samples``)::

    open n sessions on the proxy, each with its own API key
    run the agent n times concurrently, each with (sample, base_url, that key):
        in process:   await run(sample, base_url, api_key)                     (``agent: module:function``)
        subprocess:   python -m areal_agent.agent_process module:function      (``mode: subprocess``)
                      or any ``command`` (a black-box agent); env OPENAI_BASE_URL, OPENAI_API_KEY,
                      AREAL_SAMPLE (JSON); its last stdout line, when JSON, is its return value
    return value -> rewards:  number = reward of the last call; list = one per call in order;
                              {call_id: reward}; null = keep rewards set through POST /v1/rewards;
                              no reward at all and a reward plugin configured = reward(task, last answer, sample)
    close the sessions; export every session's calls (individual | concat, discount gamma) as one group

An agent that raises, exits non-zero, prints junk, makes no call, outlives ``timeout_s`` or idles
past ``idle_timeout_s`` has failed: ``on_agent_error: fail_group`` raises (the rollout controller
counts the episode failed, per ``rollout.group_failure``), ``zero`` keeps its calls with reward 0
and the error in ``info.agent_error``. Sessions are closed in every case.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
from typing import Any, Literal

from pydantic import Field, model_validator

from areal_agent.agent_process import load_function
from areal_agent.proxy import AgentProxy
from areal_agent.session import Session, SessionStore
from areal_agent.workflows.common import (
    ChatWorkflowConfig,
    as_runner,
    chat_model,
    export_sessions,
    first_messages,
    sampling_of,
)
from areal_core.plugin import ArealError, InferenceEngine, Trajectory, get_logger, sample_id_of

log = get_logger(__name__)


class AgentWorkflowConfig(ChatWorkflowConfig):
    """Options of the ``agent`` workflow."""

    agent: str | None = Field(None, description="the agent: 'module:function' of async def run(sample, base_url, api_key) -> reward")
    command: list[str] | None = Field(None, description="a black-box agent command run per episode (instead of agent); "
                                      "gets OPENAI_BASE_URL, OPENAI_API_KEY and AREAL_SAMPLE in its environment")
    mode: Literal["inprocess", "subprocess"] = Field("inprocess", description="run agent in this process or its own")
    timeout_s: float = Field(600.0, gt=0, description="wall time one agent run may take")
    on_agent_error: Literal["fail_group", "zero"] = Field(
        "fail_group", description="a failed agent run: fail_group = fail the episode (counted); zero = reward 0")
    host: str = Field("127.0.0.1", description="proxy bind address")
    port: int = Field(0, ge=0, description="proxy port; 0 = a free one")
    admin_key: str | None = Field(None, description="key of the proxy's /admin endpoints; default: random")
    model_name: str = Field("areal", description="model id the proxy reports in /v1/models and answers")
    idle_timeout_s: float = Field(600.0, gt=0, description="a session with no call for this long expires")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="largest request body the proxy accepts")

    @model_validator(mode="after")
    def _one_agent(self):
        if (self.agent is None) == (self.command is None):
            raise ValueError("set exactly one of agent ('module:function') and command (a black-box agent's argv)")
        return self


class AgentFailedError(ArealError):
    """An agent run of an episode failed (with ``on_agent_error: fail_group``)."""


class AgentWorkflow:
    """``factory(config, reward, tokenizer)``; ``reward`` may be None when the agent returns rewards."""

    def __init__(self, config: AgentWorkflowConfig, reward, tokenizer):
        self.config = config
        self.reward = as_runner(reward)
        self.proxy = AgentProxy(chat_model(config, tokenizer), SessionStore(config.idle_timeout_s),
                                sampling_of(config), host=config.host, port=config.port, admin_key=config.admin_key,
                                model_name=config.model_name, max_body_bytes=config.max_body_bytes)
        self.fn = load_function(config.agent) if config.agent and config.mode == "inprocess" else None
        self.counts = {"agent_runs": 0, "agent_errors": 0, "sessions_expired": 0}
        self.recent_errors: collections.deque[str] = collections.deque(maxlen=32)  # newest last

    async def aclose(self) -> None:
        """Stop the proxy's HTTP server (the rollout controller calls this at shutdown, on the loop
        the proxy serves from)."""
        await self.proxy.stop()

    def stats(self) -> dict[str, float]:
        return dict(self.counts)

    async def run_episode(self, engine: InferenceEngine, sample: dict[str, Any]) -> list[Trajectory]:
        await self.proxy.start(engine)
        sessions = [self.proxy.store.open() for _ in range(self.config.n_samples)]
        for s in sessions:
            s.engine = engine
        try:
            errors = await asyncio.gather(*(self._run_one(s, sample) for s in sessions))
        finally:
            for s in sessions:
                self.proxy.store.close(s)
        self.counts["agent_runs"] += len(sessions)
        self.counts["agent_errors"] += sum(e is not None for e in errors)
        self.counts["sessions_expired"] = self.proxy.store.n_expired
        failed = [e for e in errors if e is not None]
        for message in failed:
            self.recent_errors.append(message)
            log.warning("agent run failed", error=message, sample=sample_id_of(sample))
        if failed and self.config.on_agent_error == "fail_group":
            raise AgentFailedError(f"agent: {len(failed)} of {len(sessions)} runs failed; first: {failed[0]}")
        infos = []
        for s, err in zip(sessions, errors):
            if err is None:
                await self._fallback_reward(s, sample)
            else:
                for c in s.calls:
                    c.reward = 0.0
            infos.append({"agent_error": err} if err else {})
        return export_sessions(self.config, sessions, sample, infos)

    async def _run_one(self, session: Session, sample: dict[str, Any]) -> str | None:
        """Run the agent once; None when it succeeded, else why it failed."""
        try:
            value = await asyncio.wait_for(self._call_agent(session, sample), self.config.timeout_s)
        except asyncio.TimeoutError:
            return f"no result within timeout_s={self.config.timeout_s:g}"
        except Exception as exc:  # noqa: BLE001 - any agent failure is the episode's, never the run's
            return f"{type(exc).__name__}: {exc}"
        if session.closed == "expired":
            return f"session idle for more than idle_timeout_s={self.config.idle_timeout_s:g}"
        if not session.calls:
            return "the agent made no model call"
        try:
            apply_return_value(session, value)
        except (ArealError, TypeError, ValueError) as exc:
            return f"bad return value {value!r}: {exc}"
        return None

    async def _call_agent(self, session: Session, sample: dict[str, Any]) -> Any:
        if self.fn is not None:
            return await self.fn(sample, self.proxy.base_url, session.api_key)
        argv = self.config.command or [sys.executable, "-m", "areal_agent.agent_process", str(self.config.agent)]
        env = dict(os.environ, OPENAI_BASE_URL=self.proxy.base_url, OPENAI_API_KEY=session.api_key,
                   AREAL_SAMPLE=json.dumps(sample))
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    start_new_session=True)
        try:
            out, err = await proc.communicate(json.dumps(sample).encode())
        finally:
            if proc.returncode is None:  # cancelled (timeout): the whole process group goes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise ArealError(f"agent process {argv[0]} exited with {proc.returncode}: {' | '.join(tail)}")
        lines = out.decode(errors="replace").strip().splitlines()
        if not lines:
            return None
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            return None  # a black box that prints text: rewards come from /v1/rewards or the reward plugin

    async def _fallback_reward(self, session: Session, sample: dict[str, Any]) -> None:
        if self.reward is None or any(c.reward is not None for c in session.calls):
            return
        try:
            task, _ = first_messages(self.config, sample)
        except ArealError:
            task = ""
        last = session.calls[-1]
        outcome = await self.reward(task, last.message["content"], sample)
        last.reward = outcome.value


def apply_return_value(session: Session, value: Any) -> None:
    """Rewards from what the agent returned (see the module docstring)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
        raise TypeError("expected a number, a list of numbers, {call_id: number} or None")
    if isinstance(value, (int, float)):
        session.set_reward(float(value))
    elif isinstance(value, list):
        if len(value) != len(session.calls):
            raise ValueError(f"{len(value)} rewards for {len(session.calls)} calls")
        for call, r in zip(session.calls, value):
            call.reward = None if r is None else float(r)
    else:
        for call_id, r in value.items():
            session.set_reward(float(r), call_id)
