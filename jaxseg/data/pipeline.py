"""Decoded random-access splits of the dataset a `config.data` section describes.

`load_split` opens (building if missing) one split of a registered dataset kind and returns
a `DecodedSource`; `jaxseg.data.batching` turns a source into grain streams of fixed-shape
numpy batches, made in worker processes.

Dataset kinds (`data_config.name`) register themselves in `jaxseg/data/sources/`, one file
each, which says which `data_config` fields that kind reads. Fields every kind has:
  name                a registered dataset kind (`registry.DATASETS.names()`).
  data_dir            TFDS data directory; None = TFDS default (~/tensorflow_datasets).
  image_size          image side S in pixels (square images).
  resize_shorter_side optional, default None: None fits every image so that its longer
                      side is resize_max_longer_side; an int s resizes it as detectron2's
                      ResizeShortestEdge does (shorter side s, unless the longer side would
                      then exceed resize_max_longer_side); see `jaxseg.data.geometry`. It is
                      the test-time size (evaluation, prediction, the stored datasets).
  resize_max_longer_side   optional, default None (= image_size): the longer side's limit,
                      at most image_size.
  train_shorter_sides optional, default None (= resize_shorter_side): training only, a
                      tuple of shorter sides, each at most resize_shorter_side, one drawn
                      per example (`jaxseg.data.augment`); not with scale_jitter.
  max_instances       instance slots per example in batches (read by the caller, which
                      passes it to `train_batches` / `eval_batches`).
  cache_decoded       optional, default True: keep decoded examples in memory after their
                      first read. Costs 5·S·S bytes per example plus its boxes (82 KB at
                      128×128, about 165 MB for 2,000 training images); the folder datasets
                      keep their masks RLE-compressed. COCO-format folders, whose records
                      keep the source files, fit every example when read and keep nothing.
  flip                mirror training examples left-right with probability 1/2 (read by the
                      caller, which passes it to `train_batches`).
  scale_jitter        optional, default None (off): (min_scale, max_scale), training only;
                      see `jaxseg.data.augment` (padding takes `ignore_label`, default 255).
  color_jitter        optional, default 0.0 (off): colour jitter strength in [0, 1],
                      training only; see `jaxseg.data.augment`.
  num_workers         optional, default None: processes that read, augment and batch the
                      examples (`jaxseg.data.batching`); None = half the host's cores (at
                      least 1, at most 16), 0 = in the training thread (for debugging).
                      The batches are the same whatever the number.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from jaxseg import registry
from jaxseg.data import augment, coco_records, folders, geometry, shapes
from jaxseg.data.sources import shapes as shapes_source

def default_data_config() -> ml_collections.ConfigDict:
    """The default `config.data` for the shapes dataset (see the module docstring)."""
    defaults = shapes.shapes_config()
    return ml_collections.ConfigDict(
        {
            "name": "shapes",
            "data_dir": None,
            "image_size": defaults.image_size,
            "num_train": defaults.num_train,
            "num_validation": defaults.num_validation,
            "num_test": defaults.num_test,
            "max_instances": 16,
            **{
                field: getattr(defaults, attr)
                for field, attr in shapes_source.GENERATION_FIELDS.items()
            },
            "cache_decoded": True,
        }
    )


def augmentation_from_data_config(data_config) -> augment.Augmentation:
    """The validated training `Augmentation` that `data_config` describes (ValueError if invalid).

    Error messages start with the name of the offending `data_config` field.
    """
    return augment.augmentation(
        scale_jitter=data_config.get("scale_jitter"),
        color_jitter=data_config.get("color_jitter", 0.0),
        ignore_label=data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL),
        shorter_sides=data_config.get("train_shorter_sides"),
        fit=geometry.fit_of(data_config),
    )


class DecodedSource:
    """Random access to the decoded examples of one split.

    `source[i]` is a dict: image uint8 [S, S, 3], semantic int32 [S, S] (class ids, and the
    ignore label in the folder datasets' padding), masks uint8 [n, S, S] (0/1; shapes: the
    visible part of each instance; folder datasets: each annotation's mask, which may
    overlap others), boxes float32 [n, 4] (x1, y1, x2, y2, exclusive ends), labels int32
    [n] (1..K-1); n may be 0.

    `image_id(i)` is the example's id in its dataset (folder datasets: the source's own id;
    others: i), `placement(i)` where the source image lies on the S x S canvas
    (`geometry.Placement`; the whole canvas where the records keep no source size).
    """

    def __init__(
        self,
        records,
        *,
        cache: bool = True,
        fit: geometry.Fit | None = None,
        ignore_label: int = folders.DEFAULT_IGNORE_LABEL,
        split: str | None = None,
    ):
        """`records`: random access to records with the shapes or folder features (a TFDS
        data source, or a `catalog.ConvertedSource` giving the folder features), or records
        that keep the source files (`coco_records`); `fit`: how the records were or are
        fitted to their canvas (None: the longer side to the canvas); `ignore_label`: the
        semantic label of the padding where examples are fitted when read; `split`: the
        split's name (`split`), for the dataset's evaluation."""
        self.split = split
        self._records = records
        self._fit = fit
        self._ignore_label = int(ignore_label)
        self._cache = [None] * len(records) if cache else None
        self._keeps_source = None  # known at the first read
        # Per index of records that keep the source: (image id, placement), read once.
        self._geometry: dict[int, tuple[int, geometry.Placement]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __getstate__(self) -> dict:
        # A worker process (pickled copy) starts with an empty cache of its own.
        state = dict(self.__dict__)
        if state["_cache"] is not None:
            state["_cache"] = [None] * len(state["_records"])
        state["_geometry"] = {}
        return state

    @property
    def keeps_source(self) -> bool:
        """Whether the records keep the source files, so `fitted` fits them at any size (they
        are then fitted at every read: nothing decoded is cached)."""
        if self._keeps_source is None:
            self._keeps_source = len(self._records) > 0 and "image_file" in self._records[0]
        return self._keeps_source

    @property
    def records(self):
        """The records it decodes (a dataset kind's evaluation may read them itself)."""
        return self._records

    def _compact(self, index: int) -> tuple:
        if self._cache is not None and self._cache[index] is not None:
            return self._cache[index]
        record = self._records[index]
        # Shapes store an id map [S, S]; the folder datasets RLE bytes [n] (may overlap).
        if "instance_ids" in record:
            instances = record["instance_ids"][..., 0]
        else:
            instances = np.asarray(record["mask_rles"], dtype=np.object_)
        size = record["semantic"].shape[0]
        compact = (
            record["image"],
            record["semantic"][..., 0],
            instances,
            np.asarray(record["boxes"], np.float32).reshape(-1, 4),
            np.asarray(record["labels"], np.int32).reshape(-1),
            int(record.get("image_id", index)),
            self._placement(record, size),
        )
        if self._cache is not None:
            self._cache[index] = compact
        return compact

    def _placement(self, record, size: int) -> geometry.Placement:
        if "height" not in record:
            return geometry.Placement(size, size, size, size)
        fit = geometry.Fit(size) if self._fit is None else self._fit
        return geometry.placement((int(record["height"]), int(record["width"])), fit)

    def _checked(self, index: int) -> int:
        if not shapes.is_integer(index) or not 0 <= index < len(self):
            raise IndexError(f"index {index!r} out of range for a source of {len(self)}")
        return int(index)

    def _checked_compact(self, index: int) -> tuple:
        return self._compact(self._checked(index))

    def _source_fit(self) -> geometry.Fit:
        if self._fit is None:
            raise ValueError("records that keep the source files need the fit to read them at")
        return self._fit

    def _source_geometry(self, index: int) -> tuple[int, geometry.Placement]:
        """(image id, placement) of example `index` of records that keep the source: the
        record is read for them once (evaluation asks for both of every example)."""
        index = self._checked(index)
        if index not in self._geometry:
            record = self._records[index]
            self._geometry[index] = (
                int(record["image_id"]), coco_records.record_placement(record, self._source_fit())
            )
        return self._geometry[index]

    def image_id(self, index: int) -> int:
        """The dataset's id of example `index` (see the class docstring)."""
        if self.keeps_source:
            return self._source_geometry(index)[0]
        return self._checked_compact(index)[5]

    def placement(self, index: int) -> geometry.Placement:
        """Where example `index`'s source image lies on the canvas."""
        if self.keeps_source:
            return self._source_geometry(index)[1]
        return self._checked_compact(index)[6]

    def fitted(self, index: int, fit: geometry.Fit) -> dict[str, np.ndarray]:
        """Example `index` as `source[index]` gives it, fitted from the source pixels at
        `fit` (a training scale) instead of the dataset's fit; only where `keeps_source`."""
        if not self.keeps_source:
            raise ValueError("these records keep only their canvas; resample it instead")
        record = self._records[self._checked(index)]
        return coco_records.fitted_example(record, fit, self._ignore_label)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if self.keeps_source:
            return self.fitted(index, self._source_fit())
        image, semantic, instances, boxes, labels, _, _ = self._checked_compact(index)
        if instances.ndim == 2:
            numbers = np.arange(1, len(labels) + 1, dtype=np.uint8)
            masks = (instances[None] == numbers[:, None, None]).astype(np.uint8)
        else:
            masks = folders.decode_masks(instances, *semantic.shape)
        return {
            "image": image,
            "semantic": semantic.astype(np.int32),
            "masks": masks,
            "boxes": boxes,
            "labels": labels,
        }


def load_split(data_config, split: str, *, build: bool = True) -> DecodedSource:
    """Opens one split of the dataset `data_config` describes, building it if missing.

    Args:
      data_config: see the module docstring.
      split: "train", "validation" or (shapes only) "test".
      build: build the data if missing. With several processes sharing a data
        directory pass `build=(process_index == 0)`; the others wait for it ("tfds":
        only this process may download, see `catalog.prepare_catalog`).

    Returns:
      A `DecodedSource` (`len(source)`, `source[i]` -> dict of numpy arrays).

    Raises:
      ValueError: an unknown dataset or split, an invalid `data_config`, unusable data.
    """
    dataset = registry.DATASETS.get(data_config.name)
    splits = dataset.splits
    if split not in splits:
        raise ValueError(f"unknown split {split!r} of {data_config.name}; expected one of {splits}")
    records = dataset.target(data_config, build).as_data_source(split=split)
    return DecodedSource(
        records,
        cache=bool(data_config.get("cache_decoded", True)),
        fit=geometry.fit_of(data_config),
        ignore_label=data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL),
        split=split,
    )
