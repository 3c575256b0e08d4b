"""Issue 20, *blind budgets that win* (``python -m examples.blind``): BAP's levers screened and selected on validation
images, confirmed on test images against uniform-budget adversarial pruning. The protocol (splits, evaluation,
criteria, statistics) is :mod:`.protocol`, fixed before any run; the grids, data and run folders :mod:`.stages`;
the workers and command line :mod:`.__main__`; the results folder :mod:`.report`. See ``README.md`` here for what
ran, what it measured and what did not run."""
