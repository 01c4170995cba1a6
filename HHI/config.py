"""Config sections of the HHI (social) tasks, added to ``egot2.config.get_cfg()`` by the scripts.

* :func:`add_hhi_config` -- ``HHI.*``: what LAM, TTM and ASD share (model name, face size, label mode, stage-I
  checkpoints, translator sizes).
* :func:`add_lam_config` / :func:`add_ttm_config` -- ``LAM.*`` / ``TTM.*``: data paths, strides, class weights and the
  task's switches. Each also adds ``HHI`` when missing.
* :func:`lam_run_defaults` / :func:`ttm_run_defaults` -- the original scripts' values for the shared base keys
  (Adam 5e-4, 40 epochs, batch 64, val_mAP checkpointing, ...). They change existing defaults only, so they belong
  to a single-task run; pass them as extensions after the ``add_*`` functions.

Path keys left empty mean "the prepared layout under the data root" (``--data_dir`` > ``DATA.ROOT`` > ``$EGO4D_DATA``
> ``data/``); a non-empty path overrides it and, when relative, is taken from the repository root.
"""
from __future__ import annotations

from egot2.config import CfgNode, register_validator

__all__ = [
    "add_hhi_config",
    "add_lam_config",
    "add_ttm_config",
    "lam_run_defaults",
    "ttm_run_defaults",
]

LABEL_MODES = ("official", "is_at_me")


# ---------------------------------------------------------------------------------------------------------------
# Shared social keys
# ---------------------------------------------------------------------------------------------------------------


def add_hhi_config(cfg: CfgNode) -> CfgNode:
    """Add the ``HHI`` section (no-op when present). Returns ``cfg``."""
    if "HHI" in cfg:
        return cfg
    cfg.HHI = CfgNode()
    # Network, by registry name (--model): "BaselineLSTM" for LAM/TTM stage I, translator names for EgoT2-s.
    cfg.HHI.MODEL = ""
    # Side of the face crops fed to the frame encoders (224 official; smaller values make CPU runs practical).
    cfg.HHI.FACE_SIZE = 224
    # Label construction: "is_at_me" (default: LAM/TTM positives need is_at_me, the fix of social-interactions
    # issue #24) or "official" (is_at_me ignored, as the released checkpoints and the published numbers).
    cfg.HHI.LABEL_MODE = "is_at_me"
    # Stage-I initialisation of the trained network (--checkpoint): an official {epoch, state_dict, mAP} file,
    # loaded strictly. "" = random initialisation.
    cfg.HHI.INIT_CHECKPOINT = ""
    # Frozen stage-I models used by the translators (--lam_checkpoint, --ttm_checkpoint, --asd_checkpoint).
    cfg.HHI.LAM_CHECKPOINT = "pretrained_models/ts_lam.pth"
    cfg.HHI.TTM_CHECKPOINT = "pretrained_models/ts_ttm.pth"
    cfg.HHI.ASD_CHECKPOINT = "pretrained_models/ts_asd.pth"
    # Train the task's own stage-I backbone inside a translator instead of freezing it (--nofreeze).
    cfg.HHI.NOFREEZE = False
    # Derive ASD inputs (TalkNet crops + MFCC) from the same samples for 3-task translators (--two_loader).
    cfg.HHI.TWO_LOADER = False
    # The original --rank flag; kept for compatibility, ranks come from the launcher.
    cfg.HHI.RANK = 0
    # Task-translator sizes (--num_layers, --num_heads, --hidden_dim, --hidden_dim2, --dropout).
    cfg.HHI.TRANSLATOR = CfgNode()
    # Transformer encoder layers.
    cfg.HHI.TRANSLATOR.NUM_LAYERS = 3
    # Attention heads.
    cfg.HHI.TRANSLATOR.NUM_HEADS = 4
    # Translator width d.
    cfg.HHI.TRANSLATOR.HIDDEN_DIM = 256
    # Second hidden width (MLP probes, late fusion).
    cfg.HHI.TRANSLATOR.HIDDEN_DIM2 = 512
    # Transformer dropout.
    cfg.HHI.TRANSLATOR.DROPOUT = 0.1
    # Keep the translators' frozen backbones in train mode as the original did (--train_mode_backbones): BatchNorm
    # statistics drift and TalkNet's dropout is active during stage II (spec §7.4). Only to reproduce released numbers.
    cfg.HHI.TRAIN_MODE_BACKBONES = False
    # Token cache of the translators' frozen backbones (--cache_features DIR; egot2.features), built on first use per
    # split and backbone and rebuilt when a backbone or the feature settings change. "" = run the backbones every step.
    cfg.HHI.CACHE_FEATURES = ""
    # ASD frames per TTM chunk in the paired inputs of the 3-task translators (--asd_max_frames): the first N frames
    # with a box; 0 = all of them (the original). TalkNet is expensive on a CPU, so CPU runs cut it.
    cfg.HHI.ASD_MAX_FRAMES = 0
    return cfg


