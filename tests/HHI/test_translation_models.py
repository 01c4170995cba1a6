"""EgoT2-s HHI translators: official layouts load strictly, frozen parts stay frozen, every model name trains a step."""
import re

import pytest
import torch
from torch import nn

from egot2.backbone import FrozenBackbone
from egot2.checkpoint import CheckpointMismatchError, save_flat_checkpoint, save_social_checkpoint
from HHI.models.translation import (
    ASD_TRANSLATORS,
    SOURCES,
    TTM_TRANSLATORS,
    ASDTaskFusionMFTransformer3Task,
    TaskFusionMFTransformer2Task,
    TaskFusionMFTransformer3Task,
    build_backbone,
    build_translation_model,
    load_backbone,
    truncate_tokens,
)
from tests.manifests import manifest_keys, random_state_dict

FACE = 32  # RGB face size: the frame encoder pools adaptively, so tiny crops keep the tests fast


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _backbones(sources=SOURCES, seed=0):
    torch.manual_seed(seed)
    return {f"{source}_model": build_backbone(source) for source in sources}


def _ttm_inputs(batch=2, frames=4, asd_frames=(3, 5)):
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(batch, frames, 3, FACE, FACE, generator=generator)
    faces = [torch.rand(d, 112, 112, generator=generator) * 255 for d in asd_frames[:batch]]
    mfcc = [torch.randn(4 * d, 13, generator=generator) for d in asd_frames[:batch]]
    return video, faces, mfcc


def _asd_inputs(batch=2, frames=4):
    generator = torch.Generator().manual_seed(2)
    return (torch.randn(batch, frames, 3, FACE, FACE, generator=generator),
            torch.rand(batch, frames, 112, 112, generator=generator) * 255,
            torch.randn(batch, 4 * frames, 13, generator=generator))


# ------------------------------------------------------------------------------------------------ official layouts
LAYOUTS = [
    ("egot2s_ttm_2task", lambda b: TaskFusionMFTransformer2Task(hidden_dim=128, dropout=0.5, **b), ("lam", "ttm")),
    ("egot2s_ttm_3task", lambda b: TaskFusionMFTransformer3Task(hidden_dim=128, dropout=0.5, **b), SOURCES),
    ("egot2s_asd_3task", lambda b: ASDTaskFusionMFTransformer3Task(**b), SOURCES),
]


class _LightningLike(nn.Module):
    """The attribute layout of the original tasks: ``model`` plus the class-weight buffer / ``lossAV`` head."""

    def __init__(self, model, manifest):
        super().__init__()
        self.model = model
        if manifest.startswith("egot2s_asd"):
            self.lossAV = nn.Module()
            self.lossAV.register_buffer("criterion_weight", torch.ones(2))
        else:
            self.criterion = nn.CrossEntropyLoss(weight=torch.tensor([0.266, 0.734]))


@pytest.mark.parametrize("manifest,make,sources", LAYOUTS, ids=[m for m, _, _ in LAYOUTS])
def test_official_checkpoint_layout_loads_strictly_and_round_trips(manifest, make, sources):
    model = make(_backbones(sources))
    official = [key for key, _, _ in manifest_keys(manifest) if key.startswith("model.")]
    # Same keys in the same order as the released files: our checkpoints are the official layout.
    assert [f"model.{key}" for key in model.state_dict()] == official
    shapes = {key: shape for key, shape, _ in manifest_keys(manifest)}
    assert all(tuple(value.shape) == shapes[f"model.{key}"] for key, value in model.state_dict().items())

    state = random_state_dict(manifest, prefix="model.")
    if manifest.startswith("egot2s_ttm"):
        state["criterion.weight"] = random_state_dict(manifest, prefix="criterion.")["criterion.weight"]
    task = _LightningLike(model, manifest)
    report = task.load_state_dict({k: v for k, v in state.items() if k.startswith(("model.", "criterion."))},
                                  strict=not manifest.startswith("egot2s_asd"))
    if manifest.startswith("egot2s_asd"):
        assert report.missing_keys == ["lossAV.criterion_weight"] and not report.unexpected_keys
    exported = task.state_dict()
    for key, value in state.items():
        assert torch.equal(exported[key], value), key
    # Sub-model tensors, BatchNorm statistics included, come from the EgoT2 checkpoint.
    bn_key = next(key for key in state if key.endswith("bn1.running_mean") and "lam_model" in key)
    assert torch.equal(exported[bn_key], state[bn_key])


def test_missing_translator_keys_are_reported_under_official_names():
    model = TaskFusionMFTransformer2Task(hidden_dim=128, **_backbones(("lam", "ttm")))
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("linear_head.1")}
    state["proj_bogus.weight"] = torch.zeros(1)
    result = model.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["linear_head.1.bias", "linear_head.1.weight"]
    assert result.unexpected_keys == ["proj_bogus.weight"]
    with pytest.raises(RuntimeError, match=re.escape("linear_head.1.weight")):
        model.load_state_dict({k: v for k, v in state.items() if k != "proj_bogus.weight"})


