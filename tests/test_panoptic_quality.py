"""PQ, SQ and RQ: a hand-computed image, and equality with panopticapi's `pq_compute` (as
packaged in cityscapesscripts) on generated predictions with VOID, crowd, tiny and
overlapping segments, through COCO-panoptic-format files."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import panoptic_format
from jaxseg.evaluation import panoptic

CATEGORIES = [
    {"id": 1, "name": "sky", "isthing": 0},
    {"id": 2, "name": "grass", "isthing": 0},
    {"id": 5, "name": "road", "isthing": 0},
    {"id": 7, "name": "person", "isthing": 1},
    {"id": 9, "name": "car", "isthing": 1},
    {"id": 11, "name": "dog", "isthing": 1},
]


def segment(identifier, category, area, crowd=0):
    return {"id": identifier, "category_id": category, "iscrowd": crowd, "area": area}


def test_hand_computed_image():
    """One 4 x 6 image. Ground truth: sky (id 1) on rows 0-1, a person (id 2) on columns
    0-2 of rows 2-3, a crowd of cars (id 3) on columns 3-5 of rows 2-3.
    Prediction: sky on rows 0-1 and column 0 of row 2 (IoU 12/13 with the sky), a person on
    columns 1-2 of rows 2-3 (IoU 4/6), VOID at row 3, column 0, a car on columns 4-5 of rows
    2-3 (all on the crowd: ignored), a dog on column 3 of rows 2-3 (no dog in the ground
    truth, on the crowd of cars, not of dogs: a false positive)."""
    gt = np.array([[1] * 6, [1] * 6, [2, 2, 2, 3, 3, 3], [2, 2, 2, 3, 3, 3]])
    gt_segments = [segment(1, 1, 12), segment(2, 7, 6), segment(3, 9, 6, crowd=1)]
    pred = np.array([[4] * 6, [4] * 6, [4, 5, 5, 7, 6, 6], [0, 5, 5, 7, 6, 6]])
    pred_segments = [segment(4, 1, 0), segment(5, 7, 0), segment(6, 9, 0), segment(7, 11, 0)]
    accumulator = panoptic.PQAccumulator(CATEGORIES)
    accumulator.add(gt, gt_segments, pred, pred_segments)
    result = accumulator.summary()
    sky_iou = 12 / 13  # prediction 13 px, all 12 sky pixels overlap
    person_iou = 4 / (4 + 6 - 4)  # prediction 4 px, gt 6: union 6
    assert result["pq/sky"] == pytest.approx(sky_iou)
    assert result["sq/person"] == pytest.approx(person_iou)
    assert result["rq/person"] == 1.0
    assert result["pq/dog"] == 0.0 and result["rq/dog"] == 0.0 and result["sq/dog"] == 0.0
    assert math.isnan(result["pq/car"]) and math.isnan(result["pq/road"])
    assert result["n_things"] == 2 and result["n_stuff"] == 1
    assert result["pq_things"] == pytest.approx(person_iou / 2)
    assert result["pq"] == pytest.approx((sky_iou + person_iou) / 3)
    assert result["sq"] == pytest.approx((sky_iou + person_iou) / 3)


def test_void_pixels_of_the_prediction_leave_the_union():
    """A predicted segment covering the ground truth's 4 pixels plus 4 VOID pixels has IoU 1
    (the VOID part leaves the union), not 0.5."""
    gt = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])
    pred = np.ones((2, 4), np.int64)
    accumulator = panoptic.PQAccumulator(CATEGORIES)
    accumulator.add(gt, [segment(1, 9, 4)], pred, [segment(1, 9, 0)])
    assert accumulator.summary()["pq/car"] == 1.0


def test_disagreeing_png_and_json_are_one_line_errors():
    accumulator = panoptic.PQAccumulator(CATEGORIES)
    gt = np.ones((2, 2), np.int64)
    with pytest.raises(ValueError, match=r"img: predicted segment ids \[3\] are in the PNG but not"):
        accumulator.add(gt, [segment(1, 1, 4)], np.full((2, 2), 3), [], where="img")
    with pytest.raises(ValueError, match=r"segment ids \[4\] are in segments_info but not in the PNG"):
        accumulator.add(gt, [segment(1, 1, 4)], np.zeros((2, 2)), [segment(4, 1, 0)])
    with pytest.raises(ValueError, match=r"prediction: category ids \[3\] are not among"):
        accumulator.add(gt, [segment(1, 1, 4)], gt, [segment(1, 3, 0)])
    with pytest.raises(ValueError, match=r"the prediction is \(2, 3\) pixels"):
        accumulator.add(gt, [segment(1, 1, 4)], np.ones((2, 3)), [segment(1, 1, 0)])


def random_blob(rng, shape, tiny=False):
    """bool [H, W]: an ellipse (a few pixels when `tiny`)."""
    height, width = shape
    rows, columns = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = (rng.uniform(0.5, 2.0, 2) if tiny else rng.uniform(3, max(4, height / 3), 2))
    return ((rows - cy) / ry) ** 2 + ((columns - cx) / rx) ** 2 <= 1.0


def ground_truth_image(rng, shape):
    """A ground-truth id map [H, W] and its segments: stuff bands, things painted over them
    (overlapping things: the later one wins), a crowd region, tiny things, VOID pixels."""
    height, width = shape
    ids = np.zeros(shape, np.int64)
    segments = []
    next_id = [int(rng.integers(1, 50))]

    def paint(mask, category, crowd=0):
        identifier = next_id[0]
        next_id[0] += int(rng.integers(1, 3000))
        ids[mask] = identifier
        segments.append({"id": identifier, "category_id": category, "iscrowd": crowd})

    bounds = np.sort(rng.integers(0, height, 2))
    for category, rows in zip(rng.permutation([1, 2, 5]), (slice(0, bounds[0]), slice(bounds[0], bounds[1]), slice(bounds[1], height))):
        band = np.zeros(shape, bool)
        band[rows] = True
        if band.any():
            paint(band, int(category))
    if rng.random() < 0.7:
        paint(random_blob(rng, shape), int(rng.choice([7, 9])), crowd=1)
    for _ in range(int(rng.integers(1, 7))):
        paint(random_blob(rng, shape, tiny=rng.random() < 0.25), int(rng.choice([7, 9, 11])))
    ids[random_blob(rng, shape)] = panoptic_format.VOID
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present or rng.random() < 0.2]
    for s in segments:
        s["area"] = int((ids == s["id"]).sum())
    return ids, segments


def predicted_image(rng, gt_ids, gt_segments):
    """A prediction of `gt_ids`: each segment kept, shifted, re-labelled, or dropped, plus
    spurious blobs (some on VOID, some on the crowd) and VOID holes."""
    shape = gt_ids.shape
    ids = np.zeros(shape, np.int64)
    segments = []
    next_id = int(rng.integers(1, 100))
    categories = [1, 2, 5, 7, 9, 11]
    for s in gt_segments:
        mask = gt_ids == s["id"]
        if rng.random() < 0.15 or not mask.any():
            continue
        mask = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        category = s["category_id"] if rng.random() < 0.85 else int(rng.choice(categories))
        ids[mask] = next_id
        segments.append({"id": next_id, "category_id": category})
        next_id += int(rng.integers(1, 500))
    for _ in range(int(rng.integers(0, 4))):
        ids[random_blob(rng, shape, tiny=rng.random() < 0.3)] = next_id
        segments.append({"id": next_id, "category_id": int(rng.choice(categories))})
        next_id += 1
    ids[random_blob(rng, shape, tiny=True)] = panoptic_format.VOID
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segments if s["id"] in present]


def write_split(folder, images, categories):
    """COCO panoptic JSON + PNGs of `images` [(image_id, ids, segments)] under `folder`."""
    folder.mkdir()
    annotations = []
    for image_id, ids, segments in images:
        name = f"{image_id}.png"
        panoptic_format.write_id_png(folder / name, ids)
        annotations.append({"image_id": image_id, "file_name": name, "segments_info": segments})
    panoptic_format.write_panoptic_json(folder.with_suffix(".json"), annotations, categories)
    return folder.with_suffix(".json"), folder


def reference_pq(gt_json, gt_dir, pred_json, pred_dir):
    """panopticapi's PQ (cityscapesscripts' copy): its per-image statistics and averages, run
    in this process (its own entry point forks a pool, which a process with JAX must not),
    its console output swallowed."""
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as reference

    with open(gt_json) as file:
        gt = json.load(file)
    with open(pred_json) as file:
        predictions = {a["image_id"]: a for a in json.load(file)["annotations"]}
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = [(a, predictions[a["image_id"]]) for a in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stats = reference.pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), categories)
    return reference.average_pq(stats, categories)


def assert_equal_to_reference(ours, reference, categories):
    for suffix, group in (("", "All"), ("_things", "Things"), ("_stuff", "Stuff")):
        for name in ("pq", "sq", "rq"):
            assert ours[name + suffix] == pytest.approx(reference[group][name], abs=1e-9), name + suffix
        assert ours["n" + suffix] == reference[group]["n"]
    for category in categories:
        expected = reference["per_class"][category["id"]]
        for name in ("pq", "sq", "rq"):
            value = ours[f"{name}/{category['name']}"]
            if math.isnan(value):  # absent from both: panopticapi's 0.0, outside its means
                assert expected[name] == 0.0
            else:
                assert value == pytest.approx(expected[name], abs=1e-9)


def scored_as_panopticapi(tmp_path, truth, predictions) -> dict:
    """`evaluate_files` of `truth` and `predictions` ([(image_id, ids, segments)]) written
    under `tmp_path`, asserted equal to panopticapi's `reference_pq`."""
    gt_json, gt_dir = write_split(tmp_path / "gt", truth, CATEGORIES)
    pred_json, pred_dir = write_split(tmp_path / "pred", predictions, CATEGORIES)
    ours = panoptic.evaluate_files(gt_json, gt_dir, pred_json, pred_dir, progress=False)
    assert_equal_to_reference(ours, reference_pq(gt_json, gt_dir, pred_json, pred_dir), CATEGORIES)
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_panopticapi_on_generated_predictions(tmp_path, seed):
    rng = np.random.default_rng(seed)
    truth, predictions = [], []
    for image_id in range(12):
        shape = (int(rng.integers(12, 48)), int(rng.integers(12, 48)))
        gt_ids, gt_segments = ground_truth_image(rng, shape)
        pred_ids, pred_segments = predicted_image(rng, gt_ids, gt_segments)
        truth.append((image_id, gt_ids, gt_segments))
        predictions.append((image_id, pred_ids, pred_segments))
    ours = scored_as_panopticapi(tmp_path, truth, predictions)
    assert 0.1 < ours["pq"] < 0.9 and ours["n_things"] == 3 and ours["n_stuff"] == 3


