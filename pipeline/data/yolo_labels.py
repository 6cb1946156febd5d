"""Reading a YOLO-layout dataset: where its images and label files are, and every label line checked.

Two layouts are found:

- **Ultralytics** (what Ultralytics, Roboflow and CVAT export): a ``data.yaml`` with ``names`` (a list, or a
  mapping of class id to name), ``train`` and optionally ``val`` (each a folder, a text file listing images, or a
  list of those), relative to the YAML's ``path`` key or to the YAML's folder; a label file sits where its image
  is with the last ``images`` folder of the path replaced by ``labels`` and the suffix by ``.txt``
  (``images/train/a.jpg`` -> ``labels/train/a.txt``). As Ultralytics does, a split path starting ``../`` that does
  not exist is also tried without it (Roboflow writes ``../train/images`` beside its ``data.yaml``).
- **Darknet** (flat): images and their ``.txt`` label files in one folder tree, the class names one per line in
  ``classes.txt``, ``obj.names`` or another ``*.names`` file in the folder (or given).

A label line is ``class cx cy w h``: an integer class id the names know, then the box centre and size normalised
by the image's width and height, each in [0, 1], with a positive width and height. Every malformed line (wrong
field count, a field that is not a number, a coordinate outside [0, 1], an empty box, an unknown class id) and
every label file without its image is collected as ``file:line: what``, so that one run reports them all before
anything is written. An image without a label file, or with an empty one, is a background image. A box whose
centre lies near an edge may reach past it; it is clipped to the image, as the trainers that write them do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image

from pipeline.data.layout import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NAMES_FILES = ("classes.txt", "obj.names")
DARKNET_LISTS = ("train.txt", "valid.txt", "val.txt", "test.txt")  # Darknet's image lists, not label files
MAX_REPORTED = 50  # problems printed in the error; the count says how many more


@dataclass(frozen=True)
class YoloBox:
    class_id: int
    box: tuple[float, float, float, float]  # COCO x, y, w, h in the image's pixels


@dataclass(frozen=True)
class YoloImage:
    image_path: Path
    file_name: str  # the path the dataset directory gives it under images/ (posix)
    width: int
    height: int
    boxes: tuple[YoloBox, ...]


@dataclass(frozen=True)
class YoloSource:
    """What a YOLO folder holds: class names by id, and per split its images (``val`` may be absent)."""

    names: dict[int, str]
    splits: dict[str, list[tuple[Path, str]]]  # split -> (image path, file name under images/)
    label_dirs: tuple[Path, ...]  # folders whose .txt files must each belong to an image
    names_file: Path | None = None


def find_source(root: Path, names_file: Path | None = None) -> YoloSource:
    """The Ultralytics layout when ``root`` is a ``data.yaml`` or holds one, else the flat Darknet layout."""
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    yaml_path = (
        root
        if root.is_file()
        else next((root / n for n in ("data.yaml", "dataset.yaml") if (root / n).is_file()), None)
    )
    if yaml_path is not None:
        return _ultralytics_source(yaml_path)
    return _darknet_source(root, names_file)


def read_images(source: YoloSource) -> tuple[dict[str, list[YoloImage]], list[str]]:
    """Every split's images with their boxes in pixels, and every problem found (``file:line: what``)."""
    problems: list[str] = []
    splits: dict[str, list[YoloImage]] = {}
    labelled: set[Path] = set()
    for split, entries in source.splits.items():
        images = []
        for image_path, file_name in entries:
            label = label_path(image_path)
            labelled.add(label.resolve())
            size = _image_size(image_path, problems)
            if size is None:
                continue
            boxes = parse_label_file(label, *size, source.names, problems) if label.is_file() else ()
            images.append(YoloImage(image_path, file_name, *size, tuple(boxes)))
        splits[split] = images
    skipped = {source.names_file.resolve()} if source.names_file else set()
    for folder in source.label_dirs:
        for txt in sorted(folder.rglob("*.txt")):
            if txt.resolve() in labelled or txt.resolve() in skipped or txt.name in DARKNET_LISTS + NAMES_FILES:
                continue
            problems.append(f"{txt}: label file without an image (no {txt.stem}.jpg/.png/... where its image would be)")
    return splits, problems


def raise_problems(root: Path, problems: list[str]) -> None:
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DatasetError(f"{root}: {len(problems)} problem(s) in the YOLO labels, nothing written:\n  {shown}{more}")


