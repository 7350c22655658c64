"""Bias-mitigation baselines: group-based (reweighting, GroupDRO, balanced sampling), without bias
labels (JTT, DFR) and augmentation-based (generic augmentations, the known artifact on every class).

See ``docs/mitigation.md`` for when each applies and how it plugs into the ERM bundle.
"""

from pipeline.mitigation.augmentation import artifact_agnostic_augmentations, decorrelating_artifact_rates
from pipeline.mitigation.cross_entropy import per_sample_cross_entropy
from pipeline.mitigation.dfr import find_last_linear, freeze_all_but_last_layer, reset_last_layer
from pipeline.mitigation.group_losses import GroupDROLoss, GroupReweightedLoss
from pipeline.mitigation.groups import NUM_GROUPS, group_counts, group_index
from pipeline.mitigation.handlers import BatchContextHandler
from pipeline.mitigation.jtt import jtt_error_ids, jtt_upsampled_datalist, jtt_upweight
from pipeline.mitigation.sampling import datalist_groups, group_balanced_sampler

__all__ = [
    "NUM_GROUPS",
    "BatchContextHandler",
    "GroupDROLoss",
    "GroupReweightedLoss",
    "artifact_agnostic_augmentations",
    "datalist_groups",
    "decorrelating_artifact_rates",
    "find_last_linear",
    "freeze_all_but_last_layer",
    "group_balanced_sampler",
    "group_counts",
    "group_index",
    "jtt_error_ids",
    "jtt_upsampled_datalist",
    "jtt_upweight",
    "per_sample_cross_entropy",
    "reset_last_layer",
]
