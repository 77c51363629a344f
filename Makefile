# Run: make demo   (then: make test)
# Everything installs into .venv; torch is pinned to the CPU build this project is tested with.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
DATA ?=
RUN ?= runs/demo
DEMO_CORPUS := runs/demo-corpus
PYTEST_ARGS ?=
IMAGE ?= unitvox:latest

.PHONY: install demo test test-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[test]'
	# resemblyzer's pretrained speaker encoder ships in its wheel; --no-deps skips its source-only webrtcvad
	$(BIN)/pip install --quiet --no-deps resemblyzer webrtcvad-wheels
	touch $@

# The demo: synthesise a small multi-speaker corpus (or use DATA=/path), run the pipeline on it,
# then diagnose the run (its index: $(RUN)/diagnose/report.md).
demo: install
ifeq ($(DATA),)
	$(BIN)/unitvox demo-corpus --out $(DEMO_CORPUS)
	$(BIN)/unitvox pipeline --config jobs/demo.yaml --run $(RUN) --set prepare.input=$(DEMO_CORPUS)
else
	$(BIN)/unitvox pipeline --config jobs/demo.yaml --run $(RUN) --set prepare.input=$(DATA)
endif
	$(BIN)/unitvox diagnose all --config $(RUN)/config.yaml --run $(RUN)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

clean:
	rm -rf $(RUN) $(DEMO_CORPUS) .pytest_cache

# The one container image with every stage (Dockerfile); name it with IMAGE=registry/unitvox:tag.
.PHONY: image hadolint

image:
	docker build -t $(IMAGE) .

hadolint: install
	$(BIN)/hadolint Dockerfile
