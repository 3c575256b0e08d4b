"""Errors a user can cause and fix, each stated in one line (the CLI prints them and exits with code 2).

Kept free of torch and NNI so that every module can import it.
"""
from __future__ import annotations

__all__ = ['BapError', 'DivergenceError', 'RunFolderError', 'SparsityError']


class BapError(Exception):
    """Base of the errors caused by a setting, a file or a folder the user gave; the message names it."""


class DivergenceError(BapError):
    """Training produced a non-finite loss or weights; nothing was written."""


class RunFolderError(BapError):
    """A run folder is missing, damaged or inconsistent; the message names the file."""


class SparsityError(BapError):
    """The pruned model's measured sparsity does not match the target."""
