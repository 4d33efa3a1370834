"""Hostile checkpoints against every path that loads one (issue: a crafted checkpoint ran code
through the old allow-list's ``builtins.getattr``).

Every payload of ``_hostile_checkpoints.HOSTILE`` is fed to every loading path of the project,
in-process (:data:`LOADERS`), and the command-line tools are run on the getattr/eval chain in
subprocesses. Each load must fail with an error that names the file and the refused global (or,
for damaged files, says it is not a readable checkpoint), and no payload may leave its marker
file. Controls show that the payloads are live (an unrestricted load runs them) and that the
previous allow-list, with plain ``getattr``, runs the chain: these tests can fail.
"""
import copy
import os
import os.path as osp
import pickle
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope

import lors_det  # noqa: F401  (registers the safe loader)
from lors_det.checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                                 load_checkpoint_file)
from lors_det.datasets.digits import ensure_digits_dataset
from mmdet.registry import MODELS

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, osp.join(REPO, 'tests', 'tools'))
sys.path.insert(0, HERE)
from _hostile_checkpoints import (GETATTR_CHAIN, HOSTILE, RUNS_CODE,  # noqa: E402
                                  base_checkpoint, write_hostile)
from _tools_helpers import (TINY_DIGITS, load_script, run_tool,  # noqa: E402
                            write_tiny_config)

LORS_DEMO = osp.join(REPO, 'configs', 'demo', 'adamixer-lors_tiny_1xb8-demo_digits.py')


@pytest.fixture(autouse=True)
def restore_history_buffer_registry():
    """Unrestricted loads in the controls poison HistoryBuffer's class-wide statistics
    registry (that is the attack): undo it after each test."""
    saved = dict(HistoryBuffer._statistics_methods)
    yield
    HistoryBuffer._statistics_methods.clear()
    HistoryBuffer._statistics_methods.update(saved)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny AdaMixer config on tiny digits data and a normal checkpoint dict for its model."""
    root = tmp_path_factory.mktemp('hostile')
    data_root = str(root / 'digits') + '/'
    ensure_digits_dataset(data_root, **TINY_DIGITS)
    cfg_path = write_tiny_config(str(root / 'tiny.py'), data_root)
    cfg = Config.fromfile(cfg_path)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    return dict(cfg_path=cfg_path, cfg=cfg, base=base_checkpoint(model.state_dict()))


# --- every loading path, in-process -----------------------------------------------------------

def _mmengine_load_checkpoint(path, tiny, out):
    """tools/test.py, tools/train.py --resume and load_from: the runner's load_checkpoint."""
    from mmengine.runner.checkpoint import _load_checkpoint
    _load_checkpoint(path, map_location='cpu')


def _model_load_checkpoint(path, tiny, out):
    """mmengine's load_checkpoint into a built model (the analysis tools, user code)."""
    from mmengine.runner import load_checkpoint
    load_checkpoint(MODELS.build(tiny['cfg'].model), path, map_location='cpu', strict=True)


def _init_detector(path, tiny, out):
    from mmdet.apis import init_detector
    init_detector(tiny['cfg_path'], path, device='cpu')


def _det_inferencer(path, tiny, out):
    from mmdet.apis import DetInferencer
    DetInferencer(model=tiny['cfg_path'], weights=path, device='cpu', show_progress=False)


def _analysis_build_detector(path, tiny, out):
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    from analysis_utils import build_detector
    build_detector(tiny['cfg'], path)


def _fold_lors(path, tiny, out):
    load_script('tools/model_converters/fold_lors.py').fold_checkpoint(LORS_DEMO, path, out)


def _adapter_ckpt_extract(path, tiny, out):
    from lors_det.apis import extract_adapter_checkpoint
    extract_adapter_checkpoint(path, out, contents='adapter')


def _official_converter(path, tiny, out):
    load_script('tools/model_converters/adamixer_official_to_lors_det.py').convert_file(path, out)


LOADERS = {f.__name__.lstrip('_'): f for f in (
    _mmengine_load_checkpoint, _model_load_checkpoint, _init_detector, _det_inferencer,
    _analysis_build_detector, _fold_lors, _adapter_ckpt_extract, _official_converter)}


def assert_refused(error_text: str, path: str, refused: str) -> None:
    assert path in error_text, f'the error does not name the file {path}: {error_text[:600]}'
    assert re.search(refused, error_text), \
        f'the error does not name what was refused ({refused}): {error_text[:600]}'


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('payload', HOSTILE)
def test_every_loading_path_refuses_every_payload(payload, loader, tiny, tmp_path):
    marker = str(tmp_path / 'pwned')
    path = write_hostile(payload, tiny['base'], str(tmp_path), marker)
    registry_before = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(Exception) as error:
        LOADERS[loader](path, tiny, str(tmp_path / 'out.pth'))
    assert isinstance(error.value, (UnsafeCheckpointError, CorruptCheckpointError)) or \
        isinstance(error.value.__cause__, (UnsafeCheckpointError, CorruptCheckpointError)), \
        repr(error.value)[:600]
    assert_refused(str(error.value), path, HOSTILE[payload][1])
    assert not osp.exists(marker), f'{payload} ran code through {loader}'
    assert HistoryBuffer._statistics_methods == registry_before
    assert not osp.exists(tmp_path / 'out.pth')


