"""I3D ResNet-50 for PNR/OSCC: official checkpoint layouts, key conversion, shapes, head order, reference forward."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from HOI.models.resnet3d import (
    OSCC_HEAD_NAME,
    PNR_HEAD_NAME,
    KeyframeHead,
    KeyframeLocalizationResNet,
    StateChangeClsResNet,
    export_official,
    head_grid_size,
    native_to_official,
    official_to_native,
    s5_spatial_size,
)
from tests.manifests import manifest_keys, random_state_dict


def _manifest_keys(name):
    return [[key, list(shape), dtype] for key, shape, dtype in manifest_keys(name)]


def _official_state_dict(name, prefix):
    """Random official state dict from a manifest: keys under ``prefix``, with ``prefix`` removed."""
    return OrderedDict(random_state_dict(name, prefix=prefix, strip=prefix))


# Shared by the loading tests only: they overwrite the weights with random manifest values.
@pytest.fixture(scope="module")
def pnr_model():
    torch.manual_seed(0)
    return KeyframeLocalizationResNet()


@pytest.fixture(scope="module")
def oscc_model():
    torch.manual_seed(0)
    return StateChangeClsResNet(no_temp_pool=True)


@pytest.mark.parametrize("manifest, fixture", [("ts_pnr.json", "pnr_model"), ("ts_oscc.json", "oscc_model")])
def test_official_checkpoint_loads_strictly_and_exports_in_manifest_order(manifest, fixture, request):
    model = request.getfixturevalue(fixture)
    keys = _manifest_keys(manifest)
    official = _official_state_dict(manifest, "model.")
    assert len(official) == len(keys) == 320
    model.load_state_dict(official_to_native(official), strict=True)

    exported = export_official(model)
    assert [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in exported.items()] == keys
    for name, tensor in exported.items():
        assert torch.equal(tensor, official[name[len("model."):]]), name


@pytest.mark.parametrize("manifest", ["egot2s_pnr", "egot2s_oscc", "egot2s_ar", "egot2s_lta_4task", "egot2g_hoi"])
def test_translator_sub_models_load_strictly(manifest, pnr_model, oscc_model):
    # The same I3D sub-trees sit under pnr_model./oscc_model. in every HOI translator checkpoint.
    for model, prefix in ((pnr_model, "model.pnr_model."), (oscc_model, "model.oscc_model.")):
        sub_tree = _official_state_dict(manifest, prefix)
        assert len(sub_tree) == 320
        model.load_state_dict(official_to_native(sub_tree), strict=True)


def test_key_conversion_round_trip_is_exact():
    official = _official_state_dict("ts_oscc.json", "model.")
    native = official_to_native(official)
    assert next(iter(native)) == "blocks.0.conv.weight"
    assert "blocks.1.res_blocks.0.branch2.norm_c.num_batches_tracked" in native
    back = native_to_official(native, head_name=OSCC_HEAD_NAME)
    assert list(back) == list(official)
    assert all(back[name] is official[name] for name in official)


def test_full_size_forward_on_a_short_clip():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = KeyframeLocalizationResNet().eval()
    frames = torch.rand(1, 3, 4, 225, 225) * 255
    with torch.no_grad():
        s5 = model.forward_trunk(frames)
        tokens = model.head.tokens(s5)
        keyframe_logits = model(frames)
    assert s5.shape == (1, 2048, 4, 8, 8)
    assert tokens.shape == (1, 4, 8192) and model.feature_dim == 8192
    assert keyframe_logits.shape == (1, 4) and torch.isfinite(keyframe_logits).all()
    torch.testing.assert_close(keyframe_logits, model.head.projection(tokens)[..., 0])


@pytest.mark.slow
def test_paper_size_feature_shapes():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pnr = KeyframeLocalizationResNet().eval()
    oscc_pooled = StateChangeClsResNet().eval()
    frames = torch.rand(1, 3, 16, 225, 225) * 255
    with torch.no_grad():
        s5 = pnr.forward_trunk([frames])
        assert pnr.head.tokens(s5).shape == (1, 16, 8192)
        assert pnr.head(s5).shape == (1, 1, 16)
        # Pooled OSCC head on the same trunk output: the official (B, 2, 1) logits and (B, 1, 8192) feature.
        assert oscc_pooled.head.tokens(s5).shape == (1, 1, 8192)
        assert oscc_pooled.head(s5).shape == (1, 2, 1)


def test_crop_size_to_grid_rule():
    assert (s5_spatial_size(225), head_grid_size(225)) == (8, 2)
    assert (s5_spatial_size(224), head_grid_size(224)) == (7, 1)
    assert head_grid_size(97) == 2  # any 32 m + 1 crop keeps the 2x2 grid
    model = KeyframeLocalizationResNet(width=8, stage_depths=(1, 1, 1, 1), crop_size=224)
    assert model.feature_dim == 256 and model.head.projection.in_features == 256  # 1 x 1 x (32 * 8)
    assert KeyframeLocalizationResNet(width=8, stage_depths=(1, 1, 1, 1)).feature_dim == 4 * 256


def test_head_flattens_grid_in_h_w_c_order():
    torch.manual_seed(0)
    channels, steps = 3, 2
    head = KeyframeHead(in_channels=channels, num_classes=2, grid_size=2, spatial_kernel=7, dropout_rate=0.0)
    s5 = torch.randn(1, channels, steps, 8, 8)
    expected = torch.empty(1, steps, 4 * channels)
    for t in range(steps):
        for h in range(2):
            for w in range(2):
                for c in range(channels):
                    expected[0, t, (h * 2 + w) * channels + c] = s5[0, c, t, h:h + 7, w:w + 7].mean()
    tokens = head.tokens(s5)
    torch.testing.assert_close(tokens, expected)
    logits = head(s5)
    assert logits.shape == (1, 2, steps)
    torch.testing.assert_close(logits, (expected @ head.projection.weight.T + head.projection.bias).permute(0, 2, 1))


def test_tiny_models_outputs_and_list_input():
    torch.manual_seed(0)
    options = dict(width=8, stage_depths=(1, 1, 1, 1), num_frames=4, crop_size=97)
    frames = torch.rand(2, 3, 4, 97, 97) * 255
    pnr = KeyframeLocalizationResNet(**options).eval()
    oscc = StateChangeClsResNet(**options).eval()
    oscc_per_frame = StateChangeClsResNet(no_temp_pool=True, **options).eval()
    oscc_per_frame.load_state_dict(oscc.state_dict())  # pooling has no parameters
    inputs = [frames]
    with torch.no_grad():
        assert pnr(inputs).shape == (2, 4)
        assert pnr.forward_features(frames).shape == (2, 4, 1024)
        state_logits = oscc(frames)
        assert state_logits.shape == (2, 2)
        assert oscc.forward_features(frames).shape == (2, 1, 1024)
        per_frame = oscc_per_frame(frames)
        assert per_frame.shape == (2, 2, 4)
        # The linear head commutes with temporal averaging: pooled logits = mean of per-frame logits.
        torch.testing.assert_close(state_logits, per_frame.mean(dim=2), rtol=1e-4, atol=1e-5)
    assert len(inputs) == 1 and inputs[0] is frames


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = KeyframeLocalizationResNet(width=4, stage_depths=(1, 1, 1, 1), num_frames=2, crop_size=65)
    frames = torch.rand(1, 3, 2, 65, 65) * 255
    model.train()
    assert not torch.equal(model.forward_features(frames), model.forward_features(frames))
    model.eval()
    assert torch.equal(model.forward_features(frames), model.forward_features(frames))


def test_initialisation_follows_pyslowfast():
    model = KeyframeLocalizationResNet(width=16, stage_depths=(2, 1, 1, 1))
    block = model.blocks[1].res_blocks[1]
    assert torch.all(block.branch2.norm_c.weight == 0) and torch.all(block.branch2.norm_a.weight == 1)
    assert torch.all(model.blocks[0].norm.weight == 1) and torch.all(block.branch2.norm_a.bias == 0)
    projection = model.head.projection
    assert torch.all(projection.bias == 0)
    assert projection.weight.std().item() == pytest.approx(0.01, rel=0.1)
    # MSRA fill: normal with std sqrt(2 / fan_out), fan_out = out_channels x kernel volume.
    conv = model.blocks[4].res_blocks[0].branch2.conv_a  # (128, 256, 3, 1, 1)
    assert conv.weight.shape == (128, 256, 3, 1, 1)
    assert conv.weight.std().item() == pytest.approx((2 / (128 * 3)) ** 0.5, rel=0.05)


def test_bad_inputs_name_the_problem():
    model = KeyframeLocalizationResNet(width=4, stage_depths=(1, 1, 1, 1), num_frames=2, crop_size=65)
    pooled = StateChangeClsResNet(width=4, stage_depths=(1, 1, 1, 1), num_frames=2, crop_size=65)
    frames = torch.rand(1, 3, 2, 65, 65)
    with pytest.raises(ValueError, match="crop_size 65"):
        model(torch.rand(1, 3, 2, 64, 64))
    with pytest.raises(ValueError, match="one-element list"):
        model([frames, frames])
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(frames[0])
    with pytest.raises(ValueError, match="num_frames=2"):
        pooled(torch.rand(1, 3, 3, 65, 65))
    with pytest.raises(ValueError, match="depth"):
        KeyframeLocalizationResNet(depth=18)


def test_key_conversion_errors():
    tensor = torch.zeros(1)
    with pytest.raises(ValueError, match="s1.pathway0_stem.conv.bias"):
        official_to_native({"s1.pathway0_stem.conv.bias": tensor})
    with pytest.raises(ValueError, match="strip the Lightning 'model.' prefix"):
        official_to_native({"model.s1.pathway0_stem.conv.weight": tensor})
    with pytest.raises(ValueError, match="more than one head"):
        official_to_native({f"{PNR_HEAD_NAME}.projection.bias": tensor, f"{OSCC_HEAD_NAME}.projection.bias": tensor})
    with pytest.raises(ValueError, match="head_name"):
        native_to_official({"head.projection.bias": tensor}, head_name="head")
    with pytest.raises(ValueError, match="blocks.5"):
        native_to_official({"blocks.5.conv.weight": tensor})


def _reference_forward(official, frames, stage_depths, temporal_kernel=3):
    """PySlowFast slow_layer5 semantics written directly on the official keys (eval-mode BN, per-frame head)."""

    def bn(x, prefix):
        return F.batch_norm(x, official[f"{prefix}.running_mean"], official[f"{prefix}.running_var"],
                            official[f"{prefix}.weight"], official[f"{prefix}.bias"], training=False, eps=1e-5)

    pad_t = temporal_kernel // 2
    x = F.conv3d(frames, official["s1.pathway0_stem.conv.weight"], stride=(1, 2, 2), padding=(pad_t, 3, 3))
    x = F.relu(bn(x, "s1.pathway0_stem.bn"))
    x = F.max_pool3d(x, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    for stage, (num_blocks, stride) in enumerate(zip(stage_depths, (1, 2, 2, 2)), start=2):
        for index in range(num_blocks):
            prefix = f"s{stage}.pathway0_res{index}"
            block_stride = stride if index == 0 else 1
            y = F.relu(bn(F.conv3d(x, official[f"{prefix}.branch2.a.weight"], padding=(pad_t, 0, 0)),
                          f"{prefix}.branch2.a_bn"))
            y = F.relu(bn(F.conv3d(y, official[f"{prefix}.branch2.b.weight"], stride=(1, block_stride, block_stride),
                                   padding=(0, 1, 1)), f"{prefix}.branch2.b_bn"))
            y = bn(F.conv3d(y, official[f"{prefix}.branch2.c.weight"]), f"{prefix}.branch2.c_bn")
            if f"{prefix}.branch1.weight" in official:
                shortcut = bn(F.conv3d(x, official[f"{prefix}.branch1.weight"], stride=(1, block_stride, block_stride)),
                              f"{prefix}.branch1_bn")
            else:
                shortcut = x
            x = F.relu(shortcut + y)
    kernel = frames.shape[-1] // 32
    pooled = F.avg_pool3d(x, kernel_size=(1, kernel, kernel), stride=1)  # (B, C, T, 2, 2)
    tokens = pooled.permute(0, 2, 3, 4, 1).flatten(2)
    logits = F.linear(tokens, official[f"{PNR_HEAD_NAME}.projection.weight"],
                      official[f"{PNR_HEAD_NAME}.projection.bias"])
    return tokens, logits[..., 0]


def test_matches_reference_forward_on_official_keys():
    torch.manual_seed(0)
    stage_depths = (2, 1, 2, 1)
    source = KeyframeLocalizationResNet(width=4, stage_depths=stage_depths, num_frames=3, crop_size=97)
    # Non-trivial BN statistics and affine parameters so that a wrong BN mapping would show.
    generator = torch.Generator().manual_seed(1)
    official = OrderedDict()
    for name, tensor in native_to_official(source.state_dict()).items():
        if tensor.dtype.is_floating_point and not name.endswith("conv.weight") and tensor.dim() == 1:
            tensor = torch.rand(tensor.shape, generator=generator) + 0.5
        elif tensor.dim() == 5:
            tensor = torch.randn(tensor.shape, generator=generator) * (2.0 / tensor[0].numel()) ** 0.5
        official[name] = tensor
    model = KeyframeLocalizationResNet(width=4, stage_depths=stage_depths, num_frames=3, crop_size=97).eval()
    model.load_state_dict(official_to_native(official), strict=True)
    frames = torch.rand(2, 3, 3, 97, 97) * 255
    with torch.no_grad():
        expected_tokens, expected_logits = _reference_forward(official, frames, stage_depths)
        torch.testing.assert_close(model.forward_features(frames), expected_tokens, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(frames), expected_logits, rtol=1e-4, atol=1e-4)
