# WARP routing core. `make run` and `make test` are the two commands that matter; both install
# what is missing first (Debian packages, the venv), so they work on a fresh Debian 12 machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
WARP   := $(VENV)/bin/warp

.PHONY: help setup run start stop status test test-unit lint bench demo-call api openapi clean

help:
	@echo "make run        install what is missing, start the local stack + Kamailio (foreground)"
	@echo "make start/stop the same in the background / stop everything it started"
	@echo "make status     what is running"
	@echo "make test       install what is missing, start Postgres + Redis, run every test"
	@echo "make test-unit  only the pure unit tests (no servers)"
	@echo "make demo-call  place the demo call with SIPp against a running stack"
	@echo "make lint       ruff + mypy"
	@echo "make bench      benchmarks (see BENCHMARKS.md)"
	@echo "make api        the admin API on api.listen (127.0.0.1:8080; see docs/API.md)"
	@echo "make openapi    regenerate the committed openapi.json"

setup:
	@bash scripts/bootstrap.sh

run: setup
	@$(WARP) run

start: setup
	@$(WARP) start

stop:
	@$(WARP) stop

status:
	@$(WARP) status

test: setup lint
	@$(WARP) exec -- $(PY) -m pytest tests

test-unit: setup
	@$(PY) -m pytest tests/unit

lint: setup
	@$(VENV)/bin/ruff check routing_engine kemi tests benchmarks
	@$(VENV)/bin/mypy --no-error-summary

bench: setup
	@$(WARP) exec -- $(PY) -m benchmarks

api: setup
	@$(WARP) api

openapi:
	@$(PY) -m routing_engine.entrypoints.api > openapi.json

demo-call:
	@bash scripts/demo-call.sh

clean:
	@$(WARP) stop 2>/dev/null || true
	rm -rf .data
