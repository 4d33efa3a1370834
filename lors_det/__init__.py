"""lors_det: AdaMixer, LORS, VeRA and CondLoRA as an MMDetection 3.x plugin.

Importing the package registers every module into mmdet's registries, so configs load it with
``custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)``. It also makes
mmengine read checkpoints through :mod:`lors_det.checkpoint` (weights only, an allow-list in
which nothing can run code, errors naming the file).
"""
from .checkpoint import register_checkpoint_safe_globals, register_mmengine_loader
from .version import __version__

register_checkpoint_safe_globals()
register_mmengine_loader()

from . import apis, datasets, engine, evaluation, models  # noqa: E402,F401  (registration)

__all__ = ['__version__']
