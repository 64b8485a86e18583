# The two commands of the README: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
WORKDIR ?= runs/unet_shapes
CONFIG ?= configs/unet_shapes.py

.PHONY: setup train test

$(VENV)/.installed: requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

# Train the U-Net on the built-in synthetic shapes data, then predict on sample images.
train: setup
	$(VENV)/bin/python -m jaxseg.main --config=$(CONFIG) --workdir=$(WORKDIR)
	$(VENV)/bin/python -m jaxseg.predict --workdir=$(WORKDIR) \
	  --input=$(WORKDIR)/samples --output=$(WORKDIR)/overlays

# The whole test suite (slow end-to-end tests included).
test: setup
	$(VENV)/bin/python -m pytest -q --durations=25
