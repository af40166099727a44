# The two commands (see README.md):
#   make demo   - set up everything, start a local control plane and SIP lab, show sipfleet working
#   make test   - set up everything and run the whole test suite against real parts
.PHONY: setup test demo demo-down unit lint crd

setup:
	./scripts/setup

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

demo: setup
	.venv/bin/sipfleet demo

demo-down:
	.venv/bin/sipfleet demo --down

unit: setup
	.venv/bin/python -m pytest tests/unit $(PYTEST_ARGS)

crd: setup
	.venv/bin/sipfleet crd generate
