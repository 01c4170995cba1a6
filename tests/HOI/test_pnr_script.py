"""PNR/OSCC configs, tasks (metrics, checkpoints, optimiser groups, devices) and scripts/pnr/train.py end to end."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from egot2.checkpoint import CheckpointMismatchError, load_file, save_lightning_checkpoint
from egot2.config import REPO_ROOT, ConfigError, default_argument_parser
from egot2.submission import annotation_expectations, validate_file
from HOI.config import load_pnr_cfg, pnr_cfg_from_args, pnr_num_frames, sync_pnr_aliases
from HOI.models.resnet3d import KeyframeLocalizationResNet, StateChangeClsResNet, head_grid_size
from HOI.tasks.state_change import (
    KEYFRAME_MONITOR,
    STATE_CHANGE_MONITOR,
    KeyframeLocalizationTask,
    StateChangeClassificationTask,
    build_state_change_loader,
    build_state_change_task,
    export_stage_one_checkpoint,
    load_stage_one_checkpoint,
    plan_devices,
)
from tests.manifests import manifest_keys, random_state_dict
from tests.twin import make_twin

SCRIPT = REPO_ROOT / "scripts" / "pnr" / "train.py"
PAPER = {"pnr": "configs/pnr/baseline/keyframe_bce.yaml", "oscc": "configs/pnr/baseline/statechangecls.yaml"}
EVAL = {"pnr": "configs/eval/pnr.yaml", "oscc": "configs/eval/oscc.yaml"}
TINY = {"pnr": "configs/pnr/cpu/keyframe_tiny.yaml", "oscc": "configs/pnr/cpu/statechangecls_tiny.yaml"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_model(cls=KeyframeLocalizationResNet, **kwargs):
    torch.manual_seed(0)
    return cls(width=4, crop_size=33, **kwargs)


# ------------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("short", ["pnr", "oscc"])
def test_paper_configs_have_the_paper_values(short):
    cfg = load_pnr_cfg(PAPER[short])
    assert (cfg.TRAIN.BATCH_SIZE, cfg.SOLVER.BASE_LR, cfg.SOLVER.OPTIMIZING_METHOD, cfg.SOLVER.MAX_EPOCH) == \
        (16, 1e-4, "adamw", 10)
    assert (cfg.DATA.CROP_SIZE, pnr_num_frames(cfg), cfg.NUM_GPUS, cfg.MISC.NUM_GPUS) == (225, 16, 2, 2)
    assert (cfg.SOLVER.WEIGHT_DECAY, cfg.BN.WEIGHT_DECAY) == (1e-4, 0.0)
    assert cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE
    if short == "pnr":
        assert cfg.OUTPUT_DIR == "logs/pnr/keyframe-bce-lrconstant"
        assert (cfg.SOLVER.LR_POLICY, cfg.MODEL.LOSS_FUNC, cfg.DATA_LOADER.IS_NO_STATE_CHANGE) == \
            ("constant", "bce", False)
    else:
        assert cfg.OUTPUT_DIR == "logs/oscc/state_change_classification_adamw"
        assert (cfg.SOLVER.LR_POLICY, cfg.DATA_LOADER.IS_NO_STATE_CHANGE, cfg.DATA_LOADER.DROP_LAST) == \
            ("cosine", True, True)


@pytest.mark.parametrize("short", ["pnr", "oscc"])
def test_eval_and_tiny_configs(short):
    evaluation = load_pnr_cfg(EVAL[short])
    assert not evaluation.TRAIN.ENABLE and evaluation.TEST.ENABLE
    assert evaluation.CHECKPOINT.FILE_PATH == f"pretrained_models/ts_{short}.pth"
    assert evaluation.MISC.CHECKPOINT_FILE_PATH == evaluation.CHECKPOINT.FILE_PATH
    tiny = load_pnr_cfg(TINY[short])
    assert tiny.NUM_GPUS == 0 and pnr_num_frames(tiny) == 16
    assert head_grid_size(tiny.DATA.CROP_SIZE) == head_grid_size(225) == 2  # the crop -> grid rule of the yaml
    assert tiny.DATA.TASK == load_pnr_cfg(PAPER[short]).DATA.TASK


def test_unknown_and_inconsistent_keys_are_named():
    with pytest.raises(ConfigError, match="DATA.VIDEO_DIR_PATHX"):
        load_pnr_cfg(PAPER["pnr"], opts=["DATA.VIDEO_DIR_PATHX", "x"])
    with pytest.raises(ConfigError, match="MODEL.MODEL_NAME.*StateChangeClsResNet"):
        load_pnr_cfg(PAPER["pnr"], opts=["DATA.TASK", "state_change_classification"])
    with pytest.raises(ConfigError, match="MISC.NUM_GPUS = 2 and NUM_GPUS = 0 disagree"):
        load_pnr_cfg(PAPER["pnr"], opts=["NUM_GPUS", 0])
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE.*split evenly"):
        load_pnr_cfg(PAPER["pnr"], opts=["TRAIN.BATCH_SIZE", 15])
    with pytest.raises(ConfigError, match="RESNET.NUM_GROUPS"):
        load_pnr_cfg(PAPER["pnr"], opts=["RESNET.NUM_GROUPS", 32])


def test_pnr_spellings_follow_the_base_keys_and_back():
    cfg = load_pnr_cfg(opts=["TRAIN.TRAIN_ENABLE", False, "MISC.FAST_DEV_RUN", True,
                             "MISC.CHECKPOINT_FILE_PATH", "a.pth"], freeze=False)
    assert (cfg.TRAIN.ENABLE, cfg.FAST_DEV_RUN, cfg.CHECKPOINT.FILE_PATH) == (False, True, "a.pth")
    assert sync_pnr_aliases(cfg) is cfg  # idempotent
    base_only = load_pnr_cfg(opts=["NUM_GPUS", 4, "OUTPUT_DIR", "logs/x"])
    assert (base_only.MISC.NUM_GPUS, base_only.MISC.OUTPUT_DIR, base_only.OUTPUT_DIR) == (4, "logs/x", "logs/x")


def test_run_flags_win_over_the_yaml(tmp_path):
    parser = default_argument_parser()
    args = parser.parse_args(["--cfg", PAPER["pnr"], "--output_dir", str(tmp_path), "--num_gpus", "0", "--eval",
                              "MISC.CHECKPOINT_FILE_PATH", "w.pth"])
    cfg = pnr_cfg_from_args(args)
    assert cfg.OUTPUT_DIR == str(tmp_path) and cfg.NUM_GPUS == 0 and cfg.MISC.NUM_GPUS == 0
    assert not cfg.TRAIN.ENABLE and cfg.TEST.ENABLE and cfg.CHECKPOINT.FILE_PATH == "w.pth"


# ------------------------------------------------------------------------------------------------ devices, loaders
def test_device_plan_falls_back_and_keeps_the_global_batch():
    cpu = plan_devices(2, 0, 16, 16)
    assert (cpu.num_gpus, cpu.accumulate, cpu.train_batch, cpu.test_batch) == (0, 2, 8, 8)
    assert "running on the CPU" in cpu.message and "global batch 16" in cpu.message
    one = plan_devices(2, 1, 16, 32)
    assert (one.num_gpus, one.accumulate, one.train_batch, one.test_batch) == (1, 2, 8, 16)
    assert plan_devices(2, 8, 16, 16) == plan_devices(2, 2, 16, 16)
    assert plan_devices(2, 2, 16, 16).message == "" and plan_devices(2, 2, 16, 16).accumulate == 1
    assert plan_devices(0, 4, 8, 8) == plan_devices(0, 0, 8, 8)
    assert plan_devices(4, 3, 16, 16).num_gpus == 2
    with pytest.raises(ValueError, match="does not split"):
        plan_devices(2, 2, 15, 16)


def test_train_loader_keeps_the_only_batch_of_a_small_split():
    data = list(range(5))
    assert len(build_state_change_loader(data, 8, train=True)) == 1
    assert len(build_state_change_loader(data, 2, train=True)) == 2
    assert len(build_state_change_loader(data, 2, train=False)) == 3


# ---------------------------------------------------------------------------------------------- tasks: metrics
def _window_records(logits_argmax, pnr, state, batch_key):
    logits = torch.zeros(len(pnr), 16)
    logits[torch.arange(len(pnr)), torch.tensor(logits_argmax)] = 1.0
    count = len(pnr)
    return {"unique_id": [f"w{i}" for i in range(count)], "keyframe_logits": logits,
            "pnr_frame": torch.tensor(pnr), "start_frame": torch.full((count,), 300),
            "end_frame": torch.full((count,), 540), "start_sec": torch.full((count,), 10.0, dtype=torch.float64),
            "end_sec": torch.full((count,), 18.0, dtype=torch.float64), "state": torch.tensor(state),
            "batch_key": torch.tensor(batch_key)}


def test_keyframe_metrics_on_a_hand_example():
    # fps = 241 / 8 = 30.125. w0: bin 5 -> 75 frames vs 100 -> 0.830 s; w1: bin 8 -> 120 vs 120 -> 0;
    # w2: bin 0 -> 0 vs 60 -> 1.992 s; w3 has no state change and does not count.
    records = _window_records([5, 8, 0, 3], [400, 420, 360, -1], [1, 1, 1, 0], [0, 0, 1, 1])
    task = KeyframeLocalizationTask(_tiny_model())
    values = task.compute_metrics("val", records)
    errors = np.array([25, 0, 60]) / 30.125
    assert values["keyframe_error"] == pytest.approx(errors.mean())
    assert values["keyframe_error_batch_mean"] == pytest.approx((errors[:2].mean() + errors[2]) / 2)
    assert values["keyframe_center_error"] == pytest.approx(np.array([20, 0, 60]).mean() / 30.125)
    assert values["num_positive_clips"] == 3


def test_state_change_metric_and_loss_choices():
    task = StateChangeClassificationTask(_tiny_model(StateChangeClsResNet, num_frames=16))
    records = {"state_logits": torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]]), "state": torch.tensor([0, 1, 0])}
    assert task.compute_metrics("val", records)["state_change_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="NO_TEMP_POOL"):
        StateChangeClassificationTask(_tiny_model(StateChangeClsResNet, no_temp_pool=True))
    with pytest.raises(ValueError, match="needs a KeyframeLocalizationResNet"):
        KeyframeLocalizationTask(_tiny_model(StateChangeClsResNet))
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    label = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    bce = KeyframeLocalizationTask(_tiny_model(), loss_func="bce")
    assert bce.keyframe_loss(logits, label, torch.tensor([1, 0])) == pytest.approx(
        torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), label).item(), rel=1e-5)
    ce = KeyframeLocalizationTask(_tiny_model(), loss_func="cross_entropy")
    expected = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item() / 2  # negative counts 0
    assert ce.keyframe_loss(logits, label, torch.tensor([1, 0])) == pytest.approx(expected, rel=1e-5)


def test_predictions_are_submission_values():
    task = KeyframeLocalizationTask(_tiny_model()).eval()
    frames = torch.rand(2, 3, 16, 33, 33) * 255
    batch = {"frames": frames, "unique_id": ["a", "b"], "start_frame": torch.tensor([300, 0]),
             "end_frame": torch.tensor([540, 160])}
    with torch.no_grad():
        out = task.predict_batch(batch)
        expected = task.model(frames).argmax(dim=1).double() * torch.tensor([240.0, 160.0]) / 16
    assert out["unique_id"] == ["a", "b"] and torch.allclose(out["pnr_frame_offset"], expected)
    oscc = StateChangeClassificationTask(_tiny_model(StateChangeClsResNet), activation="softmax").eval()
    with torch.no_grad():
        out = oscc.predict_batch(batch)
    assert out["state_change"].dtype == torch.bool
    assert torch.equal(out["state_change"], out["state_scores"].argmax(dim=1) == 1)
    assert torch.allclose(out["state_scores"].sum(dim=1), torch.ones(2))


# ----------------------------------------------------------------------------------- tasks: checkpoints, optimiser
def test_lightning_checkpoints_carry_official_keys_and_load_back():
    task = KeyframeLocalizationTask(_tiny_model())
    native = task.state_dict()
    checkpoint = {"state_dict": dict(native)}
    task.on_save_checkpoint(checkpoint)
    assert list(checkpoint["state_dict"]) == [key for key, _, _ in manifest_keys("ts_pnr")]
    task.on_load_checkpoint(checkpoint)
    assert list(checkpoint["state_dict"]) == list(native)
    task.load_state_dict(checkpoint["state_dict"], strict=True)


def test_optimiser_groups_batchnorm_by_official_names():
    cfg = load_pnr_cfg(TINY["pnr"])
    task = build_state_change_task(cfg)
    optimizer = task.configure_optimizers()  # constant LR: a bare optimiser
    assert isinstance(optimizer, torch.optim.AdamW)
    decays = sorted((group["weight_decay"], len(group["params"])) for group in optimizer.param_groups)
    # The released file's optimiser: 106 BatchNorm parameters without decay, 55 others with 1e-4.
    assert decays == [(0.0, 106), (1e-4, 55)]


@pytest.fixture(scope="module")
def full_pnr_model():
    torch.manual_seed(0)
    return KeyframeLocalizationResNet()


def test_official_files_load_strictly_and_exports_match_the_manifest(tmp_path, full_pnr_model):
    official = random_state_dict("ts_pnr")
    save_lightning_checkpoint(tmp_path / "ts_pnr.ckpt", official, epoch=3, global_step=30)
    info = load_stage_one_checkpoint(full_pnr_model, tmp_path / "ts_pnr.ckpt")
    assert info["epoch"] == 3
    assert torch.equal(full_pnr_model.head.projection.weight, official["model.Keyframe_localisation_head.projection"
                                                                          ".weight"])
    cfg = load_pnr_cfg(PAPER["pnr"])
    path = export_stage_one_checkpoint(full_pnr_model, tmp_path / "out" / "ts_pnr.pth", epoch=3, global_step=30,
                                       cfg=cfg, monitor=KEYFRAME_MONITOR, best_model_score=-0.5)
    exported = load_file(path)
    assert [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in exported["state_dict"].items()] == \
        manifest_keys("ts_pnr")
    assert (exported["epoch"], exported["global_step"], exported["pytorch-lightning_version"]) == (3, 30, "1.6.4")
    assert exported["hyper_parameters"]["cfg"].DATA.TASK == "keyframe_localization"
    assert KEYFRAME_MONITOR in next(iter(exported["callbacks"]))
    save_lightning_checkpoint(tmp_path / "ts_oscc.ckpt", random_state_dict("ts_oscc"))
    with pytest.raises(CheckpointMismatchError, match="projection"):
        load_stage_one_checkpoint(full_pnr_model, tmp_path / "ts_oscc.ckpt")


def test_resuming_from_an_official_file_through_lightning_hooks(tmp_path, full_pnr_model):
    task = KeyframeLocalizationTask(full_pnr_model)
    checkpoint = {"state_dict": random_state_dict("ts_pnr", seed=1)}
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"], strict=True)


# --------------------------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("pnr", "oscc"))[1]


SMALL = ["DATA.CROP_SIZE", "33", "RESNET.WIDTH_PER_GROUP", "4", "DATA_LOADER.NUM_WORKERS", "0",
         "TRAIN.BATCH_SIZE", "4", "TRAIN.LIMIT_TRAIN_BATCHES", "2", "SOLVER.MAX_EPOCH", "1"]


def _run(args, cwd, data_dir):
    env = dict(os.environ, EGO4D_DATA=str(data_dir), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("short", ["pnr", "oscc"])
def test_script_trains_exports_evaluates_and_submits(tmp_path, twin, short):
    run_dir = tmp_path / "run"
    trained = _run(["--cfg", TINY[short], "--output_dir", str(run_dir), *SMALL, "TEST.ENABLE", "True",
                    "TEST.SUBMIT", "True"], tmp_path, twin)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "versions.json").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    exported = run_dir / f"ts_{short}.pth"
    assert f"exported the best model to {exported}" in trained.stdout
    container = load_file(exported)
    assert {"state_dict", "epoch", "global_step", "pytorch-lightning_version"} <= set(container)
    assert list(container["state_dict"]) == [key for key, _, _ in manifest_keys(f"ts_{short}")]
    metric = KEYFRAME_MONITOR.removesuffix("_neg") if short == "pnr" else STATE_CHANGE_MONITOR
    assert f"{metric}: " in trained.stdout
    submission = tmp_path / f"submit_{short}.json"
    test_ann = twin / "fho" / "annotations" / "fho_oscc-pnr_test_unannotated.json"
    assert validate_file(short, submission, **annotation_expectations(short, test_ann)) == []
    assert len(json.loads(submission.read_text())) == len(json.loads(test_ann.read_text())["clips"])

    if short == "oscc":
        return
    # Evaluation only, from the exported file, into a separate submission file.
    other = tmp_path / "again.json"
    evaluated = _run(["--cfg", TINY[short], "--output_dir", str(tmp_path / "eval"), "--submit", *SMALL,
                      "MISC.CHECKPOINT_FILE_PATH", str(exported), "TEST.SUBMISSION_FILE", str(other)], tmp_path, twin)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"{metric}: " in evaluated.stdout
    assert json.loads(other.read_text()) == json.loads(submission.read_text())


@pytest.fixture(scope="module")
def script_main():
    spec = importlib.util.spec_from_file_location("pnr_train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_script_reports_bad_input_without_a_traceback(tmp_path, twin, script_main, capsys, monkeypatch):
    monkeypatch.setenv("EGO4D_DATA", str(twin))
    assert script_main(["--cfg", TINY["pnr"], "--output_dir", str(tmp_path / "a"), "--eval"]) == 2
    assert "MISC.CHECKPOINT_FILE_PATH" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert script_main(["--cfg", TINY["pnr"], "--output_dir", str(tmp_path / "b"), "--data_dir", str(empty),
                        *SMALL]) == 2
    assert "fho_oscc-pnr_train.json" in capsys.readouterr().err
    assert script_main(["--cfg", TINY["pnr"], "MODEL.NO_SUCH_KEY", "1"]) == 2
    assert "MODEL.NO_SUCH_KEY" in capsys.readouterr().err
    assert script_main(["--cfg", TINY["pnr"], "--output_dir", str(tmp_path / "c"), "--eval",
                        "MISC.CHECKPOINT_FILE_PATH", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in capsys.readouterr().err
