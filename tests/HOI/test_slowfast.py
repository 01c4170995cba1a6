"""SlowFast 8x8 R101 (AR stage I): official key layout, tiny-config forwards, EgoT2 tokens, trunk freezing."""

import pytest
import torch

from HOI.models.slowfast import (
    MultiTaskSlowFast,
    SlowFast,
    SlowFastClipEncoder,
    export_slowfast_official,
    load_recognition_trunk,
    load_slowfast_official,
    slowfast_key_to_native,
    slowfast_key_to_official,
    slowfast_native_to_official,
    slowfast_official_to_native,
)
from tests.manifests import load_manifest, random_state_dict

# R50 at width 8: slow s5 256 channels, fast 32; 8 fast / 2 slow frames; 64x64 crop → 2x2 s5 grid.
TINY = dict(depth=50, width=8, num_frames=8, crop_size=64)


def tiny_clip(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    slow = torch.randn(batch, 3, 2, 64, 64, generator=generator)
    fast = torch.randn(batch, 3, 8, 64, 64, generator=generator)
    return slow, fast



@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_recognition_manifest_loads_strictly_and_exports_in_manifest_order():
    manifest = load_manifest("recognition_ego4d_slowfast8x8")
    state_dict = random_state_dict("recognition_ego4d_slowfast8x8")
    model = MultiTaskSlowFast()
    assert model.head_pool_kernels() == ((8, 7, 7), (32, 7, 7))
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]
    load_slowfast_official(model, state_dict)  # model.-prefixed, as in the Lightning file

    exported = export_slowfast_official(model)
    assert [(k, list(v.shape), str(v.dtype)[6:]) for k, v in exported.items()] == [tuple(e) for e in manifest["keys"]]
    assert all(torch.equal(exported[key], value) for key, value in state_dict.items())
    # A specific tensor lands where the name says: the slow s3 block-2 conv a.
    native = model.state_dict()["blocks.2.multipathway_blocks.0.res_blocks.2.branch2.conv_a.weight"]
    assert torch.equal(native, state_dict["model.s3.pathway0_res2.branch2.a.weight"])


def test_egot2s_ar_recognition_model_is_a_headless_trunk():
    state_dict = random_state_dict("egot2s_ar", prefix="model.recognition_model.", strip="model.recognition_model.")
    assert len(state_dict) == 1272
    trunk = SlowFast()
    load_slowfast_official(trunk, state_dict)
    assert list(slowfast_native_to_official(trunk.state_dict())) == list(state_dict)


def test_recognition_trunk_into_clip_encoder_skips_only_head_keys():
    state_dict = random_state_dict("recognition_ego4d_slowfast8x8")
    encoder = SlowFastClipEncoder(out_features=1024)  # the LTA 4-task translator's action_model
    head_before = encoder.head.projection.weight.clone()
    load_recognition_trunk(encoder, state_dict)
    assert torch.equal(encoder.head.projection.weight, head_before)
    stem = encoder.state_dict()["blocks.0.multipathway_blocks.1.conv.weight"]
    assert torch.equal(stem, state_dict["model.s1.pathway1_stem.conv.weight"])

    broken = dict(state_dict)
    del broken["model.s5.pathway1_res2.branch2.c_bn.running_var"]
    with pytest.raises(ValueError, match="s5|blocks.4"):
        load_recognition_trunk(encoder, broken)


def test_key_conversion_is_a_bijection_and_rejects_foreign_keys():
    model = MultiTaskSlowFast(**TINY, num_classes=(5, 7))
    native = model.state_dict()
    official = slowfast_native_to_official(native)
    assert list(slowfast_official_to_native(official)) == list(native)
    assert "s1_fuse.conv_f2s.weight" in official and "s4_fuse.bn.running_mean" in official
    assert "s5_fuse.conv_f2s.weight" not in official
    assert slowfast_key_to_native("s2.pathway1_res0.branch1_bn.bias") == (
        "blocks.1.multipathway_blocks.1.res_blocks.0.branch1_norm.bias"
    )
    fuse_conv = "blocks.3.multipathway_fusion.conv_fast_to_slow.weight"
    assert slowfast_key_to_official(fuse_conv) == "s4_fuse.conv_f2s.weight"
    foreign = ("s6.pathway0_res0.branch2.a.weight", "backbone.s1.pathway0_stem.conv.weight", "s1.pathway0_stem.bn.foo")
    for bad in foreign:
        with pytest.raises(ValueError, match="not an official SlowFast"):
            slowfast_key_to_native(bad)


def test_tiny_multitask_forward_shapes_train_and_eval():
    model = MultiTaskSlowFast(**TINY, num_classes=(5, 7))
    assert model.head_pool_kernels() == ((2, 2, 2), (8, 2, 2))
    assert model.feature_dims == (256, 32) and model.feature_dim == 288
    slow, fast = tiny_clip()
    inputs = [slow, fast]
    verb_logits, noun_logits = model(inputs)
    assert verb_logits.shape == (2, 5) and noun_logits.shape == (2, 7)
    assert inputs[0] is slow and inputs[1] is fast and slow.shape[2] == 2  # the caller's list is not mutated
    model.eval()
    with torch.no_grad():
        first = model([slow, fast])
        second = model([slow, fast])
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_head_is_pooled_s5_times_projection():
    model = MultiTaskSlowFast(**TINY, num_classes=(5, 7)).eval()
    with torch.no_grad():
        slow_map, fast_map = model.forward_pathways(tiny_clip())
        assert slow_map.shape == (2, 256, 2, 2, 2) and fast_map.shape == (2, 32, 8, 2, 2)
        pooled = torch.cat([slow_map.mean((2, 3, 4)), fast_map.mean((2, 3, 4))], dim=1)
        verb_logits, _ = model(tiny_clip())
    assert torch.allclose(verb_logits, model.head.projections[0](pooled), atol=1e-5)


