"""benchmarks/lors_mmdet_demo.py on a 2-iteration smoke setting (Sparse R-CNN, the cheapest
family): both variants train through the README's demo command, the decoder split and the
parameter ratio come from the models, and a second call reruns nothing."""
import json

from _tools_helpers import load_script


def test_smoke_demo_study_records_both_variants_and_the_ratio(tmp_path, capsys):
    study = load_script('benchmarks/lors_mmdet_demo.py')
    out, table = tmp_path / 'demo.json', tmp_path / 'table.md'
    args = ['--smoke', '--families', 'sparse-rcnn', '--out', str(out),
            '--work-dir', str(tmp_path / 'w')]
    study.main(args)
    runs = json.loads(out.read_text())['runs']
    assert set(runs) == {'sparse-rcnn/stock/seed0', 'sparse-rcnn/lors/seed0'}
    stock, lors = runs['sparse-rcnn/stock/seed0'], runs['sparse-rcnn/lors/seed0']
    for run in (stock, lors):
        assert run['command'].startswith('bash tools/demo.sh configs/demo/sparse-rcnn')
        assert run['iterations'] == 2 and len(run['ap_per_epoch']) == 1
        assert run['decoder'] == run['decoder_shared'] + run['decoder_private']
    assert stock['decoder_shared'] == 0 and lors['decoder_shared'] > 0
    assert lors['decoder'] < stock['decoder']

    capsys.readouterr()
    study.main(args + ['--table', str(table)])
    assert capsys.readouterr().out.count('skipped') == 2
    rows = table.read_text().strip().splitlines()
    assert len(rows) == 2 + 2
    assert f'| {lors["decoder"] / stock["decoder"]:.2f}x |' in rows[3]
    assert '| 1.00x |' in rows[2]
