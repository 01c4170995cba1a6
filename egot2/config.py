"""The one configuration tree of the project: yacs defaults, strict merging, validation, run records.

Order in which a run's configuration is assembled (later wins)::

    get_cfg()                         base defaults below, every key commented
      -> add_<task>_config(cfg)       task sections, defined next to the task code (``extensions``)
      -> YAML file(s)                 ``_BASE_: other.yaml`` chains are merged first, child last
      -> command-line flags           --output_dir, --eval, ... (``cfg_from_args``)
      -> trailing ``KEY VALUE`` opts
      -> --data_dir                   overrides DATA.ROOT
      -> validate                     built-in checks + every ``register_validator`` function
      -> freeze

Key names follow the original HOI (PySlowFast-style) configs, so users' overrides carry over. Every unknown key,
badly typed value or failed check raises :class:`ConfigError` naming the key and where its value came from (file
path or ``command line``). Relative paths in configs are relative to the repository root, never to the current
working directory.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import yaml
from yacs.config import CfgNode

__all__ = [
    "CfgNode",
    "ConfigError",
    "REPO_ROOT",
    "repo_path",
    "resolve_data_root",
    "get_cfg",
    "load_cfg",
    "merge_from_file",
    "merge_from_list",
    "validate_cfg",
    "register_validator",
    "write_run_info",
    "library_versions",
    "default_argument_parser",
    "cfg_from_args",
    "OPTIMIZERS",
    "LR_POLICIES",
    "CHECKPOINT_MODES",
    "SCHEDULER_INTERVALS",
    "PRECISIONS",
]

#: Absolute path of the repository root (the folder holding ``egot2/``, ``HHI/``, ``HOI/``).
REPO_ROOT = Path(__file__).resolve().parents[1]

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_POLICIES = ("constant", "cosine", "cosine_warmup", "step_decay")
CHECKPOINT_MODES = ("min", "max")
SCHEDULER_INTERVALS = ("step", "epoch")
PRECISIONS = ("64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true")

_BASE_KEY = "_BASE_"
_COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """A configuration file, override or value is invalid; the message names the key and its source."""


# ---------------------------------------------------------------------------------------------------------------
# Base defaults
# ---------------------------------------------------------------------------------------------------------------

_C = CfgNode()

# Input data (task sections add their own DATA keys).
_C.DATA = CfgNode()
# Data root holding the Ego4D download or the prepared layouts. "" = use $EGO4D_DATA, else data/.
# A relative path is taken from the repository root.
_C.DATA.ROOT = ""

# Folder for logs, checkpoints, the merged config and library versions of a run (relative to the repo root).
_C.OUTPUT_DIR = "logs"
# Seed for python, numpy and torch (Lightning's seed_everything), including dataloader workers.
_C.RNG_SEED = 0
# Ask torch for deterministic algorithms (slower; some CUDA ops then raise instead of running).
_C.DETERMINISTIC = False
# Accelerator devices per node (GPUs); 0 = run on the CPU.
_C.NUM_GPUS = 1
# Number of nodes (machines) of a multi-node run.
_C.NUM_SHARDS = 1
# Lightning accelerator: "auto", "cpu", "gpu", "cuda", "mps", ...
_C.ACCELERATOR = "auto"
# Lightning strategy: "auto", "ddp", "ddp_find_unused_parameters_true", ...
_C.STRATEGY = "auto"
# Numerical precision passed to the trainer: "32-true", "16-mixed", "bf16-mixed", ...
_C.PRECISION = "32-true"
# Run one batch of train/val/test as a smoke test, without checkpoints or logs.
_C.FAST_DEV_RUN = False

# Training loop.
_C.TRAIN = CfgNode()
# Train the model (False = only evaluate / predict).
_C.TRAIN.ENABLE = True
# Training batch size (global, summed over all devices).
_C.TRAIN.BATCH_SIZE = 8
# Run validation every this many training epochs.
_C.TRAIN.EVAL_PERIOD = 1
# Log training metrics every this many optimisation steps.
_C.TRAIN.LOG_EVERY_N_STEPS = 50
# Validation batches run before training as a sanity check (the original trainers use 0).
_C.TRAIN.NUM_SANITY_VAL_STEPS = 0
# Fraction (float <= 1.0) or number (int) of training batches per epoch.
_C.TRAIN.LIMIT_TRAIN_BATCHES = 1.0
# Fraction (float <= 1.0) or number (int) of validation batches per validation run.
_C.TRAIN.LIMIT_VAL_BATCHES = 1.0

# Evaluation and challenge submission.
_C.TEST = CfgNode()
# Evaluate on the test / evaluation split after (or instead of) training.
_C.TEST.ENABLE = False
# Evaluation batch size (global).
_C.TEST.BATCH_SIZE = 4
# Write the challenge submission file from the test predictions.
_C.TEST.SUBMIT = False
# Where the submission goes; "" = <OUTPUT_DIR>/submit_<task>.json.
_C.TEST.SUBMISSION_FILE = ""

# Optimiser and learning-rate schedule.
_C.SOLVER = CfgNode()
# Learning rate at the start of the schedule (after warm-up).
_C.SOLVER.BASE_LR = 0.1
# Optimiser: "sgd", "adam" or "adamw".
_C.SOLVER.OPTIMIZING_METHOD = "sgd"
# SGD momentum.
_C.SOLVER.MOMENTUM = 0.9
# SGD Nesterov momentum (needs MOMENTUM > 0 and DAMPENING == 0).
_C.SOLVER.NESTEROV = True
# SGD dampening.
_C.SOLVER.DAMPENING = 0.0
# Weight decay of all parameters except those named like BatchNorm ones (see BN.WEIGHT_DECAY).
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Adam / AdamW betas.
_C.SOLVER.BETAS = [0.9, 0.999]
# LR schedule: "constant", "cosine" (to 0 over all steps), "cosine_warmup" (linear warm-up over WARMUP_STEPS,
# then cosine to 0), "step_decay" (multiply by LR_DECAY every STEP_SIZE intervals).
_C.SOLVER.LR_POLICY = "cosine"
# Optimisation steps of linear warm-up for "cosine_warmup".
_C.SOLVER.WARMUP_STEPS = 1000
# Multiplicative factor (gamma) of "step_decay".
_C.SOLVER.LR_DECAY = 0.95
# Scheduler intervals between two "step_decay" multiplications.
_C.SOLVER.STEP_SIZE = 1
# When the scheduler advances: "step" (every optimisation step, as in the original HOI trainers) or "epoch".
_C.SOLVER.SCHEDULER_INTERVAL = "step"
# Number of training epochs.
_C.SOLVER.MAX_EPOCH = 100
# Clip the gradient norm to this value; 0 = no clipping.
_C.SOLVER.CLIP_GRAD_NORM = 0.0

# BatchNorm parameters.
_C.BN = CfgNode()
# Weight decay of parameters whose name contains "bn" (the original grouping rule).
_C.BN.WEIGHT_DECAY = 0.0

# PyTorch DataLoader settings.
_C.DATA_LOADER = CfgNode()
# Worker processes per dataloader (0 = load in the main process).
_C.DATA_LOADER.NUM_WORKERS = 8
# Pin host memory for faster host-to-device copies.
_C.DATA_LOADER.PIN_MEMORY = True
# Shuffle the training set each epoch.
_C.DATA_LOADER.SHUFFLE = True
# Drop the last incomplete training batch.
_C.DATA_LOADER.DROP_LAST = True

# Checkpoint selection, resuming and evaluation weights.
_C.CHECKPOINT = CfgNode()
# Logged metric that selects the best checkpoints ("" = keep only the last one).
_C.CHECKPOINT.MONITOR = ""
# Whether a larger ("max") or smaller ("min") monitored value is better.
_C.CHECKPOINT.MODE = "max"
# Number of best checkpoints kept (-1 = all, 0 = none besides last.ckpt).
_C.CHECKPOINT.SAVE_TOP_K = 3
# Also keep last.ckpt, the one --resume continues from.
_C.CHECKPOINT.SAVE_LAST = True
# Resume training: "" = start fresh, "last" = <OUTPUT_DIR>/checkpoints/last.ckpt, otherwise a checkpoint path.
_C.CHECKPOINT.RESUME = ""
# Weights to evaluate (--eval / --submit) or to start from; "" = none.
_C.CHECKPOINT.FILE_PATH = ""


def get_cfg() -> CfgNode:
    """A fresh, unfrozen copy of the base defaults (task sections are added by ``add_<task>_config``)."""
    return _C.clone()


# ---------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------


def repo_path(path: Union[str, os.PathLike]) -> Path:
    """Absolute path for ``path``; a relative path is taken from the repository root, ``~`` is expanded."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_data_root(data_dir: Optional[Union[str, os.PathLike]] = None, cfg: Optional[CfgNode] = None) -> Path:
    """Where the data lives: ``data_dir`` (``--data_dir``) > ``cfg.DATA.ROOT`` > ``$EGO4D_DATA`` > ``data/``.

    Empty strings count as unset. Relative values are taken from the repository root.
    """
    for candidate in (
        data_dir,
        cfg.DATA.ROOT if cfg is not None else None,
        os.environ.get("EGO4D_DATA"),
    ):
        if candidate is not None and str(candidate) != "":
            return repo_path(candidate)
    return repo_path("data")


