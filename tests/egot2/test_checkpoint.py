"""egot2.checkpoint: safe loading, key maps, exact strict loading and the official container writers."""
import argparse
import builtins
import re
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from fvcore.common.config import CfgNode as FvcoreCfgNode
from torch import nn
from yacs.config import CfgNode

from egot2.checkpoint import (
    EGOT2G_HOI_PLACEHOLDERS,
    LIGHTNING_FORMAT_VERSION,
    AddPrefix,
    CheckpointMismatchError,
    Drop,
    InertObject,
    Rename,
    SelectPrefix,
    StripPrefix,
    UnsafeCheckpointError,
    apply_key_map,
    extract_state_dict,
    load_checkpoint,
    load_file,
    load_state_dict_exact,
    model_checkpoint_callback_state,
    save_flat_checkpoint,
    save_lightning_checkpoint,
    save_social_checkpoint,
)
from tests.manifests import load_manifest, random_state_dict

def _write_marker(path):
    Path(path).write_text("code ran")
    return "pwned"


class _RunsCodeOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (str(self.marker),))


class _ExecOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


class TinyNet(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.encoder = nn.Linear(3, width)
        self.bn = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, 2)


def _tree_module(keys):
    """A module whose state dict has exactly the given ``[name, shape, dtype]`` entries (as buffers)."""
    root = nn.Module()
    for name, shape, dtype in keys:
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        node.register_buffer(leaf, torch.zeros(shape, dtype=getattr(torch, dtype)))
    return root


# ------------------------------------------------------------------------------------------------ safe loading


@pytest.mark.parametrize("payload", [_RunsCodeOnLoad, _ExecOnLoad])
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickles_that_run_code_are_refused_and_never_run(tmp_path, payload, zip_format):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": payload(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth needs arbitrary code to load \(.*(exec|_write_marker)"):
        load_file(path)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(TinyNet(), path)
    assert not marker.exists()


def test_lightning_file_with_config_objects_loads(tmp_path):
    yacs_cfg = CfgNode()
    yacs_cfg.SOLVER = CfgNode()
    yacs_cfg.SOLVER.BASE_LR = 1e-4
    yacs_cfg.DATA = CfgNode({"SIZES": [224, 256], "NAME": "pnr"})
    yacs_cfg.freeze()
    fv_cfg = FvcoreCfgNode({"MODEL": {"NUM_CLASSES": [115, 478]}})
    args = argparse.Namespace(hidden_dim=128, lr=5e-4, tasks=["lam", "ttm"], cfg=yacs_cfg)
    state = {"model.w": torch.randn(3, 2)}
    path = save_lightning_checkpoint(tmp_path / "task.ckpt", state, epoch=4, global_step=40, hparams_name="kwargs",
                                     hyper_parameters={"cfg": yacs_cfg, "fv": fv_cfg, "args": args})
    loaded = load_file(path)
    hparams = loaded["hyper_parameters"]
    assert type(hparams["cfg"]) is CfgNode and hparams["cfg"].is_frozen()
    assert hparams["cfg"].SOLVER.BASE_LR == 1e-4 and hparams["cfg"].DATA.SIZES == [224, 256]
    assert type(hparams["fv"]) is FvcoreCfgNode and hparams["fv"].MODEL.NUM_CLASSES == [115, 478]
    assert isinstance(hparams["args"], argparse.Namespace) and hparams["args"].tasks == ["lam", "ttm"]
    assert hparams["args"].cfg is hparams["cfg"]  # shared references survive
    assert torch.equal(loaded["state_dict"]["model.w"], state["model.w"])


def test_numpy_scalar_metadata_loads(tmp_path):
    path = tmp_path / "social.pth"
    torch.save({"epoch": 3, "state_dict": OrderedDict(w=torch.ones(1)), "mAP": np.float64(0.78)}, path)
    loaded = load_file(path)
    assert loaded["mAP"] == pytest.approx(0.78)


