# The README's two commands. FILE= an audio or video file (optional); PYTEST_ARGS= extra args.
.PHONY: setup transcribe test lint

setup:
	@bash infra/dev/setup.sh

transcribe: setup
	.venv/bin/klipnote transcribe $(FILE)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/mypy
