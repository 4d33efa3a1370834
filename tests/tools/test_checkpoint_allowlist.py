"""The torch.load allow-list of ``lors_det/checkpoint/safe_globals.py``: mmengine checkpoints load with
``weights_only=True`` (the torch >= 2.6 default, which mmengine 0.10.7 does not override) and
nothing else is let through.

The checkpoint is a real one: ``tools/train.py`` on the tiny digits config for one epoch with
validation and ``save_best``, so ``CheckpointHook`` writes the message hub's history buffers and
a best score as well as weights, optimizer and scheduler states.
"""
import argparse
import os
import os.path as osp
import pickle
import subprocess
import textwrap

import pytest
import torch
from mmengine.logging import HistoryBuffer

import lors_det  # noqa: F401  (registers the allow-list)
from lors_det.checkpoint import checkpoint_safe_globals
from lors_det.datasets.digits import ensure_digits_dataset

from _tools_helpers import PYTHON, TINY_DIGITS, run_tool, subprocess_env, write_tiny_config

BEST = "default_hooks = dict(checkpoint=dict(save_best='auto'))"
# Allow-listed but not reported by get_unsafe_globals_in_checkpoint, which lists the pickle's
# GLOBAL opcodes only: a numpy dtype is pickled as ``numpy.dtype('f8', ...)`` and then given its
# state (BUILD), which the weights-only unpickler allows only for instances of allow-listed
# types - and since numpy 1.25 that type is the per-dtype class (``type(np.dtype('f8'))``).
BUILD_ONLY_GLOBALS = {'numpy.dtypes.Float64DType', 'numpy.dtypes.Int64DType'}


def global_name(entry) -> str:
    """The name torch's weights-only unpickler matches an allow-listed global by (an entry is
    an object, or an ``(object, name)`` pair that loads ``name`` as ``object``)."""
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp('allowlist')
    data_root = str(root / 'digits') + '/'
    ensure_digits_dataset(data_root, **TINY_DIGITS)
    cfg = write_tiny_config(str(root / 'tiny.py'), data_root, max_epochs=1, validate=True,
                            extra=BEST)
    work_dir = str(root / 'work')
    run_tool(['tools/train.py', cfg, '--work-dir', work_dir])
    best = [f for f in os.listdir(work_dir) if f.startswith('best_')]
    assert len(best) == 1, os.listdir(work_dir)
    return osp.join(work_dir, 'epoch_1.pth')


def tensors_and_values(obj, prefix=''):
    """Flatten a checkpoint into {path: leaf}, HistoryBuffers as their (values, counts)."""
    if isinstance(obj, HistoryBuffer):
        values, counts = obj.data
        return {prefix + '/values': values, prefix + '/counts': counts}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(tensors_and_values(v, f'{prefix}/{k}'))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(tensors_and_values(v, f'{prefix}/{i}'))
        return out
    return {prefix: obj}


def test_checkpoint_loads_weights_only_with_the_same_content(checkpoint):
    safe = torch.load(checkpoint, map_location='cpu', weights_only=True)
    full = torch.load(checkpoint, map_location='cpu', weights_only=False)
    assert {'meta', 'state_dict', 'optimizer', 'param_schedulers', 'message_hub'} <= safe.keys()
    # the allow-listed objects were really in the file and came back as themselves
    buffers = safe['message_hub']['log_scalars']
    assert type(buffers['train/loss']) is HistoryBuffer  # not the checking stand-in
    assert len(buffers['train/loss'].data[0]) == TINY_DIGITS['num_train'] // 4
    assert 'best_score' in safe['message_hub']['runtime_info']

    flat_safe, flat_full = tensors_and_values(safe), tensors_and_values(full)
    assert flat_safe.keys() == flat_full.keys()
    for k, v in flat_full.items():
        w = flat_safe[k]
        assert type(w) is type(v), k
        if isinstance(v, torch.Tensor):
            assert torch.equal(w, v), k
        elif hasattr(v, 'dtype'):  # numpy arrays and scalars
            assert v.dtype == w.dtype and (v == w).all(), k
        else:
            assert w == v, k


