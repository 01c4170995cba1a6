"""HHI.tasks.asd and scripts/run_asd.py: checkpoint layout, flags -> task, losses, metrics, the script end to end."""
import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from egot2.checkpoint import CheckpointMismatchError, save_flat_checkpoint
from egot2.engine import build_lr_scheduler
from HHI.cli import social_cfg
from HHI.config import add_asd_config, asd_run_defaults
from HHI.models.talknet import TALKNET_CRITERION_KEYS, TalkNetASD, talknet_loss
from HHI.tasks.asd import ActiveSpeakerTask, asd_dataloader, build_asd_task, load_asd_weights
from tests.manifests import manifest_keys, random_state_dict
from tests.twin import make_twin

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_asd.py"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _script_module():
    spec = importlib.util.spec_from_file_location("run_asd", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(tmp_path, *flags):
    run_asd = _script_module()
    args = run_asd.parse_args(["--model", "talkNetModel", "--output_dir", str(tmp_path / "run"), "--num_gpus", "0",
                               *flags])
    return social_cfg(args, "asd", extensions=(add_asd_config, asd_run_defaults), flag_keys=run_asd.FLAG_KEYS,
                      path_flags=run_asd.PATH_FLAGS)


def _layout(module):
    return [(key, tuple(value.shape), str(value.dtype).replace("torch.", "")) for key, value in
            module.state_dict().items()]


# ------------------------------------------------------------------------------------------
# The task's checkpoint layout
# ------------------------------------------------------------------------------------------


def test_task_state_dict_is_the_official_flat_file():
    assert _layout(ActiveSpeakerTask()) == manifest_keys("ts_asd")


def test_official_files_load_strictly_into_the_task(tmp_path):
    flat = random_state_dict("ts_asd", seed=1)
    save_flat_checkpoint(tmp_path / "ts_asd.pth", flat)
    task = ActiveSpeakerTask()
    load_asd_weights(task, tmp_path / "ts_asd.pth")
    for key, value in task.state_dict().items():
        assert torch.equal(value, flat[key]), key
    # The AVA file has no class-weight buffers; DataParallel put "module." after "model.".
    ava = {key.replace("model.", "model.module.", 1): value for key, value in flat.items()
           if key not in TALKNET_CRITERION_KEYS}
    save_flat_checkpoint(tmp_path / "pretrain_AVA.model", ava)
    task = ActiveSpeakerTask()
    load_asd_weights(task, tmp_path / "pretrain_AVA.model")
    assert task.lossA.criterion.weight.tolist() == [1.0, 4.0]
    assert torch.equal(task.model.selfAV.linear1.weight, flat["model.selfAV.linear1.weight"])
    # A file without the heads does not load silently.
    save_flat_checkpoint(tmp_path / "network_only.pth", {k: v for k, v in flat.items() if k.startswith("model.")})
    with pytest.raises(CheckpointMismatchError, match="lossAV.FC.weight"):
        load_asd_weights(ActiveSpeakerTask(), tmp_path / "network_only.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_asd_weights(ActiveSpeakerTask(), tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------
# Flags -> config -> task
# ------------------------------------------------------------------------------------------


def test_defaults_follow_the_original_run(tmp_path):
    cfg = _cfg(tmp_path)
    assert (cfg.ASD.FRAME_BUDGET, cfg.SOLVER.MAX_EPOCH) == (1800, 25)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.LR_DECAY) == (1e-4, 0.95)
    assert (cfg.CHECKPOINT.MONITOR, cfg.CHECKPOINT.MODE, cfg.NUM_GPUS) == ("val_acc", "max", 0)
    assert cfg.OUTPUT_DIR == str(tmp_path / "run")
    task = build_asd_task(cfg)
    settings = task.optim_settings
    assert (settings.method, settings.lr, settings.weight_decay) == ("adam", 1e-4, 0.0)
    assert (settings.lr_policy, settings.gamma, settings.step_size, settings.interval) == ("step_decay", 0.95, 1,
                                                                                          "epoch")
    optimizer = torch.optim.Adam(task.parameters(), lr=settings.lr)
    scheduler = build_lr_scheduler(optimizer, settings, total=25)
    assert scheduler["interval"] == "epoch"
    for _ in range(3):
        optimizer.step()
        scheduler["scheduler"].step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.95 ** 3)
    assert not task.finetune and all(p.requires_grad for p in task.parameters())