def test_json_areas_unlike_pixel_counts_and_two_crowds_of_a_category_as_panopticapi(tmp_path):
    """Ground truth whose JSON areas are not its pixel counts (COCO's are polygon areas),
    and images with two crowd segments of one category (panopticapi keeps the last one's
    region per category): PQ as panopticapi's code computes it."""
    rng = np.random.default_rng(11)
    truth, predictions = [], []
    for image_id in range(12):
        gt_ids, gt_segments = ground_truth_image(rng, (40, 40))
        for crowd in range(2):  # two crowd regions of category 7, then predictions on them
            region = random_blob(rng, (40, 40)) & (gt_ids != panoptic_format.VOID)
            identifier = 60000 + 10 * image_id + crowd
            gt_ids[region] = identifier
            gt_segments.append({"id": identifier, "category_id": 7, "iscrowd": 1})
        present = set(np.unique(gt_ids).tolist())
        gt_segments = [s for s in gt_segments if s["id"] in present]
        for s in gt_segments:
            s["area"] = max(1, int((gt_ids == s["id"]).sum() * rng.uniform(0.7, 1.3)))
        pred_ids, pred_segments = predicted_image(rng, gt_ids, gt_segments)
        truth.append((image_id, gt_ids, gt_segments))
        predictions.append((image_id, pred_ids, pred_segments))
    ours = scored_as_panopticapi(tmp_path, truth, predictions)
    assert 0.1 < ours["pq"] < 0.9
    with_two_crowds = sum(
        sum(s["iscrowd"] == 1 and s["category_id"] == 7 for s in segments) == 2
        for _, _, segments in truth
    )
    assert with_two_crowds >= 6


