from . import (adapters, backbones, dense_heads, detectors, layers, lors, necks,  # noqa: F401
               roi_heads, task_modules)
