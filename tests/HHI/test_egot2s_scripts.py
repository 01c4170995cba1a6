"""EgoT2-s HHI end to end on the tiny twin: every model trains, cached == uncached, checkpoints round-trip, and the
original README's translation commands run (verbatim plus --data_dir and CPU limits)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egot2.checkpoint import load_file, save_flat_checkpoint, save_lightning_checkpoint, save_social_checkpoint
from egot2.config import REPO_ROOT
from egot2.submission import validate_file
from HHI.cli import load_task_weights, social_cfg
from HHI.config import add_asd_config, add_ttm_config, asd_run_defaults, ttm_run_defaults
from HHI.models.lstm import LAMBaselineLSTM, TTMBaselineLSTM
from HHI.models.talknet import TalkNetASD
from HHI.models.translation import ASD_TRANSLATORS, TTM_TRANSLATORS
from HHI.tasks.translation import (build_asd_translation_task, build_ttm_translation_task, asd_translation_loader,
                                   ttm_translation_loader)
from tests.manifests import random_state_dict
from tests.twin import make_twin

FACE = 16


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("lam", "ttm", "asd"))[1]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Randomly initialised stage-I files in the official containers."""
    folder = tmp_path_factory.mktemp("pretrained_models")
    torch.manual_seed(0)
    paths = {"lam": folder / "ts_lam.pth", "ttm": folder / "ts_ttm.pth", "asd": folder / "ts_asd.pth"}
    save_social_checkpoint(paths["lam"], LAMBaselineLSTM().state_dict(), epoch=1, mAP=0.5)
    save_social_checkpoint(paths["ttm"], TTMBaselineLSTM().state_dict(), epoch=1, mAP=0.5)
    save_flat_checkpoint(paths["asd"], TalkNetASD().state_dict())
    return paths


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(task, argv, output_dir, **overrides):
    script = _script(f"run_{task}")
    args = script.parse_args(argv)
    extensions = ((add_ttm_config, ttm_run_defaults) if task == "ttm" else (add_asd_config, asd_run_defaults))
    cfg = social_cfg(args, task, extensions=extensions, flag_keys=script.FLAG_KEYS,
                     path_flags=script.PATH_FLAGS, freeze=False)
    cfg.OUTPUT_DIR = str(output_dir)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    cfg.freeze()
    return cfg


def _translator_argv(model, data_dir, stage1, *extra):
    return ["--model", model, "--num_layers", "1", "--hidden_dim", "32", "--num_heads", "2", "--dropout", "0.5",
            "--face_size", str(FACE), "--data_dir", str(data_dir), "--num_workers", "0", "--seed", "3",
            "--lam_checkpoint", str(stage1["lam"]), "--ttm_checkpoint", str(stage1["ttm"]),
            "--asd_checkpoint", str(stage1["asd"]), *extra]


# ------------------------------------------------------------------------------------------------ paired data
def test_paired_ttm_samples_add_asd_inputs_to_the_plain_samples(data_dir):
    from HHI.data.paired import PairedTTMDataset, collate_paired_ttm
    from HHI.data.ttm import TTMDataset

    plain, paired = TTMDataset(data_dir, "val", face_size=FACE), PairedTTMDataset(data_dir, "val", face_size=FACE)
    capped = PairedTTMDataset(data_dir, "val", face_size=FACE, asd_max_frames=5)
    assert paired.segments == plain.segments
    for index in (0, len(paired) - 1):
        sample, reference = paired[index], plain[index]
        assert torch.equal(sample["video"], reference["video"]) and torch.equal(sample["audio"], reference["audio"])
        frames = sample["video"].shape[0]
        assert sample["faces"].shape[1:] == (112, 112) and 0 < sample["faces"].shape[0] <= frames
        assert sample["mfcc"].shape == (4 * sample["faces"].shape[0], 13)
        assert 0 <= float(sample["faces"].min()) and float(sample["faces"].max()) <= 255
        assert float(sample["faces"].std()) > 0  # real face crops, not a black placeholder
        assert torch.equal(capped[index]["faces"], sample["faces"][:5])
    batch = collate_paired_ttm([paired[0], paired[1]])
    assert batch["video"].shape[1] == min(paired[0]["video"].shape[0], paired[1]["video"].shape[0])
    assert isinstance(batch["faces"], list) and len(batch["faces"]) == 2 and batch["label"].shape == (2,)


