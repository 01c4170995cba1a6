"""LAM/TTM tasks, the shared social CLI, and scripts/run_lam.py / run_ttm.py end to end on the tiny twin."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from egot2.checkpoint import CheckpointMismatchError, load_file, save_lightning_checkpoint
from egot2.config import ConfigError
from HHI.cli import export_social_checkpoint, load_task_weights, run_dir
from HHI.data.social import read_json, read_split
from HHI.metrics import lam_map
from HHI.models.lstm import LAMBaselineLSTM, TTMBaselineLSTM
from HHI.tasks.lam import LookingAtMeTask
from HHI.tasks.ttm import TalkingToMeTask, ttm_segment_logits
from tests.manifests import manifest_keys, random_state_dict
from tests.twin import make_twin

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------- CLI -> config
def test_flags_map_onto_config_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_lam = load_script("run_lam")
    args = run_lam.parse_args(["--model", "BaselineLSTM", "--output_dir", "x", "--epochs", "3", "--batch_size", "8",
                               "--weights", "0.3", "0.7", "--ckpt", "here.ckpt", "--val_stride", "26",
                               "--num_gpus", "0", "--limit_train_batches", "0.5", "--source_path", "imgs",
                               "SOLVER.BASE_LR", "0.01"])
    cfg = run_lam.social_cfg(args, "lam", extensions=(run_lam.add_lam_config, run_lam.lam_run_defaults),
                             flag_keys=run_lam.FLAG_KEYS, path_flags=run_lam.PATH_FLAGS)
    assert cfg.SOLVER.MAX_EPOCH == 3 and cfg.TRAIN.BATCH_SIZE == 8 and cfg.LAM.CLASS_WEIGHTS == [0.3, 0.7]
    assert cfg.LAM.VAL_STRIDE == 26 and cfg.LAM.TRAIN_STRIDE == 13 and cfg.NUM_GPUS == 0
    assert cfg.TRAIN.LIMIT_TRAIN_BATCHES == 0.5 and cfg.SOLVER.BASE_LR == 0.01
    assert cfg.SOLVER.OPTIMIZING_METHOD == "adam" and cfg.CHECKPOINT.MONITOR == "val_mAP"
    # run files are taken from the current directory, like ./logs
    assert cfg.CHECKPOINT.FILE_PATH == str(tmp_path / "here.ckpt") and cfg.LAM.SOURCE_PATH == str(tmp_path / "imgs")
    assert Path(cfg.OUTPUT_DIR) == run_dir("lam", "x") == tmp_path / "logs" / "lam" / "x"
    run_ttm = load_script("run_ttm")
    args = run_ttm.parse_args(["--model", "BaselineLSTM", "--batch_size", "200", "--legacy_epochs", "--wd", "0.1"])
    cfg = run_ttm.social_cfg(args, "ttm", extensions=(run_ttm.add_ttm_config, run_ttm.ttm_run_defaults),
                             flag_keys=run_ttm.FLAG_KEYS, path_flags=run_ttm.PATH_FLAGS)
    assert cfg.TTM.FRAME_BUDGET == 200 and cfg.TTM.LEGACY_EPOCHS and not cfg.TTM.LEGACY_METRIC_KEY
    assert cfg.SOLVER.WEIGHT_DECAY == 0.1 and cfg.TTM.CLASS_WEIGHTS == [0.266, 0.734] and cfg.OUTPUT_DIR.endswith(
        os.path.join("logs", "ttm", "debug"))
    with pytest.raises(ConfigError, match="unknown config key TTM.FRAMEBUDGET"):
        run_ttm.social_cfg(run_ttm.parse_args(["--model", "BaselineLSTM", "TTM.FRAMEBUDGET", "3"]), "ttm",
                           extensions=(run_ttm.add_ttm_config,), flag_keys=run_ttm.FLAG_KEYS)


# ----------------------------------------------------------------------------------------------- tasks
def test_task_state_dicts_have_the_official_lightning_layout():
    lam = LookingAtMeTask(LAMBaselineLSTM())
    expected = {"model." + key for key, _, _ in manifest_keys("ts_lam")} | {"criterion.weight"}
    assert set(lam.state_dict()) == expected
    assert lam.state_dict()["criterion.weight"].tolist() == pytest.approx([0.136, 0.864])
    ttm = TalkingToMeTask(TTMBaselineLSTM())
    assert set(ttm.state_dict()) == {"model." + key for key, _, _ in manifest_keys("ts_ttm")} | {"criterion.weight"}


def test_load_task_weights_takes_both_layouts_strictly(tmp_path):
    task = LookingAtMeTask(LAMBaselineLSTM())
    network = random_state_dict("ts_lam", seed=1)
    torch.save({"epoch": 3, "state_dict": network, "mAP": 0.7}, tmp_path / "ts_lam.pth")
    assert load_task_weights(task, tmp_path / "ts_lam.pth") == "network"
    assert torch.equal(task.model.last_layer2.weight, network["last_layer2.weight"])
    lightning = {"model." + key: value for key, value in random_state_dict("ts_lam", seed=2).items()}
    save_lightning_checkpoint(tmp_path / "original.ckpt", lightning)  # no criterion.weight: tolerated
    assert load_task_weights(task, tmp_path / "original.ckpt") == "lightning"
    assert torch.equal(task.model.base_model.conv1.weight, lightning["model.base_model.conv1.weight"])
    del network["lstm.weight_hh_l1"]
    torch.save({"epoch": 3, "state_dict": network, "mAP": 0.7}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError, match="lstm.weight_hh_l1"):
        load_task_weights(task, tmp_path / "broken.pth")


def test_checkpoint_flag_initialises_the_stage_one_network_strictly(tmp_path):
    from egot2.config import load_cfg
    from HHI.config import add_ttm_config, ttm_run_defaults
    from HHI.tasks.ttm import build_ttm_task

    network = random_state_dict("ts_ttm", seed=3)
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in network.items()}, "mAP": 0.5},
               tmp_path / "init.pth")
    extensions = (add_ttm_config, ttm_run_defaults)
    cfg = load_cfg(extensions=extensions, opts=["HHI.INIT_CHECKPOINT", str(tmp_path / "init.pth")])
    task = build_ttm_task(cfg)
    assert torch.equal(task.model.audio_encoder.fc.weight, network["audio_encoder.fc.weight"])
    assert task.criterion.weight.tolist() == pytest.approx([0.266, 0.734])
    torch.save({"epoch": 1, "state_dict": random_state_dict("ts_lam"), "mAP": 0.5}, tmp_path / "lam.pth")
    cfg = load_cfg(extensions=extensions, opts=["HHI.INIT_CHECKPOINT", str(tmp_path / "lam.pth")])
    with pytest.raises(CheckpointMismatchError, match="base_model"):
        build_ttm_task(cfg)


def test_export_writes_the_official_social_container(tmp_path):
    state = {"model." + key: value for key, value in random_state_dict("ts_ttm").items()}
    state["criterion.weight"] = torch.tensor([0.266, 0.734])
    save_lightning_checkpoint(tmp_path / "best.ckpt", state, epoch=4)
    exported = load_file(export_social_checkpoint(tmp_path / "best.ckpt", tmp_path / "ts_ttm.pth", score=0.61))
    assert set(exported) == {"epoch", "state_dict", "mAP"} and exported["epoch"] == 4
    assert exported["mAP"] == pytest.approx(0.61)
    assert [(k, tuple(v.shape)) for k, v in exported["state_dict"].items()] == \
        [(k, shape) for k, shape, _ in manifest_keys("ts_ttm")]
    with pytest.raises(ValueError, match="finite"):
        export_social_checkpoint(tmp_path / "best.ckpt", tmp_path / "x.pth", score=float("nan"))


class Constant(nn.Module):
    """Logits from the mean pixel (LAM/TTM stand-in)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 2)

    def forward(self, video, audio=None):
        return self.linear(video.mean(dim=(1, 2, 3, 4))[:, None])


