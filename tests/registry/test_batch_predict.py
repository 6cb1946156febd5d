"""`predict --model NAME@champion FOLDER --out OUT --num-workers 2`: batch prediction with a Ray Data actor pool,
one results file per shard, every image predicted once, resumable shard by shard, unreadable images skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.registry import load_detector
from pipeline.registry.predict import decode_image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """100 images of the synthetic set in nested folders, and one file with an image name that is not an image."""
    from pipeline.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path_factory.mktemp("bp") / "set", num_images=100, size=96, seed=3)
    folder = tmp_path_factory.mktemp("bp") / "images"
    for k, path in enumerate(sorted((data / "images").iterdir())):
        target = folder / f"part{k % 2}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (folder / "part1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    return folder


@pytest.mark.slow
def test_two_workers_predict_every_image_once_and_a_rerun_redoes_only_a_deleted_shard(
    registry, image_folder, tmp_path, capsys
):
    import ray

    out = tmp_path / "out"
    command = ["predict", "--model", f"{registry.name}@champion", str(image_folder), "--out", str(out)]
    command += ["--num-workers", "2", "--shard-size", "16", "--score-threshold", "0.2", "--draw"]
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # the CLI uses a running Ray; shut down here
    try:
        assert main([*command, "--tracking-uri", registry.uri]) == 0
        first = capsys.readouterr().out
        shards = sorted((out / "shards").iterdir())
        mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
        merged = json.loads((out / "detections.json").read_text())
        shards[2].unlink()
        assert main([*command, "--tracking-uri", registry.uri]) == 0
        second = capsys.readouterr().out
    finally:
        ray.shutdown()

    names = sorted(p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*") if p.is_file())
    assert len(names) == 101 and len(shards) == 7  # ceil(101 / 16)
    assert "101 images in 7 shards of 16: 0 already written, 7 to predict with 2 worker(s)" in first
    assert "1 image(s) skipped, unreadable" in first and "part1/broken.png: cannot decode" in first
    images = json.loads((out / "images.json").read_text())
    assert sorted(im["file_name"] for im in images) == [n for n in names if n != "part1/broken.png"]
    assert all(im["id"] == names.index(im["file_name"]) + 1 for im in images)  # ids: position in the sorted list
    assert [f["file_name"] for f in json.loads((out / "failed.json").read_text())] == ["part1/broken.png"]
    drawn = sorted(p.name for p in (out / "drawn").iterdir())  # --draw: each readable image once, named by id
    assert drawn == sorted(f"{im['id']:06d}_{Path(im['file_name']).stem}.png" for im in images)

    # the detections are the in-process detector's (same version, same backend), image by image
    detector, _ = load_detector(registry.uri, f"{registry.name}@champion")
    ids = [im["id"] for im in images]
    arrays = [decode_image(image_folder / im["file_name"]) for im in images]
    expected = [d for d in detector.to_records(detector.predict_arrays(arrays, ids)) if d["score"] >= 0.2]
    assert len(expected) > 0 and len(merged) == len(expected)
    by_image = sorted(merged, key=lambda d: (d["image_id"], -d["score"]))
    for got, want in zip(by_image, expected, strict=True):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        x1, y1, x2, y2 = want["box"]
        np.testing.assert_allclose(got["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-2)

    # the rerun: six shards untouched, only the deleted one predicted again, the same merged result
    assert "101 images in 7 shards of 16: 6 already written, 1 to predict with 2 worker(s)" in second
    assert "shard 2 (1/1)" in second
    again = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert {k: v for k, v in again.items() if k != shards[2].name} == {
        k: v for k, v in mtimes.items() if k != shards[2].name
    }
    assert json.loads((out / "detections.json").read_text()) == merged


def test_an_output_folder_of_another_job_is_refused_before_any_prediction(registry, image_folder, tmp_path):
    from pipeline.cluster.batch_predict import BatchJob, check_manifest, list_images
    from pipeline.data import DatasetError

    names = list_images(str(image_folder))
    job = BatchJob(registry.uri, f"{registry.name}/3", str(image_folder), str(tmp_path / "o"), shard_size=16)
    check_manifest(job, names)
    check_manifest(job, names)  # the same job again: resumable

    with pytest.raises(DatasetError, match=r"differs in model, shard_size"):
        check_manifest(BatchJob(registry.uri, f"{registry.name}/2", job.source, job.out, shard_size=8), names)
    with pytest.raises(DatasetError, match="no image files"):
        list_images(str(tmp_path / "o"))  # holds manifest.json only
