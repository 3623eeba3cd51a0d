"""Every hook areal calls, in one module.

A plugin is a module (named by an entry point in the ``areal`` group) that implements some of these
hooks with ``@hookimpl`` (``from areal_core.plugin import hookimpl``). Provider hooks (``areal_register_<plural>``) return a list of
:class:`areal_core.registry.Component` records. A record names its factory and its config model as
lazy ``"module:attr"`` strings, so discovery imports neither torch nor an engine.

Load order: areal's own built-in components, then entry points in the order
``importlib.metadata`` lists them. Each plugin is validated as it is registered: a ``@hookimpl``
function that is not one of these hooks, or an ``areal_register_*`` function without
``@hookimpl``, is an error naming the closest hook; a name registered twice in a kind is a conflict that fails only the runs that use it
(``areal_core.registry``).

Factory call signature, one per kind (``config`` is an instance of the record's config model):

=================== =============================================================
kind                factory call
=================== =============================================================
train_engine        ``factory(config, run: areal_core.api.RunContext) -> TrainEngine``
inference_backend   ``factory(config) -> InferenceBackend``
algorithm           ``factory(config) -> Algorithm``
reward              ``factory(config) -> Reward``
workflow            ``factory(config, reward: RewardRunner, tokenizer) -> Workflow``
scheduler           ``factory(config) -> Scheduler``
device              ``factory(config) -> Device``
metric_sink         ``factory(config, run_dir: pathlib.Path) -> MetricSink``
pair_loss           ``factory(config) -> PairLoss``
=================== =============================================================
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("areal")
hookimpl = pluggy.HookimplMarker("areal")


@hookspec
def areal_register_train_engines():
    """Return the train engines this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.TrainEngine`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_train_engines():
            return [Component("fsdp", "areal_fsdp.engine:FSDPEngine",
                              "areal_fsdp.config:FSDPEngineConfig", "PyTorch FSDP2 engine")]
    """


@hookspec
def areal_register_inference_backends():
    """Return the inference backends (server launchers + wire protocols) this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.InferenceBackend`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_inference_backends():
            return [Component("sglang", "areal_sglang.backend:SGLangBackend",
                              "areal_sglang.backend:SGLangConfig", "SGLang servers")]
    """


@hookspec
def areal_register_algorithms():
    """Return the RL algorithms this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.Algorithm`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_algorithms():
            return [Component("grpo", "areal_grpo.presets:grpo",
                              "areal_grpo.config:PPOConfig", "Group-relative PPO")]
    """


@hookspec
def areal_register_rewards():
    """Return the reward functions this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.Reward`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_rewards():
            return [Component("gsm8k", "my_pkg.rewards:GSM8KReward", None, "exact final answer")]
    """


@hookspec
def areal_register_workflows():
    """Return the rollout workflows this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.Workflow`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_workflows():
            return [Component("rlvr", "areal_core.rollout.rlvr:RLVRWorkflow",
                              "areal_core.rollout.rlvr:RLVRConfig", "prompt -> n samples -> reward")]
    """


@hookspec
def areal_register_schedulers():
    """Return the schedulers (process launchers) this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.Scheduler`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_schedulers():
            return [Component("local", "areal_core.launcher.local:LocalScheduler", None,
                              "subprocesses on this machine")]
    """


@hookspec
def areal_register_devices():
    """Return the device types (cuda, cpu, npu...) this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.Device`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_devices():
            return [Component("npu", "areal_npu.device:NPUDevice", None, "Ascend NPU over HCCL")]
    """


@hookspec
def areal_register_metric_sinks():
    """Return the metric sinks (jsonl, wandb, tensorboard...) this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.MetricSink`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_metric_sinks():
            return [Component("mlflow", "my_pkg.sink:MLflowSink", None, "MLflow tracking")]
    """


@hookspec
def areal_register_pair_losses():
    """Return the preference-pair losses (``areal dpo`` / ``areal rm``) this plugin provides.

    Returns: ``list[Component]``; each factory builds a :class:`areal_core.api.protocols.PairLoss`.
    Called: once per process, when the registry is first used.

    Example::

        @hookimpl
        def areal_register_pair_losses():
            return [Component("dpo", "areal_core.trainer.pair_losses:DPOLoss",
                              "areal_core.trainer.pair_losses:DPOConfig", "DPO sigmoid loss")]
    """
