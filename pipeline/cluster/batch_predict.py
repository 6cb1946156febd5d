"""Batch prediction of a registered model over a folder or bucket prefix of images, with Ray Data.

The images (sorted by name, id = position + 1) are cut into shards of `shard_size`. Ray Data runs the shards
through a fixed pool of `num_workers` actors (`map_batches`, `ActorPoolStrategy`), each holding the model once;
an actor writes one COCO-results file per shard (`OUT/shards/shard-00012.json`, whole or not at all), and the
driver merges them into `OUT/detections.json` and `OUT/images.json`. A rerun skips the shards already written,
so an interrupted job resumes where it stopped. An image that cannot be decoded is reported by name (in its
shard and in `OUT/failed.json`) and skipped. OUT and the input may be local folders or bucket prefixes; on a
cluster the tracking store must be a server every node reaches.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cluster.storage import TRACKING_HINT, is_local_tracking_store, may_span_nodes
from pipeline.data import storage
from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class BatchJob:
    """One batch prediction: model version (resolved once, by the driver), input, output and the actor pool."""

    tracking_uri: str
    model_ref: str  # NAME/VERSION: an alias is resolved before the job starts, so every actor runs one version
    source: str  # a folder or bucket prefix of images
    out: str  # a folder or bucket prefix
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    backend: str | None = None
    batch_size: int = 8
    shard_size: int = 64
    score_threshold: float = 0.0
    draw: bool = False
    slice: str = "auto"  # `pipeline.config.tiling.slice_setting`: the version's windows, off, or PX
    max_image_pixels: int = (
        DEFAULT_MAX_IMAGE_PIXELS  # larger images are listed as failed, from their header (decode.py)
    )


@dataclass(frozen=True)
class BatchSummary:
    images: int
    shards: int
    shards_run: int  # the others were already written
    detections: int
    failed: list[dict[str, str]]  # {"file_name", "error"} of every image that could not be read or decoded
    seconds: float
    images_per_s: float  # of this run's shards, model loading included
    steady_images_per_s: float  # after the first shard: the actors hold their model


def list_images(source: str, exclude: str | None = None) -> list[str]:
    """Image files under `source` (recursive), as names relative to it, sorted, leaving out anything under
    `exclude` (an output folder inside the input: its drawn images are no input); an empty or missing source raises
    `DatasetError` naming it."""
    if storage.is_remote(source):
        names = list(storage.list_files(source))
    else:
        root = storage.local_path(source)
        if not root.is_dir():
            raise storage.DatasetError(f"{source}: not a directory of images")
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    skip = exclude.rstrip("/").removeprefix(source.rstrip("/") + "/") + "/" if exclude else None
    names = sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES) and not (skip and n.startswith(skip)))
    if not names:
        raise storage.DatasetError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return names


def shard_file(out: str, index: int) -> storage.Location:
    return storage.join(out, "shards", f"shard-{index:05d}.json")


def plan(names: list[str], shard_size: int) -> list[dict[str, Any]]:
    """Ray Data rows, one per shard: index, first image id and the names (JSON: a list column of any length)."""
    return [
        {"shard": k, "first_id": start + 1, "names": json.dumps(names[start : start + shard_size])}
        for k, start in enumerate(range(0, len(names), shard_size))
    ]


def check_manifest(job: BatchJob, names: list[str]) -> None:
    """Write OUT/manifest.json on the first run; on a rerun, refuse an OUT written for other images, another
    model version or another shard size (its shards would not fit this job's)."""
    manifest = {
        "model": job.model_ref,
        "source": job.source,
        "images": len(names),
        "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "shard_size": job.shard_size,
        "score_threshold": job.score_threshold,
        "backend": job.backend or "auto",
    }
    path = storage.join(job.out, MANIFEST_FILE)
    if storage.is_file(path):
        try:
            previous = json.loads(storage.read_text(path))
        except ValueError as e:
            raise storage.DatasetError(
                f"{path}: not a readable manifest ({e}); delete {job.out} to start over"
            ) from None
        changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
        if changed:
            raise storage.DatasetError(
                f"{path}: {job.out} holds predictions of another job (differs in {', '.join(changed)}: "
                f"{', '.join(f'{k} {previous.get(k)!r} -> {manifest[k]!r}' for k in changed)}); "
                "use another --out, or delete it to start over"
            )
        return
    storage.write_bytes(path, json.dumps(manifest, indent=1).encode())


class ShardPredictor:
    """A Ray Data actor: loads the model once, then predicts and writes whole shards."""

    def __init__(self, job: BatchJob):
        from pipeline.registry.registry import load_detector

        threads = max(1, int(job.cpus_per_worker))
        self.job = job
        self.detector, _ = load_detector(
            job.tracking_uri,
            job.model_ref,
            job.batch_size,
            job.backend,
            threads=threads,
            use_gpu=job.use_gpu,
            slice=job.slice,
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        if len(batch["shard"]) == 0:
            return {key: [] for key in ("shard", "images", "failed", "detections", "backend")}
        rows = [
            self.predict_shard(int(shard), int(first_id), json.loads(names))
            for shard, first_id, names in zip(batch["shard"], batch["first_id"], batch["names"], strict=True)
        ]
        return {key: [row[key] for row in rows] for key in rows[0]}

    def predict_shard(self, shard: int, first_id: int, names: list[str]) -> dict[str, Any]:
        from pipeline.registry.errors import ImageInputError
        from pipeline.registry.predict import decode_image, to_coco_results

        start = time.perf_counter()
        arrays, images, failed = [], [], []
        for offset, name in enumerate(names):
            location = storage.join(self.job.source, name)
            try:
                array = decode_image(storage.read_bytes(location), max_pixels=self.job.max_image_pixels)
            except (ImageInputError, storage.ObjectNotFound, FileNotFoundError) as e:  # this image, for good
                failed.append({"file_name": name, "error": str(e).removeprefix("image 0: ")})
                continue
            # any other storage error fails the shard: it stays unwritten, and a rerun reads its images again
            arrays.append(array)
            images.append(
                {"id": first_id + offset, "file_name": name, "width": array.shape[1], "height": array.shape[0]}
            )
        detections = self.detector.to_records(self.detector.predict_arrays(arrays, [im["id"] for im in images]))
        detections = [d for d in detections if d["score"] >= self.job.score_threshold]
        if self.job.draw:
            self.draw(arrays, images, detections)
        record = {
            "shard": shard,
            "images": images,
            "failed": failed,
            "detections": to_coco_results(detections),
            "backend": self.detector.backend,
            "seconds": time.perf_counter() - start,
        }
        storage.write_bytes(shard_file(self.job.out, shard), json.dumps(record).encode())
        return {
            "shard": shard,
            "images": len(images),
            "failed": json.dumps(failed),
            "detections": len(detections),
            "backend": self.detector.backend,
        }

    def draw(self, arrays, images, detections) -> None:
        import io

        from pipeline.registry.predict import render_detections

        for array, image in zip(arrays, images, strict=True):
            buffer = io.BytesIO()
            render_detections(array, [d for d in detections if d["image_id"] == image["id"]]).save(buffer, "PNG")
            name = f"{image['id']:06d}_{Path(image['file_name']).stem}.png"
            storage.write_bytes(storage.join(self.job.out, "drawn", name), buffer.getvalue())


def check_reachable(job: BatchJob) -> None:
    """On a cluster that may span nodes, actors on other nodes must reach the input, the output and the tracking
    store: local paths and a SQLite store are refused, naming them (Ray must be initialised)."""

    if not may_span_nodes():
        return
    local = [
        f"{what} {where}" for what, where in (("input", job.source), ("--out", job.out)) if not storage.is_remote(where)
    ]
    if is_local_tracking_store(job.tracking_uri):
        local.append(f"tracking store {job.tracking_uri} (use {TRACKING_HINT})")
    if local:
        raise storage.DatasetError(
            f"this Ray cluster spans several nodes, whose actors cannot read this machine's disk: {'; '.join(local)}. "
            "Use bucket prefixes (s3://..., gs://...)"
        )


def run_batch_prediction(job: BatchJob, log: Callable[[str], None] = print) -> BatchSummary:
    """Predict every image of `job.source` not yet in a written shard, then merge all shards; see the module doc."""
    check_reachable(job)
    names = list_images(job.source, exclude=job.out)
    check_manifest(job, names)
    shards = plan(names, job.shard_size)
    todo = [row for row in shards if not storage.is_file(shard_file(job.out, row["shard"]))]
    log(
        f"{len(names)} images in {len(shards)} shards of {job.shard_size}: {len(shards) - len(todo)} already "
        f"written, {len(todo)} to predict with {job.num_workers} worker(s)"
    )
    start = time.perf_counter()
    done_images, steady = _predict_shards(job, todo, log) if todo else (0, 0.0)
    seconds = time.perf_counter() - start
    merged = merge_shards(job.out, len(shards))
    return BatchSummary(
        images=len(merged["images"]),
        shards=len(shards),
        shards_run=len(todo),
        detections=len(merged["detections"]),
        failed=merged["failed"],
        seconds=seconds,
        images_per_s=done_images / seconds if todo else 0.0,
        steady_images_per_s=steady,
    )


def _predict_shards(job: BatchJob, todo: list[dict[str, Any]], log: Callable[[str], None]) -> tuple[int, float]:
    """Run the shards through the actor pool, one progress line per shard written; (images, img/s after the
    first shard: with one worker, once its model is loaded; with more, other actors' first shards still include
    their loading; 0.0 with a single shard)."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one line per shard instead
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its start/finish lines say nothing the shards do not
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
    results = dataset.map_batches(
        ShardPredictor,
        fn_constructor_kwargs={"job": job},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(job.num_workers, len(todo))),  # no idle model copies
        num_cpus=job.cpus_per_worker,
        num_gpus=1 if job.use_gpu else 0,
    )
    start, done_images, first = time.perf_counter(), 0, None
    for k, row in enumerate(results.iter_rows(), start=1):
        done_images += row["images"]
        now = time.perf_counter()
        first = first or (now, done_images)
        rate = done_images / (now - start)
        failed = json.loads(row["failed"])
        bad = f", {len(failed)} unreadable: {', '.join(f['file_name'] for f in failed)}" if failed else ""
        log(
            f"shard {row['shard']} ({k}/{len(todo)}): {row['images']} images, {row['detections']} detections"
            f"{bad} [{row['backend']}; {rate:.1f} img/s]"
        )
    steady = (done_images - first[1]) / (now - first[0]) if now > first[0] else 0.0
    return done_images, steady


def merge_shards(out: str, num_shards: int) -> dict[str, list]:
    """Read every shard (in order) and write OUT/detections.json, OUT/images.json and OUT/failed.json."""
    merged: dict[str, list] = {"detections": [], "images": [], "failed": []}
    for record in _read_shards(out, num_shards):
        for key in merged:
            merged[key].extend(record[key])
    for key, value in merged.items():
        storage.write_bytes(storage.join(out, f"{key}.json"), json.dumps(value, indent=1).encode())
    return merged


def _read_shards(out: str, num_shards: int) -> Iterator[dict[str, Any]]:
    for index in range(num_shards):
        yield json.loads(storage.read_text(shard_file(out, index)))