def test_refusals_have_the_expected_error_types(tiny, tmp_path):
    for payload, (builder, _) in HOSTILE.items():
        path = write_hostile(payload, tiny['base'], str(tmp_path), str(tmp_path / 'm'))
        expected = CorruptCheckpointError if builder is None else UnsafeCheckpointError
        with pytest.raises(expected):
            load_checkpoint_file(path)
    # a refusal is still a pickle.UnpicklingError, as torch's own is
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


# --- controls: the payloads are live, and the old allow-list runs the chain -------------------

@pytest.mark.parametrize('payload', RUNS_CODE)
def test_payload_is_live_without_restrictions(payload, tiny, tmp_path):
    marker = str(tmp_path / 'pwned')
    path = write_hostile(payload, tiny['base'], str(tmp_path), marker)
    try:
        torch.load(path, map_location='cpu', weights_only=False)
    except Exception:  # some payloads break the load after their code ran
        pass
    for _ in range(50):  # subprocess.Popen returns before `touch` has run
        if osp.exists(marker):
            break
        import time
        time.sleep(0.05)
    assert osp.exists(marker), f'{payload} is not live: the security tests would check nothing'


def old_allow_list() -> list:
    """The allow-list before this fix: numpy types, HistoryBuffer and plain builtins.getattr."""
    from numpy.core import multiarray
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
            np.dtypes.Float64DType, np.dtypes.Int64DType, HistoryBuffer, getattr]


def test_old_allow_list_runs_the_chain_and_poisons_history_buffer(tiny, tmp_path):
    marker = str(tmp_path / 'pwned')
    chain = write_hostile('chain_in_meta', tiny['base'], str(tmp_path), marker)
    poison = write_hostile('history_buffer_method_replaced', tiny['base'], str(tmp_path), marker)
    saved_globals = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(old_allow_list())
    try:
        loaded = torch.load(chain, map_location='cpu', weights_only=True)
        torch.load(poison, map_location='cpu', weights_only=True)
        poisoned_mean = HistoryBuffer._statistics_methods['mean']
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved_globals)
    assert osp.exists(marker), 'the old allow-list no longer runs the chain: control broken'
    assert set(loaded['state_dict']) == set(tiny['base']['state_dict'])  # silently "fine"
    assert poisoned_mean is torch._utils._rebuild_tensor_v2

    os.remove(marker)
    with pytest.raises(UnsafeCheckpointError, match=GETATTR_CHAIN):
        load_checkpoint_file(chain)
    assert not osp.exists(marker)


def test_normal_checkpoint_loads_with_plain_history_buffers(tiny, tmp_path):
    path = str(tmp_path / 'normal.pth')
    torch.save(tiny['base'], path)
    loaded = load_checkpoint_file(path)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert type(buffer) is HistoryBuffer  # not the checking subclass
    assert buffer.mean() == 0.5 and buffer.statistics('mean') == 0.5
    assert loaded['message_hub']['runtime_info']['eta'] == np.float64(3.0)
    for key, value in tiny['base']['state_dict'].items():
        assert torch.equal(loaded['state_dict'][key], value), key


def test_unsafe_load_is_explicit_and_warns(tiny, tmp_path):
    """A trusted legacy checkpoint (an argparse.Namespace in meta) loads on request only."""
    import argparse
    path = str(tmp_path / 'legacy.pth')
    torch.save(dict(copy.copy(tiny['base']), meta=dict(args=argparse.Namespace(lr=0.1))), path)
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        load_checkpoint_file(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        loaded = load_checkpoint_file(path, unsafe=True)
    assert loaded['meta']['args'].lr == 0.1
    assert any('weights_only=False' in str(w.message) for w in caught)


# --- the command-line tools, end to end --------------------------------------------------------

@pytest.mark.parametrize('tool', ['test', 'resume', 'load_from', 'get_flops'])
def test_command_line_tools_refuse_the_chain(tool, tiny, tmp_path):
    marker = str(tmp_path / 'pwned')
    path = write_hostile('chain_in_meta', tiny['base'], str(tmp_path), marker)
    work = ['--work-dir', str(tmp_path / 'work')]
    args = {
        'test': ['tools/test.py', tiny['cfg_path'], path] + work,
        'resume': ['tools/train.py', tiny['cfg_path'], '--resume', path] + work,
        'load_from': ['tools/train.py', tiny['cfg_path'], '--cfg-options', f'load_from={path}']
        + work,
        'get_flops': ['tools/analysis_tools/get_flops.py', tiny['cfg_path'], '--checkpoint', path,
                      '--shape', '64', '64'],
    }[tool]
    proc = run_tool(args, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert_refused(proc.stderr, path, GETATTR_CHAIN)
    assert 'UnsafeCheckpointError' in proc.stderr
    assert not osp.exists(marker)


def test_test_tool_unsafe_load_flag(tiny, tmp_path):
    """tools/test.py --unsafe-load reads a trusted legacy file, saying so; without it: refused."""
    import argparse
    path = str(tmp_path / 'legacy.pth')
    torch.save(dict(copy.copy(tiny['base']), meta=dict(args=argparse.Namespace(lr=0.1))), path)
    cmd = ['tools/test.py', tiny['cfg_path'], path, '--work-dir', str(tmp_path / 'work')]
    refused = run_tool(cmd, check=False)
    assert refused.returncode != 0 and path in refused.stderr
    assert 'argparse.Namespace' in refused.stderr
    trusted = run_tool(cmd + ['--unsafe-load'])
    assert 'weights_only=False' in trusted.stderr
    assert 'coco/bbox_mAP' in trusted.stdout + trusted.stderr