def test_save_then_load_gives_identical_predictions():
    video, faces, mfcc = _ttm_inputs()
    first = TaskFusionMFTransformer3Task(hidden_dim=32, **_backbones()).eval()
    second = TaskFusionMFTransformer3Task(hidden_dim=32, **_backbones(seed=123)).eval()
    with torch.no_grad():
        assert not torch.allclose(first(video, None, faces, mfcc), second(video, None, faces, mfcc))
        second.load_state_dict(first.state_dict())
        assert torch.equal(first(video, None, faces, mfcc), second(video, None, faces, mfcc))


# ------------------------------------------------------------------------------------------------ stage-I loading
@pytest.fixture(scope="module")
def stage1_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained_models")
    paths = {"lam": folder / "ts_lam.pth", "ttm": folder / "ts_ttm.pth", "asd": folder / "ts_asd.pth"}
    save_social_checkpoint(paths["lam"], random_state_dict("ts_lam", seed=1), epoch=3, mAP=0.7)
    ttm_state = {f"module.{key}": value for key, value in random_state_dict("ts_ttm", seed=2).items()}
    save_social_checkpoint(paths["ttm"], ttm_state, epoch=5, mAP=0.6)  # DDP-trained: module. prefix
    save_flat_checkpoint(paths["asd"], random_state_dict("ts_asd", seed=3))
    return paths


def test_stage1_files_load_strictly_without_their_heads(stage1_files):
    lam = load_backbone("lam", stage1_files["lam"])
    expected = {key: value for key, value in random_state_dict("ts_lam", seed=1).items()
                if not key.startswith("last_layer")}
    assert set(lam.state_dict()) == set(expected)
    assert all(torch.equal(lam.state_dict()[key], value) for key, value in expected.items())
    ttm = load_backbone("ttm", stage1_files["ttm"])
    assert "audio_encoder.torchfb.1.mel_scale.fb" in ttm.state_dict()
    asd = load_backbone("asd", stage1_files["asd"])
    asd_expected = random_state_dict("ts_asd", prefix="model.", strip="model.", seed=3)
    assert set(asd.state_dict()) == set(asd_expected)
    assert all(torch.equal(asd.state_dict()[key], value) for key, value in asd_expected.items())


def test_stage1_file_problems_are_clear(stage1_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="--lam_checkpoint.*ts_nothing.pth"):
        load_backbone("lam", tmp_path / "ts_nothing.pth")
    wrong = tmp_path / "ts_wrong.pth"  # a TTM file offered as LAM: names the keys
    save_social_checkpoint(wrong, random_state_dict("ts_ttm"), epoch=0, mAP=0.0)
    with pytest.raises(CheckpointMismatchError, match="base_model.conv1.weight"):
        load_backbone("lam", wrong)


def test_builder_loads_every_needed_backbone_and_only_those(stage1_files):
    checkpoints = {source: str(path) for source, path in stage1_files.items()}
    model = build_translation_model("ttm", "TaskFusionMFTransformer2Task", hidden_dim=32, checkpoints=checkpoints)
    expected = random_state_dict("ts_lam", seed=1)
    assert torch.equal(model.state_dict()["lam_model.base_model.conv1.weight"], expected["base_model.conv1.weight"])
    assert not hasattr(model, "asd_model")
    probe = build_translation_model("ttm", "LAM2TTM", checkpoints={"lam": checkpoints["lam"],
                                                                    "ttm": "missing/ts_ttm.pth"})
    assert probe.sources == ("lam",)  # the TTM file is not needed, so its absence does not matter
    unloaded = build_translation_model("ttm", "TaskFusionMFTransformer2Task", hidden_dim=32, load_backbones=False,
                                       checkpoints={"lam": "missing/a.pth", "ttm": "missing/b.pth"})
    assert isinstance(unloaded.lam_model, FrozenBackbone)
    with pytest.raises(ValueError, match="not an EgoT2-s TTM model"):
        build_translation_model("ttm", "BaselineLSTM", load_backbones=False)
    with pytest.raises(ValueError, match="--nofreeze"):
        build_translation_model("asd", "TaskFusionMFTransformer3Task", nofreeze=True, load_backbones=False)


# ------------------------------------------------------------------------------------------------ every model trains
def _train_step(model, task, inputs):
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    if task == "ttm":
        video, faces, mfcc = inputs
        output = model(video, None, faces, mfcc)
        assert output.shape == (video.shape[0], 2)
    else:
        video, faces, mfcc = inputs
        output = model(video, faces=faces, mfcc=mfcc)
        assert output.shape[0] == video.shape[0] * video.shape[1]
    output.float().pow(2).mean().backward()
    optimizer.step()


