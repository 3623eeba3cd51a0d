"""Hostile and broken input against a real embedded server on loopback (issue 16).

One server with a bearer key and small limits serves the module; every test talks HTTP to it.
Each reproduction of the issue is asserted: a bad request fails alone (co-batched good ones
succeed), the control plane needs the key, versions never go back, a bad weight file leaves the
served weights and version as they were, idle and oversized traffic is cut, and 300 concurrent
requests all succeed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import time

import httpx
import pytest
import torch
from safetensors.torch import save_file

from areal_core.testing.inference_backend import free_port, launched_server, make_served_model

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_N, MAX_WAITING, MAX_CONNECTIONS = 4, 400, 350


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return make_served_model(root / "A", seed=0), make_served_model(root / "B", seed=1)


@pytest.fixture(scope="module")
def addr(models, tmp_path_factory):
    port = free_port()
    argv = [sys.executable, "-m", "areal_embedded.server", "--model", str(models[0]), "--port", str(port),
            "--threads", "1", "--max-batch", "16", "--max-n", str(MAX_N), "--max-waiting", str(MAX_WAITING),
            "--max-body-mb", "0.25", "--max-connections", str(MAX_CONNECTIONS), "--request-timeout-s", "1.5",
            "--keep-alive-s", "1"]
    log = tmp_path_factory.mktemp("log") / "server.log"
    with launched_server(argv, f"127.0.0.1:{port}", 180, {"OMP_NUM_THREADS": "1", "AREAL_API_KEY": KEY}, log):
        yield f"127.0.0.1:{port}"


def post(addr, endpoint, body, headers=AUTH, **kw):
    return httpx.post(f"http://{addr}{endpoint}", json=body, headers=headers, timeout=60, **kw)


def gen_body(**sampling):
    return {"input_ids": [5, 17, 33], "sampling_params": {"max_new_tokens": 4, "temperature": 0.0, **sampling}}


def checksum(addr):
    resp = httpx.get(f"http://{addr}/weights_checksum", headers=AUTH, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["checksum"], resp.json()["weight_version"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
@pytest.mark.parametrize("method,endpoint", [("GET", "/health"), ("POST", "/generate"), ("POST", "/pause_generation"),
                                             ("POST", "/update_weights_from_disk"), ("POST", "/update_weight_version"),
                                             ("POST", "/init_weights_update_group"), ("GET", "/get_weight_version")])
def test_every_endpoint_needs_the_key(addr, method, endpoint, headers):
    resp = httpx.request(method, f"http://{addr}{endpoint}", json={"new_version": "999"}, headers=headers, timeout=30)
    assert resp.status_code == 401
    assert "bearer token" in resp.json()["message"]


def test_the_key_opens_the_door(addr):
    assert httpx.get(f"http://{addr}/health", headers=AUTH, timeout=30).status_code == 200
    assert post(addr, "/generate", gen_body()).status_code == 200


def test_overflowing_top_k_fails_alone(addr):
    """The issue's reproduction: top_k = 2**63 among good requests used to fail the whole batch."""
    async def main():
        async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
            good = [client.post(f"http://{addr}/generate", json=gen_body(max_new_tokens=16)) for _ in range(6)]
            bad = client.post(f"http://{addr}/generate", json=gen_body(top_k=2**63))
            return await asyncio.gather(bad, *good)

    bad, *good = asyncio.run(main())
    assert bad.status_code == 400 and "sampling_params.top_k" in bad.json()["message"]
    assert [r.status_code for r in good] == [200] * 6
    assert all(len(r.json()["output_ids"]) == 16 for r in good)


@pytest.mark.parametrize("raw,field", [
    ('{"temperature": NaN}', "temperature"), ('{"temperature": Infinity}', "temperature"),
    ('{"temperature": -1}', "temperature"), ('{"temperature": 1e-30}', "temperature"),
    ('{"temperature": "0.5"}', "temperature"), ('{"top_p": 0}', "top_p"), ('{"top_p": 1.5}', "top_p"),
    ('{"top_k": 0}', "top_k"), ('{"top_k": -5}', "top_k"), ('{"top_k": 1.5}', "top_k"), ('{"n": 0}', "n"),
    (f'{{"n": {MAX_N + 1}}}', "n"), ('{"n": 200000}', "n"), ('{"n": true}', "n"),
    ('{"max_new_tokens": -1}', "max_new_tokens"), ('{"max_new_tokens": 100000000}', "max_new_tokens"),
    ('{"sampling_seed": 1e400}', "sampling_seed"), (f'{{"sampling_seed": {2**70}}}', "sampling_seed"),
    ('{"stop_token_ids": ["a"]}', "stop_token_ids"), ('{"stop_token_ids": [99999]}', "stop_token_ids"),
    ('{"ignore_eos": "yes"}', "ignore_eos"), ('{"frequency_penalty": 1.0}', "frequency_penalty"),
])
def test_bad_sampling_field_is_a_400_naming_it(addr, raw, field):
    body = '{"input_ids": [5, 17, 33], "sampling_params": ' + raw + "}"
    resp = httpx.post(f"http://{addr}/generate", content=body, headers={**AUTH, "content-type": "application/json"},
                      timeout=60)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["message"]


