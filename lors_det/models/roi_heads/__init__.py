from . import bbox_heads  # noqa: F401
