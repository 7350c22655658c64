"""The network throughput benchmark: its cases build, its table has a ratio per case."""

import pandas as pd
import pytest
import torch

from benchmarks import bench_networks
from pipeline.networks import build_network, registered_networks


def test_every_case_builds_its_network_with_its_options():
    for name, (network, dims, side, batch, options) in bench_networks.CASES.items():
        assert network in registered_networks(), name
        assert dims in (2, 3) and side > 0 and batch > 0, name
        network = build_network(network, dims, 1, 2, **options).eval()
        with torch.no_grad():
            logits = network(torch.rand(2, 1, *(side,) * dims))
        assert logits.shape == (2, 2), name


def test_the_table_has_one_row_per_case_with_its_ratio_to_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_networks, "CASES", {
        "small": ("small_cnn", 2, 16, 2, {}), "wide": ("small_cnn", 2, 16, 2, {"channels": (16, 32, 64, 128)}),
    })  # fmt: skip
    out = tmp_path / "speed.csv"
    assert bench_networks.main(["--iterations", "1", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["case"]) == ["small", "wide"]
    assert (table["images_per_s"] > 0).all()
    assert table["ratio_to_first"].iloc[1] == pytest.approx(table["images_per_s"].iloc[1] / table["images_per_s"].iloc[0], rel=0.01)


def test_iterations_below_one_are_refused():
    with pytest.raises(SystemExit):
        bench_networks.main(["--iterations", "0"])
