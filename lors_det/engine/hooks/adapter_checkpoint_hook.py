"""AdapterCheckpointHook: an adapter checkpoint beside every full checkpoint of a run."""
from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ...models.adapters.checkpoint import (CONTENTS, adapter_checkpoint_path,
                                         save_adapter_checkpoint)


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """After ``CheckpointHook`` writes ``epoch_12.pth``, write ``epoch_12_adapter.pth`` beside it.

    Args:
        contents (str): 'trainable' (default: adapter state plus neck / heads / buffers, i.e.
            everything but the frozen pretrained backbone weights) or 'adapter' (only the
            adapter entries: VeRA b, d, seed [, A/B]; CondLoRA θ). See ``checkpoint.py``.
        suffix (str): appended to the full checkpoint's file name. Defaults to '_adapter'.

    The full checkpoint's path is read from the message hub's ``last_ckpt``, which
    ``CheckpointHook`` updates; this hook runs after it (priority LOWEST). Adapter files are
    small and are not pruned with ``max_keep_ckpts``.
    """

    priority = 'LOWEST'

    def __init__(self, contents: str = 'trainable', suffix: str = '_adapter') -> None:
        if contents not in CONTENTS:
            raise ValueError(f'AdapterCheckpointHook.contents must be one of {CONTENTS}, got '
                             f'{contents!r}')
        if not suffix:
            raise ValueError('AdapterCheckpointHook.suffix must be non-empty (it would '
                             'overwrite the full checkpoint)')
        self.contents = contents
        self.suffix = suffix
        self._last_seen = None

    def before_train(self, runner) -> None:
        # a resumed run starts with last_ckpt set: that checkpoint is not ours to shadow
        self._last_seen = runner.message_hub.get_info('last_ckpt')

    def _save_if_new(self, runner) -> None:
        last = runner.message_hub.get_info('last_ckpt')
        if not last or last == self._last_seen:
            return
        self._last_seen = last
        if not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        path = adapter_checkpoint_path(last, self.suffix)
        save_adapter_checkpoint(model, path, contents=self.contents,
                                meta=dict(epoch=runner.epoch, iter=runner.iter,
                                          full_checkpoint=last))
        print_log(f'Adapter checkpoint ({self.contents}) saved to {path}', logger='current')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._save_if_new(runner)

    def after_train_epoch(self, runner) -> None:
        self._save_if_new(runner)

    def after_train(self, runner) -> None:
        self._save_if_new(runner)
