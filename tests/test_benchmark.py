"""`adformer benchmark`: a small grid runs, writes its tables, and a rerun resumes it without
fitting anything again."""

from __future__ import annotations

import csv

import pytest

from adformer.benchmark import run_benchmark
from adformer.cli import main
from adformer.errors import AdformerError


def test_grid_then_resume(synthetic_root, tmp_path, capsys):
    out = tmp_path / "bench"
    methods = ["uniad", "regad"]
    run_benchmark(synthetic_root, methods, out, seeds=[0, 1], preset="tiny", shots=2, rounds=1)
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == [f"{m}-seed{s}.json" for m in sorted(methods) for s in (0, 1)]
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 2  # models × seeds × categories
    assert all(0 <= float(r["image_auroc"]) <= 1 and float(r["fit_s"]) > 0 for r in rows)
    table = (out / "results.md").read_text()
    assert "| mean | uniad |" in table and " ± " in table and "| regad |" in table

    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    args = ["benchmark", "--data", str(synthetic_root), "--methods", *methods, "--seeds", "0", "1"]
    assert main([*args, "--preset", "tiny", "--shots", "2", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps  # nothing refit
    assert "| mean | regad |" in capsys.readouterr().out


def test_bad_grid_options_fail_before_any_work(synthetic_root, tmp_path):
    with pytest.raises(AdformerError, match="unknown peers"):
        run_benchmark(synthetic_root, ["uniad"], tmp_path / "b", peers=["patchcor"])
    with pytest.raises(AdformerError, match="unknown option"):
        run_benchmark(synthetic_root, ["uniad"], tmp_path / "b", preset="tiny", nope=1)
    assert not (tmp_path / "b" / "cells").exists()
