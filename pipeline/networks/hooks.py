"""Capture intermediate feature maps of a network with forward hooks, registered and removed in one place."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pipeline.networks.parallel import strip_parallel_prefix, unwrap_model
from pipeline.networks.registry import stages_of

_LISTED_MODULES = 40  # module paths listed in an error message when the model is not from the registry


def _detach(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(_detach(o) for o in output)
    if isinstance(output, Mapping):
        return {k: _detach(v) for k, v in output.items()}
    return output


class FeatureHooks:
    """Forward hooks that expose the outputs of named modules for the current forward pass.

    Use as a context manager (hooks removed on exit, also after an exception) or call
    :meth:`register` / :meth:`remove`. ``features`` maps each name, as given and in the given
    order, to the module's output of the latest forward pass of ``model``. Captured outputs are
    dropped at the start of every forward pass of ``model`` and by :meth:`clear`, so no feature
    map outlives the step that produced it (unless the caller keeps a reference).

    Names are module paths (``model.named_modules()``), e.g. registry stages such as ``layer3``
    or ``features.denseblock2``; a ``module.`` prefix from DataParallel / DistributedDataParallel
    is optional on wrapped and unwrapped models alike (DDP runs one replica per process, so
    every hooked module runs once per forward pass).

    Note: a module whose output is later modified in place (e.g. a BatchNorm followed by
    ``ReLU(inplace=True)``) yields the modified values; registry stages are not affected.

    Args:
        model: the network (possibly wrapped in DataParallel / DistributedDataParallel).
        names: module paths to capture.
        detach: detach captured outputs from the graph (for a frozen teacher); the default
            keeps them attached so losses on a student's features reach its weights.

    Raises:
        ValueError: for an empty or duplicated name list, or a name that is not a module of
            ``model`` (the message lists the valid stage names / module paths).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | str, detach: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        names = [names] if isinstance(names, str) else list(names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be a non-empty list of module paths, got {names!r}")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"names must be unique, got {duplicated} more than once")
        self.model = model
        self.names = tuple(names)
        self.detach = detach
        self._modules = self._resolve(model, self.names)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._captured: dict[str, Any] = {}

    @staticmethod
    def _resolve(model: nn.Module, names: Sequence[str]) -> OrderedDict[str, nn.Module]:
        modules = dict(unwrap_model(model).named_modules())
        resolved, unknown = OrderedDict(), []
        for name in names:
            path = name if name in modules else strip_parallel_prefix(name)
            if path in modules and path:
                resolved[name] = modules[path]
            else:
                unknown.append(name)
        if unknown:
            stages = stages_of(model)
            if stages is not None:
                valid = f"its stages: {', '.join(stages)} (any path of model.named_modules() works too)"
            else:
                paths = [p for p in modules if p]
                more = f", ... (+{len(paths) - _LISTED_MODULES} more)" if len(paths) > _LISTED_MODULES else ""
                valid = f"its module paths: {', '.join(paths[:_LISTED_MODULES])}{more}"
            raise ValueError(f"{type(unwrap_model(model)).__name__} has no module {unknown}; {valid}")
        return resolved

    @property
    def registered(self) -> bool:
        """True while the hooks are attached."""
        return bool(self._handles)

    def register(self) -> FeatureHooks:
        """Attach the hooks; returns ``self``.

        Raises:
            RuntimeError: when they are already attached.
        """
        if self._handles:
            raise RuntimeError("FeatureHooks are already registered; call remove() first")
        self._handles.append(self.model.register_forward_pre_hook(self._start_pass))
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._capture_hook(name)))
        return self

    def remove(self) -> None:
        """Detach every hook and drop captured features (safe to call more than once)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def clear(self) -> None:
        """Drop the captured features."""
        self._captured = {}

    def _start_pass(self, module: nn.Module, args: Any) -> None:
        self._captured = {}

    def _capture_hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.detach:
                output = _detach(output)
            self._captured[name] = output

        return hook

    @property
    def features(self) -> dict[str, Any]:
        """Name -> captured output of the latest forward pass, in the order of ``names``.

        Names whose module did not run in that pass are absent.
        """
        return {n: self._captured[n] for n in self.names if n in self._captured}

    def __enter__(self) -> FeatureHooks:
        return self.register()

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()
