"""Datasets in a bucket, against a real S3 API on 127.0.0.1 (moto's server, IAM auth on): the same items and
fingerprint as the local copy, the per-node cache, validation by object key, and clear errors for a missing
object, a wrong bucket and missing or refused credentials, before any training."""

from __future__ import annotations

import argparse
import io
import json
import os

import pytest
import torch
from PIL import Image

from pipeline.cli import data as data_cli
from pipeline.config import load_config
from pipeline.data import DatasetError, DetectionDataset, DetectionTransform, dataset_fingerprint, storage
from pipeline.data import validate as v
from pipeline.plan.job import resolve_job

BUCKET = "pipeline-data"


def run_data_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    """The demo shapes set, 24 JPEGs of 96 px (18 train, 6 val)."""
    from pipeline.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "shapes", num_images=24, size=96)


@pytest.fixture(scope="module")
def bucket_dataset(s3_server, local_dataset) -> str:
    return s3_server.upload_dir(local_dataset, BUCKET, "sets/shapes")


def eval_items(dataset: DetectionDataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(image, target["boxes"]) for image, target in (dataset[i] for i in range(len(dataset)))]


def test_bucket_dataset_gives_the_local_copys_items_and_fingerprint(bucket_dataset, local_dataset):
    transform = DetectionTransform(96, train=False)
    remote, local = (
        DetectionDataset(bucket_dataset, "val", transform),
        DetectionDataset(local_dataset, "val", transform),
    )
    assert remote.records[0].path == f"{bucket_dataset}/images/{local.records[0].path.name}"
    assert len(remote) == len(local) == 5
    for (remote_image, remote_boxes), (image, boxes) in zip(eval_items(remote), eval_items(local), strict=True):
        assert torch.equal(remote_image, image) and torch.equal(remote_boxes, boxes)
    for split in ("train", "val"):  # the registry compares evaluations across local and bucket copies
        assert dataset_fingerprint(bucket_dataset, split) == dataset_fingerprint(local_dataset, split)


def test_cache_reads_each_object_once_and_refetches_a_changed_one(s3_server, local_dataset, tmp_path):
    uri = s3_server.upload_dir(local_dataset, BUCKET, "sets/cached")
    images_key = f"/{BUCKET}/sets/cached/images/"
    cache = tmp_path / "cache"
    transform = DetectionTransform(96, train=False)
    dataset = DetectionDataset(uri, "val", transform, cache_dir=str(cache))
    first = eval_items(dataset)
    assert s3_server.gets(images_key) == len(dataset) == 5  # one GET per image on the first pass
    second = eval_items(dataset)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(second, first, strict=True))  # the same items ...
    assert s3_server.gets(images_key) == 5  # ... and no request: read from the node's disk
    assert len([p for p in cache.rglob("*") if p.is_file()]) == 5

    # the object changes in the bucket (another picture, another size): a new dataset (a new run) fetches it again
    name = dataset.records[0].path.rsplit("/", 1)[1]
    changed = Image.open(local_dataset / "images" / name).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    changed.save(buffer, format="JPEG", quality=70)
    s3_server.client().put_object(Bucket=BUCKET, Key=f"sets/cached/images/{name}", Body=buffer.getvalue())
    again = DetectionDataset(uri, "val", transform, cache_dir=str(cache))
    image, _ = again[0]
    assert s3_server.gets(images_key) == 6  # that one object, once
    assert not torch.equal(image, first[0][0])
    expected_local = tmp_path / "changed"
    (expected_local / "images").mkdir(parents=True)
    (expected_local / "images" / name).write_bytes(buffer.getvalue())
    assert torch.equal(image, transform(*_decoded(expected_local / "images" / name))[0])


def _decoded(path):
    import numpy as np

    from pipeline.data.decode import decode_rgb

    empty = np.zeros((0, 4), np.float32)
    return decode_rgb(path.read_bytes()), empty, np.zeros(0, np.int64)


