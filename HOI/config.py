"""Config sections of the HOI tasks, added to the base tree of :mod:`egot2.config`.

Two original trees live on as two extension functions (a run applies one of them):

* :func:`add_pnr_config` -- the PNR tree (``configs/pnr/defaults.py`` of the original): PNR keyframe localisation and
  OSCC state-change classification (``scripts/pnr/train.py``);
* ``add_lta_config`` -- the LTA tree: action recognition and long-term anticipation (``scripts/lta/run_lta.py``).

Both share :func:`add_resnet_config` (the PySlowFast ``RESNET`` node, one definition). Shared training keys
(``TRAIN``, ``TEST``, ``SOLVER``, ``BN``, ``DATA_LOADER``, ``NUM_GPUS``, ``OUTPUT_DIR``, ...) are base keys.

The PNR tree spelled a few run settings differently (``MISC.NUM_GPUS``, ``MISC.OUTPUT_DIR`` + ``MISC.LOG_DIR``,
``MISC.CHECKPOINT_FILE_PATH``, ``TRAIN.TRAIN_ENABLE``, ...). Those names are kept so the original YAMLs and users'
overrides carry over; :func:`sync_pnr_aliases` turns them into the base keys the engine reads (see
:data:`PNR_ALIASES`), and :func:`load_pnr_cfg` / :func:`pnr_cfg_from_args` assemble a PNR-tree config with that step.
Relative data paths (``DATA.ANN_DIR``, ``DATA.CLIPS_SAVE_PATH``, ...) are relative to the data root
(:func:`egot2.config.resolve_data_root`); other relative paths are relative to the repository root.
"""
from __future__ import annotations

import argparse
import os
from pathlib import PurePosixPath
from typing import Optional, Sequence, Union

from egot2.config import (
    CfgNode,
    ConfigError,
    cfg_from_args,
    get_cfg,
    merge_from_file,
    merge_from_list,
    register_validator,
    validate_cfg,
)

__all__ = [
    "PNR_TASKS",
    "PNR_MODEL_NAMES",
    "PNR_ALIASES",
    "add_resnet_config",
    "add_pnr_config",
    "sync_pnr_aliases",
    "load_pnr_cfg",
    "pnr_cfg_from_args",
    "pnr_num_frames",
]

#: ``DATA.TASK`` values of the PNR tree -> the network ``MODEL.MODEL_NAME`` they train.
PNR_TASKS = {
    "keyframe_localization": "KeyframeLocalizationResNet",
    "state_change_classification": "StateChangeClsResNet",
}
PNR_MODEL_NAMES = tuple(PNR_TASKS.values())
PNR_KEYFRAME_LOSSES = ("bce", "cross_entropy")
PNR_LOSS_REDUCTIONS = ("mean", "none")
PNR_ACTIVATIONS = ("none", "sigmoid", "softmax")

#: PNR-tree spelling -> base key it sets. ``MISC.OUTPUT_DIR`` (joined with ``MISC.LOG_DIR``) sets ``OUTPUT_DIR``.
PNR_ALIASES = {
    "MISC.CHECKPOINT_FILE_PATH": "CHECKPOINT.FILE_PATH",
    "MISC.NUM_GPUS": "NUM_GPUS",
    "MISC.NUM_SHARDS": "NUM_SHARDS",
    "MISC.FAST_DEV_RUN": "FAST_DEV_RUN",
    "TRAIN.TRAIN_ENABLE": "TRAIN.ENABLE",
}
_ALIAS_TYPES = {
    "MISC.CHECKPOINT_FILE_PATH": str,
    "MISC.NUM_GPUS": int,
    "MISC.NUM_SHARDS": int,
    "MISC.FAST_DEV_RUN": bool,
    "TRAIN.TRAIN_ENABLE": bool,
    "MISC.OUTPUT_DIR": str,
}


def add_resnet_config(cfg: CfgNode) -> CfgNode:
    """Add the PySlowFast ``RESNET`` node (shared by the PNR and LTA trees); a no-op when it is already there.

    Defaults are the original ones (ResNet-50, one pathway). Per-stage lists hold one entry per pathway.
    """
    if "RESNET" in cfg:
        return cfg
    cfg.RESNET = CfgNode()
    # Network depth: 50, 101 or 152 (bottleneck blocks per stage 3-4-6-3, 3-4-23-3, 3-8-36-3).
    cfg.RESNET.DEPTH = 50
    # Convolution groups of the bottleneck's 3x3 conv (1 = ResNet, >1 = ResNeXt).
    cfg.RESNET.NUM_GROUPS = 1
    # Channels per group: the stem width (64 in every released model; smaller in CPU test configs).
    cfg.RESNET.WIDTH_PER_GROUP = 64
    # Residual transformation ("bottleneck_transform" in every released model).
    cfg.RESNET.TRANS_FUNC = "bottleneck_transform"
    # Put the spatial stride on the 1x1 conv (True) or the 3x3 conv (False).
    cfg.RESNET.STRIDE_1X1 = False
    # Zero-initialise the last BatchNorm of every residual block.
    cfg.RESNET.ZERO_INIT_FINAL_BN = True
    # In-place ReLU (memory only; no effect on results).
    cfg.RESNET.INPLACE_RELU = True
    # Per stage s2..s5 and pathway: how many blocks use a temporal kernel > 1.
    cfg.RESNET.NUM_BLOCK_TEMP_KERNEL = [[3], [4], [6], [3]]
    # Per stage s2..s5 and pathway: spatial stride of the stage's first block.
    cfg.RESNET.SPATIAL_STRIDES = [[1], [2], [2], [2]]
    # Per stage s2..s5 and pathway: spatial dilation.
    cfg.RESNET.SPATIAL_DILATIONS = [[1], [1], [1], [1]]
    return cfg


