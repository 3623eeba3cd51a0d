"""LoRA adapters on the embedded server: the merge equals PEFT's, the server keeps the base
weights (replace, unload, a full update drops the adapter), and a bad adapter changes nothing.

The served weights are compared through ``/weights_checksum`` (exact, every parameter); what the
served adapter generates is checked against PEFT by the contract suite
(``test_adapter_changes_outputs_as_peft_says``).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from areal_core.plugin import ArealError, WeightUpdateMeta, tensors_checksum
from areal_core.testing.inference_backend import make_lora_adapter, make_served_model, serving
from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig
from areal_embedded.lora import read_adapter_deltas
from areal_sglang.protocol import ServerRequestError, get_weight_version, post


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = make_served_model(root / "base", seed=0)
    return {"base": base, "other": make_served_model(root / "other", seed=1),
            "a1": make_lora_adapter(base, root / "a1", seed=1, rank=4),
            "a2": make_lora_adapter(base, root / "a2", seed=2, rank=8)}


def merged(base, adapter) -> torch.nn.Module:
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def checksum_of(path_or_model) -> str:
    model = path_or_model if isinstance(path_or_model, torch.nn.Module) else \
        AutoModelForCausalLM.from_pretrained(path_or_model, dtype=torch.float32)
    return tensors_checksum(model.named_parameters())


def test_deltas_are_what_peft_merges(models):
    base = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.float32).state_dict()
    deltas = read_adapter_deltas(models["a1"])
    assert len(deltas) == 2 * 7  # 2 layers x 7 linear projections
    want = merged(models["base"], models["a1"]).state_dict()
    for name, delta in deltas.items():
        assert torch.equal(base[name] + delta, want[name]), name


@pytest.mark.parametrize(("field", "value"), [("use_dora", True), ("fan_in_fan_out", True),
                                              ("modules_to_save", ["lm_head"]), ("peft_type", "IA3")])
def test_an_adapter_the_merge_cannot_reproduce_is_refused_by_name(models, tmp_path, field, value):
    import shutil

    adapter = shutil.copytree(models["a1"], tmp_path / "a")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ArealError, match=field if field != "peft_type" else "IA3"):
        read_adapter_deltas(adapter)
    with pytest.raises(ArealError, match="adapter_config.json"):
        read_adapter_deltas(tmp_path)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=4))
    with serving(backend, str(models["base"]), tmp_path_factory.mktemp("log") / "server.log") as addr:
        yield backend, addr


def call(server, fn):
    backend, addr = server

    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            return await fn(backend, client, addr)

    return asyncio.run(main())


def push(server, kind: str, weights, version: int) -> int:
    async def go(backend, client, addr):
        updater = backend.weight_updater(WeightUpdateMeta(type=kind))
        await updater.connect(client, [addr])
        return await updater.push(client, [addr], str(weights), version)

    return call(server, go)


def served(server) -> tuple[str, int]:
    async def go(backend, client, addr):
        return await backend.weights_checksum(client, addr), await get_weight_version(client, addr)

    return call(server, go)


def test_adapters_replace_each_other_and_unload_to_the_base(server, models):
    base_sum, version = served(server)
    sent = push(server, "adapter", models["a1"], version + 1)
    assert sent == (models["a1"] / "adapter_model.safetensors").stat().st_size
    assert served(server) == (checksum_of(merged(models["base"], models["a1"])), version + 1)
    push(server, "adapter", models["a2"], version + 2)  # merged onto the base, not onto a1
    assert served(server) == (checksum_of(merged(models["base"], models["a2"])), version + 2)
    call(server, lambda b, c, a: post(c, a, "/unload_lora_adapter", {"lora_name": "areal"}))
    assert served(server) == (base_sum, version + 2)


def test_a_bad_adapter_changes_neither_weights_nor_version(server, models, tmp_path):
    push(server, "adapter", models["a1"], served(server)[1] + 1)
    before = served(server)
    other_arch = make_served_model(tmp_path / "wide", size="3m")
    wrong = make_lora_adapter(other_arch, tmp_path / "wrong")
    with pytest.raises(ServerRequestError, match="shape"):
        push(server, "adapter", wrong, before[1] + 1)
    with pytest.raises(ServerRequestError, match="older than the served version"):
        push(server, "adapter", models["a2"], before[1] - 1)
    with pytest.raises(ArealError, match="adapter_config.json"):
        push(server, "adapter", tmp_path, before[1] + 1)
    assert served(server) == before


def test_a_full_update_drops_the_adapter(server, models):
    version = served(server)[1]
    push(server, "adapter", models["a1"], version + 1)
    push(server, "disk", models["other"], version + 2)
    assert served(server) == (checksum_of(models["other"]), version + 2)
    with pytest.raises(ServerRequestError, match="no adapter 'areal' is loaded"):
        call(server, lambda b, c, a: post(c, a, "/unload_lora_adapter", {"lora_name": "areal"}))
    push(server, "disk", models["base"], version + 3)
