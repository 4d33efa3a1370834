"""Training-loop parts: crash-safe checkpointing, exact mid-epoch resume, adapter
checkpoints, autocast mixed precision."""
from .hooks import *  # noqa: F401,F403
from .optim_wrappers import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
