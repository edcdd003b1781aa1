# Two commands for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aue-installed

# The runtime (aue_edge/edge/, aue_edge/ros_nodes/, aue run/build/bench/doctor) also supports Python 3.8
# (JetPack 5) and 3.10 (JetPack 6): `make test` runs its tests under both too.
PYENV_VERSIONS ?= /root/.pyenv/versions
RUNTIME_PYTHONS ?= 3.8.18 3.10.13
RUNTIME_STAMPS := $(foreach v,$(RUNTIME_PYTHONS),.venv-py$(v)/.aue-installed)
RUNTIME_TESTS := $(sort $(wildcard tests/test_edge_*.py tests/test_face_*.py tests/test_trt_*.py)) \
	tests/test_bench_config.py tests/test_bench_engine.py tests/test_bench_machine.py \
	tests/test_tensorrt_api_signatures.py tests/test_calibration_cache.py tests/test_doctor.py \
	tests/test_shipped_model.py tests/test_python_api.py

.PHONY: setup demo test test-runtime bench compare compare-venv clean

setup: $(STAMP)

MSGS := aue_msgs/CMakeLists.txt aue_msgs/package.xml aue_msgs/pyproject.toml $(wildcard aue_msgs/msg/*.msg)

$(STAMP): requirements.txt setup.py package.xml $(MSGS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-build-isolation ./aue_msgs
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/aue run --source aue_edge/edge/samples/demo_clip.mp4 --out runs/demo
	$(PY) -m aue_edge.ros_nodes.demo

test: setup test-runtime
	$(PY) -m pytest

test-runtime: $(RUNTIME_STAMPS)
	for v in $(RUNTIME_PYTHONS); do \
		.venv-py$$v/bin/python -m pytest -p no:cacheprovider $(RUNTIME_TESTS) || exit 1; \
	done

.venv-py%/.aue-installed: requirements-runtime.txt setup.py
	$(PYENV_VERSIONS)/$*/bin/python -m venv .venv-py$*
	.venv-py$*/bin/python -m pip install -U pip "setuptools>=64"
	.venv-py$*/bin/python -m pip install -r requirements-runtime.txt
	.venv-py$*/bin/python -m pip install --no-deps --no-build-isolation -e .
	touch $@

bench: setup
	$(VENV)/bin/aue bench --name cpu-2core

# Side by side with the PyPI package `fer` (README "How it compares"). `fer` and TensorFlow live
# in their own venv, built from a full lock; nothing of it is a dependency of the product, and
# `make test` never builds it.
FER_VENV ?= .venv-fer
FER_STAMP := $(FER_VENV)/.fer-installed

compare-venv: $(FER_STAMP)

$(FER_STAMP): tools/compare_fer/requirements.txt
	$(PYTHON) -m venv $(FER_VENV)
	$(FER_VENV)/bin/python -m pip install --no-deps -r tools/compare_fer/requirements.txt
	touch $@

compare: setup $(FER_STAMP)
	$(PY) tools/compare_fer/compare.py --out runs/compare_fer --fer-python $(FER_VENV)/bin/python
	$(PY) tools/compare_fer/compare.py --out runs/compare_fer_fast --fer-python $(FER_VENV)/bin/python \
	    --pipeline-config config/pipeline_fast.yaml

clean:
	rm -rf $(VENV) .venv-py* $(FER_VENV) runs build *.egg-info .pytest_cache