def add_pnr_config(cfg: CfgNode) -> CfgNode:
    """Add the PNR-tree sections (PNR keyframe localisation, OSCC state change) to a base config, in place.

    Defaults are the values of the released models (``configs/pnr/baseline/*.yaml``); where the original defaults
    file said something else, the comment gives the original default.
    """
    add_resnet_config(cfg)

    # ----------------------------------------------------------------------------------------------- data
    # Annotation folder (relative to the data root): holds the fho_oscc-pnr_*.json files.
    cfg.DATA.ANN_DIR = "fho/annotations"
    # Annotation file names inside DATA.ANN_DIR (the official names; the original renamed them to <split>.json).
    cfg.DATA.ANN_FILE_TRAIN = "fho_oscc-pnr_train.json"
    cfg.DATA.ANN_FILE_VAL = "fho_oscc-pnr_val.json"
    cfg.DATA.ANN_FILE_TEST = "fho_oscc-pnr_test_unannotated.json"
    # Frame folders (relative to the data root) of windows with a PNR frame: <dir>/<unique_id>/<abs_frame>.jpeg.
    cfg.DATA.CLIPS_SAVE_PATH = "fho/pos_clips"
    # Frame folders of windows without a state change (negatives).
    cfg.DATA.NO_SC_PATH = "fho/neg_clips"
    # Frame folders of the test windows (a hard-coded path in the original).
    cfg.DATA.TEST_CLIPS_PATH = "fho/test_clips"
    # Frames per second sampled from each window; frames per sample = SAMPLING_FPS x CLIP_LEN_SEC (original
    # default 4; 2 in every yaml, giving 16 frames).
    cfg.DATA.SAMPLING_FPS = 2
    # Seconds covered by one sample (the annotated windows are 8 s long).
    cfg.DATA.CLIP_LEN_SEC = 8
    # Square side every frame is resized to (aspect not kept). The head pools CROP_SIZE // 32 windows at stride 1,
    # so 225 (= 32 m + 1) gives the 2x2 grid and 8192-wide tokens the released heads expect (original default 224).
    cfg.DATA.CROP_SIZE = 225
    # Input channels per pathway (RGB).
    cfg.DATA.INPUT_CHANNEL_NUM = [3]
    # What to train: "keyframe_localization" (PNR) or "state_change_classification" (OSCC).
    cfg.DATA.TASK = "keyframe_localization"
    # Training samples cover a random sub-window ("random clipping") of 5 s .. the window length.
    cfg.DATA.TRAIN_RANDOM_CLIP = True
    # Shortest random sub-window in seconds.
    cfg.DATA.RANDOM_CLIP_MIN_SEC = 5.0
    # Reproduce the original offset draw np.random.uniform(8 - L), which samples between 1 and 8 - L instead of
    # between 0 and 8 - L (spec section 11, item 6). False = the intended uniform(0, 8 - L).
    cfg.DATA.LEGACY_OFFSET = False

    # PNR validation error as the mean of per-batch means (the original code) instead of the per-clip mean.
    cfg.TEST.LEGACY_BATCH_MEAN = False

    # Keep windows without a state change: True for OSCC; False (PNR) skips them in train and val.
    cfg.DATA_LOADER.IS_NO_STATE_CHANGE = True

    # ---------------------------------------------------------------------------------------------- model
    cfg.MODEL = CfgNode()
    # Trunk architecture; only "slow_layer5" (temporal kernel 3 everywhere, no temporal pooling) is implemented.
    cfg.MODEL.ARCH = "slow_layer5"
    # Network: "KeyframeLocalizationResNet" (PNR) or "StateChangeClsResNet" (OSCC); must match DATA.TASK.
    cfg.MODEL.MODEL_NAME = "KeyframeLocalizationResNet"
    # Keyframe head outputs per frame (always [1]; the original default [2] belonged to the dual-head model).
    cfg.MODEL.NUM_CLASSES = [1]
    # State-change head outputs (always [2]; index 1 = state change).
    cfg.MODEL.NUM_STATE_CLASSES = [2]
    # PNR loss: "bce" (sigmoid + binary cross-entropy against the one-hot keyframe label, the released model) or
    # "cross_entropy" (softmax over the frames against the keyframe index, counted only for state-change clips;
    # the original default). OSCC always uses cross-entropy over the two states.
    cfg.MODEL.LOSS_FUNC = "cross_entropy"
    # Loss reduction: "mean" or "none" (per-element losses, then averaged: the same number).
    cfg.MODEL.LOSS_REDUCTION = "none"
    # Dropout on the head's grid tokens (training only).
    cfg.MODEL.DROPOUT_RATE = 0.5
    # Activation of the keyframe scores returned by prediction ("none" = raw logits; the arg-max, hence the metric
    # and the submission, does not depend on it). Original default "softmax_1"; "none" in every yaml.
    cfg.MODEL.KEYFRAME_DETECTION_ACT = "none"
    # Activation of the state scores returned by prediction ("none", "sigmoid" or "softmax").
    cfg.MODEL.STATE_CHANGE_ACT = "none"
    # OSCC head: keep one output per frame (True, how EgoT2 translators use the OSCC model) instead of pooling
    # over the clip (False, stage-I training). Pooling has no parameters, so the same weights fit both.
    cfg.MODEL.NO_TEMP_POOL = False

    # ----------------------------------------------------------------------------------------------- misc
    cfg.MISC = CfgNode()
    # PNR-tree spellings of base keys (see PNR_ALIASES); null = take the base key's value.
    # Checkpoint to evaluate, predict with, or start from (base key CHECKPOINT.FILE_PATH); official ts_pnr/ts_oscc
    # files and our own checkpoints both load. Relative to the repository root.
    cfg.MISC.CHECKPOINT_FILE_PATH = None
    # Log root; the run folder is MISC.OUTPUT_DIR/MISC.LOG_DIR (base key OUTPUT_DIR). Relative to the repo root.
    cfg.MISC.OUTPUT_DIR = None
    # Run name below MISC.OUTPUT_DIR ("" = MISC.OUTPUT_DIR itself).
    cfg.MISC.LOG_DIR = ""
    # GPUs per node (base key NUM_GPUS); with fewer visible the run falls back to those, or to the CPU.
    cfg.MISC.NUM_GPUS = None
    # Nodes (base key NUM_SHARDS).
    cfg.MISC.NUM_SHARDS = None
    # One batch of each stage as a smoke test (base key FAST_DEV_RUN).
    cfg.MISC.FAST_DEV_RUN = None
    # Original name of TRAIN.ENABLE.
    cfg.TRAIN.TRAIN_ENABLE = None

    # ------------------------------------------------------------------------------------------- pretrain
    # Stage-I model descriptions used by EgoT2-s translators (paths of eval yamls, relative to the repo root).
    cfg.PRETRAIN = CfgNode()
    # PNR model description (configs/eval/pnr.yaml).
    cfg.PRETRAIN.PNR_CFG = ""
    # OSCC model description (configs/eval/oscc.yaml).
    cfg.PRETRAIN.OSCC_CFG = ""
    # Action-recognition model description (configs/eval/recognition.yaml).
    cfg.PRETRAIN.ACTION_CFG = ""
    # LTA model description (configs/eval/lta.yaml).
    cfg.PRETRAIN.LTA_CFG = ""
    # Freeze the PNR model (the original name says "FT", but True means frozen).
    cfg.PRETRAIN.PNR_FT = True
    # Freeze the OSCC model.
    cfg.PRETRAIN.OSCC_FT = True
    # Freeze the action-recognition model.
    cfg.PRETRAIN.ACTION_FT = True
    return cfg


