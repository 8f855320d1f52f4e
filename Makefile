# The two commands a newcomer needs are `make run` and `make test`; both install first if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/chainlit run app.py --host 0.0.0.0 --port 8000 --headless

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check assistants tests bench app.py
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/engine_overhead.py
	$(BIN)/python bench/context_build.py
	$(BIN)/python bench/chat_resume_stream.py
	$(BIN)/python bench/code_interpreter.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
