import csv
import json
import subprocess
import sys

import pytest
from PIL import Image

from adformer.cli import main
from adformer.data.synthetic import make_synthetic_dataset

CONTRACT = {
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "image_f1_max",
    "per_category",
    "seed",
    "image_size",
    "method",
}


def _fit_args(tiny, root, out, extra=(), method="uniad"):
    keys = ["hidden_dim", "ffn_dim", "heads", "encoder_layers", "decoder_layers"]
    keys += ["batch_size", "lr"] + (["neighbour_size"] if method == "uniad" else [])
    sets = [part for key in keys for part in ("--set", f"{key}={tiny[key]}")]
    return [
        *("fit", "--method", method, "--data", str(root), "--out", str(out)),
        *("--preset", "cpu", "--image-size", "96", "--epochs", "3", *sets, *extra),
    ]


def test_fit_test_predict(tiny_uniad, synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    capped = ["--category", "dots", "--set", "max_steps=1"]  # fewer steps than one epoch
    assert main(_fit_args(tiny_uniad, synthetic_root, run, capped)) == 0
    assert "best epoch 1/1 (max_steps=1 a category allows 1 of 3)" in capsys.readouterr().out
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()

    out, report = tmp_path / "out.json", tmp_path / "report"
    test_args = ["test", str(run), "--data", str(synthetic_root), "--json", str(out)]
    assert main([*test_args, "--report", str(report)]) == 0
    page = (report / "index.html").read_text()
    assert "<svg" in page and "examples_dots.png" in page  # curves and examples
    assert Image.open(report / "examples_dots.png").size[0] == 3 * 160  # image | map | overlay
    metrics = json.loads(out.read_text())
    assert CONTRACT <= set(metrics) and list(metrics["per_category"]) == ["dots"]
    assert metrics["method"] == "uniad" and metrics["image_size"] == 96
    assert "dots" in capsys.readouterr().out

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    good = synthetic_root / "dots" / "test" / "good"
    pred = tmp_path / "pred"
    with pytest.warns(UserWarning, match="broken.png"):
        assert main(["predict", str(run), str(good), str(broken), "--out", str(pred)]) == 0
    rows = list(csv.DictReader(open(pred / "scores.csv")))
    assert len(rows) == 6 and all(float(r["score"]) > 0 for r in rows)
    overlay = Image.open(pred / rows[0]["overlay"])
    assert overlay.size == (96, 96) and overlay.mode == "RGB"

    # same file names in different folders (good/000.png, scratch/000.png) keep both overlays
    every = tmp_path / "every"
    assert (
        main(["predict", str(run), str(synthetic_root / "dots" / "test"), "--out", str(every)]) == 0
    )
    rows = list(csv.DictReader(open(every / "scores.csv")))
    assert len(rows) == 12 and len({r["overlay"] for r in rows}) == 12
    assert all((every / r["overlay"]).is_file() for r in rows)
    assert "scratch__000_overlay.png" in {r["overlay"] for r in rows}


def test_tiling_is_fitted_kept_and_overridden(tiny_uniad, synthetic_root, tmp_path, capsys):
    run, good = tmp_path / "run", synthetic_root / "dots" / "test" / "good"
    tiling = ["--category", "dots", "--tile", "64", "--tile-overlap", "16"]
    assert main(_fit_args(tiny_uniad, synthetic_root, run, tiling)) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["tile"], config["tile_overlap"]) == (64, 16)
    assert main(["test", str(run), "--data", str(synthetic_root)]) == 0

    scores = {}
    for name, extra in {"fitted": [], "whole": ["--tile", "0"], "finer": ["--tile", "48"]}.items():
        assert main(["predict", str(run), str(good), "--out", str(tmp_path / name), *extra]) == 0
        rows = csv.DictReader(open(tmp_path / name / "scores.csv"))
        scores[name] = [float(r["score"]) for r in rows]
    assert len(scores["fitted"]) == 6
    assert scores["fitted"] != scores["whole"] and scores["fitted"] != scores["finer"]
    capsys.readouterr()
    assert main(["predict", str(run), str(good), "--out", str(tmp_path / "x"), "--tile", "8"]) == 2
    assert "at least 16" in capsys.readouterr().err


def test_intra_per_category_fit_report_and_reconstruction_panels(synthetic_root, tmp_path):
    run = tmp_path / "run"
    tiny = ["--set", "dim=16", "--set", "depth=2", "--set", "heads=2", "--set", "window=5"]
    tiny += ["--set", "windows_per_image=8", "--set", "windows_per_epoch=null"]
    tiny += ["--set", "patch_size=8"]
    fit = ["fit", "--method", "intra", "--data", str(synthetic_root), "--out", str(run)]
    assert main([*fit, "--preset", "cpu", "--image-size", "48", "--epochs", "2", *tiny]) == 0
    assert {p.name for p in run.iterdir()} >= {"dots", "grating", "runs.json"}  # per category

    report = tmp_path / "report"
    assert main(["test", str(run), "--data", str(synthetic_root), "--report", str(report)]) == 0
    grid = Image.open(report / "examples_grating.png")
    assert grid.size[0] == 4 * 160  # image | reconstruction | map | overlay

    pred = tmp_path / "pred"
    images = str(synthetic_root / "dots" / "test" / "scratch")
    assert main(["predict", str(run), images, "--category", "dots", "--out", str(pred)]) == 0
    rows = list(csv.DictReader(open(pred / "scores.csv")))
    assert rows and all((pred / r["panel"]).is_file() for r in rows)
    assert Image.open(pred / rows[0]["panel"]).size[0] == 4 * 160


