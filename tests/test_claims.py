"""The claims' statistics and verdicts on hand-made rows, one outcome at a time, and the results README text."""
import re

import numpy as np
import pytest

from examples.reproduce.claims import (
    CRITERIA,
    MIN_SEEDS,
    aer_score,
    bootstrap_mean,
    claim_verdict,
    evaluate_claims,
    robustness,
    verdict,
)
from examples.reproduce.claims_report import method_table, render_readme

GRID = {'processes': ['agp@0.667', 'linear@0.667'], 'sparsities': [0.95, 0.8], 'seeds': [0, 1, 2],
        'core': ['natural', 'bap', 'adversarial-fgsm0.1', 'adversarial-pgd0.1'],
        'claim2': ['adversarial-fgsm0.3', 'bap-c1.0', 'bap-c3.0'], 'claim2_process': 'agp@0.667'}
CONFIG = {'model': 'lenet5', 'dataset': 'mnist', 'dense_epochs': 8, 'epochs': 15, 'batch_size': 128, 'lr': 0.001,
          'total_times': 10, 'test_limit': 2000}


def _row(method, process, seed, sp, clean, linf, l2):
    return {'method': method, 'process': process, 'seed': seed, 'sparsity': sp, 'clean_accuracy': clean,
            'robust_auc': {'linf': linf, 'l2': l2},
            'key_points': [{'norm': 'linf', 'budget': 0.1, 'accuracy': linf}, {'norm': 'l2', 'budget': 1.5,
                                                                                'accuracy': l2}],
            'curves': {n: {'budgets': [0, 1], 'accuracy': [clean, 0.0], 'unit': n} for n in ('linf', 'l2')}}


def _grid_rows(value, seeds=(0, 1, 2), noise=0.0):
    """Rows of the whole grid; ``value(method, process_index, seed, sparsity)`` -> (clean, linf, l2)."""
    rng = np.random.default_rng(1)
    rows = []
    for pi, p in enumerate(GRID['processes']):
        for s in seeds:
            for m in GRID['core'] + (GRID['claim2'] if p == GRID['claim2_process'] else []):
                for sp in GRID['sparsities']:
                    c, a, b = value(m, pi, s, sp)
                    rows.append(_row(m, p, s, sp, c, a + noise * rng.standard_normal(), b))
    return rows


def test_bootstrap_interval_of_constant_differences_is_the_value():
    assert bootstrap_mean([0.03] * 6) == pytest.approx((0.03, 0.03, 0.03))
    mean, low, high = bootstrap_mean([-0.1, 0.0, 0.1, 0.2])
    assert mean == pytest.approx(0.05) and -0.1 <= low < mean < high <= 0.2
    assert all(np.isnan(bootstrap_mean([])))


@pytest.mark.parametrize('low,high,expected', [(0.01, 0.05, 'supported'), (-0.05, -0.01, 'contradicted'),
                                               (-0.01, 0.02, 'inconclusive'), (0.0, 0.02, 'inconclusive')])
def test_verdict_of_an_interval(low, high, expected):
    assert verdict(low, high) == expected


def test_claim_verdict_combines_statistics():
    s = lambda v: {'verdict': v, 'seeds': 3}
    assert claim_verdict([s('supported'), s('supported')]) == 'supported'
    assert claim_verdict([s('supported'), s('contradicted')]) == 'contradicted'
    assert claim_verdict([s('supported'), s('inconclusive')]) == 'inconclusive'
    assert claim_verdict([{'verdict': 'supported', 'seeds': MIN_SEEDS - 1}]) == 'inconclusive'
    assert claim_verdict([]) == 'inconclusive'


def test_scores():
    r = _row('bap', 'agp', 0, 0.8, 0.9, 0.5, 0.6)
    assert robustness(r) == pytest.approx(0.55) and aer_score(r) == pytest.approx(2.0 / 3)


def _supported(m, pi, s, sp):
    """BAP better and process-stable; natural robustness moves with the process; FGSM-RS budget-sensitive."""
    jitter = 0.002 * s
    if m == 'natural':
        return 0.98, 0.30 + 0.10 * pi + jitter, 0.40 + 0.10 * pi
    if m.startswith('bap'):
        return 0.97, 0.60 + jitter, 0.62
    if m == 'adversarial-fgsm0.3':
        return 0.90, 0.40 + jitter, 0.40
    return 0.97, 0.50 + 0.08 * pi + jitter, 0.55