@register_validator(section="HHI")
def _check_hhi(cfg: CfgNode):
    hhi = cfg.HHI
    problems = []
    if hhi.LABEL_MODE not in LABEL_MODES:
        problems.append(("HHI.LABEL_MODE", f"must be one of {list(LABEL_MODES)}"))
    if not isinstance(hhi.FACE_SIZE, int) or hhi.FACE_SIZE < 16:
        problems.append(("HHI.FACE_SIZE", "must be an integer >= 16"))
    if not 0.0 <= hhi.TRANSLATOR.DROPOUT < 1.0:
        problems.append(("HHI.TRANSLATOR.DROPOUT", "must be in [0, 1)"))
    if not isinstance(hhi.ASD_MAX_FRAMES, int) or hhi.ASD_MAX_FRAMES < 0:
        problems.append(("HHI.ASD_MAX_FRAMES", "must be an integer >= 0 (0 = every frame)"))
    for key in ("NUM_LAYERS", "NUM_HEADS", "HIDDEN_DIM", "HIDDEN_DIM2"):
        if not isinstance(hhi.TRANSLATOR[key], int) or hhi.TRANSLATOR[key] < 1:
            problems.append((f"HHI.TRANSLATOR.{key}", "must be a positive integer"))
    return problems


def _class_weight_problems(key: str, weights) -> list:
    if len(weights) != 2 or any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
        return [(key, "must be two non-negative numbers (class 0, class 1), not both 0")]
    return []


# ---------------------------------------------------------------------------------------------------------------
# LAM
# ---------------------------------------------------------------------------------------------------------------


def add_lam_config(cfg: CfgNode) -> CfgNode:
    """Add the ``LAM`` section (and ``HHI``). Returns ``cfg``."""
    add_hhi_config(cfg)
    if "LAM" in cfg:
        return cfg
    cfg.LAM = CfgNode()
    # Frame folder <clip_uid>/img_%05d.jpg (--source_path); "" = <data root>/lam/video_imgs.
    cfg.LAM.SOURCE_PATH = ""
    # Face tracks <clip_uid>/<track_id>.json (--json_path); "" = <data root>/lam/json_original.
    cfg.LAM.JSON_PATH = ""
    # Ground-truth segments <clip_uid>.json (--gt_path); "" = <data root>/lam/result_LAM.
    cfg.LAM.GT_PATH = ""
    # Challenge test release (--test_path); "" = <data root>/lam/videos_challenge.
    cfg.LAM.TEST_PATH = ""
    # Split lists (--train_file, --val_file); "" = <data root>/lam/split/{train,val}.list.
    cfg.LAM.TRAIN_FILE = ""
    cfg.LAM.VAL_FILE = ""
    # Key frame every n-th frame of a track (--train_stride, --val_stride, --test_stride).
    cfg.LAM.TRAIN_STRIDE = 13
    cfg.LAM.VAL_STRIDE = 13
    cfg.LAM.TEST_STRIDE = 1
    # Cross-entropy class weights (not looking, looking) (--weights).
    cfg.LAM.CLASS_WEIGHTS = [0.136, 0.864]
    return cfg