def test_validate_bucket_reports_a_planted_broken_record_by_key_and_id(s3_server, local_dataset, capsys):
    uri = s3_server.upload_dir(local_dataset, BUCKET, "sets/broken")
    client = s3_server.client()
    client.put_object(Bucket=BUCKET, Key="sets/broken/images/00003.jpg", Body=b"\xff\xd8 not a jpeg after all")
    client.delete_object(Bucket=BUCKET, Key="sets/broken/images/00010.jpg")

    assert run_data_cli("validate", uri) == 1
    out = capsys.readouterr().out
    corrupt = next(line for line in out.splitlines() if "[corrupt_image]" in line)
    missing = next(line for line in out.splitlines() if "[missing_image]" in line)
    records = {  # file name -> (split file, image id)
        image["file_name"]: (f"{split}.json", image["id"])
        for split in ("train", "val")
        for image in json.loads((local_dataset / "annotations" / f"{split}.json").read_text())["images"]
    }
    for line, name in ((corrupt, "00003.jpg"), (missing, "00010.jpg")):
        json_file, image_id = records[name]
        assert f"{uri}/images/{name}" in line and f"image id {image_id} " in line and json_file in line, line
    assert "24 image files checked (" in out  # and the rate, images/s

    report = v.validate_dataset(uri, check_images="sample:2")
    assert report.images_checked == 4  # 2 per split
    assert v.validate_dataset(uri, check_images="none").fatal == []  # the JSON alone is valid


def test_missing_object_wrong_bucket_and_credentials_fail_before_training(s3_server, bucket_dataset, tmp_path):
    def job(data_dir: str):
        return resolve_job(
            load_config(
                None,
                [
                    f"data.dir={data_dir}",
                    "model.pretrained_backbone=null",
                    f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                    f"ray.storage_path={tmp_path / 'ray'}",
                    f"train.output_dir={tmp_path / 'out'}",
                ],
            )
        )

    with pytest.raises(DatasetError, match=r"s3://pipeline-data/sets/nothing-here.*no dataset there"):
        job(f"s3://{BUCKET}/sets/nothing-here")
    with pytest.raises(storage.StorageError, match=r"s3://no-such-bucket-4/.*bucket .no-such-bucket-4. does not exist"):
        job("s3://no-such-bucket-4/shapes")

    saved = {k: os.environ.pop(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    storage._s3.cache_clear()  # a client holds the credentials it was made with
    try:
        with pytest.raises(storage.StorageError, match=r"access denied: no credentials in the environment"):
            job(bucket_dataset)
        os.environ.update(AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1", AWS_SECRET_ACCESS_KEY="wrong")
        storage._s3.cache_clear()
        with pytest.raises(storage.StorageError, match=r"refused"):
            job(bucket_dataset)
    finally:
        os.environ.update(saved)
        storage._s3.cache_clear()


def test_analyze_reads_a_bucket_as_the_local_copy(bucket_dataset, local_dataset, capsys):
    """`data analyze s3://...` prints what the local copy's analysis prints, path aside."""
    assert run_data_cli("analyze", str(local_dataset), "--set", "model.image_size=256") == 0
    local = capsys.readouterr().out
    assert run_data_cli("analyze", bucket_dataset, "--set", "model.image_size=256") == 0
    remote = capsys.readouterr().out
    assert "boxes" in local and remote == local.replace(str(local_dataset), bucket_dataset)


def test_transient_errors_are_retried_with_backoff_and_permanent_ones_are_not(monkeypatch):
    waits = []
    monkeypatch.setattr(storage.time, "sleep", waits.append)
    calls = iter([OSError("AWS Error NETWORK_CONNECTION: connection reset"), OSError("timeout"), b"data"])

    def flaky():
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert storage._retried("s3://b/k", flaky) == b"data"
    assert waits == [storage.BACKOFF_S, 2 * storage.BACKOFF_S]  # doubling waits, then the third attempt worked

    waits.clear()
    attempts = []

    def denied():
        attempts.append(1)
        raise OSError("AWS Error ACCESS_DENIED during GetObject operation")

    with pytest.raises(storage.StorageError, match=r"s3://b/k: cannot read: access denied"):
        storage._retried("s3://b/k", denied)
    assert len(attempts) == 1 and waits == []  # no retry can mend a refusal

    def always_down():
        raise OSError("AWS Error SERVICE_UNAVAILABLE")

    with pytest.raises(storage.StorageError, match=rf"s3://b/k: cannot read after {storage.RETRIES} attempts"):
        storage._retried("s3://b/k", always_down)
    assert len(waits) == storage.RETRIES - 1


def test_object_keys_that_leave_the_images_prefix_are_refused():
    from pipeline.data.layout import image_file

    root = "s3://bucket/set/images"
    assert image_file(root, "a/b.jpg") == ("s3://bucket/set/images/a/b.jpg", True)
    for escaping in ("../annotations/train.json", "a/../../b.jpg", "/etc/passwd", ".."):
        assert image_file(root, escaping)[1] is False, escaping
