"""``python -m pipeline.audit``: is a trained model using a shortcut, and which one?

    python -m pipeline.audit --model runs/experiment/localized2d/erm --datalist DATALIST --scan --out audit/erm
    python -m pipeline.audit --model runs/experiment/localized2d/erm --datalist DATALIST \\
        --artifact bundles/common/configs/scenarios/localized2d.yaml --out audit/erm_patch
    python -m pipeline.audit --checkpoint my_model.pt --config my_network.yaml --datalist DATALIST --scan --out audit/mine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from pipeline.audit.report import VOLUME_DISPLACEMENT_BOUND
from pipeline.audit.run import FLIP_THRESHOLD, run_audit
from pipeline.bundles.overrides import parse_setting


def read_artifact(text: str):
    """``--artifact``: a YAML file (a transform spec, or a scenario file with ``artifact``) or inline YAML.

    Raises:
        ValueError: the file or the text is not valid YAML.
    """
    path = Path(text)
    source = path.read_text() if path.is_file() else text
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as err:
        where = f"file {path}" if path.is_file() else repr(text)
        raise ValueError(f"--artifact {where} is not valid YAML: {str(err).splitlines()[0]}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="an experiment's method folder, an exported bundle, or a bundle's output root"
    )
    parser.add_argument("--checkpoint", help="the weights (default <model>/models/model.pt)")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="config file merged last (your own network: network_def, image_size, spatial_dims)",
    )
    parser.add_argument("--bundle", help="the repository bundle a bundle's output root was trained with")
    parser.add_argument("--scenario", help="the scenario it was trained with (with --bundle)")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config id (e.g. image_size=[32,32])",
    )
    parser.add_argument(
        "--datalist",
        help="datalist JSON of the images to audit (default: the one the model's "
        "config names, e.g. the embedded data it was trained on)",
    )
    parser.add_argument("--role", default="test", help="datalist role to audit (default test)")
    parser.add_argument(
        "--artifact",
        help="a suspected artifact: transform spec YAML (file or inline), "
        "or a scenario file (its `artifact`)",
    )
    parser.add_argument(
        "--scan", action="store_true", help="rank the candidate shortcuts (no artifact knowledge)"
    )
    parser.add_argument("--out", required=True, help="output folder (audit.json, audit.md, figures/)")
    parser.add_argument(
        "--max-images", type=int, default=1000, help="seeded sub-sample of the role (default 1000)"
    )
    parser.add_argument("--screen-images", type=int, default=200, help="images each candidate is screened on")
    parser.add_argument("--confirm", type=int, default=8, help="top candidates measured again on every image")
    parser.add_argument(
        "--families",
        nargs="+",
        help="scan only these candidate families (default all: "
        "patch text line deformation noise contrast gamma blur bias_field)",
    )
    parser.add_argument(
        "--depth-cells", type=int, choices=(1, 3), default=3,
        help="3D only: place localized candidates in each third of the third axis (3, a 3x3x3 grid) "
        "or centred in depth (1, a third of the localized candidates)",
    )
    parser.add_argument(
        "--control", choices=("head", "retrain", "none"), default="head",
        help="what each candidate is compared with: head (default: a new linear head on the network's "
        "features, fitted on the audited images' labels, cross-fitted), retrain (the architecture "
        "trained afresh on them), none (raw flip rates); needs labelled images",
    )
    parser.add_argument("--control-epochs", type=int, default=30, help="the retrain control's training epochs (30)")
    parser.add_argument(
        "--control-lr", type=float, help="the retrain control's learning rate (default: the model config's, else 1e-3)"
    )
    parser.add_argument(
        "--threshold", type=float,
        help="the verdict's score that flags a candidate (default: 1.0 findings' worth beyond the head "
        f"control; {FLIP_THRESHOLD} of the predictions flipped, without a control)",
    )
    parser.add_argument(
        "--displacement-bound", type=float, default=VOLUME_DISPLACEMENT_BOUND,
        help="volumes, head control: flag a candidate only when its shift beyond the control per unit of "
        f"head-feature displacement is beyond this too (default {VOLUME_DISPLACEMENT_BOUND}; 0: the threshold alone)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sub-samples")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.scan and args.artifact is None:
        parser.error("nothing to audit: give --scan, --artifact SPEC, or both")
    try:
        settings = dict(parse_setting(pair) for pair in args.settings)
        artifact = None if args.artifact is None else read_artifact(args.artifact)
        audit = run_audit(
            args.datalist, args.out, model_dir=args.model, checkpoint=args.checkpoint, configs=args.config,
            bundle=args.bundle, scenario=args.scenario, settings=settings, role=args.role,
            max_images=args.max_images, seed=args.seed, artifact=artifact, progress=not args.no_progress,
            do_scan=args.scan, threshold=args.threshold, displacement_bound=args.displacement_bound,
            screen_images=args.screen_images, confirm=args.confirm,
            families=args.families, depth_cells=args.depth_cells, control=args.control,
            control_epochs=args.control_epochs, control_learning_rate=args.control_lr,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m pipeline.audit: error: {err}", file=sys.stderr)
        return 2
    if "verdict" in audit:
        print(audit["verdict"]["text"].replace("**", ""))
    if "suspected" in audit:
        s = audit["suspected"]
        print(
            f"suspected artifact: flip rate {s['flip_rate']:.3f}, ΔTPR {s['delta_tpr']}, mean prob. shift {s['mean_prob_shift']:.3f}"
        )
    print(f"report: {Path(args.out) / 'audit.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
