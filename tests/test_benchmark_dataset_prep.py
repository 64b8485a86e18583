"""benchmarks/dataset_prep.py at its smallest setting: it runs, prints its table and one
JSON line whose figures are consistent."""

import json
import math

import pytest

from benchmarks import dataset_prep


def test_smallest_setting_prints_a_table_and_one_json_line(capsys):
    dataset_prep.main([
        "--images=6", "--workers=0", "--stream_examples=2", "--json_images=5",
        "--json_annotations=12", "--json",
    ])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "| quantity | value |" in lines  # after TFDS's own lines
    result = json.loads(lines[-1])
    assert (result["images"], result["canvas"], result["shorter_side"]) == (6, 1344, 800)
    assert (result["json_images"], result["json_annotations"]) == (5, 12)
    for name in (
        "prep_ms_per_image", "stream_ms_per_example", "json_parse_seconds",
        "json_name_first_seconds", "json_name_again_seconds",
    ):
        assert math.isfinite(result[name]) and result[name] > 0, name
    # The records keep the JPEGs as they are: the dataset is about the source's size.
    assert 0.9 < result["stored_over_source"] < 1.3, result


def test_too_few_images_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        dataset_prep.main(["--images=3"])
    assert "--images must be at least 4" in capsys.readouterr().err