def test_decay_flags(tmp_path):
    per_step = build_asd_task(_cfg(tmp_path, "--lr_decay_per_step", "--lr_decay", "0.9", "--lr", "2e-4"))
    assert (per_step.optim_settings.interval, per_step.optim_settings.gamma, per_step.optim_settings.lr) == (
        "step", 0.9, 2e-4)
    assert build_asd_task(_cfg(tmp_path, "--nodecay")).optim_settings.lr_policy == "constant"
    cfg = _cfg(tmp_path, "--batch_size", "600", "--max_frames", "8", "--legacy_int16_mix", "--weights", "1", "2")
    assert (cfg.ASD.FRAME_BUDGET, cfg.ASD.MAX_FRAMES, cfg.ASD.LEGACY_INT16_MIX) == (600, 8, True)
    assert build_asd_task(cfg).lossV.criterion.weight.tolist() == [1.0, 2.0]


def test_init_from_ava_and_finetune(tmp_path):
    flat = random_state_dict("ts_asd", seed=2)
    save_flat_checkpoint(tmp_path / "ava.model", {k: v for k, v in flat.items() if k not in TALKNET_CRITERION_KEYS})
    task = build_asd_task(_cfg(tmp_path, "--init_from_ava", "--checkpoint", str(tmp_path / "ava.model")))
    assert torch.equal(task.lossAV.FC.weight, flat["lossAV.FC.weight"])
    assert torch.equal(task.model.audioEncoder.conv1.weight, flat["model.audioEncoder.conv1.weight"])

    save_flat_checkpoint(tmp_path / "ts_asd.pth", flat)
    task = build_asd_task(_cfg(tmp_path, "--finetune", "--asd_checkpoint", str(tmp_path / "ts_asd.pth")))
    assert torch.equal(task.model.visualConv1D.net[0].weight, flat["model.visualConv1D.net.0.weight"])
    assert not torch.equal(task.lossAV.FC.weight, flat["lossAV.FC.weight"])  # heads start fresh
    assert task.finetune and not any(p.requires_grad for p in task.model.parameters())
    assert all(p.requires_grad for name, p in task.named_parameters() if name.startswith("loss"))
    task.train()
    assert task.training and task.lossAV.training and not task.model.training
    # A step moves no network weight and no BatchNorm statistic, only the heads.
    before = {key: value.clone() for key, value in task.state_dict().items()}
    faces = torch.rand(2, 3, 112, 112) * 255
    mfcc = torch.randn(2, 12, 13)
    loss = task.loss(task(faces, mfcc), torch.tensor([[0, 1, 1], [0, 0, 1]]))["loss"]
    loss.backward()
    torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.1).step()
    after = task.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("model."))
    assert not torch.equal(before["lossV.FC.weight"], after["lossV.FC.weight"])


def test_model_choice_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown ASD model 'nope'.*talkNetModel"):
        build_asd_task(_cfg(tmp_path, "HHI.MODEL", "nope"))
    with pytest.raises(ValueError, match="two_loader"):
        build_asd_task(_cfg(tmp_path, "--two_loader"))


# ------------------------------------------------------------------------------------------
# Loss and metrics
# ------------------------------------------------------------------------------------------


def test_loss_is_the_talknet_loss():
    task = ActiveSpeakerTask(aux_weight=0.4)
    generator = torch.Generator().manual_seed(0)
    outputs = {name: torch.randn(6, 2, generator=generator) for name in ("av_logits", "audio_logits", "visual_logits")}
    labels = torch.tensor([[0, 1, 1], [0, 0, 1]])
    terms = task.loss(outputs, labels)
    torch.testing.assert_close(terms["loss"], talknet_loss(outputs, labels, weights=(1.0, 4.0), aux_weight=0.4))
    torch.testing.assert_close(terms["loss"], terms["loss_av"] + 0.4 * (terms["loss_a"] + terms["loss_v"]))


