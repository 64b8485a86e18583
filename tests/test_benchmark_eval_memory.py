"""benchmarks/eval_memory.py at its smallest setting: it runs and ends with one JSON line."""

import json
import math

import pytest

from benchmarks import eval_memory


def test_smallest_setting_prints_a_table_and_one_json_line(capsys):
    eval_memory.main(["--images=2", "--size=128", "--workers=1,2", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["quantity", "value"]
    assert lines[-2].startswith("ratio 2 : 1 workers")
    result = json.loads(lines[-1])
    assert (result["images"], result["size"], result["detections_per_image"]) == (2, 128, 100)
    for name in ("ground_truth_seconds", "paste_and_encode_seconds", "pycocotools_seconds"):
        assert math.isfinite(result[name]) and result[name] > 0, name
    per_image = result["paste_encode_seconds_per_image"]
    assert per_image.keys() == {"1", "2"} and all(v > 0 for v in per_image.values())
    # Two worker processes scored the same 12 APs as the evaluation thread.
    assert result["same_metrics"] is True
    assert result["faster_coco_eval_seconds"] > 0
    assert result["faster_coco_eval_max_difference"] <= 1e-9
    # The synthetic detections lie around the ground-truth objects: some of them match.
    assert 0 < result["box_ap"] <= 1 and 0 < result["mask_ap"] <= 1, result


def test_a_size_too_small_for_the_objects_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        eval_memory.main(["--size=64"])
    assert "--size above 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_memory.main(["--workers=0,2"])
    assert "--workers=0,2: distinct positive counts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_memory.main(["--workers=1,1"])
    assert "--workers=1,1: distinct" in capsys.readouterr().err
