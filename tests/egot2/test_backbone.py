"""FrozenBackbone: frozen weights, eval-locked BatchNorm/dropout, usable outputs, transparent state-dict keys."""
import pytest
import torch
from torch import nn

from egot2.backbone import FrozenBackbone


class TinyStageOne(nn.Module):
    """A stage-I-like model: per-frame conv + BatchNorm + dropout, tokens [B, T, C]."""

    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.base_model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.dropout = nn.Dropout(0.5)
        self.last_layer = nn.Linear(6, 2)  # the stage-I head: in the checkpoint, unused for features

    def forward_features(self, video):
        batch, frames = video.shape[:2]
        maps = self.base_model(video.flatten(0, 1))
        return self.dropout(maps.mean(dim=(2, 3))).view(batch, frames, -1)


class Translator(nn.Module):
    def __init__(self, train_mode=False):
        super().__init__()
        self.lam_model = FrozenBackbone(TinyStageOne(), train_mode=train_mode)
        self.proj_lam = nn.Linear(6, 4)


def _video(batch=2, frames=3):
    return torch.randn(batch, frames, 3, 8, 8) * 3 + 1


def test_parameters_are_frozen_and_feature_dim_forwards():
    backbone = FrozenBackbone(TinyStageOne())
    assert backbone.feature_dim == 6
    assert all(not parameter.requires_grad for parameter in backbone.parameters())


def test_stays_in_eval_mode_whatever_train_is_called_with():
    translator = Translator()
    translator.train()
    assert translator.training and translator.lam_model.training
    assert not any(module.training for module in translator.lam_model.model.modules())
    translator.eval()
    translator.train(True)
    assert not translator.lam_model.model.base_model[1].training


def test_running_stats_and_weights_unchanged_and_output_feeds_autograd():
    translator = Translator().train()
    before = {key: value.clone() for key, value in translator.lam_model.state_dict().items()}
    video = _video()
    features = translator.lam_model(video)
    assert features.shape == (2, 3, 6)
    assert not features.requires_grad and not features.is_inference()
    loss = translator.proj_lam(features).square().mean()
    loss.backward()  # fails with "Inference tensors cannot be saved for backward" if the output is not cloned
    assert translator.proj_lam.weight.grad is not None
    assert all(parameter.grad is None for parameter in translator.lam_model.parameters())
    after = translator.lam_model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    # Eval mode: deterministic (no dropout) and equal to the wrapped model in eval mode.
    torch.testing.assert_close(translator.lam_model(video), features)
    torch.testing.assert_close(translator.lam_model.model.eval().forward_features(video), features)


def test_train_mode_option_reproduces_the_original_train_mode_backbones():
    translator = Translator(train_mode=True).train()
    assert translator.lam_model.model.base_model[1].training
    running_mean = translator.lam_model.model.base_model[1].running_mean.clone()
    features = translator.lam_model(_video())
    assert not torch.equal(translator.lam_model.model.base_model[1].running_mean, running_mean)
    assert all(not parameter.requires_grad for parameter in translator.lam_model.parameters())
    translator.proj_lam(features).sum().backward()
    translator.eval()
    assert not translator.lam_model.model.base_model[1].training


def test_state_dict_keys_are_the_wrapped_model_keys():
    translator = Translator()
    keys = list(translator.state_dict())
    assert keys[0] == "lam_model.base_model.0.weight"
    assert "lam_model.base_model.1.running_mean" in keys and "lam_model.last_layer.bias" in keys
    assert not any(key.startswith("lam_model.model.") for key in keys)
    assert keys[-2:] == ["proj_lam.weight", "proj_lam.bias"]

    # A state dict written with official names loads strictly into a fresh translator.
    state = {key: torch.randn_like(value.float()).to(value.dtype) for key, value in translator.state_dict().items()}
    fresh = Translator()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.lam_model.model.base_model[1].running_var, state["lam_model.base_model.1.running_var"])
    # The same holds for the wrapper on its own (no prefix).
    alone = FrozenBackbone(TinyStageOne())
    alone.load_state_dict(TinyStageOne().state_dict(), strict=True)


def test_missing_and_unexpected_keys_are_reported_with_file_names():
    state = Translator().state_dict()
    del state["lam_model.base_model.1.running_mean"]
    state["lam_model.base_model.9.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as error:
        Translator().load_state_dict(state, strict=True)
    message = str(error.value)
    assert '"lam_model.base_model.1.running_mean"' in message and '"lam_model.base_model.9.weight"' in message
    assert "lam_model.model." not in message
    result = Translator().load_state_dict(state, strict=False)
    assert result.missing_keys == ["lam_model.base_model.1.running_mean"]
    assert result.unexpected_keys == ["lam_model.base_model.9.weight"]


def test_rejects_models_without_the_feature_interface():
    with pytest.raises(TypeError, match="forward_features"):
        FrozenBackbone(nn.Linear(2, 2))

    class NoWidth(nn.Module):
        def forward_features(self, x):
            return x

    with pytest.raises(TypeError, match="feature_dim"):
        FrozenBackbone(NoWidth())


def test_token_groups_are_returned_as_normal_tensors():
    class TwoStreams(nn.Module):
        feature_dim = 4

        def __init__(self):
            super().__init__()
            self.slow = nn.Linear(4, 4)

        def forward_features(self, x):
            return self.slow(x), [x * 2]

    slow, (fast,) = FrozenBackbone(TwoStreams())(torch.randn(2, 3, 4))
    assert not slow.is_inference() and not fast.is_inference()
    (nn.Linear(4, 1)(slow).sum() + nn.Linear(4, 1)(fast).sum()).backward()
