"""A dataset split's identity: the digest that says whether two evaluations (or two runs) saw the same data.

It is the registry's comparability key (a champion only moves between evaluations on the same fingerprint) and
each run's MLflow dataset input digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.data import storage
from pipeline.data.layout import DatasetError, annotation_path, images_dir


def dataset_fingerprint(dataset_dir: storage.Location, split: str = "val") -> str:
    """sha256 (first 16 hex digits) of the split's annotations (canonical JSON) and its image file names + sizes.

    Two evaluations are only comparable when their fingerprints match; editing a box, a category or an image
    file (size change) changes it, reformatting the JSON does not. The same files give the same fingerprint on
    local disk and in a bucket (sizes of objects come from a listing).
    """
    path = annotation_path(dataset_dir, split)
    try:
        data = json.loads(storage.read_text(path))
        file_names = sorted(str(image["file_name"]) for image in data["images"])
    except storage.StorageError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: cannot read annotations for the dataset fingerprint: {e}") from None
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    sizes = _image_sizes(images_dir(dataset_dir), file_names)
    for name in file_names:
        if name not in sizes:
            file = storage.join(images_dir(dataset_dir), name)
            raise DatasetError(f"{path}: image file {file} listed in the annotations does not exist")
        digest.update(f"\n{name}\t{sizes[name]}".encode())
    return digest.hexdigest()[:16]


def _image_sizes(root: storage.Location, file_names: list[str]) -> dict[str, int]:
    """file name -> bytes, for the files that exist."""
    if storage.is_remote(root):
        return {name: size for name, (size, _) in storage.list_files(root).items()}
    files = ((name, Path(root) / name) for name in file_names)
    return {name: file.stat().st_size for name, file in files if file.is_file()}