def test_lam_task_metrics_are_the_official_ones():
    task = LookingAtMeTask(Constant())
    records = {"clip_uid": ["a", "a", "b", "b"], "frame": torch.tensor([1, 14, 1, 14]),
               "track_id": ["t", "t", "u", "u"], "box": torch.ones(4, 4, dtype=torch.int64),
               "label": torch.tensor([1, 0, 1, 0]), "score": torch.tensor([0.9, 0.2, 0.4, 0.6])}
    metrics = task.compute_metrics("val", records)
    rows = [{"clip_uid": c, "frame": f, "track_id": t, "box": [1, 1, 1, 1], "label": lab, "score": s}
            for c, f, t, lab, s in zip(records["clip_uid"], [1, 14, 1, 14], records["track_id"], [1, 0, 1, 0],
                                      [0.9, 0.2, 0.4, 0.6])]
    assert metrics == {"mAP": pytest.approx(lam_map(rows).mean_ap), "acc": pytest.approx(0.5)}


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_ttm_task_skips_silent_training_batches_and_pads_silent_evaluation():
    task = TalkingToMeTask(Constant(), min_audio_samples=400)
    batch = {"video": torch.randn(2, 3, 3, 4, 4), "audio": torch.zeros(2, 0), "label": torch.tensor([0, 1]),
             "chunk_id": ["a:0:1:3", "b:0:1:3"], "clip_uid": ["a", "b"], "index": torch.tensor([0, 0]),
             "start": torch.tensor([1, 1]), "end": torch.tensor([3, 3])}
    assert task.training_step(batch, 0) is None
    assert task.warnings["training batch with too little audio (skipped)"] == 1
    task.validation_step(batch, 0)
    assert task.warnings["evaluation chunk with too little audio (zero-padded)"] == 1
    batch["audio"] = torch.randn(2, 500)
    assert task.training_step(batch, 1).requires_grad