@register_validator(section="LAM")
def _check_lam(cfg: CfgNode):
    problems = _class_weight_problems("LAM.CLASS_WEIGHTS", cfg.LAM.CLASS_WEIGHTS)
    for key in ("TRAIN_STRIDE", "VAL_STRIDE", "TEST_STRIDE"):
        if not isinstance(cfg.LAM[key], int) or cfg.LAM[key] < 1:
            problems.append((f"LAM.{key}", "must be a positive integer"))
    return problems


def lam_run_defaults(cfg: CfgNode) -> CfgNode:
    """The original LAM run's values of the shared keys (spec §2.5). Returns ``cfg``."""
    cfg.SOLVER.OPTIMIZING_METHOD = "adam"
    cfg.SOLVER.BASE_LR = 5e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.BN.WEIGHT_DECAY = 0.0
    cfg.SOLVER.LR_POLICY = "constant"
    cfg.SOLVER.MAX_EPOCH = 40
    cfg.TRAIN.BATCH_SIZE = 64
    cfg.TEST.BATCH_SIZE = 64
    cfg.TRAIN.LOG_EVERY_N_STEPS = 10
    cfg.DATA_LOADER.NUM_WORKERS = 10
    cfg.DATA_LOADER.PIN_MEMORY = False
    cfg.DATA_LOADER.DROP_LAST = False
    cfg.CHECKPOINT.MONITOR = "val_mAP"
    cfg.CHECKPOINT.MODE = "max"
    cfg.CHECKPOINT.SAVE_TOP_K = 3
    cfg.CHECKPOINT.SAVE_LAST = True
    cfg.HHI.MODEL = "BaselineLSTM"
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# TTM
# ---------------------------------------------------------------------------------------------------------------


def add_ttm_config(cfg: CfgNode) -> CfgNode:
    """Add the ``TTM`` section (and ``HHI``). Returns ``cfg``."""
    add_hhi_config(cfg)
    if "TTM" in cfg:
        return cfg
    cfg.TTM = CfgNode()
    # Frame folder (--img_path); "" = <data root>/ttm/video_imgs.
    cfg.TTM.IMG_PATH = ""
    # Audio folder <clip_uid>.wav (--wave_path); "" = <data root>/ttm/wave.
    cfg.TTM.WAVE_PATH = ""
    # Segments <clip_uid>.json (--gt_path); "" = <data root>/ttm/result_TTM.
    cfg.TTM.GT_PATH = ""
    # Face tracks (--json_path); "" = <data root>/ttm/json_original.
    cfg.TTM.JSON_PATH = ""
    # Challenge test release (--test_data_path); "" = <data root>/ttm/final_test_data.
    cfg.TTM.TEST_DATA_PATH = ""
    # Test segment info (--seg_info); "" = <data root>/ttm/seg_info.json.
    cfg.TTM.SEG_INFO = ""
    # Split lists (--train_file, --val_file, --test_file; the test list is not used); "" = <data root>/ttm/split/.
    cfg.TTM.TRAIN_FILE = ""
    cfg.TTM.VAL_FILE = ""
    cfg.TTM.TEST_FILE = ""
    # The original's stride flags (--train_stride 3, --val_stride 1, --test_stride 1); no TTM loader uses them.
    cfg.TTM.TRAIN_STRIDE = 3
    cfg.TTM.VAL_STRIDE = 1
    cfg.TTM.TEST_STRIDE = 1
    # Frames per training batch of the frame-budget sampler (--batch_size).
    cfg.TTM.FRAME_BUDGET = 400
    # Training segments shorter than this many frames are dropped.
    cfg.TTM.MIN_TRAIN_LEN = 15
    # Chunk stride of long segments (chunks hold CHUNK_FRAMES + 1 frames).
    cfg.TTM.CHUNK_FRAMES = 150
    # Cross-entropy class weights (not to me, to me) (--weights).
    cfg.TTM.CLASS_WEIGHTS = [0.266, 0.734]
    # Audio shorter than this many samples: training batches are skipped, evaluation chunks zero-padded
    # (the audio encoder's STFT needs more than n_fft / 2 = 256 samples).
    cfg.TTM.MIN_AUDIO_SAMPLES = 400
    # Reproduce the original's truncated epochs (--legacy_epochs): the sampler reports int(N / FRAME_BUDGET)
    # batches and Lightning ends each epoch there (spec §3.5). Needed to reproduce the published numbers.
    cfg.TTM.LEGACY_EPOCHS = False
    # Reproduce the original metric's "start:end" keying (--legacy_metric_key, spec §3.6); default keys segments
    # by (clip, entry index).
    cfg.TTM.LEGACY_METRIC_KEY = False
    return cfg


