"""The slurm scheduler on a real one-node Slurm cluster (conftest.py): the rendered script, a real
inference server (areal-embedded) and rank processes as steps of one job, and the bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_slurm.config import SlurmSchedulerConfig
from areal_slurm.scheduler import SlurmScheduler
from slurm_cluster import machine_ip

pytestmark = pytest.mark.timeout(600)
ALLOCATION = "inference=embedded:d1+actor=fsdp:d2"

# A trainer-like rank: joins the gloo group at MASTER_ADDR:MASTER_PORT (the store the driver serves),
# reports its torchrun-style env and whether the server answers from its node.
RANK_SCRIPT = textwrap.dedent("""
    import json, os, sys, httpx, torch, torch.distributed as dist
    dist.init_process_group("gloo", init_method="env://")
    t = torch.tensor([float(os.environ["RANK"]) + 1]); dist.all_reduce(t)
    dist.destroy_process_group()
    health = [httpx.get(f"http://{a}/health", timeout=10).status_code for a in sys.argv[2].split(",")]
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "AREAL_HOST_ADDR", "SLURM_JOB_ID")
    out = {k: os.environ.get(k) for k in keys}
    out.update(health=health, sum=t.item())
    open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w").write(json.dumps(out))
""")


def jobs() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout.split("\n")[:-1]


def test_dry_run_prints_the_script_and_submits_nothing(tmp_path, capsys):
    run_dir = tmp_path / "exp" / "trial"
    sched = SlurmScheduler(SlurmSchedulerConfig(allocation="inference=vllm:d2t2+actor=fsdp:d4", partition="gpu", nodes=2,
                                                gpus_per_node=4, cpus_per_server=8, dry_run=True))
    with pytest.raises(SystemExit) as done:
        sched.prepare(run_dir)
    assert done.value.code == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --job-name=areal-exp-trial", "#SBATCH --nodes=2", "#SBATCH --ntasks=6",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4",
                 "#   2 x srun --jobid=$SLURM_JOB_ID --overlap --nodes=1 --ntasks=1 --cpus-per-task=8",
                 "#   4 x srun", "exec sleep", "nothing submitted"):
        assert line in script
    assert not run_dir.exists()


def test_servers_and_ranks_run_as_steps_of_one_job(slurm_cluster, tmp_path):
    from areal_core.testing.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model", size="0.2m")
    registry = build_registry()
    config = registry.get("inference_backend", "embedded").load_config_model()(name="embedded", threads=1)
    backend = registry.create("inference_backend", "embedded", config)
    run_dir = tmp_path / "exp" / "run"
    run_dir.mkdir(parents=True)
    sched = SlurmScheduler(SlurmSchedulerConfig(allocation=ALLOCATION, partition="debug"))
    with sched:
        sched.prepare(run_dir)
        job = sched.job_id
        assert [f"{job} RUNNING"] == jobs()
        addrs = sched.start_inference_servers(backend, str(model), 1)
        sched.wait(sched.launch_trainers([sys.executable, "-c", RANK_SCRIPT, str(run_dir), ",".join(addrs)], 2, {}))
    assert jobs() == []  # the job ended with the run
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["RANK"], r["WORLD_SIZE"], r["SLURM_JOB_ID"]) for r in ranks] == [("0", "2", job), ("1", "2", job)]
    assert all(r["health"] == [200] and r["MASTER_ADDR"] == r["AREAL_HOST_ADDR"] == machine_ip() for r in ranks)
    assert [r["sum"] for r in ranks] == [3.0, 3.0]  # 1 + 2 over the gloo group
    assert addrs[0].startswith(f"{machine_ip()}:") and machine_ip() != "127.0.0.1"
    assert (run_dir / "slurm" / "job.sh").read_text().startswith("#!/bin/bash\n#SBATCH --job-name=areal-exp-run")
    assert {"server-0.log", "trainer-0.log", "trainer-1.log"} <= {p.name for p in (run_dir / "logs").iterdir()}


def test_a_killed_server_is_described_and_restarted_as_a_new_step(slurm_cluster, tmp_path):
    import httpx

    from areal_core.plugin import SupportsServerStatus
    from areal_core.testing.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model", size="0.2m")
    registry = build_registry()
    config = registry.get("inference_backend", "embedded").load_config_model()(name="embedded", threads=1)
    backend = registry.create("inference_backend", "embedded", config)
    sched = SlurmScheduler(SlurmSchedulerConfig(allocation="inference=embedded:d1+actor=fsdp:d1", partition="debug"))
    assert isinstance(sched, SupportsServerStatus)
    with sched:
        sched.prepare(tmp_path)
        (addr,) = sched.start_inference_servers(backend, str(model), 1)
        assert " is running" in sched.describe_server(addr)
        step_id = next(s for s in _steps(sched.job_id) if s.endswith("server-0"))
        subprocess.run(["scancel", "--signal=KILL", step_id.split()[0]], check=True)
        sched.servers[0].popen.wait(timeout=60)
        lost = sched.describe_server(addr)
        assert lost.startswith(f"server-0 {addr} (slurm job {sched.job_id}, node ") and "; end of " in lost
        assert "is running" not in lost
        sched.restart_server(addr)
        assert httpx.get(f"http://{addr}/health", timeout=10).status_code == 200
        assert " is running" in sched.describe_server(addr)
    assert jobs() == []


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(slurm_cluster, tmp_path):
    """Another process binds the port drawn on the node before the server does (the race a probed
    free port leaves open): the server's step exits with EADDRINUSE and a new step starts on another."""
    from areal_core.testing.scheduler import PortTakingBackend, healthy

    sched = SlurmScheduler(SlurmSchedulerConfig(allocation="inference=embedded:d1+actor=fsdp:d1", partition="debug"))
    with sched, PortTakingBackend() as backend:
        sched.prepare(tmp_path)
        (addr,) = sched.start_inference_servers(backend, str(tmp_path), 1)
        assert backend.taken is not None and addr != backend.taken and healthy(addr)
        assert " is running" in sched.describe_server(addr) and "already in use" not in sched.servers[0].log_tail()
    assert "Address already in use" in (tmp_path / "logs" / "server-0.log").read_text()
    assert jobs() == []