def label_path(image_path: Path) -> Path:
    """The label file of an image: the last ``images`` folder of its path read as ``labels``, the suffix ``.txt``;
    beside the image when no folder is called ``images`` (the Darknet layout)."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, width: int, height: int, names: dict[int, str], problems: list[str]) -> list[YoloBox]:
    boxes = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read: {e}")
        return []
    for number, line in enumerate(lines, start=1):
        box = _parse_line(line, width, height, names, f"{path}:{number}", problems)
        if box is not None:
            boxes.append(box)
    return boxes


def _parse_line(line: str, width: int, height: int, names: dict[int, str], where: str, problems: list[str]):
    fields = line.split()
    if not fields:
        return None  # blank lines are allowed
    if len(fields) != 5:
        polygon = " (a segmentation polygon? only boxes are read)" if len(fields) > 5 and len(fields) % 2 == 1 else ""
        problems.append(f"{where}: {len(fields)} fields, expected 5 (class cx cy w h){polygon}: {line.strip()!r}")
        return None
    try:
        class_id, values = _integer(fields[0]), [float(f) for f in fields[1:]]
    except ValueError:
        problems.append(f"{where}: not numbers: {line.strip()!r}")
        return None
    if class_id not in names:
        problems.append(f"{where}: class id {fields[0]} unknown (the names give {_id_range(names)})")
        return None
    outside = [f"{key}={v:g}" for key, v in zip(("cx", "cy", "w", "h"), values, strict=True) if not 0 <= v <= 1]
    if outside:
        problems.append(f"{where}: {', '.join(outside)} outside [0, 1] (coordinates are normalised by the image size)")
        return None
    cx, cy, w, h = values
    if w <= 0 or h <= 0:
        problems.append(f"{where}: empty box (w={w:g}, h={h:g})")
        return None
    # continuous pixel coordinates, clipped to the image (a centre near an edge may put half a box outside it)
    x1, y1 = max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height)
    x2, y2 = min(float(width), (cx + w / 2) * width), min(float(height), (cy + h / 2) * height)
    return YoloBox(class_id, (x1, y1, x2 - x1, y2 - y1))


def _integer(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def _id_range(names: dict[int, str]) -> str:
    ids = sorted(names)
    return f"0-{ids[-1]}" if ids == list(range(len(ids))) else str(ids)


def _image_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as e:  # PIL raises many types for corrupt or unknown files
        problems.append(f"{path}: cannot read image: {e}")
        return None


def _ultralytics_source(yaml_path: Path) -> YoloSource:
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"{yaml_path}: cannot read: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_path}: expected a mapping with names, train and val")
    names = _names_from_yaml(data, yaml_path)
    root = Path(data["path"]) if data.get("path") else yaml_path.parent
    root = root if root.is_absolute() else yaml_path.parent / root
    if not data.get("train"):
        raise DatasetError(f"{yaml_path}: no 'train' entry (a folder or list of images)")
    splits, label_dirs = {}, []
    for split, key in (("train", "train"), ("val", "val")):
        if data.get(key):
            splits[split], dirs = _split_images(data[key], root, yaml_path, key)
            label_dirs += dirs
    return YoloSource(names, splits, tuple(label_dirs))


def _names_from_yaml(data: dict, yaml_path: Path) -> dict[int, str]:
    raw = data.get("names")
    if isinstance(raw, list):
        names = {i: str(n) for i, n in enumerate(raw)}
    elif isinstance(raw, dict) and all(isinstance(k, int) and k >= 0 for k in raw):
        names = {int(k): str(v) for k, v in raw.items()}
    else:
        raise DatasetError(f"{yaml_path}: 'names' must be a list of class names or a mapping of class id to name")
    if not names:
        raise DatasetError(f"{yaml_path}: 'names' is empty")
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{yaml_path}: nc is {data['nc']} but names lists {len(names)} classes")
    return names


def _split_images(entry, root: Path, yaml_path: Path, key: str) -> tuple[list[tuple[Path, str]], list[Path]]:
    images, label_dirs = [], []
    for item in entry if isinstance(entry, list) else [entry]:
        path = root / str(item)
        if not path.exists() and str(item).startswith("../"):
            path = root / str(item)[3:]
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            images += [(p, f"{key}/{p.relative_to(path).as_posix()}") for p in found]
            label_dirs.append(label_path(path / "x").parent)
        elif path.is_file():
            images += [(p, f"{key}/{p.name}") for p in _listed_images(path)]
        else:
            raise DatasetError(f"{yaml_path}: {key}: {path} does not exist")
    return images, [d for d in label_dirs if d.is_dir()]


def _listed_images(list_file: Path) -> list[Path]:
    """A text file of image paths, one per line: absolute, or relative to the list file's folder."""
    paths = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            path = Path(line.strip())
            path = path if path.is_absolute() else list_file.parent / path
            if not path.is_file():
                raise DatasetError(f"{list_file}:{number}: image {line.strip()!r} not found")
            paths.append(path)
    return paths


def _darknet_source(root: Path, names_file: Path | None) -> YoloSource:
    names_file = names_file or _find_names_file(root)
    lines = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()]
    names = {i: n for i, n in enumerate(n for n in lines if n)}
    if not names:
        raise DatasetError(f"{names_file}: no class names")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) and no data.yaml")
    entries = [(p, p.relative_to(root).as_posix()) for p in images]
    return YoloSource(names, {"all": entries}, (root,), names_file)


def _find_names_file(root: Path) -> Path:
    candidates = [root / n for n in NAMES_FILES if (root / n).is_file()] or sorted(root.glob("*.names"))
    if not candidates:
        raise DatasetError(
            f"{root}: no data.yaml and no class names file ({', '.join(NAMES_FILES)} or *.names); pass --names FILE"
        )
    return candidates[0]


def relative_label_name(file_name: str) -> str:
    """The label file's path for an image's file name (``train/a.jpg`` -> ``train/a.txt``)."""
    return Path(file_name).with_suffix(".txt").as_posix()