class ChunkSet(torch.utils.data.Dataset):
    """12 one-frame chunks with audio, indexed so a test can see which samples each step got."""

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return {"video": torch.full((2, 3, 4, 4), float(index)), "audio": torch.ones(500), "label": index % 2,
                "chunk_id": f"c:{index}:0:1", "position": index}


class RecordingTTM(TalkingToMeTask):
    def __init__(self):
        super().__init__(Constant())
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch["position"].tolist()))
        return super().training_step(batch, batch_idx)


@pytest.mark.filterwarnings("ignore:.*LeafSpec", "ignore:.*does not have many workers",
                            "ignore:.*smaller than the logging interval", "ignore:You defined a `validation_step`")
@pytest.mark.parametrize("legacy", [False, True])
def test_ttm_epochs_reshuffle_and_legacy_epochs_are_truncated(tmp_path, legacy):
    import pytorch_lightning as pl

    from HHI.data.ttm import FrameBudgetBatchSampler, collate_truncate

    sampler = FrameBudgetBatchSampler([2] * 12, frame_budget=4, seed=0, legacy_truncated_epochs=legacy)
    loader = torch.utils.data.DataLoader(ChunkSet(), batch_sampler=sampler, collate_fn=collate_truncate)
    task = RecordingTTM()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, train_dataloaders=loader)
    steps = [epoch for epoch, _ in task.seen]
    # two chunks per batch -> 6 batches an epoch; the original's length int(12 / 4) = 3 ends each epoch after 3
    assert steps == ([0] * 3 + [1] * 3 if legacy else [0] * 6 + [1] * 6)
    if not legacy:
        first, second = [sorted(sum((b for e, b in task.seen if e == epoch), [])) for epoch in (0, 1)]
        assert first == second == list(range(12))
        assert [b for e, b in task.seen if e == 0] != [b for e, b in task.seen if e == 1]
        assert sampler.epoch == 1


def test_ttm_metric_keys_segments_by_clip_and_index_unless_legacy():
    # two clips with a segment at the same start:end -- the legacy key merges them into one row
    records = {"clip_uid": ["a", "a", "b", "c"], "index": torch.tensor([0, 0, 0, 0]),
               "start": torch.tensor([1, 151, 1, 400]), "end": torch.tensor([151, 300, 300, 420]),
               "label": torch.tensor([1, 1, 0, 0]),
               "logits": torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.0, 1.5], [0.0, -1.0]])}
    default = TalkingToMeTask(Constant()).compute_metrics("val", records)
    legacy = TalkingToMeTask(Constant(), legacy_metric_key=True).compute_metrics("val", records)
    # default: a (score sigmoid(1), positive), b (sigmoid(1.5), negative), c (sigmoid(-1), negative): b outranks a
    assert default == {"mAP": pytest.approx((0.5 + 5 / 6) / 2), "acc": pytest.approx(2 / 3)}
    # legacy: a and b share the key "1:300", the first (a) is kept -> a perfect ranking
    assert legacy == {"mAP": pytest.approx(1.0), "acc": pytest.approx(1.0)}
    # "first" is the dataset order when the chunks carry their position: b first -> b is kept
    records["position"] = torch.tensor([3, 1, 0, 2])
    reordered = TalkingToMeTask(Constant(), legacy_metric_key=True).compute_metrics("val", records)
    assert reordered["acc"] == pytest.approx(1 / 2)


def test_ttm_segment_logits_average_before_the_softmax():
    scores = ttm_segment_logits(["s", "s", "t"], np.array([[0.0, 4.0], [0.0, -2.0], [1.0, 0.0]]))
    assert list(scores) == ["s", "t"]
    assert scores["s"] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert scores["t"] == pytest.approx(1 / (1 + np.exp(1.0)))


# ----------------------------------------------------------------------------------------------- scripts
@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("lam", "ttm", "asd"))[1]