@register_validator(section="TTM")
def _check_ttm(cfg: CfgNode):
    ttm = cfg.TTM
    problems = _class_weight_problems("TTM.CLASS_WEIGHTS", ttm.CLASS_WEIGHTS)
    for key in ("FRAME_BUDGET", "MIN_TRAIN_LEN", "CHUNK_FRAMES", "MIN_AUDIO_SAMPLES"):
        if not isinstance(ttm[key], int) or ttm[key] < 1:
            problems.append((f"TTM.{key}", "must be a positive integer"))
    return problems


def ttm_run_defaults(cfg: CfgNode) -> CfgNode:
    """The original TTM run's values of the shared keys (spec §3.5). Returns ``cfg``."""
    cfg.SOLVER.OPTIMIZING_METHOD = "adam"
    cfg.SOLVER.BASE_LR = 5e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.BN.WEIGHT_DECAY = 0.0
    cfg.SOLVER.LR_POLICY = "constant"
    cfg.SOLVER.MAX_EPOCH = 40
    cfg.TEST.BATCH_SIZE = 1
    cfg.TRAIN.LOG_EVERY_N_STEPS = 10
    cfg.DATA_LOADER.NUM_WORKERS = 10
    cfg.DATA_LOADER.PIN_MEMORY = False
    cfg.CHECKPOINT.MONITOR = "val_mAP"
    cfg.CHECKPOINT.MODE = "max"
    cfg.CHECKPOINT.SAVE_TOP_K = 3
    cfg.CHECKPOINT.SAVE_LAST = True
    cfg.HHI.MODEL = "BaselineLSTM"
    cfg.HHI.TRANSLATOR.NUM_LAYERS = 3
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# ASD (TalkNet stage I)
# ---------------------------------------------------------------------------------------------------------------

__all__ += ["add_asd_config", "asd_run_defaults"]


def add_asd_config(cfg: CfgNode) -> CfgNode:
    """Add the ``ASD`` section (and ``HHI``). Returns ``cfg``."""
    add_hhi_config(cfg)
    if "ASD" in cfg:
        return cfg
    cfg.ASD = CfgNode()
    # ASD folder holding ego4d/csv, ego4d/bbox, video_imgs, wave (--data_file_path); "" = <data root>/asd.
    cfg.ASD.DATA_PATH = ""
    # Split csv files; "" = <ASD folder>/ego4d/csv/active_speaker_{train,val}.csv.
    cfg.ASD.TRAIN_CSV = ""
    cfg.ASD.VAL_CSV = ""
    # Frames per training batch of the dynamic batches (--batch_size).
    cfg.ASD.FRAME_BUDGET = 1800
    # Cut every track chunk to its first MAX_FRAMES frames (--max_frames; for CPU runs); 0 = whole chunks.
    cfg.ASD.MAX_FRAMES = 0
    # Cross-entropy class weights (not speaking, speaking) of all three heads (--weights).
    cfg.ASD.CLASS_WEIGHTS = [1.0, 4.0]
    # Weight of the audio-only and visual-only losses: L = L_AV + w (L_A + L_V).
    cfg.ASD.AUX_LOSS_WEIGHT = 0.4
    # Training augmentation: one of none / flip / crop / rotate per track, and mixing another track's audio.
    cfg.ASD.VISUAL_AUG = True
    cfg.ASD.AUDIO_MIX = True
    # Reproduce the original's int16 cast of the mixed audio, which silences most mixed tracks
    # (--legacy_int16_mix, spec §10.1.7); default mixes in float.
    cfg.ASD.LEGACY_INT16_MIX = False
    # Initialise TalkNet and its heads from the AVA checkpoint (--init_from_ava, --checkpoint), strictly.
    cfg.ASD.INIT_FROM_AVA = False
    cfg.ASD.AVA_CHECKPOINT = "pretrained_models/pretrain_AVA.model"
    # Load the network from HHI.ASD_CHECKPOINT (--asd_checkpoint), freeze it and train only the heads (--finetune).
    cfg.ASD.FINETUNE = False
    # No learning-rate decay (--nodecay).
    cfg.ASD.NODECAY = False
    # Decay the learning rate every optimisation step instead of every epoch (--lr_decay_per_step), as EgoT2's
    # run_asd.py did (spec §4.5, §10.1.6; lr is about 6e-7 after 100 steps).
    cfg.ASD.LR_DECAY_PER_STEP = False
    # Run TalkNet's visual 3-D conv over all frames of a batch laid end to end, as the original (checkpoint-exact
    # numerics); False runs it per track.
    cfg.ASD.MIX_TRACKS = True
    # Dropout of TalkNet's attention layers.
    cfg.ASD.ATTENTION_DROPOUT = 0.1
    return cfg


