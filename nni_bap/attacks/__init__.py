"""Batched, vectorised adversarial attacks (one per file) and the name -> class table."""
from .base import Attack, flat_norm, project_l2
from .deepfool import DeepFool, DeepFoolResult
from .fgsm import FGSM
from .pgd import PGD
from .pgd_l2 import PGDL2

__all__ = ['Attack', 'ATTACKS', 'DeepFool', 'DeepFoolResult', 'FGSM', 'PGD', 'PGDL2', 'flat_norm', 'project_l2']

#: Attack name -> class, shared by the CLI, the configs and the tests.
ATTACKS = {
    'fgsm': FGSM,
    'pgd': PGD,
    'pgd_l2': PGDL2,
    'deepfool': DeepFool,
}
