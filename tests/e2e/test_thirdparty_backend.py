"""The plugin boundary holds: a backend written only against ``areal_core.plugin``
(:mod:`thirdparty_backend`, its own server and wire protocol) passes the shared InferenceBackend
contract suite and runs ``areal train`` end to end over both weight paths, with the trainer's and
the server's weight checksums compared after every sync."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")

import rl_e2e_support as support
import thirdparty_backend
from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry
from areal_core.testing.inference_backend import InferenceBackendContract
from areal_core.trainer.entry import run_training


def test_the_backend_imports_only_the_plugin_surface_from_core():
    tree = ast.parse(Path(thirdparty_backend.__file__).read_text())
    core = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
            and node.module.startswith("areal")}
    core |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
             if a.name.startswith("areal")}
    assert core == {"areal_core.plugin"}


class TestThirdPartyBackend(InferenceBackendContract):
    plugin = thirdparty_backend
    component_name = thirdparty_backend.NAME
    component_config = {"threads": 1}
    supported_sync_paths = ("disk", "distributed")
    long_generation_tokens = 400  # this server recomputes the prefix per token: slow enough to pause


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return support.make_workspace(tmp_path_factory.mktemp("thirdparty"))


@pytest.mark.parametrize("sync", ["disk", "distributed"])
def test_areal_train_runs_on_a_backend_core_does_not_know(workspace, sync):
    registry = build_registry(extra_plugins=[(support, "e2e-test"), (thirdparty_backend, "thirdparty-test")])
    set_registry(registry)
    try:
        root, model = workspace
        cfg = support.run_config(root, model, f"thirdparty_{sync}", inference={"name": thirdparty_backend.NAME})
        path = support.write_config(root / f"thirdparty_{sync}.yaml", cfg)
        overrides = [f"weight_sync.type={sync}", "trainer.total_steps=2", "valid_dataset=null",
                     "trainer.checkpoint_every=0", "workflow.max_new_tokens=8"]
        run_dir = run_training(load_config(config_path=path, overrides=overrides, registry=registry), registry=registry)
    finally:
        set_registry(None)
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    # verify_weight_sync is on in the e2e config: a checksum mismatch would have failed the run
    assert all(m["timing/verify_s"] > 0 and m["inference/version"] == m["step"] for m in metrics)
    if sync == "distributed":
        assert all(m["weight_sync/bytes"] > 0 for m in metrics)
    assert (run_dir / "rollouts.jsonl").is_file()
