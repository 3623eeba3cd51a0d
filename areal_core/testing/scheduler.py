"""Contract suite for schedulers: the calls ``areal train`` makes (the ``Scheduler`` Protocol).

Subclass :class:`SchedulerContract` and name the component::

    class TestSlurmScheduler(SchedulerContract):
        plugin = areal_slurm.plugin
        component_name = "slurm"
        component_config = {"partition": "debug"}

The suite runs real processes through the scheduler, inside ``with scheduler:`` after
``prepare(run_dir)``: inference servers of :class:`HealthServerBackend` (a Python HTTP server
answering ``GET /health``) and trainer ranks that are ``python -c`` scripts recording their
environment in files. Processes must see the test's temporary directory (a shared filesystem on
a cluster). Set ``same_machine = False`` when they run elsewhere: the checks that look up their
process ids are skipped.

Checked: ``config.trainer_ranks`` is a positive int; ``host_addr()`` is a non-empty string;
``start_inference_servers`` returns ``n`` distinct ``host:port`` addresses, each healthy, whose
servers got the ``env`` given, and a server whose port another process took before it could bind
it (:class:`PortTakingBackend`) is started again on another port; ``launch_trainers`` starts
``ranks`` processes, each with the given env plus ``RANK`` (0..ranks-1), ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` and ``AREAL_HOST_ADDR``, and they form a gloo
group there (``env://``) whose port was bound before they started (no other process can take it
meanwhile; see ``host_rendezvous_store``); ``wait`` returns when they exit 0 and raises ArealError when one fails;
leaving the ``with`` block stops every server and rank still running; ``stop_all`` may be called
again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from areal_core.api.protocols import Scheduler
from areal_core.api.types import ModelRequest, ModelResponse, WeightUpdateMeta
from areal_core.errors import ArealError
from areal_core.testing.contract import ComponentContract, run_async

# argv: SCRATCH_DIR HOST PORT. Records its pid and env mark, then serves 200 on /health.
SERVER_SCRIPT = """
import http.server, json, os, sys
scratch, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(scratch, f"server-{port}.json"), "w") as f:
    json.dump({"pid": os.getpid(), "mark": os.environ.get("AREAL_CONTRACT_MARK")}, f)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer((host, port), Health).serve_forever()
"""

RANK_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "AREAL_HOST_ADDR", "AREAL_CONTRACT_MARK")
# argv: OUT_DIR SLEEP_S EXIT_CODE. Records its pid and environment, sleeps, exits with EXIT_CODE.
RANK_SCRIPT = f"""
import json, os, sys, time
with open(os.path.join(sys.argv[1], "rank-" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump({{"pid": os.getpid(), **{{k: os.environ.get(k) for k in {RANK_KEYS!r}}}}}, f)
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[3]))
"""

# argv: OUT_DIR. Records MASTER_PORT, waits for OUT_DIR/go, then joins the gloo group at MASTER_ADDR:MASTER_PORT
# and records the all-reduced sum of RANK + 1.
GROUP_SCRIPT = """
import os, pathlib, sys, time, torch, torch.distributed as dist
out, rank = pathlib.Path(sys.argv[1]), os.environ["RANK"]
(out / f"port-{rank}.txt").write_text(os.environ["MASTER_PORT"])
while not (out / "go").exists():
    time.sleep(0.05)
