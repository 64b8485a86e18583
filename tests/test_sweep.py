"""Sweep files, the runner's skip and resume rules, and the results table against numpy."""

import csv
import json
import math
import os
import shlex

import numpy as np
import pytest

from jaxseg import sweep, train
from jaxseg.config_validation import ConfigError
from jaxseg.data import shapes
from jaxseg.data.sources import shapes as shapes_source
from jaxseg.errors import WorkdirError

CLASSES = ("background", "circle", "rectangle", "triangle")
# The shipped U-Net config shrunk to seconds per run (as tests/test_train.py's tiny_config).
TINY = {
    "data.image_size": 32,
    "data.num_train": 24,
    "data.num_validation": 10,
    "data.num_test": 4,
    "model.features": (4, 8),
    "eval_batch_size": 8,
    "num_train_steps": 3,
    "log_every_steps": 1,
    "eval_every_steps": 3,
    "checkpoint_every_steps": 3,
    "optimizer.warmup_steps": 1,
    "num_prediction_images": 1,
}
METRICS = ("miou", "foreground_iou", "foreground_dice", "boundary_iou")


def write_sweep_file(directory, body):
    """A sweep file whose get_sweep() returns `Sweep(<body>)`; returns its path."""
    path = os.path.join(directory, "tiny_sweep.py")
    with open(path, "w") as f:
        f.write(
            '"""A tiny loss sweep for tests."""\n\n'
            "from jaxseg.sweep import Sweep, Variant\n\n\n"
            f"def get_sweep():\n    return Sweep({body})\n"
        )
    return path


def tiny_sweep_body(data_dir, **fields):
    arguments = {
        "config": "configs/unet_shapes.py",
        "overrides": {**TINY, "data.data_dir": data_dir},
        "variants": {"ce": {"loss.name": "ce"}, "dice": {"loss.name": "dice"}},
        "seeds": (0, 1),
        "metrics": METRICS,
        "budget": "one minute on 2 CPU cores",
        **fields,
    }
    return ", ".join(f"{name}={value!r}" for name, value in arguments.items())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_print_lists_variants_with_resolved_overrides(tmp_path, capsys):
    path = write_sweep_file(str(tmp_path), tiny_sweep_body("/nowhere"))
    assert sweep.main([path, "--print"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 2 variants x 2 seeds = 4 runs of configs/unet_shapes.py"
    assert lines[1] == "metrics: miou, foreground_iou, foreground_dice, boundary_iou"
    assert lines[2] == "budget: one minute on 2 CPU cores"
    ce = lines.index("ce (seeds 0, 1):")
    dice = lines.index("dice (seeds 0, 1):")
    assert "  model.features = (4, 8)" in lines[ce:dice]
    assert lines[dice - 1] == "  loss.name = 'ce'"
    assert lines[-1] == "  loss.name = 'dice'"
    assert os.listdir(tmp_path) == ["tiny_sweep.py"]


def test_product_names_and_merges_overrides():
    variants = sweep.product(
        {"ce": {"loss.name": "ce"}, "dice": {"loss.name": "dice"}},
        {"skip": {"model.skip_connections": True}, "noskip": {"model.skip_connections": False}},
    )
    assert [v.name for v in variants] == ["ce-skip", "ce-noskip", "dice-skip", "dice-noskip"]
    assert variants[1].overrides == {"loss.name": "ce", "model.skip_connections": False}


def test_runs_resolve_overrides_variant_over_base_and_seed():
    spec = sweep.Sweep(
        config="configs/unet_shapes.py",
        overrides={"loss.name": "dice", "num_train_steps": 700},
        variants=[sweep.Variant("a", {}), sweep.Variant("b", {"loss.name": "focal"})],
        seeds=(3, 5),
        metrics=("miou",),
    )
    runs = sweep.resolve_runs(spec)
    assert [(run.variant, run.seed) for run in runs] == [("a", 3), ("a", 5), ("b", 3), ("b", 5)]
    assert [run.config.loss.name for run in runs] == ["dice", "dice", "focal", "focal"]
    assert [run.config.seed for run in runs] == [3, 5, 3, 5]
    assert all(run.config.num_train_steps == 700 for run in runs)
    assert runs[3].directory("/w") == os.path.join("/w", "b", "seed5")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"variants": {}}, "no variants"),
        (
            {"variants": [("a", {}), ("b", {}), ("a", {"loss.name": "ce"})]},
            "duplicate variant name",
        ),
        ({"variants": {"a/b": {}}}, "variant name 'a/b'"),
        (
            {"variants": {"a": {"model.skip_conections": False}}},
            "no such field 'skip_conections' in config.model .did you mean 'skip_connections'",
        ),
        ({"variants": {"a": {"modle.features": (4,)}}}, "no such field 'modle' in config .did"),
        ({"variants": {"a": {"model": 1}}}, "is a config section"),
        ({"variants": {"a": {"model.features.x": 1}}}, "'x' in config.model.features$"),
        ({"variants": {"a": {"num_train_steps": "many"}}}, "override num_train_steps='many'"),
        ({"overrides": {"seed": 1}}, "sets 'seed'"),
        ({"seeds": ()}, "seeds must be a non-empty"),
        ({"seeds": (1, 1)}, "distinct"),
        ({"metrics": "miou"}, "metrics must be"),
        ({"chart_metrics": ("box_ap",)}, "not among metrics"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, capsys, fields, message):
    path = write_sweep_file(str(tmp_path), tiny_sweep_body("/nowhere", **fields))
    with pytest.raises(sweep.SweepError, match=message):
        sweep.resolve_runs(sweep.load_sweep(path))
    assert sweep.main([path, "--print"]) == 2
    assert capsys.readouterr().err.startswith(f"Invalid sweep {path}: ")


