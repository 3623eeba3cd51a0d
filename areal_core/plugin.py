"""The one import surface for plugin authors, as ``pytest`` is for pytest plugins.

Everything a plugin needs from core is importable from here; what is not here is internal and
may change::

    from areal_core.plugin import Component, ComponentConfig, hookimpl

    @hookimpl
    def areal_register_rewards():
        return [Component("exact", "my_pkg.reward:exact", None, "1 if the answer matches")]

Contents: the hook marker and record (``hookimpl``, ``Component``), config bases
(``ComponentConfig`` and the kind bases whose fields core reads), the error type users see
(``ArealError``), every Protocol of :mod:`areal_core.api` (component kinds and optional
capabilities) and the data types that cross them, and ``tensors_checksum`` (what a backend's
``weights_checksum`` must equal), ``parse_weight_version`` (a server's reported version), the run's
API key (``API_KEY_ENV``, ``auth_headers``: servers require it, clients send it) and durable output (``require_free_space``, ``disk_full_error``,
``fsync_tree``: what checkpoints and exports are written with), the structured logger
(``get_logger``), micro-batch planning (``plan_micro_batches``, ``MicroBatchPlan``: how a train
engine splits a packed batch over ranks and token budgets) and what a scheduler plugin builds on
(``ClusterScheduler``, ``free_port``, ``die_with_parent``, ``wait_healthy``, ``log_tail``,
``describe_status``), and the model helpers every engine and server shares (``resolve_model_path``: a
directory or hub id; ``CheckpointLayout``, ``checkpoint_named_parameters``: in-memory vs saved weight
names; ``check_full_attention``), and a train engine's device and process group (``engine_device``,
``join_process_group``, ``leave_process_group``, ``DistInfo``, ``all_reduce_sum``: no engine names a
device type or collective backend). Test helpers live in
:mod:`areal_core.testing` (contract suites, tiny models).
"""

from typing import TYPE_CHECKING

from areal_core.api import *  # noqa: F403 - re-exported by design: this module is the surface
from areal_core.api import __all__ as _api_all
from areal_core.api.types import parse_weight_version
from areal_core.auth import API_KEY_ENV, auth_headers
from areal_core.checksum import tensors_checksum
from areal_core.config.base import (
    ComponentConfig,
    InferenceConfigBase,
    SchedulerConfigBase,
    StrictModel,
    WorkflowConfigBase,
)
from areal_core.data.microbatch import MicroBatchPlan, plan_micro_batches
from areal_core.distributed import DistInfo, all_reduce_sum, engine_device, join_process_group, leave_process_group
from areal_core.errors import ArealError
from areal_core.files import disk_full_error, fsync_tree, require_free_space
from areal_core.hookspecs import hookimpl
from areal_core.hub import resolve_model_path
from areal_core.launcher.liveness import describe_status
from areal_core.launcher.support import (
    ClusterScheduler,
    die_with_parent,
    free_port,
    host_rendezvous_store,
    log_tail,
    port_taken,
    start_with_port_retries,
    wait_healthy,
)
from areal_core.logging import get_logger
from areal_core.multimodal import (
    concat_inputs,
    decode_image,
    encode_image,
    expand_image_tokens,
    image_inputs,
    image_token_counts,
    rope_positions,
    uses_rope_index,
)
from areal_core.registry import Component
from areal_core.rollout.client import InferenceUnavailableError
from areal_core.rollout.reward_runner import RewardFailureRateError, RewardOutcome, RewardRunner
from areal_core.rollout.sample_ids import sample_id_of
from areal_core.weight_layout import CheckpointLayout, check_full_attention, checkpoint_named_parameters

if TYPE_CHECKING:  # at run time, loaded lazily by __getattr__ below
    from areal_core.data.batch import SequenceBatch

__all__ = [
    "ArealError", "Component", "ComponentConfig", "InferenceConfigBase", "SchedulerConfigBase", "StrictModel",
    "WorkflowConfigBase", "hookimpl", "SequenceBatch", "tensors_checksum", "API_KEY_ENV", "auth_headers",
    "disk_full_error", "fsync_tree", "require_free_space", "RewardRunner", "RewardOutcome", "RewardFailureRateError",
    "InferenceUnavailableError", "sample_id_of", "get_logger", "plan_micro_batches", "MicroBatchPlan", "ClusterScheduler",
    "die_with_parent", "free_port", "host_rendezvous_store", "log_tail", "port_taken", "start_with_port_retries", "wait_healthy",
    "describe_status", "parse_weight_version", "resolve_model_path", "CheckpointLayout", "check_full_attention",
    "checkpoint_named_parameters", "DistInfo", "engine_device", "join_process_group", "leave_process_group",
    "all_reduce_sum", "encode_image", "decode_image", "concat_inputs", "rope_positions", "uses_rope_index",
    "image_inputs", "image_token_counts", "expand_image_tokens",
    *_api_all,
]


def __getattr__(name: str):
    # SequenceBatch carries torch tensors: imported on first use, so a plugin module that imports
    # this surface at discovery time loads no torch.
    if name == "SequenceBatch":
        from areal_core.data.batch import SequenceBatch

        return SequenceBatch
    raise AttributeError(f"module 'areal_core.plugin' has no attribute {name!r}")
