import numpy as np
import pytest
from scipy import ndimage
from scipy.integrate import trapezoid

from adformer.evaluation.evaluate import KEYS, Evaluation, merge
from adformer.evaluation.metrics import aupro, auroc, f1_max, image_metrics, pro_curve


def brute_force_aupro(masks, maps, max_fpr=0.3):
    """Direct definition: every threshold, every region, no cumulative tricks."""
    points = [(0.0, 0.0)]
    normal = ~masks
    per_image = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        per_image += [(i, labelled == r) for r in range(1, count + 1)]
    for t in sorted(np.unique(maps), reverse=True):
        above = maps >= t
        fpr = (above & normal).sum() / normal.sum()
        pro = np.mean([above[i][region].mean() for i, region in per_image])
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    keep = fpr <= max_fpr
    x, y = list(fpr[keep]), list(pro[keep])
    nxt = np.argmax(fpr > max_fpr) if (fpr > max_fpr).any() else None
    if nxt is not None and x[-1] < max_fpr:
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        x.append(max_fpr)
        y.append(y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0))
    return trapezoid(y, x) / max_fpr


@pytest.mark.parametrize("seed", range(5))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 12, 12), bool)
    for m in masks:
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, 9, 2)
            m[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
    maps = rng.random(masks.shape) + masks * rng.uniform(0, 1)
    maps = np.round(maps, 2)  # ties, as real maps have
    assert aupro(masks, maps) == pytest.approx(brute_force_aupro(masks, maps), abs=1e-9)


def test_aupro_extremes():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    fpr, pro = pro_curve(masks, -masks.astype(float))
    assert fpr[0] == 0 and pro[-1] == pytest.approx(1.0)
    assert aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))) is None


def test_auroc_is_never_flipped_and_undefined_is_none():
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.9, 0.8, 0.1, 0.2])) == 0.0
    assert auroc(np.zeros(4), np.arange(4)) is None
    assert f1_max(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert set(image_metrics(labels, np.arange(4.0))) == {"image_auroc", "image_ap", "image_f1_max"}


def test_merged_per_category_results_take_the_mean_of_all_their_categories():
    def part(name, value, pixel):
        row = dict.fromkeys(KEYS) | {"image_auroc": value, "pixel_auroc": pixel}
        return Evaluation({**row, "method": "adtr", "per_category": {name: row}})

    merged = merge([part("a", 0.6, 0.8), part("b", 1.0, None)]).metrics
    assert set(merged["per_category"]) == {"a", "b"} and merged["method"] == "adtr"
    assert merged["image_auroc"] == pytest.approx(0.8)  # not the first part's 0.6
    assert merged["pixel_auroc"] == pytest.approx(0.8)  # a category without masks is skipped