def unsafe_globals_without_user_allow_list(path) -> set:
    """``get_unsafe_globals_in_checkpoint`` skips user allow-listed globals: list them with the
    user allow-list emptied for the call (torch's defaults stay), then restore it."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    finally:
        torch.serialization.add_safe_globals(saved)


def test_unsafe_globals_of_checkpoint_are_exactly_allow_listed(checkpoint):
    # after `import lors_det` nothing in the checkpoint is outside the allow-lists
    assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) == []

    needed = unsafe_globals_without_user_allow_list(checkpoint)
    allowed = {global_name(g) for g in checkpoint_safe_globals()}
    assert needed, 'the checkpoint needs no allow-list: the test would check nothing'
    assert needed <= allowed, f'not allow-listed: {sorted(needed - allowed)}'
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed
    assert allowed - needed == BUILD_ONLY_GLOBALS, sorted(allowed - needed)


def test_every_allow_list_entry_is_necessary(checkpoint):
    """Leave one entry out at a time: the load is refused, naming that entry (so the list is
    no blanket whitelist, and BUILD_ONLY_GLOBALS are really needed)."""
    entries = checkpoint_safe_globals()
    saved = torch.serialization.get_safe_globals()
    refused = {}
    try:
        for left_out in entries:
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals([g for g in entries if g is not left_out])
            with pytest.raises(pickle.UnpicklingError) as err:
                torch.load(checkpoint, map_location='cpu', weights_only=True)
            refused[global_name(left_out)] = str(err.value)
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(entries)
        torch.load(checkpoint, map_location='cpu', weights_only=True)  # all of them: loads
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)
    for name, message in refused.items():
        short = name.rsplit('.', 1)[-1]
        assert short in message, (name, message[:300])


def test_fresh_interpreter_refuses_the_checkpoint_until_lors_det_is_imported(checkpoint):
    script = textwrap.dedent(f"""
        import pickle, torch
        try:
            torch.load({checkpoint!r}, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as e:
            print('REFUSED', 'HistoryBuffer' in str(e) or 'numpy' in str(e) or 'getattr' in str(e))
        else:
            print('LOADED')
        import lors_det
        ckpt = torch.load({checkpoint!r}, map_location='cpu', weights_only=True)
        print('LOADED', sorted(ckpt['message_hub']['log_scalars'])[:1])
    """)
    env = subprocess_env()
    for var in ('TORCH_FORCE_WEIGHTS_ONLY_LOAD', 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        env.pop(var, None)
    out = subprocess.run([PYTHON, '-c', script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == 'REFUSED True', out.stdout
    assert lines[1].startswith('LOADED'), out.stdout


class _MakeDir:
    """A pickle payload that runs ``os.mkdir(path)`` when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


class _CallAllowedGetattrResult:
    """A payload that uses the allow-listed ``getattr`` to fetch ``HistoryBuffer.min`` and then
    *calls* it: fetching is allowed, calling a non-allow-listed function must not be."""

    def __reduce__(self):
        return HistoryBuffer.min, (HistoryBuffer([1.0], [1]),)


def test_objects_outside_the_allow_list_are_still_refused(tmp_path):
    namespace = str(tmp_path / 'namespace.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=0.1)},
               namespace)
    with pytest.raises(pickle.UnpicklingError, match='argparse.Namespace'):
        torch.load(namespace, weights_only=True)

    marker = str(tmp_path / 'pwned')
    payload = str(tmp_path / 'payload.pth')
    torch.save({'state_dict': {}, 'meta': _MakeDir(marker)}, payload)
    with pytest.raises(pickle.UnpicklingError, match=f'GLOBAL {os.mkdir.__module__}.mkdir'):
        torch.load(payload, weights_only=True)
    assert not osp.exists(marker)
    # control: the payload is live, an unrestricted load does run it
    torch.load(payload, weights_only=False)
    assert osp.isdir(marker)

    call = str(tmp_path / 'call.pth')
    torch.save({'meta': _CallAllowedGetattrResult()}, call)
    with pytest.raises(pickle.UnpicklingError,
                       match='call reduce for unrecognized function .*HistoryBuffer.min'):
        torch.load(call, weights_only=True)
    assert torch.load(call, weights_only=False)['meta'] == 1.0
