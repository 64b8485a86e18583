"""Panoptic FPN through the training loop: PQ in metrics.json equal to panopticapi's PQ of
the exported COCO panoptic files, every loss logged, pictures, predict."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from jaxseg import predict, train
from jaxseg.data import pipeline
from jaxseg.tasks.panoptic import PanopticSegmentation
from jaxseg.config_files import load_config_file
from jaxseg.evaluation import panoptic
from jaxseg.metric_writer import read_history
from tests.helpers.detections import empty_detections
from tests.helpers.evaluate_processes import evaluate_in_one_and_two_processes
from tests.test_coco_panoptic_folder import SIZES, folder_data_config, panoptic_image
from tests.test_panoptic_quality import reference_pq
from tests.test_train import apply_overrides

pytestmark = pytest.mark.slow

SIZE = 64


def tiny_panoptic_config(data_dir: str, **overrides):
    """configs/panoptic_shapes.py shrunk to seconds: 64 x 64 images, a narrow model, a
    low fusion threshold so that the barely trained model places instances."""
    config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "panoptic_shapes.py"))
    config.data.data_dir = data_dir
    config.data.image_size = SIZE
    config.data.num_train, config.data.num_validation, config.data.num_test = 16, 10, 2
    config.data.num_workers = 0
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps = config.eval_every_steps = 4
    config.log_every_steps = config.checkpoint_every_steps = 2
    config.optimizer.warmup_steps = 1
    config.num_prediction_images = 2
    model = config.model
    model.backbone_width, model.fpn_channels, model.semantic_channels = 8, 16, 8
    model.anchor_sizes = (8.0, 16.0, 32.0, 64.0, 128.0)
    model.rpn_pre_nms_topk_train = model.rpn_pre_nms_topk_test = 100
    model.rpn_post_nms_topk_train = model.rpn_post_nms_topk_test = 50
    model.rpn_batch_size_per_image = model.roi_batch_size_per_image = 32
    model.mask_rois_per_image = 8
    model.box_head_dim, model.mask_head_channels = 32, 8
    model.detections_per_image = 20
    model.score_threshold = 0.0
    model.instance_score_threshold = 0.0
    model.stuff_area_limit = 4
    return apply_overrides(config, overrides)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_panoptic_config(str(tmp_path_factory.mktemp("tfds")))
    _, result = train.run_training(config, workdir)
    return config, workdir, result


def test_metrics_equal_panopticapi_on_the_exported_files(finished_run):
    config, workdir, result = finished_run
    with open(os.path.join(workdir, "metrics.json")) as f:
        written = json.load(f)
    directory = os.path.join(workdir, "eval", f"validation_step{config.num_train_steps}")
    files = [os.path.join(directory, name) for name in (
        "panoptic_ground_truth.json", "panoptic_ground_truth", "panoptic_predictions.json", "panoptic_predictions")]
    ours = panoptic.evaluate_files(*files, progress=False)
    reference = reference_pq(*files)
    with open(files[2]) as file:
        predictions = json.load(file)["annotations"]
    assert len(predictions) == config.data.num_validation
    assert sum(len(a["segments_info"]) for a in predictions) > config.data.num_validation
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for name in ("pq", "sq", "rq"):
            assert written[name + suffix] == pytest.approx(reference[group][name], abs=1e-9), name + suffix
            assert ours[name + suffix] == pytest.approx(written[name + suffix], abs=1e-12)
    for name, value in result.items():
        if isinstance(value, float) and math.isnan(value):
            assert written[name] is None, name
    assert {"pq/circle", "pq/sky", "sq/sand", "rq/grass"} <= set(written)


def test_evaluate_on_two_processes_writes_what_one_process_writes(finished_run, tmp_path):
    """`jaxseg.evaluate --distributed` as 2 processes x 2 devices in the environment `srun`
    gives (JAX's SLURM detection): each fuses and counts the 8 of the 16 images it fed;
    process 0 writes the metrics, JSONs and PNGs of one process over 4 devices, to the
    bit."""
    config, trained, _ = finished_run
    one_process, two_processes, logs = evaluate_in_one_and_two_processes(
        config, trained, str(tmp_path), "train", slurm=True
    )
    for index, log in enumerate(logs):
        assert f"process {index}: post-processed 8 of 16 images" in log, log[-2000:]
    names = sorted(
        os.path.relpath(os.path.join(root, name), one_process)
        for root, _, files in os.walk(one_process) for name in files
        if not name.endswith(".png") or "panoptic_" in root
    )
    assert len([name for name in names if name.startswith("panoptic_predictions/")]) == 16
    for name in names:
        with open(os.path.join(one_process, name), "rb") as one, open(os.path.join(two_processes, name), "rb") as two:
            assert one.read() == two.read(), name
    with open(os.path.join(one_process, "metrics.json")) as file:
        assert json.load(file)["pq"] > 0


def test_every_loss_is_logged_and_pictures_are_written(finished_run):
    config, workdir, _ = finished_run
    _, history = read_history(os.path.join(workdir, "metrics.jsonl"), config.num_train_steps)
    for component in ("rpn_objectness", "rpn_box", "box_classification", "box_regression", "mask", "semantic"):
        assert f"train/loss_{component}" in history, component
    assert {"val/pq", "val/pq_things", "val/pq_stuff"} <= set(history)
    with Image.open(os.path.join(workdir, "predictions.png")) as picture:
        # Two rows of 2x upscaled tiles under the title row, then the legend and caption.
        assert picture.size[0] == 3 * 2 * SIZE + 4 * 4
        assert picture.size[1] > 20 + 2 * (2 * SIZE + 4)


def test_predict_draws_the_panoptic_map_at_the_input_size(finished_run, tmp_path):
    _, workdir, _ = finished_run
    Image.fromarray(np.full((40, 90, 3), 120, np.uint8)).save(tmp_path / "wide.png")
    written = predict.write_overlays(workdir, str(tmp_path / "wide.png"), str(tmp_path / "out"))
    with Image.open(written[0]) as picture:
        assert picture.size[0] == 2 * 90 + 3 * 4


def test_a_panoptic_folder_is_scored_against_its_own_json_and_pngs(tmp_path):
    """4 steps on a COCO-panoptic-format folder (images upscaled from at most 32 to the
    64 x 64 canvas): the exported predictions carry the JSON's image and category ids, and
    panopticapi scores them against the user's own JSON and PNGs exactly as metrics.json."""
    data = folder_data_config(tmp_path)
    data.image_size = SIZE
    config = tiny_panoptic_config(data.data_dir)
    config.data = data
    config.data.num_workers = 0
    written, directory, exported = trained_exports(config, str(tmp_path / "run"))
    assert all((a["image_id"] - 1000) % 7 == 0 for a in exported)
    used = {s["category_id"] for a in exported for s in a["segments_info"]}
    assert used and used <= {3, 7, 12, 20}
    files = (data.annotations, data.panoptic_masks, os.path.join(directory, "panoptic_predictions.json"),
             os.path.join(directory, "panoptic_predictions"))
    reference = reference_pq_of_images(*files, [a["image_id"] for a in exported])
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for name in ("pq", "sq", "rq"):
            assert written[name + suffix] == pytest.approx(reference[group][name], abs=1e-9), name + suffix


def _perfect_outputs(example: dict, index: int, slots: int = 4) -> dict:
    """Eval outputs of one example (a batch of 1) that are its ground truth: a detection per
    thing at its tight box on the canvas, masks all ones, and its semantic labels (floor,
    label 2, on VOID and padding)."""
    outputs = {
        **empty_detections(1, slots, 14),
        # The head predicts a class everywhere: floor on VOID (outside every union).
        "semantic": np.where(example["semantic"] == 255, 2, example["semantic"])[None].astype(np.int32),
        "index": np.asarray([index], np.int32),
    }
    for slot, (mask, label) in enumerate(zip(example["masks"], example["labels"])):
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        outputs["boxes"][0, slot] = [columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]
        outputs["scores"][0, slot] = 0.9 - 0.1 * slot
        outputs["classes"][0, slot] = label
        outputs["valid"][0, slot] = True
    return outputs


def test_perfect_predictions_score_pq_one_in_the_folders_own_pixels(tmp_path):
    """The ground truth as the model's outputs on the 64 x 64 canvas (images of at most 32
    pixels upscaled 2x): masks pasted at the source size, the semantic map resized back,
    category ids mapped, scored against the folder's own PNGs (crowd and VOID included):
    PQ, SQ and RQ are 1 for every category present."""
    data = folder_data_config(tmp_path)
    data.image_size = SIZE
    config = tiny_panoptic_config(data.data_dir, **{"model__stuff_area_limit": 1})
    config.data = data
    source = pipeline.load_split(config.data, "train")
    evaluation = PanopticSegmentation(config).new_evaluation(source)
    for index in range(len(source)):
        evaluation.add(_perfect_outputs(source[index], index), {})
    metrics, _ = evaluation.result()
    assert metrics["n_things"] == 2 and metrics["n_stuff"] == 2
    for name in ("pq", "sq", "rq", "pq_things", "pq_stuff", "pq/cat", "pq/dog", "pq/wall", "pq/floor"):
        assert metrics[name] == pytest.approx(1.0, abs=1e-12), name
    evaluation.write_results(str(tmp_path / "thread"))
    # Two eval worker processes fuse, count and encode: the same metrics and files.
    config.eval_workers = 2
    task = PanopticSegmentation(config)
    try:
        evaluation = task.new_evaluation(source)
        for index in range(len(source)):
            evaluation.add(_perfect_outputs(source[index], index), {})
        assert evaluation.result()[0] == metrics
        evaluation.write_results(str(tmp_path / "workers"))
    finally:
        task.eval_pool.close()
        task.eval_pool.join()
    written = [os.path.relpath(os.path.join(root, name), tmp_path / "thread")
               for root, _, files in os.walk(tmp_path / "thread") for name in files]
    assert len(written) == 2 * len(source) + 3
    for name in written:
        assert (tmp_path / "thread" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes(), name
    position = (source.image_id(0) - 1000) // 7
    assert np.shape(panoptic_image(position, *SIZES[position])[0]) != source[0]["image"].shape[:2]


def trained_exports(config, workdir: str) -> tuple[dict, str, list]:
    """Trains `config` in `workdir`: (metrics.json, the last evaluation's directory, the
    annotations of its panoptic_predictions.json)."""
    train.run_training(config, workdir)
    with open(os.path.join(workdir, "metrics.json")) as file:
        written = json.load(file)
    directory = os.path.join(workdir, "eval", f"validation_step{config.num_train_steps}")
    with open(os.path.join(directory, "panoptic_predictions.json")) as file:
        return written, directory, json.load(file)["annotations"]


def reference_pq_of_images(gt_json, gt_dir, pred_json, pred_dir, image_ids):
    """`reference_pq` on the ground truth of `image_ids` alone (the validation split)."""
    with open(gt_json) as file:
        gt = json.load(file)
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in image_ids]
    subset = os.path.join(os.path.dirname(pred_json), "gt_subset.json")
    with open(subset, "w") as file:
        json.dump(gt, file)
    return reference_pq(subset, gt_dir, pred_json, pred_dir)
