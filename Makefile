# The README's two commands: `make run` and `make test`. Both set up everything they need.
VENV   := .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed

.PHONY: run test lint system-deps bench clean

$(STAMP): pyproject.toml mailpolicy/policy/_fields.pyx
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## run the daemon in the foreground on the embedded defaults (SQLite and sockets under ./var/)
run: $(STAMP)
	$(VENV)/bin/mailpolicy serve

## install Postfix/Dovecot for the end-to-end suite when missing (needs root; skipped otherwise)
system-deps:
	@if [ "$$(id -u)" = 0 ]; then sh scripts/install-system-deps.sh; \
	else echo "not root: end-to-end tests need postfix and dovecot already installed"; fi

## ruff, then mypy (its settings: [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## the whole suite: lint, unit, integration and end-to-end (real Postfix and Dovecot)
test: $(STAMP) system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

## every benchmark to the end (~10 min on 2 cores; BENCH_FLAGS=--quick for ~5); exit 1 if any failed
BENCH_FLAGS ?=
bench: $(STAMP) system-deps
	@failed=""; for b in lmtp policy filter dmarc signing; do \
	  echo "== bench/$$b.py $(BENCH_FLAGS)"; \
	  timeout 1200 $(VENV)/bin/python bench/$$b.py $(BENCH_FLAGS) || failed="$$failed $$b"; \
	done; if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) var build *.egg-info
