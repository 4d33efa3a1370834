"""The one way lors_det reads a checkpoint file: ``torch.load(weights_only=True)`` with the
allow-list of :mod:`.safe_globals`, and errors that name the file.

:func:`register_mmengine_loader` puts :func:`load_checkpoint_file` behind mmengine's plain-path
checkpoint scheme, so ``tools/test.py``, ``--resume``, ``load_from``, ``mmdet.apis``
(``init_detector``, ``DetInferencer``) and every tool using mmengine's ``load_checkpoint`` go
through it. A file the user trusts can still be read in full on purpose
(:func:`trust_checkpoint`, the tools' ``--unsafe-load``), with a warning.
"""
import os
import os.path as osp
import pickle
import re
import warnings
from typing import Any, Set

import torch

_TRUSTED: Set[str] = set()
# what the pickle machinery says about a cut or garbled stream (rather than a refused object)
_DAMAGED_PICKLE = (r'truncat|EOF|ran out of input|invalid load key|could not find MARK|'
                   r'stack underflow|unexpected end')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file references something the weights-only loader does not build."""


class CorruptCheckpointError(RuntimeError):
    """The file is not a readable torch checkpoint (truncated, damaged zip, wrong records)."""


def trust_checkpoint(path: str) -> None:
    """Let :func:`load_checkpoint_file` unpickle ``path`` without restrictions: for a legacy
    checkpoint from a source you trust (it can run any code when loaded)."""
    _TRUSTED.add(osp.realpath(path))


def _refused_global(message: str) -> str:
    """The refused global named in torch's (long) weights-only error message."""
    for pattern in (r'refused [^:]*', r'GLOBAL (\S+)', r'unrecognized function (\S+)',
                    r'but got (<[^>]*>)', r'Unsupported operand \d+'):
        found = re.search(pattern, message)
        if found:
            return found.group(0)
    return message.strip().splitlines()[0]


def _weights_only_reason(error: pickle.UnpicklingError) -> str:
    """The unpickler's own words inside torch's long message, without torch's advice to
    allow-list whatever was refused."""
    message = str(error)
    found = re.search(r'WeightsUnpickler error:\s*(.*?)\s*(?:\n\nCheck the documentation|$)',
                      message, re.S)
    reason = found.group(1) if found else message
    return reason.split(' Please use `torch.serialization.add_safe_globals')[0].strip()


def load_checkpoint_file(path: str, map_location: Any = 'cpu', *, unsafe: bool = False) -> Any:
    """Read the checkpoint at ``path`` with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file references a global outside the allow-list; the
            message names the file and the global.
        CorruptCheckpointError: the file cannot be read as a checkpoint (truncated, damaged).
    ``unsafe=True`` (or :func:`trust_checkpoint`) unpickles everything, with a warning.
    """
    path = osp.expanduser(os.fspath(path))
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if unsafe or osp.realpath(path) in _TRUSTED:
        warnings.warn(f'{path}: loading with weights_only=False on request; a malicious file '
                      'can run any code now', stacklevel=2)
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _weights_only_reason(error)
        if not re.search(_DAMAGED_PICKLE, reason, re.I):
            raise UnsafeCheckpointError(
                f'{path}: refused to load: {_refused_global(reason)}. A checkpoint holds '
                f'tensors and plain data; this one asks to build something else ({reason}). '
                'If you trust the file, load it with --unsafe-load (tools) or '
                'lors_det.checkpoint.trust_checkpoint(path).') from error
        raise CorruptCheckpointError(
            f'{path}: not a readable checkpoint (truncated or damaged?): {reason}') from error
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise CorruptCheckpointError(
            f'{path}: not a readable checkpoint (truncated or damaged?): '
            f'{type(error).__name__}: {error}') from error


def _load_local(filename: str, map_location: Any = None) -> Any:
    return load_checkpoint_file(filename, map_location)


def register_mmengine_loader() -> None:
    """Route mmengine's local-path checkpoint loading through :func:`load_checkpoint_file`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)
