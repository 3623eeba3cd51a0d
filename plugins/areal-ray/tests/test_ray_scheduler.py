"""The ray scheduler on a real two-node cluster (conftest.py): placement by custom resources, real
node addresses, a real inference server (areal-embedded) and trainer-like rank processes that form
a gloo group at MASTER_ADDR and call the server at their node's address; then the bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_ray.config import RaySchedulerConfig
from areal_ray.scheduler import RayScheduler

pytestmark = pytest.mark.timeout(600)

# A trainer-like rank: joins the gloo group at MASTER_ADDR:MASTER_PORT, checks the servers answer,
# and reports where it ran.
RANK_SCRIPT = textwrap.dedent("""
    import json, os, sys, httpx, torch, torch.distributed as dist
    import ray
    dist.init_process_group("gloo", init_method="env://")
    t = torch.tensor([float(os.environ["RANK"]) + 1]); dist.all_reduce(t)
    health = [httpx.get(f"http://{a}/health", timeout=10).status_code for a in sys.argv[2].split(",")]
    out = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "AREAL_HOST_ADDR")}
    out.update(sum=t.item(), health=health, marker=os.environ.get("AREAL_TEST_MARKER"))
    open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w").write(json.dumps(out))
    dist.destroy_process_group()
""")


def scheduler(ray_cluster, allocation: str, **kw) -> RayScheduler:
    options = {"placement_timeout_s": 20, "server_resources": {"node_a": 1}, "trainer_resources": {"node_b": 1}, **kw}
    return RayScheduler(RaySchedulerConfig(address=ray_cluster.address, allocation=allocation, **options))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from areal_core.testing.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny", size="0.2m")


def test_servers_and_ranks_land_on_their_nodes(ray_cluster, model, tmp_path, monkeypatch):
    registry = build_registry()
    config = registry.get("inference_backend", "embedded").load_config_model()(name="embedded", threads=1)
    backend = registry.create("inference_backend", "embedded", config)
    monkeypatch.setenv("AREAL_TEST_MARKER", "forwarded")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sched = scheduler(ray_cluster, "inference=embedded:d1+actor=fsdp:d2")
    with sched:
        sched.prepare(run_dir)
        addrs = sched.start_inference_servers(backend, str(model), 1)
        handles = sched.launch_trainers([sys.executable, "-c", RANK_SCRIPT, str(run_dir), ",".join(addrs)], 2, {})
        sched.wait(handles)
        nodes = {p.name: p.node_id for p in sched.servers + sched.trainers}
        driver_addr = sched.host_addr()
    assert addrs == [f"{ray_cluster.ip}:{addrs[0].rpartition(':')[2]}"] and ray_cluster.ip != "127.0.0.1"
    assert driver_addr == ray_cluster.ip
    assert nodes["trainer-0"] == nodes["trainer-1"] != nodes["server-0"]  # node_b vs node_a
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["sum"] for r in ranks] == [3.0, 3.0]  # 1 + 2 over the gloo group
    assert all(r["MASTER_ADDR"] == r["AREAL_HOST_ADDR"] == ray_cluster.ip for r in ranks)
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"]) for r in ranks] == [("0", "0", "2"), ("1", "1", "2")]
    assert all(r["health"] == [200] and r["marker"] == "forwarded" for r in ranks)
    assert {p.name for p in (run_dir / "logs").iterdir()} == {"server-0.log", "trainer-0.log", "trainer-1.log"}
    assert (run_dir / "logs" / "server-0.log").stat().st_size > 0
    assert _leftover_placement_groups(ray_cluster) == 0


def test_a_killed_server_is_described_and_restarted_at_its_address(ray_cluster, model, tmp_path):
    import os
    import signal

    import httpx

    from areal_core.plugin import SupportsServerStatus

    registry = build_registry()
    config = registry.get("inference_backend", "embedded").load_config_model()(name="embedded", threads=1)
    backend = registry.create("inference_backend", "embedded", config)
    sched = scheduler(ray_cluster, "inference=embedded:d1+actor=fsdp:d1")
    assert isinstance(sched, SupportsServerStatus)
    with sched:
        sched.prepare(tmp_path)
        (addr,) = sched.start_inference_servers(backend, str(model), 1)
        assert f"server-0 {addr} (pid " in sched.describe_server(addr) and " is running" in sched.describe_server(addr)
        pid = int(sched.describe_server(addr).split("(pid ")[1].split()[0])
        os.kill(pid, signal.SIGKILL)  # both "nodes" are this machine
        time.sleep(1)
        lost = sched.describe_server(addr)
        assert f"(pid {pid} on Ray node {ray_cluster.ip}" in lost and "was killed by SIGKILL; end of " in lost
        sched.restart_server(addr)
        assert httpx.get(f"http://{addr}/health", timeout=10).status_code == 200
        assert " is running" in sched.describe_server(addr) and f"(pid {pid} " not in sched.describe_server(addr)
    assert _leftover_placement_groups(ray_cluster) == 0


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(ray_cluster, tmp_path):
    """Another process binds the port the actor drew on its node before the server does: the
    server exits with EADDRINUSE and starts again under the same actor, on another port."""
    from areal_core.testing.scheduler import PortTakingBackend, healthy

    sched = scheduler(ray_cluster, "inference=embedded:d1+actor=fsdp:d1")
    with sched, PortTakingBackend() as backend:
        sched.prepare(tmp_path)
        (addr,) = sched.start_inference_servers(backend, str(tmp_path), 1)
        assert backend.taken is not None and addr != backend.taken and healthy(addr)
        assert addr.startswith(f"{ray_cluster.ip}:") and len(sched.servers) == 1
        assert " is running" in sched.describe_server(addr) and "already in use" not in sched.servers[0].log_tail()
    assert "Address already in use" in (tmp_path / "logs" / "server-0.log").read_text()
    assert _leftover_placement_groups(ray_cluster) == 0


def test_a_failing_rank_is_an_error_with_its_log(ray_cluster, tmp_path):
    sched = scheduler(ray_cluster, "inference=embedded:d1+actor=fsdp:d2", cpus_per_server=0)
    script = "import os,sys; print('rank', os.environ['RANK'], 'gives up'); sys.exit(3 if os.environ['RANK']=='1' else 0)"
    with sched, pytest.raises(ArealError, match=r"(?s)trainer-1 on Ray node .* exited with status 3.*rank 1 gives up"):
        sched.prepare(tmp_path)
        sched.wait(sched.launch_trainers([sys.executable, "-c", script], 2, {}))


def test_unreachable_address_is_one_clear_error(tmp_path):
    from areal_core.plugin import free_port

    address = f"127.0.0.1:{free_port()}"
    sched = RayScheduler(RaySchedulerConfig(address=address, allocation="inference=embedded:d1+actor=fsdp:d1",
                                            connect_timeout_s=2))
    with pytest.raises(ArealError, match=rf"scheduler.address='{address}': no Ray head answers there"):
        sched.prepare(tmp_path)
    import ray

    assert not ray.is_initialized()


def test_too_few_cpus_fails_before_any_process(ray_cluster, tmp_path):
    sched = scheduler(ray_cluster, "inference=embedded:d3+actor=fsdp:d4")
    with pytest.raises(ArealError, match=r"needs 7 CPUs \(inference=embedded:d3: 3, actor=fsdp:d4: 4\) but the Ray "
                                         r"cluster .* has 4"):
        sched.prepare(tmp_path)
    assert not (tmp_path / "logs").exists() and _leftover_placement_groups(ray_cluster) == 0


def test_resources_that_fit_in_total_but_not_per_node_time_out_cleanly(ray_cluster, tmp_path):
    sched = scheduler(ray_cluster, "inference=embedded:d3+actor=fsdp:d1")
    start = time.monotonic()
    with pytest.raises(ArealError, match=r"could not place .* within scheduler.placement_timeout_s=20s; per node"):
        sched.prepare(tmp_path)  # 3 servers pinned to node_a, which has 2 CPUs
    assert time.monotonic() - start < 60 and _leftover_placement_groups(ray_cluster) == 0


def test_a_run_dir_hidden_from_a_node_is_refused(ray_cluster, tmp_path):
    hidden = tmp_path / "fileroot"
    run_dir = hidden / "exp" / "trial"
    run_dir.mkdir(parents=True)
    node = ray_cluster.start_worker("blind", "node_c", hide=hidden)
    try:
        sched = scheduler(ray_cluster, "inference=embedded:d1+actor=fsdp:d1")
        with pytest.raises(ArealError, match=rf"fileroot: the run directory {run_dir} is not visible from Ray node\(s\) "
                                             rf"{ray_cluster.ip} \(node [0-9a-f]{{8}}\); fileroot must be storage every node"):
            sched.prepare(run_dir)
        assert not (run_dir / "logs").exists() and list(run_dir.iterdir()) == []  # token removed, nothing started
    finally:
        node.stop()
        ray_cluster.nodes.remove(node)
        ray_cluster.wait_nodes(2)


def _leftover_placement_groups(ray_cluster) -> int:
    """Placement groups not removed, counted from a fresh driver process."""
    from areal_ray.testing import ray_env

    script = ("import ray,sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
              "print(sum(pg['state'] != 'REMOVED' for pg in ray.util.placement_group_table().values()))")
    out = subprocess.run([sys.executable, "-c", script, ray_cluster.address], env=ray_env(), capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return int(out.strip().splitlines()[-1])
