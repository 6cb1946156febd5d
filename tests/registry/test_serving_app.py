"""`run_pipeline.py serve` as a user starts it: a real Ray Serve application on 127.0.0.1 serving
`shapes-live@live`, a model whose versions are the registry fixture's (version 1 = its ONNX champion, version 2 =
a PyTorch-only version, version 3 = a version whose artifacts are gone). One server serves every test in this
module, in file order: the alias moves in the last tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from child_process import ProcessOutput
from ports import free_port

from pipeline.registry import load_detector
from pipeline.registry.registry import client, using_tracking_uri

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODEL = "shapes-live"
BATCH_WAIT_MS = 300  # long enough that concurrent requests from threads meet in one model call


def _copy_versions(registry, broken_dir: Path) -> None:
    """`shapes-live` versions 1 (shapes v3, ONNX), 2 (shapes v2, PyTorch only) and 3 (its files are gone)."""
    c = client(registry.uri)
    c.create_registered_model(MODEL)
    for source_version in ("3", "2"):
        mv = c.get_model_version(registry.name, source_version)
        with using_tracking_uri(registry.uri):  # MLflow resolves a models:/ source through the global URI
            c.create_model_version(MODEL, mv.source, run_id=mv.run_id, tags=mv.tags, model_id=mv.model_id)
    broken_dir.mkdir()
    c.create_model_version(MODEL, str(broken_dir), tags={"onnx": "off"})
    c.set_registered_model_alias(MODEL, "live", "1")


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    _copy_versions(registry, root / "broken")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    command = [sys.executable, "run_pipeline.py", "serve", f"models:/{MODEL}@live", "--tracking-uri", registry.uri]
    command += ["--port", str(port), "--follow-interval-s", "1", "--batch-wait-ms", str(BATCH_WAIT_MS)]
    command += ["--max-body-mb", "1"]
    with open(root / "serve.log", "w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        output = ProcessOutput(proc, log)
        try:
            output.wait_for("serving shapes-live version 1", timeout=240)
            val = json.loads((registry.dataset / "annotations" / "val.json").read_text())
            image = registry.dataset / "images" / val["images"][0]["file_name"]
            yield SimpleNamespace(url=f"http://127.0.0.1:{port}", uri=registry.uri, image=image, output=output)
        finally:
            proc.send_signal(signal.SIGTERM)  # as `submit stop` ends it: the app is deleted, Ray shut down
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _predict(server, query: str = "", body: bytes | None = None) -> tuple[int, dict]:
    data = server.image.read_bytes() if body is None else body
    return _request(f"{server.url}/predict{query}", data, {"Content-Type": "application/octet-stream"})


def test_an_answer_equals_predicts_for_the_same_image_and_version(server):
    status, answer = _predict(server, "?score_threshold=0&max_detections=40")
    assert status == 200, answer
    assert answer["model"] == {"name": MODEL, "version": "1", "alias": "live"}
    detector, _ = load_detector(server.uri, f"{MODEL}/1")
    assert detector.backend == "onnxruntime"  # what the server runs by default
    expected = sorted(detector.predict([str(server.image)]), key=lambda d: -d["score"])[:40]
    assert len(answer["detections"]) == len(expected) == 40
    for got, want in zip(answer["detections"], expected, strict=True):
        assert (got["label"], got["category_id"]) == (want["label"], want["category_id"])
        np.testing.assert_allclose(got["box"], want["box"], atol=1e-3)
        np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
        x1, y1, x2, y2 = got["box"]
        np.testing.assert_allclose(got["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-6)
    width, height = detector.package.config.image_size  # the val images are the model's size here
    assert answer["image"] == {"width": width, "height": height}
    # the same image as a multipart upload (curl -F image=@file.jpg) gets the same answer
    boundary = uuid.uuid4().hex
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + server.image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, multipart = _request(
        f"{server.url}/predict?score_threshold=0&max_detections=40",
        form,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 200 and multipart["detections"] == answer["detections"]


def test_concurrent_requests_share_model_calls(server):
    _, before = _request(f"{server.url}/model")
    answers: list[dict] = []
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        answers.append(_predict(server)[1])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    _, after = _request(f"{server.url}/model")
    assert len(answers) == 8 and all("detections" in a for a in answers), answers
    calls = after["batches"] - before["batches"]
    assert calls < 8 and max(a["batch"]["requests"] for a in answers) > 1, (calls, [a["batch"] for a in answers])


def _bomb_png() -> bytes:
    """A PNG header declaring 30,000 x 30,000 px (900 megapixels, past the 400 limit) and no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("", b"", 400, "empty body"),
        ("", b"these bytes are no image", 415, "cannot decode the 24 bytes sent"),
        ("", _bomb_png(), 413, "image refused"),
        ("?score_threshold=high", None, 422, "score_threshold must be a number, got 'high'"),
        ("?score_threshold=2", None, 422, "score_threshold must be in [0, 1]"),
        ("?max_detections=0", None, 422, "max_detections must be an integer in [1, "),
        ("?threshold=0.5", None, 422, "unknown parameter(s) ['threshold']"),
    ],
    ids=["empty", "not-an-image", "bomb", "bad-number", "threshold-range", "max-detections", "unknown"],
)
def test_bad_requests_get_a_4xx_that_says_why_and_the_server_stays_up(server, query, body, status, message):
    got, answer = _predict(server, query, body)
    assert got == status and message in answer["error"], (got, answer)
    assert _request(f"{server.url}/healthz") == (200, {"status": "ok", "name": MODEL, "version": "1"})


def test_a_body_past_the_limit_is_refused_from_its_header_before_it_is_sent(server):
    """Content-Length of 2 MiB against --max-body-mb 1: the 413 comes back with no byte of the body sent (a client
    that sends anyway may see its connection closed mid-body, the server having answered already)."""
    import http.client

    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(2 << 20))
        connection.endheaders()
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and "2,097,152 bytes is past the limit of 1,048,576" in answer["error"], answer
    assert _request(f"{server.url}/healthz")[0] == 200


def test_moving_the_alias_during_a_stream_drops_no_request(server):
    answers: list[list[tuple[int, str | None]]] = [[], []]
    stop = threading.Event()

    def stream(mine: list) -> None:
        while not stop.is_set():
            status, answer = _predict(server)
            mine.append((status, answer.get("model", {}).get("version")))

    threads = [threading.Thread(target=stream, args=(mine,)) for mine in answers]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while sum(map(len, answers)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        client(server.uri).set_registered_model_alias(MODEL, "live", "2")  # PyTorch only: another backend
        while not all(any(v == "2" for _, v in mine) for mine in answers) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few more answers after the move
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    for mine in answers:
        assert all(status == 200 for status, _ in mine), mine
        versions = [v for _, v in mine]
        assert versions[0] == "1" and versions[-1] == "2", versions
        assert "1" not in versions[versions.index("2") :], versions  # once moved, every answer is the new one
    _, model = _request(f"{server.url}/model")
    assert (model["version"], model["backend"], model["alias"]) == ("2", "torch", "live")
    server.output.wait_for("moved from version 1 to 2", timeout=30)


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(server):
    client(server.uri).set_registered_model_alias(MODEL, "live", "3")
    status, refresh = _request(f"{server.url}/model/refresh", b"")
    assert status == 200 and (refresh["action"], refresh["version"], refresh["target"]) == ("failed", "2", "3")
    _, model = _request(f"{server.url}/model")
    assert model["version"] == "2" and "3" in model["not_served"], model
    status, answer = _predict(server)
    assert status == 200 and answer["model"]["version"] == "2"
    server.output.wait_for("version 3 not served", timeout=30)
