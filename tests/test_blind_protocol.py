"""Issue 20's protocol (examples/blind): splits, the guard on test images, the selection rule and the confirmation
verdicts."""
import pytest

from examples.blind import protocol as bp
from examples.blind import stages
from nni_bap.evaluation.spec import validate_spec


def _row(method, seed, sparsity, clean, linf, l2, process='agp@0.667'):
    return {'method': method, 'process': process, 'seed': seed, 'sparsity': sparsity, 'clean_accuracy': clean,
            'robust_auc': {'linf': linf, 'l2': l2}}


def test_splits_are_disjoint_and_cover_t10k():
    bp.check_splits()
    assert bp.SPLITS == {'train': (0, 6000), 'validation': (6000, 8000), 'test': (8000, 10000)}
    assert bp.split_indices('validation', 500) == (6000, 6500)
    with pytest.raises(AssertionError, match='overlapping'):
        bp.check_splits({'train': (0, 6000), 'validation': (5999, 8000)})
    with pytest.raises(AssertionError):
        bp.split_indices('validation', 2001)


def test_guard_refuses_test_images():
    bp.assert_no_test_images({'indices': {'train': (0, 6000), 'validation': (6000, 8000)}})
    with pytest.raises(AssertionError, match='test images 8000-8499'):
        bp.assert_no_test_images({'indices': {'train': (0, 6000), 'validation': (6000, 8500)}})
    with pytest.raises(AssertionError, match='do not record'):
        bp.assert_no_test_images({})


def test_selection_data_hold_no_test_image(mnist_dir):
    val = stages.stage_data('validation', 2000, mnist_dir)
    assert val.meta['indices'] == {'train': (0, 6000), 'validation': (6000, 8000)}
    assert len(val.x_train) == 6000 and len(val.x_test) == 2000
    test = stages.stage_data('test', 2000, mnist_dir)
    assert test.meta['indices'] == {'train': (0, 6000), 'test': (8000, 10000)}
    assert bool((val.x_train == test.x_train).all())                      # the same training images
    assert not any(bool((val.x_test[i] == test.x_test).flatten(1).all(1).any()) for i in range(0, 2000, 97))


def test_eval_spec_runs_apgd_at_every_budget():
    spec = validate_spec(bp.eval_spec()).to_dict()
    assert set(spec['linf']['fixed_budgets']) - {0.0} == {round(0.025 * i, 4) for i in range(1, 13)}
    assert set(spec['l2']['fixed_budgets']) - {0.0} == {round(0.25 * i, 4) for i in range(1, 13)}
    assert {'apgd-ce', 'apgd-dlr'} <= set(spec['linf']['attacks']) and max(spec['linf']['fixed_budgets']) == 0.3


def _grid_rows(method, a_shift, linf_shift=0.0, l2_shift=0.0, seeds=(0, 1, 2), sparsities=(0.8, 0.95)):
    return [_row(method, s, sp, 0.95 + a_shift, 0.5 + linf_shift + 0.001 * s, 0.5 + l2_shift) for s in seeds
            for sp in sparsities]


def test_selection_picks_the_best_eligible_variant_and_fgsm_budget():
    rows = (_grid_rows('bap-a', 0.00) + _grid_rows('bap-b', 0.03) + _grid_rows('bap-costly', 0.09)
            + _grid_rows('adversarial-fgsm0.1', 0.01) + _grid_rows('adversarial-fgsm0.2', 0.02)
            + _grid_rows('adversarial-fgsm0.3', -0.01) + _grid_rows('adversarial-pgd0.1', 0.05))
    ratios = {'bap-a': 1.0, 'bap-b': 1.2, 'bap-costly': 1.6}
    sel = bp.select(rows, ['bap-a', 'bap-b', 'bap-costly'], ratios)
    assert sel['variant'] == 'bap-b' and sel['fgsm'] == 'adversarial-fgsm0.2' and sel['eligible'] == ['bap-a', 'bap-b']
    by = {t['method']: t for t in sel['table']}
    assert by['bap-b']['A'] == pytest.approx((0.98 + 0.501 + 0.5) / 3)
    incomplete = [r for r in rows if not (r['method'] == 'bap-a' and r['seed'] == 2)]
    sel = bp.select(incomplete, ['bap-a', 'bap-b'], ratios)
    assert sel['variant'] is None and sel['missing'] == ['bap-a']
    no_pgd = [r for r in rows if r['method'] != 'adversarial-pgd0.1']
    assert bp.select(no_pgd, ['bap-a', 'bap-b'], ratios)['variant'] == 'bap-b'   # PGD-10 has nothing to choose
    test_rows = [{**r, 'seed': r['seed'] + 3} for r in rows]          # confirmation seeds do not count
    assert bp.select(test_rows, ['bap-a'], ratios)['missing'][0] == 'bap-a'


