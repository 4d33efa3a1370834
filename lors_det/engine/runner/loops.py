"""ResumableEpochBasedTrainLoop: resuming from a mid-epoch checkpoint continues that epoch."""
from mmdet.registry import LOOPS
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` (same arguments) that, after resuming from an
    iteration checkpoint (``iter_N.pth``), skips the batches of the current epoch that were
    trained before it.

    mmengine restarts such an epoch at its first batch while keeping the iteration count: the
    first batches train twice and the epoch runs past its length. Here the sampler gives the
    same order (its seed and epoch are restored) and the first
    ``iter - epoch * len(dataloader)`` batches are drawn and dropped without training, so the
    run continues exactly where it stopped. (Drawing them loads their data: a resumed epoch
    costs that much extra loading, no compute.)
    """

    def batches_done_in_epoch(self) -> int:
        done = self._iter - self._epoch * len(self.dataloader)
        # == len: saved after the epoch's last batch, before its end-of-epoch hooks ran
        if not 0 <= done <= len(self.dataloader):
            raise RuntimeError(
                f'resumed at iteration {self._iter} of epoch {self._epoch}, which has '
                f'{len(self.dataloader)} batches: the checkpoint does not fit this dataloader '
                '(train_dataloader batch size or dataset changed?)')
        return done

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        skip = self.batches_done_in_epoch()
        if skip:
            print_log(f'resuming epoch {self._epoch + 1} after its first {skip} batches',
                      logger='current')
        for idx, data_batch in enumerate(self.dataloader):
            if idx >= skip:
                self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