def test_image_size_auto_is_accepted_and_nonsense_refused(capsys):
    from adformer.cli import build_parser

    args = build_parser().parse_args(
        ["fit", "--method", "intra", "--data", "d", "--out", "o", "--image-size", "auto"]
    )
    assert args.image_size == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["fit", "--method", "intra", "--data", "d", "--out", "o", "--image-size", "big"]
        )


def test_set_null_reaches_the_model_and_unset_flags_keep_the_preset():
    from adformer.cli import _options, build_parser

    fit = ["fit", "--method", "intra", "--data", "d", "--out", "o", "--preset", "cpu"]
    args = build_parser().parse_args([*fit, "--set", "patience=null", "--epochs", "3"])
    assert _options(args) == {"epochs": 3, "patience": None}
    assert _options(build_parser().parse_args(fit)) == {}


def test_resume_after_fit(tiny_uniad, synthetic_root, tmp_path):
    run = tmp_path / "run"
    assert main(_fit_args(tiny_uniad, synthetic_root, run, ["--category", "dots"])) == 0
    args = _fit_args(tiny_uniad, synthetic_root, run, ["--category", "dots", "--resume"])
    args[args.index("--epochs") + 1] = "4"
    # a different epoch count is a different config: refused, nothing lost
    assert main(args) == 2
    assert main(_fit_args(tiny_uniad, synthetic_root, run, ["--category", "dots", "--resume"])) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--method", "uniad", "--data", "/nope", "--out", "x"], "data root not found"),
        (["fit", "--method", "nope", "--data", "elpv", "--out", "x"], "unknown method"),
        (["test", "/nope", "--data", "elpv"], "not an adformer bundle"),
        (["predict", "/nope", "a.png", "--out", "x"], "not an adformer bundle"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bundle_from_another_format_version(fitted_uniad, tmp_path, capsys):
    import shutil

    _, run = fitted_uniad
    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["format_version"] = 99
    (copy / "config.json").write_text(json.dumps(meta))
    assert main(["test", str(copy), "--data", "elpv"]) == 2
    assert "format 99" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom adformer.cli import build_parser\n"
        "build_parser().format_help()\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_adtr_trains_one_model_per_category_tests_them_all_and_calibrates_them(
    tiny_uniad, synthetic_root, tmp_path, capsys
):
    run = tmp_path / "adtr"
    args = _fit_args(tiny_uniad, synthetic_root, run, ["--synthetic-anomalies", "4"], "adtr")
    assert main(args) == 0
    assert (run / "dots" / "model.safetensors").is_file()
    assert (run / "grating" / "model.safetensors").is_file()
    out = tmp_path / "adtr.json"
    assert main(["test", str(run), "--data", str(synthetic_root), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics["per_category"]) == {"dots", "grating"}
    per_category = [r["image_auroc"] for r in metrics["per_category"].values()]
    assert metrics["image_auroc"] == pytest.approx(sum(per_category) / 2)  # both models' mean
    assert metrics["per_category"]["dots"]["trained_on"] == ["dots"]
    image = str(synthetic_root / "dots" / "test" / "good" / "000.png")
    assert main(["predict", str(run), image, "--out", str(tmp_path / "p")]) == 2
    assert (
        main(["predict", str(run), image, "--out", str(tmp_path / "p"), "--category", "dots"]) == 0
    )
    # a scoring change without training: every model thresholded again, into a new run
    before = json.loads((run / "dots" / "config.json").read_text())
    calibrate = ["calibrate", str(run), "--data", str(synthetic_root), "--out"]
    assert main([*calibrate, str(tmp_path / "p8"), "--set", "score_pool=8"]) == 0
    assert capsys.readouterr().out.count("calibrated adtr on ") == 2
    for category in ("dots", "grating"):
        after = json.loads((tmp_path / "p8" / category / "config.json").read_text())
        assert after["config"]["score_pool"] == 8 and after["state"]["categories"] == [category]
        assert (
            after["state"]["threshold"]
            != json.loads((run / category / "config.json").read_text())["state"]["threshold"]
        )
    assert json.loads((run / "dots" / "config.json").read_text()) == before  # run untouched
    assert main(["test", str(tmp_path / "p8"), "--data", str(synthetic_root)]) == 0
    # an option that needs training is refused, and nothing is written
    assert main([*calibrate, str(tmp_path / "e"), "--set", "epochs=9"]) == 2
    assert "change(s) training" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_fit_validates_on_labelled_defects(tiny_uniad, synthetic_root, tmp_path, capsys):
    defects = make_synthetic_dataset(
        tmp_path / "defects", ("dots",), n_train=1, n_test_good=0, n_test_defect=4, size=96, seed=5
    )
    run, extra = tmp_path / "run", ["--category", "dots", "--set", "max_steps=1"]
    extra += ["--set", "val_fraction=0.2", "--anomalies", str(defects)]
    assert main(_fit_args(tiny_uniad, synthetic_root, run, extra)) == 0
    assert "vs 4 labelled defects: image AUROC" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["state"]["validation"]["labelled"]["n_defect"] == 4
    assert config["state"]["threshold_source"].startswith("F1-optimal")


def test_bad_anomaly_options_fail_before_training(synthetic_root, tmp_path, capsys):
    base = ["fit", "--method", "adtr", "--data", str(synthetic_root), "--out", str(tmp_path / "r")]
    assert main(base + ["--synthetic-anomalies", "-3"]) == 2
    assert "synthetic_anomalies" in capsys.readouterr().err
    assert main(base + ["--anomalies", str(tmp_path / "none")]) == 2
    assert "anomaly folder not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
