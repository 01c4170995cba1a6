"""FrozenBackbone: the one feature interface every stage-I model offers to the task translators.

A stage-I model (LAM/TTM BaselineLSTM, TalkNet, I3D ResNet-50, SlowFast, the LTA encoder) becomes a feature
source for EgoT2-s by exposing

* ``forward_features(*inputs) -> Tensor[B, N, C]`` -- a short token sequence per sample, and
* ``feature_dim: int`` -- C.

``FrozenBackbone`` wraps such a model for stage II: no parameter is trained, BatchNorm statistics do not move and
dropout is off (unless ``train_mode=True`` asks for the original code's behaviour, see below), and the call runs
under ``torch.inference_mode()`` so no autograd graph is built through the (large) backbone.

State-dict layout
-----------------
The wrapped model is held as ``self.model``, but the wrapper's ``state_dict()`` hides that attribute: its keys are
exactly the wrapped model's keys. A translator that stores ``self.lam_model = FrozenBackbone(lam)`` therefore
saves and loads ``lam_model.base_model.*`` / ``lam_model.lstm.*`` -- the key names of the official EgoT2
checkpoints -- with no extra key map. (``named_parameters()`` still shows the real attribute path,
``lam_model.model.base_model...``, and so do the key names in a strict-load error message.)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FrozenBackbone"]

_WRAPPED = "model"


def _detach_from_inference(value: Any) -> Any:
    """Turn inference tensors (possibly nested in tuples/lists/dicts) into normal tensors.

    Inference tensors cannot be saved for backward, so a downstream ``nn.Linear`` on them would fail under
    autograd; a clone made outside inference mode is an ordinary tensor that never requires grad.
    """
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, tuple):
        return tuple(_detach_from_inference(v) for v in value)
    if isinstance(value, list):
        return [_detach_from_inference(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach_from_inference(v) for k, v in value.items()}
    return value


class FrozenBackbone(nn.Module):
    """Freeze a stage-I model and expose its token features.

    Args:
        model: an ``nn.Module`` with ``forward_features(*inputs)`` returning ``Tensor[B, N, C]`` (or a tuple/list
            of such tensors for models that emit several token groups, e.g. SlowFast's slow and fast streams) and
            an integer attribute/property ``feature_dim``.
        train_mode: ``False`` (default) keeps the wrapped model in eval mode whatever ``.train()`` is called with.
            ``True`` reproduces the original EgoT2 code (hhi spec 7.4, hoi spec 9.5): weights stay frozen, but the
            wrapped model follows the parent's train/eval mode, so in training BatchNorm normalises with batch
            statistics and updates its running statistics, and dropout is active. Use it only for parity runs.

    Raises:
        TypeError: if ``model`` lacks ``forward_features`` or ``feature_dim``.
    """

    def __init__(self, model: nn.Module, *, train_mode: bool = False):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"FrozenBackbone wraps an nn.Module, got {type(model).__name__}")
        if not callable(getattr(model, "forward_features", None)):
            raise TypeError(f"{type(model).__name__} has no forward_features(*inputs) method; "
                            "every stage-I model must offer it to be used as a frozen backbone")
        if not isinstance(getattr(model, "feature_dim", None), int):
            raise TypeError(f"{type(model).__name__} has no integer feature_dim attribute")
        self.model = model
        self.train_mode = bool(train_mode)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.register_state_dict_post_hook(_hide_wrapper_attribute)
        self.register_load_state_dict_pre_hook(_restore_wrapper_attribute)
        self.register_load_state_dict_post_hook(_report_external_key_names)
        self._load_prefix = ""
        self.train(self.training)

    @property
    def feature_dim(self) -> int:
        """Width C of the tokens returned by :meth:`forward`."""
        return self.model.feature_dim

    def train(self, mode: bool = True) -> "FrozenBackbone":
        """Set the wrapper's mode; the wrapped model stays in eval mode unless ``train_mode`` was requested."""
        self.training = mode
        self.model.train(mode and self.train_mode)
        return self

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """Run ``model.forward_features`` without building an autograd graph.

        Args:
            *inputs: whatever the wrapped model's ``forward_features`` takes (e.g. video ``[B, T, 3, H, W]``).
            **kwargs: passed through.

        Returns:
            ``Tensor[B, N, C]`` (or the tuple/list/dict the model returns) as ordinary tensors that do not
            require grad and can be fed to trainable layers.
        """
        with torch.inference_mode():
            features = self.model.forward_features(*inputs, **kwargs)
        return _detach_from_inference(features)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, train_mode={self.train_mode}"


def _hide_wrapper_attribute(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: ``<prefix>model.<key>`` -> ``<prefix><key>``, keeping the dict's order."""
    inner = prefix + _WRAPPED + "."
    own_keys = [key for key in state_dict if key.startswith(inner)]
    for key in own_keys:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)
    # state_dict._metadata (module versions) stays keyed by the real module paths: load_state_dict looks
    # versions up by those paths, so leaving it alone keeps BatchNorm's version handling intact.


def _restore_wrapper_attribute(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict,
                               strict: bool, missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """Load pre-hook: every ``<prefix><key>`` becomes ``<prefix>model.<key>`` before the children load."""
    module._load_prefix = prefix
    own_keys = [key for key in state_dict if key.startswith(prefix)]
    for key in own_keys:
        state_dict[prefix + _WRAPPED + "." + key[len(prefix):]] = state_dict.pop(key)


def _report_external_key_names(module: nn.Module, incompatible_keys: Any) -> None:
    """Load post-hook: name missing/unexpected keys as they appear in files (without ``model.``)."""
    inner = module._load_prefix + _WRAPPED + "."
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        for index, key in enumerate(keys):
            if key.startswith(inner):
                keys[index] = module._load_prefix + key[len(inner):]
