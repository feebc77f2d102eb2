import csv
import json
import subprocess
import sys

import pytest
from PIL import Image

from adformer.cli import main

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


def _fit_args(tiny, root, out, extra=()):
    sets = []
    for key in (
        "hidden_dim",
        "ffn_dim",
        "heads",
        "encoder_layers",
        "decoder_layers",
        "neighbour_size",
        "batch_size",
        "lr",
    ):
        sets += ["--set", f"{key}={tiny[key]}"]
    return [
        "fit",
        "--method",
        "uniad",
        "--data",
        str(root),
        "--out",
        str(out),
        "--preset",
        "cpu",
        "--image-size",
        "96",
        "--epochs",
        "3",
        *sets,
        *extra,
    ]


def test_fit_test_predict(tiny_uniad, synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_fit_args(tiny_uniad, synthetic_root, run, ["--category", "dots"])) == 0
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()

    out = tmp_path / "out.json"
    assert main(["test", str(run), "--data", str(synthetic_root), "--json", str(out)]) == 0
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
    overlay = Image.open(pred / "000_overlay.png")
    assert overlay.size == (96, 96) and overlay.mode == "RGB"


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
