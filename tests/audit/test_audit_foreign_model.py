"""A model the project did not train: a MONAI DenseNet121 from a plain SupervisedTrainer script,
audited from its checkpoint and a network config (with its own preprocessing)."""

from __future__ import annotations

import json

import pytest
import torch
from audit_helpers import PATCH, write_yaml

from pipeline.audit.model import load_audit_model
from pipeline.audit.run import run_audit

DENSENET = {"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
            "init_features": 8, "growth_rate": 4}  # fmt: skip
PLAIN_PREPROCESSING = [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "ScaleIntensityd", "keys": "image"},
]


def train_plain_monai_script(datalist, out):
    """What a user's own script does: MONAI transforms, DenseNet121, SupervisedTrainer, CheckpointSaver."""
    from monai.data import DataLoader, Dataset, load_decathlon_datalist
    from monai.engines import SupervisedTrainer
    from monai.handlers import CheckpointSaver
    from monai.networks.nets import DenseNet121
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

    torch.manual_seed(0)
    items = load_decathlon_datalist(str(datalist), is_segmentation=False, data_list_key="train")[:48]
    transform = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image")])
    net = DenseNet121(**{k: v for k, v in DENSENET.items() if k != "_target_"})
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(Dataset(items, transform), batch_size=16),
        network=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=torch.nn.CrossEntropyLoss(),
        prepare_batch=lambda batch, device, non_blocking, **_: (batch["image"], batch["label"].long()),
    )  # fmt: skip
    CheckpointSaver(
        save_dir=str(out), save_dict={"net": net}, save_final=True, final_filename="net.pt"
    ).attach(trainer)
    trainer.run()
    return net.eval(), out / "net.pt"


def test_a_densenet121_from_a_plain_monai_script_is_audited_from_checkpoint_and_config(
    tiny_datalist_2d, tmp_path
):
    net, checkpoint = train_plain_monai_script(tiny_datalist_2d, tmp_path)
    config = write_yaml({"network_def": DENSENET, "spatial_dims": 2, "image_size": [32, 32],
                         "preprocessing": PLAIN_PREPROCESSING,
                         "audit_stages": ["features.denseblock1", "features.denseblock2"]},
                        tmp_path / "densenet.yaml")  # fmt: skip
    model = load_audit_model(tiny_datalist_2d, checkpoint=checkpoint, configs=[config])
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.network(image), net(image))  # the trained weights, not a fresh network
    result = run_audit(tiny_datalist_2d, tmp_path / "audit", checkpoint=checkpoint, configs=[config], artifact=PATCH,
                       families=["patch", "contrast"], screen_images=8, confirm=1, occlusion_per_class=1,
                       control="none", progress=False)  # fmt: skip
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert len(saved["candidates"]) == 56 and saved["model"]["checkpoint"] == str(checkpoint)
    assert [row["stage"] for row in result["suspected"]["stage_kl"]] == [
        "features.denseblock1",
        "features.denseblock2",
    ]
    assert result["data"]["n"] == 16 and result["suspected"]["n"] == 16


def test_a_checkpoint_of_another_network_or_no_checkpoint_is_refused(tiny_datalist_2d, tmp_path):
    config = write_yaml({"spatial_dims": 2, "image_size": [32, 32]}, tmp_path / "default_network.yaml")
    checkpoint = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, checkpoint)
    # without network_def the config keeps base.yaml's small_cnn, which these weights do not fit
    with pytest.raises(ValueError, match="does not fit the network of network config"):
        load_audit_model(tiny_datalist_2d, checkpoint=checkpoint, configs=[config])
    with pytest.raises(ValueError, match="--checkpoint is required"):
        load_audit_model(tiny_datalist_2d, configs=[config])
