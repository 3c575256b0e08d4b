"""The reproduction of the BAP paper's claims on MNIST / LeNet-5 (``python -m examples.reproduce``): the grid and
its workers (:mod:`.__main__`), the claims as paired statistics (:mod:`.claims`) and their results folder
(:mod:`.claims_report`)."""
