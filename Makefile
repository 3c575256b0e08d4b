# Set-up and jobs. Every target creates .venv and installs torch==2.13.0 first, explicitly:
# any other torch resolution downloads a multi-GB CUDA build on this machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench docs install clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bap demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

# The API reference, built from the docstrings by pdoc into docs/api/ (ignored by git); open docs/api/index.html.
docs: $(STAMP)
	$(PY) docs/build_api.py docs/api

# torchattacks is the per-sample DeepFool reference; --no-deps keeps it from replacing torch.
bench: $(STAMP)
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) runs docs/api
