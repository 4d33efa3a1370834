"""Which checkpoint ``--resume`` (without a path) continues from."""
import glob
import os.path as osp
import warnings
from typing import Optional

from mmengine.runner.checkpoint import find_latest_checkpoint

from ..checkpoint import CorruptCheckpointError, load_checkpoint_file


def intact_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to resume from: the recorded last one if it reads, else the newest
    ``epoch_*.pth`` / ``iter_*.pth`` of ``work_dir`` that reads, with a warning naming both.
    None when the work dir has no checkpoint (training starts from scratch)."""
    last = find_latest_checkpoint(work_dir)  # mmengine's record, work_dir/last_checkpoint
    saved = glob.glob(osp.join(work_dir, 'epoch_*.pth')) + glob.glob(osp.join(work_dir,
                                                                              'iter_*.pth'))
    saved = [p for p in sorted(saved, key=osp.getmtime, reverse=True)
             if not p.endswith('_adapter.pth')]
    candidates = ([last] if last else []) + [p for p in saved if p != last]
    problems = []
    for path in candidates:
        try:
            load_checkpoint_file(path)
        except (FileNotFoundError, CorruptCheckpointError) as error:
            problems.append(' '.join(str(error).split()))  # one line for the warning
            continue
        if problems:
            warnings.warn(f'--resume: {problems[0]}; resuming from {path}, the newest intact '
                          'checkpoint, instead')
        return path
    if problems:
        raise CorruptCheckpointError('--resume: no intact checkpoint in '
                                     f'{work_dir}: ' + '; '.join(problems))
    return None
