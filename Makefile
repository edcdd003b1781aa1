# Two commands for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aue-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

MSGS := aue_msgs/CMakeLists.txt aue_msgs/package.xml aue_msgs/pyproject.toml $(wildcard aue_msgs/msg/*.msg)

$(STAMP): requirements.txt setup.py package.xml $(MSGS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-build-isolation ./aue_msgs
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/aue run --source edge/samples/demo_clip.mp4 --out runs/demo
	$(PY) -m aue_edge.ros_nodes.demo

test: setup
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/aue bench --name cpu-2core

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