# ---------------------------------------------------------------------------------------------------------------
# Strict merging
# ---------------------------------------------------------------------------------------------------------------


def _decode_value(raw, default):
    """Turn a string into a Python literal where it is one; a str-typed key keeps the raw text."""
    if not isinstance(raw, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw
    # "OUTPUT_DIR 2024" or "DATA.ROOT 1e3" are paths/names, not numbers.
    if isinstance(default, str) and not isinstance(value, str):
        return raw
    return value


def _type_name(value) -> str:
    return type(value).__name__


def _coerce(value, default, full_key: str, source: str):
    """Value of ``full_key`` after checking it against the default's type (the yacs rules, plus int -> float)."""
    if default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        # bool is an int subclass; True must not pass for a batch size, nor 1 for a switch.
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif type(value) is type(default):
        return value
    elif full_key in _NUMBER_KEYS and isinstance(value, (int, float)):
        return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    raise ConfigError(
        f"{source}: config key {full_key} expects {_type_name(default)} (default {default!r}), "
        f"got {_type_name(value)} {value!r}"
    )


# Keys whose value may be an int or a float (Lightning reads a float as a fraction, an int as a count).
_NUMBER_KEYS = {"TRAIN.LIMIT_TRAIN_BATCHES", "TRAIN.LIMIT_VAL_BATCHES"}


def _unknown_key_error(full_key: str, node: CfgNode, source: str) -> ConfigError:
    parent, _, name = full_key.rpartition(".")
    close = difflib.get_close_matches(name, [str(k) for k in node.keys()], n=3)
    hint = f"; did you mean {', '.join((parent + '.' if parent else '') + c for c in close)}?" if close else ""
    return ConfigError(f"{source}: unknown config key {full_key}{hint}")


def _set_leaf(cfg: CfgNode, full_key: str, raw, source: str, sources: Optional[dict]) -> None:
    """Set one dotted key strictly; a mapping given for a section is merged key by key."""
    parts = full_key.split(".")
    node = cfg
    for depth, part in enumerate(parts[:-1]):
        if part not in node:
            raise _unknown_key_error(".".join(parts[: depth + 1]), node, source)
        node = node[part]
        if not isinstance(node, CfgNode):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(f"{source}: config key {section} is a value, not a section, so {full_key} is unknown")
    leaf = parts[-1]
    if leaf not in node:
        if not node.is_new_allowed():
            raise _unknown_key_error(full_key, node, source)
        value = _decode_value(raw, None)
        node[leaf] = CfgNode(value, new_allowed=True) if isinstance(value, dict) else value
    elif isinstance(node[leaf], CfgNode):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: config key {full_key} is a section; give its keys, not {raw!r}")
        _merge_dict(cfg, raw, source, sources, prefix=full_key + ".")
        return
    else:
        default = node[leaf]
        value = _decode_value(raw, default)
        if isinstance(value, dict):
            raise ConfigError(f"{source}: config key {full_key} is a value, not a section (got a mapping)")
        node[leaf] = _coerce(value, default, full_key, source)
    if sources is not None:
        sources[full_key] = source


def _merge_dict(cfg: CfgNode, mapping: dict, source: str, sources: Optional[dict], prefix: str = "") -> None:
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{source}: config keys must be non-empty strings, got {key!r}")
        _set_leaf(cfg, prefix + key, value, source, sources)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys, got {_type_name(data)}")
    return data


def _file_chain(path: Path, seen: tuple = ()) -> list:
    """``[(path, mapping), ...]`` with every ``_BASE_`` ancestor before the file that names it."""
    path = path.resolve()
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: _BASE_ inheritance cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop(_BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: {_BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    chain = []
    for base in bases:
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        if not base_path.is_file():
            raise FileNotFoundError(f"{path}: {_BASE_KEY} file not found: {base_path}")
        chain.extend(_file_chain(base_path, (*seen, path)))
    chain.append((path, data))
    return chain


def merge_from_file(cfg: CfgNode, cfg_file: Union[str, os.PathLike], sources: Optional[dict] = None) -> CfgNode:
    """Merge a YAML file (and its ``_BASE_`` chain) into ``cfg`` strictly.

    Args:
        cfg: unfrozen config to update in place.
        cfg_file: YAML path; a relative path is taken from the repository root.
        sources: optional dict updated with ``{full_key: file path}`` for error messages.

    Returns:
        ``cfg``.
    """
    for path, data in _file_chain(repo_path(cfg_file)):
        _merge_dict(cfg, data, str(path), sources)
    return cfg


def merge_from_list(cfg: CfgNode, opts: Sequence, sources: Optional[dict] = None, source: str = _COMMAND_LINE):
    """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` into ``cfg`` strictly; string values are parsed as Python literals.

    Returns:
        ``cfg``.
    """
    opts = list(opts or ())
    if len(opts) % 2:
        raise ConfigError(f"{source}: overrides must be KEY VALUE pairs, got an odd number of items: {opts}")
    for key, value in zip(opts[0::2], opts[1::2]):
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{source}: override key must be a dotted config key, got {key!r}")
        _set_leaf(cfg, key, value, source, sources)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------

# (function, section) pairs; a validator with a section runs only for configs that have that top-level section.
_VALIDATORS: list = []

Validator = Callable[[CfgNode], Optional[Iterable]]


def register_validator(fn: Validator = None, *, section: Optional[str] = None):
    """Add a check run by every :func:`validate_cfg` (usable as a decorator, with or without ``section=``).

    The function receives the merged config and returns an iterable of problems, each a ``(full_key, message)``
    pair or a plain message string (or ``None`` when all is well); it may also raise ``ValueError``.

    Args:
        fn: the check.
        section: run only when the config has this top-level section (e.g. ``"LTA"``), so that task checks do not
            fire on another task's config in the same process.
    """

    def register(func):
        if not any(func is known and section == known_section for known, known_section in _VALIDATORS):
            _VALIDATORS.append((func, section))
        return func

    return register(fn) if fn is not None else register


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _builtin_problems(cfg: CfgNode) -> list:
    problems = []

    def need(ok: bool, key: str, message: str):
        if not ok:
            problems.append((key, message))

    need(_positive_int(cfg.TRAIN.BATCH_SIZE), "TRAIN.BATCH_SIZE", "must be a positive integer")
    need(_positive_int(cfg.TEST.BATCH_SIZE), "TEST.BATCH_SIZE", "must be a positive integer")
    need(_positive_int(cfg.TRAIN.EVAL_PERIOD), "TRAIN.EVAL_PERIOD", "must be a positive integer")
    need(_positive_int(cfg.TRAIN.LOG_EVERY_N_STEPS), "TRAIN.LOG_EVERY_N_STEPS", "must be a positive integer")
    need(cfg.TRAIN.NUM_SANITY_VAL_STEPS >= -1, "TRAIN.NUM_SANITY_VAL_STEPS", "must be >= -1 (-1 = all)")
    for key in ("LIMIT_TRAIN_BATCHES", "LIMIT_VAL_BATCHES"):
        value = cfg.TRAIN[key]
        need(
            (isinstance(value, float) and 0.0 <= value <= 1.0) or (isinstance(value, int) and value >= 0),
            f"TRAIN.{key}",
            "must be a fraction in [0, 1] or a non-negative number of batches",
        )
    need(cfg.SOLVER.OPTIMIZING_METHOD in OPTIMIZERS, "SOLVER.OPTIMIZING_METHOD", f"must be one of {OPTIMIZERS}")
    need(cfg.SOLVER.LR_POLICY in LR_POLICIES, "SOLVER.LR_POLICY", f"must be one of {LR_POLICIES}")
    need(
        cfg.SOLVER.SCHEDULER_INTERVAL in SCHEDULER_INTERVALS,
        "SOLVER.SCHEDULER_INTERVAL",
        f"must be one of {SCHEDULER_INTERVALS}",
    )
    need(cfg.SOLVER.BASE_LR > 0, "SOLVER.BASE_LR", "must be > 0")
    need(cfg.SOLVER.WEIGHT_DECAY >= 0, "SOLVER.WEIGHT_DECAY", "must be >= 0")
    need(cfg.BN.WEIGHT_DECAY >= 0, "BN.WEIGHT_DECAY", "must be >= 0")
    need(0 <= cfg.SOLVER.MOMENTUM < 1, "SOLVER.MOMENTUM", "must be in [0, 1)")
    need(0 <= cfg.SOLVER.DAMPENING < 1, "SOLVER.DAMPENING", "must be in [0, 1)")
    need(
        len(cfg.SOLVER.BETAS) == 2 and all(0 <= b < 1 for b in cfg.SOLVER.BETAS),
        "SOLVER.BETAS",
        "must be two numbers in [0, 1)",
    )
    if cfg.SOLVER.OPTIMIZING_METHOD == "sgd" and cfg.SOLVER.NESTEROV:
        need(
            cfg.SOLVER.MOMENTUM > 0 and cfg.SOLVER.DAMPENING == 0,
            "SOLVER.NESTEROV",
            "Nesterov SGD needs SOLVER.MOMENTUM > 0 and SOLVER.DAMPENING == 0",
        )
    need(
        isinstance(cfg.SOLVER.WARMUP_STEPS, int) and cfg.SOLVER.WARMUP_STEPS >= 0,
        "SOLVER.WARMUP_STEPS",
        "must be an integer >= 0",
    )
    need(0 < cfg.SOLVER.LR_DECAY <= 1, "SOLVER.LR_DECAY", "must be in (0, 1]")
    need(_positive_int(cfg.SOLVER.STEP_SIZE), "SOLVER.STEP_SIZE", "must be a positive integer")
    need(_positive_int(cfg.SOLVER.MAX_EPOCH), "SOLVER.MAX_EPOCH", "must be a positive integer")
    need(cfg.SOLVER.CLIP_GRAD_NORM >= 0, "SOLVER.CLIP_GRAD_NORM", "must be >= 0 (0 = no clipping)")
    need(isinstance(cfg.NUM_GPUS, int) and cfg.NUM_GPUS >= 0, "NUM_GPUS", "must be an integer >= 0 (0 = CPU)")
    need(_positive_int(cfg.NUM_SHARDS), "NUM_SHARDS", "must be a positive integer")
    need(str(cfg.PRECISION) in PRECISIONS, "PRECISION", f"must be one of {PRECISIONS}")
    need(cfg.DATA_LOADER.NUM_WORKERS >= 0, "DATA_LOADER.NUM_WORKERS", "must be >= 0")
    need(cfg.CHECKPOINT.MODE in CHECKPOINT_MODES, "CHECKPOINT.MODE", f"must be one of {CHECKPOINT_MODES}")
    need(cfg.CHECKPOINT.SAVE_TOP_K >= -1, "CHECKPOINT.SAVE_TOP_K", "must be >= -1 (-1 = keep all)")
    need(str(cfg.OUTPUT_DIR) != "", "OUTPUT_DIR", "must not be empty")
    return problems


def validate_cfg(cfg: CfgNode, sources: Optional[dict] = None) -> CfgNode:
    """Run the built-in checks and every registered validator; raise one :class:`ConfigError` listing all problems.

    Args:
        cfg: merged config.
        sources: ``{full_key: where the value came from}`` (as filled by :func:`load_cfg`); values not in it are
            reported as ``default``.

    Returns:
        ``cfg`` unchanged.
    """
    sources = sources or {}
    problems = list(_builtin_problems(cfg))
    for fn, section in list(_VALIDATORS):
        if section is not None and section not in cfg:
            continue
        name = getattr(fn, "__qualname__", repr(fn))
        try:
            found = fn(cfg) or ()
            for problem in found:
                problems.append(problem if isinstance(problem, tuple) else (None, str(problem)))
        except ValueError as err:
            problems.append((None, f"{name}: {err}"))
    if not problems:
        return cfg
    lines = []
    for key, message in problems:
        if key is None:
            lines.append(f"  {message}")
            continue
        try:
            value = _get_key(cfg, key)
        except KeyError:
            value = "<missing>"
        lines.append(f"  {key} = {value!r} (from {sources.get(key, 'default')}): {message}")
    raise ConfigError("invalid configuration:\n" + "\n".join(lines))


def _get_key(cfg: CfgNode, full_key: str):
    node = cfg
    for part in full_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(full_key)
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------------------------


def load_cfg(
    cfg_file: Optional[Union[str, os.PathLike]] = None,
    opts: Sequence = (),
    extensions: Iterable[Callable[[CfgNode], object]] = (),
    data_dir: Optional[Union[str, os.PathLike]] = None,
    freeze: bool = True,
) -> CfgNode:
    """Build a run's config: defaults -> extensions -> YAML file -> ``KEY VALUE`` opts -> ``data_dir`` -> validate.

    Args:
        cfg_file: YAML file (may use ``_BASE_``); relative paths are taken from the repository root.
        opts: flat ``[KEY, VALUE, ...]`` overrides; string values are parsed with ``ast.literal_eval``.
        extensions: ``add_<task>_config(cfg)`` functions adding task sections to the defaults.
        data_dir: ``--data_dir``; when given it replaces ``DATA.ROOT``.
        freeze: freeze the result.

    Returns:
        The merged, validated config.

    Raises:
        ConfigError: unknown key, wrong type or failed check, naming the key and the file or ``command line``.
        FileNotFoundError: ``cfg_file`` or a ``_BASE_`` file does not exist.
    """
    return _assemble(cfg_file, [(opts, _COMMAND_LINE)], extensions, data_dir, freeze)


def _assemble(cfg_file, override_groups, extensions, data_dir, freeze: bool) -> CfgNode:
    cfg = get_cfg()
    for extend in extensions:
        extend(cfg)
    sources: dict = {}
    if cfg_file:
        merge_from_file(cfg, cfg_file, sources)
    for opts, source in override_groups:
        merge_from_list(cfg, opts, sources, source=source)
    if data_dir is not None and str(data_dir) != "":
        cfg.DATA.ROOT = str(data_dir)
        sources["DATA.ROOT"] = "--data_dir"
    validate_cfg(cfg, sources)
    if freeze:
        cfg.freeze()
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Run records
# ---------------------------------------------------------------------------------------------------------------

_VERSIONED_PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "pytorch_lightning": "pytorch-lightning",
    "numpy": "numpy",
    "pytorchvideo": "pytorchvideo",
    "av": "av",
    "yacs": "yacs",
}


def _git_commit() -> Optional[str]:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def library_versions() -> dict:
    """Versions of python, the main libraries (``None`` when not installed), the platform and the git commit."""
    versions = {"python": platform.python_version()}
    for name, dist in _VERSIONED_PACKAGES.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["platform"] = platform.platform()
    versions["git_commit"] = _git_commit()
    return versions


def _cfg_to_dict(node):
    if isinstance(node, dict):
        return {key: _cfg_to_dict(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_cfg_to_dict(value) for value in node]
    if isinstance(node, os.PathLike):
        return os.fspath(node)
    return node


def write_run_info(cfg_or_dict, run_dir: Union[str, os.PathLike]) -> Path:
    """Write ``config.yaml`` (the merged config) and ``versions.json`` into ``run_dir`` (created), atomically.

    Args:
        cfg_or_dict: a ``CfgNode`` or a plain (argparse-style) dict of settings.
        run_dir: destination folder; a relative path is taken from the repository root.

    Returns:
        The absolute run folder.
    """
    from egot2.media import atomic_path  # imported here: media pulls in cv2/av, which most config users never need

    run_dir = repo_path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(cfg_or_dict, CfgNode):
        text = cfg_or_dict.dump()
    elif isinstance(cfg_or_dict, argparse.Namespace):
        text = yaml.safe_dump(_cfg_to_dict(vars(cfg_or_dict)), sort_keys=True)
    elif isinstance(cfg_or_dict, dict):
        text = yaml.safe_dump(_cfg_to_dict(cfg_or_dict), sort_keys=True)
    else:
        raise TypeError(
            f"write_run_info: expected a CfgNode, dict or argparse.Namespace, got {_type_name(cfg_or_dict)}"
        )
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(run_dir / "versions.json") as tmp:
        tmp.write_text(json.dumps(library_versions(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return run_dir


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def default_argument_parser(description: str = "") -> argparse.ArgumentParser:
    """The shared CLI of config-driven scripts.

    Flags: ``--cfg FILE``, ``--data_dir``, ``--output_dir``, ``--resume [CKPT]`` (no value = last checkpoint),
    ``--eval``, ``--submit``, ``--fast_dev_run``, ``--num_gpus``, ``--num_shards``, then trailing ``KEY VALUE``
    overrides. Scripts may add or redefine flags (conflicting definitions replace these).
    """
    parser = _ConfigArgumentParser(
        description=description,
        conflict_handler="resolve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override config keys, e.g. SOLVER.BASE_LR 0.001 TRAIN.BATCH_SIZE 4",
    )
    parser.add_argument("--cfg", dest="cfg_file", metavar="FILE", default=None, help="YAML config file")
    parser.add_argument("--data_dir", default=None, help="data root (overrides DATA.ROOT and $EGO4D_DATA)")
    parser.add_argument("--output_dir", default=None, help="run folder for logs and checkpoints (OUTPUT_DIR)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CKPT",
        help="resume training from CKPT, or from the run's last checkpoint when no path is given",
    )
    parser.add_argument("--eval", action="store_true", help="evaluate only (no training)")
    parser.add_argument("--submit", action="store_true", help="predict the test split and write the submission")
    parser.add_argument("--fast_dev_run", action="store_true", help="one batch of each stage as a smoke test")
    parser.add_argument("--num_gpus", type=int, default=None, help="accelerator devices per node (0 = CPU)")
    parser.add_argument("--num_shards", type=int, default=None, help="number of nodes")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser


_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


class _ConfigArgumentParser(argparse.ArgumentParser):
    """Argument parser that gives back a config key swallowed by ``--resume``'s optional value.

    ``--resume SOLVER.MAX_EPOCH 3`` means "resume from the last checkpoint, with one override", not "resume from a
    file named SOLVER.MAX_EPOCH".
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        resume = getattr(namespace, "resume", None)
        if isinstance(resume, str) and _CONFIG_KEY.match(resume):
            namespace.resume = "last"
            namespace.opts = [resume] + list(getattr(namespace, "opts", None) or [])
        return namespace, extras


def _flag_opts(args: argparse.Namespace) -> list:
    opts = []
    if getattr(args, "output_dir", None):
        opts += ["OUTPUT_DIR", str(args.output_dir)]
    if getattr(args, "resume", None):
        opts += ["CHECKPOINT.RESUME", str(args.resume)]
    if getattr(args, "eval", False) or getattr(args, "submit", False):
        opts += ["TRAIN.ENABLE", False, "TEST.ENABLE", True]
    if getattr(args, "submit", False):
        opts += ["TEST.SUBMIT", True]
    if getattr(args, "fast_dev_run", False):
        opts += ["FAST_DEV_RUN", True]
    if getattr(args, "num_gpus", None) is not None:
        opts += ["NUM_GPUS", int(args.num_gpus)]
    if getattr(args, "num_shards", None) is not None:
        opts += ["NUM_SHARDS", int(args.num_shards)]
    return opts


def cfg_from_args(
    args: argparse.Namespace, extensions: Iterable[Callable[[CfgNode], object]] = (), freeze: bool = True
) -> CfgNode:
    """Config for parsed :func:`default_argument_parser` arguments.

    Order: defaults -> extensions -> ``--cfg`` -> flags (``--output_dir``, ``--resume``, ``--eval``, ``--submit``,
    ``--fast_dev_run``, ``--num_gpus``, ``--num_shards``) -> trailing ``KEY VALUE`` opts -> ``--data_dir``.
    """
    opts = list(getattr(args, "opts", None) or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    groups = [(_flag_opts(args), "command-line flag"), (opts, _COMMAND_LINE)]
    return _assemble(getattr(args, "cfg_file", None), groups, extensions, getattr(args, "data_dir", None), freeze)
