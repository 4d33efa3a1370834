"""A library of hostile checkpoints, written by the tests (not collected: leading underscore).

Each payload sits next to a perfectly normal ``state_dict``, so a loader that runs it still
loads the model and carries on as if nothing happened. Every code-running payload creates
``marker`` (a file path) when it runs; a safe loader must refuse the file, name it and the
refused global, and leave no marker.

``HOSTILE`` maps a payload name to ``(builder, refused)``: ``builder(base, marker)`` returns the
checkpoint object to ``torch.save`` (or, for the damaged files, ``None`` and the file is made
by :func:`write_damaged`); ``refused`` is a regex the loader's error must contain.
"""
import copy
import copyreg
import os
import subprocess
import zipfile
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

if int(np.__version__.split('.')[0]) >= 2:
    from numpy._core import multiarray
else:
    from numpy.core import multiarray


class Reduce:
    """Pickles as ``fn(*args)`` (REDUCE), or as ``cls.__new__(cls)`` + BUILD(state) when ``fn``
    is ``copyreg.__newobj__``."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        if self.state is None:
            return self.fn, self.args
        return self.fn, self.args, self.state


def touch_code(marker: str) -> str:
    """Python source that creates ``marker`` and evaluates to a tensor (so that the rebuild
    that runs it returns what it expects and the load goes on silently)."""
    return f"(open({marker!r}, 'w').close(), __import__('torch').zeros(1))[1]"


def builtin_eval():
    """``eval`` reached through ``getattr`` alone: getattr(getattr(getattr, '__self__'), 'eval')
    (a builtin function's ``__self__`` is the builtins module)."""
    builtins_module = Reduce(getattr, (getattr, '__self__'))
    return Reduce(getattr, (builtins_module, 'eval'))


def eval_chain(marker: str):
    """torch's allowed ``_rebuild_from_type_v2(func, type, args, state)`` calls ``func(*args)``:
    with ``func = eval`` (via getattr) it runs any code."""
    return Reduce(torch._tensor._rebuild_from_type_v2,
                  (builtin_eval(), torch.Tensor, (touch_code(marker),), {}))


class _HistoryBufferWithState:
    """Pickles as a HistoryBuffer (NEWOBJ + BUILD) with any state (pickle checks that the
    object claims the class it is rebuilt as)."""

    def __init__(self, state: dict):
        self.state = state

    @property
    def __class__(self):
        return HistoryBuffer

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (HistoryBuffer,), self.state


def history_buffer_with_state(state: dict):
    return _HistoryBufferWithState(state)


def _buffer_state(**override) -> dict:
    state = dict(max_length=1000, _log_history=np.array([0.5, 0.25]),
                 _count_history=np.array([1, 1]),
                 statistics_methods=dict(HistoryBuffer._statistics_methods))
    state.update(override)
    return state


def base_checkpoint(state_dict: Dict[str, torch.Tensor]) -> dict:
    """A normal mmengine-style checkpoint around ``state_dict``: meta, optimizer state, message
    hub with a HistoryBuffer and a numpy scalar."""
    first = next(iter(state_dict.values()))
    return dict(
        meta=dict(epoch=1, iter=2, mmengine_version='0.10.7',
                  dataset_meta=dict(classes=tuple(str(d) for d in range(10)))),
        state_dict=dict(state_dict),
        optimizer=dict(state={0: dict(momentum_buffer=torch.zeros_like(first))},
                       param_groups=[dict(lr=0.01, momentum=0.9, params=[0])]),
        message_hub=dict(log_scalars={'train/loss': HistoryBuffer([0.5], [1])},
                         runtime_info=dict(epoch=1, iter=2, eta=np.float64(3.0)),
                         resumed_keys={}))


def _in(where: str) -> Callable:
    def build(base: dict, marker: str) -> dict:
        ckpt = copy.copy(base)
        if where == 'meta':
            ckpt['meta'] = dict(base['meta'], note=eval_chain(marker))
        elif where == 'message_hub':
            hub = dict(base['message_hub'])
            hub['runtime_info'] = dict(hub['runtime_info'], eta=eval_chain(marker))
            ckpt['message_hub'] = hub
        elif where == 'optimizer':
            ckpt['optimizer'] = dict(base['optimizer'],
                                     state={0: dict(momentum_buffer=eval_chain(marker))})
        else:  # a state_dict value: the tensor the model loads
            state_dict = dict(base['state_dict'])
            key = next(iter(state_dict))
            state_dict[key] = eval_chain(marker)
            ckpt['state_dict'] = state_dict
        return ckpt
    return build


def _in_meta(payload: Callable) -> Callable:
    def build(base: dict, marker: str) -> dict:
        return dict(base, meta=dict(base['meta'], note=payload(marker)))
    return build


def _as_logged_loss(payload: Callable) -> Callable:
    """The payload as the message hub's only HistoryBuffer (where mmengine keeps them)."""
    def build(base: dict, marker: str) -> dict:
        hub = dict(base['message_hub'], log_scalars={'train/loss': payload(marker)})
        return dict(base, message_hub=hub)
    return build


GETATTR_CHAIN = r"builtins\.getattr\(getattr, '__self__'\)"
SYSTEM = rf'GLOBAL {os.system.__module__}\.system'

HOSTILE: Dict[str, Tuple[Optional[Callable], str]] = {
    # the getattr/eval chain in every part of a checkpoint
    'chain_in_meta': (_in('meta'), GETATTR_CHAIN),
    'chain_in_message_hub': (_in('message_hub'), GETATTR_CHAIN),
    'chain_in_optimizer_state': (_in('optimizer'), GETATTR_CHAIN),
    'chain_in_state_dict_value': (_in('state_dict'), GETATTR_CHAIN),
    # classic __reduce__ payloads
    'reduce_os_system': (_in_meta(lambda m: Reduce(os.system, (f'touch {m}',))), SYSTEM),
    'reduce_subprocess_popen': (
        _in_meta(lambda m: Reduce(subprocess.Popen, (['touch', m],))),
        r'GLOBAL (subprocess|commands)\.Popen'),  # protocol 2 writes Python 2's module name
    'reduce_builtins_exec': (
        _in_meta(lambda m: Reduce(exec, (f'open({m!r}, "w").close()',))),
        r'GLOBAL (builtins\.)?exec'),
    # through each allow-listed global
    'numpy_reconstruct_of_os_system': (
        _in_meta(lambda m: Reduce(multiarray._reconstruct,
                                  (Reduce(os.system, (f'touch {m}',)), (0,), b'b'))),
        SYSTEM),
    'numpy_scalar_of_chain': (
        # the object dtype built by a call, not by BUILD (its class is not allow-listed)
        _in_meta(lambda m: Reduce(multiarray.scalar, (Reduce(np.dtype, ('O8', False, True)),
                                                      eval_chain(m)))),
        GETATTR_CHAIN),
    'numpy_dtype_of_chain': (
        _in_meta(lambda m: Reduce(np.dtype, (eval_chain(m),))), GETATTR_CHAIN),
    'numpy_ndarray_of_chain': (
        _in_meta(lambda m: Reduce(np.ndarray, ((1,), eval_chain(m)))), GETATTR_CHAIN),
    'history_buffer_method_is_chain': (
        _as_logged_loss(lambda m: history_buffer_with_state(
            _buffer_state(statistics_methods=dict(mean=eval_chain(m))))),
        GETATTR_CHAIN),
    # no code runs at load, but HistoryBuffer.__setstate__ would install a torch rebuild
    # function as `mean` of every HistoryBuffer in the process
    'history_buffer_method_replaced': (
        _as_logged_loss(lambda m: history_buffer_with_state(
            _buffer_state(statistics_methods=dict(mean=torch._utils._rebuild_tensor_v2)))),
        r"HistoryBuffer state: statistics method 'mean'"),
    'history_buffer_called_as_function': (
        _in_meta(lambda m: Reduce(HistoryBuffer, ([1.0], [1]))),
        r'HistoryBuffer called as a function'),
    'getattr_of_other_history_buffer_attribute': (
        _in_meta(lambda m: Reduce(getattr, (HistoryBuffer, 'register_statistics'))),
        r"builtins\.getattr\(HistoryBuffer, 'register_statistics'\)"),
    # damaged files
    'truncated_file': (None, 'not a readable checkpoint'),
    'zip_with_wrong_record': (None, 'not a readable checkpoint'),
}
RUNS_CODE = [name for name, (_, refused) in HOSTILE.items()
             if refused in (GETATTR_CHAIN, SYSTEM) or 'GLOBAL' in refused]


def write_damaged(name: str, base: dict, path: str) -> None:
    """A normal checkpoint cut in half, or with its first tensor record renamed away."""
    torch.save(base, path)
    if name == 'truncated_file':
        with open(path, 'rb') as f:
            data = f.read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
        return
    with zipfile.ZipFile(path) as src:
        items = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for info, data in items:
            if info.filename.endswith('/data/0'):
                info.filename = info.filename[:-len('/data/0')] + '/data/zero'
            dst.writestr(info, data)


def write_hostile(name: str, base: dict, directory: str, marker: str) -> str:
    """Write payload ``name`` to ``directory/name.pth``; returns the path."""
    path = os.path.join(directory, f'{name}.pth')
    builder, _ = HOSTILE[name]
    if builder is None:
        write_damaged(name, base, path)
    else:
        torch.save(builder(base, marker), path)
    return path
