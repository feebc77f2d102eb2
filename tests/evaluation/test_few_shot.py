import json

import pytest
import torch

import adformer
from adformer.cli import main
from adformer.data import load_root
from adformer.data.folders import load_anomalies, validation_split
from adformer.data.synthetic import make_synthetic_dataset
from adformer.errors import AdformerError
from adformer.evaluation.few_shot import (
    adapt,
    evaluate_few_shot,
    labelled_defects,
    support_sets,
    support_validation,
    training_validation,
)


@pytest.fixture(scope="module")
def regad_run(tmp_path_factory):
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("fewshot"), n_train=20, n_test_good=2, n_test_defect=2, size=64
    )  # 20 training images: `fit` holds out 2 per category, enough for its validation signal
    run = tmp_path_factory.mktemp("regad")
    torch.manual_seed(0)
    adformer.fit("regad", root, run, exclude=["dots"], preset="tiny", progress=False)
    return root, run


def test_support_sets_are_seeded_and_disjoint_from_the_rest(regad_run):
    root, _ = regad_run
    good = load_root(root, ["dots"])[0].train
    first = support_sets(good, 3, rounds=4, seed=7)
    assert first == support_sets(good, 3, rounds=4, seed=7)
    assert first != support_sets(good, 3, rounds=4, seed=8)
    for support, others in first:
        assert len(support) == 3 and not set(support) & set(others)
        assert set(support) | set(others) == set(good)
    with pytest.raises(AdformerError, match="fewer than 99 shots"):
        support_sets(good, 99)


def test_adapt_and_the_test_protocol_use_the_same_support_for_a_seed(regad_run, tmp_path):
    root, run = regad_run
    adapted, metrics = tmp_path / "adapted", tmp_path / "metrics.json"
    common = ["--data", str(root), "--category", "dots", "--shots", "2", "--seed", "3"]
    assert main(["adapt", str(run), *common, "--out", str(adapted)]) == 0
    assert main(["test", str(run), *common, "--rounds", "1", "--json", str(metrics)]) == 0
    support = adformer.load(adapted).adapted_["support"]
    assert json.loads(metrics.read_text())["support_sets"]["dots"] == [support]
    # and the library functions agree with each other the same way
    detector = adformer.load(run)
    adapted_on = adapt(detector, root, 2, category="dots", seed=5).adapted_["support"]
    result = evaluate_few_shot(detector, load_root(root, ["dots"]), 2, rounds=2, seed=5)
    assert result["support_sets"]["dots"][0] == adapted_on
    assert result["support_sets"]["dots"][1] != adapted_on
    assert result["rounds"] == 2 and result["image_auroc_std"] is not None


def test_few_shot_protocol_is_refused_for_other_methods(regad_run):
    root, _ = regad_run
    detector = adformer.create("uniad", preset="tiny")
    with pytest.raises(AdformerError, match="not a few-shot method"):
        adapt(detector, root, 2, category="dots")


def test_fit_validates_on_its_training_categories_and_stays_unadapted(regad_run):
    root, run = regad_run
    detector = adformer.load(run)
    validation = detector.validation_
    assert not detector.is_fitted and detector.normal_ is None  # still to be adapted
    # the excluded category is never looked at: each training category is adapted to
    # `shots` of its own training images and scored on its held-out ones
    assert list(validation["per_category"]) == detector.categories_ == ["grating"]
    assert validation["shots"] == detector.config.shots
    grating = validation["per_category"]["grating"]
    assert grating["n_good"] == 2 and grating["n_defect"] == 8
    assert validation["image_auroc"] == grating["image_auroc"]  # the mean over one category
    # reproducible from the same split and seed, and it is what adapting gives
    fitted, held = validation_split(load_root(root, ["grating"])[0].train)
    again = training_validation(detector, fitted, held, detector.config.seed)
    assert again["per_category"] == validation["per_category"]
    support = support_sets(fitted, detector.config.shots, 1, detector.config.seed)[0][0]
    assert detector.adapt(support, held, "grating").validation_ == grating
    assert training_validation(detector, fitted, held[:1]) is None  # 1 held-out image


