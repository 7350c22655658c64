import pandas as pd
import pytest

from pipeline.mitigation import jtt_error_ids, jtt_upsampled_datalist, jtt_upweight

ITEMS = [{"id": f"00{i}", "image": f"img{i}.png", "label": i % 2} for i in range(6)]


def _predictions():
    # ids 001 (label 1, prob 0.2) and 004 (label 0, prob 0.9) are misclassified at 0.5
    return {
        "id": [f"00{i}" for i in range(6)],
        "label": [0, 1, 0, 1, 0, 1],
        "prob": [0.1, 0.2, 0.4, 0.5, 0.9, 0.99],
    }


def test_error_ids_from_csv_keep_string_ids(tmp_path):
    path = tmp_path / "predictions.csv"
    pd.DataFrame(_predictions()).to_csv(path, index=False)
    assert jtt_error_ids(path) == ["001", "004"]
    assert jtt_error_ids(str(path), threshold=0.6) == ["001", "003", "004"]


def test_error_ids_from_arrays_and_errors(tmp_path):
    assert jtt_error_ids(_predictions()) == ["001", "004"]
    path = tmp_path / "p.csv"
    pd.DataFrame({"id": [1], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"p\.csv.*'prob'"):
        jtt_error_ids(path)
    bad = dict(_predictions(), prob=[0.1, 0.2, 0.4, 0.5, 0.9, 1.5])
    with pytest.raises(ValueError, match="prob"):
        jtt_error_ids(bad)
    with pytest.raises(ValueError, match="duplicate"):
        jtt_error_ids(dict(_predictions(), id=["a"] * 6))
    with pytest.raises(ValueError, match="threshold"):
        jtt_error_ids(_predictions(), threshold=1.0)


def test_upsampled_datalist_repeats_exactly_the_error_set():
    before = [dict(item) for item in ITEMS]
    out = jtt_upsampled_datalist(ITEMS, ["001", "004"], upweight=5)
    counts = pd.Series([item["id"] for item in out]).value_counts().to_dict()
    assert counts == {"000": 1, "001": 5, "002": 1, "003": 1, "004": 5, "005": 1}
    assert [item["id"] for item in out][:7] == ["000"] + ["001"] * 5 + ["002"]
    assert ITEMS == before
    out[0]["label"] = 9
    assert ITEMS[0]["label"] == 0


@pytest.mark.parametrize(
    "items, error_ids, upweight, match",
    [
        (ITEMS, ["999"], 3, "999"),
        (ITEMS, ["001"], 0, "upweight"),
        (ITEMS, ["001"], 2.5, "upweight"),
        (ITEMS + ITEMS[:1], ["001"], 2, "unique"),
        ([{"image": "x"}], [], 2, "'id'"),
    ],
)
def test_upsampling_rejects_bad_input(items, error_ids, upweight, match):
    with pytest.raises(ValueError, match=match):
        jtt_upsampled_datalist(items, error_ids, upweight)


@pytest.mark.parametrize(
    "n_items, n_errors, expected",
    [(100, 5, 19), (100, 4, 24), (100, 0, 1), (100, 60, 1), (10, 10, 1), (103, 10, 9)],
)
def test_balanced_upweight_makes_the_error_set_weigh_as_much_as_the_rest(n_items, n_errors, expected):
    upweight = jtt_upweight("balanced", n_items, n_errors)
    assert upweight == expected
    if 0 < n_errors <= n_items / 2:  # the repeated errors weigh within one copy of the rest
        assert abs(upweight * n_errors - (n_items - n_errors)) <= n_errors / 2 + 1e-9


def test_an_integer_upweight_is_kept_and_bad_settings_are_named():
    assert jtt_upweight(6, 100, 5) == 6
    assert jtt_upweight(6.0, 100, 5) == 6
    for bad in (0, 2.5, True, "auto", None):
        with pytest.raises(ValueError, match=r"jtt_upweight must be an integer >= 1 or 'balanced', got"):
            jtt_upweight(bad, 100, 5)
    with pytest.raises(ValueError, match="7 errors among 5 items"):
        jtt_upweight("balanced", 5, 7)