def _frozen_snapshot(model):
    return {key: value.clone() for key, value in model.state_dict().items() if re.match(r"^(lam|ttm|asd)_model\.", key)}


@pytest.mark.parametrize("task,name", [("ttm", n) for n in TTM_TRANSLATORS] + [("asd", n) for n in ASD_TRANSLATORS])
def test_every_model_trains_a_step_and_keeps_its_backbones_frozen(task, name):
    model_class = (TTM_TRANSLATORS if task == "ttm" else ASD_TRANSLATORS)[name]
    kwargs = {"hidden_dim": 32} if "hidden_dim" in model_class.__init__.__code__.co_varnames else {}
    model = model_class(**_backbones(model_class.sources), **kwargs)
    before = _frozen_snapshot(model)
    trainable = {key: value.detach().clone() for key, value in model.named_parameters() if value.requires_grad}
    assert trainable and all(not re.match(r"^(lam|ttm|asd)_model\.", key) for key in trainable)
    _train_step(model, task, _ttm_inputs() if task == "ttm" else _asd_inputs())
    after = _frozen_snapshot(model)
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[key], after[key]) for key in before)  # weights and BN statistics
    changed = [key for key, value in model.named_parameters() if value.requires_grad
               and not torch.equal(value, trainable[key])]
    assert changed


def test_nofreeze_trains_the_ttm_frame_encoder_only():
    model = TaskFusionMFTransformer2Task(hidden_dim=32, freeze_ttm=False, **_backbones(("lam", "ttm")))
    assert not model.cacheable
    assert not isinstance(model.ttm_model, FrozenBackbone) and isinstance(model.lam_model, FrozenBackbone)
    trainable = {key for key, value in model.named_parameters() if value.requires_grad}
    assert "ttm_model.video_encoder.conv1.weight" in trainable
    assert not any(key.startswith(("ttm_model.lstm", "ttm_model.audio_encoder", "lam_model")) for key in trainable)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    _train_step(model, "ttm", _ttm_inputs())
    after = model.state_dict()
    for key in ("ttm_model.video_encoder.conv1.weight", "ttm_model.video_encoder.bn1.running_mean"):
        assert not torch.equal(before[key], after[key]), key
    assert torch.equal(before["lam_model.base_model.bn1.running_mean"], after["lam_model.base_model.bn1.running_mean"])


def test_train_mode_backbones_reproduce_drifting_batchnorm_statistics():
    model = TaskFusionMFTransformer2Task(hidden_dim=32, train_mode_backbones=True, **_backbones(("lam", "ttm")))
    assert not model.cacheable
    before = model.state_dict()["lam_model.base_model.bn1.running_mean"].clone()
    _train_step(model, "ttm", _ttm_inputs())
    assert not torch.equal(before, model.state_dict()["lam_model.base_model.bn1.running_mean"])
    assert all(not value.requires_grad for key, value in model.named_parameters() if key.startswith("lam_model"))


# ------------------------------------------------------------------------------------------------ tokens
def test_cached_tokens_give_the_same_output_as_the_backbones():
    model = TaskFusionMFTransformer3Task(hidden_dim=32, **_backbones()).eval()
    video, faces, mfcc = _ttm_inputs()
    tokens = model.extract_tokens(video=video, faces=faces, mfcc=mfcc)
    assert {k: tuple(v.shape) for k, v in tokens.items()} == {"lam": (2, 4, 256), "ttm": (2, 4, 256),
                                                              "asd": (2, 3, 256)}
    with torch.no_grad():
        direct, mass = model(video, None, faces, mfcc, return_attention=True)
        from_tokens = model(tokens=tokens)
    assert torch.equal(direct, from_tokens)
    assert mass.shape == (2, 3) and torch.allclose(mass.sum(dim=1), torch.ones(2))
    # A listed ASD sample is encoded alone over its full length: its tokens do not depend on the batch.
    alone = model.extract_tokens(faces=faces[1:], mfcc=mfcc[1:], video=video[1:])["asd"]
    assert torch.allclose(alone[0, :3], tokens["asd"][1], atol=1e-5)


def test_truncate_tokens_cuts_to_the_shortest_sample():
    stacked = truncate_tokens([torch.ones(1, 5, 3), torch.zeros(4, 3)])
    assert stacked.shape == (2, 4, 3) and stacked[0].eq(1).all()


def test_missing_asd_inputs_point_at_the_paired_data():
    model = TaskFusionMFTransformer3Task(hidden_dim=32, **_backbones())
    with pytest.raises(ValueError, match="--two_loader"):
        model(torch.zeros(1, 2, 3, FACE, FACE))
    with pytest.raises(ValueError, match="does not use an ASD backbone"):
        TaskFusionMFTransformer2Task(hidden_dim=32, **_backbones())
