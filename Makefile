# The two commands a fresh machine needs: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synth-ray-installed

.PHONY: env quickstart test lint format bench clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $@

env: $(STAMP)

# Sets up, converts the embedded model once, runs the WRAP rephrasing job on the shipped input,
# prints where the output is and a few sample rows. Rerunning resumes (nothing left to do).
quickstart: env
	$(PY) -m synth_ray prepare-model
	$(PY) -m synth_ray run configs/quickstart.yaml --samples 3

# Lint, format check, then the whole test suite (one shared CPU engine plus a three-node loopback
# cluster for the cluster-job tests). --durations shows the slowest tests in every CI log.
test: env lint
	$(PY) -m pytest --durations=25

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# synth-ray vs raw vLLM vs Ray Data LLM (synth-ray bench), prefix caching on/off for a few-shot
# method, the diversity filter's costs, the driver's CPU per request and its costs against
# corpus size (engine stand-in) and the scheduler at 1,000 and 4,096 simulated replicas; all
# append to benchmarks/results.md
bench: env
	$(PY) -m synth_ray bench configs/bench.yaml --results benchmarks
	$(PY) benchmarks/bench_prefix_cache.py
	$(PY) benchmarks/bench_engine_start.py
	$(PY) benchmarks/bench_diversity.py
	$(PY) benchmarks/bench_driver.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_scheduler_sim.py

clean:
	rm -rf out
