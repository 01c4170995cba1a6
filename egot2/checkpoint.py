"""Checkpoints: safe loading, key-map steps, strict loading, and writers for the official containers.

Loading is a short pipeline::

    load_file(path)                 torch.load(weights_only=True, map_location="cpu"); only config objects allowed
      -> extract_state_dict(obj)    "state_dict" / "model_state" / the flat TalkNet mapping
      -> apply_key_map(sd, steps)   StripPrefix("module."), SelectPrefix("model."), Rename(...), Drop(...), ...
      -> load_state_dict_exact(module, sd, expected_missing, expected_unexpected)

The official files come in three containers (see the checkpoint manifests): ``social_pth`` = ``{"epoch", "state_dict",
"mAP"}`` (LAM/TTM), ``talknet_flat`` = the state dict itself (ASD), and ``lightning_1.6`` = a PyTorch-Lightning 1.6
checkpoint whose ``hyper_parameters`` may pickle a yacs/fvcore ``CfgNode`` or an ``argparse.Namespace``. Those config
objects are allowed through a restricted unpickler (``CfgNode``s come back as yacs ``CfgNode``s); anything else that
would need code to unpickle is refused, never loaded with full pickle.
"""
from __future__ import annotations

import argparse
import importlib
import math
import pickle
import re
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from egot2.media import atomic_path

__all__ = [
    "LIGHTNING_FORMAT_VERSION",
    "EGOT2G_HOI_PLACEHOLDERS",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "InertObject",
    "load_file",
    "extract_state_dict",
    "StripPrefix",
    "SelectPrefix",
    "Rename",
    "Drop",
    "AddPrefix",
    "apply_key_map",
    "LoadReport",
    "load_state_dict_exact",
    "load_checkpoint",
    "save_social_checkpoint",
    "save_flat_checkpoint",
    "save_lightning_checkpoint",
    "model_checkpoint_callback_state",
]

#: Lightning version written into checkpoints we produce (the version the original EgoT2 code pinned).
LIGHTNING_FORMAT_VERSION = "1.6.4"

#: Globals of the EgoT2-g HOI checkpoint's pickled torchtext vocabulary; pass as ``placeholders`` to load that file
#: (the vocabulary is rebuilt from the taxonomy, so the pickled object is not needed).
EGOT2G_HOI_PLACEHOLDERS = ("torchtext.vocab.vocab.Vocab", "torchtext._torchtext.Vocab")


class UnsafeCheckpointError(ValueError):
    """The file pickles objects whose unpickling could run arbitrary code; it is refused."""


