"""lors_det: AdaMixer, LORS, VeRA and CondLoRA as an MMDetection 3.x plugin.

Importing the package registers every module into mmdet's registries, so configs load it with
``custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)``.
"""
from .compat import register_checkpoint_safe_globals
from .version import __version__

register_checkpoint_safe_globals()

from . import datasets, models  # noqa: E402,F401  (registration side effects)

__all__ = ['__version__', 'register_checkpoint_safe_globals']
