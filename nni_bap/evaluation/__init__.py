"""Robustness evaluation: per norm, the per-sample worst case over strong attacks (:mod:`.robustness`), computed
as a cascade (:mod:`.cascade`) from a validated spec (:mod:`.spec`), with Wilson intervals (:mod:`.intervals`)."""
from .cascade import Cascade
from .intervals import wilson
from .robustness import auc, evaluate_robustness, key_point, sanity_checks
from .spec import EvalSpec, NormSpec, default_spec, validate_spec

__all__ = ['Cascade', 'EvalSpec', 'NormSpec', 'auc', 'default_spec', 'evaluate_robustness', 'key_point',
           'sanity_checks', 'validate_spec', 'wilson']
