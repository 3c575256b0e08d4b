"""Issue 20's BAP variants as method names: ``bap-<preset>`` (``bap-margin``), registered in
:data:`~nni_bap.pruning.registry.METHODS` with ``family='bap'``.

Each preset binds :class:`~nni_bap.pruning.generators.BlindGenerator` settings; BAP's suffixes after it override
them (``bap-margin-s1.5-k0.45``: scale 1.5, cap 0.45). Budgets are plain per-example norms (L2 Euclidean, Linf
max); MNIST's evaluation grids end at Linf 0.3 and L2 3, so the caps below sit at the largest evaluation budget.
The paper's BAP is plain ``bap`` (no preset). One seed of validation screening stands behind each note
(``examples/blind/README.md``): none is a confirmed improvement.
"""
from __future__ import annotations

from typing import Any, Dict

from .generators import BlindGenerator, bap_suffix
from .registry import METHODS

__all__ = ['BAP_PRESETS', 'PRESET_NOTES']

_LINF_CAP, _L2_CAP = 0.3, 3.0
#: The margin step in both norms' preset mixes: L2 DeepFool-cut (the paper's AE) beside the Linf margin step.
_MIX = {'norm': 'both', 'step': {'l2': 'deepfool', 'linf': 'margin'}, 'cutoff': {'l2': 'adaptive', 'linf': None},
        'cap': {'l2': None, 'linf': _LINF_CAP}}

#: Preset name (without ``bap-``) -> BlindGenerator settings.
BAP_PRESETS: Dict[str, Dict[str, Any]] = {
    'l2cap': {'cutoff': None, 'cap': _L2_CAP},
    'linf': {'norm': 'linf'},
    'linfcap': {'norm': 'linf', 'cutoff': None, 'cap': _LINF_CAP},
    'margin': {'step': 'margin', 'norm': 'linf', 'cutoff': None, 'cap': _LINF_CAP},
    'mix': {**_MIX, 'mix': 'alternate'},
    'mixcap': {'norm': 'both', 'mix': 'alternate', 'step': {'l2': 'deepfool', 'linf': 'margin'}, 'cutoff': None,
               'cap': {'l2': _L2_CAP, 'linf': _LINF_CAP}},
    'mixsplit': {**_MIX, 'mix': 'split'},
    'mixmargin': {'norm': 'both', 'mix': 'alternate', 'step': 'margin', 'cutoff': None,
                  'cap': {'l2': _L2_CAP, 'linf': _LINF_CAP}},
    'both': {'norm': 'both', 'mix': 'alternate'},
    'bothsplit': {'norm': 'both', 'mix': 'split'},
}

#: One line per preset for the docs and the help.
PRESET_NOTES = {
    'l2cap': "L2 DeepFool (the paper's AE) without the batch-mean cutoff, each budget capped at L2 3",
    'linf': "Linf DeepFool cut at the batch mean (the paper's strategy in the other norm)",
    'linfcap': 'Linf DeepFool without the cutoff, capped at Linf 0.3',
    'margin': 'margin -> one step: Linf, eps_i = clip(rho d_i, 0, 0.3), one signed step (FGSM-RS cost)',
    'mix': 'L2 DeepFool-cut (paper) and the Linf margin step on alternate steps',
    'mixcap': 'L2 DeepFool capped at 3 and the Linf margin step on alternate steps',
    'mixsplit': 'L2 DeepFool-cut and the Linf margin step on the two halves of every batch',
    'mixmargin': 'margin step in L2 (cap 3) and in Linf (cap 0.3) on alternate steps',
    'both': 'DeepFool cut at the batch mean in L2 and in Linf, on alternate steps',
    'bothsplit': 'DeepFool cut at the batch mean in L2 and in Linf, on the two halves of every batch',
}

for _name, _settings in BAP_PRESETS.items():
    METHODS.register(f'bap-{_name}', family='bap', preset=_settings, parse_suffix=bap_suffix,
                     note=PRESET_NOTES[_name])(BlindGenerator)
