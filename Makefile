# The README's two commands. FILE= an audio or video file (optional); PYTEST_ARGS= extra args.
.PHONY: setup transcribe test lint

setup:
	@bash infra/dev/setup.sh

transcribe: setup
	.venv/bin/klipnote transcribe $(FILE)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Style and types, then the structure: every import declared (deptry), the import contracts
# (import-linter), each image's imports against its own requirements.txt (the same checks CI
# runs in tests/deploy/test_imports.py).
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
	.venv/bin/deptry events functions infra
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q -p no:cacheprovider tests/deploy/test_imports.py
