"""Batched, vectorised adversarial attacks, one per file, each registered in :data:`ATTACKS`.

Fixed-budget attacks (``eps``): FGSM (FGSM-RS with ``random_start``), PGD (Linf), PGD-L2, APGD (CE and DLR
losses; ``apgd-ce`` and ``apgd-dlr`` are presets). Minimum-norm attacks (:class:`MinNormAttack`: every sample's
smallest adversarial perturbation, no budget): DeepFool and FMN.
"""
from .apgd import APGD
from .base import Attack, MinNormAttack, flat_norm, project_l2, shrink_to
from .deepfool import DeepFool, DeepFoolResult
from .fgsm import FGSM
from .fmn import FMN, FMNResult, accuracy_from_norms
from .pgd import PGD
from .pgd_l2 import PGDL2
from .registry import ATTACKS, register_attack

__all__ = ['APGD', 'ATTACKS', 'Attack', 'DeepFool', 'DeepFoolResult', 'FGSM', 'FMN', 'FMNResult', 'MinNormAttack',
           'PGD', 'PGDL2', 'accuracy_from_norms', 'flat_norm', 'project_l2', 'register_attack', 'shrink_to']
