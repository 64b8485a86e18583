"""Instance evaluation in the dataset's own frame (jaxseg.evaluation.frames).

A COCO-format folder written here has images of several sizes (portrait and landscape, none
square), category ids that are not contiguous (3, 7, 12) and a crowd annotation. Detections
are placed by hand on the model's canvases, as `MaskRCNN.detect(..., paste=False)` gives
them, and scored through the task's evaluation; pycocotools, run here on the written
`coco_results.json` against the original JSON, is the reference.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import flagsaver
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from PIL import Image

from jaxseg import evaluate, train, trained_run
from jaxseg.config_files import load_config_file
from jaxseg.data import batching, geometry, pipeline
from jaxseg.evaluation import frames
from jaxseg.tasks.instance import COCO_METRICS, InstanceSegmentation
from tests.test_train_mask_rcnn import tiny_mask_rcnn_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CANVAS = 64
MASK = 28
SLOTS = 6
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]
CLASS_NAMES = ("background", "cat", "dog", "bird")
LABEL_OF = {3: 1, 7: 2, 12: 3}
# file name -> (height, width, [(category id, x0, y0, x1, y1), ...]); the boxes are integer
# rectangles in the image's pixels with areas from 24 (small) through 11,000 (large).
IMAGES = {
    "a.png": (48, 80, [(3, 4, 6, 40, 30), (7, 50, 10, 56, 14)]),
    "b.png": (90, 60, [(12, 10, 20, 50, 85)]),
    "c.png": (40, 100, [(3, 2, 2, 98, 38), (12, 60, 5, 66, 9)]),
    "d.png": (70, 50, [(7, 5, 5, 45, 65)]),
    "e.png": (150, 200, [(3, 20, 30, 130, 130), (7, 140, 10, 190, 60)]),
    "f.png": (64, 36, [(12, 3, 4, 33, 60)]),
    "g.png": (50, 90, [(7, 10, 10, 80, 45), (3, 1, 40, 9, 48)]),
    "h.png": (80, 45, []),
}
# A crowd region of category 7 on image e.png: (x0, y0, x1, y1).
CROWD = ("e.png", 7, (150, 100, 195, 145))


def _polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _crowd_rle(height, width, box):
    """Uncompressed RLE (column-major runs, zeros first) of a rectangle."""
    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    flat = mask.T.ravel()
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": [height, width], "counts": runs if flat[0] == 0 else [0, *runs]}


def write_folder(root) -> tuple[str, str]:
    """Writes images/ and instances.json (image ids 101.., annotation ids 1..) under root."""
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (name, (height, width, objects)) in enumerate(IMAGES.items(), 101):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(images_dir, name))
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for category, x0, y0, x1, y1 in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "segmentation": _polygon(x0, y0, x1, y1), "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
            })
        if name == CROWD[0]:
            x0, y0, x1, y1 = CROWD[2]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": CROWD[1],
                "segmentation": _crowd_rle(height, width, CROWD[2]), "iscrowd": 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
            })
    path = os.path.join(root, "instances.json")
    with open(path, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, file)
    return path, images_dir


def folder_config(root):
    """The tiny Mask R-CNN test config on the folder under `root` (64x64 canvases)."""
    annotations, images = write_folder(root)
    config = tiny_mask_rcnn_config(os.path.join(root, "unused"))
    config.data = load_config_file(os.path.join(CONFIG_DIR, "mask_rcnn_folder.py")).data
    config.data.update({
        "data_dir": os.path.join(root, "tfds"), "annotations": annotations, "images": images,
        "num_classes": len(CLASS_NAMES), "class_names": CLASS_NAMES, "image_size": CANVAS,
        "max_instances": 4, "validation_fraction": 0.5,
    })
    config.batch_size = config.eval_batch_size = 2
    return config


# The split-file layout: the validation JSON lists f, g, h and MISSING, an image whose file
# is absent (it still counts in the validation AP: its object is missed); train the rest.
VALIDATION_NAMES = ("f.png", "g.png", "h.png")
MISSING = {"id": 120, "file_name": "missing.png", "height": 40, "width": 60}
MISSING_OBJECT = (3, 5, 5, 35, 30)


def split_folder_config(root):
    """`folder_config` with a JSON per split (module comment above)."""
    config = folder_config(root)
    with open(config.data.annotations) as file:
        everything = json.load(file)
    in_validation = {e["id"] for e in everything["images"] if e["file_name"] in VALIDATION_NAMES}
    paths = {}
    for split, wanted in (("train", False), ("validation", True)):
        images = [e for e in everything["images"] if (e["id"] in in_validation) == wanted]
        annotations = [a for a in everything["annotations"]
                       if (a["image_id"] in in_validation) == wanted]
        if wanted:
            category, x0, y0, x1, y1 = MISSING_OBJECT
            images.append(MISSING)
            annotations.append({
                "id": 1000, "image_id": MISSING["id"], "category_id": category,
                "segmentation": _polygon(x0, y0, x1, y1), "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
            })
        paths[split] = os.path.join(root, f"instances_{split}.json")
        with open(paths[split], "w") as file:
            json.dump({**everything, "images": images, "annotations": annotations}, file)
    config.data.annotations = paths["train"]
    config.data.validation_annotations = paths["validation"]
    config.data.validation_images = config.data.images
    return config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = folder_config(str(tmp_path_factory.mktemp("folder")))
    sources = {split: pipeline.load_split(config.data, split) for split in ("train", "validation")}
    return config, sources


def _objects_of(image_id: int):
    """[(category id, (x0, y0, x1, y1)), ...] of the JSON's image `image_id`, the crowd
    region first (it gets the highest score)."""
    name, (_, _, objects) = list(IMAGES.items())[image_id - 101]
    found = [(category, box) for category, *box in objects]
    if name == CROWD[0]:
        found.insert(0, (CROWD[1], list(CROWD[2])))
    return found


def _hand_placed_outputs(source, indices, rng=None):
    """Model outputs (paste=False) for examples `indices`: one detection per object (and on
    the crowd region), each box taken from the JSON into canvas pixels, masks all ones.
    With `rng`: boxes jittered by up to 3 image pixels, random scores, a false positive."""
    rows = len(indices)
    outputs = {
        "boxes": np.zeros((rows, SLOTS, 4), np.float32),
        "scores": np.zeros((rows, SLOTS), np.float32),
        "classes": np.zeros((rows, SLOTS), np.int32),
        "mask_probabilities": np.ones((rows, SLOTS, MASK, MASK), np.float32),
        "valid": np.zeros((rows, SLOTS), bool),
        "index": np.asarray(indices, np.int32),
    }
    for row, index in enumerate(indices):
        placement = source.placement(index)
        scale = np.array([placement.valid_width / placement.width,
                          placement.valid_height / placement.height] * 2)
        objects = _objects_of(source.image_id(index))
        if rng is not None:
            objects.append((12, [1, 1, 20, 20]))
        for slot, (category, box) in enumerate(objects):
            box = np.asarray(box, np.float64)
            score = 0.9 - 0.1 * slot
            if rng is not None:
                box = box + rng.uniform(-3, 3, 4)
                score = rng.uniform(0.1, 1.0)
            outputs["boxes"][row, slot] = box * scale
            outputs["scores"][row, slot] = score
            outputs["classes"][row, slot] = LABEL_OF[category]
            outputs["valid"][row, slot] = True
    return outputs


def _evaluate(task, source, rng=None, results_dir=None):
    evaluation = task.new_evaluation(source)
    batch = {"image": np.zeros((2, CANVAS, CANVAS, 3), np.float32)}
    for start in range(0, len(source), 2):
        indices = list(range(start, min(start + 2, len(source))))
        outputs = _hand_placed_outputs(source, indices, rng)
        evaluation.add({k: jnp.asarray(v) for k, v in outputs.items()}, batch)
    metrics, predictions = evaluation.result()
    if results_dir is not None:
        evaluation.write_results(results_dir)
    return metrics, predictions


def pycocotools_aps(annotations_path: str, results_dir: str) -> dict[str, float]:
    """The 12 APs pycocotools computes from `results_dir`'s coco_results.json and
    image_ids.json against the original JSON (masks scored without their bbox, boxes
    without their segmentation); NaN where pycocotools gives -1."""
    with open(os.path.join(results_dir, "coco_results.json")) as file:
        results = json.load(file)
    with open(os.path.join(results_dir, "image_ids.json")) as file:
        image_ids = json.load(file)
    ground_truth = COCO(annotations_path)
    aps = {}
    for kind, iou_type, dropped in (("box", "bbox", "segmentation"), ("mask", "segm", "bbox")):
        kept = [{k: v for k, v in r.items() if k != dropped} for r in results]
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(kept), iou_type)
        evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        for suffix, value in zip(("", "50", "75", "_small", "_medium", "_large"), evaluation.stats):
            aps[f"{kind}_ap{suffix}"] = float("nan") if value == -1 else float(value)
    return aps


def test_placements_and_ids_come_from_the_source_images(folder):
    config, sources = folder
    seen = {}
    for source in sources.values():
        for index in range(len(source)):
            placement = source.placement(index)
            seen[source.image_id(index)] = (placement.height, placement.width,
                                            placement.valid_height, placement.valid_width)
    # Longer side resized to 64, the aspect ratio kept (rounded).
    assert seen[101] == (48, 80, 38, 64) and seen[102] == (90, 60, 64, 43)
    assert seen[105] == (150, 200, 48, 64) and seen[106] == (64, 36, 64, 36)
    assert sorted(seen) == list(range(101, 109))


def test_eval_batches_carry_each_image_extent(folder):
    _, sources = folder
    source = sources["validation"]
    batches = list(batching.eval_batches(source, 3, max_instances=4))
    rows = np.concatenate([batch["image_hw"] for batch in batches])
    indices = np.concatenate([batch["index"] for batch in batches])
    for row, index in zip(rows, indices):
        if index < 0:
            np.testing.assert_array_equal(row, [CANVAS, CANVAS])
        else:
            placement = source.placement(int(index))
            np.testing.assert_array_equal(row, [placement.valid_height, placement.valid_width])
    assert (rows < CANVAS).any()


def test_a_box_empty_once_scaled_to_the_image_is_dropped_as_detectron2_drops_it():
    """A 90 x 60 image lies on a 64 canvas as 64 x 43: x1 = 1.74 and the next float32 up
    are apart on the canvas but the same x in the image (float32 rounding). detectron2
    keeps only `Boxes.nonempty()` after rescaling; so do the results."""
    placement = geometry.placement((90, 60), geometry.Fit(64))
    x1 = np.float32(1.74)
    canvas_boxes = np.array([[x1, 5, np.nextafter(x1, np.float32(9)), 20], [10, 5, 30, 20]], np.float32)
    assert canvas_boxes[0, 2] > canvas_boxes[0, 0]
    scaled = placement.boxes_to_image(canvas_boxes)
    assert scaled[0, 2] == scaled[0, 0] and scaled[1, 2] > scaled[1, 0]
    detections = {
        "boxes": canvas_boxes,
        "scores": np.array([0.9, 0.8], np.float32),
        "classes": np.array([1, 1], np.int32),
        "mask_probabilities": np.ones((2, 14, 14), np.float32),
        "valid": np.array([True, True]),
    }
    found = frames.image_results(placement, 42, (0, 7), detections, 0.5)
    np.testing.assert_array_equal(found.scores, detections["scores"][1:])
    np.testing.assert_array_equal(found.boxes, scaled[1:])
    assert found.image_id == 42 and found.category_ids.tolist() == [7] and len(found.rles) == 1


@pytest.mark.parametrize("split", ["train", "validation"])
def test_hand_placed_perfect_detections_score_ap_one(folder, split):
    """Perfect boxes and masks given in original pixels, moved to the canvas as the model
    gives them, come back to AP 1.0; the detection on the crowd region is ignored."""
    config, sources = folder
    metrics, predictions = _evaluate(InstanceSegmentation(config), sources[split])
    defined = {name: value for name, value in metrics.items() if np.isfinite(value)}
    assert {"box_ap", "mask_ap", "box_ap50", "mask_ap75", "box_ap_small"} <= defined.keys()
    for name, value in defined.items():
        assert value == pytest.approx(1.0, abs=1e-12), name
    # Pictures keep masks on the canvas.
    assert all(p["masks"].shape[1:] == (CANVAS, CANVAS) for p in predictions.values())


def test_the_ground_truth_is_indexed_once_for_every_evaluation_of_a_split(folder, monkeypatch):
    config, sources = folder
    indexed = []
    monkeypatch.setattr(frames, "coco_index", lambda dataset, scorer: indexed.append(dataset) or COCO())
    task = InstanceSegmentation(config)
    for _ in range(2):
        task.new_evaluation(sources["validation"])
    assert indexed == [task.frame(sources["validation"]).ground_truth]


def test_the_crowd_region_matters(folder):
    """The best-scored detection lies on the crowd region: ignored there (AP 1.0 above), it
    is a false positive once the crowd annotation is gone, and AP drops below 1."""
    config, sources = folder
    source = next(s for s in sources.values()
                  if 105 in [s.image_id(i) for i in range(len(s))])
    task = InstanceSegmentation(config)
    frame = task.frame(source)
    crowd = [a for a in frame.ground_truth["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 7 and crowd[0]["area"] == 45 * 45
    frame.ground_truth["annotations"].remove(crowd[0])
    metrics, _ = _evaluate(task, source)
    assert metrics["box_ap"] < 1.0


def test_results_file_gives_pycocotools_the_same_aps(folder, tmp_path):
    """Imperfect detections: each of the 12 APs pycocotools computes from coco_results.json
    against the original JSON equals what the evaluation reports, to 1e-9."""
    config, sources = folder
    for split, source in sources.items():
        results_dir = tmp_path / split
        results_dir.mkdir()
        metrics, _ = _evaluate(
            InstanceSegmentation(config), source, np.random.default_rng(7), str(results_dir)
        )
        assert 0.05 < metrics["box_ap"] < 0.95 and 0.05 < metrics["mask_ap"] < 0.95
        reference = pycocotools_aps(config.data.annotations, str(results_dir))
        for name in COCO_METRICS:
            np.testing.assert_allclose(metrics[name], reference[name], atol=1e-9, err_msg=name)
        with open(results_dir / "coco_results.json") as file:
            results = json.load(file)
        assert {r["category_id"] for r in results} <= {3, 7, 12}
        with open(results_dir / "image_ids.json") as file:
            assert json.load(file) == sorted(source.image_id(i) for i in range(len(source)))
    # Two eval worker processes map, paste and encode: the same results and metrics.
    with_workers = config.copy_and_resolve_references()
    with with_workers.unlocked():
        with_workers.eval_workers = 2
    task = InstanceSegmentation(with_workers)
    try:
        results_dir = tmp_path / "with_workers"
        results_dir.mkdir()
        workers_metrics, _ = _evaluate(task, source, np.random.default_rng(7), str(results_dir))
    finally:
        task.eval_pool.close()
        task.eval_pool.join()
    assert workers_metrics == metrics
    for name in ("coco_results.json", "image_ids.json"):
        assert (results_dir / name).read_text() == (tmp_path / split / name).read_text()
    # faster-coco-eval scores the same results (a crowd region among them) as pycocotools.
    faster = config.copy_and_resolve_references()
    with faster.unlocked():
        faster.eval_scorer = "faster_coco_eval"
    faster_metrics, _ = _evaluate(InstanceSegmentation(faster), source, np.random.default_rng(7))
    for name in COCO_METRICS:
        np.testing.assert_allclose(faster_metrics[name], metrics[name], atol=1e-9, err_msg=name)


def test_split_files_score_every_image_of_the_validation_json(tmp_path):
    """Perfect detections on the three readable validation images: the missing image's
    object is missed (recall 3/4 of the box objects), as pycocotools scores it on the
    validation JSON itself; the warning says it still counts."""
    config = split_folder_config(str(tmp_path))
    with pytest.warns(UserWarning, match="still count in the validation AP") as caught:
        sources = {
            split: pipeline.load_split(config.data, split) for split in ("train", "validation")
        }
    assert "missing.png" in "".join(str(warning.message) for warning in caught)
    ids = {split: sorted(s.image_id(i) for i in range(len(s))) for split, s in sources.items()}
    assert ids == {"train": [101, 102, 103, 104, 105], "validation": [106, 107, 108]}
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    metrics, _ = _evaluate(InstanceSegmentation(config), sources["validation"],
                           results_dir=str(results_dir))
    with open(results_dir / "image_ids.json") as file:
        assert json.load(file) == [106, 107, 108, 120]
    reference = pycocotools_aps(config.data.validation_annotations, str(results_dir))
    for name in COCO_METRICS:
        np.testing.assert_allclose(metrics[name], reference[name], atol=1e-9, err_msg=name)
    # 3 of the 4 objects found, each perfectly: AP is the recall-limited area, below 1.
    assert 0.5 < metrics["box_ap"] < 1.0 and 0.5 < metrics["mask_ap"] < 1.0


def test_split_files_need_the_same_categories(tmp_path):
    config = split_folder_config(str(tmp_path))
    with open(config.data.validation_annotations) as file:
        validation = json.load(file)
    validation["categories"][0]["name"] = "lion"
    with open(config.data.validation_annotations, "w") as file:
        json.dump(validation, file)
    with pytest.raises(ValueError, match="^validation_annotations: the categories of .* differ"):
        pipeline.load_split(config.data, "train")


def test_an_image_in_both_split_files_is_reported(tmp_path):
    config = split_folder_config(str(tmp_path))
    with open(config.data.annotations) as file:
        train_json = json.load(file)
    with open(config.data.validation_annotations) as file:
        validation = json.load(file)
    validation["images"].append({**train_json["images"][0], "id": 500})
    with open(config.data.validation_annotations, "w") as file:
        json.dump(validation, file)
    with pytest.warns(UserWarning, match=r"1 images are listed in both .*a\.png"):
        pipeline.load_split(config.data, "train")


# --------------------------------------------------------------------------- jaxseg.evaluate


@pytest.fixture(scope="module")
def trained_folder_run(tmp_path_factory):
    """2 training steps of the tiny Mask R-CNN on the folder with a JSON per split
    (checkpoints at 1 and 2)."""
    root = str(tmp_path_factory.mktemp("trained"))
    config = split_folder_config(root)
    config.num_train_steps = config.eval_every_steps = 2
    config.checkpoint_every_steps = 1
    workdir = os.path.join(root, "run")
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    return config, workdir


@pytest.mark.slow
def test_training_and_evaluate_write_results_pycocotools_reproduces(trained_folder_run):
    config, workdir = trained_folder_run
    during_training = os.path.join(workdir, "eval", "validation_step2")
    with open(os.path.join(during_training, "metrics.json")) as file:
        written = json.load(file)
    results_dir, metrics = evaluate.evaluate_checkpoint(
        trained_run.load_config(workdir), workdir, "train", step=1, devices=jax.devices()[:1]
    )
    assert results_dir == os.path.join(workdir, "eval", "train_step1")
    with open(os.path.join(workdir, "metrics.json")) as file:
        final = json.load(file)
    assert final["step"] == 2 and np.isfinite(final["train_loss"])
    assert {"box_ap", "mask_ap"} <= final.keys()
    for directory, reported, split_json in (
        (during_training, written, config.data.validation_annotations),
        (results_dir, metrics, config.data.annotations),
    ):
        reference = pycocotools_aps(split_json, directory)
        for name in COCO_METRICS:
            value = np.nan if reported[name] is None else reported[name]
            np.testing.assert_allclose(value, reference[name], atol=1e-9, err_msg=name)
    with open(os.path.join(results_dir, "image_ids.json")) as file:
        train_ids = json.load(file)
    with open(os.path.join(during_training, "image_ids.json")) as file:
        validation_ids = json.load(file)
    # Every image of each split's JSON, the unreadable one of the validation JSON included.
    assert train_ids == list(range(101, 106)) and validation_ids == [106, 107, 108, 120]
    assert os.path.exists(os.path.join(results_dir, "predictions.png"))


def _evaluate_exit(argv) -> str:
    """The one-line message `jaxseg.evaluate` exits with for `argv`."""
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as caught:
            remaining = evaluate.parse_flags(["evaluate", *argv])
            evaluate.main(remaining)
    message = str(caught.value.code)
    assert message and "\n" not in message
    return message


@pytest.mark.slow
def test_evaluate_errors_are_one_line(trained_folder_run, tmp_path):
    _, workdir = trained_folder_run
    assert "config.json" in _evaluate_exit([f"--workdir={tmp_path}"])
    # The run's eval batch of 2 does not split over the tests' 8 devices: overridden.
    run = [f"--workdir={workdir}", "--config.eval_batch_size=8"]
    message = _evaluate_exit([*run, "--step=7"])
    assert message.startswith("--step=7") and "steps 1, 2" in message
    assert _evaluate_exit([*run, "--split=test"]).startswith("--split=test")
    assert "eval_batch_size=2" in _evaluate_exit([f"--workdir={workdir}"])
    message = _evaluate_exit([f"--workdir={workdir}", "--config.data.annotationz=x.json"])
    assert "annotationz" in message and "did you mean" in message