@pytest.mark.parametrize("body,words", [
    ({"input_ids": [1], "sampling_params": [1]}, "sampling_params must be an object"), ({"input_ids": [[1, 2], 3]}, "input_ids"),
    ({"input_ids": [1, True]}, "input_ids"), ({"input_ids": [1], "rid": "x" * 1000}, "rid"),
    ({"input_ids": [[1]] * (MAX_WAITING + 1)}, "server busy"),
])
def test_bad_request_shapes(addr, body, words):
    resp = post(addr, "/generate", body)
    assert resp.status_code in (400, 503) and words in resp.json()["message"]


def test_body_size_is_bounded(addr):
    resp = post(addr, "/generate", {"input_ids": [1] * 200_000})
    assert resp.status_code == 413
    chunked = httpx.post(f"http://{addr}/generate", content=iter([b'{"input_ids": [', b"1," * 200_000, b"1]}"]),
                         headers=AUTH, timeout=60)
    assert chunked.status_code == 413
    assert post(addr, "/generate", gen_body()).status_code == 200


def test_versions_only_move_forward(addr):
    _, before = checksum(addr)
    for bad in (-999, "abc", True):
        resp = post(addr, "/update_weight_version", {"new_version": bad})
        assert resp.status_code == 400 and "new_version" in resp.json()["message"]
    assert post(addr, "/update_weight_version", {"new_version": int(before) + 5}).status_code == 200
    resp = post(addr, "/update_weight_version", {"new_version": int(before) + 1})
    assert resp.status_code == 400 and "only move forward" in resp.json()["message"]
    assert checksum(addr)[1] == str(int(before) + 5)


def _weights_dir(models, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(models[1], out)
    return out


def test_bad_weight_file_leaves_weights_and_version(addr, models, tmp_path):
    """Valid shapes plus one unknown name used to overwrite the weights before failing."""
    before = checksum(addr)
    extra = _weights_dir(models, tmp_path, "extra")
    save_file({"not.a.weight": torch.zeros(3)}, str(extra / "zz-extra.safetensors"))
    torn = _weights_dir(models, tmp_path, "torn")
    data = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(data[: len(data) // 2])
    wrong_shape = _weights_dir(models, tmp_path, "shape")
    save_file({"model.norm.weight": torch.ones(7)}, str(wrong_shape / "zz-shape.safetensors"))
    for path, words in ((extra, "not.a.weight"), (torn, "cannot read"), (wrong_shape, "shape")):
        resp = post(addr, "/update_weights_from_disk", {"model_path": str(path), "weight_version": "100"})
        assert resp.status_code == 400 and words in resp.json()["message"], resp.text
        assert checksum(addr) == before
    good = _weights_dir(models, tmp_path, "good")
    version = int(before[1]) + 1
    assert post(addr, "/update_weights_from_disk", {"model_path": str(good), "weight_version": version}).status_code == 200
    assert checksum(addr)[1] == str(version) and checksum(addr)[0] != before[0]
    back = post(addr, "/update_weights_from_disk", {"model_path": str(models[0]), "weight_version": version + 1})
    assert back.status_code == 200


def test_idle_and_half_sent_connections_are_closed(addr):
    host, port = addr.split(":")
    idle = socket.create_connection((host, int(port)))
    half = socket.create_connection((host, int(port)))
    half.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    idle.settimeout(10)
    half.settimeout(10)
    start = time.monotonic()
    assert idle.recv(1) == b"" and half.recv(1) == b""  # closed by the server
    assert time.monotonic() - start < 8
    idle.close()
    half.close()


def test_connection_cap_sheds_extra_connections_and_recovers(addr):
    host, port = addr.split(":")
    held = [socket.create_connection((host, int(port))) for _ in range(MAX_CONNECTIONS + 20)]
    try:
        held[-1].settimeout(5)
        assert held[-1].recv(1) == b""  # over the cap: closed at once
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    assert post(addr, "/generate", gen_body()).status_code == 200


def test_300_concurrent_requests_all_succeed(addr):
    """The load test of the issue: loopback only, bounded in count (300) and time."""
    async def main():
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(headers=AUTH, timeout=120, limits=limits) as client:
            body = gen_body(max_new_tokens=8, temperature=1.0)
            return await asyncio.gather(*(client.post(f"http://{addr}/generate", json=body) for _ in range(300)),
                                        return_exceptions=True)

    start = time.monotonic()
    results = asyncio.run(main())
    errors = [r if isinstance(r, Exception) else r.status_code for r in results
              if isinstance(r, Exception) or r.status_code != 200]
    assert errors == []
    assert time.monotonic() - start < 120


def test_errors_are_json(addr):
    resp = httpx.post(f"http://{addr}/generate", content=b"{not json", headers=AUTH, timeout=30)
    assert resp.status_code == 400
    assert json.loads(resp.text)["success"] is False
