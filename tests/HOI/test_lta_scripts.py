"""scripts/lta/run_lta.py, the AR/LTA configs and tasks, the official checkpoint layout, and the shell launchers."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egot2.checkpoint import load_file, save_lightning_checkpoint
from egot2.config import REPO_ROOT, ConfigError
from HOI.config import load_lta_cfg
from HOI.tasks.forecasting import LongTermAnticipationTask, sample_sequences
from HOI.tasks.recognition import RecognitionTask
from tests.manifests import load_manifest, manifest_keys, random_state_dict
from tests.twin import make_twin

RUN_LTA = REPO_ROOT / "scripts" / "lta" / "run_lta.py"
AR_PAPER = "configs/recognition/baseline/MULTISLOWFAST_8x8_R101.yaml"
LTA_PAPER = "configs/lta/baseline/slowfast_pretrain_ego4d.yaml"
AR_CPU = "configs/recognition/cpu/slowfast_r50_tiny.yaml"
LTA_CPU = "configs/lta/cpu/slowfast_r50_tiny.yaml"
# Short runs: a few batches, one epoch.
QUICK = ["TRAIN.LIMIT_TRAIN_BATCHES", "2", "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "4"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("ar", "lta"))[1]


def run(args, cwd, env=None, timeout=600):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def run_lta(*args, cwd, timeout=600):
    return run([sys.executable, str(RUN_LTA), *map(str, args)], cwd=cwd, timeout=timeout)


def official_keys(module):
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in module.official_state_dict().items()]


# ---------------------------------------------------------------------------------------------------- configs

def test_paper_configs_hold_the_paper_values():
    ar = load_lta_cfg(AR_PAPER)
    assert (ar.DATA.TASK, ar.MODEL.MODEL_NAME, ar.RESNET.DEPTH, ar.SLOWFAST.ALPHA) == (
        "classification", "MultiTaskSlowFast", 101, 4)
    assert (ar.DATA.NUM_FRAMES, ar.DATA.SAMPLING_RATE, list(ar.MODEL.NUM_CLASSES)) == (32, 2, [115, 478])
    assert (ar.TRAIN.BATCH_SIZE, ar.SOLVER.OPTIMIZING_METHOD, ar.SOLVER.BASE_LR, ar.SOLVER.LR_POLICY,
            ar.SOLVER.MAX_EPOCH, ar.NUM_GPUS) == (64, "sgd", 1e-4, "cosine_warmup", 30, 8)
    assert ar.CHECKPOINT.MONITOR == "val_top1_noun_err" and ar.CHECKPOINT.MODE == "min"
    lta = load_lta_cfg(LTA_PAPER)
    assert (lta.FORECASTING.NUM_INPUT_CLIPS, lta.FORECASTING.NUM_ACTIONS_TO_PREDICT,
            lta.FORECASTING.NUM_SEQUENCES_TO_PREDICT, lta.FORECASTING.AGGREGATOR) == (2, 20, 5, "TransformerAggregator")
    assert (lta.SOLVER.OPTIMIZING_METHOD, lta.SOLVER.BASE_LR, lta.SOLVER.MAX_EPOCH, lta.TRAIN.BATCH_SIZE) == (
        "adam", 1e-4, 50, 32)
    assert lta.DATA.CHECKPOINT_MODULE_FILE_PATH == "pretrained_models/recognition_ego4d_slowfast8x8.ckpt"
    concat = load_lta_cfg("configs/lta/baseline/slowfast_pretrain_ego4d_2clip_concat.yaml")
    assert (concat.FORECASTING.AGGREGATOR, concat.TRAIN.BATCH_SIZE, concat.NUM_GPUS) == ("ConcatAggregator", 64, 2)
    for name in ("configs/eval/recognition.yaml", "configs/eval/lta.yaml", AR_CPU, LTA_CPU):
        cfg = load_lta_cfg(name)
        assert cfg.RESNET.DEPTH in (50, 101)
    assert load_lta_cfg("configs/eval/lta.yaml").CHECKPOINT_FILE_PATH == "pretrained_models/lta_slowfast_trf.ckpt"


def test_config_checks_name_the_key():
    with pytest.raises(ConfigError, match="unknown config key FORECASTING.NUM_INPUTS"):
        load_lta_cfg(LTA_CPU, opts=["FORECASTING.NUM_INPUTS", "3"])
    with pytest.raises(ConfigError, match="SLOWFAST.ALPHA.*must divide DATA.NUM_FRAMES"):
        load_lta_cfg(AR_CPU, opts=["SLOWFAST.ALPHA", "3"])
    with pytest.raises(ConfigError, match="MODEL.MODEL_NAME.*'long_term_anticipation' trains"):
        load_lta_cfg(AR_CPU, opts=["DATA.TASK", "long_term_anticipation"])
    with pytest.raises(ConfigError, match="RESNET.NUM_BLOCK_TEMP_KERNEL"):
        load_lta_cfg(AR_CPU, opts=["RESNET.DEPTH", "101"])
    with pytest.raises(ConfigError, match="CHECKPOINT_FILE_PATH.*disagrees with CHECKPOINT.FILE_PATH"):
        load_lta_cfg(AR_CPU, opts=["CHECKPOINT_FILE_PATH", "a.ckpt", "CHECKPOINT.FILE_PATH", "b.ckpt"])
    with pytest.raises(ConfigError, match="DATA.TRAIN_CROP_SIZE"):
        load_lta_cfg(AR_CPU, opts=["DATA.TRAIN_CROP_SIZE", "80"])


# ------------------------------------------------------------------------------------- official key layouts

@pytest.mark.slow
def test_full_size_recognition_task_has_the_official_layout_and_loads_the_release(tmp_path):
    module = RecognitionTask.from_config(load_lta_cfg(AR_PAPER))
    assert official_keys(module) == manifest_keys("recognition_ego4d_slowfast8x8")
    # The original weight-decay grouping ("bn" in the official name): 424 BatchNorm tensors, 216 others.
    module.optim_settings = dataclasses.replace(module.optim_settings, lr_policy="constant")
    groups = {group["weight_decay"]: len(group["params"]) for group in module.configure_optimizers().param_groups}
    assert groups == {0.0: 424, 1e-4: 216}

    release = tmp_path / "recognition_ego4d_slowfast8x8.ckpt"
    state_dict = random_state_dict("recognition_ego4d_slowfast8x8")
    save_lightning_checkpoint(release, state_dict)
    module.load_weights(release)
    exported = module.official_state_dict()
    assert all(torch.equal(exported[key], value) for key, value in state_dict.items())

    lta = LongTermAnticipationTask.from_config(load_lta_cfg(LTA_PAPER))
    lta.init_backbone_from_recognition(release)  # LTA stage I: the trunk, head keys skipped
    stem = lta.official_state_dict()["model.backbone.s1.pathway0_stem.conv.weight"]
    assert torch.equal(stem, state_dict["model.s1.pathway0_stem.conv.weight"])


@pytest.mark.slow
def test_full_size_lta_task_has_the_official_layout_and_loads_the_release(tmp_path):
    module = LongTermAnticipationTask.from_config(load_lta_cfg(LTA_PAPER))
    assert official_keys(module) == manifest_keys("lta_slowfast_trf")
    assert sum(p.numel() for p in module.parameters()) == load_manifest("lta_slowfast_trf")["num_params"]
    release = tmp_path / "lta_slowfast_trf.ckpt"
    state_dict = random_state_dict("lta_slowfast_trf")
    save_lightning_checkpoint(release, state_dict)
    module.load_weights(release)
    exported = module.official_state_dict()
    assert all(torch.equal(exported[key], value) for key, value in state_dict.items())


def test_checkpoint_hooks_write_official_names_and_read_them_back(tmp_path):
    cfg = load_lta_cfg(AR_CPU)
    module, other = RecognitionTask.from_config(cfg), RecognitionTask.from_config(cfg)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert "model.s2.pathway1_res0.branch2.a_bn.running_mean" in checkpoint["state_dict"]
    assert not any(".blocks." in key for key in checkpoint["state_dict"])
    other.on_load_checkpoint(checkpoint)
    other.load_state_dict(checkpoint["state_dict"], strict=True)
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), other.state_dict().values()))

    path = module.export_official(tmp_path / "ar.ckpt", epoch=3, global_step=12, hyper_parameters={"cfg": cfg},
                                  monitor="val_top1_noun_err", mode="min", best_model_score=80.0)
    container = load_file(path)
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "hyper_parameters",
            "callbacks"} <= set(container)
    assert container["epoch"] == 3 and container["hyper_parameters"]["cfg"].DATA.TASK == "classification"
    broken = dict(container["state_dict"])
    broken.pop("model.head.projections.1.bias")
    save_lightning_checkpoint(tmp_path / "broken.ckpt", broken)
    with pytest.raises(ValueError, match="head.projections.1.bias"):
        other.load_weights(tmp_path / "broken.ckpt")


def test_lta_sampling_is_seeded_per_window_and_batch_independent():
    logits = torch.randn(3, 20, 11)
    keys = ["c_1", "c_2", "d_7"]
    together = sample_sequences(logits, keys, 5, seed=0)
    alone = torch.cat([sample_sequences(logits[i:i + 1], keys[i:i + 1], 5, seed=0) for i in range(3)])
    assert together.shape == (3, 5, 20) and torch.equal(together, alone)
    assert not torch.equal(together, sample_sequences(logits, keys, 5, seed=1))
    assert torch.equal(sample_sequences(logits, keys, 1, seed=0)[:, 0], logits.argmax(-1))


# ----------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def ar_run(data_dir, tmp_path_factory):
    """AR trained for two batches with the CPU config, through the local launcher."""
    work = tmp_path_factory.mktemp("ar_run")
    output = work / "ar"
    code, log = run(["bash", str(REPO_ROOT / "scripts" / "ego4d_recognition_local.sh"), "--cfg", AR_CPU,
                     "--data_dir", str(data_dir), "--output_dir", str(output), *QUICK, "TEST.BATCH_SIZE", "13"],
                    cwd=work, env={"PYTHON": sys.executable})
    assert code == 0, log
    return output, log


@pytest.mark.slow
def test_ar_trains_exports_the_official_container_and_evaluates_it_again(ar_run, data_dir, tmp_path):
    output, log = ar_run
    exported = output / "recognition_ego4d_slowfast8x8.ckpt"
    assert f"exported: {exported}" in log and "starts from random weights" in log
    container = load_file(exported)
    tiny = RecognitionTask.from_config(load_lta_cfg(AR_CPU))
    assert list(container["state_dict"]) == list(tiny.official_state_dict())
    assert container["pytorch-lightning_version"] == "1.6.4" and container["global_step"] == 2
    assert (output / "config.yaml").is_file() and (output / "versions.json").is_file()
    trained = json.loads((output / "metrics_val.json").read_text())
    assert 0.0 <= trained["top1_verb_acc"] <= 1.0 and trained["top1_noun_err"] == pytest.approx(
        100 * (1 - trained["top1_noun_acc"]))

    code, log = run_lta("--cfg", AR_CPU, "--eval", "--data_dir", data_dir, "--output_dir", tmp_path / "eval",
                        "TEST.BATCH_SIZE", "13", "CHECKPOINT_FILE_PATH", exported, cwd=tmp_path)
    assert code == 0, log
    assert json.loads((tmp_path / "eval" / "metrics_val.json").read_text()) == pytest.approx(trained)


@pytest.mark.slow
def test_ar_resume_continues_from_a_checkpoint(ar_run, data_dir, tmp_path):
    output = tmp_path / "resumed"
    checkpoint = ar_run[0] / "checkpoints" / "last.ckpt"
    code, log = run_lta("--cfg", AR_CPU, "--resume", checkpoint, "--data_dir", data_dir, "--output_dir", output,
                        *QUICK, "SOLVER.MAX_EPOCH", "2", "TEST.BATCH_SIZE", "13", "TRAIN.LIMIT_VAL_BATCHES", "1",
                        cwd=tmp_path)
    assert code == 0, log
    assert f"resuming from {checkpoint}" in log
    # Epoch 1 only: 2 more steps on top of the 2 restored (a fresh run would have saved epoch=0-step=2 too).
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert load_file(output / "checkpoints" / "last.ckpt")["global_step"] == 4


@pytest.mark.slow
def test_lta_trains_from_the_ar_trunk_and_submits_a_valid_file(ar_run, data_dir, tmp_path):
    ar_export = ar_run[0] / "recognition_ego4d_slowfast8x8.ckpt"
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    train_dir.mkdir()
    eval_dir.mkdir()
    code, log = run_lta("--cfg", LTA_CPU, "--data_dir", data_dir, "--output_dir", tmp_path / "lta",
                        "DATA.CHECKPOINT_MODULE_FILE_PATH", ar_export, *QUICK, "TRAIN.BATCH_SIZE", "2", cwd=train_dir)
    assert code == 0, log
    assert "initialised from the recognition trunk" in log
    metrics = json.loads((tmp_path / "lta" / "metrics_val.json").read_text())
    assert {"0_ED_19", "1_ED_19", "action_ED_19", "0_AUED", "1_AUED", "action_AUED"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("0_ED_19", "1_ED_19", "action_ED_19"))
    submission = train_dir / "submit_lta.json"
    annotations = data_dir / "lta" / "annotations" / "fho_lta_test_unannotated.json"
    code, out = run([sys.executable, "-m", "egot2.submission", "--task", "lta", str(submission), "--annotations",
                     str(annotations), "--num_verbs", "115", "--num_nouns", "478"], cwd=tmp_path)
    assert code == 0 and "valid" in out, out
    windows = json.loads(submission.read_text())
    assert len(windows) == 2 and all(len(w["verb"]) == 5 and len(w["verb"][0]) == 20 for w in windows.values())

    exported = tmp_path / "lta" / "lta_slowfast_trf.ckpt"
    assert list(load_file(exported)["state_dict"])[0] == "model.backbone.s1.pathway0_stem.conv.weight"
    code, log = run_lta("--cfg", LTA_CPU, "--submit", "--data_dir", data_dir, "--output_dir", tmp_path / "lta_eval",
                        "CHECKPOINT_FILE_PATH", exported, cwd=eval_dir)
    assert code == 0, log
    # Same weights, eval mode, per-window seeded sampling: the same file, and the same val metrics.
    assert json.loads((eval_dir / "submit_lta.json").read_text()) == windows
    assert json.loads((tmp_path / "lta_eval" / "metrics_val.json").read_text()) == pytest.approx(metrics)


@pytest.mark.slow
def test_fast_dev_run_without_the_recognition_checkpoint_warns_and_writes_nothing(data_dir, tmp_path):
    code, log = run_lta("--cfg", LTA_CPU, "--fast_dev_run", "--data_dir", data_dir, "--output_dir", tmp_path / "o",
                        "DATA.CHECKPOINT_MODULE_FILE_PATH", tmp_path / "missing.ckpt", "TRAIN.BATCH_SIZE", "2",
                        cwd=tmp_path)
    assert code == 0, log
    assert "no such file; the LTA clip backbone starts from random weights" in log
    assert "no submission written" in log and not (tmp_path / "submit_lta.json").exists()
    assert not (tmp_path / "o" / "lta_slowfast_trf.ckpt").exists()


def test_bad_input_gives_a_clear_error_and_exit_status(data_dir, tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(RUN_LTA.parent))
    try:
        import run_lta  # noqa: PLC0415
    finally:
        sys.path.remove(str(RUN_LTA.parent))
    monkeypatch.chdir(tmp_path)
    output = ["--output_dir", str(tmp_path / "o")]
    assert run_lta.main(["--cfg", AR_CPU, "--eval", "--data_dir", str(data_dir), *output]) == 2
    assert "CHECKPOINT_FILE_PATH is empty" in capsys.readouterr().err
    assert run_lta.main(["--cfg", AR_CPU, *output, "SOLVER.BASE_LRR", "0.1"]) == 2
    assert "unknown config key SOLVER.BASE_LRR" in capsys.readouterr().err
    assert run_lta.main(["--cfg", AR_CPU, "--data_dir", str(tmp_path / "nowhere"), *output]) == 2
    assert "fho_lta_val.json: annotation file not found" in capsys.readouterr().err
    missing = ["CHECKPOINT_FILE_PATH", str(tmp_path / "none.ckpt")]
    assert run_lta.main(["--cfg", LTA_CPU, "--eval", "--data_dir", str(data_dir), *output, *missing]) == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- launchers

def fake_tools(directory: Path, tools) -> str:
    """A PATH holding only links to ``tools`` (so that no real sbatch can be found)."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        os.symlink(shutil.which(tool), directory / tool)
    return str(directory)


