"""AtomicCheckpointHook: a kill at any moment leaves an intact checkpoint to resume from."""
import os
import os.path as osp

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

TMP_SUFFIX = '.tmp'


def _fsync_file(path: str) -> None:
    with open(path, 'rb') as f:
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this OS / file system
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomically(path: str, text: str) -> None:
    tmp = path + TMP_SUFFIX
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe saving (same arguments, same files).

    mmengine removes the oldest checkpoint *before* writing the new one, so with
    ``max_keep_ckpts=1`` a kill during a save leaves no checkpoint, and ``last_checkpoint``
    points at a missing file. Here a save writes ``.<name>.tmp``, fsyncs it, renames it to
    ``<name>`` (atomic), then rewrites ``last_checkpoint`` (atomically), and only then removes
    checkpoints beyond ``max_keep_ckpts``. Non-local ``out_dir`` backends keep mmengine's order.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        tmp_name = f'.{filename}{TMP_SUFFIX}'
        runner.save_checkpoint(
            self.out_dir, tmp_name, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        self._publish(osp.join(self.out_dir, tmp_name), self.last_ckpt)
        write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old_step in outdated:
            old = osp.join(self.out_dir, self.filename_tmpl.format(old_step))
            if osp.isfile(old):
                os.remove(old)

    def _publish(self, tmp_path: str, final_path: str) -> None:
        """Make the fully written ``tmp_path`` the checkpoint ``final_path``."""
        _fsync_file(tmp_path)
        os.replace(tmp_path, final_path)
        _fsync_dir(osp.dirname(final_path) or '.')
