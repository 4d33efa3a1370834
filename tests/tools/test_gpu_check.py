"""tools/gpu_check.sh, dry-run on the CPU (the GPU run needs a lent device): it trains both R-50
configs in float32 and bf16 autocast with finite losses, compares outputs against a CPU copy
(identical here), and reports; on a machine without CUDA the default run says so and exits 2."""
import json

import pytest
import torch

from _tools_helpers import run_tool, subprocess_env


def test_dry_run_on_cpu(tmp_path):
    out = tmp_path / 'gpu_check.json'
    proc = run_tool(['bash', 'tools/gpu_check.sh', '--device', 'cpu', '--iters', '1',
                     '--infer-iters', '1', '--batch', '1', '--shape', '64', '96'],
                    env=subprocess_env(OUT=str(out)), timeout=600)
    assert 'gpu_check: PASSED' in proc.stdout
    report = json.loads(out.read_text())
    assert report['passed'] and report['device'] == 'cpu'
    for config in ('configs/adamixer/adamixer_r50_8xb2-1x_coco.py',
                   'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py'):
        row = report[config]
        assert row['fp32']['finite_losses'] and row['amp']['finite_losses']
        assert row['device_vs_cpu']['max_score_diff'] == 0.0  # the same CPU computation
        assert row['inference_img_per_s'] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_default_run_without_cuda_says_not_measured(tmp_path):
    proc = run_tool(['bash', 'tools/gpu_check.sh'], check=False,
                    env=subprocess_env(OUT=str(tmp_path / 'x.json')))
    assert proc.returncode == 2
    assert 'no CUDA device here; GPU numbers not measured' in proc.stdout
