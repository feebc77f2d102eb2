import pytest

from adformer.data.elpv import load_elpv
from adformer.errors import AdformerError


def test_elpv_categories_and_labels():
    mono, poly = load_elpv()
    assert (mono.name, poly.name) == ("mono", "poly")
    for category in (mono, poly):
        assert not category.has_masks
        assert all(s.label == 0 for s in category.train)
        labels = {s.label for s in category.test}
        assert labels == {0, 1}
        assert not {s.path for s in category.train} & {s.path for s in category.test}
    # 588 good mono cells (probability 0), 369 defective (>= 2/3); 1/3 cells are left out
    assert len(mono.train) + sum(s.label == 0 for s in mono.test) == 588
    assert sum(s.label for s in mono.test) == 369


def test_elpv_split_is_seeded():
    a, b, c = (
        load_elpv(["mono"], seed=1)[0],
        load_elpv(["mono"], seed=1)[0],
        load_elpv(["mono"], seed=2)[0],
    )
    assert [s.path for s in a.train] == [s.path for s in b.train]
    assert [s.path for s in a.train] != [s.path for s in c.train]


def test_elpv_limits():
    (mono,) = load_elpv(["mono"], max_train=10, max_test=12)
    assert len(mono.train) == 10 and len(mono.test) == 12
    assert {s.label for s in mono.test} == {0, 1}


def test_elpv_unknown_category():
    with pytest.raises(AdformerError, match="mono"):
        load_elpv(["cable"])