def test_invalid_config_value_names_the_variant(tmp_path):
    body = tiny_sweep_body("/nowhere", variants={"big": {"data.image_size": 33}})
    with pytest.raises(ConfigError, match="variant big: config.data.image_size=33"):
        sweep.resolve_runs(sweep.load_sweep(write_sweep_file(str(tmp_path), body)))


def test_sweep_file_without_get_sweep(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("X = 1\n")
    with pytest.raises(sweep.SweepError, match="defines no get_sweep"):
        sweep.load_sweep(str(path))


def test_null_metrics_are_undefined(tmp_path):
    """metrics.json as training writes it (strict JSON, NaN -> null) reads back as NaN."""
    workdir = str(tmp_path)
    spec = sweep.Sweep(
        config="configs/unet_shapes.py",
        variants={"a": {}},
        metrics=("miou", "foreground_iou"),
        overrides=TINY,
    )
    (run,) = sweep.resolve_runs(spec)
    os.makedirs(run.directory(workdir))
    metrics = {"miou": math.nan, "iou/background": 0.9, "iou/circle": 0.5}
    metrics.update({"iou/rectangle": math.nan, "iou/triangle": 0.3})
    train.write_metrics(os.path.join(run.directory(workdir), "metrics.json"), metrics)
    with open(os.path.join(run.directory(workdir), "metrics.json")) as f:
        assert '"miou": null' in f.read()

    (result,) = sweep.collect_results(spec, [run], workdir)
    assert math.isnan(result.values["miou"])
    # The undefined rectangle IoU is skipped: (0.5 + 0.3) / 2.
    assert result.values["foreground_iou"] == pytest.approx(0.4)
    undefined = {"iou/a": None, "iou/b": None}
    assert math.isnan(sweep.metric_value(undefined, "foreground_iou", ("bg", "a", "b")))


def test_derived_foreground_metrics_by_hand():
    metrics = {"iou/background": 0.9, "iou/circle": 0.5, "iou/rectangle": 0.2}
    metrics.update({"iou/triangle": math.nan, "dice/background": 1.0, "dice/circle": 0.4})
    metrics.update({"dice/rectangle": 0.6, "dice/triangle": 0.8, "miou": 0.7})
    # Background is left out and the undefined (NaN) triangle IoU skipped.
    assert sweep.metric_value(metrics, "foreground_iou", CLASSES) == pytest.approx(0.35)
    assert sweep.metric_value(metrics, "foreground_dice", CLASSES) == pytest.approx(0.6)
    assert sweep.metric_value(metrics, "miou", CLASSES) == 0.7
    with pytest.raises(sweep.SweepError, match="box_ap is not in metrics.json"):
        sweep.metric_value(metrics, "box_ap", CLASSES)


def fake_run_directory(directory, values, wall_seconds):
    """A finished run's metrics.json (with per-class IoU and Dice) and sweep_run.json."""
    os.makedirs(directory)
    metrics = {"miou": values[0], "boundary_iou": values[1]}
    for k, name in enumerate(CLASSES):
        metrics[f"iou/{name}"] = values[2] + 0.1 * k
        metrics[f"dice/{name}"] = values[2] + 0.05 * k
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    with open(os.path.join(directory, sweep.RUN_RECORD), "w") as f:
        json.dump({"wall_seconds": wall_seconds}, f)


def test_results_of_finished_runs_by_hand(tmp_path):
    """Two variants x two seeds of made-up metrics: the table's means, stds, files."""
    workdir = str(tmp_path / "sweep")
    values = {("ce", 0): (0.5, 0.2, 0.3), ("ce", 1): (0.7, 0.4, 0.5)}
    values.update({("dice", 0): (0.6, 0.1, 0.4), ("dice", 1): (0.6, 0.3, 0.2)})
    for (variant, seed), numbers in values.items():
        fake_run_directory(os.path.join(workdir, variant, f"seed{seed}"), numbers, 60.0 + seed)
    spec = sweep.Sweep(
        config="configs/unet_shapes.py",
        variants={"ce": {"loss.name": "ce"}, "dice": {"loss.name": "dice"}},
        seeds=(0, 1),
        metrics=("miou", "boundary_iou", "foreground_iou"),
        chart_metrics=("miou",),
        budget="two minutes",
        description="Made-up runs.",
    )
    runs = sweep.resolve_runs(spec)
    assert sweep.run_sweep(spec, runs, workdir)  # every run is finished: nothing trains
    sweep.write_results(spec, "Sweep made up", sweep.collect_results(spec, runs, workdir), workdir)

    rows = read_csv(os.path.join(workdir, "results.csv"))
    assert [row["variant"] for row in rows] == ["ce", "dice"]
    assert [row["num_seeds"] for row in rows] == ["2", "2"]
    # ce: miou 0.5, 0.7 -> mean 0.6, sample std sqrt(0.02); foreground IoU = base + 0.2.
    assert float(rows[0]["miou_mean"]) == pytest.approx(0.6)
    assert float(rows[0]["miou_std"]) == pytest.approx(math.sqrt(0.02))
    assert float(rows[0]["foreground_iou_mean"]) == pytest.approx(0.6)
    assert float(rows[1]["miou_std"]) == 0.0
    assert float(rows[1]["boundary_iou_mean"]) == pytest.approx(0.2)
    assert float(rows[1]["wall_seconds"]) == 121.0
    with open(os.path.join(workdir, "results.md")) as f:
        markdown = f.read()
    assert markdown.startswith("# Sweep made up\n\nMade-up runs.\n")
    assert "| ce | 2 | 0.600 ± 0.141 | 0.300 ± 0.141 | 0.600 ± 0.141 |" in markdown
    assert "| dice | 2 | 0.600 ± 0.000 | 0.200 ± 0.141 | 0.500 ± 0.141 |" in markdown
    assert "Budget: two minutes." in markdown
    assert "\nAll 4 runs finished.\n" in markdown
    assert [row["missing_seeds"] for row in rows] == ["", ""]
    assert "Total wall time: 4.0 min (runs: 4)." in markdown
    assert os.path.getsize(os.path.join(workdir, "results.png")) > 0


def test_a_single_seed_has_no_std():
    results = [sweep.RunResult("a", 0, {"miou": 0.5}, 10.0)]
    spec = sweep.Sweep(config="c.py", variants={"a": {}}, metrics=("miou",))
    (row,) = sweep.summarize(spec, results)
    assert row["miou_mean"] == 0.5 and math.isnan(row["miou_std"])


def test_run_directory_of_another_config_stops_the_sweep_before_training(
    tmp_path, capsys, monkeypatch
):
    """The second run's directory holds another loss: the first run must not train."""
    path = write_sweep_file(str(tmp_path), tiny_sweep_body("/nowhere", seeds=(0,)))
    spec = sweep.load_sweep(path)
    runs = sweep.resolve_runs(spec)
    workdir = str(tmp_path / "sweep")
    directory = runs[1].directory(workdir)
    os.makedirs(directory)
    written = json.loads(runs[1].config.to_json_best_effort())
    written["num_train_steps"] = 99  # a resumable change alone is no conflict
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(written, f)
    sweep.check_run_directories(runs, workdir)

    written["loss"]["name"] = "ce"
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(written, f)

    def no_training(config, workdir):
        raise AssertionError(f"trained {workdir}")

    monkeypatch.setattr(train, "train_and_evaluate", no_training)
    with pytest.raises(WorkdirError, match="config.loss.name is 'ce' there, 'dice' here"):
        sweep.run_sweep(spec, runs, workdir)
    assert sweep.main([path, f"--workdir={workdir}"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert len(error) == 1
    assert error[0].startswith(f"Sweep {path}: --workdir {directory} holds a run of another")
    assert not os.path.exists(runs[0].directory(workdir))


def fake_training(calls):
    """A stand-in for `train.train_and_evaluate` that notes its workdir and writes what a
    finished run leaves: config.json and a metrics.json whose miou is the seed / 10."""

    def train_and_evaluate(config, workdir):
        calls.append(workdir)
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort())
        metrics = {"miou": config.seed / 10, "boundary_iou": 0.5}
        for name in CLASSES:
            metrics.update({f"iou/{name}": 0.5, f"dice/{name}": 0.5})
        train.write_metrics(os.path.join(workdir, "metrics.json"), metrics)
        return metrics

    return train_and_evaluate


def test_print_commands_one_per_run_each_running_just_that_run(tmp_path, capsys, monkeypatch):
    path = write_sweep_file(str(tmp_path), tiny_sweep_body("/nowhere"))
    workdir = str(tmp_path / "my runs")
    assert sweep.main([path, "--print_commands", f"--workdir={workdir}"]) == 0
    commands = capsys.readouterr().out.splitlines()
    prefix = f"python -m jaxseg.sweep {path} --workdir='{workdir}' --run="
    names = ["ce/seed0", "ce/seed1", "dice/seed0", "dice/seed1"]
    assert commands == [prefix + name for name in names]
    assert sweep.main([path, "--print_commands"]) == 0
    default = capsys.readouterr().out.splitlines()[0]
    assert default == f"python -m jaxseg.sweep {path} --workdir=runs/tiny_sweep --run=ce/seed0"

    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", fake_training(calls))
    argv = shlex.split(commands[2])
    assert argv[:3] == ["python", "-m", "jaxseg.sweep"]
    assert sweep.main(argv[3:]) == 0
    assert calls == [os.path.join(workdir, "dice", "seed0")]
    assert sorted(os.listdir(workdir)) == ["dice"]
    assert os.listdir(os.path.join(workdir, "dice")) == ["seed0"]
    output = capsys.readouterr().out
    assert "[1/1] dice seed 0: training in" in output
    assert f"--workdir='{workdir}' --report" in output.splitlines()[-1]

    assert sweep.main(argv[3:]) == 0  # finished: a rerun of the command trains nothing
    assert len(calls) == 1 and "finished earlier, skipped" in capsys.readouterr().out


def test_unknown_run_is_one_line_naming_the_runs(tmp_path, capsys, monkeypatch):
    path = write_sweep_file(str(tmp_path), tiny_sweep_body("/nowhere"))
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", fake_training(calls))
    assert sweep.main([path, f"--workdir={tmp_path}", "--run=dise/seed1"]) == 2
    assert capsys.readouterr().err == (
        f"Sweep {path}: unknown run 'dise/seed1' (did you mean 'dice/seed1'?); "
        "the runs are ce/seed0, ce/seed1, dice/seed0, dice/seed1\n"
    )
    assert calls == [] and os.listdir(tmp_path) == ["tiny_sweep.py"]


def test_report_tabulates_the_finished_runs_and_names_the_missing(tmp_path, capsys, monkeypatch):
    """ce/seed0 finished; ce/seed1 finished with fewer steps than the sweep's (unfinished)."""
    path = write_sweep_file(str(tmp_path), tiny_sweep_body("/nowhere"))
    workdir = str(tmp_path / "sweep")
    runs = sweep.resolve_runs(sweep.load_sweep(path))
    fake_run_directory(runs[0].directory(workdir), (0.5, 0.2, 0.3), 30.0)
    fake_run_directory(runs[1].directory(workdir), (0.9, 0.9, 0.9), 30.0)
    shorter = json.loads(runs[1].config.to_json_best_effort())
    shorter["num_train_steps"] = 2
    with open(os.path.join(runs[1].directory(workdir), "config.json"), "w") as f:
        json.dump(shorter, f)
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", fake_training(calls))

    assert sweep.main([path, f"--workdir={workdir}", "--report"]) == 0
    assert calls == []
    missing = "ce/seed1, dice/seed0, dice/seed1"
    assert capsys.readouterr().out == (
        f"Results: {os.path.join(workdir, 'results.md')} (3 of 4 runs missing: {missing})\n"
    )
    rows = read_csv(os.path.join(workdir, "results.csv"))
    assert [(r["variant"], r["num_seeds"], r["missing_seeds"]) for r in rows] == [
        ("ce", "1", "1"),
        ("dice", "0", "0 1"),
    ]
    assert float(rows[0]["miou_mean"]) == 0.5 and math.isnan(float(rows[0]["miou_std"]))
    assert float(rows[0]["foreground_iou_mean"]) == pytest.approx(0.5)
    assert math.isnan(float(rows[1]["miou_mean"]))
    with open(os.path.join(workdir, "results.md")) as f:
        markdown = f.read()
    assert f"\nPartial results: 1 of 4 runs finished; 3 missing: {missing}.\n" in markdown
    assert "| ce | 1 | 0.500 | 0.500 | 0.400 | 0.200 |" in markdown
    assert "| dice | 0 | – | – | – | – |" in markdown
    assert "Total wall time: 0.5 min (runs: 1)." in markdown
    assert os.path.getsize(os.path.join(workdir, "results.png")) > 0

    assert sweep.main([path, f"--workdir={workdir}"]) == 0  # the sweep trains the missing three
    assert calls == [runs[k].directory(workdir) for k in (1, 2, 3)]
    rows = read_csv(os.path.join(workdir, "results.csv"))
    assert [(r["num_seeds"], r["missing_seeds"]) for r in rows] == [("2", ""), ("2", "")]
    assert float(rows[1]["miou_mean"]) == pytest.approx(0.05)


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_rerun_skips(tmp_path, capsys, monkeypatch):
    """2 variants x 2 seeds of a tiny U-Net; the table against numpy; a rerun trains nothing."""
    workdir = str(tmp_path / "sweep")
    path = write_sweep_file(str(tmp_path), tiny_sweep_body(str(tmp_path / "tfds")))
    assert sweep.main([path, f"--workdir={workdir}"]) == 0
    output = capsys.readouterr().out
    assert output.count("training in") == 4 and "[4/4] dice seed 1: done in" in output

    rows = read_csv(os.path.join(workdir, "results.csv"))
    assert [(row["variant"], row["num_seeds"]) for row in rows] == [("ce", "2"), ("dice", "2")]
    metrics_paths = {}
    for row in rows:
        runs = []
        for seed in (0, 1):
            metrics_paths[row["variant"], seed] = os.path.join(
                workdir, row["variant"], f"seed{seed}", "metrics.json"
            )
            with open(metrics_paths[row["variant"], seed]) as f:
                runs.append(json.load(f))
        expected = {
            "miou": [run["miou"] for run in runs],
            "boundary_iou": [run["boundary_iou"] for run in runs],
            "foreground_iou": [np.mean([run[f"iou/{c}"] for c in CLASSES[1:]]) for run in runs],
            "foreground_dice": [np.mean([run[f"dice/{c}"] for c in CLASSES[1:]]) for run in runs],
        }
        for name, values in expected.items():
            assert float(row[f"{name}_mean"]) == pytest.approx(np.mean(values)), name
            assert float(row[f"{name}_std"]) == pytest.approx(np.std(values, ddof=1)), name
    with open(os.path.join(workdir, "results.md")) as f:
        markdown = f.read()
    assert (
        "| variant | seeds | miou | foreground_iou | foreground_dice | boundary_iou |" in markdown
    )
    assert "Budget: one minute on 2 CPU cores." in markdown

    modified = {key: os.path.getmtime(value) for key, value in metrics_paths.items()}

    def no_training(config, workdir):
        raise AssertionError(f"retrained {workdir}")

    monkeypatch.setattr(train, "train_and_evaluate", no_training)
    assert sweep.main([path, f"--workdir={workdir}"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    assert {key: os.path.getmtime(value) for key, value in metrics_paths.items()} == modified
    assert read_csv(os.path.join(workdir, "results.csv")) == rows


@pytest.mark.parametrize(
    "name, num_runs, metric",
    [
        ("loss_imbalance", 12, "foreground_dice"),
        ("skip_connections", 6, "boundary_iou"),
        ("roi_extractor", 6, "mask_ap75"),
        ("panoptic_loss_weight", 9, "pq_stuff"),
    ],
)
def test_shipped_experiments_resolve(name, num_runs, metric):
    spec = sweep.load_sweep(os.path.join(sweep.REPOSITORY_ROOT, "experiments", f"{name}.py"))
    assert len(sweep.resolve_runs(spec)) == num_runs and metric in spec.metrics
    assert spec.budget.startswith("about") and f"experiments/{name}.py" in spec.description


def test_loss_imbalance_uses_the_small_rare_foreground_builder_config():
    path = os.path.join(sweep.REPOSITORY_ROOT, "experiments", "loss_imbalance.py")
    (run, *_) = sweep.resolve_runs(sweep.load_sweep(path))
    generation = shapes_source.shapes_config_from_data_config(run.config.data)
    expected = shapes.shapes_config(**shapes.SMALL_RARE_FOREGROUND)
    assert generation is expected
    assert (generation.max_shapes, generation.max_object_size) == (2, 0.12)
