"""Batched, vectorised adversarial attacks (one per file) and the name -> class table."""
from .apgd import APGD
from .base import Attack, flat_norm, project_l2
from .deepfool import DeepFool, DeepFoolResult
from .fgsm import FGSM
from .fmn import FMN, FMNResult, accuracy_from_norms
from .pgd import PGD
from .pgd_l2 import PGDL2

__all__ = ['APGD', 'Attack', 'ATTACKS', 'DeepFool', 'DeepFoolResult', 'FGSM', 'FMN', 'FMNResult', 'PGD', 'PGDL2',
           'accuracy_from_norms', 'flat_norm', 'project_l2']

#: Attack name -> class, shared by the CLI, the configs and the tests.
ATTACKS = {
    'fgsm': FGSM,
    'pgd': PGD,
    'pgd_l2': PGDL2,
    'deepfool': DeepFool,
    'apgd': APGD,
    'fmn': FMN,
}
