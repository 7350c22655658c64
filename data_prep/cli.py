"""Command line: ``python -m data_prep <source> --out DIR ...`` (one subcommand per source)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

from data_prep import chexpert, isic2017, simba3d, simba_source, synthetic2d, table
from data_prep.splits import parse_teacher_size
from pipeline.atomic import write_error_message


def _key_value(text: str) -> tuple[str, float | str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        return name.strip(), value.strip()


def _teacher_size(text: str):
    try:
        return parse_teacher_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _common(parser: argparse.ArgumentParser, test_fraction: float, real: bool, whole: str = "") -> None:
    """Options every source shares; ``whole``: the unit kept whole in one role (e.g. "patients")."""
    parser.add_argument("--out", required=True, help="output folder (datalist.json, datalist_summary.csv)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits (and generation)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of the pool for validation")
    parser.add_argument("--test-fraction", type=float, default=test_fraction, help="share of the pool for test")
    kept_whole = (
        f"; {whole} are kept whole, so the teacher and the other roles can hold a few images more or fewer than "
        f"requested (less than one of the {whole}' images per class)" if whole else ""
    )  # fmt: skip
    parser.add_argument("--teacher-size", type=_teacher_size, default=0.1,
                        help=f"teacher (clean subset) size: a count (500) or a fraction of the pool (0.1){kept_whole}")
    parser.add_argument("--teacher-from-train", action="store_true",
                        help="draw the teacher from the training list instead of holding it out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    if real:
        parser.add_argument("--drop-missing", action="store_true",
                            help="leave out samples whose image is missing or unreadable (reports how many)")


def _fields_help(domain_class) -> str:
    return ", ".join(f"{f.name} (default {f.default})" for f in dataclasses.fields(domain_class))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per source."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep", description="Turn a data source into a MONAI datalist (train/teacher/validation/test)."
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")

    gen2d = sources.add_parser(
        "synthetic2d", help="generate the embedded 2D set (thorax or dermoscopy)",
        description="Generate 2D images (PNG/NIfTI) and their datalist.",
        epilog=f"thorax parameters: {_fields_help(synthetic2d.ThoraxDomain)}. "
        f"dermoscopy parameters: {_fields_help(synthetic2d.DermoscopyDomain)}.",
    )
    _common(gen2d, test_fraction=0.2, real=False)
    gen2d.add_argument("--n", type=int, default=5000, help="number of images (default 5000)")
    gen2d.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    gen2d.add_argument("--flavour", choices=sorted(synthetic2d.FLAVOURS), default="thorax")
    gen2d.add_argument("--format", dest="image_format", choices=sorted(synthetic2d.FORMATS), default="png",
                       help="png (8-bit), png16 (16-bit, thorax) or nifti (float32)")
    gen2d.add_argument("--positive-fraction", type=float, default=0.5)
    gen2d.add_argument("--param", type=_key_value, action="append", default=[], metavar="NAME=VALUE",
                       help="generator parameter, repeatable (see below), e.g. opacity_amplitude=0.06")
    gen2d.add_argument("--ood-size", type=int, default=0, help="number of test_ood images (shifted domain)")
    gen2d.add_argument("--ood-param", type=_key_value, action="append", default=None, metavar="NAME=VALUE",
                       help="parameter of the OOD domain (default: noise, contrast and pose/hair shifted)")
    gen2d.add_argument("--workers", type=int, default=1, help="processes drawing images (default 1)")

    gen3d = sources.add_parser(
        "simba3d", help="generate the embedded SimBA-like 3D set",
        description="Generate SimBA-like NIfTI volumes on the MNI152 template and their datalist.",
        epilog=f"parameters: {_fields_help(simba3d.Simba3DEffects)}.",
    )
    _common(gen3d, test_fraction=0.2, real=False)
    gen3d.add_argument("--n", type=int, default=600, help="number of volumes (default 600)")
    gen3d.add_argument("--size", type=int, default=64, help="side of the cubic grid (default 64)")
    gen3d.add_argument("--positive-fraction", type=float, default=0.5)
    gen3d.add_argument("--param", type=_key_value, action="append", default=[], metavar="NAME=VALUE",
                       help="effect parameter, repeatable (see below), e.g. disease_scale_mm=4")
    gen3d.add_argument("--workers", type=int, default=1, help="processes drawing volumes (default 1)")
    gen3d.add_argument("--ood-size", type=int, default=0, help="number of test_ood volumes (another site)")
    gen3d.add_argument("--ood-site", type=_key_value, action="append", default=None, metavar="NAME=VALUE",
                       help=f"the other site's values of {list(simba3d.SITE_FIELDS)} (default {simba3d.DEFAULT_OOD_SITE})")

    chex = sources.add_parser("chexpert", help="read CheXpert (train.csv/valid.csv)",
                              description="CheXpert to datalist with patient-level splits.")
    _common(chex, test_fraction=0.0, real=True, whole="patients")
    chex.add_argument("--root", required=True, help="dataset folder holding train.csv and valid.csv")
    chex.add_argument("--finding", default="Pleural Effusion", choices=chexpert.FINDINGS)
    chex.add_argument("--uncertain", default="zeros", choices=chexpert.UNCERTAIN_POLICIES,
                      help="uncertain (-1) labels: zeros, ones, or ignore (drop)")
    chex.add_argument("--frontal-only", action="store_true", help="keep frontal views only")
    chex.add_argument("--valid-role", default="test", choices=chexpert.VALID_ROLES,
                      help="role of valid.csv (default test; pool: split it with train.csv)")

    isic = sources.add_parser("isic2017", help="read ISIC 2017 (Part 3 ground truth)",
                              description="ISIC 2017 to datalist; official validation/test parts are used when present.")
    _common(isic, test_fraction=0.2, real=True)
    isic.add_argument("--root", required=True, help="folder holding the ISIC-2017_* folders and CSVs")
    isic.add_argument("--task", default="melanoma", choices=isic2017.TASKS, help="positive class (vs the rest)")

    own = sources.add_parser("table", help="your own images: a folder plus a CSV (image, label[, id, bias])",
                             description="A folder of images and a CSV naming them, with 0/1 labels, to a datalist.")
    _common(own, test_fraction=0.2, real=True)
    own.add_argument("--csv", required=True, help="CSV with the image file names and a 0/1 label column")
    own.add_argument("--image-root", required=True, help="folder the CSV's file names are relative to")
    own.add_argument("--image-column", default="image", help="column of the file names (default image)")
    own.add_argument("--attribute", action="append", default=[], help="extra column copied into the items (repeatable)")
    own.add_argument("--channels", type=int, help="image channels, recorded in the metadata (3 for RGB)")

    simba = sources.add_parser("simba", help="read SimBA CSVs (filepath/filename, class_label, bias_label)",
                               description="SimBA dataset to datalist; bias = bias_label is not the 'no bias' code.")
    _common(simba, test_fraction=0.2, real=True)
    simba.add_argument("--simba-root", help="the folder SimBA's generate_data.py wrote into: "
                       "<root>/datasets/<experiment>/{train,val,test}/ and <root>/<experiment>/{train,val,test}.csv "
                       "(with --experiment; instead of --csv/--val-csv/--test-csv/--image-root)")
    simba.add_argument("--experiment", help="SimBA's --expname of the dataset under --simba-root")
    simba.add_argument("--csv", help="SimBA CSV to split (or the training CSV)")
    simba.add_argument("--val-csv", help="SimBA validation CSV (then --val-fraction is ignored)")
    simba.add_argument("--test-csv", help="SimBA test CSV (then --test-fraction is ignored)")
    simba.add_argument("--image-root",
                       help="folder holding the volumes, found by the CSVs' `filename` (SimBA's `filepath` is an "
                       "absolute path of the machine that generated them); default: use `filepath`")
    simba.add_argument("--no-bias-label", type=int, choices=(0, 1, 2, 3),
                       help="bias_label code meaning 'no bias' (default: 0 for 0/1 codes, 3 for SimBA's multi-bias 0-3)")
    simba.add_argument("--teacher-any-bias", action="store_true",
                       help="allow biased volumes in the teacher (default: bias-free only)")
    return parser


def run(args: argparse.Namespace):
    """Run the subcommand of parsed ``args``; returns the datalist path."""
    common = dict(
        seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        teacher_size=args.teacher_size, teacher_disjoint=not args.teacher_from_train,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    if args.source == "synthetic2d":
        return synthetic2d.generate(
            args.out, n=args.n, size=args.size, flavour=args.flavour, image_format=args.image_format,
            positive_fraction=args.positive_fraction, ood_size=args.ood_size,
            ood_params=dict(args.ood_param) if args.ood_param else None, workers=args.workers,
            **common, **dict(args.param),
        )
    if args.source == "simba3d":
        return simba3d.generate(args.out, n=args.n, size=args.size, positive_fraction=args.positive_fraction,
                                workers=args.workers, ood_size=args.ood_size,
                                ood_site=dict(args.ood_site) if args.ood_site else None, **common, **dict(args.param))
    if args.source == "chexpert":
        return chexpert.prepare(args.root, args.out, finding=args.finding, uncertain=args.uncertain,
                                frontal_only=args.frontal_only, valid_role=args.valid_role,
                                drop_missing=args.drop_missing, **common)
    if args.source == "isic2017":
        return isic2017.prepare(args.root, args.out, task=args.task, drop_missing=args.drop_missing, **common)
    if args.source == "table":
        return table.prepare(args.csv, args.image_root, args.out, image_column=args.image_column,
                             attributes=args.attribute, channels=args.channels, drop_missing=args.drop_missing, **common)
    if (args.simba_root is None) != (args.experiment is None) or (args.simba_root is None) == (args.csv is None):
        raise ValueError("simba: give --simba-root ROOT --experiment EXP (SimBA's own layout), or --csv FILE")
    if args.simba_root is not None:
        return simba_source.prepare_published(
            args.simba_root, args.experiment, args.out, no_bias_label=args.no_bias_label,
            teacher_bias_free=not args.teacher_any_bias, drop_missing=args.drop_missing, **common,
        )  # fmt: skip
    return simba_source.prepare(args.csv, args.out, val_csv=args.val_csv, test_csv=args.test_csv,
                                image_root=args.image_root, no_bias_label=args.no_bias_label, teacher_bias_free=not args.teacher_any_bias, drop_missing=args.drop_missing, **common)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input is reported as one line on stderr with exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        message = write_error_message(err, str(args.out))
        if message is None:
            raise
        print(f"error: {message}; the output folder was left as it was before", file=sys.stderr)
        return 2
    return 0
