"""What torch's weights-only unpickler may build from an mmengine checkpoint, and why each
entry cannot run code.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 does not pass the
flag, so its own checkpoints need a few globals beyond torch's defaults: the message hub's
``HistoryBuffer`` objects (``log_scalars``), the numpy arrays and scalars inside them (and the
message hub's ``eta``), and the buffers' statistics methods, which pickle protocol 2 writes as
``getattr(HistoryBuffer, 'min')``.

An allow-listed global can be (a) called with any arguments the file builds from other allowed
objects (REDUCE), (b) instantiated (NEWOBJ) and (c) given any state (BUILD). Each entry below is
harmless under all three with hostile arguments. There is no generic callable: with plain
``builtins.getattr`` a file reaches ``eval`` in two steps (``getattr(getattr, '__self__')`` is
the builtins module) and torch's own allowed ``_rebuild_from_type_v2(func, type, args, state)``
then calls it. The name ``builtins.getattr`` is therefore mapped to
:func:`history_buffer_statistic`, which returns four known plain functions and nothing else.
"""
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

# The statistics methods ``HistoryBuffer._set_default_statistics`` registers (and pickles).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
_HISTORY_BUFFER_STATE_KEYS = frozenset(
    ('max_length', '_log_history', '_count_history', 'statistics_methods'))


def _describe(obj: Any) -> str:
    """A short name for an object met while unpickling (no repr: it could be huge)."""
    if obj is history_buffer_statistic:
        return 'getattr'  # what the file named
    if obj is CheckedHistoryBuffer:
        return 'HistoryBuffer'
    if isinstance(obj, type) or callable(obj):
        return getattr(obj, '__qualname__', type(obj).__qualname__)
    return type(obj).__qualname__


def history_buffer_statistic(owner: Any, name: Any) -> Any:
    """Stands in for ``builtins.getattr`` when unpickling: ``getattr(HistoryBuffer, 'min')``
    (and 'max', 'current', 'mean') returns that plain function; any other owner or name is
    refused. The unpickler cannot call what this returns (those functions are not allowed
    globals), and none of them leads to another object."""
    if ((owner is HistoryBuffer or owner is CheckedHistoryBuffer) and type(name) is str
            and name in HISTORY_BUFFER_STATISTICS):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused global builtins.getattr({_describe(owner)}, {name!r}): a checkpoint may use '
        f'getattr only for the HistoryBuffer statistics {HISTORY_BUFFER_STATISTICS}')


class CheckedHistoryBuffer(HistoryBuffer):
    """Unpickles ``mmengine.logging.history_buffer.HistoryBuffer`` after checking its state,
    then becomes a plain ``HistoryBuffer``.

    ``HistoryBuffer.__setstate__`` copies the pickled ``statistics_methods`` into the class-wide
    registry, so a file could replace ``mean`` for every buffer of the process with any object
    it can build. Here the state must be exactly what ``HistoryBuffer.__getstate__`` writes:
    numeric 1-d numpy histories of equal length, an int ``max_length``, and statistics methods
    that are the ones already registered under the same names.
    """

    def __init__(self, *args, **kwargs):
        # a checkpoint never calls HistoryBuffer(...): refuse the REDUCE route altogether
        raise pickle.UnpicklingError(
            'refused global mmengine.logging.history_buffer.HistoryBuffer called as a function: '
            'checkpoints only restore HistoryBuffer objects from their state')

    def __setstate__(self, state: Any) -> None:
        _check_history_buffer_state(state)
        state = dict(state)
        state.pop('statistics_methods', None)  # the same objects as the class registry's
        self.__class__ = HistoryBuffer
        self._set_default_statistics()  # as HistoryBuffer.__setstate__ does
        self.__dict__.update(state)


def _refuse_state(problem: str):
    raise pickle.UnpicklingError(
        f'refused mmengine.logging.history_buffer.HistoryBuffer state: {problem}')


def _check_history_buffer_state(state: Any) -> None:
    if type(state) is not dict:
        _refuse_state(f'expected a dict, got {_describe(state)}')
    unknown = [k for k in state if k not in _HISTORY_BUFFER_STATE_KEYS]
    if unknown:
        _refuse_state(f'unexpected keys {unknown!r}')
    missing = _HISTORY_BUFFER_STATE_KEYS - {'statistics_methods'} - state.keys()
    if missing:
        _refuse_state(f'missing keys {sorted(missing)!r}')
    if type(state['max_length']) is not int:
        _refuse_state(f'max_length is {_describe(state["max_length"])}, not int')
    histories = [state['_log_history'], state['_count_history']]
    for key, value in zip(('_log_history', '_count_history'), histories):
        if type(value) is not np.ndarray or value.ndim != 1 or value.dtype.kind not in 'biuf':
            _refuse_state(f'{key} is not a 1-d numeric numpy array')
    if len(histories[0]) != len(histories[1]):
        _refuse_state('_log_history and _count_history differ in length')
    methods = state.get('statistics_methods', {})
    if type(methods) is not dict:
        _refuse_state(f'statistics_methods is {_describe(methods)}, not dict')
    registered = dict(HistoryBuffer._statistics_methods)
    registered.update((name, getattr(HistoryBuffer, name)) for name in HISTORY_BUFFER_STATISTICS)
    for name, method in methods.items():
        if type(name) is not str or name not in registered or method is not registered[name]:
            _refuse_state(f'statistics method {name!r} ({_describe(method)}) is not the '
                          f'registered HistoryBuffer.{name}')


def _numpy_globals() -> list:
    """numpy's array and scalar reconstructors, for numpy 1.x and 2.x layouts."""
    if int(np.__version__.split('.')[0]) >= 2:  # numpy 2 moved numpy.core to numpy._core
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    entries = [
        # allocates an empty array; numpy raises unless the class given is an ndarray type,
        # and ndarray is the only one a file can name
        multiarray._reconstruct,
        # BUILD copies raw bytes into the array, or for the object dtype stores a list of
        # objects the unpickler already built; the constructor only views a buffer numpy
        # bounds-checks
        np.ndarray,
        # parses a type description (a string, a type or a tuple); builds no other object
        np.dtype,
        # builds a scalar from raw bytes (for the object dtype: returns an already built object)
        multiarray.scalar,
    ]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25 builds dtypes as per-type classes
    if dtypes is not None:
        # only given state (BUILD: byte order, flags); the logged values and counts
        entries += [dtypes.Float64DType, dtypes.Int64DType]
    return entries


def checkpoint_safe_globals() -> List[Any]:
    """The allow-list: objects, or ``(object, 'module.name')`` pairs that load ``module.name``
    as ``object`` (the form ``torch.serialization.add_safe_globals`` takes)."""
    return _numpy_globals() + [
        (CheckedHistoryBuffer, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
        (history_buffer_statistic, 'builtins.getattr'),
    ]


def register_checkpoint_safe_globals() -> None:
    """Allow-list :func:`checkpoint_safe_globals` for weights-only loads (idempotent)."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