def test_support_validation_holds_each_support_image_out_in_turn(
    regad_run, tmp_path, monkeypatch, capsys
):
    import shutil

    from adformer.evaluation import few_shot
    from adformer.methods.regad import RegAD

    root, run = regad_run
    detector = adformer.load(run)
    support = load_root(root, ["dots"])[0].train[:3]
    adapted_on, scored = [], []
    real_adapt, real_outputs = RegAD.adapt, few_shot.synthetic_outputs

    def recording_adapt(self, images, normals=(), category="adapted"):
        adapted_on.append(list(images))
        return real_adapt(self, images, normals, category)

    def recording_outputs(probe, normals, seed, normal_outputs=None):
        scored.append(list(normals))
        return real_outputs(probe, normals, seed, normal_outputs)

    monkeypatch.setattr(RegAD, "adapt", recording_adapt)
    monkeypatch.setattr(few_shot, "synthetic_outputs", recording_outputs)
    validation = support_validation(detector, support, "dots")
    assert scored == [[image] for image in support]  # each held out once, in order
    assert adapted_on == [[s for s in support if s != image] for image in support]
    assert validation["folds"] == 3 and validation["n_good"] == 3
    assert validation["n_defect"] == 3 * 4 and 0 <= validation["image_auroc"] <= 1
    assert detector.normal_ is None  # the detector itself stays unadapted
    assert support_validation(detector, support[:1]) is None
    monkeypatch.undo()
    # adapting to every image there is: the support images are the validation
    only = tmp_path / "three"
    only.mkdir()
    for sample in support:
        shutil.copy(sample.path, only / sample.path.name)
    assert (
        main(["adapt", str(run), "--data", str(only), "--shots", "3", "--out", str(tmp_path / "a")])
        == 0
    )
    assert (
        "each support image held out in turn vs synthetic defects: image AUROC"
        in capsys.readouterr().out
    )
    assert adformer.load(tmp_path / "a").validation_["folds"] == 3


def test_adapt_weighs_labelled_defects_against_good_images_never_adapted_on(
    regad_run, tmp_path, capsys
):
    import shutil

    root, run = regad_run
    defects = tmp_path / "defects"  # the layout `fit --anomalies` takes: DIR/CAT/test/<defect>
    for part in ("test", "ground_truth"):
        shutil.copytree(root / "dots" / part, defects / "dots" / part)
    shutil.rmtree(defects / "dots" / "test" / "good")
    n_defects = sum(1 for _ in (defects / "dots" / "test").rglob("*.png"))
    common = ["--data", str(root), "--category", "dots", "--shots", "2"]
    # with other good images: they and the defects set the threshold (F1) and the validation
    out = tmp_path / "adapted"
    assert main(["adapt", str(run), *common, "--anomalies", str(defects), "--out", str(out)]) == 0
    assert f"vs {n_defects} labelled defects: image AUROC" in capsys.readouterr().out
    adapted = adformer.load(out)
    labelled = adapted.validation_["labelled"]
    assert labelled["n_defect"] == n_defects and labelled["n_good"] == 18  # 20 − 2 shots
    assert adapted.threshold_source_.startswith("F1-optimal")
    # with the support images alone: each held out in turn against the defects, which each
    # fold's model scores (pixel metrics too: the defects have masks of the map's size)
    support = load_root(root, ["dots"])[0].train[:3]
    detector = adformer.load(run)
    found = load_anomalies(defects, ["dots"])["dots"]
    validation = support_validation(detector, support, "dots", defects=found)
    assert validation["labelled"]["n_good"] == 3
    assert validation["labelled"]["n_defect"] == n_defects  # each scored by the 3 folds
    assert 0 <= validation["labelled"]["pixel_auroc"] <= 1
    assert "labelled" not in support_validation(detector, support, "dots")
    # defects need good images beside the support ones, and must be of the adapted category
    with pytest.raises(AdformerError, match="give normals too"):
        detector.adapt(support, (), "dots", anomalies=found)
    with pytest.raises(AdformerError, match="not being trained or adapted"):
        adapt(detector, root, 2, category="grating", anomalies=defects)
    # or any folder of defective images, the counterpart of a folder of good images
    flat = labelled_defects(defects / "dots" / "test", "new")
    assert sorted(s.path.name for s in flat) == sorted(s.path.name for s in found)
    assert {(s.category, s.label, s.mask_path) for s in flat} == {("new", 1, None)}
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdformerError, match="no defect images"), pytest.warns(UserWarning):
        labelled_defects(tmp_path / "empty", "new")
    with pytest.raises(AdformerError, match="anomaly folder not found"):
        labelled_defects(tmp_path / "missing", "new")
