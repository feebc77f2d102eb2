"""`adformer benchmark`: a small grid runs, writes its tables, and a rerun resumes it without
fitting anything again."""

from __future__ import annotations

import csv
import json
import re

import pytest

from adformer.benchmark import fit_plan, render, run_benchmark
from adformer.cli import main
from adformer.data.types import CategoryData
from adformer.errors import AdformerError
from adformer.methods.uniad import UniAD


def test_grid_then_resume(synthetic_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    methods = ["uniad", "regad"]
    run_benchmark(
        synthetic_root, methods, out, seeds=[0, 1], preset="tiny", shots=2, rounds=1, progress=True
    )
    said = capsys.readouterr().err
    assert "benchmark [1/4] uniad seed 0: fitting and testing" in said
    assert re.search(r"benchmark \[4/4\] regad seed 1: done in \d+ s", said)
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == [f"{m}-seed{s}.json" for m in sorted(methods) for s in (0, 1)]
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 2  # models × seeds × categories
    assert all(0 <= float(r["image_auroc"]) <= 1 and float(r["fit_s"]) > 0 for r in rows)
    # fit's validation signal sits beside the test metrics: what a choice of settings is made on
    # (a few-shot fit's: on its training categories)
    assert all(0 <= float(r["validation_image_auroc"]) <= 1 for r in rows)
    # a few-shot method is trained for the k it is tested with, as the paper trains one per k
    assert json.loads((out / "cells" / "regad-seed0.json").read_text())["config"]["shots"] == 2
    table = (out / "results.md").read_text()
    assert "| mean | uniad |" in table and " ± " in table and "| regad |" in table
    assert "| model | validation I-AUROC | validation P-AUROC | fit s |" in table
    older = [json.loads(p.read_text()) for p in (out / "cells").iterdir()]
    for cell in older:
        cell.pop("validation", None)
    assert "validation" not in render(older, methods, [])  # cells from before the column

    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    args = ["benchmark", "--data", str(synthetic_root), "--methods", *methods, "--seeds", "0", "1"]
    args += ["--preset", "tiny", "--shots", "2", "--rounds", "1"]
    assert main([*args, "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps  # nothing refit
    printed = capsys.readouterr()
    assert "| mean | regad |" in printed.out
    # the CLI says where the grid is, cell by cell (a rerun: every cell kept)
    assert "benchmark [1/4] uniad seed 0: finished in an earlier run" in printed.err
    assert "benchmark [4/4] regad seed 1: finished in an earlier run" in printed.err

    with pytest.raises(AdformerError, match=r"other settings \(max_train differ"):
        run_benchmark(
            synthetic_root, methods, out, seeds=[0], preset="tiny", shots=2, rounds=1, max_train=3
        )
    # a cell fitted before an option existed does not list it: it ran at the option's default,
    # and is reused while the preset keeps that default
    path = out / "cells" / "uniad-seed0.json"
    cell = json.loads(path.read_text())
    del cell["config"]["downsample"]
    path.write_text(json.dumps(cell))
    stamp = path.stat().st_mtime_ns
    run_benchmark(synthetic_root, methods, out, seeds=[0, 1], preset="tiny", shots=2, rounds=1)
    assert path.stat().st_mtime_ns == stamp
    monkeypatch.setitem(UniAD.presets, "tiny", {**UniAD.presets["tiny"], "downsample": "area"})
    with pytest.raises(AdformerError, match=r"uniad-seed0.json .* \(downsample differ"):
        run_benchmark(synthetic_root, methods, out, seeds=[0], preset="tiny", shots=2, rounds=1)
    # the same preset name, another configuration behind it: the finished cell is not reused
    monkeypatch.setitem(UniAD.presets, "tiny", {**UniAD.presets["tiny"], "hidden_dim": 16})
    with pytest.raises(
        AdformerError, match=r"uniad-seed0.json was fitted with another .*hidden_dim"
    ):
        run_benchmark(synthetic_root, methods, out, seeds=[0], preset="tiny", shots=2, rounds=1)


def test_max_train_takes_a_seeded_subset(synthetic_root, tmp_path):
    from adformer.benchmark import load_categories

    first = load_categories(synthetic_root, None, None, 0, 3)
    again = load_categories(synthetic_root, None, None, 0, 3)
    other = load_categories(synthetic_root, None, None, 1, 3)
    assert all(len(c.train) == 3 for c in first)
    assert [s.path for s in first[0].train] == [s.path for s in again[0].train]
    paths = [[s.path for s in c.train] for c in first]
    assert paths != [[s.path for s in c.train] for c in other]


def test_bad_grid_options_fail_before_any_work(synthetic_root, tmp_path):
    with pytest.raises(AdformerError, match="unknown peers"):
        run_benchmark(synthetic_root, ["uniad"], tmp_path / "b", peers=["patchcor"])
    with pytest.raises(AdformerError, match="unknown option"):
        run_benchmark(synthetic_root, ["uniad"], tmp_path / "b", preset="tiny", nope=1)
    with pytest.raises(AdformerError, match="labelled_validation takes ELPV"):
        run_benchmark(
            synthetic_root, ["uniad"], tmp_path / "b", preset="tiny", labelled_validation=5
        )
    assert not (tmp_path / "b" / "cells").exists()


def test_labelled_validation_scores_defects_never_trained_on(synthetic_root, monkeypatch):
    """A method that could learn from the grid's labelled defects (ADTR+) is fitted without
    them; its cell scores them against `fit`'s held-out good images, and the tables show it."""
    from adformer.benchmark import _method_cell
    from adformer.data import load_root
    from adformer.methods.base import Detector

    (dots,) = load_root(synthetic_root, ["dots"])
    dots.anomalies = [s for s in dots.test if s.label][:3]
    given, fit = [], Detector.fit

    def spy(self, data, **options):
        given.append([c.anomalies for c in data])
        return fit(self, data, **options)

    monkeypatch.setattr(Detector, "fit", spy)
    cell = _method_cell("adtr", [dots], 0, "tiny", 4, 1, False, {})
    assert given == [[[]]]
    assert 0 <= cell["labelled_validation"]["image_auroc"] <= 1
    cell |= {"model": "adtr", "seed": 0, "peak_mb": None}
    assert "labelled validation I-AUROC" in render([cell], ["adtr"], [])


def test_few_shot_labelled_validation_holds_support_images_out_never_adapting_on_defects(
    synthetic_root, monkeypatch
):
    """A few-shot cell weighs the tested category's labelled defects against each support
    image of the test's rounds held out in turn; no defect is ever adapted on."""
    from adformer.benchmark import _method_cell
    from adformer.data import load_root
    from adformer.methods.regad import RegAD

    found = load_root(synthetic_root, ["dots", "grating"])
    for category in found:
        category.anomalies = [s for s in category.test if s.label][:2]
    bad = {s.path for c in found for s in c.anomalies}
    adapted, adapt = [], RegAD.adapt

    def spy(self, support, *args, **kwargs):
        adapted.extend(s.path for s in support)
        return adapt(self, support, *args, **kwargs)

    monkeypatch.setattr(RegAD, "adapt", spy)
    cell = _method_cell("regad", found, 0, "tiny", 2, 1, False, {})
    assert adapted and not bad & set(adapted)
    assert 0 <= cell["labelled_validation"]["image_auroc"] <= 1


def test_fit_plan_per_learning_type():
    a, b, c = (CategoryData(name, [], [], has_masks=False) for name in "abc")
    plan = {m: fit_plan(m, [a, b, c]) for m in ("adtr", "uniad", "regad")}
    assert plan["adtr"] == [([a], [a]), ([b], [b]), ([c], [c])]  # one model per category
    assert plan["uniad"] == [([a, b, c], [a, b, c])]  # one model for all
    assert plan["regad"] == [([b, c], [a]), ([a, c], [b]), ([a, b], [c])]  # leave one out
    with pytest.raises(AdformerError, match="leave-one-out"):
        fit_plan("regad", [a])


def test_peer_cells_are_reused_only_with_the_same_settings(synthetic_root, tmp_path, monkeypatch):
    """A peer's cell stores what it was fitted with; a resumed grid refits none of the peers
    it agrees with and refuses a k-shot PatchCore cell fitted with a coreset (cells from before
    peers stored their settings ran one)."""
    from adformer import benchmark

    fitted = []

    def fake(task, *args):  # the peers need anomalib, a benchmark-only extra
        fitted.append(task.__name__)
        metrics = dict.fromkeys(["image_auroc", "pixel_auroc", "aupro", "f1_max"], 0.5)
        return benchmark._cell({"dots": metrics}, 1.0, 1.0) | {"peak_mb": None}

    monkeypatch.setattr(benchmark, "_in_own_process", fake)
    out = tmp_path / "bench"
    grid = dict(categories=["dots"], preset="tiny", shots=2, rounds=1, peers=["patchcore"])
    run_benchmark(synthetic_root, ["regad"], out, **grid)
    assert sorted(fitted) == ["_few_shot_peer_cell", "_method_cell", "_peer_cell"]
    cell = {p.stem: json.loads(p.read_text()) for p in (out / "cells").iterdir()}
    assert cell["patchcore-seed0"]["config"]["coreset"] == 0.01
    assert cell["patchcore-k2-seed0"]["config"]["coreset"] == 1.0  # every patch of the k images
    run_benchmark(synthetic_root, ["regad"], out, **grid)
    assert len(fitted) == 3  # nothing refitted

    for name in ("patchcore-seed0", "patchcore-k2-seed0"):  # as written before this check
        del cell[name]["config"]
        (out / "cells" / f"{name}.json").write_text(json.dumps(cell[name]))
    with pytest.raises(AdformerError, match=r"patchcore-k2-seed0.json was fitted with .*coreset"):
        run_benchmark(synthetic_root, ["regad"], out, **grid)
    (out / "cells" / "patchcore-k2-seed0.json").unlink()
    run_benchmark(synthetic_root, ["regad"], out, **grid)
    assert fitted[3:] == ["_few_shot_peer_cell"]  # the whole-category peer's cell is kept