def _confirm_rows(variant_shift):
    out = []
    for p in bp.CONFIRMATION['processes']:
        for s in bp.CONFIRMATION['seeds']:
            for sp in bp.CONFIRMATION['sparsities']:
                noise = 0.002 * ((s + int(sp * 100)) % 3 - 1)
                out += [_row('bap-x', s, sp, 0.95, 0.55 + variant_shift[0] + noise, 0.55 + variant_shift[1], p),
                        _row('adversarial-fgsm0.1', s, sp, 0.95, 0.55, 0.55, p),
                        _row('adversarial-pgd0.1', s, sp, 0.95, 0.60, 0.56, p)]
    return out


def test_confirmation_verdicts():
    sel = {'variant': 'bap-x', 'fgsm': 'adversarial-fgsm0.1', 'pgd': 'adversarial-pgd0.1'}
    ratios = {'bap-x': 1.1, 'adversarial-fgsm0.1': 1.0, 'adversarial-pgd0.1': 5.0}
    out = bp.confirm(_confirm_rows((0.03, 0.0)), sel, ratios)
    goal = {s['name']: s for s in out['goal']['statistics']}
    assert goal['A']['n'] == 20 and goal['A']['mean'] == pytest.approx(0.01, abs=1e-3)
    assert goal['A']['interval'][0] > 0 and goal['l2_auc']['verdict'] == 'inconclusive'
    assert out['goal']['verdict'] == 'met' and out['goal']['step_ratio'] == pytest.approx(1.1)
    assert out['stretch']['verdict'] == 'not met'                     # Linf 0.58 vs PGD's 0.60: contradicted
    costly = bp.confirm(_confirm_rows((0.03, 0.0)), sel, {**ratios, 'bap-x': 1.6})
    assert costly['goal']['verdict'] == 'not met' and not costly['goal']['cost_ok']
    l2_worse = bp.confirm(_confirm_rows((0.06, -0.01)), sel, ratios)
    assert l2_worse['goal']['verdict'] == 'not met'                   # A up, but the L2 interval below 0
    partial = [r for r in _confirm_rows((0.03, 0.0)) if r['seed'] != 7]
    assert bp.confirm(partial, sel, ratios)['goal']['verdict'] == 'open'


def test_every_screened_and_benchmarked_method_is_a_valid_run_config():
    """The stages' method names (presets with suffixes included) pass the config check the runs go through."""
    names = {e['method'] for phase in stages.SCREEN_PHASES.values() for e in phase}
    from benchmarks.blind_budgets_step import VARIANTS
    base = stages.base_config()
    for name in sorted(names | set(VARIANTS)):
        assert base.replace(method=name).method == name
    assert stages.base_config('global').config_list[0]['global_group_id'] == 0


def test_jobs_run_cell_by_cell_and_pgd_last():
    grid = {'seeds': [0, 1], 'sparsities': [0.8], 'processes': ['agp@0.667']}
    todo = stages.jobs(grid, [{'method': 'bap-linf'}, {'method': 'adversarial-pgd0.1', 'last': True}])
    assert [j['name'] for j in todo] == ['agp@0.667-seed0/bap-linf-0.8', 'agp@0.667-seed1/bap-linf-0.8',
                                         'agp@0.667-seed0/adversarial-pgd0.1-0.8',
                                         'agp@0.667-seed1/adversarial-pgd0.1-0.8']