@pytest.mark.parametrize("launcher, cfg, gpus", [("ego4d_recognition.sh", AR_PAPER, "8"),
                                                 ("ego4d_forecasting.sh", LTA_PAPER, "1")])
def test_slurm_launchers_submit_with_sbatch(tmp_path, launcher, cfg, gpus):
    bin_dir = Path(fake_tools(tmp_path / "bin", ["dirname", "mkdir", "basename"]))
    record = tmp_path / "sbatch_args"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" > {record}\necho "Submitted batch job 7"\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": str(bin_dir), "OUTPUT_ROOT": str(tmp_path / "runs"), "NODES": "2", "PARTITION": "learnfair",
           "SBATCH_EXTRA": "--account=ego"}
    code, out = run([shutil.which("bash"), str(REPO_ROOT / "scripts" / launcher), "job1", cfg, "SOLVER.BASE_LR",
                     "0.01", "OUTPUT_DIR", "ignored because it comes after"], cwd=tmp_path, env=env)
    assert code == 0, out
    job_file = tmp_path / "runs" / "job1" / "slurm_job.sh"
    assert record.read_text().split() == ["--account=ego", str(job_file)]
    job = job_file.read_text()
    assert "#SBATCH --nodes=2" in job and f"#SBATCH --gpus-per-node={gpus}" in job
    assert "#SBATCH --partition=learnfair" in job and f"cd {REPO_ROOT}" in job
    assert (f"srun python scripts/lta/run_lta.py --cfg {cfg} NUM_SHARDS 2 NUM_GPUS {gpus} OUTPUT_DIR "
            f"{tmp_path / 'runs' / 'job1'} SOLVER.BASE_LR 0.01 OUTPUT_DIR ignored\\ because") in job


