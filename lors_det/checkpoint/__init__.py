"""Reading checkpoints safely: the weights-only allow-list and the loader every path uses."""
from .loading import (CorruptCheckpointError, UnsafeCheckpointError, load_checkpoint_file,
                      register_mmengine_loader, trust_checkpoint)
from .safe_globals import checkpoint_safe_globals, register_checkpoint_safe_globals

__all__ = [
    'CorruptCheckpointError', 'UnsafeCheckpointError', 'checkpoint_safe_globals',
    'load_checkpoint_file', 'register_checkpoint_safe_globals', 'register_mmengine_loader',
    'trust_checkpoint'
]
