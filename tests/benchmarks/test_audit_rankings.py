"""benchmarks.audit_rankings: the scan's two rankings side by side."""

import json

from benchmarks import audit_rankings


def _entry(name, kind, region, rate, size=4):
    return {"name": name, "kind": kind, "family": "patch" if kind == "localized" else "blur", "region": region,
            "params": {"size_px": size}, "flip_rate": rate}  # fmt: skip


def test_region_excess_ranks_the_mark_that_moves_the_model_in_one_place_only(tmp_path, capsys):
    candidates = [_entry("blur", "diffuse", "global", 0.9), _entry("p@top", "localized", "top", 0.5),
                  _entry("p@top_left", "localized", "top_left", 0.45), _entry("p@center", "localized", "center", 0.05),
                  _entry("p@left", "localized", "left", 0.04)]  # fmt: skip
    ranked = audit_rankings.rankings({"candidates": candidates}, top=2)
    assert [n for n, _ in ranked["flip_rate"]] == ["blur", "p@top"]
    assert ranked["region_excess"][0][0] == "p@top" and abs(ranked["region_excess"][0][1] - 0.25) < 1e-9
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "audit.json").write_text(json.dumps({"candidates": candidates}))
    assert audit_rankings.main([str(tmp_path / "a"), "--top", "1"]) == 0
    assert "| a | `blur` 0.900 | `p@top` 0.250 |" in capsys.readouterr().out