@pytest.mark.parametrize("launcher, local", [("ego4d_recognition.sh", "bash scripts/ego4d_recognition_local.sh"),
                                             ("ego4d_forecasting.sh", "python scripts/lta/run_lta.py")])
def test_slurm_launchers_without_sbatch_name_the_local_alternative(tmp_path, launcher, local):
    env = {"PATH": fake_tools(tmp_path / "bin", ["dirname", "mkdir", "basename"])}
    code, out = run([shutil.which("bash"), str(REPO_ROOT / "scripts" / launcher), "job1", LTA_CPU,
                     "SOLVER.MAX_EPOCH", "3"], cwd=tmp_path, env=env)
    assert code == 1
    assert "sbatch not found" in out and f"{local} --cfg {LTA_CPU} SOLVER.MAX_EPOCH 3" in out
    code, out = run([shutil.which("bash"), str(REPO_ROOT / "scripts" / launcher), "job1"], cwd=tmp_path, env=env)
    assert code == 2 and "usage:" in out
    code, out = run([shutil.which("bash"), str(REPO_ROOT / "scripts" / launcher), "job1", "nope.yaml"],
                    cwd=tmp_path, env=env)
    assert code == 2 and "config file not found: nope.yaml" in out


def test_local_launcher_forwards_flags_and_overrides(tmp_path):
    record = tmp_path / "argv"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake_python.chmod(0o755)
    code, out = run(["bash", str(REPO_ROOT / "scripts" / "ego4d_recognition_local.sh"), "--fast_dev_run",
                     "SOLVER.BASE_LR", "0.5"], cwd=tmp_path, env={"PYTHON": str(fake_python)})
    assert code == 0, out
    assert record.read_text().split("\n")[:-1] == [str(RUN_LTA), "--cfg", AR_PAPER, "--fast_dev_run",
                                                   "SOLVER.BASE_LR", "0.5"]
