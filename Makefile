# Set-up is part of every target: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
STAMP := .installed.stamp

.PHONY: install run test bench clean

$(STAMP): setup.py
	$(PIP) install --quiet --upgrade pip
	# torch is pinned to the CPU build (setup.py extra "test"); anything else pulls CUDA.
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[test,demo]"
	touch $(STAMP)

install: $(STAMP)

# The main job on its built-in small default: train the tiny config on the bundled demo
# corpus (data/demo); a re-run resumes from runs/tiny's latest checkpoint.
run: install
	$(PYTHON) train.py --config=configs/tiny.py --workdir=runs/tiny

test: install
	$(PYTHON) -m pytest tests -q -ra

bench: install
	$(PYTHON) benchmarks/encoder_speed.py

clean:
	rm -rf $(STAMP) *.egg-info .pytest_cache
