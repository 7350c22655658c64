"""Figures of a finished experiment that need the trained models: layer curves and saliency maps."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import Dataset
from monai.transforms import Compose

from pipeline.bundles import config_files
from pipeline.engine.datalist import load_role
from pipeline.networks import load_checkpoint
from pipeline.transforms import ShortcutInjectiond

FIGURE_METHODS = ("erm", "reference", "teacher", "distilled")


def run_parser(config, scenario: str, method: str) -> ConfigParser:
    """The merged, overridden config of one experiment run (nothing instantiated yet)."""
    from pipeline.experiment import METHODS, run_settings

    spec = METHODS[method]
    parser = ConfigParser()
    parser.read_config(config_files(spec.bundle, "train", scenario, spec.overrides))
    parser.update(run_settings(config, scenario, method))
    return parser


def trained_network(parser: ConfigParser) -> torch.nn.Module:
    """The run's network with its best checkpoint (models/model.pt), in eval mode on the CPU."""
    network = parser.get_parsed_content("network_def", lazy=False)
    load_checkpoint(network, Path(parser.get_parsed_content("ckpt_dir")) / "model.pt")
    return network.cpu().eval()


def test_images(
    parser: ConfigParser, mode: str, count: int | None = None, role: str = "test"
) -> tuple[torch.Tensor, list[dict]]:
    """A batch of ``role`` images seen through the run's injection in ``mode`` (and their items)."""
    injection = ShortcutInjectiond(**parser.get_parsed_content("injection"), mode=mode)
    items = injection.select(load_role(parser.get_parsed_content("datalist"), role))[:count]
    transform = Compose(
        [*parser.get_parsed_content("preprocessing"), injection, *parser.get_parsed_content("finishing")]
    )
    samples = [Dataset(items, transform)[i] for i in range(len(items))]
    return torch.stack([torch.as_tensor(s["image"]) for s in samples]), samples


def layer_and_saliency_figures(config, output: Path, report_dir: Path) -> dict[str, Path]:
    """Per scenario: a saliency grid on bias-inverted test images and the layer analysis curves."""
    from pipeline.evaluation.saliency import saliency_grid

    figures: dict[str, Path] = {}
    for scenario in config.scenarios:
        methods = [
            m
            for m in FIGURE_METHODS
            if m in config.methods and (output / scenario / m / "models" / "model.pt").is_file()
        ]
        if not methods:
            continue
        parsers = {m: run_parser(config, scenario, m) for m in methods}
        networks = {m: trained_network(p) for m, p in parsers.items()}
        first = parsers[methods[0]]
        spatial_dims = int(first.get_parsed_content("spatial_dims"))
        if config.saliency:
            images, _ = test_images(first, "inverted", count=4)
            path = report_dir / "figures" / f"saliency_{scenario}.png"
            saliency_grid(networks, images, path, spatial_dims=spatial_dims)
            figures[f"Saliency ({scenario}, bias-inverted test images)"] = path
        if config.layer_analysis and first.get_parsed_content("artifact") is not None:  # needs counterfactual pairs
            figures.update(_layer_figures(scenario, parsers, networks, report_dir))
    if config.layer_analysis:
        comparison = scenario_layer_comparison(report_dir, config.scenarios)
        if comparison is not None:
            figures["Where the shortcut lives, scenarios side by side"] = comparison
    return figures


def _layer_figures(scenario, parsers, networks, report_dir, max_items: int = 400) -> dict[str, Path]:
    """Layer analysis of the scenario's models: probes on validation items, scored on test items."""
    from pipeline.evaluation.layers import analyse_layers, layer_loaders

    parser = next(iter(parsers.values()))
    datalist = parser.get_parsed_content("datalist")
    loaders = layer_loaders(
        load_role(datalist, "validation")[:max_items],
        load_role(datalist, "test")[:max_items],
        parser.get_parsed_content("preprocessing"),
        parser.get_parsed_content("injection"),
        parser.get_parsed_content("finishing"),
        batch_size=int(parser.get_parsed_content("batch_size")),
    )
    out_dir = report_dir / "layers" / scenario
    analyse_layers(networks, None, loaders, out_dir)
    return {f"Where the shortcut lives ({scenario})": out_dir / "layer_curves.png"}


def scenario_layer_comparison(report_dir: Path, scenarios) -> Path | None:
    """Localized and diffuse scenarios side by side (one panel per scenario), when both were run."""
    import pandas as pd

    from pipeline.evaluation.layers import plot_layer_curves

    tables = {s: report_dir / "layers" / s / "layers.csv" for s in scenarios}
    tables = {s: pd.read_csv(p) for s, p in tables.items() if p.is_file()}
    if len(tables) < 2:
        return None
    return plot_layer_curves(tables, report_dir / "figures" / "layer_curves_by_scenario.png")
