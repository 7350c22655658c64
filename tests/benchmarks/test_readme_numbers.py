"""The README's result tables quote the committed CSVs in benchmarks/results/, rounded as printed.

The four scenarios' and the architectures' tables are compared cell by cell with their CSV rows;
the teacher seeds' tables must be exactly what ``python -m benchmarks.teacher_seeds --markdown``
renders from its CSV. Changing a number in a CSV (or in the README) makes these tests fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_DOWN, ROUND_HALF_UP, Decimal
from itertools import product
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import teacher_seeds

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"


def _rounded(value, digits: int, percent: bool = False) -> set[str]:
    """``value`` printed with ``digits`` decimals (as a percentage with ``percent``). The CSVs hold
    4 decimals, so a value ending in 5 at the next digit (0.2835) may have been printed from the
    unrounded number either way (0.283 or 0.284): both are accepted, nothing else."""
    number = Decimal(repr(float(value))) * (100 if percent else 1)
    unit = Decimal(1).scaleb(-digits)
    return {
        f"{number.quantize(unit, rounding=r)}" + ("%" if percent else "")
        for r in (ROUND_HALF_UP, ROUND_HALF_DOWN)
    }


def _cell(template: str, *numbers: set[str]) -> set[str]:
    return {template.format(*choice) for choice in product(*numbers)}


def _f(column: str, digits: int = 3) -> Callable[[Mapping], set[str]]:
    return lambda r: _rounded(r[column], digits)


def _pair(left: str, right: str, digits: int) -> Callable[[Mapping], set[str]]:
    return lambda r: _cell("{} -> {}", _rounded(r[left], digits), _rounded(r[right], digits))


def _with_bias_free(r: Mapping) -> set[str]:
    return _cell(
        "{} ({})", _rounded(r["reference_bias_inverted_auc"], 3), _rounded(r["reference_bias_free_auc"], 3)
    )


def _gap(r: Mapping) -> set[str]:
    return _rounded(r["gap_closed"], 0, percent=True)


def _time(r: Mapping) -> set[str]:
    return {f"{int(r['seconds']) // 60} min {int(r['seconds']) % 60} s"}


def _text(template: str) -> Callable[[Mapping], set[str]]:
    return lambda r: {template.format(**r)}


# README column header -> the cell rendered from the CSV row (labels in brackets that the CSV does
# not hold, such as the best baseline's name, are dropped from the README's cell before comparing)
SCENARIO_CELLS = {
    "scenario": _text("{run}"),
    "whole run": _time,
    "ERM": _f("erm_bias_inverted_auc"),
    "reference (its bias-free AUC)": _with_bias_free,
    "teacher": _f("teacher_bias_inverted_auc"),
    "student": _f("distilled_bias_inverted_auc"),
    "gap closed": _gap,
    "best artifact-agnostic baseline": _f("best_agnostic_baseline_auc"),
    "best baseline without artifact knowledge": _f("best_baseline_without_artifact_auc"),
    "cf ΔTPR ERM -> student": _pair("erm_cf_delta_tpr", "distilled_cf_delta_tpr", 2),
    "bias-free AUC ERM -> student": _pair("erm_bias_free_auc", "distilled_bias_free_auc", 3),
    "student flip rate": _f("distilled_flip_rate", 2),
    "verdict: teacher / student": _text("{teacher_verdict} / {verdict}"),
    "reference OOD AUC": _f("reference_ood_auc"),
}
ARCHITECTURE_CELLS = {
    "run": _text("{run}"),
    "scenario": _text("{scenario}"),
    "time": _time,
    "ERM": _f("erm_bias_inverted_auc"),
    "reference (bias-free)": _with_bias_free,
    "teacher": _f("teacher_bias_inverted_auc"),
    "student": _f("distilled_bias_inverted_auc"),
    # gap closed is printed only where the run measures shortcut reliance
    "gap closed": lambda r: _gap(r) if _true(r["measures_shortcut"]) else {"n/a"},
    "cf ΔTPR ERM -> student": _pair("erm_cf_delta_tpr", "distilled_cf_delta_tpr", 2),
    "bias-free AUC ERM / teacher / student": lambda r: _cell(
        "{} / {} / {}", *(_rounded(r[f"{m}_bias_free_auc"], 3) for m in ("erm", "teacher", "distilled"))
    ),
    "student flip rate": _f("distilled_flip_rate", 2),
    "verdict: teacher / student": _text("{teacher_verdict} / {verdict}"),
    "measures the shortcut": lambda r: {"yes" if _true(r["measures_shortcut"]) else "no"},
}
PREBIASED_CELLS = {
    "method": _text("{run}"),
    "in-distribution AUC": _f("in_distribution_auc"),
    "bias-free AUC": _f("bias_free_auc"),
    "bias-inverted AUC": _f("bias_inverted_auc"),
    "ΔTPR (biased - bias-free positives)": _f("delta_tpr", 2),
}
LABEL = re.compile(r" \((?![-\d.]+\))[^()]*\)$")  # a trailing "(text)" that is not a number


def _true(value) -> bool:
    return str(value).strip().lower() == "true"


def readme_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The markdown table of ``text`` whose header row starts with ``| first_header |``, one dict
    (header -> cell) per row."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |")]
    if len(starts) != 1:
        raise ValueError(f"README: expected one table starting '| {first_header} |', found {len(starts)}")
    header = [c.strip() for c in lines[starts[0]].strip().strip("|").split("|")]
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        # "\|" is an escaped pipe inside a cell
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(dict(zip(header, cells)))
    return rows


def mismatches(
    rows: list[dict[str, str]], table: pd.DataFrame, cells: Mapping[str, Callable], key: str
) -> list[str]:
    """Every README cell of ``cells``' columns that differs from its CSV row rendered as printed,
    and every run that is in only one of the two."""
    csv_rows = {str(r["run"]): r for r in table.to_dict("records")}
    problems = []
    readme_runs = []
    for row in rows:
        run = LABEL.sub("", row[key])
        readme_runs.append(run)
        if run not in csv_rows:
            problems.append(f"README row {run!r}: no such run in the CSV")
            continue
        for column, render in cells.items():
            shown = LABEL.sub("", row[column].replace("**", ""))
            expected = render(csv_rows[run])
            if shown not in expected:
                problems.append(f"{run}, {column!r}: README {shown!r}, CSV {' or '.join(sorted(expected))}")
    problems += [
        f"CSV run {run!r} is not in the README's table" for run in csv_rows if run not in readme_runs
    ]
    return problems


def test_four_scenarios_table_quotes_scenario_runs_csv():
    rows = readme_table(README.read_text(), "scenario | whole run")
    assert len(rows) == 4
    assert mismatches(rows, pd.read_csv(RESULTS / "scenario_runs.csv"), SCENARIO_CELLS, "scenario") == []


def test_architectures_table_quotes_architecture_runs_csv():
    rows = readme_table(README.read_text(), "run | network")
    assert len(rows) >= 1
    table = pd.read_csv(RESULTS / "architecture_runs.csv")
    assert mismatches(rows, table, ARCHITECTURE_CELLS, "run") == []


def test_prebiased_table_quotes_prebiased3d_csv():
    rows = readme_table(README.read_text(), "method | in-distribution AUC")
    table = pd.read_csv(RESULTS / "prebiased3d.csv").rename(columns={"method": "run"})
    assert len(rows) == len(table) == 5
    assert mismatches(rows, table, PREBIASED_CELLS, "method") == []
    table.loc[table["run"] == "distilled", "bias_free_auc"] = (
        0.8964  # ERM's: the README's 0.892 no longer matches
    )
    assert mismatches(rows, table, PREBIASED_CELLS, "method") == [
        "distilled, 'bias-free AUC': README '0.892', CSV 0.896"
    ]


def test_teacher_seed_tables_are_the_script_s_rendering_of_teacher_seeds_csv():
    rendered = teacher_seeds.markdown(pd.read_csv(RESULTS / "teacher_seeds.csv"))
    assert rendered in README.read_text()


@pytest.mark.parametrize(
    "csv, cells, first_header, key, run, column, value, cell",
    [
        ("scenario_runs.csv", SCENARIO_CELLS, "scenario | whole run", "scenario", "diffuse3d", "reference_bias_free_auc", 0.8871,
         "reference (its bias-free AUC)"),
        ("scenario_runs.csv", SCENARIO_CELLS, "scenario | whole run", "scenario", "localized2d", "teacher_verdict", "over-corrected",
         "verdict: teacher / student"),
        ("architecture_runs.csv", ARCHITECTURE_CELLS, "run | network", "run", "resnet18_localized2d",
         "gap_closed", -0.0551, "gap closed"),
        ("architecture_runs.csv", ARCHITECTURE_CELLS, "run | network", "run", "resnet18_diffuse2d",
         "erm_cf_delta_tpr", 0.1851, "cf ΔTPR ERM -> student"),
        ("architecture_runs.csv", ARCHITECTURE_CELLS, "run | network", "run", "resnet18_localized3d", "seconds", 1000,
         "time"),
        ("architecture_runs.csv", ARCHITECTURE_CELLS, "run | network", "run", "resnet18_localized3d",
         "teacher_bias_free_auc", 0.7805, "bias-free AUC ERM / teacher / student"),
    ],
)  # fmt: skip
def test_a_changed_csv_value_is_reported(csv, cells, first_header, key, run, column, value, cell):
    table = pd.read_csv(RESULTS / csv)
    table[column] = table[column].astype(object)
    table.loc[table["run"] == run, column] = value
    problems = mismatches(readme_table(README.read_text(), first_header), table, cells, key)
    assert len(problems) == 1 and problems[0].startswith(f"{run}, {cell!r}")


def test_a_changed_teacher_seed_value_is_not_in_the_readme():
    table = pd.read_csv(RESULTS / "teacher_seeds.csv")
    table.loc[0, "distilled_cf_delta_tpr"] += 0.001
    assert teacher_seeds.markdown(table) not in README.read_text()


def test_a_run_missing_from_the_readme_or_the_csv_is_reported():
    rows = [{"run": "a", "x": "0.500"}, {"run": "b", "x": "0.250"}]
    table = pd.DataFrame({"run": ["a", "c"], "v": [0.5, 0.1]})
    problems = mismatches(rows, table, {"x": _f("v")}, "run")
    assert problems == ["README row 'b': no such run in the CSV", "CSV run 'c' is not in the README's table"]


def test_a_csv_value_at_a_rounding_tie_accepts_either_neighbour_only():
    assert _rounded(0.2835, 3) == {"0.283", "0.284"}
    assert _rounded(0.2834, 3) == {"0.283"}
    assert _rounded(-0.0381, 0, percent=True) == {"-4%"}
    assert _rounded(0.965, 0, percent=True) == {"96%", "97%"}


def test_readme_table_reads_escaped_pipes_and_refuses_an_ambiguous_header():
    text = "| a | b |\n| --- | --- |\n| x \\| y | 1 |\n\ntext\n| c | d |\n|---|---|\n| c | d |\n"
    assert readme_table(text, "a") == [{"a": "x | y", "b": "1"}]
    with pytest.raises(ValueError, match=r"^README: expected one table starting '\| z \|', found 0$"):
        readme_table(text, "z")
