"""Checks `areal train` makes before starting anything: temperatures, run directory, paths; and
`areal plot`."""

import json

import pytest
from pydantic import Field

from areal_core.config.base import ComponentConfig, WorkflowConfigBase
from areal_core.config.loader import ResolvedConfig
from areal_core.errors import ArealError
from areal_core.trainer.entry import _check_run_dir
from areal_core.trainer.plot import main as plot_main
from areal_core.trainer.rl import reconcile_temperatures


class Sampling(WorkflowConfigBase):
    """A workflow config: core reads its temperature through the base."""


class NoSampling(ComponentConfig):
    temperature: float = Field(0.7, description="not a WorkflowConfigBase: core does not read this")


class Engine(ComponentConfig):
    temperature: float = Field(1.0, description="train temperature")


def resolved(workflow: dict, actor: dict, algorithm: dict, workflow_model: type = Sampling) -> ResolvedConfig:
    cfg = ResolvedConfig(run=None)
    for path, model, data in (("workflow", workflow_model, workflow), ("actor", Engine, actor), ("algorithm", Engine, algorithm)):
        cfg.components[path] = model.model_validate({"name": path, **data})
        cfg.kinds[path] = path
    return cfg


def test_unset_temperatures_follow_the_sampling_one():
    cfg = resolved({"temperature": 0.7}, {}, {})
    assert reconcile_temperatures(cfg) == 0.7
    assert cfg.components["actor"].temperature == cfg.components["algorithm"].temperature == 0.7


def test_greedy_sampling_trains_at_temperature_one():
    cfg = resolved({"temperature": 0.0}, {}, {"temperature": 1.0})
    assert reconcile_temperatures(cfg) == 1.0


def test_a_conflicting_temperature_names_both_fields():
    cfg = resolved({"temperature": 0.7}, {"temperature": 0.7}, {"temperature": 1.0})
    with pytest.raises(ArealError, match=r"algorithm.temperature is 1 but workflow.temperature is 0.7"):
        reconcile_temperatures(cfg)


def test_a_fresh_run_refuses_an_existing_run_dir(tmp_path):
    _check_run_dir(tmp_path, "off")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ArealError, match="recover=off but .* already holds a run .*recover=auto"):
        _check_run_dir(tmp_path, "off")
    _check_run_dir(tmp_path, "auto")


def test_plot_writes_a_png(tmp_path, capsys):
    rows = [{"step": 0, "eval/reward_mean": 0.1}] + [{"step": s, "train/reward/mean": s / 10, "train/reward/std": 0.1}
                                                     for s in range(1, 6)] + [{"step": 5, "eval/reward_mean": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_main([str(tmp_path)]) == 0
    png = tmp_path / "plot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ArealError, match="no train/reward/mean or eval/reward_mean"):
        (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "x": 1}) + "\n")
        plot_main([str(tmp_path)])


def test_plot_breaks_the_step_time_down_and_adds_the_lag_throughput_and_overlap_panels(tmp_path):
    from areal_core.trainer.plot import time_breakdown

    rows = [{"step": s, "train/reward/mean": 0.5, "timing/step_s": 2.0, "timing/gen_wait_s": 0.5, "timing/train_s": 1.0,
             "timing/export_weights_s": 0.1, "timing/pause_s": 0.05, "timing/weight_sync_s": 0.05,
             "rollout/version_lag_mean": 1.0, "rollout/version_lag_max": 1.0, "throughput/trained_tokens_per_s": 100.0,
             "inference/busy_fraction": 0.9, "timing/trainer_busy_fraction": 0.5} for s in (1, 2)]
    rows[1]["timing/eval_s"] = 0.2
    steps, parts = time_breakdown(rows)
    assert steps == [1, 2]
    assert parts == {"gen wait": [0.5, 0.5], "train": [1.0, 1.0], "weight sync": [pytest.approx(0.2)] * 2,
                     "eval": [0.0, 0.2], "other": [pytest.approx(0.3), pytest.approx(0.1)]}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_main([str(tmp_path)]) == 0
    import matplotlib.image

    height = matplotlib.image.imread(tmp_path / "plot.png").shape[0]
    assert height == round(3.2 * 5 * 110)  # reward, time, lag, throughput, overlap


def test_a_workflow_without_the_base_means_temperature_one():
    cfg = resolved({}, {}, {}, workflow_model=NoSampling)
    assert reconcile_temperatures(cfg) == 1.0
    assert cfg.components["actor"].temperature == 1.0
