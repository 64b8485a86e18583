"""benchmarks/input_pipeline.py at its smallest setting (no worker processes: whether they
change a batch is tested in test_pipeline and test_coco_records): every stream and the step
it feeds run, the memory probe too, and it ends with one JSON line."""

import json
import math

from benchmarks import input_pipeline

STREAMS = ("shapes", "coco_folder_augmented", "coco1024_augmented", "coco1344_augmented")


def test_smallest_setting_runs_every_stream_and_prints_one_json_line(capsys):
    input_pipeline.main([
        "--seconds=0.01", "--same_steps=1", "--folder_images=4", "--probe_steps=1",
        "--max_workers=0", "--json",
    ])
    lines = capsys.readouterr().out.strip().splitlines()
    assert any("| coco_folder at mask_rcnn_coco's own" in line and "| 1344 |" in line
               for line in lines)
    result = json.loads(lines[-1])
    assert result["same_batches"] == dict.fromkeys(STREAMS, True)  # nothing to compare
    for name in STREAMS:
        assert list(result[name]) == ["0"], name
        assert math.isfinite(result[name]["0"]) and result[name]["0"] > 0, name
    assert set(result["unet_step"]) == {"fixed batch", "0 workers"}
    assert 0 < result["coco1024_peak_memory_gb"] < 16
