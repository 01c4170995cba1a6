"""LTA ForecastingEncoderDecoder: official layout, tiny-config forward/generate, tokens, backbone freezing."""

import math

import pytest
import torch

from HOI.models.lta import (
    ConcatAggregator,
    ForecastingEncoderDecoder,
    TransformerAggregator,
    export_lta_official,
    load_lta_official,
    lta_key_to_native,
    lta_key_to_official,
    sinusoidal_table,
)
from HOI.models.slowfast import MultiTaskSlowFast, export_slowfast_official, load_recognition_trunk
from tests.manifests import load_manifest, random_state_dict


TINY_BACKBONE = dict(depth=50, width=8, num_frames=8, crop_size=64)
TINY = dict(
    TINY_BACKBONE,
    num_classes=(5, 7),
    num_future=3,
    clip_dim=32,
    aggregator_heads=4,
    aggregator_layers=2,
    aggregator_ff_dim=64,
)


def tiny_window(batch=2, clips=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    slow = torch.randn(batch, clips, 3, 2, 64, 64, generator=generator)
    fast = torch.randn(batch, clips, 3, 8, 64, 64, generator=generator)
    return [slow, fast]



@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lta_model_without_decoder_takes_the_2task_layout_and_full_files():
    two_task = random_state_dict("egot2s_lta_2task", prefix="model.lta_model.", strip="model.lta_model.")
    model = ForecastingEncoderDecoder(build_decoder=False)
    load_lta_official(model, two_task)
    assert list(export_lta_official(model)) == ["model." + key for key in two_task]
    del two_task
    # The full LTA file has decoder keys: exactly those may be left over.
    full = random_state_dict("lta_slowfast_trf")
    load_lta_official(model, full)
    with pytest.raises(ValueError, match="missing keys"):
        load_lta_official(model, {k: v for k, v in full.items() if "encoder.norm" not in k})


@pytest.fixture(scope="module")
def paper_lta():
    """The full-size model (242 M parameters); built once for the manifest tests."""
    return ForecastingEncoderDecoder()


def test_lta_manifest_loads_strictly_and_exports_in_manifest_order(paper_lta):
    manifest = load_manifest("lta_slowfast_trf")
    state_dict = random_state_dict("lta_slowfast_trf")
    assert sum(p.numel() for p in paper_lta.parameters()) == manifest["num_params"]
    load_lta_official(paper_lta, state_dict)
    exported = export_lta_official(paper_lta)
    assert [(k, list(v.shape), str(v.dtype)[6:]) for k, v in exported.items()] == [tuple(e) for e in manifest["keys"]]
    assert all(torch.equal(exported[key], value) for key, value in state_dict.items())
    del state_dict


def test_lta_model_inside_the_4task_translator_loads(paper_lta):
    state_dict = random_state_dict("egot2s_lta_4task", prefix="model.lta_model.", strip="model.lta_model.")
    load_lta_official(paper_lta, state_dict)
    pe = paper_lta.clip_aggregator.pos_encoder.pe
    assert torch.equal(pe, state_dict["clip_aggregator.pos_encoder.pe"])


def test_recognition_trunk_loads_into_lta_backbone_with_head_missing(paper_lta):
    recognition = random_state_dict("recognition_ego4d_slowfast8x8", strip="model.")
    head_before = paper_lta.backbone.head.projection.weight.clone()
    load_recognition_trunk(paper_lta.backbone, recognition)
    assert torch.equal(paper_lta.backbone.head.projection.weight, head_before)
    conv = paper_lta.state_dict()["backbone.blocks.3.multipathway_fusion.conv_fast_to_slow.weight"]
    assert torch.equal(conv, recognition["s4_fuse.conv_f2s.weight"])


def test_sinusoidal_table_matches_closed_form():
    table = sinusoidal_table(1000, 2048)
    assert table.shape == (1000, 1, 2048) and table.dtype == torch.float32
    positions = torch.arange(1000, dtype=torch.float64).unsqueeze(1)
    frequencies = 10000.0 ** (-torch.arange(0, 2048, 2, dtype=torch.float64) / 2048)
    expected = torch.stack([torch.sin(positions * frequencies), torch.cos(positions * frequencies)], dim=-1)
    assert torch.allclose(table[:, 0].double(), expected.reshape(1000, 2048), atol=2e-4)
    assert table[0, 0, 0] == 0 and table[0, 0, 1] == 1
    assert math.isclose(table[1, 0, 0].item(), math.sin(1.0), rel_tol=1e-6)


def test_key_conversion_only_touches_backbone_trunk():
    assert lta_key_to_native("backbone.s1_fuse.bn.weight") == "backbone.blocks.0.multipathway_fusion.norm.weight"
    assert lta_key_to_native("backbone.head.projection.bias") == "backbone.head.projection.bias"
    assert lta_key_to_official("decoder.head.projections.19.weight") == "decoder.head.projections.19.weight"
    with pytest.raises(ValueError, match="not an official LTA"):
        lta_key_to_native("head.projections.0.weight")


def test_tiny_forward_shapes_and_features():
    model = ForecastingEncoderDecoder(**TINY).eval()
    inputs = tiny_window()
    with torch.no_grad():
        verb_logits, noun_logits = model(inputs)
        clip_features = model.encode_clips(inputs)
        tokens = model.forward_features(inputs)
        tokens_again = model.forward_features(*inputs)
    assert verb_logits.shape == (2, 3, 5) and noun_logits.shape == (2, 3, 7)
    assert clip_features.shape == (2, 2, 32) and tokens.shape == (2, 2, 32) and model.feature_dim == 32
    assert torch.equal(tokens, tokens_again)
    # Each clip goes through the backbone on its own; the decoder reads the aggregator's last step.
    single = model.backbone([inputs[0][:, 1], inputs[1][:, 1]])
    assert torch.allclose(clip_features[:, 1], single, atol=1e-5)
    with torch.no_grad():
        expected = model.decoder(tokens[:, -1])
    assert torch.allclose(verb_logits, expected[0], atol=1e-5) and torch.allclose(noun_logits, expected[1], atol=1e-5)
    # Four observed clips work too: the aggregator has no clip-count-dependent parameters.
    with torch.no_grad():
        assert model(tiny_window(clips=4))[0].shape == (2, 3, 5)


def test_generate_shapes_determinism_and_argmax():
    model = ForecastingEncoderDecoder(**TINY).eval()
    inputs = tiny_window()
    verbs, nouns = model.generate(inputs, k=5, generator=torch.Generator().manual_seed(7))
    assert verbs.shape == (2, 5, 3) and nouns.shape == (2, 5, 3) and verbs.dtype == torch.int64
    assert int(verbs.max()) < 5 and int(nouns.max()) < 7 and int(verbs.min()) >= 0
    again = model.generate(inputs, k=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(verbs, again[0]) and torch.equal(nouns, again[1])
    other = model.generate(inputs, k=5, generator=torch.Generator().manual_seed(8))
    assert not (torch.equal(verbs, other[0]) and torch.equal(nouns, other[1]))

    best_verbs, best_nouns = model.generate(inputs, k=1)
    with torch.no_grad():
        verb_logits, noun_logits = model(inputs)
    assert best_verbs.shape == (2, 1, 3)
    assert torch.equal(best_verbs[:, 0], verb_logits.argmax(-1))
    assert torch.equal(best_nouns[:, 0], noun_logits.argmax(-1))


def test_sampling_follows_the_softmax():
    model = ForecastingEncoderDecoder(**TINY).eval()
    with torch.no_grad():
        model.decoder.head.projections[0].bias.copy_(torch.tensor([8.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
        model.decoder.head.projections[0].weight.zero_()
    verbs, nouns = model.generate(tiny_window(), k=200, generator=torch.Generator().manual_seed(0))
    share = (verbs[:, :, 0] == 0).float().mean().item()
    expected = math.exp(8) / (math.exp(8) + 4)
    assert abs(share - expected) < 0.02
    assert (nouns[:, :, 0] < 7).all()


def test_freeze_backbone_leaves_only_backbone_head_trainable():
    model = ForecastingEncoderDecoder(**TINY)
    frozen_backbone = {n for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad}
    assert frozen_backbone == {"backbone.head.projection.weight", "backbone.head.projection.bias"}
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))
    model.train()
    assert not model.backbone.blocks.training and model.backbone.head.training and model.clip_aggregator.training
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    verb_logits, noun_logits = model(tiny_window())
    (verb_logits.sum() + noun_logits.sum()).backward()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    assert model.backbone.head.projection.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.blocks.parameters())

    trainable = ForecastingEncoderDecoder(**TINY, freeze_backbone=False)
    assert all(p.requires_grad for p in trainable.parameters())


def test_recognition_trunk_into_tiny_lta_backbone():
    recognition = MultiTaskSlowFast(**TINY_BACKBONE, num_classes=(5, 7))
    with torch.no_grad():
        for parameter in recognition.parameters():
            parameter.normal_()
    model = ForecastingEncoderDecoder(**TINY)
    load_recognition_trunk(model.backbone, export_slowfast_official(recognition))
    assert all(
        torch.equal(value, model.backbone.state_dict()[key])
        for key, value in recognition.state_dict().items()
        if not key.startswith("head.")
    )


def test_aggregators():
    concat = ConcatAggregator(dim=6, num_inputs=3)
    features = torch.randn(2, 3, 6)
    assert concat(features).shape == (2, 18) and torch.equal(concat(features, return_all=True), features)
    with pytest.raises(ValueError, match="3 clips"):
        concat(torch.randn(2, 2, 6))
    transformer = TransformerAggregator(dim=8, num_heads=2, num_layers=1, ff_dim=16).eval()
    with torch.no_grad():
        steps = transformer(features.repeat(1, 1, 2)[..., :8], return_all=True)
        last = transformer(features.repeat(1, 1, 2)[..., :8])
    assert steps.shape == (2, 3, 8) and torch.allclose(steps[:, -1], last)

    model = ForecastingEncoderDecoder(**TINY, aggregator="concat", num_input_clips=2).eval()
    assert model.decoder.head.projections[0].in_features == 64
    with torch.no_grad():
        assert model(tiny_window())[1].shape == (2, 3, 7)
    with pytest.raises(ValueError, match="aggregator"):
        ForecastingEncoderDecoder(**TINY, aggregator="lstm")


def test_bad_inputs_give_clear_errors():
    model = ForecastingEncoderDecoder(**TINY)
    slow, fast = tiny_window()
    with pytest.raises(ValueError, match="6 dims"):
        model([slow[:, 0], fast[:, 0]])
    with pytest.raises(ValueError, match="clip counts differ"):
        model([slow, fast[:, :1]])
    with pytest.raises(ValueError, match="k >= 1"):
        model.generate([slow, fast], k=0)
    headless = ForecastingEncoderDecoder(**TINY, build_decoder=False)
    with pytest.raises(ValueError, match="without a decoder"):
        headless([slow, fast])


def test_works_as_a_frozen_backbone_source():
    from egot2.backbone import FrozenBackbone

    source = FrozenBackbone(ForecastingEncoderDecoder(**TINY, build_decoder=False))
    assert source.feature_dim == 32
    assert source(tiny_window()).shape == (2, 2, 32)
