import json

from PIL import Image

from adformer.demo import EXAMPLES, run_demo


def test_demo_writes_metrics_examples_and_table(tmp_path, tiny_uniad, capsys):
    options = {k: v for k, v in tiny_uniad.items() if k not in ("preset", "epochs")}
    metrics = run_demo(tmp_path, max_train=6, max_test=8, epochs=1, device="cpu", **options)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["image_auroc"] == metrics["image_auroc"] is not None
    assert set(written["per_category"]) == {"mono", "poly"} and written["aupro"] is None
    grid = Image.open(tmp_path / "examples.png")
    assert grid.width == 3 * 160 and grid.height == 4 * EXAMPLES * (160 + 14)
    printed = capsys.readouterr().out
    assert "mono" in printed and "poly" in printed and "mean" in printed
    assert (tmp_path / "run" / "model.safetensors").is_file()