def test_placeholders_stand_in_for_named_classes_only(tmp_path, monkeypatch):
    # Imitate torchtext's pickled vocabulary (an nn.Module wrapping a C++ object with get/set-state).
    vocab_module = types.ModuleType("torchtext.vocab.vocab")
    native_module = types.ModuleType("torchtext._torchtext")

    class NativeVocab:
        def __init__(self, tokens):
            self.tokens = tokens

        def __getstate__(self):
            return ("0.12", self.tokens)

        def __setstate__(self, state):
            self.tokens = state[1]

    class Vocab(nn.Module):
        def __init__(self, native):
            super().__init__()
            self.vocab = native

    NativeVocab.__module__, NativeVocab.__qualname__ = "torchtext._torchtext", "Vocab"
    Vocab.__module__, Vocab.__qualname__ = "torchtext.vocab.vocab", "Vocab"
    native_module.Vocab, vocab_module.Vocab = NativeVocab, Vocab
    for name, module in (("torchtext", types.ModuleType("torchtext")), ("torchtext.vocab", types.ModuleType("v")),
                         ("torchtext.vocab.vocab", vocab_module), ("torchtext._torchtext", native_module)):
        monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "egot2g.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2)},
                "hyper_parameters": {"args": argparse.Namespace(lr=1e-4),
                                     "vocab": Vocab(NativeVocab(["<pad>", "take"]))}}, path)
    for name in ("torchtext", "torchtext.vocab", "torchtext.vocab.vocab", "torchtext._torchtext"):
        monkeypatch.delitem(sys.modules, name)

    with pytest.raises(UnsafeCheckpointError, match=r"torchtext\.vocab\.vocab\.Vocab"):
        load_file(path)
    loaded = load_file(path, placeholders=EGOT2G_HOI_PLACEHOLDERS)
    vocab = loaded["hyper_parameters"]["vocab"]
    assert isinstance(vocab, InertObject) and vocab.pickled_class == "torchtext.vocab.vocab.Vocab"
    assert loaded["hyper_parameters"]["args"].lr == 1e-4
    assert torch.equal(loaded["state_dict"]["model.w"], torch.ones(2))


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_file(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="is not a file"):
        load_file(tmp_path)
    (tmp_path / "garbage.pth").write_bytes(b"definitely not a checkpoint " * 20)
    (tmp_path / "empty.pth").write_bytes(b"")
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(100)}, good)
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[:300])
    for name in ("garbage.pth", "empty.pth", "truncated.pth"):
        with pytest.raises(ValueError, match=re.escape(name) + ": not a readable PyTorch checkpoint"):
            load_file(tmp_path / name)


# ------------------------------------------------------------------------------------------------ extraction


def test_extract_state_dict_from_each_container():
    weights = OrderedDict(a=torch.zeros(1), b=torch.ones(2))
    assert list(extract_state_dict({"epoch": 1, "state_dict": weights, "mAP": 0.5})) == ["a", "b"]
    assert list(extract_state_dict({"model_state": weights, "epoch": 3})) == ["a", "b"]
    assert list(extract_state_dict(weights)) == ["a", "b"]
    with pytest.raises(ValueError, match=r"f\.pth: no state dict found.*top-level keys: \[epoch, weights\]"):
        extract_state_dict({"epoch": 1, "weights": [1, 2]}, source="f.pth")
    with pytest.raises(ValueError, match=r"not named tensors: 'meta' \(str\)"):
        extract_state_dict({"state_dict": {"a": torch.zeros(1), "meta": "x"}})
    with pytest.raises(ValueError, match="holds a list"):
        extract_state_dict([torch.zeros(1)])


# ------------------------------------------------------------------------------------------------ key maps


