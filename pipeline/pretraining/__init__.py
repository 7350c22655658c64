"""Self-supervised pretraining of a registry network on unlabelled images (SimCLR-style).

``views`` makes two independently augmented views of every image and feeds both to MONAI's
``SupervisedTrainer``; ``contrastive`` holds the projection model, the NT-Xent loss on the two
views and the saving of the pretrained network's weights. The teacher bundle's
``configs/pretrain.yaml`` runs it before the teacher's supervised training.
"""

from pipeline.pretraining.contrastive import ContrastiveModel, TwoViewContrastiveLoss, save_network_weights
from pipeline.pretraining.views import TwoViewPrepareBatch, two_view_augmentation

__all__ = [
    "ContrastiveModel",
    "TwoViewContrastiveLoss",
    "TwoViewPrepareBatch",
    "save_network_weights",
    "two_view_augmentation",
]
