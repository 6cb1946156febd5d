"""`predict` and `evaluate` from a fresh process that has only the installed package and the tracking URI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.registry import load_detector
from pipeline.registry.evaluate import EVALUATION_EXPERIMENT, evaluate_detector
from pipeline.registry.registry import client


def test_predict_in_a_fresh_process_matches_in_process(registry, cli, tmp_path):
    images = sorted((registry.dataset / "images").iterdir())[:2]
    out = tmp_path / "pred"
    result = cli(
        "predict",
        "--model",
        f"models:/{registry.name}@champion",
        *map(str, images),
        "--out",
        str(out),
        "--score-threshold",
        "0.05",
        "--tracking-uri",
        registry.uri,
    )
    assert result.returncode == 0, result.stderr
    assert f"{registry.name} version 3:" in result.stdout
    results = json.loads((out / "detections.json").read_text())
    index = json.loads((out / "images.json").read_text())
    assert [entry["file_name"] for entry in index] == list(map(str, images))
    for entry, path in zip(index, images, strict=True):
        drawn = Image.open(out / entry["drawn"])
        assert drawn.size == Image.open(path).size  # drawn on the original image
    assert results, "the champion should detect something above 0.05 on these images"
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    # the same detections in this process, from the same registered version
    detector, version = load_detector(registry.uri, f"{registry.name}@champion")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    expected = [d for d in detector.to_records(detector.predict_arrays(arrays, [1, 2])) if d["score"] >= 0.05]
    assert str(version.version) == "3" and len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        x1, y1, x2, y2 = want["box"]
        # A fresh process sums float32 convolutions on its own thread pool: ~1e-3 px apart (1.2e-3 measured).
        np.testing.assert_allclose(got["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-2)


def test_evaluate_in_a_fresh_process_logs_a_run(registry, cli, s3_server):
    """From a copy of the dataset in a bucket (the tests' S3 server): the same fingerprint and metrics as the local
    directory's."""
    bucket_copy = s3_server.upload_dir(registry.dataset, "registry-data", "eval")
    result = cli(
        "evaluate",
        "--model",
        f"models:/{registry.name}/1",
        "--data",
        bucket_copy,
        "--tracking-uri",
        registry.uri,
    )
    assert result.returncode == 0, result.stderr
    assert f"{registry.name} version 1 on" in result.stdout and f"fingerprint {registry.fingerprint})" in result.stdout
    printed = {
        line.split()[0]: float(line.split()[1])
        for line in result.stdout.splitlines()
        if line.startswith("  AP") and "[" not in line
    }
    c = client(registry.uri)
    experiment = c.get_experiment_by_name(EVALUATION_EXPERIMENT)
    runs = c.search_runs([experiment.experiment_id], filter_string="params.model_version = '1'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = runs[0].data
    assert logged.params["dataset_fingerprint"] == registry.fingerprint
    assert logged.params["data_dir"] == bucket_copy
    detector, _ = load_detector(registry.uri, f"{registry.name}/1")
    expected = evaluate_detector(detector, registry.dataset)
    for key in ("AP", "AP50", "AP75"):
        assert logged.metrics[key] == pytest.approx(expected[key], abs=1e-6)
        assert printed[key] == pytest.approx(expected[key], abs=1e-4)
    assert logged.metrics["num_images"] == 2


def test_cli_errors_are_one_clear_line(registry, tmp_path, capsys):
    from pipeline.cli import main

    missing = tmp_path / "missing.jpg"
    args = ["predict", "--model", f"{registry.name}@champion", str(missing), "--out", str(tmp_path / "o")]
    assert main([*args, "--tracking-uri", registry.uri]) == 1
    assert capsys.readouterr().err == f"error: image 0: file '{missing}' does not exist\n"
    assert not (tmp_path / "o").exists()  # failed before any output
    assert main(["evaluate", "--model", "nope", "--data", str(registry.dataset), "--tracking-uri", registry.uri]) == 1
    assert "no registered model 'nope'" in capsys.readouterr().err


def test_register_verb_adds_checkpoints_as_versions_under_the_champion_rule(registry, make_state, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.registry.registry import get_version
    from pipeline.training.checkpoint import save_checkpoint

    name = "cli-registered"  # its own model: the session's registry fixture keeps its versions
    outputs = []
    for seed, ap in ((7, 0.4), (8, 0.001)):
        checkpoint = save_checkpoint(make_state(seed=seed, ap=ap), tmp_path / f"ckpt{seed}")
        args = ["registry", "register", str(checkpoint), name, "--data", str(registry.dataset), "--no-onnx"]
        assert main([*args, "--tracking-uri", registry.uri]) == 0
        outputs.append(capsys.readouterr().out)
    assert f"registered models:/{name}/1 (aliases: champion)" in outputs[0]
    assert f"registered models:/{name}/2 (aliases: challenger)" in outputs[1]  # worse: champion stays on 1
    weak = get_version(registry.uri, f"{name}/2")
    assert float(weak.tags["val_AP"]) == 0.001 and weak.tags["dataset_fingerprint"] == registry.fingerprint
    missing = tmp_path / "nope"
    args = ["registry", "register", str(missing), name, "--data", str(registry.dataset), "--tracking-uri", registry.uri]
    assert main(args) == 1
    assert str(missing) in capsys.readouterr().err
