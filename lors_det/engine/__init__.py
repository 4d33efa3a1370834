"""Training-loop parts: crash-safe checkpointing and exact mid-epoch resume."""
from .hooks import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