def _contradicted(m, pi, s, sp):
    """Natural pruning and BAP move with the process, FGSM-RS is budget-stable, BAP worse."""
    jitter = 0.002 * s
    if m == 'natural':
        return 0.98 - 0.05 * pi, 0.30 + jitter, 0.40
    if m == 'bap-c3.0':
        return 0.80, 0.30, 0.30
    if m.startswith('bap'):
        return 0.95, 0.40 + 0.10 * pi + jitter, 0.45
    return 0.97, 0.55 + jitter, 0.60


def _inconclusive(m, pi, s, sp):
    """Differences whose sign flips with the seed: intervals straddle 0."""
    sign = (-1) ** s * (1 if sp > 0.9 else -1)
    if m == 'natural':
        return 0.98, 0.30 + 0.02 * pi * (s == 0), 0.40
    if m.startswith('bap'):
        return 0.97, 0.55 + 0.03 * sign + 0.02 * pi * (s == 1), 0.60 + (0.3 * (s == 0) if m == 'bap-c3.0' else 0)
    if m == 'adversarial-fgsm0.3':
        return 0.97, 0.55 + 0.1 * sign, 0.60
    return 0.97, 0.55 - 0.03 * sign + 0.02 * pi * (s == 2), 0.60


@pytest.mark.parametrize('value,expected', [(_supported, 'supported'), (_contradicted, 'contradicted'),
                                            (_inconclusive, 'inconclusive')])
def test_each_claim_reaches_each_outcome(value, expected):
    verdicts = evaluate_claims(_grid_rows(value), GRID)
    assert {c: v['verdict'] for c, v in verdicts.items()} == {c: expected for c in ('claim1', 'claim2', 'claim3')}
    for v in verdicts.values():
        for s in v['statistics']:
            assert s['n'] > 0 and s['seeds'] == 3 and s['interval'][0] <= s['mean'] <= s['interval'][1]


def test_supported_numbers():
    v = evaluate_claims(_grid_rows(_supported), GRID)
    a, b = v['claim1']['statistics']
    assert a['n'] == 6 and a['mean'] == pytest.approx(0.10)  # R gap 0.1, clean gap 0
    stab_fgsm, aer_fgsm, stab_pgd, aer_pgd = v['claim3']['statistics']
    assert stab_fgsm['mean'] == pytest.approx(0.04) and stab_fgsm['n'] == 6  # FGSM R gap 0.04, BAP 0
    assert aer_fgsm['n'] == 12
    # FGSM-RS eps 0.1 vs 0.3: A 0.673 vs 0.567; BAP's two cutoffs equal
    assert v['claim2']['statistics'][0]['mean'] == pytest.approx((0.97 + 0.50 + 0.55 - 0.90 - 0.40 - 0.40) / 3)


def test_two_seeds_are_inconclusive_however_clear():
    v = evaluate_claims(_grid_rows(_supported, seeds=(0, 1)), {**GRID, 'seeds': [0, 1]})
    assert all(c['verdict'] == 'inconclusive' for c in v.values())
    assert all('2 seed(s) finished' in s['reason'] for c in v.values() for s in c['statistics'])


def test_missing_runs_leave_their_units_out():
    rows = [r for r in _grid_rows(_supported) if not (r['method'] == 'adversarial-pgd0.1' and r['seed'] == 0)]
    stats = evaluate_claims(rows, GRID)['claim3']['statistics']
    assert [s['n'] for s in stats] == [6, 12, 4, 8]


def _readme(rows, missing):
    same = {'coverage': rows[0]['coverage']} if rows and 'coverage' in rows[0] else {}
    dense = [{**_row('dense', '-', s, 0.0, 0.98, 0.3, 0.4), **same} for s in (0, 1, 2)]
    return render_readme(rows, dense, evaluate_claims(rows, GRID), GRID, CONFIG, 'cmd', 3600.0, missing,
                         notes=['a caveat'])


