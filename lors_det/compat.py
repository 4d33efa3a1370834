"""Make mmengine 0.10.7 checkpoints loadable under torch >= 2.6.

torch >= 2.6 defaults ``torch.load(weights_only=True)``; mmengine 0.10.7 calls ``torch.load``
without the flag, so its own checkpoints (numpy scalars and arrays in ``meta``, the message hub
state) are refused. We allow-list exactly the types those checkpoints contain instead of switching
the safety off.
"""
import collections

import numpy as np
import torch


def _numpy_globals():
    """Types pickled by numpy scalars/arrays inside mmengine checkpoint metadata."""
    items = [np.dtype, np.ndarray, np.core.multiarray._reconstruct, np.core.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes as instances of these classes (np.dtypes.Float64DType, ...)
    dtypes_mod = getattr(np, 'dtypes', None)
    if dtypes_mod is not None:
        items += [getattr(dtypes_mod, name) for name in dir(dtypes_mod) if name.endswith('DType')]
    return items


def _mmengine_globals():
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.logging.message_hub import MessageHub
    from mmengine.config.config import ConfigDict
    return [HistoryBuffer, MessageHub, ConfigDict]


def register_checkpoint_safe_globals():
    """Idempotently allow-list the types of mmengine checkpoints for ``weights_only`` loading."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads everything anyway
        return
    add(_numpy_globals() + _mmengine_globals() + [collections.OrderedDict, collections.defaultdict])
