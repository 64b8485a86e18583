"""COCO instances JSONs ("images", "annotations", "categories") read and checked.

A JSON that cannot be parsed or lacks the COCO structure (the three lists, image ids and
file names, category ids and names) raises ValueError naming the file. Categories sorted by
increasing id become the contiguous labels 1..K-1, after the background.

A run reads a JSON's summary (`summary`: its image file names and categories, for the
dataset's name and the config's checks) many times and its annotations only to prepare the
dataset and to score: the summary is kept per file (path, size, modification time), so a
COCO-size JSON is parsed once for it, not once per check and split.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

from jaxseg.data import folders, shapes

BACKGROUND = "background"


@dataclasses.dataclass(frozen=True)
class CocoJson:
    """The parts of a COCO instances JSON this builder reads.

    images: the image dicts, in file order (each has an int "id" and a str "file_name").
    annotations: the raw annotation entries, in file order (checked while building).
    categories: the category dicts, by increasing id.
    labels: category id -> contiguous label 1..K-1.
    class_names: K names, "background" first, then the category names by id.
    """

    images: list
    annotations: list
    categories: list
    labels: dict
    class_names: tuple


def _json_list(data: dict, key: str, path: str) -> list:
    if key not in data:
        raise ValueError(f"{path}: no {key!r} list; not a COCO instances JSON")
    if not isinstance(data[key], list):
        raise ValueError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data[key]


def _check_entries(entries: list, fields: dict, key: str, path: str) -> None:
    """ValueError unless every entry is a dict with `fields` (name -> type) and unique ids."""
    seen = set()
    for position, entry in enumerate(entries):
        for field, kind in fields.items():
            value = entry.get(field) if isinstance(entry, dict) else None
            valid = shapes.is_integer(value) if kind is int else isinstance(value, kind)
            if not valid:
                raise ValueError(
                    f"{path}: {key}[{position}] needs a {kind.__name__} {field!r}, got {entry!r}"
                )
        if entry["id"] in seen:
            raise ValueError(f"{path}: {key} id {entry['id']} is used twice")
        seen.add(entry["id"])


def read_coco_json(path: str) -> CocoJson:
    """Parses and checks the structure of a COCO instances JSON.

    Raises:
      ValueError: the file is not JSON or not COCO-shaped (message names the file).
    """
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    images = _json_list(data, "images", path)
    annotations = _json_list(data, "annotations", path)
    categories = _json_list(data, "categories", path)
    _check_entries(images, {"id": int, "file_name": str}, "images", path)
    _check_entries(categories, {"id": int, "name": str}, "categories", path)
    if not categories:
        raise ValueError(f"{path}: 'categories' is empty")
    if len(categories) >= folders.MAX_LABEL:
        raise ValueError(
            f"{path}: {len(categories)} categories; at most {folders.MAX_LABEL - 1} fit"
        )
    categories = sorted(categories, key=lambda category: category["id"])
    names = [category["name"] for category in categories]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: category names used twice: {duplicates}")
    return CocoJson(
        images=images,
        annotations=annotations,
        categories=categories,
        labels={category["id"]: label for label, category in enumerate(categories, 1)},
        class_names=(BACKGROUND, *names),
    )


@dataclasses.dataclass(frozen=True)
class JsonSummary:
    """What checks and dataset names read of a COCO instances JSON.

    file_names: the images' file names, in file order.
    categories: the category dicts, by increasing id.
    class_names: K names, "background" first, then the category names by id.
    """

    file_names: tuple[str, ...]
    categories: tuple
    class_names: tuple


@functools.lru_cache(maxsize=4)
def _summary(path: str, size: int, modified_ns: int) -> JsonSummary:
    del size, modified_ns  # the cache key: a rewritten file is read again
    coco = read_coco_json(path)
    return JsonSummary(
        file_names=tuple(entry["file_name"] for entry in coco.images),
        categories=tuple(coco.categories),
        class_names=coco.class_names,
    )


def summary(path: str) -> JsonSummary:
    """The `JsonSummary` of the COCO instances JSON at `path`, parsed once per version of
    the file (ValueError as `read_coco_json`)."""
    status = os.stat(path)
    return _summary(os.path.abspath(path), status.st_size, status.st_mtime_ns)


def read_class_names(path: str) -> tuple[str, ...]:
    """("background", category names by increasing id) of a COCO instances JSON."""
    return summary(path).class_names


def check_ignore_label(ignore_label: int, class_names, path: str) -> None:
    """ValueError if `ignore_label` is one of the class ids 0..K-1 of the JSON at `path`."""
    if ignore_label < len(class_names):
        raise ValueError(
            f"ignore_label={ignore_label!r} is a class id: {path} has {len(class_names)} "
            f"classes (ids 0..{len(class_names) - 1})"
        )


def annotations_by_image(coco: CocoJson, report: folders.SkipReport) -> dict[int, list]:
    """{image id: its annotations of a known category, in file order}; `report` (a
    `folders.SkipReport`) is told about malformed ones and those of unknown images or
    categories."""
    by_image = {image["id"]: [] for image in coco.images}
    for position, annotation in enumerate(coco.annotations):
        if not isinstance(annotation, dict):
            report.add("malformed annotations", f"annotations[{position}]")
            continue
        name = f"annotation {annotation.get('id', f'at position {position}')}"
        if annotation.get("image_id") not in by_image:
            report.add(
                "annotations of unknown images", f"{name}: image_id {annotation.get('image_id')!r}"
            )
        elif annotation.get("category_id") not in coco.labels:
            report.add(
                "annotations of unknown categories",
                f"{name}: category_id {annotation.get('category_id')!r}",
            )
        else:
            by_image[annotation["image_id"]].append(annotation)
    return by_image