def run_script(name, args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "EGO4D_DATA": ""}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / f"{name}.py"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{name} {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def validate_submission(task, path, *extra):
    result = subprocess.run([sys.executable, "-m", "egot2.submission", "--task", task, str(path), *extra],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def check_export(run, task):
    exported = load_file(run / f"ts_{task}.pth")
    assert set(exported) == {"epoch", "state_dict", "mAP"}
    assert isinstance(exported["epoch"], int) and 0.0 <= exported["mAP"] <= 1.0
    assert [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in exported["state_dict"].items()] == \
        manifest_keys(f"ts_{task}")
    assert (run / "config.yaml").is_file() and (run / "versions.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "csv").rglob("metrics.csv"))


@pytest.mark.slow
def test_run_lam_trains_evaluates_and_submits(twin, tmp_path):
    common = ["--model", "BaselineLSTM", "--output_dir", "t", "--face_size", "32", "--num_workers", "0",
              "--num_gpus", "0", "--data_dir", str(twin)]
    out = run_script("run_lam", [*common, "--epochs", "1", "--batch_size", "8", "--limit_train_batches", "2",
                                 "--val_stride", "26"], tmp_path)
    run = tmp_path / "logs" / "lam" / "t"
    assert "exported the best model" in out and str(run / "ts_lam.pth") in out
    check_export(run, "lam")
    out = run_script("run_lam", [*common, "--val_stride", "26", "--eval", "--ckpt", "logs/lam/t/checkpoints/last.ckpt"],
                     tmp_path)
    assert "validation: val_acc = " in out and "val_mAP = " in out
    # --resume continues from last.ckpt (epoch 0 done) and trains epoch 1 only
    out = run_script("run_lam", [*common, "--epochs", "2", "--batch_size", "8", "--limit_train_batches", "1",
                                 "--val_stride", "26", "--resume"], tmp_path)
    assert "Restored all states from the checkpoint" in out
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch=*.ckpt")) == ["epoch=0-step=2.ckpt",
                                                                                 "epoch=1-step=3.ckpt"]
    run_script("run_lam", [*common, "--submit", "--ckpt", "logs/lam/t/ts_lam.pth"], tmp_path)
    submission = json.loads((tmp_path / "submit_lam.json").read_text())
    release = twin / "lam" / "videos_challenge"
    assert len(submission["results"]) == len(list(release.rglob("*.jpg")))
    validate_submission("lam", tmp_path / "submit_lam.json")


def _one_clip_list(twin, split, folder, both_labels):
    """A split list with one clip of ``split`` (with both TTM labels when asked), to keep the run short."""
    for clip_uid in read_split(twin / "ttm" / "split" / f"{split}.list"):
        labels = {int("tags" in s) for s in read_json(twin / "ttm" / "result_TTM" / f"{clip_uid}.json")
                  if s["label"] != 0 and s["end_frame"] > s["start_frame"]}
        if labels == {0, 1} or not both_labels:
            path = folder / f"{split}_one.list"
            path.write_text(clip_uid + "\n")
            return path
    raise AssertionError(f"no {split} clip with both labels in the twin")


@pytest.mark.slow
def test_run_ttm_trains_evaluates_and_submits(twin, tmp_path):
    train_list = _one_clip_list(twin, "train", tmp_path, both_labels=False)
    val_list = _one_clip_list(twin, "val", tmp_path, both_labels=True)
    common = ["--model", "BaselineLSTM", "--output_dir", "t", "--face_size", "32", "--num_workers", "0",
              "--num_gpus", "0", "--data_dir", str(twin), "--val_file", str(val_list)]
    # 31-frame chunks keep the CPU run short; the official value is 150
    out = run_script("run_ttm", [*common, "--epochs", "1", "--batch_size", "60", "--limit_train_batches", "1",
                                 "--train_file", str(train_list), "TTM.CHUNK_FRAMES", "30"], tmp_path)
    run = tmp_path / "logs" / "ttm" / "t"
    assert "exported the best model" in out
    check_export(run, "ttm")
    out = run_script("run_ttm", [*common, "--eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"),
                                 "--legacy_metric_key", "TTM.CHUNK_FRAMES", "30"], tmp_path)
    assert "validation: val_acc = " in out
    run_script("run_ttm", [*common, "--submit", "--ckpt", "logs/ttm/t/ts_ttm.pth", "TTM.CHUNK_FRAMES", "30"], tmp_path)
    validate_submission("ttm", tmp_path / "submit_ttm.json", "--annotations", str(twin / "ttm" / "seg_info.json"))


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_ttm = load_script("run_ttm")
    common = ["--model", "BaselineLSTM", "--num_gpus", "0"]
    assert run_ttm.main([*common, "--data_dir", str(tmp_path / "nowhere")]) == 2
    assert "run_ttm.py: error: TTM image folder not found" in capsys.readouterr().err
    assert run_ttm.main([*common, "HHI.FACESIZE", "32"]) == 2
    assert "unknown config key HHI.FACESIZE; did you mean HHI.FACE_SIZE?" in capsys.readouterr().err
    assert run_ttm.main(["--model", "GazeLSTM", "--num_gpus", "0"]) == 2
    assert "unknown TTM model 'GazeLSTM'" in capsys.readouterr().err
