"""TaskModule and build_trainer: optimisation, schedules, frozen backbones in training, DDP metrics, resume."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from egot2.backbone import FrozenBackbone
from egot2.engine import (
    OptimSettings,
    TaskModule,
    build_lr_scheduler,
    build_optimizer,
    build_trainer,
    find_resume_checkpoint,
    lr_factor,
    parameter_groups,
    predict_records,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_SCRIPT = Path(__file__).with_name("ddp_toy.py")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------- tiny data/models
class FramesDataset(Dataset):
    """Samples: ``video`` [T=2, 3, 8, 8] float32, ``label`` int, ``uid`` str."""

    def __init__(self, size=12, seed=0, uids=None):
        generator = torch.Generator().manual_seed(seed)
        self.video = torch.randn(size, 2, 3, 8, 8, generator=generator) * 2 + 0.5
        self.labels = torch.randint(0, 2, (size,), generator=generator)
        self.uids = uids or [f"s{i:02d}" for i in range(size)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"video": self.video[index], "label": self.labels[index], "uid": self.uids[index]}


class ConvStageOne(nn.Module):
    """Stage-I stand-in with BatchNorm and dropout; tokens [B, T, 4]."""

    feature_dim = 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.dropout = nn.Dropout(0.5)

    def forward_features(self, video):
        batch, frames = video.shape[:2]
        maps = torch.relu(self.bn1(self.conv(video.flatten(0, 1))))
        return self.dropout(maps.mean(dim=(2, 3))).view(batch, frames, -1)


class FrozenFeatureTask(TaskModule):
    """A translator-like task: frozen backbone -> trainable BatchNorm1d + Linear head."""

    def __init__(self, optim=None):
        super().__init__(optim or OptimSettings(method="sgd", lr=0.1, weight_decay=1e-4, bn_weight_decay=0.0),
                         id_field="uid")
        self.backbone = FrozenBackbone(ConvStageOne())
        self.head_bn = nn.BatchNorm1d(4)
        self.classifier = nn.Linear(4, 2)
        self.gradients_seen = None

    def forward(self, video):
        return self.classifier(self.head_bn(self.backbone(video).mean(dim=1)))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["video"]), batch["label"])

    def on_after_backward(self):
        self.gradients_seen = {name: parameter.grad is not None for name, parameter in self.named_parameters()}

    def validation_step(self, batch, batch_idx):
        self.record("val", uid=batch["uid"], score=self(batch["video"]).softmax(-1)[:, 1], label=batch["label"])

    def compute_metrics(self, split, records):
        self.seen_uids = list(records["uid"])
        return {"n": len(records["uid"]), "mean_score": records["score"].mean()}

    def predict_batch(self, batch):
        return {"uid": batch["uid"], "score": self(batch["video"]).softmax(-1)[:, 1]}


def _loader(dataset, batch_size=4):
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


# ----------------------------------------------------------------------------------------------- optimisation
def test_parameter_groups_follow_the_bn_name_rule_and_skip_frozen_parameters():
    module = FrozenFeatureTask()
    groups = parameter_groups(module.named_parameters(), weight_decay=1e-4, bn_weight_decay=0.0)
    by_decay = {group["weight_decay"]: {id(p) for p in group["params"]} for group in groups}
    assert by_decay[0.0] == {id(module.head_bn.weight), id(module.head_bn.bias)}
    assert by_decay[1e-4] == {id(module.classifier.weight), id(module.classifier.bias)}
    assert len(parameter_groups(module.named_parameters(), weight_decay=0.5)) == 1
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(FrozenBackbone(ConvStageOne()).named_parameters(), 0.0)


def test_optimizer_methods_and_settings():
    named = list(nn.Linear(3, 2).named_parameters())
    sgd = build_optimizer(named, OptimSettings(method="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8 and sgd.param_groups[0]["weight_decay"] == 1e-4
    adamw = build_optimizer(named, OptimSettings(method="adamw", lr=1e-4, weight_decay=1e-4))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 1e-4
    assert type(build_optimizer(named, OptimSettings(method="adam"))) is torch.optim.Adam
    with pytest.raises(ValueError, match="method"):
        OptimSettings(method="lamb")


@pytest.mark.parametrize("policy, interval, expected", [
    ("cosine", "step", lambda k: 0.5 * (1 + math.cos(math.pi * k / 10))),
    ("cosine_warmup", "step", lambda k: k / 4 if k < 4 else 0.5 * (1 + math.cos(math.pi * (k - 4) / 6))),
    ("step_decay", "epoch", lambda k: 0.5 ** (k // 2)),
])
def test_lr_schedules_produce_the_expected_factors(policy, interval, expected):
    settings = OptimSettings(method="sgd", lr=0.2, lr_policy=policy, warmup_steps=4, gamma=0.5, step_size=2,
                             interval=interval)
    optimizer = build_optimizer(nn.Linear(2, 2).named_parameters(), settings)
    config = build_lr_scheduler(optimizer, settings, total=10)
    assert config["interval"] == interval
    factors = []
    for _ in range(11):
        factors.append(optimizer.param_groups[0]["lr"] / 0.2)
        optimizer.step()
        config["scheduler"].step()
    for step, factor in enumerate(factors):
        assert factor == pytest.approx(expected(step), abs=1e-9), (policy, step)
        assert lr_factor(settings, step, 10) == pytest.approx(expected(step), abs=1e-9)
    assert build_lr_scheduler(optimizer, OptimSettings(), total=10) is None
    if policy != "step_decay":
        with pytest.raises(ValueError, match="finite"):
            build_lr_scheduler(optimizer, settings, total=float("inf"))


def test_cosine_schedule_spans_all_optimisation_steps(tmp_path):
    module = FrozenFeatureTask(OptimSettings(method="sgd", lr=0.1, lr_policy="cosine"))
    trainer = build_trainer(output_dir=tmp_path, max_epochs=2, limit_train_batches=2, enable_progress_bar=False)
    trainer.fit(module, train_dataloaders=_loader(FramesDataset()))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.T_max == 4 and trainer.global_step == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- frozen backbone
def test_frozen_backbone_stays_fixed_during_a_training_step_and_trainables_get_gradients(tmp_path):
    module = FrozenFeatureTask()
    frozen_before = {key: value.clone() for key, value in module.backbone.state_dict().items()}
    head_bn_mean = module.head_bn.running_mean.clone()
    classifier_before = module.classifier.weight.detach().clone()
    trainer = build_trainer(output_dir=tmp_path, max_epochs=1, fast_dev_run=1, enable_progress_bar=False)
    trainer.fit(module, train_dataloaders=_loader(FramesDataset()), val_dataloaders=_loader(FramesDataset(seed=1)))
    assert trainer.global_step == 1
    for key, value in module.backbone.state_dict().items():
        assert torch.equal(value, frozen_before[key]), f"frozen backbone tensor {key} changed"
    trainable = {name for name, parameter in module.named_parameters() if parameter.requires_grad}
    assert trainable == {"head_bn.weight", "head_bn.bias", "classifier.weight", "classifier.bias"}
    assert {name for name, seen in module.gradients_seen.items() if seen} == trainable
    # The trainable part did train (and its BatchNorm, not frozen, updated its statistics).
    assert not torch.equal(module.classifier.weight, classifier_before)
    assert not torch.equal(module.head_bn.running_mean, head_bn_mean)
    # Only the trainable parameters reached the optimiser.
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for name, p in module.named_parameters() if name in trainable}


# ----------------------------------------------------------------------------------------------- records
def test_records_are_deduplicated_and_sorted_by_id(tmp_path):
    uids = ["s05", "s01", "s03", "s01", "s00", "s05", "s02"]  # repeats, as DistributedSampler padding makes
    module = FrozenFeatureTask()
    trainer = build_trainer(output_dir=tmp_path, max_epochs=1, enable_progress_bar=False)
    metrics = trainer.validate(module, dataloaders=_loader(FramesDataset(size=7, uids=uids), batch_size=3),
                               verbose=False)[0]
    assert module.seen_uids == ["s00", "s01", "s02", "s03", "s05"]
    assert metrics["val_n"] == 5.0
    predictions = predict_records(trainer, module, _loader(FramesDataset(size=4), batch_size=3))
    assert predictions["uid"] == ["s00", "s01", "s02", "s03"] and predictions["score"].shape == (4,)


def test_record_rejects_malformed_fields():
    module = FrozenFeatureTask()
    with pytest.raises(ValueError, match="different batch sizes"):
        module.record("val", uid=["a", "b"], score=torch.zeros(3))
    with pytest.raises(ValueError, match="scalar"):
        module.record("val", loss=torch.tensor(1.0))
    with pytest.raises(ValueError, match="split"):
        module.record("validation", score=torch.zeros(1))
    with pytest.raises(ValueError, match="tensor or a list"):
        module.record("val", score=3.0)


# ----------------------------------------------------------------------------------------------- trainer
def test_build_trainer_wires_devices_loggers_and_checkpoints(tmp_path):
    trainer = build_trainer(output_dir=tmp_path, max_epochs=3, monitor="val_mAP", mode="max", save_top_k=2,
                            cpu_processes=2, enable_progress_bar=False)
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2
    assert trainer.strategy.root_device.type == "cpu"
    checkpoint, last = trainer.checkpoint_callbacks
    assert trainer.checkpoint_callback is checkpoint
    assert (checkpoint.monitor, checkpoint.mode, checkpoint.save_top_k) == ("val_mAP", "max", 2)
    assert (last.monitor, last.filename, last.save_top_k) == (None, "last", 1)
    assert Path(checkpoint.dirpath) == Path(last.dirpath) == tmp_path / "checkpoints"
    assert sorted(type(logger).__name__ for logger in trainer.loggers) == ["CSVLogger", "TensorBoardLogger"]
    single = build_trainer(output_dir=tmp_path, max_epochs=1, enable_progress_bar=False)
    assert type(single.strategy).__name__ == "SingleDeviceStrategy"
    with pytest.raises(ValueError, match="mode"):
        build_trainer(output_dir=tmp_path, max_epochs=1, mode="best")


class CrashAtEpoch(pl.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_from_last_checkpoint_reaches_the_same_weights(tmp_path):
    def run(output_dir, ckpt_path=None, callbacks=()):
        trainer = build_trainer(output_dir=output_dir, max_epochs=3, seed=3, enable_progress_bar=False,
                                monitor="val_mean_score", mode="max", extra_callbacks=callbacks)
        module = FrozenFeatureTask(OptimSettings(method="sgd", lr=0.1, lr_policy="cosine", weight_decay=1e-3))
        trainer.fit(module, train_dataloaders=_loader(FramesDataset()), val_dataloaders=_loader(FramesDataset(seed=1)),
                    ckpt_path=ckpt_path)
        return module, trainer

    straight, _ = run(tmp_path / "straight")
    assert find_resume_checkpoint(tmp_path / "crashed") is None
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crashed", callbacks=[CrashAtEpoch(2)])
    last = find_resume_checkpoint(tmp_path / "crashed")
    assert last == tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True, map_location="cpu")  # no pickled objects in our checkpoints
    assert checkpoint["epoch"] == 1 and "backbone.bn1.running_mean" in checkpoint["state_dict"]
    resumed, trainer = run(tmp_path / "crashed", ckpt_path=last)
    assert trainer.current_epoch == 3
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_last_checkpoint_follows_every_epoch_whatever_the_monitor_does(tmp_path, mode):
    # One of the two modes sees epochs that do not improve the monitor; last.ckpt must still be the final epoch.
    trainer = build_trainer(output_dir=tmp_path, max_epochs=3, seed=3, enable_progress_bar=False,
                            monitor="val_mean_score", mode=mode, save_top_k=1)
    module = FrozenFeatureTask(OptimSettings(method="sgd", lr=0.1))
    trainer.fit(module, train_dataloaders=_loader(FramesDataset()), val_dataloaders=_loader(FramesDataset(seed=1)))
    last = find_resume_checkpoint(tmp_path)
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] == 2
    assert sorted(path.name for path in last.parent.iterdir())[-1] == "last.ckpt"


def test_build_trainer_from_cfg_reads_the_base_keys_and_writes_run_info(tmp_path):
    config = pytest.importorskip("egot2.config")
    from egot2.engine import build_trainer_from_cfg, resume_checkpoint_from_cfg

    cfg = config.load_cfg(opts=["OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_EPOCH", 4, "NUM_GPUS", 0,
                                "CHECKPOINT.MONITOR", "val_acc", "CHECKPOINT.MODE", "min",
                                "TRAIN.LIMIT_VAL_BATCHES", 3, "SOLVER.CLIP_GRAD_NORM", 1.5])
    trainer = build_trainer_from_cfg(cfg, enable_progress_bar=False)
    assert trainer.max_epochs == 4 and trainer.limit_val_batches == 3 and trainer.gradient_clip_val == 1.5
    assert (trainer.checkpoint_callback.monitor, trainer.checkpoint_callback.mode) == ("val_acc", "min")
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "versions.json").is_file()
    assert resume_checkpoint_from_cfg(cfg) is None
    last_cfg = config.load_cfg(opts=["OUTPUT_DIR", str(tmp_path / "run"), "CHECKPOINT.RESUME", "last"])
    assert resume_checkpoint_from_cfg(last_cfg) is None
    missing = config.load_cfg(opts=["CHECKPOINT.RESUME", str(tmp_path / "nowhere.ckpt")])
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        resume_checkpoint_from_cfg(missing)
    solver_cfg = config.load_cfg(opts=["SOLVER.OPTIMIZING_METHOD", "adamw", "SOLVER.LR_POLICY", "cosine_warmup",
                                       "BN.WEIGHT_DECAY", 0.0])
    settings = OptimSettings.from_cfg(solver_cfg)
    assert (settings.method, settings.lr_policy, settings.bn_weight_decay) == ("adamw", "cosine_warmup", 0.0)


# ----------------------------------------------------------------------------------------------- DDP
def _run_toy(processes, output):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(TOY_SCRIPT), "--processes", str(processes), "--output", str(output)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads((output / "result.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_reports_the_same_whole_split_metrics_as_one_process(tmp_path):
    single = _run_toy(1, tmp_path / "single")
    double = _run_toy(2, tmp_path / "ddp")
    assert (single["world_size"], double["world_size"]) == (1, 2)
    for result in (single, double):
        # 37 validation samples: the 2-process shards (19 + 19) repeat one sample, which must not count twice.
        assert result["validate"]["val_n"] == 37 and result["validate"]["val_unique"] == 37
        assert result["validate"]["val_index_sum"] == sum(range(37))
        assert result["validate"]["val_acc"] == result["direct"]["acc"]
        assert result["validate"]["val_ap"] == pytest.approx(result["direct"]["ap"], abs=1e-6)
        assert result["fit"]["train"]["n"] == 48
        assert result["predict_uids"] == [f"clip_{i:03d}" for i in range(37)]  # uneven shards 19 + 18
        assert result["checkpoint_keys"] == ["model.bias", "model.weight"] and result["checkpoint_epoch"] == 2
    assert double["validate"]["val_acc"] == single["validate"]["val_acc"]
    assert double["validate"]["val_ap"] == pytest.approx(single["validate"]["val_ap"], abs=1e-6)
    assert double["fit"]["train"]["acc"] == single["fit"]["train"]["acc"]
    assert double["logged"]["val_acc"] == single["logged"]["val_acc"]
    torch.testing.assert_close(torch.tensor(double["predict_scores"]), torch.tensor(single["predict_scores"]),
                               rtol=0, atol=1e-5)
    for single_weights, double_weights in zip(single["weights"], double["weights"]):
        torch.testing.assert_close(torch.tensor(double_weights), torch.tensor(single_weights), rtol=0, atol=1e-5)