def pnr_num_frames(cfg: CfgNode) -> int:
    """Frames per sample, ``DATA.SAMPLING_FPS x DATA.CLIP_LEN_SEC`` (16 in the paper configs)."""
    return int(round(cfg.DATA.SAMPLING_FPS * cfg.DATA.CLIP_LEN_SEC))


# ---------------------------------------------------------------------------------------------------------------
# Aliases
# ---------------------------------------------------------------------------------------------------------------


def _get(cfg: CfgNode, full_key: str):
    node = cfg
    for part in full_key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, full_key: str, value) -> None:
    parent, _, leaf = full_key.rpartition(".")
    (_get(cfg, parent) if parent else cfg)[leaf] = value


def _run_folder(output_dir: str, log_dir: str) -> str:
    return str(PurePosixPath(output_dir) / log_dir) if log_dir else output_dir


def sync_pnr_aliases(cfg: CfgNode) -> CfgNode:
    """Make the PNR-tree spellings and the base keys agree, in place (``cfg`` must not be frozen).

    For every pair of :data:`PNR_ALIASES`: an unset (null) PNR spelling takes the base value; a set one is copied
    to the base key when that key still has its default (or the same value). ``OUTPUT_DIR`` becomes
    ``MISC.OUTPUT_DIR/MISC.LOG_DIR``. Both spellings set to different values is an error.

    Raises:
        ConfigError: naming both keys when they disagree, or a PNR spelling of the wrong type.
    """
    defaults = get_cfg()
    problems = []
    for alias, base in PNR_ALIASES.items():
        value, base_value = _get(cfg, alias), _get(cfg, base)
        if value is None:
            _set(cfg, alias, base_value)
            continue
        value = _checked_alias(alias, value, problems)
        if value is None:
            continue
        if base_value in (_get(defaults, base), value):
            _set(cfg, base, value)
            _set(cfg, alias, value)
        else:
            problems.append(f"{alias} = {value!r} and {base} = {base_value!r} disagree; they are two spellings of "
                            f"one setting: set only one (PNR configs use {alias})")
    log_dir = cfg.MISC.LOG_DIR
    if not isinstance(log_dir, str):
        problems.append(f"MISC.LOG_DIR must be a string, got {log_dir!r}")
    elif cfg.MISC.OUTPUT_DIR is None:
        cfg.MISC.OUTPUT_DIR = cfg.OUTPUT_DIR
        cfg.OUTPUT_DIR = _run_folder(cfg.OUTPUT_DIR, log_dir)
    else:
        root = _checked_alias("MISC.OUTPUT_DIR", cfg.MISC.OUTPUT_DIR, problems)
        if root is not None:
            folder = _run_folder(root, log_dir)
            if cfg.OUTPUT_DIR in (defaults.OUTPUT_DIR, folder):
                cfg.OUTPUT_DIR = folder
            else:
                problems.append(f"MISC.OUTPUT_DIR/MISC.LOG_DIR = {folder!r} and OUTPUT_DIR = {cfg.OUTPUT_DIR!r} "
                                f"disagree; set only one (PNR configs use MISC.OUTPUT_DIR and MISC.LOG_DIR)")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
    return cfg


def _checked_alias(alias: str, value, problems: list):
    kind = _ALIAS_TYPES[alias]
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    problems.append(f"{alias} must be {kind.__name__} (or null), got {type(value).__name__} {value!r}")
    return None


def _finish(cfg: CfgNode, freeze: bool, sources: Optional[dict] = None) -> CfgNode:
    sync_pnr_aliases(cfg)
    validate_cfg(cfg, sources)
    if freeze:
        cfg.freeze()
    return cfg


def load_pnr_cfg(
    cfg_file: Optional[Union[str, os.PathLike]] = None,
    opts: Sequence = (),
    data_dir: Optional[Union[str, os.PathLike]] = None,
    freeze: bool = True,
) -> CfgNode:
    """A PNR-tree config: base defaults + :func:`add_pnr_config` -> YAML -> opts -> ``data_dir`` -> aliases -> checks.

    Args:
        cfg_file: YAML file (may use ``_BASE_``), relative to the repository root.
        opts: ``[KEY, VALUE, ...]`` overrides.
        data_dir: replaces ``DATA.ROOT`` when given.
        freeze: freeze the result.

    Raises:
        ConfigError: unknown key, wrong type, failed check or disagreeing spellings (names the keys).
    """
    cfg = get_cfg()
    add_pnr_config(cfg)
    sources: dict = {}
    if cfg_file:
        merge_from_file(cfg, cfg_file, sources)
    merge_from_list(cfg, list(opts), sources)
    if data_dir is not None and str(data_dir) != "":
        cfg.DATA.ROOT = str(data_dir)
        sources["DATA.ROOT"] = "--data_dir"
    return _finish(cfg, freeze, sources)