class CheckpointMismatchError(ValueError):
    """A state dict does not fit a module: missing, unexpected or misshapen keys (all listed in the message)."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


# ---------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------

_CFG_NODE_NAMES = ("yacs.config.CfgNode", "fvcore.common.config.CfgNode")

# torch's weights-only unpickler fills only plain dicts, so a pickled CfgNode is rebuilt as an OrderedDict (whose
# __dict__ receives the CfgNode flags) and turned back into a CfgNode after loading. The nodes made during the
# current load are recorded here; loads are serialised by _LOAD_LOCK (torch's allowlist is process-global anyway).
_LOAD_LOCK = threading.Lock()
_pending_nodes: dict = {}


def _cfg_node_class(pickled_name: str) -> type:
    if pickled_name == "fvcore.common.config.CfgNode":
        try:
            return importlib.import_module("fvcore.common.config").CfgNode
        except ImportError:
            return CfgNode
    return CfgNode


def _make_cfg_node_stand_in(pickled_name: str) -> type:
    def __new__(cls, *args, **kwargs):
        node = OrderedDict()
        _pending_nodes[id(node)] = (node, pickled_name)
        return node

    return type("CfgNodeStandIn", (), {"__new__": __new__, "__module__": __name__})


class InertObject:
    """Stand-in for a pickled object whose class is deliberately not loaded (see ``load_file(placeholders=...)``).

    Attributes:
        pickled_class: dotted name of the class (or function) the file refers to.
        args: positional arguments the pickle passed to it.
        state: the object's pickled state (plain data), or ``None``.
    """

    pickled_class = "?"
    args: tuple = ()
    state = None

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"InertObject({self.pickled_class})"


def _make_inert(name: str) -> type:
    return type("InertObject", (InertObject,), {"pickled_class": name, "__module__": __name__})


def _numpy_globals() -> list:
    """numpy scalars and dtypes (e.g. a social checkpoint's ``mAP`` saved as ``numpy.float64``) are plain data."""
    scalar = np._core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [getattr(np.dtypes, name) for name in np.dtypes.__all__ if isinstance(getattr(np.dtypes, name), type)]
    return allowed


_ALLOWED_NAMES = {"argparse.Namespace", "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}


def _offending_globals(path: Path, err: Exception, tolerated: Iterable[str]) -> list:
    """Names of the globals that made the restricted unpickler stop, best effort, for the error message."""
    names = []
    if zipfile.is_zipfile(path):
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001  (a listing failure must not hide the real refusal)
            names = []
    tolerated = set(tolerated) | _ALLOWED_NAMES
    names = [n for n in names if n not in tolerated and not n.startswith("numpy.dtypes.")]
    if not names:
        message = str(err)
        names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", message)
        names += re.findall(r"unrecognized function (\S+)", message)
        names += re.findall(r"but got <class '([\w.]+)'>", message)
    return list(dict.fromkeys(names))


def _is_refusal(err: Exception) -> bool:
    text = str(err)
    # "Unsupported operand" is not among them: random bytes produce it, so it reads as a corrupt file.
    markers = ("Unsupported global", "Trying to call reduce", "Can only build", "Can only create new",
               "Can only SETITEM", "Can only append")
    return any(marker in text for marker in markers)


def _restore_cfg_nodes(obj, memo: dict):
    """Replace the OrderedDicts made for pickled CfgNodes (recorded in ``_pending_nodes``) by real CfgNodes.

    ``memo`` maps ``id(original)`` to ``(original, result)``; keeping the original alive keeps its id unique, so
    shared references (pickle's memo) stay shared.
    """
    if id(obj) in memo:
        return memo[id(obj)][1]
    result = obj
    if isinstance(obj, dict) and id(obj) in _pending_nodes:
        flags = obj.__dict__
        items = {k: _restore_cfg_nodes(v, memo) for k, v in obj.items()}
        result = _cfg_node_class(_pending_nodes[id(obj)][1])(items, new_allowed=bool(flags.get("__new_allowed__")))
        if flags.get("__immutable__"):
            result.freeze()
    elif isinstance(obj, (dict, list, argparse.Namespace)):
        memo[id(obj)] = (obj, obj)  # before descending: containers updated in place may refer to themselves
        if isinstance(obj, dict):
            for k, v in obj.items():
                obj[k] = _restore_cfg_nodes(v, memo)
        elif isinstance(obj, list):
            obj[:] = [_restore_cfg_nodes(v, memo) for v in obj]
        else:
            for k, v in vars(obj).items():
                setattr(obj, k, _restore_cfg_nodes(v, memo))
    elif type(obj) is tuple:
        result = tuple(_restore_cfg_nodes(v, memo) for v in obj)
    memo[id(obj)] = (obj, result)
    return result


def load_file(path: Union[str, Path], placeholders: Iterable[str] = ()) -> object:
    """Load a checkpoint file without running code from it.

    ``torch.load(path, weights_only=True, map_location="cpu")`` with exactly these extra globals allowed: yacs and
    fvcore ``CfgNode`` (returned as ``CfgNode``), ``argparse.Namespace`` and numpy scalars/dtypes.

    Args:
        path: checkpoint file.
        placeholders: dotted names of further classes to load as inert :class:`InertObject` stand-ins (their state
            kept as plain data, no code run), e.g. :data:`EGOT2G_HOI_PLACEHOLDERS`.

    Returns:
        The unpickled object, tensors on the CPU.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file pickles anything else that would need code to unpickle (names it).
        ValueError: the file is not a readable PyTorch checkpoint (corrupt, truncated, empty).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: is not a file (expected a checkpoint file)")
    placeholders = tuple(placeholders)
    allowed = [argparse.Namespace, *_numpy_globals()]
    allowed += [(_make_cfg_node_stand_in(name), name) for name in _CFG_NODE_NAMES]
    allowed += [(_make_inert(name), name) for name in placeholders]
    with _LOAD_LOCK:
        _pending_nodes.clear()
        try:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, weights_only=True, map_location="cpu")
            if _pending_nodes:
                obj = _restore_cfg_nodes(obj, {})
        except pickle.UnpicklingError as err:
            if _is_refusal(err):
                names = _offending_globals(path, err, (*_CFG_NODE_NAMES, *placeholders))
                what = ", ".join(names) if names else "an object that is not allowed"
                raise UnsafeCheckpointError(
                    f"{path} needs arbitrary code to load ({what}); refusing. Only tensors, plain containers, "
                    f"CfgNode and argparse.Namespace are accepted"
                ) from None
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
        except Exception as err:  # noqa: BLE001  (torch raises KeyError, EOFError, RuntimeError... on bad bytes)
            raise ValueError(
                f"{path}: not a readable PyTorch checkpoint (corrupt or truncated: {type(err).__name__}: {err})"
            ) from None
        finally:
            _pending_nodes.clear()
    return obj


def _describe_keys(keys: Sequence, limit: int = 12) -> str:
    keys = [str(k) for k in keys]
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_state_dict(state_dict, source: str, where: str) -> "OrderedDict[str, torch.Tensor]":
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{source}: {where} is a {type(state_dict).__name__}, expected a mapping of tensors")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state_dict.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: {where} holds entries that are not named tensors: {_describe_keys(bad)}")
    return OrderedDict(state_dict)


def extract_state_dict(obj, source: str = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """The state dict inside a loaded checkpoint container.

    ``obj["state_dict"]`` if present (social and Lightning files), else ``obj["model_state"]`` (PySlowFast), else
    ``obj`` itself when every value is a tensor (TalkNet's flat files).

    Args:
        obj: what :func:`load_file` returned.
        source: name used in error messages (normally the file path).

    Raises:
        ValueError: no state dict found (the message lists the top-level keys) or it holds non-tensor entries.
    """
    if isinstance(obj, Mapping):
        for field in ("state_dict", "model_state"):
            if field in obj:
                return _check_state_dict(obj[field], source, f"field {field!r}")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return _check_state_dict(obj, source, "the flat state dict")
        raise ValueError(
            f"{source}: no state dict found: expected a 'state_dict' or 'model_state' field or a flat mapping of "
            f"tensors; top-level keys: [{_describe_keys(list(obj.keys()))}]"
        )
    raise ValueError(f"{source}: no state dict found: the file holds a {type(obj).__name__}, not a mapping")


# ---------------------------------------------------------------------------------------------------------------
# Key maps
# ---------------------------------------------------------------------------------------------------------------


def _rebuild(pairs: Iterable, step) -> "OrderedDict[str, torch.Tensor]":
    result: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    origin: dict = {}
    for old, new, value in pairs:
        if new in result:
            raise ValueError(f"{step!r}: keys {origin[new]!r} and {old!r} both become {new!r}")
        result[new] = value
        origin[new] = old
    return result


@dataclass(frozen=True)
class StripPrefix:
    """Remove ``prefix`` from keys that start with it (e.g. DDP's ``module.``).

    Args:
        prefix: text to remove.
        required: every key must start with ``prefix`` (otherwise an error lists those that do not).
    """

    prefix: str
    required: bool = False

    def __call__(self, state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
        if self.required:
            lacking = [k for k in state_dict if not k.startswith(self.prefix)]
            if lacking:
                raise ValueError(f"{self!r}: keys without the prefix: {_describe_keys(lacking)}")
        return _rebuild(
            ((k, k[len(self.prefix):] if k.startswith(self.prefix) else k, v) for k, v in state_dict.items()), self
        )


@dataclass(frozen=True)
class SelectPrefix:
    """Keep only the keys under ``prefix`` (a sub-tree, e.g. Lightning's ``model.``) and strip it."""

    prefix: str

    def __call__(self, state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
        selected = _rebuild(
            ((k, k[len(self.prefix):], v) for k, v in state_dict.items() if k.startswith(self.prefix)), self
        )
        if state_dict and not selected:
            raise ValueError(f"{self!r}: no key starts with {self.prefix!r}; keys: {_describe_keys(list(state_dict))}")
        return selected


@dataclass(frozen=True)
class Rename:
    """Rewrite every key with ``re.sub(pattern, repl, key)`` (all occurrences)."""

    pattern: str
    repl: str

    def __call__(self, state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
        regex = re.compile(self.pattern)
        return _rebuild(((k, regex.sub(self.repl, k), v) for k, v in state_dict.items()), self)


@dataclass(frozen=True)
class Drop:
    """Remove every key in which ``pattern`` is found (``re.search``)."""

    pattern: str

    def __call__(self, state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
        regex = re.compile(self.pattern)
        return OrderedDict((k, v) for k, v in state_dict.items() if not regex.search(k))


@dataclass(frozen=True)
class AddPrefix:
    """Put ``prefix`` in front of every key."""

    prefix: str

    def __call__(self, state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict((self.prefix + k, v) for k, v in state_dict.items())


def apply_key_map(state_dict: Mapping, steps: Iterable = ()) -> "OrderedDict[str, torch.Tensor]":
    """Apply key-map steps in order; the input is not modified.

    Args:
        state_dict: ``{key: tensor}``.
        steps: callables ``OrderedDict -> OrderedDict`` (``StripPrefix``, ``SelectPrefix``, ``Rename``, ``Drop``,
            ``AddPrefix`` or any function of that shape).

    Raises:
        ValueError: a step fails or makes two keys collide (the message names the step and the keys).
    """
    result = OrderedDict(state_dict)
    for step in steps:
        result = OrderedDict(step(result))
    return result


# ---------------------------------------------------------------------------------------------------------------
# Strict loading
# ---------------------------------------------------------------------------------------------------------------


class LoadReport(NamedTuple):
    """What :func:`load_state_dict_exact` left out: the module keys not loaded and the file keys ignored."""

    missing: list
    unexpected: list


def _compile_expectations(patterns) -> list:
    if isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        if isinstance(pattern, re.Pattern):
            compiled.append((pattern.pattern, pattern))
            continue
        try:
            compiled.append((pattern, re.compile(pattern)))
        except re.error:
            compiled.append((pattern, None))
    return compiled


def _matches(key: str, expectation) -> bool:
    text, regex = expectation
    return key == text or (regex is not None and regex.fullmatch(key) is not None)


def _split_expected(keys: list, patterns) -> tuple:
    """``(expected, surprising, stale_patterns)`` for a list of keys and expected names/regexes."""
    expectations = _compile_expectations(patterns)
    used = set()
    expected, surprising = [], []
    for key in keys:
        hits = [i for i, exp in enumerate(expectations) if _matches(key, exp)]
        used.update(hits)
        (expected if hits else surprising).append(key)
    stale = [exp[0] for i, exp in enumerate(expectations) if i not in used]
    return expected, surprising, stale


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _listing(title: str, lines: list, limit: int = 25) -> str:
    shown = "\n".join(f"    {line}" for line in lines[:limit])
    more = f"\n    ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"  {title} ({len(lines)}):\n{shown}{more}"


def load_state_dict_exact(
    module: nn.Module,
    state_dict: Mapping,
    expected_missing=(),
    expected_unexpected=(),
    source: Optional[str] = None,
) -> LoadReport:
    """Load ``state_dict`` into ``module`` strictly, or with exactly the expected keys left out.

    Key sets and shapes are compared before anything is copied. Every module key absent from the file must match
    ``expected_missing`` and every file key unknown to the module must match ``expected_unexpected`` (names or
    regexes, matched in full); every expectation must match at least one key, so stale expectations are caught too.

    Args:
        module: destination.
        state_dict: ``{key: tensor}`` (after key mapping).
        expected_missing: names/regexes of module keys the file may lack (they keep their current values).
        expected_unexpected: names/regexes of file keys the module does not have (they are ignored).
        source: file name for error messages.

    Returns:
        ``LoadReport(missing, unexpected)`` with the keys actually left out.

    Raises:
        CheckpointMismatchError: listing missing keys (module shapes), unexpected keys (file shapes), shape mismatches
            (both shapes) and stale expectations.
    """
    own = module.state_dict()
    missing_all = [k for k in own if k not in state_dict]
    unexpected_all = [k for k in state_dict if k not in own]
    missing, surprising_missing, stale_missing = _split_expected(missing_all, expected_missing)
    unexpected, surprising_unexpected, stale_unexpected = _split_expected(unexpected_all, expected_unexpected)
    mismatched = [
        (k, own[k], state_dict[k])
        for k in own
        if k in state_dict
        and isinstance(own[k], torch.Tensor)
        and (not isinstance(state_dict[k], torch.Tensor) or own[k].shape != state_dict[k].shape)
    ]
    if surprising_missing or surprising_unexpected or mismatched or stale_missing or stale_unexpected:
        parts = []
        if surprising_missing:
            parts.append(_listing("missing keys (in the module, not in the file; module shapes)",
                                  [f"{k} {_shape(own[k])}" for k in surprising_missing]))
        if surprising_unexpected:
            parts.append(_listing("unexpected keys (in the file, not in the module; file shapes)",
                                  [f"{k} {_shape(state_dict[k])}" for k in surprising_unexpected]))
        if mismatched:
            parts.append(_listing("shape mismatches (module vs file)",
                                  [f"{k}: module {_shape(a)} vs file {_shape(b)}" for k, a, b in mismatched]))
        if stale_missing:
            parts.append(_listing("expected missing keys that are not missing", stale_missing))
        if stale_unexpected:
            parts.append(_listing("expected unexpected keys that are not in the file", stale_unexpected))
        where = f"{source}: " if source else ""
        raise CheckpointMismatchError(
            f"{where}state dict does not fit {type(module).__name__}:\n" + "\n".join(parts),
            missing=surprising_missing,
            unexpected=surprising_unexpected,
            mismatched=[k for k, _, _ in mismatched],
        )
    ignored = set(unexpected)
    to_load = OrderedDict((k, v) for k, v in state_dict.items() if k not in ignored)
    if not missing:
        module.load_state_dict(to_load, strict=True)
    else:
        result = module.load_state_dict(to_load, strict=False)
        if set(result.missing_keys) != set(missing) or result.unexpected_keys:
            raise CheckpointMismatchError(
                f"{source or 'state dict'}: loading left out {sorted(result.missing_keys)} / ignored "
                f"{sorted(result.unexpected_keys)}, expected missing exactly {sorted(missing)}",
                missing=result.missing_keys,
                unexpected=result.unexpected_keys,
            )
    return LoadReport(missing=missing, unexpected=unexpected)


def load_checkpoint(
    module: nn.Module,
    path: Union[str, Path],
    steps: Iterable = (),
    expected_missing=(),
    expected_unexpected=(),
    placeholders: Iterable[str] = (),
) -> dict:
    """``load_file`` -> ``extract_state_dict`` -> ``apply_key_map`` -> ``load_state_dict_exact``.

    Returns:
        The container's other top-level entries (``epoch``, ``mAP``, ``global_step``, ``hyper_parameters``, ...);
        empty for a flat state-dict file.
    """
    obj = load_file(path, placeholders=placeholders)
    state_dict = extract_state_dict(obj, source=str(path))
    state_dict = apply_key_map(state_dict, steps)
    load_state_dict_exact(module, state_dict, expected_missing, expected_unexpected, source=str(path))
    if isinstance(obj, Mapping) and ("state_dict" in obj or "model_state" in obj):
        return {k: v for k, v in obj.items() if k not in ("state_dict", "model_state")}
    return {}


# ---------------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------------


def _portable_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """CPU, contiguous, detached, and not a view into a larger storage (torch.save would write all of it)."""
    tensor = tensor.detach().cpu()
    whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    if not tensor.is_contiguous() or tensor.storage_offset() != 0 or not whole:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    return tensor


def _portable_state_dict(state_dict: Mapping, what: str) -> "OrderedDict[str, torch.Tensor]":
    checked = _check_state_dict(state_dict, what, "state_dict")
    return OrderedDict((k, _portable_tensor(v)) for k, v in checked.items())


_PLAIN_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size)


def _portable_tree(value, where: str):
    """Copy of ``value`` with tensors made portable; raises TypeError for anything a weights-only load refuses."""
    if isinstance(value, torch.Tensor):
        return _portable_tensor(value)
    if isinstance(value, CfgNode):  # fvcore's CfgNode is a subclass
        return value
    if isinstance(value, argparse.Namespace):
        for key, item in vars(value).items():
            _portable_tree(item, f"{where}.{key}")
        return value
    if isinstance(value, _PLAIN_LEAVES) or isinstance(value, (np.generic, np.dtype)):
        return value
    if type(value) in (dict, OrderedDict):
        return type(value)((k, _portable_tree(v, f"{where}[{k!r}]")) for k, v in value.items())
    if type(value) in (list, tuple, set):
        return type(value)(_portable_tree(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(
        f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a checkpoint that "
        f"loads with weights_only=True; convert it to tensors / plain Python data"
    )


def _save(obj, path: Union[str, Path]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_social_checkpoint(path: Union[str, Path], state_dict: Mapping, epoch: int, mAP: float) -> Path:
    """Write the Ego4D social (LAM/TTM) container ``{"epoch": int, "state_dict": OrderedDict, "mAP": float}``."""
    if isinstance(epoch, bool) or int(epoch) != epoch:
        raise ValueError(f"{path}: epoch must be an integer, got {epoch!r}")
    if not math.isfinite(float(mAP)):
        raise ValueError(f"{path}: mAP must be a finite number, got {mAP!r}")
    container = {"epoch": int(epoch), "state_dict": _portable_state_dict(state_dict, str(path)), "mAP": float(mAP)}
    return _save(container, path)


def save_flat_checkpoint(path: Union[str, Path], state_dict: Mapping) -> Path:
    """Write a bare state dict (TalkNet's ``saveParameters`` format: the file is the mapping itself)."""
    return _save(_portable_state_dict(state_dict, str(path)), path)


def _progress(*fields: str, value: int = 0) -> dict:
    counters = {name: value for name in fields}
    return {"total": dict(counters), "current": dict(counters)}


def _batch_progress(value: int = 0) -> dict:
    return {**_progress("ready", "started", "processed", "completed", value=value), "is_last_batch": False}


def _evaluation_loop_state() -> dict:
    return {
        "state_dict": {},
        "dataloader_progress": _progress("ready", "completed"),
        "epoch_loop.state_dict": {},
        "epoch_loop.batch_progress": _batch_progress(),
    }


def _lightning_1_6_loops(epoch: int, global_step: int) -> dict:
    """Progress state of Lightning 1.6's loops for a run that finished ``epoch`` epochs and ``global_step`` steps."""
    fit_loop = {
        "state_dict": {},
        "epoch_loop.state_dict": {},
        "epoch_loop.batch_progress": _batch_progress(global_step),
        "epoch_loop.scheduler_progress": _progress("ready", "completed", value=global_step),
        "epoch_loop.batch_loop.state_dict": {},
        "epoch_loop.batch_loop.optimizer_loop.state_dict": {},
        "epoch_loop.batch_loop.optimizer_loop.optim_progress": {
            "optimizer": {
                "step": _progress("ready", "completed", value=global_step),
                "zero_grad": _progress("ready", "started", "completed", value=global_step),
            },
            "optimizer_position": 1,
        },
        "epoch_loop.batch_loop.manual_loop.state_dict": {},
        "epoch_loop.batch_loop.manual_loop.optim_step_progress": _progress("ready", "completed"),
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.dataloader_progress": _progress("ready", "completed"),
        "epoch_loop.val_loop.epoch_loop.state_dict": {},
        "epoch_loop.val_loop.epoch_loop.batch_progress": _batch_progress(),
        "epoch_progress": _progress("ready", "started", "processed", "completed", value=epoch),
    }
    return {
        "fit_loop": fit_loop,
        "validate_loop": _evaluation_loop_state(),
        "test_loop": _evaluation_loop_state(),
        "predict_loop": _evaluation_loop_state(),
    }


def model_checkpoint_callback_state(
    monitor: str,
    mode: str = "max",
    best_model_path: str = "",
    best_model_score: Optional[float] = None,
    dirpath: str = "",
    last_model_path: str = "",
) -> dict:
    """The ``callbacks`` entry Lightning 1.6's ``ModelCheckpoint`` writes: ``{state_key: state}``."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    state_key = (
        f"ModelCheckpoint{{'monitor': {monitor!r}, 'mode': {mode!r}, 'every_n_train_steps': 0, "
        f"'every_n_epochs': 1, 'train_time_interval': None, 'save_on_train_epoch_end': True}}"
    )
    score = None if best_model_score is None else torch.tensor(float(best_model_score))
    return {
        state_key: {
            "monitor": monitor,
            "best_model_score": score,
            "best_model_path": best_model_path,
            "current_score": score,
            "dirpath": dirpath,
            "best_k_models": {best_model_path: score} if best_model_path and score is not None else {},
            "kth_best_model_path": best_model_path,
            "kth_value": score if score is not None else torch.tensor(-math.inf if mode == "max" else math.inf),
            "last_model_path": last_model_path,
        }
    }


def save_lightning_checkpoint(
    path: Union[str, Path], state_dict: Mapping, epoch: int = 0, global_step: int = 0, **extra
) -> Path:
    """Write a PyTorch-Lightning 1.6-style checkpoint that both the original EgoT2 code and this project read.

    Top level: ``epoch``, ``global_step``, ``pytorch-lightning_version`` (``"1.6.4"``), ``state_dict`` (keys as
    given, normally ``model.``-prefixed), ``loops`` (1.6 progress state), ``callbacks`` (``{}``),
    ``optimizer_states`` (``[]``), ``lr_schedulers`` (``[]``); ``extra`` adds or replaces top-level entries, e.g.
    ``hparams_name="kwargs", hyper_parameters={"cfg": cfg}``, ``callbacks=model_checkpoint_callback_state(...)``
    or ``**{"pytorch-lightning_version": "1.6.5"}``.

    Raises:
        TypeError: an ``extra`` value could not be read back with ``weights_only=True`` (the message says where).
    """
    if "state_dict" in extra:
        raise TypeError("save_lightning_checkpoint: pass the state dict as the state_dict argument, not in extra")
    checkpoint = {
        "epoch": int(epoch),
        "global_step": int(global_step),
        "pytorch-lightning_version": LIGHTNING_FORMAT_VERSION,
        "state_dict": _portable_state_dict(state_dict, str(path)),
        "loops": _lightning_1_6_loops(int(epoch), int(global_step)),
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    for key, value in extra.items():
        checkpoint[key] = _portable_tree(value, f"{path}: {key}")
    return _save(checkpoint, path)
