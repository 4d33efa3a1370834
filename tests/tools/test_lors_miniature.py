"""benchmarks/lors_miniature.py on a 2-iteration smoke setting: every variant runs, its decoder
split is the model's, the JSON resumes (runs already there are skipped) and the table has one
row per variant."""
import json

from _tools_helpers import load_script


def test_smoke_study_resumes_and_tabulates(tmp_path, capsys):
    study = load_script('benchmarks/lors_miniature.py')
    out, table = tmp_path / 'study.json', tmp_path / 'table.md'
    args = ['--smoke', '--seeds', '0', '--out', str(out), '--work-dir', str(tmp_path / 'w'),
            '--variants', 'plain-g2p32', 'lors', 'lors-t-only']
    study.main(args)
    runs = json.loads(out.read_text())['runs']
    assert set(runs) == {'plain-g2p32/seed0', 'lors/seed0', 'lors-t-only/seed0'}
    for run in runs.values():
        assert run['iterations'] == 2 and len(run['ap_per_epoch']) == 1
        assert run['decoder'] == run['decoder_shared'] + run['decoder_private']
        assert 'model.roi_head.bbox_head.sampling_offset_init=uniform' in run['options']
    # the LORS demo's decoder (tests/lors_adamixer/test_lors_configs.py derives 4,033,772)
    assert runs['lors/seed0']['decoder'] == 4_033_772
    assert runs['plain-g2p32/seed0']['decoder_shared'] == 0
    assert 0 < runs['lors-t-only/seed0']['decoder_shared'] < runs['lors/seed0']['decoder_shared']

    capsys.readouterr()
    study.main(args + ['--table', str(table)])  # everything is in the JSON: nothing reruns
    printed = capsys.readouterr().out
    assert printed.count('skipped') == 3
    rows = table.read_text().strip().splitlines()
    assert len(rows) == 2 + 3 and rows[3].startswith('| lors | 4,033,772 (')

