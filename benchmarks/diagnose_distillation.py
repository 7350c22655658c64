"""Where the teacher's robustness is lost on the way to the student: per-epoch diagnosis.

Trains the distillation bundle once per variant against the teacher of a finished experiment
and, after every epoch, scores the student (and once the teacher) on

- the test sets: bias-inverted and bias-free AUC, counterfactual ΔTPR (TPR of every test
  positive with the artifact minus without; threshold 0.5);
- the signals a checkpoint could be selected on: biased validation AUC (today's ``model.pt``),
  agreement with the teacher on the biased validation images (minus the mean KL(teacher ||
  student); no labels needed), and AUC on the held-out part of the clean teacher subset;
- the teacher's targets as the trainer holds them (its cache after epoch 1): AUC and ΔTPR on the
  training items it scored.

Every epoch's row goes to ``<experiment>/<scenario>/diag_<variant>/epochs.json`` (written when
the variant ends; ``--resume`` skips finished variants), and the tables to ``--out``:

    python -m pipeline.experiment --methods source erm reference teacher distilled --output runs/base0
    python -m benchmarks.diagnose_distillation --experiment runs/base0 --resume --out diag.md
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from benchmarks.variant_runs import parse_overrides, variant_folder, variant_parser
from pipeline.atomic import write_json, write_text
from pipeline.bundles import config_files, logging_file, meta_file
from pipeline.engine.datalist import load_role
from pipeline.engine.holdout import split_holdout
from pipeline.evaluation.metrics import auc
from pipeline.transforms import ShortcutInjectiond

ALL = [[s, s] for s in ("stage1", "stage2", "stage3", "stage4")]
# every variant states how the student starts and the cross-entropy's weight, so that the
# table keeps its meaning when the bundle's defaults change
RANDOM, TEACHER = {"init_from_teacher": False}, {"init_from_teacher": True}
VARIANTS: dict[str, dict] = {
    "random init, CE 1 (previous default)": {**RANDOM, "task_weight": 1.0},
    "random init, no CE (teacher targets alone)": {**RANDOM, "task_weight": 0.0},
    "random init, CE 0.3": {**RANDOM, "task_weight": 0.3},
    "random init, CE 1, logits 10": {**RANDOM, "task_weight": 1.0, "logit_weight": 10.0},
    "random init, CE 1, logits 10, lr 3e-4": {
        **RANDOM,
        "task_weight": 1.0,
        "logit_weight": 10.0,
        "learning_rate": 0.0003,
    },
    "from the teacher, CE 1": {**TEACHER, "task_weight": 1.0},
    "from the teacher, CE 1 ramped over 3 epochs": {**TEACHER, "task_weight": 1.0, "task_ramp_epochs": 3},
    "from the teacher, CE 0.3": {**TEACHER, "task_weight": 0.3},
    "from the teacher, CE 0.5 (default)": {**TEACHER, "task_weight": 0.5},
}
SELECTIONS = {
    "final epoch": None,
    "best biased val AUC": "val_auc",
    "best teacher agreement (val)": "val_agreement",
    "best clean held-out AUC": "clean_auc",
}


def _loader(parser, items, mode: str, batch_size: int = 256) -> DataLoader:
    injection = ShortcutInjectiond(**parser.get_parsed_content("injection"), mode=mode)
    transform = Compose(
        [*parser.get_parsed_content("preprocessing"), injection, *parser.get_parsed_content("finishing")]
    )
    return DataLoader(Dataset(items, transform), batch_size=batch_size, shuffle=False, num_workers=0)


def _predict(network, loader, device) -> dict[str, np.ndarray]:
    """Class-1 probabilities, logits, labels and artifact flags of every item of ``loader``."""
    network.eval()
    logits, labels, bias = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits.append(network(batch["image"].to(device)).float().cpu())
            labels.append(torch.as_tensor(batch["label"]).reshape(-1))
            bias.append(torch.as_tensor(batch["bias"]).reshape(-1))
    out = torch.cat(logits)
    return {
        "logits": out,
        "prob": out.softmax(1)[:, 1].numpy(),
        "label": torch.cat(labels).numpy().astype(int),
        "bias": torch.cat(bias).numpy().astype(int),
    }


def _tpr(pred: dict) -> float:
    positives = pred["label"] == 1
    return float((pred["prob"][positives] >= 0.5).mean())


def _delta_tpr(pred: dict) -> float | None:
    pos = pred["label"] == 1
    with_bias, without = pos & (pred["bias"] == 1), pos & (pred["bias"] == 0)
    if not with_bias.any() or not without.any():
        return None
    return float((pred["prob"][with_bias] >= 0.5).mean() - (pred["prob"][without] >= 0.5).mean())


def _agreement(student: dict, teacher: dict) -> float:
    log_t, log_s = F.log_softmax(teacher["logits"], 1), F.log_softmax(student["logits"], 1)
    return float(-(log_t.exp() * (log_t - log_s)).sum(1).mean())


class EpochScores:
    """Scores the student after each epoch on the test sets and the selection signals."""

    def __init__(self, parser, workflow_network, teacher_network, device):
        datalist = parser.get_parsed_content("datalist")
        seed = parser.get_parsed_content("seed")
        test = load_role(datalist, "test")
        teacher_items = load_role(datalist, "teacher")
        # the part of the teacher subset the teacher bundle held out (its `teacher_holdout` default)
        _, clean_held = split_holdout(teacher_items, 0.2, seed)
        validation = load_role(datalist, "validation")
        self.loaders = {
            "bias_inverted": _loader(parser, test, "inverted"),
            "bias_free": _loader(parser, test, "never"),
            "cf_with": _loader(parser, test, "always"),
            "validation": _loader(parser, validation, "as_trained"),
            "clean_held_out": _loader(parser, clean_held, "never"),
        }
        self.network, self.device = workflow_network, device
        self.teacher = {
            name: _predict(teacher_network, loader, device) for name, loader in self.loaders.items()
        }
        self.rows: list[dict] = []

    def scores(self, network) -> dict:
        pred = {name: _predict(network, loader, self.device) for name, loader in self.loaders.items()}
        return {
            "bias_inverted_auc": auc(pred["bias_inverted"]["label"], pred["bias_inverted"]["prob"]),
            "bias_free_auc": auc(pred["bias_free"]["label"], pred["bias_free"]["prob"]),
            "cf_delta_tpr": _tpr(pred["cf_with"]) - _tpr(pred["bias_free"]),
            "val_auc": auc(pred["validation"]["label"], pred["validation"]["prob"]),
            "val_agreement": _agreement(pred["validation"], self.teacher["validation"]),
            "clean_auc": auc(pred["clean_held_out"]["label"], pred["clean_held_out"]["prob"]),
        }

    def __call__(self, engine) -> None:
        was_training = self.network.training
        self.rows.append({"epoch": engine.state.epoch, **self.scores(self.network)})
        self.network.train(was_training)


def teacher_as_trained(trainer, items) -> dict:
    """AUC and ΔTPR of the teacher's logits held in the trainer's cache (the targets it trained on)."""
    cache = getattr(trainer, "target_cache", None)
    if cache is None or not len(cache):
        return {}
    flags = {str(i["id"]): i for i in items}
    cached = [(k, t) for k, t in cache.items() if k[0] in flags]
    keys = [k for k, _ in cached]
    probs = np.array([float(t["logits"].float().softmax(0)[1]) for _, t in cached])
    labels = np.array([int(flags[k[0]]["label"]) for k in keys])
    bias = np.array([int(k[1]) for k in keys])
    pred = {"prob": probs, "label": labels, "bias": bias}
    return {"auc": auc(labels, probs), "delta_tpr": _delta_tpr(pred), "items": len(keys)}


def run_variant(root: Path, scenario: str, name: str, settings: dict, folder: Path) -> dict:
    workflow = ConfigWorkflow(
        config_file=config_files("distillation", "train", scenario),
        meta_file=meta_file("distillation"),
        logging_file=logging_file("distillation"),
        workflow_type="train",
        **{"output_root": str(root), "bundle_name": folder.name, "progress_bar": False, "tensorboard": False,
           "teacher_checkpoint": str(root / "teacher" / "models" / "teacher.pt"), **settings},
    )  # fmt: skip
    workflow.initialize()
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    device = parser.get_parsed_content("device")
    teacher = parser.get_parsed_content("teacher").network.to(device).eval()
    scores = EpochScores(parser, parser.get_parsed_content("network"), teacher, device)
    teacher_scores = scores.scores(teacher)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, scores)
    trainer_view: dict = {}
    train_items = parser.get_parsed_content("train#items")
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED(once=1), lambda e: trainer_view.update(teacher_as_trained(e, train_items))
    )
    workflow.run()
    workflow.finalize()
    result = {"variant": name, "settings": settings, "teacher": teacher_scores,
              "teacher_as_trained": trainer_view, "epochs": scores.rows}  # fmt: skip
    write_json(result, folder / "epochs.json")
    return result


def selected(rows: list[dict], signal: str | None) -> dict:
    if signal is None:
        return rows[-1]
    return max(rows, key=lambda r: r[signal])  # first epoch among equals


def tables(results: list[dict], references: dict) -> str:
    lines = ["| variant | selection | epoch | bias-inverted AUC | bias-free AUC | cf ΔTPR | gap closed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    erm, ref = references.get("erm"), references.get("reference")
    for result in results:
        for label, signal in SELECTIONS.items():
            row = selected(result["epochs"], signal)
            gap = (
                (row["bias_inverted_auc"] - erm) / (ref - erm)
                if erm is not None and ref is not None
                else None
            )
            lines.append(
                f"| {result['variant']} | {label} | {row['epoch']} | {row['bias_inverted_auc']:.3f} | "
                f"{row['bias_free_auc']:.3f} | {row['cf_delta_tpr']:.2f} | {'' if gap is None else f'{gap:.0%}'} |"
            )
    first = results[0] if results else None
    if first:
        t, tv = first["teacher"], first.get("teacher_as_trained", {})
        lines += ["", "| teacher | bias-inverted AUC | bias-free AUC | cf ΔTPR | AUC on training items (cache) | ΔTPR on training items | items |",
                  "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| {Path(first.get('teacher_file', 'teacher.pt')).name} | {t['bias_inverted_auc']:.3f} | {t['bias_free_auc']:.3f} | "
                  f"{t['cf_delta_tpr']:.2f} | {tv.get('auc', float('nan')):.3f} | {tv.get('delta_tpr') or float('nan'):.2f} | {tv.get('items', 0)} |"]  # fmt: skip
    return "\n".join(lines)


def _reference_aucs(root: Path) -> dict:
    out = {}
    for method in ("erm", "reference"):
        path = root / method / "eval" / "metrics.json"
        if path.is_file():
            out[method] = json.loads(path.read_text())["bias_inverted"]["auc"]
    return out


def main(argv=None) -> int:
    parser = variant_parser(__doc__.split("\n\n")[0], VARIANTS)
    parser.add_argument("--resume", action="store_true", help="reuse the epochs.json of finished variants")
    parser.add_argument("--out", help="write the markdown tables here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    root = Path(args.experiment).absolute() / args.scenario
    extra = parse_overrides(args.set)
    results = []
    for name in args.variants:
        folder = root / variant_folder("diag_", name)
        done = folder / "epochs.json"
        settings = {**VARIANTS[name], **extra}
        if args.resume and done.is_file() and json.loads(done.read_text()).get("settings") == settings:
            results.append(json.loads(done.read_text()))
            continue
        results.append(run_variant(root, args.scenario, name, settings, folder))
        text = tables(results, _reference_aucs(root))
        print(text, flush=True)
        if args.out:
            write_text(text + "\n", args.out)
    text = tables(results, _reference_aucs(root))
    print(text)
    if args.out:
        write_text(text + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
