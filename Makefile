# CLM Stream — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION ?= 0.13.8
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run --frozen
DEMO ?=
PYTEST_ARGS ?=

.PHONY: help install run demo down status test lint docs fmt test-unit chaos compose-config bench prometheus-tools \
	deploy-tools compose-tool kustomize-tool

# Go tools for the deployment tests, built from the Go module proxy into .tools/ (git-ignored)
# once per version: the file names carry the version, so a bump rebuilds and nothing else does.
TOOLS := $(CURDIR)/.tools
GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GO_ENV := GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
COMPOSE_VERSION ?= v5.6.0
KUSTOMIZE_VERSION ?= v5.8.1
COMPOSE_BIN := $(TOOLS)/docker-compose-$(COMPOSE_VERSION)
KUSTOMIZE_BIN := $(TOOLS)/kustomize-$(KUSTOMIZE_VERSION)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install: ## install uv (if missing) and every package of the workspace from uv.lock
	@if ! command -v "$(UV)" >/dev/null 2>&1; then \
	  echo "installing uv $(UV_VERSION) (pip --user)"; \
	  python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || \
	    { echo "make: error: cannot install uv with pip — install uv $(UV_VERSION) yourself" >&2; exit 2; }; \
	fi
	@$(UV) sync --frozen --quiet
	@# bytecode for the installed packages, once (later runs find it fresh and write nothing):
	@# where PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile FastAPI,
	@# SQLAlchemy, aiokafka... again on each start, and the e2e tests start dozens of them
	@$(RUN) python -c 'import compileall, sys, sysconfig; \
	  sys.exit(not compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=2))'

run: install ## start Kafka, Postgres and the three services in the background (DEMO=1: demo traffic)
	@$(RUN) python -m clm_devstack up $(if $(DEMO),--demo,)

demo: ## make run with demo traffic
	@$(MAKE) --no-print-directory run DEMO=1

down: ## stop everything `make run` started
	@$(RUN) python -m clm_devstack down

status: ## what of the local stack is running
	@$(RUN) python -m clm_devstack status

lint: install ## ruff format --check, ruff check, mypy --strict
	@$(RUN) ruff format --check .
	@$(RUN) ruff check .
	@$(RUN) mypy

# not --quiet: it hides the warnings from --strict too, and a broken link would pass
docs: install ## build the documentation site into site/, strictly: a broken link or anchor fails
	@NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict --site-dir site

fmt: install ## format and autofix
	@$(RUN) ruff format .
	@$(RUN) ruff check --fix .

prometheus-tools: ## Debian's prometheus package (prometheus, promtool) for the tests: when root and missing
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus package for the tests (its service is not started)"; \
	    made_policy=; \
	    if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1; \
	    fi; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	      || echo "make: warning: could not install prometheus; the promtool and Prometheus tests will skip" >&2; \
	    if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  else \
	    echo "make: note: prometheus/promtool missing and not root: the Prometheus tests will skip" >&2; \
	  fi; \
	fi

test: lint docs prometheus-tools deploy-tools ## lint and docs, then the whole suite on real Kafka and Postgres (started here if needed)
	@$(RUN) python -m clm_devstack with-infra -- $(UV) run --frozen pytest $(PYTEST_ARGS)

chaos: install ## every fault-injection scenario (tests/chaos, ~11 min) on real Kafka and Postgres
	@CLM_CHAOS=1 $(RUN) python -m clm_devstack with-infra -- $(UV) run --frozen pytest tests/chaos $(PYTEST_ARGS)

bench: install ## benchmarks side by side on real Kafka and Postgres (BENCH="name ..."), results in bench/RESULTS.md
	@$(RUN) python -m clm_devstack with-infra -- $(UV) run --frozen python -m bench $(BENCH)

test-unit: install ## the fast, pure tests only
	@$(RUN) pytest tests/unit $(PYTEST_ARGS)

deploy-tools: compose-tool kustomize-tool ## the Go tools the deployment tests need (compose, kustomize)

compose-tool: $(COMPOSE_BIN) ## the docker compose CLI (COMPOSE_VERSION) built into .tools/ (~1.5 min, once)

# A Go tool built into .tools/ once and linked as .tools/bin/NAME; where there is no Go
# toolchain only a warning (the tests that need it skip):
#   $(call go_tool,WHAT IS BUILT,NAME,WARNING,COMMANDS THAT WRITE $@)
define go_tool
	@if ! command -v "$(GO)" >/dev/null 2>&1; then \
	  echo "make: warning: $(3)" >&2; \
	else \
	  echo "building $(1) from the Go module proxy into .tools/ (once)"; \
	  mkdir -p "$(TOOLS)/bin" && \
	  $(4) && \
	  ln -sfn "../$(notdir $@)" "$(TOOLS)/bin/$(2)"; \
	fi
endef

# `go install …@version` refuses compose (its go.mod has exclude directives), so build it
# inside its own module, as downloaded from the proxy, where those directives apply.
COMPOSE_MODULE := github.com/docker/compose/v5
build_compose = $(GO_ENV) $(GO) mod download $(COMPOSE_MODULE)@$(COMPOSE_VERSION) && \
	cd "$$($(GO) env GOMODCACHE)/$(COMPOSE_MODULE)@$(COMPOSE_VERSION)" && \
	$(GO_ENV) $(GO) build -trimpath -o "$@.tmp" \
	  -ldflags "-X $(COMPOSE_MODULE)/internal.Version=$(COMPOSE_VERSION)" ./cmd && \
	mv "$@.tmp" "$@"
build_kustomize = GOBIN="$(TOOLS)/kustomize.tmp" $(GO_ENV) $(GO) install \
	  sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) && \
	mv "$(TOOLS)/kustomize.tmp/kustomize" "$@" && rmdir "$(TOOLS)/kustomize.tmp"

$(COMPOSE_BIN):
	$(call go_tool,docker compose $(COMPOSE_VERSION),docker-compose,no Go toolchain: the docker compose config test cannot run,$(build_compose))

kustomize-tool: ## kustomize: `kubectl kustomize` when kubectl is there, else KUSTOMIZE_VERSION built into .tools/
	@if ! kubectl kustomize --help >/dev/null 2>&1; then $(MAKE) --no-print-directory $(KUSTOMIZE_BIN); fi

$(KUSTOMIZE_BIN):
	$(call go_tool,kustomize $(KUSTOMIZE_VERSION),kustomize,no Go toolchain and no kubectl: the Kubernetes tests cannot render,$(build_kustomize))

compose-config: compose-tool ## check docker-compose.yml with .env.example (secrets filled with placeholders)
	@env_file=$$(mktemp) && trap 'rm -f "$$env_file"' EXIT && \
	  sed -E 's/^(POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD|SECRETS_KEY|PSEUDONYM_KEY|PRIVACY_MASTER_KEYS)=$$/\1=placeholder/' .env.example > "$$env_file" && \
	  "$(TOOLS)/bin/docker-compose" --env-file "$$env_file" config --quiet && echo "docker-compose.yml: ok"
