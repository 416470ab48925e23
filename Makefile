PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test fuzz bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# a local development run: the built-in OpenAI sandbox unless OPENAI_API_KEY is set, demo photos on
# 127.0.0.1:8088 (examples/serve_images.py), loopback photo and webhook URLs allowed, OpenAI batches polled every 2 s
run: install
	@$(BIN)/python examples/serve_images.py --quiet & trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	OPENAI_SANDBOX=$${OPENAI_SANDBOX:-true} ALLOW_PRIVATE_URLS=$${ALLOW_PRIVATE_URLS:-true} \
	  WORKER_POLL_INTERVAL=$${WORKER_POLL_INTERVAL:-2} \
	  $(BIN)/python main.py

# the suite waits on servers far more than it computes: its modules run on TEST_WORKERS processes
# (pytest-xdist, whole modules to a process so module-scoped scenarios run once), each with its own
# PostgreSQL database (TEST_DATABASE_URL + _gw<n>); TEST_WORKERS=0 runs everything in this process
TEST_WORKERS ?= 3

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

FUZZ_SECONDS ?= 600

# the property tests again and again with fresh random seeds until FUZZ_SECONDS have passed
fuzz: install
	@end=$$(( $$(date +%s) + $(FUZZ_SECONDS) )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
	  round=$$((round + 1)); echo "fuzz round $$round"; \
	  FUZZ_RANDOM=1 FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-200} $(BIN)/python -m pytest -q -p no:cacheprovider \
	    tests/test_fuzz.py || exit 1; \
	done; echo "fuzzing ran clean for $(FUZZ_SECONDS) s ($$round rounds)"

clean:
	rm -rf $(VENV) instance *.egg-info