def test_key_map_steps():
    state = OrderedDict((k, torch.tensor(float(i))) for i, k in enumerate(
        ["module.model.enc.w", "module.model.head.w", "module.lossAV.FC.w", "module.criterion.weight"]))
    steps = [StripPrefix("module.", required=True), SelectPrefix("model."), Rename(r"^enc\.", "encoder."),
             Drop(r"^head\."), AddPrefix("backbone.")]
    assert list(apply_key_map(state, steps)) == ["backbone.encoder.w"]
    assert list(state)[0] == "module.model.enc.w"  # input untouched
    assert repr(steps[0]) == "StripPrefix(prefix='module.', required=True)"
    assert repr(steps[2]) == "Rename(pattern='^enc\\\\.', repl='encoder.')"
    # Optional strip only touches keys that carry the prefix (DDP and non-DDP files alike).
    assert list(StripPrefix("module.")({"module.a": 1, "b": 2})) == ["a", "b"]
    with pytest.raises(ValueError, match="keys without the prefix: b"):
        StripPrefix("module.", required=True)({"module.a": 1, "b": 2})
    with pytest.raises(ValueError, match="no key starts with 'model.'"):
        SelectPrefix("model.")({"lossAV.w": 1})
    with pytest.raises(ValueError, match="both become 'w'"):
        apply_key_map({"a.w": 1, "b.w": 2}, [Rename(r"^[^.]*\.", "")])


# ------------------------------------------------------------------------------------------------ strict loading


def test_exact_loading_copies_every_tensor():
    source, target = TinyNet(), TinyNet()
    with torch.no_grad():
        source.bn.running_mean.fill_(3.0)
    report = load_state_dict_exact(target, source.state_dict())
    assert report.missing == [] and report.unexpected == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_mismatches_are_all_listed_with_shapes():
    state = TinyNet().state_dict()
    del state["head.bias"]
    state["head.weight"] = torch.zeros(5, 4)
    state["lossAV.FC.weight"] = torch.zeros(2, 7)
    before = {k: v.clone() for k, v in TinyNet().state_dict().items()}
    target = TinyNet()
    target.load_state_dict(before)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_exact(target, state, source="ts.pth")
    message = str(info.value)
    assert "ts.pth" in message and "TinyNet" in message
    assert re.search(r"missing keys.*\n\s+head\.bias \[2\]", message)
    assert re.search(r"unexpected keys.*\n\s+lossAV\.FC\.weight \[2, 7\]", message)
    assert "head.weight: module [2, 4] vs file [5, 4]" in message
    assert info.value.missing == ["head.bias"] and info.value.unexpected == ["lossAV.FC.weight"]
    assert info.value.mismatched == ["head.weight"]
    for key, value in before.items():  # nothing was copied
        assert torch.equal(target.state_dict()[key], value)


def test_expected_missing_and_unexpected_sets_are_exact():
    source = TinyNet()
    state = OrderedDict((k, v) for k, v in source.state_dict().items() if not k.startswith("head."))
    state["last_layer1.weight"] = torch.zeros(1)
    state["last_layer2.bias"] = torch.zeros(1)
    target = TinyNet()
    head_before = target.head.weight.clone()
    report = load_state_dict_exact(target, state, expected_missing=[r"head\..*"],
                                   expected_unexpected=[re.compile(r"last_layer[12]\..*")])
    assert sorted(report.missing) == ["head.bias", "head.weight"]
    assert sorted(report.unexpected) == ["last_layer1.weight", "last_layer2.bias"]
    assert torch.equal(target.encoder.weight, source.encoder.weight)
    assert torch.equal(target.head.weight, head_before)
    # An expectation that matches nothing is an error too (the file changed under us).
    with pytest.raises(CheckpointMismatchError, match=r"expected missing keys that are not missing.*\n\s+neck"):
        load_state_dict_exact(TinyNet(), source.state_dict(), expected_missing=["neck.*"])
    with pytest.raises(CheckpointMismatchError, match=r"missing keys.*\n\s+head\.weight"):
        load_state_dict_exact(TinyNet(), state, expected_missing=["head.bias"], expected_unexpected=["last_layer.*"])