def pnr_cfg_from_args(args: argparse.Namespace, freeze: bool = True) -> CfgNode:
    """PNR-tree config for :func:`egot2.config.default_argument_parser` arguments.

    The run flags write the PNR spellings, so they win over the YAML's ``MISC`` values: ``--output_dir D`` sets
    ``MISC.OUTPUT_DIR D`` and ``MISC.LOG_DIR ""``; ``--num_gpus``, ``--num_shards``, ``--fast_dev_run`` set
    ``MISC.*``; ``--eval`` / ``--submit`` also set ``TRAIN.TRAIN_ENABLE False``. Trailing ``KEY VALUE`` opts come last.
    """
    flag_opts = []
    if getattr(args, "output_dir", None):
        flag_opts += ["MISC.OUTPUT_DIR", str(args.output_dir), "MISC.LOG_DIR", ""]
    if getattr(args, "num_gpus", None) is not None:
        flag_opts += ["MISC.NUM_GPUS", int(args.num_gpus)]
    if getattr(args, "num_shards", None) is not None:
        flag_opts += ["MISC.NUM_SHARDS", int(args.num_shards)]
    if getattr(args, "fast_dev_run", False):
        flag_opts += ["MISC.FAST_DEV_RUN", True]
    if getattr(args, "eval", False) or getattr(args, "submit", False):
        flag_opts += ["TRAIN.TRAIN_ENABLE", False]
    rest = argparse.Namespace(**{k: v for k, v in vars(args).items()
                                 if k not in ("output_dir", "num_gpus", "num_shards", "fast_dev_run")})
    opts = list(getattr(args, "opts", None) or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    rest.opts = flag_opts + opts
    cfg = cfg_from_args(rest, extensions=(add_pnr_config,), freeze=False)
    return _finish(cfg, freeze)


# ---------------------------------------------------------------------------------------------------------------
# Checks (run by every validate_cfg of a config that has the PNR tree's MISC section)
# ---------------------------------------------------------------------------------------------------------------


@register_validator(section="MISC")
def _pnr_problems(cfg: CfgNode):
    problems = []

    def need(ok: bool, key: str, message: str):
        if not ok:
            problems.append((key, message))

    task = cfg.DATA.TASK
    need(task in PNR_TASKS, "DATA.TASK", f"must be one of {sorted(PNR_TASKS)} (the dual-head and 2-loader tasks "
                                         f"are not part of stage I here)")
    if task in PNR_TASKS:
        need(cfg.MODEL.MODEL_NAME == PNR_TASKS[task], "MODEL.MODEL_NAME",
             f"DATA.TASK {task!r} trains {PNR_TASKS[task]!r}")
    need(cfg.MODEL.MODEL_NAME in PNR_MODEL_NAMES, "MODEL.MODEL_NAME", f"must be one of {PNR_MODEL_NAMES}")
    need(cfg.MODEL.ARCH == "slow_layer5", "MODEL.ARCH", "only 'slow_layer5' is implemented")
    need(list(cfg.MODEL.NUM_CLASSES) == [1], "MODEL.NUM_CLASSES", "the keyframe head has [1] output per frame")
    need(list(cfg.MODEL.NUM_STATE_CLASSES) == [2], "MODEL.NUM_STATE_CLASSES", "the state head has [2] outputs")
    need(cfg.MODEL.LOSS_FUNC in PNR_KEYFRAME_LOSSES, "MODEL.LOSS_FUNC", f"must be one of {PNR_KEYFRAME_LOSSES}")
    need(cfg.MODEL.LOSS_REDUCTION in PNR_LOSS_REDUCTIONS, "MODEL.LOSS_REDUCTION",
         f"must be one of {PNR_LOSS_REDUCTIONS}")
    for key in ("KEYFRAME_DETECTION_ACT", "STATE_CHANGE_ACT"):
        need(cfg.MODEL[key] in PNR_ACTIVATIONS, f"MODEL.{key}", f"must be one of {PNR_ACTIVATIONS}")
    need(0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0, "MODEL.DROPOUT_RATE", "must be in [0, 1)")
    frames = cfg.DATA.SAMPLING_FPS * cfg.DATA.CLIP_LEN_SEC
    need(frames >= 1 and abs(frames - round(frames)) < 1e-9, "DATA.SAMPLING_FPS",
         "SAMPLING_FPS x CLIP_LEN_SEC must be a positive whole number of frames")
    need(isinstance(cfg.DATA.CROP_SIZE, int) and cfg.DATA.CROP_SIZE >= 33, "DATA.CROP_SIZE",
         "must be an integer >= 33 (the head pools CROP_SIZE // 32; 32 m + 1 gives a 2x2 grid)")
    need(cfg.DATA.RANDOM_CLIP_MIN_SEC > 0, "DATA.RANDOM_CLIP_MIN_SEC", "must be > 0")
    need(list(cfg.DATA.INPUT_CHANNEL_NUM) == [3], "DATA.INPUT_CHANNEL_NUM", "the I3D trunk has one RGB pathway: [3]")
    for key in ("ANN_DIR", "ANN_FILE_TRAIN", "ANN_FILE_VAL", "ANN_FILE_TEST", "CLIPS_SAVE_PATH", "NO_SC_PATH",
                "TEST_CLIPS_PATH"):
        need(isinstance(cfg.DATA[key], str) and cfg.DATA[key] != "", f"DATA.{key}", "must be a non-empty path")
    # RESNET: the trunk builder supports the depth and the width; the other keys must describe slow_layer5.
    resnet = cfg.RESNET
    depths = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
    need(resnet.DEPTH in depths, "RESNET.DEPTH", f"must be one of {sorted(depths)}")
    need(isinstance(resnet.WIDTH_PER_GROUP, int) and resnet.WIDTH_PER_GROUP >= 1, "RESNET.WIDTH_PER_GROUP",
         "must be a positive integer")
    need(resnet.NUM_GROUPS == 1, "RESNET.NUM_GROUPS", "only 1 (ResNet, not ResNeXt) is implemented")
    need(resnet.TRANS_FUNC == "bottleneck_transform", "RESNET.TRANS_FUNC", "only 'bottleneck_transform' is implemented")
    need(resnet.STRIDE_1X1 is False, "RESNET.STRIDE_1X1", "only False (stride on the 3x3 conv) is implemented")
    need(resnet.ZERO_INIT_FINAL_BN is True, "RESNET.ZERO_INIT_FINAL_BN", "only True is implemented")
    if resnet.DEPTH in depths:
        need([list(s) for s in resnet.NUM_BLOCK_TEMP_KERNEL] == [[d] for d in depths[resnet.DEPTH]],
             "RESNET.NUM_BLOCK_TEMP_KERNEL", f"slow_layer5 uses the temporal kernel in every block: "
                                             f"{[[d] for d in depths[resnet.DEPTH]]}")
    need([list(s) for s in resnet.SPATIAL_STRIDES] == [[1], [2], [2], [2]], "RESNET.SPATIAL_STRIDES",
         "only [[1], [2], [2], [2]] is implemented")
    need([list(s) for s in resnet.SPATIAL_DILATIONS] == [[1], [1], [1], [1]], "RESNET.SPATIAL_DILATIONS",
         "only [[1], [1], [1], [1]] is implemented")
    for alias in (*PNR_ALIASES, "MISC.OUTPUT_DIR"):
        value = _get(cfg, alias)
        if value is not None:
            checked = _checked_alias(alias, value, [])
            need(checked is not None, alias, f"must be {_ALIAS_TYPES[alias].__name__} or null")
    gpus = cfg.MISC.NUM_GPUS if isinstance(cfg.MISC.NUM_GPUS, int) else cfg.NUM_GPUS
    shards = cfg.MISC.NUM_SHARDS if isinstance(cfg.MISC.NUM_SHARDS, int) else cfg.NUM_SHARDS
    processes = max(int(gpus), 1) * max(int(shards), 1)
    need(cfg.TRAIN.BATCH_SIZE % processes == 0, "TRAIN.BATCH_SIZE",
         f"the global batch must split evenly over NUM_GPUS x NUM_SHARDS = {processes} devices")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# LTA tree: action recognition (AR) and long-term anticipation (LTA)
# ---------------------------------------------------------------------------------------------------------------

__all__ += ["LTA_TASKS", "LTA_DATASETS", "add_lta_config", "load_lta_cfg", "lta_cfg_from_args",
            "lta_checkpoint_file"]

#: ``DATA.TASK`` values of the LTA tree -> the network ``MODEL.MODEL_NAME`` they train (stage-II translators add
#: their entries here).
LTA_TASKS = {
    "classification": "MultiTaskSlowFast",
    "long_term_anticipation": "ForecastingEncoderDecoder",
}
#: ``DATA.TASK`` -> the original dataset registry name accepted in ``TRAIN.DATASET`` / ``TEST.DATASET``.
LTA_DATASETS = {
    "classification": "Ego4dRecognition",
    "long_term_anticipation": "Ego4dLongTermAnticipation",
}
_LTA_AGGREGATORS = ("TransformerAggregator", "ConcatAggregator")
_LTA_DECODERS = ("MultiHeadDecoder",)
_SLOWFAST_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def add_lta_config(cfg: CfgNode) -> CfgNode:
    """Add the LTA-tree sections (AR and LTA stage I, ``scripts/lta/run_lta.py``) to a base config, in place.

    Defaults are the values of the released models (``configs/recognition/baseline/MULTISLOWFAST_8x8_R101.yaml``,
    ``configs/lta/baseline/slowfast_pretrain_ego4d.yaml``, Ego4D v1 taxonomy); where the original defaults file said
    something else, the comment gives the original default. Paths under ``DATA`` are relative to the data root, the
    checkpoint paths relative to the repository root.
    """
    add_resnet_config(cfg)
    # The SlowFast 8x8 R101 of the released checkpoints (original defaults: ResNet-50, one pathway).
    cfg.RESNET.DEPTH = 101
    cfg.RESNET.NUM_BLOCK_TEMP_KERNEL = [[3, 3], [4, 4], [23, 23], [3, 3]]
    cfg.RESNET.SPATIAL_STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2]]
    cfg.RESNET.SPATIAL_DILATIONS = [[1, 1], [1, 1], [1, 1], [1, 1]]

    # ----------------------------------------------------------------------------------------------- data
    # Folder of fho_lta_{train,val,test_unannotated}.json and fho_lta_taxonomy.json (relative to the data root).
    cfg.DATA.PATH_TO_DATA_DIR = "lta/annotations"
    # Folder of the canonical clips <clip_uid>.mp4, 320p in Ego4D (relative to the data root).
    cfg.DATA.PATH_PREFIX = "lta/clips"
    # LTA: recognition checkpoint whose SlowFast trunk initialises the clip backbone (head keys skipped); relative to
    # the repository root; "" or a missing file = train the backbone from scratch (with a warning).
    cfg.DATA.CHECKPOINT_MODULE_FILE_PATH = "pretrained_models/recognition_ego4d_slowfast8x8.ckpt"
    # Frames per input clip after temporal subsampling (fast pathway; original default 8).
    cfg.DATA.NUM_FRAMES = 32
    # Stride between kept frames at TARGET_FPS; a clip covers NUM_FRAMES x SAMPLING_RATE / TARGET_FPS seconds
    # (32 x 2 / 30 = 2.133 s; original default 8).
    cfg.DATA.SAMPLING_RATE = 2
    # Frame rate SAMPLING_RATE refers to.
    cfg.DATA.TARGET_FPS = 30
    # Training: random short side in [min, max]; evaluation: short side min, then a centre crop.
    cfg.DATA.TRAIN_JITTER_SCALES = [256, 320]
    # Side of the training random crop and of the evaluation centre crop.
    cfg.DATA.TRAIN_CROP_SIZE = 224
    # Declared by the original recognition configs (256) but used by no transform (spec section 11, item 11);
    # kept so their YAMLs and overrides load. Evaluation crops TRAIN_CROP_SIZE.
    cfg.DATA.TEST_CROP_SIZE = 256
    # Input side the network is built for: sizes the heads' pooling kernels (CROP_SIZE / 32 = 7).
    cfg.DATA.CROP_SIZE = 224
    # Per-channel mean and std applied after dividing pixels by 255.
    cfg.DATA.MEAN = [0.45, 0.45, 0.45]
    cfg.DATA.STD = [0.225, 0.225, 0.225]
    # Horizontal-flip augmentation in training (probability 0.5; see LEGACY_ALWAYS_FLIP).
    cfg.DATA.RANDOM_FLIP = True
    # Flip every training clip, as the original did by passing RANDOM_FLIP=True as the flip probability
    # (spec section 11, item 10). False = flip with probability 0.5.
    cfg.DATA.LEGACY_ALWAYS_FLIP = False
    # Centred input clips in training too, as EgoT2's datasets did (spec section 11, item 9). False = a uniformly
    # random position inside the action window (the official Ego4D behaviour).
    cfg.DATA.LEGACY_CENTRE_TRAIN = False
    # Input channels per pathway: [3, 3] = slow and fast RGB pathways.
    cfg.DATA.INPUT_CHANNEL_NUM = [3, 3]
    # What to train: "classification" (AR) or "long_term_anticipation" (LTA); see LTA_TASKS.
    cfg.DATA.TASK = "classification"

    # Original dataset registry names; "" = the one DATA.TASK implies (Ego4dRecognition / Ego4dLongTermAnticipation).
    cfg.TRAIN.DATASET = ""
    cfg.TEST.DATASET = ""
    # Evaluation scores are raw logits (True) or MODEL.HEAD_ACT of them (False); metrics do not depend on it.
    cfg.TEST.NO_ACT = True

    # ---------------------------------------------------------------------------------------------- model
    cfg.MODEL = CfgNode()
    # Trunk architecture; only "slowfast" is implemented.
    cfg.MODEL.ARCH = "slowfast"
    # Network: "MultiTaskSlowFast" (AR) or "ForecastingEncoderDecoder" (LTA); must match DATA.TASK.
    cfg.MODEL.MODEL_NAME = "MultiTaskSlowFast"
    # Classes per head: [verbs, nouns] of the taxonomy, Ego4D v1 [115, 478] (original default [400]).
    cfg.MODEL.NUM_CLASSES = [115, 478]
    # Loss: cross-entropy per head (AR: verb + noun; LTA: summed over the Z future positions and both heads).
    cfg.MODEL.LOSS_FUNC = "cross_entropy"
    # Dropout before the heads (AR heads, LTA clip-encoder head and decoder).
    cfg.MODEL.DROPOUT_RATE = 0.5
    # Activation applied to evaluation scores when TEST.NO_ACT is False.
    cfg.MODEL.HEAD_ACT = "softmax"
    # LTA: width D of a clip feature (the clip encoder's head output, the aggregator's width).
    cfg.MODEL.MULTI_INPUT_FEATURES = 2048
    # LTA: freeze the clip backbone except its head (the frozen trunk stays in eval mode).
    cfg.MODEL.FREEZE_BACKBONE = True
    # LTA TransformerAggregator heads and layers (must match lta_slowfast_trf.ckpt: 8, 6).
    cfg.MODEL.TRANSFORMER_ENCODER_HEADS = 8
    cfg.MODEL.TRANSFORMER_ENCODER_LAYERS = 6

    # ------------------------------------------------------------------------------------------- slowfast
    cfg.SLOWFAST = CfgNode()
    # Frame-rate ratio fast/slow; the slow pathway sees NUM_FRAMES / ALPHA frames (original default 8, which built
    # a network that does not fit the released checkpoints; every yaml sets 4).
    cfg.SLOWFAST.ALPHA = 4
    # Channel ratio slow/fast.
    cfg.SLOWFAST.BETA_INV = 8
    # Output/input channel ratio of the fast-to-slow lateral convolutions.
    cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO = 2
    # Temporal kernel of the lateral convolutions.
    cfg.SLOWFAST.FUSION_KERNEL_SZ = 5

    # ---------------------------------------------------------------------------------------- forecasting
    cfg.FORECASTING = CfgNode()
    # How the N clip features are combined: "TransformerAggregator" or "ConcatAggregator" (original default).
    cfg.FORECASTING.AGGREGATOR = "TransformerAggregator"
    # Decoder: "MultiHeadDecoder" (Z independent linear heads).
    cfg.FORECASTING.DECODER = "MultiHeadDecoder"
    # N, observed clips per window (original default 1).
    cfg.FORECASTING.NUM_INPUT_CLIPS = 2
    # Z, future actions predicted per window (original default 1).
    cfg.FORECASTING.NUM_ACTIONS_TO_PREDICT = 20
    # K, sequences sampled per window at evaluation and in the submission.
    cfg.FORECASTING.NUM_SEQUENCES_TO_PREDICT = 5
    # Training also uses the last window of each clip, which the official enumeration omits (spec section 11,
    # item 12); validation and the submission keys always use the official enumeration.
    cfg.FORECASTING.EXTRA_TRAIN_WINDOW = True

    # ------------------------------------------------------------------------------------------ checkpoints
    # Training: initialisation (AR: the Kinetics SlowFast, all but the head; LTA: see DATA.CHECKPOINT_MODULE_FILE_PATH);
    # evaluation (TRAIN.ENABLE False): the checkpoint evaluated, loaded strictly. The LTA-tree spelling of
    # CHECKPOINT.FILE_PATH; set one of them. Relative to the repository root.
    cfg.CHECKPOINT_FILE_PATH = ""
    # Training initialisation also copies the head (only when its shapes fit).
    cfg.CHECKPOINT_LOAD_MODEL_HEAD = False
    return cfg