dist.init_process_group("gloo", init_method="env://")
t = torch.tensor([float(rank) + 1]); dist.all_reduce(t)
(out / f"sum-{rank}.txt").write_text(str(t.item()))
dist.destroy_process_group()
"""


class HealthServerBackend:
    """An InferenceBackend whose server only answers ``GET /health`` (the scheduler needs no more).

    ``model_path`` is used as a scratch directory: each server writes ``server-PORT.json`` there.
    """

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        return [sys.executable, "-c", SERVER_SCRIPT, model_path, host, str(port)]

    async def health(self, client: Any, addr: str) -> bool:
        return (await client.get(f"http://{addr}/health")).status_code == 200

    async def generate(self, client: Any, addr: str, req: ModelRequest) -> ModelResponse:
        raise ArealError("HealthServerBackend serves /health only")

    async def pause(self, client: Any, addr: str) -> None:
        raise ArealError("HealthServerBackend serves /health only")

    async def resume(self, client: Any, addr: str) -> None:
        raise ArealError("HealthServerBackend serves /health only")

    def weight_updater(self, meta: WeightUpdateMeta):
        raise ArealError(f"HealthServerBackend has no weight path {meta.type!r}")


class PortTakingBackend(HealthServerBackend):
    """A HealthServerBackend racing its first server for its port: the first ``server_command``
    binds and listens on the port it is handed, from this process, before the server starts, as
    another program on the node could between the scheduler drawing a free port and the server
    binding it. That server exits with "Address already in use". Use it as a context manager
    (the port is held until the block ends); ``taken`` is the ``host:port`` it held."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self.taken: str | None = None

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        if self._socket is None:
            self._socket = socket.socket()
            self._socket.bind((host, port))
            self._socket.listen()
            self.taken = f"{host}:{port}"
        return super().server_command(model_path, host, port)

    def __enter__(self) -> PortTakingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is not None:
            self._socket.close()