def test_metrics_count_a_tie_as_not_speaking():
    task = ActiveSpeakerTask()
    records = {"logits": torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]]),
               "label": torch.tensor([0, 1, 1, 0])}
    metrics = task.compute_metrics("val", records)
    assert metrics["acc"] == pytest.approx(0.5)  # the tie (row 0) is right, rows 2 and 3 are wrong
    # speaking scores 0.5, 0.88, 0.27, 0.73: ranked 1 (pos), 3 (neg), 0 (neg), 2 (pos) -> AP = (1 + 2/4) / 2
    assert metrics["mAP"] == pytest.approx(0.75)


def test_validation_records_every_frame_once():
    task = ActiveSpeakerTask().eval()
    batch = {"faces": torch.rand(2, 3, 112, 112) * 255, "mfcc": torch.randn(2, 12, 13),
             "labels": torch.tensor([[0, 1, 1], [1, 0, 0]]), "index": torch.tensor([4, 9])}
    with torch.no_grad():
        task.validation_step(batch, 0)
        task.validation_step(batch, 1)  # DDP padding repeats a line: de-duplicated by frame id
        task.validation_step({**batch, "faces": torch.zeros(0, 0, 112, 112), "labels": torch.zeros(0, 0)}, 2)
    records = task._gather_records("val")
    assert records["frame_id"].tolist() == [[4, 0], [4, 1], [4, 2], [9, 0], [9, 1], [9, 2]]
    assert records["label"].tolist() == [0, 1, 1, 1, 0, 0] and records["logits"].shape == (6, 2)


# ------------------------------------------------------------------------------------------
# The script on the tiny twin
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("asd",))[1]


def _run(args, cwd, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_loaders_on_the_twin(twin, tmp_path):
    cfg = _cfg(tmp_path, "--data_dir", str(twin), "--max_frames", "3", "--batch_size", "9", "--num_workers", "0")
    train = asd_dataloader(cfg, "train")
    batches = list(train)
    assert len(batches) == len(train) == 2  # 5 lines of 3 frames, 3 per batch
    assert sorted(i for batch in batches for i in batch["index"].tolist()) == list(range(5))
    assert batches[0]["faces"].shape[1:] == (3, 112, 112) and batches[0]["mfcc"].shape[1:] == (12, 13)
    val = asd_dataloader(cfg, "val")
    assert val.batch_size == 1 and len(val) == len(val.dataset)


@pytest.mark.slow
def test_train_export_and_evaluate(twin, tmp_path):
    run = tmp_path / "run"
    common = ["--model", "talkNetModel", "--data_dir", str(twin), "--max_frames", "2", "--num_workers", "0",
              "--num_gpus", "0", "--limit_val_batches", "2"]
    trained = _run([*common, "--output_dir", str(run), "--batch_size", "10", "--epochs", "1"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    exported = run / "ts_asd.pth"
    assert "exported the best model" in trained.stdout and exported.is_file()
    state_dict = torch.load(exported, weights_only=True, map_location="cpu")
    assert type(state_dict).__name__ == "OrderedDict"  # flat, no {epoch, state_dict} wrapper
    assert [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state_dict.items()] == \
        manifest_keys("ts_asd")
    TalkNetASD().load_state_dict(state_dict, strict=True)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["ASD"]["MAX_FRAMES"] == 2 and config["ASD"]["FRAME_BUDGET"] == 10
    rows = list(csv.DictReader((run / "csv" / "version_0" / "metrics.csv").open()))
    assert any(row.get("val_acc") for row in rows) and any(row.get("train_loss_epoch") for row in rows)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=1.ckpt", "last.ckpt"]

    evaluated = _run([*common, "--output_dir", str(tmp_path / "eval"), "--eval", "--ckpt", str(exported)],
                     cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "validation: val_acc = " in evaluated.stdout and "val_mAP" in evaluated.stdout


@pytest.mark.slow
def test_bad_input_is_a_clear_error(tmp_path):
    missing = _run(["--model", "talkNetModel", "--data_dir", str(tmp_path / "nothing"), "--num_gpus", "0",
                    "--output_dir", str(tmp_path / "run"), "--num_workers", "0"], cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "active_speaker_train.csv" in missing.stderr
