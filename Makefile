# Two commands from a clean clone (see README): `make demo` and `make test`.
# Both create and fill .venv first when needed (scripts/bootstrap.sh).
VENV := .venv/bin
export OMP_NUM_THREADS ?= 1

.PHONY: demo demo-sinusoid test test-ray test-metaworld test-slow lint bootstrap clean

bootstrap:
	@bash scripts/bootstrap.sh

## meta-train a 2D-navigation agent (about 3 minutes), a pretrained baseline (1 minute), evaluate the
## adaptation on 40 held-out goals beside them and a random policy, and record the agent adapting
demo: bootstrap
	$(VENV)/metarl train navigation2d_fast --time-limit 3 --logdir runs/demo/maml --overwrite
	$(VENV)/metarl train navigation2d_pretrain --time-limit 1 --logdir runs/demo/pretrained --overwrite
	$(VENV)/metarl evaluate runs/demo/maml --tasks 40 --steps 3 --baseline pretrained=runs/demo/pretrained \
		--plot runs/demo/adaptation.png
	$(VENV)/metarl record runs/demo/maml --task goal=0.3,-0.2 --steps 3 --out runs/demo/adapt.gif

## the sinusoid regression demo (Finn et al. 2017, Fig. 2): a few minutes
demo-sinusoid: bootstrap
	$(VENV)/metarl train sinusoid --set num_iterations=20000 --logdir runs/demo-sinusoid --overwrite
	$(VENV)/metarl evaluate runs/demo-sinusoid --tasks 600 --steps 10 --plot runs/demo-sinusoid/adaptation.png

## the test suite (fast; `make test-slow` adds the longer learning checks)
test: bootstrap
	$(VENV)/python -m pytest -q

## the Ray sampler tests (installs the optional extra first)
test-ray: bootstrap
	$(VENV)/python -m pip install -q -e ".[ray]" 2>&1 | grep -v -i -E "warning|^ *!!|wheel_obj|^$$" || true
	$(VENV)/python -m pytest -q -m ray

## the Meta-World extra on MuJoCo 3.3 (metaworld pins mujoco==3.3.0) in a second venv, .venv-mw: the
## Meta-World tests and the sampler's step-for-step checks against Gymnasium, whose MuJoCo envs then step on
## worker processes (no mujoco.batch)
test-metaworld:
	@test -x .venv-mw/bin/python || python3 -m venv .venv-mw
	@.venv-mw/bin/python -c 'import torch' 2>/dev/null || .venv-mw/bin/python -m pip install -q \
		"torch==$${METARL_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v -i warning || true
	.venv-mw/bin/python -m pip install -q -e ".[metaworld,video,dev]" 2>&1 | grep -v -i -E "warning|^ *!!|wheel_obj|^$$" || true
	.venv-mw/bin/python -c 'import metarl.envs, metaworld, mujoco, imageio_ffmpeg; assert mujoco.__version__ < "4", mujoco.__version__'
	.venv-mw/bin/python -m pytest -q tests/test_metaworld.py tests/test_sampler.py tests/test_watch.py \
		-k "metaworld or equals_gymnasium or bad_actions or record_mp4"

test-slow: bootstrap
	$(VENV)/python -m pytest -q -m "slow"

lint: bootstrap
	$(VENV)/ruff check .

clean:
	rm -rf .venv .venv-mw runs *.egg-info
