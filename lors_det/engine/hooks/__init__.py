from .adapter_checkpoint_hook import AdapterCheckpointHook
from .atomic_checkpoint_hook import AtomicCheckpointHook

__all__ = ['AdapterCheckpointHook', 'AtomicCheckpointHook']