@register_validator(section="ASD")
def _check_asd(cfg: CfgNode):
    asd = cfg.ASD
    problems = _class_weight_problems("ASD.CLASS_WEIGHTS", asd.CLASS_WEIGHTS)
    if not isinstance(asd.FRAME_BUDGET, int) or asd.FRAME_BUDGET < 1:
        problems.append(("ASD.FRAME_BUDGET", "must be a positive integer"))
    if not isinstance(asd.MAX_FRAMES, int) or asd.MAX_FRAMES < 0:
        problems.append(("ASD.MAX_FRAMES", "must be an integer >= 0 (0 = whole chunks)"))
    if asd.AUX_LOSS_WEIGHT < 0:
        problems.append(("ASD.AUX_LOSS_WEIGHT", "must be >= 0"))
    if not 0.0 <= asd.ATTENTION_DROPOUT < 1.0:
        problems.append(("ASD.ATTENTION_DROPOUT", "must be in [0, 1)"))
    if asd.INIT_FROM_AVA and not asd.AVA_CHECKPOINT:
        problems.append(("ASD.AVA_CHECKPOINT", "ASD.INIT_FROM_AVA needs a checkpoint path"))
    if asd.FINETUNE and not cfg.HHI.ASD_CHECKPOINT:
        problems.append(("HHI.ASD_CHECKPOINT", "ASD.FINETUNE needs the checkpoint to fine-tune from"))
    return problems


def asd_run_defaults(cfg: CfgNode) -> CfgNode:
    """The original ASD run's values of the shared keys (spec §4.5, §7.5). Returns ``cfg``.

    Adam 1e-4 without weight decay, learning rate x0.95 every epoch (the Ego4D TalkNet trainer; EgoT2 decayed every
    step, see ``ASD.LR_DECAY_PER_STEP``), 25 epochs, one track chunk per validation batch, checkpoints on val_acc.
    """
    cfg.SOLVER.OPTIMIZING_METHOD = "adam"
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.BN.WEIGHT_DECAY = 0.0
    cfg.SOLVER.LR_POLICY = "step_decay"
    cfg.SOLVER.LR_DECAY = 0.95
    cfg.SOLVER.STEP_SIZE = 1
    cfg.SOLVER.SCHEDULER_INTERVAL = "epoch"
    cfg.SOLVER.MAX_EPOCH = 25
    cfg.TEST.BATCH_SIZE = 1
    cfg.TRAIN.LOG_EVERY_N_STEPS = 10
    cfg.DATA_LOADER.NUM_WORKERS = 4
    cfg.DATA_LOADER.PIN_MEMORY = False
    cfg.CHECKPOINT.MONITOR = "val_acc"
    cfg.CHECKPOINT.MODE = "max"
    cfg.CHECKPOINT.SAVE_TOP_K = 3
    cfg.CHECKPOINT.SAVE_LAST = True
    cfg.HHI.MODEL = "talkNetModel"
    cfg.HHI.TRANSLATOR.NUM_LAYERS = 1
    return cfg

