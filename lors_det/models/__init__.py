from . import adapters, backbones, dense_heads, detectors, layers, lors, necks, roi_heads  # noqa: F401