def test_paired_test_release_and_asd_samples(data_dir):
    from HHI.data.paired import PairedASDDataset, PairedTTMTestDataset, collate_paired_asd
    from HHI.data.ttm import ttm_paths

    paths = ttm_paths(data_dir)
    test = PairedTTMTestDataset(paths.test_dir, paths.seg_info, face_size=FACE)
    sample = test[0]
    assert sample["video"].shape[1:] == (3, FACE, FACE) and sample["faces"].shape[1:] == (112, 112)
    assert sample["mfcc"].shape == (4 * sample["faces"].shape[0], 13)
    asd = PairedASDDataset(data_dir / "asd", "val", face_size=FACE, max_frames=10)
    items = [asd[0], asd[1]]
    for item in items:
        assert item["video"].shape == (item["faces"].shape[0], 3, FACE, FACE)
        assert item["labels"].shape == (item["faces"].shape[0],)
    batch = collate_paired_asd(items)
    assert batch["video"].shape[:2] == batch["faces"].shape[:2] == batch["labels"].shape


# ------------------------------------------------------------------------------------------------ every model name
@pytest.mark.parametrize("task,name", [("ttm", n) for n in TTM_TRANSLATORS] + [("asd", n) for n in ASD_TRANSLATORS])
def test_every_model_name_trains_a_step_on_the_twin(task, name, data_dir, stage1, tmp_path):
    extra = ["--asd_max_frames", "6"] if task == "ttm" else ["--max_frames", "6"]
    cfg = _cfg(task, _translator_argv(name, data_dir, stage1, *extra), tmp_path)
    build = build_ttm_translation_task if task == "ttm" else build_asd_translation_task
    module = build(cfg)
    loader = (ttm_translation_loader(cfg, "train", module.model, progress=False) if task == "ttm"
              else asd_translation_loader(cfg, "train"))
    batch = next(iter(loader))
    frozen = {key: value.clone() for key, value in module.state_dict().items() if "_model." in key}
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    module.train()
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = module.state_dict()
    assert all(torch.equal(after[key], value) for key, value in frozen.items())  # weights and BN statistics


# ------------------------------------------------------------------------------------------------ cache, round trip
def _fit(cfg):
    from egot2.engine import build_trainer_from_cfg
    from HHI.tasks.translation import ttm_translation_run

    spec = ttm_translation_run(cfg)
    task = spec.build_task(cfg)
    trainer = build_trainer_from_cfg(cfg, write_info=False, enable_progress_bar=False,
                                     **spec.trainer_overrides(cfg))
    trainer.fit(task, train_dataloaders=spec.train_loader(cfg), val_dataloaders=spec.val_loader(cfg))
    return task, trainer


@pytest.mark.slow
def test_cached_and_uncached_training_give_the_same_metrics_and_checkpoints_round_trip(data_dir, stage1, tmp_path):
    argv = _translator_argv("TaskFusionMFTransformer2Task", data_dir, stage1, "--epochs", "2")
    plain, plain_trainer = _fit(_cfg("ttm", argv, tmp_path / "plain"))
    cache_dir = tmp_path / "features"
    cached, cached_trainer = _fit(_cfg("ttm", argv, tmp_path / "cached", **{"HHI.CACHE_FEATURES": str(cache_dir)}))
    index = json.loads((cache_dir / "val" / "lam" / "index.json").read_text())
    assert index["complete"] and index["num_samples"] == len(cached.gathered["val"]["uid"])
    assert plain.gathered["val"]["uid"] == cached.gathered["val"]["uid"]
    assert torch.equal(plain.gathered["val"]["label"], cached.gathered["val"]["label"])
    # Same initial weights, same batches, same dropout masks, same tokens: the same training, bit for bit.
    assert torch.equal(plain.gathered["val"]["logits"], cached.gathered["val"]["logits"])
    assert plain.split_metrics["val"] == cached.split_metrics["val"]
    # The attention record and figure of the last validation.
    attention = tmp_path / "cached" / "attention"
    assert (attention / "attention.png").stat().st_size > 0
    assert (attention / "val_attention.csv").read_text().splitlines()[0] == "sample_id,label,ttm,lam"

    # Our checkpoint has the official layout and gives the same predictions after loading.
    best = Path(cached_trainer.checkpoint_callback.best_model_path)
    state = load_file(best)["state_dict"]
    official = random_state_dict("egot2s_ttm_2task")
    assert set(state) == set(official)
    fresh_cfg = _cfg("ttm", argv + ["--eval", "--ckpt", str(best)], tmp_path / "eval")
    fresh = build_ttm_translation_task(fresh_cfg)
    assert load_task_weights(fresh, best) == "lightning"
    loaded = torch.load(best, weights_only=True, map_location="cpu")["state_dict"]
    cached.load_state_dict(loaded)
    cached.eval()
    fresh.eval()
    batch = next(iter(ttm_translation_loader(fresh_cfg, "val", fresh.model, progress=False)))
    with torch.no_grad():
        assert torch.equal(cached(batch), fresh(batch))


