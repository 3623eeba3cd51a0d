"""``model_path`` as a local directory or a Hugging Face hub id, resolved from a local HF cache."""

from pathlib import Path

import pytest

from areal_core.errors import ArealError
from areal_core.hub import looks_like_hub_id, resolve_model_path
from areal_core.testing.tiny import cache_as_hub_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An HF cache holding ``tiny-org/tiny-model`` (a directory of files; no network anywhere)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    cache = tmp_path / "hf_cache"
    snapshot = cache_as_hub_model(model, cache, "tiny-org/tiny-model")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_a_local_directory_is_returned_as_it_is(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_a_cached_hub_id_resolves_to_its_snapshot(cache):
    resolved = resolve_model_path("tiny-org/tiny-model")
    assert Path(resolved) == cache
    assert (Path(resolved) / "config.json").is_file()


def test_hf_home_locates_the_cache(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(cache.parents[2].parent))  # HF_HOME/hub is the cache
    (cache.parents[2].parent / "hub").symlink_to(cache.parents[2])
    assert Path(resolve_model_path("tiny-org/tiny-model")).resolve() == cache.resolve()


def test_offline_and_not_cached_names_the_id_and_the_remedies(cache):
    with pytest.raises(ArealError) as info:
        resolve_model_path("tiny-org/not-there")
    message = str(info.value)
    assert "'tiny-org/not-there'" in message and "offline" in message
    assert "local model directory" in message and "HF_HOME" in message and "HF_HUB_CACHE" in message


def test_neither_a_directory_nor_a_hub_id(tmp_path):
    with pytest.raises(ArealError, match="actor.path: .* is not a Hugging Face model directory"):
        resolve_model_path(str(tmp_path / "missing" / "deeper" / "dir"), field="actor.path")


@pytest.mark.parametrize("value,expected", [("Qwen/Qwen3-0.6B", True), ("org/name.v2", True), ("./org/name", False),
                                            ("/abs/path", False), ("name", False), ("a/b/c", False)])
def test_hub_id_shape(value, expected):
    assert looks_like_hub_id(value) is expected


def test_preflight_checks_a_hub_ids_snapshot(cache):
    """The pre-flight check reads a cached id's snapshot (its config.json); an id that does not
    resolve is reported by name."""
    from areal_core.trainer.preflight import model_problems

    (cache / "config.json").write_text('{"model_type": "qwen9"}')
    assert any("config.json has model_type 'qwen9'" in p for p in model_problems("tiny-org/tiny-model"))
    (problem,) = model_problems("tiny-org/not-there", field="actor.path")
    assert problem.startswith("actor.path: 'tiny-org/not-there' is not a local directory")
