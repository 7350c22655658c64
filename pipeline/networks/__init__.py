"""Networks with named stages: the registry, the project's own architectures, probes, checkpoints."""

from pipeline.networks.alexnet import AlexNet
from pipeline.networks.checkpoint import CheckpointLoadReport, load_checkpoint
from pipeline.networks.hooks import FeatureHooks
from pipeline.networks.parallel import strip_parallel_prefix, unwrap_model
from pipeline.networks.probes import StageProbe, StageProbes
from pipeline.networks.registry import (
    NetworkEntry,
    build_network,
    network_stages,
    register_network,
    registered_networks,
    stages_of,
)
from pipeline.networks.simba_cnn import SimbaCNN
from pipeline.networks.small_cnn import SmallCNN

__all__ = [
    "AlexNet",
    "CheckpointLoadReport",
    "FeatureHooks",
    "NetworkEntry",
    "SimbaCNN",
    "SmallCNN",
    "StageProbe",
    "StageProbes",
    "build_network",
    "load_checkpoint",
    "network_stages",
    "register_network",
    "registered_networks",
    "stages_of",
    "strip_parallel_prefix",
    "unwrap_model",
]
