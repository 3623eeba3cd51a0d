"""Agents the workflow tests run: ordinary code using the real ``openai`` SDK and nothing of areal."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from openai import AsyncOpenAI

# The SDKs' default connect timeout is 5 s; on a loaded 2-core machine the event loop that serves
# the proxy (or runs the client) can stall longer than that. A number sets every phase, connect
# included (the SDKs take a number or their own HTTP library's Timeout type).
TIMEOUT = 600.0

ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.",
                                        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                                        "b": {"type": "integer"}}}}}


async def calculator_agent(sample, base_url, api_key):
    """Ask, run the add tool the model calls, return 1.0 if the final answer has the sum."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT)
    messages = [{"role": "user", "content": sample["prompt"]}]
    for _ in range(3):
        resp = await client.chat.completions.create(model="areal", messages=messages, tools=[ADD], max_tokens=64)
        msg = resp.choices[0].message
        if not msg.tool_calls:
            return 1.0 if str(sample["answer"]) in (msg.content or "") else 0.0
        messages.append(msg.model_dump(exclude_none=True))
        for tc in msg.tool_calls:
            args = json.loads(tc.function.arguments)
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": str(args["a"] + args["b"])})
    return 0.0


async def plain_agent(sample, base_url, api_key):
    """One chat call; returns None so the workflow's reward plugin scores the answer."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT)
    await client.chat.completions.create(model="areal", messages=[{"role": "user", "content": sample["prompt"]}])


async def raising_agent(sample, base_url, api_key):
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT)
    await client.chat.completions.create(model="areal", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    raise RuntimeError("the agent broke")


async def hanging_agent(sample, base_url, api_key):
    await asyncio.sleep(3600)


def black_box_main() -> None:
    """A black-box agent process: reads only OPENAI_* from its environment, reports its reward by HTTP."""
    import httpx

    base_url, key = os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]

    async def main():
        client = AsyncOpenAI(max_retries=0, timeout=TIMEOUT)  # base_url and key from the environment, as any OpenAI app
        resp = await client.chat.completions.create(model="x", messages=[{"role": "user", "content": "2+3?"}], max_tokens=4)
        async with httpx.AsyncClient() as http:
            r = await http.post(base_url + "/rewards", json={"reward": 0.25, "call_id": resp.id},
                                headers={"Authorization": f"Bearer {key}"})
            r.raise_for_status()
        print("done, no JSON here")

    asyncio.run(main())


if __name__ == "__main__":
    black_box_main()
    sys.exit(0)