def test_long_listings_are_truncated():
    big = nn.Sequential(*[nn.Linear(1, 1) for _ in range(40)])
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing keys .*\(80\).*\.\.\. and 55 more"):
        load_state_dict_exact(big, {})


# ------------------------------------------------------------------------------------------------ writers


def test_social_checkpoint_round_trip_with_the_ts_lam_manifest(tmp_path):
    manifest = load_manifest("ts_lam")
    assert manifest["container"]["format"] == "social_pth"
    state = random_state_dict("ts_lam", seed=1)
    path = save_social_checkpoint(tmp_path / "ts_lam.pth", state, epoch=12, mAP=0.7807)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert list(raw) == ["epoch", "state_dict", "mAP"]
    assert type(raw["epoch"]) is int and type(raw["mAP"]) is float and isinstance(raw["state_dict"], OrderedDict)
    assert [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in raw["state_dict"].items()] == \
        manifest["keys"]
    # Strict load into a module with exactly the manifest's layout.
    module = _tree_module(manifest["keys"])
    meta = load_checkpoint(module, path)
    assert meta == {"epoch": 12, "mAP": 0.7807}
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    # EgoT2's LAMBackbone view: the file's classifier layers are expected extras, nothing else may differ.
    backbone_keys = [k for k in manifest["keys"] if not k[0].startswith(("last_layer1.", "last_layer2."))]
    load_checkpoint(_tree_module(backbone_keys), path, expected_unexpected=[r"last_layer[12]\..*"])
    with pytest.raises(CheckpointMismatchError, match=r"last_layer1\.weight"):
        load_checkpoint(_tree_module(backbone_keys), path)
    # A DDP-trained file ("module." prefix) loads through the strip step.
    ddp = save_social_checkpoint(tmp_path / "ddp.pth", {"module." + k: v for k, v in state.items()}, 1, 0.5)
    load_checkpoint(_tree_module(manifest["keys"]), ddp, steps=[StripPrefix("module.")])


def test_flat_checkpoint_round_trip(tmp_path):
    state = OrderedDict([("model.visualFrontend.w", torch.randn(2, 3)), ("lossAV.FC.weight", torch.randn(2, 4))])
    path = save_flat_checkpoint(tmp_path / "ts_asd.pth", state)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert list(raw) == list(state) and all(torch.equal(raw[k], v) for k, v in state.items())
    module = _tree_module([["visualFrontend.w", [2, 3], "float32"]])
    assert load_checkpoint(module, path, steps=[SelectPrefix("model.")]) == {}
    assert torch.equal(module.visualFrontend.w, state["model.visualFrontend.w"])


def test_written_tensors_are_contiguous_compact_and_detached(tmp_path):
    base = torch.arange(1000.0, requires_grad=True)
    state = {"view": base[10:16].detach(), "transposed": torch.randn(3, 5).t(), "param": nn.Parameter(torch.ones(2))}
    path = save_flat_checkpoint(tmp_path / "flat.pth", state)
    assert path.stat().st_size < 3000  # not the 1000-float storage behind the view
    raw = torch.load(path, weights_only=True, map_location="cpu")
    for key, value in raw.items():
        assert type(value) is torch.Tensor and value.is_contiguous() and not value.requires_grad
        assert torch.equal(value, state[key].detach())


