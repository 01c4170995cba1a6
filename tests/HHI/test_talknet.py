"""HHI.models.talknet: official key layout, shapes, the cross-track 3-D conv quirk, loss, errors."""
import pytest
import torch
import torch.nn.functional as F

from egot2.checkpoint import CheckpointMismatchError
from HHI.models.talknet import (
    TALKNET_CRITERION_KEYS,
    TalkNet,
    TalkNetASD,
    TalkNetHeads,
    load_talknet_state_dict,
    talknet_loss,
)
from tests.manifests import load_manifest, manifest_keys, random_state_dict

DTYPES = {"float32": torch.float32, "int64": torch.int64}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference_state_dict(module):
    """Well-scaled, seeded weights for every entry (sorted by name) so eval-mode activations stay sane."""
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for key, tensor in sorted(module.state_dict().items()):
        shape = tensor.shape
        if key.endswith(("num_batches_tracked", "criterion.weight")):
            value = tensor.clone()
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith(("running_mean", "bias", "beta")):
            value = 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith("gamma") or tensor.dim() == 1:  # norm scales, PReLU slope
            value = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            value = torch.randn(shape, generator=generator) / shape[1:].numel() ** 0.5
        state_dict[key] = value
    return state_dict


def _inputs(batch=2, frames=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    faces = torch.rand(batch, frames, 112, 112, generator=generator) * 255
    mfcc = torch.randn(batch, 4 * frames, 13, generator=generator)
    return faces, mfcc


# ------------------------------------------------------------------------------------------
# Checkpoint layout
# ------------------------------------------------------------------------------------------


def test_sizes_match_the_official_talknet():
    # Numbers recorded from the original classes (tests/manifests/ts_asd.json).
    state_dict = TalkNetASD().state_dict()
    assert len(state_dict) == 490
    assert sum(t.numel() for t in state_dict.values()) == 15_762_242
    assert sum(p.numel() for p in TalkNetASD().parameters()) == 15_744_481
    assert state_dict["model.visualFrontend.frontend3D.0.weight"].shape == (64, 1, 5, 7, 7)
    assert state_dict["model.audioEncoder.layer4.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state_dict["model.visualTCN.net.4.net.4.gamma"].shape == (1, 512, 1)
    assert state_dict["model.selfAV.self_attn.in_proj_weight"].shape == (768, 256)
    assert state_dict["lossA.FC.weight"].shape == (2, 128)
    assert state_dict["lossAV.criterion.weight"].tolist() == [1.0, 4.0]


def test_state_dict_layout_equals_manifest():
    manifest = load_manifest("ts_asd")
    expected = [(key, shape, DTYPES[dtype]) for key, shape, dtype in manifest_keys("ts_asd")]
    ours = [(key, tuple(t.shape), t.dtype) for key, t in TalkNetASD().state_dict().items()]
    assert ours == expected  # same names, shapes, dtypes and file order
    network = {(key, tuple(t.shape)) for key, t in TalkNet().state_dict().items()}
    assert network == {(key[len("model."):], shape) for key, shape, _ in expected if key.startswith("model.")}
    heads = {(key, tuple(t.shape)) for key, t in TalkNetHeads().state_dict().items()}
    assert heads == {(key, shape) for key, shape, _ in expected if key.startswith("loss")}
    recipe = manifest["fixed_buffer_recipes"]["lossAV.criterion.weight"]["values"]
    assert TalkNetASD().state_dict()["lossAV.criterion.weight"].tolist() == recipe


def test_manifest_state_dict_loads_strictly():
    flat = random_state_dict("ts_asd")
    asd = TalkNetASD()
    asd.load_state_dict(flat, strict=True)  # the flat file IS our state dict
    network, heads = TalkNet(), TalkNetHeads()
    load_talknet_state_dict(network, flat, source="ts_asd.pth")
    load_talknet_state_dict(heads, flat, source="ts_asd.pth")
    network.load_state_dict({k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}, strict=True)
    for key in ("visualTCN.net.2.net.4.beta", "crossV2A.self_attn.in_proj_weight", "audioEncoder.bn1.running_var"):
        assert torch.equal(network.state_dict()[key], flat["model." + key])
    assert torch.equal(heads.lossV.FC.weight, flat["lossV.FC.weight"])
    assert torch.equal(asd.lossAV.criterion.weight, flat["lossAV.criterion.weight"])


def test_ava_layout_without_class_weights_and_module_prefixes():
    flat = random_state_dict("ts_asd")
    # The AVA pretrain file has unweighted criteria (no buffers); DDP/DataParallel add "module.".
    ava = {k: v for k, v in flat.items() if k not in TALKNET_CRITERION_KEYS}
    for variant in (
        ava,
        {"module." + k: v for k, v in ava.items()},
        {k.replace("model.", "model.module.", 1): v for k, v in ava.items()},
    ):
        asd = TalkNetASD()
        report = load_talknet_state_dict(asd, variant, source="pretrain_AVA.model")
        assert sorted(report.missing) == sorted(TALKNET_CRITERION_KEYS) and report.unexpected == []
        assert asd.lossV.criterion.weight.tolist() == [1.0, 4.0]
        assert torch.equal(asd.model.visualFrontend.frontend3D[0].weight, flat["model.visualFrontend.frontend3D.0.weight"])
        load_talknet_state_dict(TalkNet(), variant)
        load_talknet_state_dict(TalkNetHeads(), variant)


def test_a_file_that_does_not_fit_names_the_keys():
    flat = random_state_dict("ts_asd")
    broken = dict(flat)
    del broken["model.selfAV.norm2.bias"]
    broken["model.selfAV.norm3.bias"] = torch.zeros(256)
    broken["lossA.FC.weight"] = torch.zeros(2, 256)
    with pytest.raises(CheckpointMismatchError) as error:
        load_talknet_state_dict(TalkNetASD(), broken, source="ts_asd.pth")
    message = str(error.value)
    assert "ts_asd.pth" in message
    assert error.value.missing == ["model.selfAV.norm2.bias"]
    assert error.value.unexpected == ["model.selfAV.norm3.bias"]
    assert error.value.mismatched == ["lossA.FC.weight"]
    assert "model.selfAV.norm2.bias [256]" in message and "model.selfAV.norm3.bias [256]" in message
    assert "lossA.FC.weight: module [2, 128] vs file [2, 256]" in message
    with pytest.raises(ValueError, match="selfAV.norm2.bias"):
        load_talknet_state_dict(TalkNet(), broken)
    # A module that is none of the three TalkNet layouts needs an explicit layout.
    with pytest.raises(TypeError, match="layout"):
        load_talknet_state_dict(torch.nn.Linear(2, 2), flat)


def test_egot2_translator_asd_submodel_loads_strictly():
    asd_part = random_state_dict("egot2s_ttm_3task", prefix="model.asd_model.", strip="model.asd_model.")
    assert len(asd_part) == 481
    TalkNet().load_state_dict(asd_part, strict=True)


# ------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------


def test_forward_shapes_and_features():
    asd = TalkNetASD().eval()
    faces, mfcc = _inputs(batch=2, frames=5)
    with torch.no_grad():
        outputs = asd(faces, mfcc)
        tokens = asd.model.forward_features(faces, mfcc)
    for name in ("av_logits", "audio_logits", "visual_logits"):
        assert outputs[name].shape == (10, 2)
    assert outputs["av_embedding"].shape == (10, 256)
    assert outputs["audio_embedding"].shape == (10, 128)
    assert outputs["visual_embedding"].shape == (10, 128)
    assert tokens.shape == (2, 5, 256) and asd.model.feature_dim == asd.feature_dim == 256
    # Tokens are the selfAV output per frame; the logits are lossAV.FC on exactly those rows.
    torch.testing.assert_close(tokens.reshape(10, 256), outputs["av_embedding"])
    torch.testing.assert_close(asd.lossAV.FC(tokens).reshape(10, 2), outputs["av_logits"])
    # uint8 crops straight from the loader give the same result as their float copy.
    with torch.no_grad():
        from_uint8 = asd.model.forward_features(faces.round().to(torch.uint8), mfcc)
        from_float = asd.model.forward_features(faces.round(), mfcc)
    torch.testing.assert_close(from_uint8, from_float)


# Recorded once by running the original TalkNet classes (TaoRuijie/TalkNet-ASD 6d68214, model/ and
# loss.py: talkNetModel + lossAV/lossA/lossV FC) in eval mode with _reference_state_dict weights on
# _inputs(batch=2, frames=3, seed=1). Train mode (BN statistics, running-stat updates) matched too.
GOLDEN_LOGITS = {
    "av_logits": [[-0.04941, 0.73651], [0.07902, 0.85181], [0.00447, 1.16335],
                  [-0.04372, 0.90476], [0.06362, 0.99138], [-0.00141, 1.05471]],
    "audio_logits": [[0.06276, 0.24095], [0.23682, -0.11197], [-0.18168, -0.02607],
                     [0.18848, 0.30889], [0.11744, -0.02629], [0.27562, -0.38163]],
    "visual_logits": [[0.62092, 1.02882], [1.48491, 1.67793], [1.5444, 1.92305],
                      [0.62552, 0.96041], [1.50785, 2.11032], [1.30458, 2.073]],
}


def test_outputs_match_the_original_talknet():
    asd = TalkNetASD().eval()
    asd.load_state_dict(_reference_state_dict(asd), strict=True)
    faces, mfcc = _inputs(batch=2, frames=3, seed=1)
    with torch.no_grad():
        outputs = asd(faces, mfcc)
    for name, expected in GOLDEN_LOGITS.items():
        torch.testing.assert_close(outputs[name], torch.tensor(expected), atol=5e-5, rtol=1e-4, msg=name)


def test_faces_are_normalised_inside_the_network():
    network = TalkNet().eval()
    seen = {}
    network.visualFrontend.register_forward_pre_hook(lambda module, args, kwargs: seen.update(x=args[0]), with_kwargs=True)
    faces, mfcc = _inputs(batch=1, frames=2)
    with torch.no_grad():
        network(faces, mfcc)
    torch.testing.assert_close(seen["x"], (faces / 255 - 0.4161) / 0.1688)


def test_visual_conv_mixes_neighbouring_tracks_like_the_original():
    torch.manual_seed(0)
    mixed = TalkNet().eval()
    separate = TalkNet(mix_tracks=False).eval()
    separate.load_state_dict(mixed.state_dict())
    faces, mfcc = _inputs(batch=2, frames=4)
    changed = faces.clone()
    changed[0, -1] = 255 - changed[0, -1]  # only track 0's last frame
    with torch.no_grad():
        before, after = mixed.forward_features(faces, mfcc), mixed.forward_features(changed, mfcc)
        alone_before, alone_after = separate.forward_features(faces, mfcc), separate.forward_features(changed, mfcc)
    # The 5-frame kernel over the concatenated B·T frames lets track 0's end reach track 1's start.
    assert not torch.allclose(before[1, 0], after[1, 0], atol=1e-4)
    # Run per track, track 1 cannot see track 0 (eval-mode BN, attention within a track).
    assert torch.equal(alone_before[1], alone_after[1])
    assert not torch.allclose(alone_before[0], alone_after[0], atol=1e-4)
    # Same weights, and the last track's first frames see the previous track only when mixed.
    assert not torch.allclose(before[1], alone_before[1], atol=1e-4)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    torch.manual_seed(0)
    asd = TalkNetASD().eval()
    faces, mfcc = _inputs(batch=2, frames=3)
    with torch.no_grad():
        first, second = asd(faces, mfcc), asd(faces, mfcc)
    for name in ("av_logits", "audio_logits", "visual_logits"):
        assert torch.equal(first[name], second[name])
    asd.train()
    torch.manual_seed(1)
    with torch.no_grad():
        third = asd.model.selfAV(first["av_embedding"].reshape(2, 3, 256), first["av_embedding"].reshape(2, 3, 256))
        fourth = asd.model.selfAV(first["av_embedding"].reshape(2, 3, 256), first["av_embedding"].reshape(2, 3, 256))
    assert not torch.equal(third, fourth)


def test_training_step_reaches_every_used_parameter():
    torch.manual_seed(0)
    asd = TalkNetASD().train()
    faces, mfcc = _inputs(batch=2, frames=3)
    labels = torch.tensor([[0, 1, 1], [0, 0, 1]])
    loss = talknet_loss(asd(faces, mfcc), labels)
    loss.backward()
    assert torch.isfinite(loss)
    without_grad = {name for name, p in asd.named_parameters() if p.grad is None}
    # layer1 keeps stride 1, so its 1x1 shortcut conv exists (it is in the file) but never runs.
    assert without_grad == {"model.visualFrontend.resnet.layer1.downsample.weight"}


def test_inputs_with_wrong_shapes_are_refused():
    network = TalkNet()
    faces, mfcc = _inputs(batch=2, frames=3)
    with pytest.raises(ValueError, match="'mfcc'"):
        network(faces, mfcc[:, :10])
    with pytest.raises(ValueError, match="'mfcc'"):
        network(faces, mfcc[:1])
    with pytest.raises(ValueError, match="'faces'"):
        network(faces[:, :, :64, :64], mfcc)
    with pytest.raises(ValueError, match="'faces'"):
        network.forward_features(faces[0], mfcc)


# ------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------


def test_loss_is_weighted_av_plus_auxiliary_terms():
    generator = torch.Generator().manual_seed(0)
    outputs = {name: torch.randn(6, 2, generator=generator) for name in ("av_logits", "audio_logits", "visual_logits")}
    labels = torch.tensor([[0, 0, 1], [1, 0, 0]])
    flat = labels.reshape(-1)

    def weighted_ce(logits):
        weights = torch.tensor([1.0, 4.0])[flat]
        nll = -F.log_softmax(logits, dim=-1).gather(1, flat[:, None]).squeeze(1)
        return (weights * nll).sum() / weights.sum()

    expected = weighted_ce(outputs["av_logits"]) + 0.4 * (
        weighted_ce(outputs["audio_logits"]) + weighted_ce(outputs["visual_logits"])
    )
    torch.testing.assert_close(talknet_loss(outputs, labels), expected)
    torch.testing.assert_close(talknet_loss(outputs, flat), expected)
    unweighted = talknet_loss(outputs, labels, weights=(1.0, 1.0))
    assert not torch.allclose(unweighted, expected)
    # The heads' own criterion uses the same class weights.
    heads = TalkNetHeads()
    torch.testing.assert_close(heads.lossAV.loss(outputs["av_logits"], labels), weighted_ce(outputs["av_logits"]))
    with pytest.raises(ValueError, match="labels"):
        talknet_loss(outputs, labels[:, :2])
