"""Functions that work from config and checkpoint files."""
from .adapter_checkpoints import compose_checkpoint, extract_adapter_checkpoint, merge_checkpoint

__all__ = ['compose_checkpoint', 'extract_adapter_checkpoint', 'merge_checkpoint']