def test_lightning_checkpoint_layout_and_round_trip(tmp_path):
    net = TinyNet()
    state = OrderedDict(("model." + k, v) for k, v in net.state_dict().items())
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    net.head(net.encoder(torch.randn(2, 3))).sum().backward()
    optimizer.step()
    path = save_lightning_checkpoint(
        tmp_path / "egot2s.ckpt", state, epoch=23, global_step=1824,
        optimizer_states=[optimizer.state_dict()],
        callbacks=model_checkpoint_callback_state("val_mAP", "max", best_model_path="x.ckpt", best_model_score=0.66),
    )
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert set(raw) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                        "optimizer_states", "lr_schedulers"}
    assert (raw["epoch"], raw["global_step"], raw["pytorch-lightning_version"]) == (23, 1824, LIGHTNING_FORMAT_VERSION)
    assert set(raw["loops"]) == {"fit_loop", "validate_loop", "test_loop", "predict_loop"}
    assert raw["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 23
    (key,) = raw["callbacks"]
    assert key.startswith("ModelCheckpoint{'monitor': 'val_mAP', 'mode': 'max'")
    assert raw["callbacks"][key]["best_model_score"].item() == pytest.approx(0.66)
    target = TinyNet()
    meta = load_checkpoint(target, path, steps=[SelectPrefix("model.")])
    assert meta["global_step"] == 1824 and meta["lr_schedulers"] == []
    assert torch.equal(target.head.weight, net.head.weight)
    # Current Lightning upgrades the 1.6 layout without complaint.
    from pytorch_lightning.utilities.migration.utils import migrate_checkpoint
    upgraded, _ = migrate_checkpoint(load_file(path))
    assert "epoch_loop.automatic_optimization.optim_progress" in upgraded["loops"]["fit_loop"]


def test_lightning_extras_must_be_weights_only_loadable(tmp_path):
    with pytest.raises(TypeError, match=r"hyper_parameters\['fn'\].*weights_only"):
        save_lightning_checkpoint(tmp_path / "bad.ckpt", {"model.w": torch.zeros(1)},
                                  hyper_parameters={"fn": lambda x: x})
    with pytest.raises(TypeError, match=r"loops\['x'\]\[0\].*ndarray"):
        save_lightning_checkpoint(tmp_path / "bad.ckpt", {"model.w": torch.zeros(1)}, loops={"x": [np.zeros(2)]})
    assert list(tmp_path.iterdir()) == []


def test_current_lightning_resumes_from_a_written_checkpoint(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    torch.set_num_threads(1)

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return ((self.model(inputs) - targets) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    task = Regression()
    state = {"model.weight": torch.full((1, 2), 0.5), "model.bias": torch.zeros(1)}
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    path = save_lightning_checkpoint(tmp_path / "last.ckpt", state, epoch=2, global_step=6,
                                     optimizer_states=[optimizer.state_dict()])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 2), torch.randn(6, 1)),
                                       batch_size=2)
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(task, data, ckpt_path=str(path))
    assert (trainer.current_epoch, trainer.global_step) == (4, 12)  # two more epochs of three steps


@pytest.mark.parametrize("name", ["egot2s_ttm_2task", "ts_pnr", "egot2g_hhi"])
def test_lightning_container_matches_the_manifest(tmp_path, name):
    manifest = load_manifest(name)
    container = manifest["container"]
    assert container["format"] == "lightning_1.6"
    extra = {}
    if "hyper_parameters" in container["top_level"]:
        hparams = container["example"]["hyper_parameters"]
        if "args" in hparams:
            extra["hyper_parameters"] = {"args": argparse.Namespace(**hparams["args"])}
        else:
            extra["hyper_parameters"] = {"cfg": CfgNode({"SOLVER": {"BASE_LR": 1e-4}})}
        extra["hparams_name"] = "kwargs"
    state = random_state_dict(name, seed=2)
    example = container["example"]
    path = save_lightning_checkpoint(tmp_path / f"{name}.ckpt", state, epoch=example["epoch"],
                                     global_step=example["global_step"], **extra)
    loaded = load_file(path)
    assert set(loaded) == set(container["top_level"])
    assert loaded["pytorch-lightning_version"] == example["pytorch-lightning_version"]
    assert [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in loaded["state_dict"].items()] == \
        manifest["keys"]