def test_forward_features_are_egot2_tokens():
    model = SlowFast(**TINY).eval()
    slow, fast = tiny_clip()
    with torch.no_grad():
        slow_tokens, fast_tokens = model.forward_features([slow, fast])
        same = model.forward_features(slow, fast)
        slow_map, fast_map = model.forward_pathways([slow, fast])
    assert slow_tokens.shape == (2, 2, 256) and fast_tokens.shape == (2, 2, 32)
    assert torch.equal(slow_tokens, same[0]) and torch.equal(fast_tokens, same[1])
    # slow: one token per frame, space averaged; fast: 8 frames in 2 groups of 4.
    assert torch.allclose(slow_tokens, slow_map.mean((3, 4)).transpose(1, 2), atol=1e-6)
    fast_groups = fast_map.mean((3, 4)).reshape(2, 32, 2, 4).mean(-1).transpose(1, 2)
    assert torch.allclose(fast_tokens, fast_groups, atol=1e-6)


def test_paper_geometry_of_tokens_and_pool_kernels_follows_arguments():
    model = SlowFast(depth=50, width=8, num_frames=16, alpha=4, crop_size=96, num_feature_tokens=2)
    assert model.head_pool_kernels() == ((4, 3, 3), (16, 3, 3))
    with torch.no_grad():
        slow_tokens, fast_tokens = model.forward_features([torch.randn(1, 3, 4, 96, 96), torch.randn(1, 3, 16, 96, 96)])
    assert slow_tokens.shape == (1, 2, 256) and fast_tokens.shape == (1, 2, 32)


def test_clip_encoder_returns_clip_embedding():
    encoder = SlowFastClipEncoder(**TINY, out_features=12)
    assert encoder(list(tiny_clip())).shape == (2, 12)
    assert set(encoder.head.state_dict()) == {"projection.weight", "projection.bias"}


def test_bad_inputs_give_clear_errors():
    model = MultiTaskSlowFast(**TINY, num_classes=(5, 7))
    slow, fast = tiny_clip()
    with pytest.raises(ValueError, match="two SlowFast pathways"):
        model([slow])
    with pytest.raises(ValueError, match="alpha=4"):
        model([slow, fast[:, :, :4]])
    with pytest.raises(ValueError, match="5 dims"):
        model([slow[0], fast[0]])
    with pytest.raises(ValueError, match="smaller than the head's pooling kernel"):
        model([slow[..., :32, :32], fast[..., :32, :32]])
    with pytest.raises(ValueError, match="depth"):
        SlowFast(depth=18)


def test_load_reports_missing_and_misshaped_keys():
    model = MultiTaskSlowFast(**TINY, num_classes=(5, 7))
    official = export_slowfast_official(model)
    del official["model.s2_fuse.bn.weight"]
    official["model.head.projections.0.weight"] = torch.zeros(6, 288)
    with pytest.raises(ValueError) as error:
        load_slowfast_official(model, official)
    assert "blocks.1.multipathway_fusion.norm.weight" in str(error.value)
    assert "head.projections.0.weight" in str(error.value)


def test_frozen_trunk_keeps_eval_mode_and_statistics():
    encoder = SlowFastClipEncoder(**TINY, out_features=12).freeze_trunk()
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"head.projection.weight", "head.projection.bias"}
    encoder.train()
    assert encoder.training and encoder.head.training and not encoder.blocks.training
    stats = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    encoder(list(tiny_clip())).sum().backward()
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in stats.items())
    assert encoder.head.projection.weight.grad is not None

    legacy = SlowFastClipEncoder(**TINY, out_features=12).freeze_trunk(train_mode=True).train()
    assert legacy.blocks.training
    before = legacy.blocks[0].multipathway_blocks[0].norm.running_mean.clone()
    legacy(list(tiny_clip()))
    assert not torch.equal(legacy.blocks[0].multipathway_blocks[0].norm.running_mean, before)


def test_export_round_trip_moves_values_between_models():
    source = MultiTaskSlowFast(**TINY, num_classes=(5, 7))
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    target = MultiTaskSlowFast(**TINY, num_classes=(5, 7))
    load_slowfast_official(target, export_slowfast_official(source))
    assert all(torch.equal(value, target.state_dict()[key]) for key, value in source.state_dict().items())
    source.eval(), target.eval()
    with torch.no_grad():
        source_logits, target_logits = source(list(tiny_clip())), target(list(tiny_clip()))
    assert all(torch.isfinite(a).all() and torch.allclose(a, b) for a, b in zip(source_logits, target_logits))


def test_works_as_a_frozen_backbone_source():
    from egot2.backbone import FrozenBackbone

    source = FrozenBackbone(SlowFast(**TINY))
    assert source.feature_dim == 288
    slow_tokens, fast_tokens = source([*tiny_clip()])
    assert slow_tokens.shape == (2, 2, 256) and fast_tokens.shape == (2, 2, 32)
    projection = torch.nn.Linear(256, 4)
    projection(slow_tokens).sum().backward()  # ordinary tensors, usable by a trainable translator
    assert projection.weight.grad is not None
