"""metrics.jsonl: one line per logged step, read back on resume up to the restored step."""

import json
import math

from jaxseg.metric_writer import MetricWriter, read_history


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_lines_history_and_undefined_values(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    writer = MetricWriter(str(tmp_path / "tb"), path, enabled=True, resume_step=0)
    writer.write_scalars(5, {"train/loss": 2.0, "val/box_ap_small": math.nan})
    writer.write_scalars(10, {"train/loss": 1.5})
    writer.close()
    assert _lines(path) == [
        {"step": 5, "train/loss": 2.0, "val/box_ap_small": None},
        {"step": 10, "train/loss": 1.5},
    ]
    assert writer.history == {"train/loss": [(5, 2.0), (10, 1.5)]}
    assert list((tmp_path / "tb").iterdir())


def test_resume_reads_back_and_drops_lines_after_the_checkpoint(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    writer = MetricWriter(str(tmp_path / "tb"), path, enabled=True, resume_step=0)
    for step in (5, 10, 15):
        writer.write_scalars(step, {"train/loss": 1.0 / step})
    writer.close()
    resumed = MetricWriter(str(tmp_path / "tb"), path, enabled=True, resume_step=10)
    assert resumed.history == {"train/loss": [(5, 0.2), (10, 0.1)]}
    resumed.write_scalars(15, {"train/loss": 0.5})
    resumed.close()
    assert [line["step"] for line in _lines(path)] == [5, 10, 15]
    assert read_history(path, 15)[1] == {"train/loss": [(5, 0.2), (10, 0.1), (15, 0.5)]}


def test_a_process_that_does_not_write_touches_no_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricWriter(str(tmp_path / "tb"), str(path), enabled=False, resume_step=0)
    writer.write_scalars(1, {"train/loss": 3.0})
    writer.close()
    assert writer.history == {"train/loss": [(1, 3.0)]}
    assert not path.exists() and not (tmp_path / "tb").exists()