def test_shares_counted_apart_and_added_in_order_give_one_accumulators_sums_to_the_bit():
    """Images counted by two processes' accumulators (`count`) and added on one in the
    split's order (`add_counts`) give the sums of adding every image in that order."""
    rng = np.random.default_rng(7)
    images = []
    for _ in range(16):
        gt_ids, gt_segments = ground_truth_image(rng, (40, 40))
        images.append((gt_ids, gt_segments, *predicted_image(rng, gt_ids, gt_segments)))
    whole = panoptic.PQAccumulator(CATEGORIES)
    for image in images:
        whole.add(*image)
    processes = [panoptic.PQAccumulator(CATEGORIES) for _ in range(2)]
    shares = {index: processes[index % 2].count(*image) for index, image in enumerate(images)}
    for accumulator in processes:  # counting adds nothing
        assert not (accumulator.tp.any() or accumulator.fp.any() or accumulator.fn.any() or accumulator.iou.any())
    merged = panoptic.PQAccumulator(CATEGORIES)
    for index in sorted(shares):
        merged.add_counts(shares[index])
    for name in ("iou", "tp", "fp", "fn"):
        assert getattr(merged, name).tobytes() == getattr(whole, name).tobytes(), name
    assert merged.tp.sum() > 10 and merged.fp.sum() > 0 and merged.fn.sum() > 0


def test_rgba_pngs_read_as_their_colours(tmp_path):
    ids = np.array([[0, 1, 256], [65536, 70000, 256**3 - 1]])
    rgba = np.concatenate([panoptic_format.ids_to_rgb(ids), np.full((2, 3, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(panoptic_format.read_id_png(tmp_path / "a.png"), ids)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=r"grey.png: a panoptic PNG stores segment ids as RGB colours, got an image of mode L"):
        panoptic_format.read_id_png(tmp_path / "grey.png")


def test_file_errors_name_the_file_and_entry(tmp_path):
    gt_json, gt_dir = write_split(tmp_path / "gt", [(3, np.ones((2, 2), np.int64), [segment(1, 1, 4)])], CATEGORIES)
    pred_json, pred_dir = write_split(tmp_path / "pred", [(4, np.ones((2, 2), np.int64), [segment(1, 1, 4)])], CATEGORIES)
    with pytest.raises(ValueError, match=r"pred.json: no prediction for 1 ground-truth images, e.g. image id 3"):
        panoptic.evaluate_files(gt_json, gt_dir, pred_json, pred_dir, progress=False)
    broken = json.loads(gt_json.read_text())
    del broken["annotations"][0]["segments_info"][0]["area"]
    gt_json.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"gt.json: annotations\[0\].segments_info\[0\]: ground truth needs an integer 'area'"):
        panoptic.evaluate_files(gt_json, gt_dir, pred_json, pred_dir, progress=False)