def lta_checkpoint_file(cfg: CfgNode) -> str:
    """The checkpoint to start from / evaluate: ``CHECKPOINT_FILE_PATH``, else ``CHECKPOINT.FILE_PATH`` ("" = none)."""
    return str(cfg.CHECKPOINT_FILE_PATH or cfg.CHECKPOINT.FILE_PATH)


def load_lta_cfg(
    cfg_file: Optional[Union[str, os.PathLike]] = None,
    opts: Sequence = (),
    data_dir: Optional[Union[str, os.PathLike]] = None,
    freeze: bool = True,
) -> CfgNode:
    """An LTA-tree config: base defaults + :func:`add_lta_config` -> YAML -> opts -> ``data_dir`` -> checks."""
    from egot2.config import load_cfg

    return load_cfg(cfg_file, opts, extensions=(add_lta_config,), data_dir=data_dir, freeze=freeze)


def lta_cfg_from_args(args: argparse.Namespace, freeze: bool = True) -> CfgNode:
    """LTA-tree config for :func:`egot2.config.default_argument_parser` arguments (flags as the base CLI)."""
    return cfg_from_args(args, extensions=(add_lta_config,), freeze=freeze)


def _per_pathway(value) -> Optional[list]:
    """A RESNET per-stage entry as a list of ints (one value = both pathways), or None if malformed."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 2:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return list(value)


@register_validator(section="FORECASTING")
def _lta_problems(cfg: CfgNode):
    problems = []

    def need(ok: bool, key: str, message: str):
        if not ok:
            problems.append((key, message))

    task = cfg.DATA.TASK
    need(task in LTA_TASKS, "DATA.TASK", f"must be one of {sorted(LTA_TASKS)}")
    if task in LTA_TASKS:
        need(cfg.MODEL.MODEL_NAME == LTA_TASKS[task], "MODEL.MODEL_NAME", f"DATA.TASK {task!r} trains "
                                                                          f"{LTA_TASKS[task]!r}")
        for split in ("TRAIN", "TEST"):
            name = cfg[split].DATASET
            expected = LTA_DATASETS.get(task)
            need(name in ("", expected), f"{split}.DATASET", f"DATA.TASK {task!r} reads {expected!r} (or leave it "
                                                             f"empty)")
    need(cfg.MODEL.ARCH == "slowfast", "MODEL.ARCH", "only 'slowfast' is implemented")
    need(cfg.MODEL.LOSS_FUNC == "cross_entropy", "MODEL.LOSS_FUNC", "only 'cross_entropy' is implemented")
    need(cfg.MODEL.HEAD_ACT == "softmax", "MODEL.HEAD_ACT", "only 'softmax' is implemented")
    classes = list(cfg.MODEL.NUM_CLASSES)
    need(len(classes) == 2 and all(isinstance(n, int) and n >= 5 for n in classes), "MODEL.NUM_CLASSES",
         "must be [verbs, nouns] with at least 5 classes each (Ego4D v1: [115, 478])")
    need(0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0, "MODEL.DROPOUT_RATE", "must be in [0, 1)")
    features, heads = cfg.MODEL.MULTI_INPUT_FEATURES, cfg.MODEL.TRANSFORMER_ENCODER_HEADS
    need(isinstance(features, int) and features > 0 and features % 2 == 0, "MODEL.MULTI_INPUT_FEATURES",
         "must be a positive even integer (sinusoidal positions)")
    need(isinstance(heads, int) and heads > 0 and isinstance(features, int) and features % heads == 0,
         "MODEL.TRANSFORMER_ENCODER_HEADS", "must divide MODEL.MULTI_INPUT_FEATURES")
    need(isinstance(cfg.MODEL.TRANSFORMER_ENCODER_LAYERS, int) and cfg.MODEL.TRANSFORMER_ENCODER_LAYERS >= 1,
         "MODEL.TRANSFORMER_ENCODER_LAYERS", "must be a positive integer")

    data = cfg.DATA
    for key in ("NUM_FRAMES", "SAMPLING_RATE", "TRAIN_CROP_SIZE", "CROP_SIZE"):
        need(isinstance(data[key], int) and data[key] > 0, f"DATA.{key}", "must be a positive integer")
    need(data.TARGET_FPS > 0, "DATA.TARGET_FPS", "must be > 0")
    alpha = cfg.SLOWFAST.ALPHA
    need(isinstance(alpha, int) and alpha > 0 and isinstance(data.NUM_FRAMES, int) and data.NUM_FRAMES % alpha == 0,
         "SLOWFAST.ALPHA", "must divide DATA.NUM_FRAMES (the slow pathway gets NUM_FRAMES / ALPHA frames)")
    scales = list(data.TRAIN_JITTER_SCALES)
    need(len(scales) == 2 and all(isinstance(s, int) for s in scales) and 0 < scales[0] <= scales[1],
         "DATA.TRAIN_JITTER_SCALES", "must be [min, max] short sides with 0 < min <= max")
    if len(scales) == 2 and isinstance(scales[0], int):
        need(data.TRAIN_CROP_SIZE <= scales[0], "DATA.TRAIN_CROP_SIZE",
             f"must not exceed the smallest short side DATA.TRAIN_JITTER_SCALES[0] = {scales[0]}")
    need(isinstance(data.CROP_SIZE, int) and isinstance(data.TRAIN_CROP_SIZE, int)
         and data.CROP_SIZE <= data.TRAIN_CROP_SIZE, "DATA.CROP_SIZE",
         "must not exceed DATA.TRAIN_CROP_SIZE (the heads pool a CROP_SIZE / 32 grid of the input)")
    need(isinstance(data.CROP_SIZE, int) and data.CROP_SIZE >= 32, "DATA.CROP_SIZE",
         "must be >= 32 (the trunk reduces the input 32 times)")
    need(len(data.MEAN) == 3 and len(data.STD) == 3 and all(s > 0 for s in data.STD), "DATA.STD",
         "DATA.MEAN and DATA.STD need 3 values (RGB), STD positive")
    need(list(data.INPUT_CHANNEL_NUM) == [3, 3], "DATA.INPUT_CHANNEL_NUM", "SlowFast has two RGB pathways: [3, 3]")
    for key in ("PATH_TO_DATA_DIR", "PATH_PREFIX"):
        need(isinstance(data[key], str) and data[key] != "", f"DATA.{key}", "must be a non-empty path")

    slowfast = cfg.SLOWFAST
    need(isinstance(slowfast.BETA_INV, int) and slowfast.BETA_INV > 0, "SLOWFAST.BETA_INV",
         "must be a positive integer")
    need(isinstance(slowfast.BETA_INV, int) and slowfast.BETA_INV > 0
         and cfg.RESNET.WIDTH_PER_GROUP % slowfast.BETA_INV == 0, "RESNET.WIDTH_PER_GROUP",
         "must be a multiple of SLOWFAST.BETA_INV (the fast stem has WIDTH_PER_GROUP / BETA_INV channels)")
    for key in ("FUSION_CONV_CHANNEL_RATIO", "FUSION_KERNEL_SZ"):
        need(isinstance(slowfast[key], int) and slowfast[key] > 0, f"SLOWFAST.{key}", "must be a positive integer")

    resnet = cfg.RESNET
    need(resnet.DEPTH in _SLOWFAST_DEPTHS, "RESNET.DEPTH", f"must be one of {sorted(_SLOWFAST_DEPTHS)}")
    need(isinstance(resnet.WIDTH_PER_GROUP, int) and resnet.WIDTH_PER_GROUP >= 1, "RESNET.WIDTH_PER_GROUP",
         "must be a positive integer")
    need(resnet.NUM_GROUPS == 1, "RESNET.NUM_GROUPS", "only 1 (ResNet, not ResNeXt) is implemented")
    need(resnet.TRANS_FUNC == "bottleneck_transform", "RESNET.TRANS_FUNC", "only 'bottleneck_transform' is implemented")
    need(resnet.STRIDE_1X1 is False, "RESNET.STRIDE_1X1", "only False (stride on the 3x3 conv) is implemented")
    need(resnet.ZERO_INIT_FINAL_BN is True, "RESNET.ZERO_INIT_FINAL_BN", "only True is implemented")
    stages = [_per_pathway(s) for s in resnet.SPATIAL_STRIDES]
    need(len(stages) == 4 and all(s is not None and len(set(s)) == 1 and s[0] >= 1 for s in stages),
         "RESNET.SPATIAL_STRIDES", "needs 4 stages, each one stride shared by both pathways (e.g. [[1, 1], [2, 2], "
                                   "[2, 2], [2, 2]])")
    dilations = [_per_pathway(s) for s in resnet.SPATIAL_DILATIONS]
    need(len(dilations) == 4 and all(d is not None and set(d) == {1} for d in dilations), "RESNET.SPATIAL_DILATIONS",
         "only dilation 1 is implemented")
    if resnet.DEPTH in _SLOWFAST_DEPTHS:
        kernels = [_per_pathway(s) for s in resnet.NUM_BLOCK_TEMP_KERNEL]
        blocks = _SLOWFAST_DEPTHS[resnet.DEPTH]
        need(len(kernels) == 4 and all(k is not None and set(k) == {n} for k, n in zip(kernels, blocks)),
             "RESNET.NUM_BLOCK_TEMP_KERNEL", f"the SlowFast trunk uses its temporal kernels in every block: "
                                             f"{[[n, n] for n in blocks]} for depth {resnet.DEPTH}")

    forecasting = cfg.FORECASTING
    need(forecasting.AGGREGATOR in _LTA_AGGREGATORS, "FORECASTING.AGGREGATOR", f"must be one of {_LTA_AGGREGATORS}")
    need(forecasting.DECODER in _LTA_DECODERS, "FORECASTING.DECODER", f"must be one of {_LTA_DECODERS}")
    for key in ("NUM_INPUT_CLIPS", "NUM_ACTIONS_TO_PREDICT", "NUM_SEQUENCES_TO_PREDICT"):
        need(isinstance(forecasting[key], int) and forecasting[key] >= 1, f"FORECASTING.{key}",
             "must be a positive integer")

    file_path, base_path = cfg.CHECKPOINT_FILE_PATH, cfg.CHECKPOINT.FILE_PATH
    need(not (file_path and base_path and file_path != base_path), "CHECKPOINT_FILE_PATH",
         f"disagrees with CHECKPOINT.FILE_PATH = {base_path!r}; they are two spellings of one setting, set only one")
    processes = max(int(cfg.NUM_GPUS), 1) * max(int(cfg.NUM_SHARDS), 1)
    for split in ("TRAIN", "TEST"):
        need(cfg[split].BATCH_SIZE % processes == 0, f"{split}.BATCH_SIZE",
             f"the global batch must split evenly over NUM_GPUS x NUM_SHARDS = {processes} devices")
    return problems