# ------------------------------------------------------------------------------------------------ README commands
def _official_checkpoint(path, epoch, step):
    """A Lightning-1.6 EgoT2-s 3-task TTM checkpoint written independently of our training code: freshly
    initialised weights under exactly the released file's keys (checked against the manifest)."""
    from HHI.models.translation import TaskFusionMFTransformer3Task, build_backbone

    torch.manual_seed(epoch)
    model = TaskFusionMFTransformer3Task(hidden_dim=128, dropout=0.5, lam_model=build_backbone("lam"),
                                         ttm_model=build_backbone("ttm"), asd_model=build_backbone("asd"))
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    state["criterion.weight"] = torch.tensor([0.266, 0.734])
    assert list(state) == list(random_state_dict("egot2s_ttm_3task"))
    save_lightning_checkpoint(path, state, epoch=epoch, global_step=step)


def _run(command, cwd, env):
    result = subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture
def repo_stage1(stage1):
    """Stage-I files at the README's default location (``pretrained_models/``, repository root); files already
    there (a user's real checkpoints) are used as they are and never touched."""
    placed = []
    for source, path in stage1.items():
        target = REPO_ROOT / "pretrained_models" / f"ts_{source}.pth"
        if not target.exists():
            shutil.copyfile(path, target)
            placed.append(target)
    yield
    for target in placed:
        target.unlink(missing_ok=True)


@pytest.mark.slow
def test_readme_translation_commands_run_end_to_end(data_dir, repo_stage1, tmp_path):
    env = {**os.environ, "EGO4D_DATA": str(data_dir), "PYTHONPATH": str(REPO_ROOT)}
    limits = ["--face_size", str(FACE), "--epochs", "1", "--limit_train_batches", "2", "--num_workers", "0"]
    script = str(REPO_ROOT / "scripts" / "run_ttm.py")
    _run([script, "--model", "TaskFusionMFTransformer2Task", "--num_layers", "1", "--hidden_dim", "128",
          "--dropout", "0.5", "--output_dir", "2tasktranslation", *limits], tmp_path, env)
    _run([script, "--two_loader", "--model", "TaskFusionMFTransformer3Task", "--num_layers", "1", "--hidden_dim",
          "128", "--dropout", "0.5", "--output_dir", "3tasktranslation", *limits, "--asd_max_frames", "8"],
         tmp_path, env)
    _run([str(REPO_ROOT / "scripts" / "run_asd.py"), "--model", "TaskFusionMFTransformer3Task", "--output_dir",
          "3tasktranslation", "--face_size", str(FACE), "--epochs", "1", "--limit_train_batches", "1",
          "--max_frames", "8", "--num_workers", "0"], tmp_path, env)
    assert (tmp_path / "logs" / "asd" / "3tasktranslation" / "attention" / "attention.png").is_file()

    # The model zoo under the README's names: our 2-task checkpoint and an official-layout 3-task file.
    zoo = tmp_path / "egot2_checkpoints" / "ttm"
    zoo.mkdir(parents=True)
    ours = next((tmp_path / "logs" / "ttm" / "2tasktranslation" / "checkpoints").glob("epoch=*.ckpt"))
    shutil.copyfile(ours, zoo / "egot2s_2task_128_l1_dp0.5_epoch=23-step=1824.ckpt")
    _official_checkpoint(zoo / "egot2s_3task_128_l1_dp0.5_epoch=6-step=532.ckpt", 6, 532)
    two = ["--model", "TaskFusionMFTransformer2Task", "--num_layers", "1", "--hidden_dim", "128", "--dropout", "0.5",
           "--ckpt", "./egot2_checkpoints/ttm/egot2s_2task_128_l1_dp0.5_epoch=23-step=1824.ckpt"]
    three = ["--two_loader", "--model", "TaskFusionMFTransformer3Task", "--num_layers", "1", "--hidden_dim", "128",
             "--dropout", "0.5", "--ckpt", "./egot2_checkpoints/ttm/egot2s_3task_128_l1_dp0.5_epoch=6-step=532.ckpt"]
    small = ["--face_size", str(FACE), "--num_workers", "0"]
    for flags, limits in ((two, []), (three, ["--asd_max_frames", "8"])):
        evaluated = _run([script, "--eval", *flags, *small, *limits], tmp_path, env)
        assert "val_mAP" in evaluated.stdout
        submission = tmp_path / "submit_ttm.json"
        submission.unlink(missing_ok=True)
        _run([script, "--submit", *flags, *small, *limits], tmp_path, env)
        assert validate_file("ttm", submission) == []
