# The two commands (see README.md):
#   make demo   - set up everything, start a local control plane and SIP lab, show sipfleet working
#   make test   - set up everything and run the whole test suite against real parts
.PHONY: setup test demo demo-down unit lint crd

setup:
	./scripts/setup

# two pytest-xdist workers, each with a cluster and a SIP lab of its own (as two checkouts would run side by
# side); a test file stays on one worker. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

test: setup
	.venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: setup
	.venv/bin/sipfleet demo

demo-down:
	.venv/bin/sipfleet demo --down

unit: setup
	.venv/bin/python -m pytest tests/unit $(PYTEST_ARGS)

crd: setup
	.venv/bin/sipfleet crd generate