def _steps(job_id: str) -> list[str]:
    return subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_a_failed_step_cancels_the_job(slurm_cluster, tmp_path):
    sched = SlurmScheduler(SlurmSchedulerConfig(allocation=ALLOCATION))
    script = "import os,sys; print('rank', os.environ['RANK'], 'gives up'); sys.exit(5 if os.environ['RANK']=='1' else 0)"
    with pytest.raises(ArealError, match=r"(?s)trainer-1 \(slurm job \d+, node \S+\) exited with status 5.*rank 1 gives up"):
        with sched:
            sched.prepare(tmp_path)
            sched.wait(sched.launch_trainers([sys.executable, "-c", script], 2, {}))
    assert jobs() == []


def test_unknown_partition_is_one_clear_error(slurm_cluster, tmp_path):
    sched = SlurmScheduler(SlurmSchedulerConfig(allocation=ALLOCATION, partition="nope"))
    with pytest.raises(ArealError, match=r"scheduler.partition='nope': no such partition on this Slurm cluster "
                                         r"\(partitions: debug\)"):
        sched.prepare(tmp_path)
    assert jobs() == [] and not (tmp_path / "slurm").exists()


def test_an_allocation_larger_than_the_partition_is_refused(slurm_cluster, tmp_path):
    sched = SlurmScheduler(SlurmSchedulerConfig(allocation="inference=embedded:d2+actor=fsdp:d4"))
    with pytest.raises(ArealError, match=r"needs 6 CPUs .* but partition 'debug' has 4"):
        sched.prepare(tmp_path)
    assert jobs() == []