@pytest.mark.parametrize('case', ['complete', 'partial', 'empty'])
def test_results_readme_has_no_empty_list_artefacts(case):
    rows = {'complete': _grid_rows(_supported), 'partial': _grid_rows(_supported)[:20], 'empty': []}[case]
    missing = {'complete': [], 'partial': [f'run{i}' for i in range(30)], 'empty': ['all']}[case]
    text = _readme(rows, missing)
    for bad in ('[]', '{}', 'None', 'nan', ' none', ', ,', '()', 'at sparsities \n'):
        assert bad not in text, (bad, case)
    assert not re.search(r':\s*$', text.split('## Verdicts')[1].split('\n')[0])
    # the criteria come before any number of the verdicts
    assert text.index(CRITERIA['claim1'][:40]) < text.index('**Claim 1:')
    assert ('Partial' in text) == bool(missing)
    assert '## Caveats' in text and '- a caveat' in text
    assert ('## Regime check' in text) == bool(rows)
    if case == 'partial':
        assert 'and 22 more' in text


@pytest.mark.parametrize('coverage', [None, 'key points', 'every budget'])
def test_results_readme_says_where_apgd_ran(coverage):
    rows = [{**r, **({'coverage': coverage} if coverage else {})} for r in _grid_rows(_supported)]
    text = _readme(rows, [])
    warned = '**APGD ran at: key points' in text  # rows without the key predate every-budget evaluation
    assert warned == (coverage != 'every budget') and ('APGD ran at every budget' in text) == (not warned)


def test_method_table_means_and_counts():
    table = method_table(_grid_rows(_supported))
    nat = [t for t in table if t['method'] == 'natural' and t['sparsity'] == 0.8][0]
    assert nat['n'] == 6 and nat['clean']['mean'] == pytest.approx(0.98)
    assert nat['linf']['mean'] == pytest.approx(0.35 + 0.002, abs=1e-9)
    extra = [t for t in table if t['method'] == 'bap-c1.0' and t['sparsity'] == 0.95][0]
    assert extra['n'] == 3


def test_write_results_collects_consistent_runs_of_a_real_sweep(tmp_path):
    """A tiny digits grid run by the sweep: finished runs become rows, a run whose config changed does not."""
    import json

    from examples.reproduce.claims_report import write_results
    from nni_bap.cli.config import RunConfig
    from nni_bap.cli.sweep import run_sweep
    cfg = {'model': 'digits_cnn', 'dataset': 'digits', 'dense_epochs': 1, 'epochs': 1, 'total_times': 2,
           'train_limit': 128, 'test_limit': 32,
           'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}],
           'eval': {'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fgsm': {}}},
                    'l2': {'budgets': [0.0, 0.5], 'key_points': [0.5], 'attacks': {'deepfool': {'steps': 5}}}}}
    grid = {'processes': ['agp@0.5'], 'sparsities': [0.5], 'seeds': [0], 'core': ['natural', 'bap'], 'claim2': [],
            'claim2_process': 'agp@0.5'}
    work = tmp_path / 'work'
    run_sweep(RunConfig.from_dict(cfg), [0.5], ['natural', 'bap'], work, progress=False, processes=['agp@0.5'])
    out = tmp_path / 'results'
    verdicts = write_results(work, out, grid, cfg, 'cmd', ['a caveat'])
    rows = json.loads((out / 'aer.json').read_text())
    assert sorted(r['method'] for r in rows) == ['bap', 'natural'] and all(r['sparsity'] == 0.5 for r in rows)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['missing'] == ['dense-seed0']  # the sweep's dense run trained 1 epoch, not 1 + 1
    assert all(v['verdict'] == 'inconclusive' for v in verdicts.values())  # one seed
    text = (out / 'README.md').read_text()
    assert 'Partial: 1 of' in text and '| natural AGP | 1 |' in text
    for png in ('claims.png', 'methods.png', 'curves.png'):
        assert (out / png).stat().st_size > 1000
    # a run whose config no longer matches the grid's is not used
    (work / 'agp@0.5-seed0' / 'bap-0.5' / 'report.json').write_text('{}')
    write_results(work, out, grid, cfg, 'cmd')
    assert [r['method'] for r in json.loads((out / 'aer.json').read_text())] == ['natural']


def test_claim2_uses_only_its_sparsities():
    rows = _grid_rows(_supported)
    assert evaluate_claims(rows, GRID)['claim2']['statistics'][0]['n'] == 6  # both sparsities x 3 seeds
    v = evaluate_claims(rows, {**GRID, 'claim2_sparsities': [0.95]})['claim2']
    assert v['statistics'][0]['n'] == 3 and v['verdict'] == 'supported'
