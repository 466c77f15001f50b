# Two commands from a clean clone (see README): `make demo` and `make test`.
# Both create and fill .venv first when needed (scripts/bootstrap.sh).
VENV := .venv/bin
export OMP_NUM_THREADS ?= 1

.PHONY: demo test test-ray test-slow lint bootstrap clean

bootstrap:
	@bash scripts/bootstrap.sh

## meta-train the sinusoid benchmark for a few minutes, then print the adaptation table
demo: bootstrap
	rm -rf runs/demo
	$(VENV)/metarl train sinusoid --set num_iterations=20000 --logdir runs/demo
	$(VENV)/metarl evaluate runs/demo --tasks 600 --steps 10 --plot runs/demo/adaptation.png

## the test suite (fast; `make test-slow` adds the longer learning checks)
test: bootstrap
	$(VENV)/python -m pytest -q

## the Ray sampler tests (installs the optional extra first)
test-ray: bootstrap
	$(VENV)/python -m pip install -q -e ".[ray]" 2>&1 | grep -v -i -E "warning|^ *!!|wheel_obj|^$$" || true
	$(VENV)/python -m pytest -q -m ray

test-slow: bootstrap
	$(VENV)/python -m pytest -q -m "slow"

lint: bootstrap
	$(VENV)/ruff check .

clean:
	rm -rf .venv runs *.egg-info
