"""Deep Feature Reweighting (Kirichenko et al., ICLR 2023): retrain only the last layer.

The ERM model's backbone is frozen and the final linear layer is (optionally re-initialised
and) retrained on the small clean subset. The backbone must stay in eval mode while the last
layer trains (BatchNorm running statistics and dropout frozen too); MONAI's
``SupervisedTrainer`` calls ``network.train()`` every iteration, so
:func:`freeze_all_but_last_layer` registers a forward pre-hook on the model that puts the
frozen modules back in eval mode before every forward pass. The model keeps its class and
state-dict keys, so checkpoints load into the plain network.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["find_last_linear", "freeze_all_but_last_layer", "reset_last_layer"]


def find_last_linear(model: nn.Module) -> str:
    """Name (module path) of the last ``nn.Linear`` in module registration order.

    Args:
        model: the network.

    Raises:
        ValueError: when the model has no ``nn.Linear``, or a module with parameters is
            registered after it (then the output layer is ambiguous: pass its name).
    """
    modules = list(model.named_modules())
    linear_positions = [i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Linear)]
    if not linear_positions:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass last_layer_name explicitly.")
    position = linear_positions[-1]
    name = modules[position][0]
    later = [n for n, m in modules[position + 1 :] if any(True for _ in m.parameters(recurse=False))]
    if later:
        raise ValueError(
            f"the last nn.Linear {name!r} is followed by module(s) with parameters {later[:3]}, so the output "
            "layer is ambiguous; pass last_layer_name explicitly."
        )
    return name


def _last_layer(model: nn.Module, last_layer_name: str | None) -> tuple[str, nn.Module]:
    name = find_last_linear(model) if last_layer_name is None else last_layer_name
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        names = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
        raise ValueError(
            f"last_layer_name {name!r} is not a submodule of {type(model).__name__}; modules with parameters: "
            f"{names[-5:]}."
        ) from None
    if not any(True for _ in layer.parameters()):
        raise ValueError(f"last_layer_name {name!r} names a module without parameters.")
    return name, layer


def reset_last_layer(model: nn.Module, last_layer_name: str | None = None, seed: int | None = 0) -> str:
    """Re-initialise the last layer in place with its ``reset_parameters()``.

    Args:
        model: the network (modified in place).
        last_layer_name: module path of the layer; default: :func:`find_last_linear`.
        seed: seed of the initialisation (the global RNG is left untouched); ``None`` uses the
            global RNG.

    Returns:
        The name of the reset layer.

    Raises:
        ValueError: when the layer cannot be found or has no ``reset_parameters``.
    """
    name, layer = _last_layer(model, last_layer_name)
    if not callable(getattr(layer, "reset_parameters", None)):
        raise ValueError(f"layer {name!r} ({type(layer).__name__}) has no reset_parameters().")
    if seed is None:
        layer.reset_parameters()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer.reset_parameters()
    return name


class _KeepFrozenInEval:
    """Forward pre-hook: modules outside ``trainable`` and its ancestors go to eval mode."""

    def __init__(self, trainable: str) -> None:
        self.trainable = trainable

    def _follows_mode(self, name: str) -> bool:
        inside = name == self.trainable or name.startswith(self.trainable + ".")
        ancestor = name == "" or self.trainable.startswith(name + ".")
        return self.trainable == "" or inside or ancestor

    def __call__(self, model: nn.Module, args: tuple) -> None:
        for name, module in model.named_modules():
            if not self._follows_mode(name):
                module.training = False


def freeze_all_but_last_layer(
    model: nn.Module, last_layer_name: str | None = None, reset: bool = False, seed: int | None = 0
) -> list[nn.Parameter]:
    """Freeze every parameter except the last layer's and keep the frozen part in eval mode.

    Modifies ``model`` in place: ``requires_grad`` flags, and a forward pre-hook that sets every
    module outside the last layer (except its parent containers) to eval mode before each
    forward, so ``model.train()`` trains only the last layer while BatchNorm statistics and
    dropout of the backbone stay frozen. Calling
    it again replaces the previous hook.

    Args:
        model: the network.
        last_layer_name: module path of the layer to train; default: :func:`find_last_linear`.
        reset: re-initialise the last layer first (:func:`reset_last_layer`).
        seed: seed for ``reset``.

    Returns:
        The last layer's parameters, for the optimizer.

    Raises:
        ValueError: when the layer cannot be found (see :func:`find_last_linear`).
    """
    name, layer = _last_layer(model, last_layer_name)
    if reset:
        reset_last_layer(model, name, seed)
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = list(layer.parameters())
    for param in trainable:
        param.requires_grad_(True)
    for key, hook in list(model._forward_pre_hooks.items()):
        if isinstance(hook, _KeepFrozenInEval):
            del model._forward_pre_hooks[key]
    hook = _KeepFrozenInEval(name)
    model.register_forward_pre_hook(hook)
    if model.training:
        hook(model, ())
    return trainable


def retrain_last_layer_from(model: nn.Module, checkpoint, last_layer_name: str | None = None, seed: int = 0) -> list:
    """Load ``checkpoint`` into ``model``, freeze all but its last layer and re-initialise that layer.

    Returns the parameters to optimise (for a bundle's ``trainable_parameters``).
    """
    from pipeline.networks import load_checkpoint

    load_checkpoint(model, checkpoint)
    return freeze_all_but_last_layer(model, last_layer_name=last_layer_name, reset=True, seed=seed)