def healthy(addr: str) -> bool:
    import httpx

    async def check() -> bool:
        async with httpx.AsyncClient(timeout=5.0) as client:
            try:
                return await HealthServerBackend().health(client, addr)
            except httpx.HTTPError:
                return False

    return run_async(check())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as stopped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class SchedulerContract(ComponentContract):
    kind = "scheduler"
    protocol = Scheduler
    same_machine: ClassVar[bool] = True  # processes run here: their pids can be checked
    stop_timeout_s: ClassVar[float] = 30.0  # how long stopped processes may take to disappear

    @pytest.fixture
    def run_dir(self, tmp_path: Path) -> Path:
        return tmp_path / "run"

    @pytest.fixture
    def scratch(self, tmp_path: Path) -> Path:
        path = tmp_path / "scratch"
        path.mkdir()
        return path

    @pytest.fixture
    def scheduler(self, component, run_dir: Path):
        """The component, prepared and entered; left (stopping everything) after the test."""
        component.prepare(run_dir)
        with component as entered:
            yield entered

    def launch(self, scheduler, scratch: Path, ranks: int, sleep_s: float = 0.0, exit_code: int = 0) -> list[Any]:
        argv = [sys.executable, "-c", RANK_SCRIPT, str(scratch), str(sleep_s), str(exit_code)]
        return scheduler.launch_trainers(argv, ranks, {"AREAL_CONTRACT_MARK": "trainer"})

    def rank_records(self, scratch: Path, ranks: int, timeout_s: float = 60.0) -> dict[int, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(list(scratch.glob("rank-*.json"))) < ranks and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.1)  # the last file may still be being written
        return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in scratch.glob("rank-*.json")}

    def test_config_has_trainer_ranks(self, component):
        ranks = component.config.trainer_ranks
        assert isinstance(ranks, int) and ranks >= 1, f"config.trainer_ranks = {ranks!r} (subclass SchedulerConfigBase)"

    def test_host_addr(self, scheduler):
        addr = scheduler.host_addr()
        assert isinstance(addr, str) and addr, f"host_addr() returned {addr!r}"

    def test_servers_start_healthy_with_their_env(self, scheduler, scratch):
        addrs = scheduler.start_inference_servers(HealthServerBackend(), str(scratch), 2, env={"AREAL_CONTRACT_MARK": "server"})
        assert isinstance(addrs, list) and len(addrs) == 2 and len(set(addrs)) == 2, addrs
        for addr in addrs:
            host, _, port = addr.rpartition(":")
            assert host and port.isdigit(), f"{addr!r} is not host:port"
            assert healthy(addr), f"server {addr} is not healthy after start_inference_servers returned"
        records = [json.loads(p.read_text()) for p in scratch.glob("server-*.json")]
        assert [r["mark"] for r in records] == ["server", "server"], "the servers did not get the env given"

    def test_a_server_whose_port_is_taken_before_it_binds_starts_on_another(self, scheduler, scratch):
        if not self.same_machine:
            pytest.skip("the port is taken from this machine: its servers must run here")
        with PortTakingBackend() as backend:
            addrs = scheduler.start_inference_servers(backend, str(scratch), 2)
            assert backend.taken is not None and backend.taken not in addrs, (
                f"start_inference_servers returned {addrs}, including {backend.taken}, a port another process held")
            assert len(set(addrs)) == 2 and all(healthy(a) for a in addrs), f"servers {addrs} are not all healthy"

    def test_trainer_ranks_get_their_env_and_wait_returns(self, scheduler, scratch):
        handles = self.launch(scheduler, scratch, ranks=2)
        scheduler.wait(handles)
        records = self.rank_records(scratch, 2)
        assert sorted(records) == [0, 1], f"ranks that ran: {sorted(records)}"
        for rank, env in records.items():
            missing = [k for k in RANK_KEYS if not env.get(k)]
            assert not missing, f"rank {rank} lacks {missing} in its environment"
            assert (env["WORLD_SIZE"], env["AREAL_CONTRACT_MARK"]) == ("2", "trainer")
            assert env["LOCAL_RANK"].isdigit() and env["MASTER_PORT"].isdigit()
        assert len({env["MASTER_ADDR"] + env["MASTER_PORT"] for env in records.values()}) == 1, "ranks disagree on the master"

    def test_trainer_ranks_form_a_group_at_a_port_bound_before_they_started(self, scheduler, scratch):
        handles = scheduler.launch_trainers([sys.executable, "-c", GROUP_SCRIPT, str(scratch)], 2, {})
        deadline = time.monotonic() + 120
        while len(list(scratch.glob("port-*.txt"))) < 2:
            assert time.monotonic() < deadline, "the ranks did not start"
            time.sleep(0.1)
        time.sleep(0.1)  # the last file may still be being written
        ports = {int(p.read_text()) for p in scratch.glob("port-*.txt")}
        assert len(ports) == 1, f"ranks disagree on MASTER_PORT: {ports}"
        if self.same_machine:  # no other process can take the port before the group rendezvouses there
            with socket.socket() as s, pytest.raises(OSError):
                s.bind(("127.0.0.1", ports.pop()))
        (scratch / "go").touch()
        scheduler.wait(handles)
        sums = [(scratch / f"sum-{r}.txt").read_text() for r in range(2)]
        assert sums == ["3.0", "3.0"], f"the ranks' all-reduce of RANK + 1 gave {sums}"

    def test_wait_raises_when_a_rank_fails(self, scheduler, scratch):
        handles = self.launch(scheduler, scratch, ranks=1, exit_code=3)
        with pytest.raises(ArealError):
            scheduler.wait(handles)

    def test_leaving_the_context_stops_servers_and_ranks(self, component, run_dir, scratch):
        component.prepare(run_dir)
        with component as scheduler:
            addrs = scheduler.start_inference_servers(HealthServerBackend(), str(scratch), 1)
            self.launch(scheduler, scratch, ranks=1, sleep_s=600)
            ranks = self.rank_records(scratch, 1)
        assert not healthy(addrs[0]), f"server {addrs[0]} still answers after the scheduler's with block"
        if self.same_machine:
            pids = [r["pid"] for r in ranks.values()] + [json.loads(p.read_text())["pid"] for p in scratch.glob("server-*.json")]
            deadline = time.monotonic() + self.stop_timeout_s
            while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [p for p in pids if pid_alive(p)], "processes still running after the scheduler's with block"
        component.stop_all()  # again: idempotent
