# Lockstep developer entry points. Test tooling (kube-apiserver, kube-controller-manager, kubectl,
# kubelet, kube-scheduler, helm, moto venv; containerd and runc from Debian) is built into .tools/ by
# tests/support/tools.sh; see tests/support/README.md.
SHELL := bash
export LOCKSTEP_TOOLS ?= $(CURDIR)/.tools

.PHONY: tools dev-up dev-down dev-status test fuzz demo bench bench-eso soak crds fmt lint

tools:
	bash tests/support/tools.sh

# `make dev-up NODE=1` also starts a node (containerd, kubelet, kube-scheduler) for real pods.
dev-up:
	bash tests/support/dev.sh up

dev-down:
	bash tests/support/dev.sh down

dev-status:
	bash tests/support/dev.sh status

test: tools
	cargo test --locked --all-targets

# The property tests of the property-path parser and the template renderer (src/proptests.rs) with
# many more cases than `make test` runs (256 each): `make fuzz PROPTEST_CASES=100000` for more.
PROPTEST_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(PROPTEST_CASES) cargo test --locked --lib proptest

# A secret syncing and rotating on a local control plane (README quick start).
demo: tools
	cargo build --locked
	bash scripts/demo.sh

# The benchmark against the rig (release build); writes its table into BENCHMARKS.md.
# `make bench ARGS='--es 10000'` for the large run; see benches/harness.rs for the flags.
# `make bench ARGS='--peer eso'` (or `make bench-eso`) also builds External Secrets Operator into
# .tools/eso-<version>/ (`tools.sh eso`, stamped) and measures it beside Lockstep; nothing else
# builds ESO. The rig writes a metadata-only audit log for it (LOCKSTEP_RIG_AUDIT=1), from which
# the table counts the operator's own apiserver requests (by User-Agent).
bench: tools
	$(if $(findstring --peer eso,$(ARGS)),bash tests/support/tools.sh eso)
	LOCKSTEP_RIG_AUDIT=1 cargo bench --locked --bench harness -- $(ARGS)

bench-eso:
	$(MAKE) bench ARGS='--peer eso $(ARGS)'

# 1,000 ExternalSecrets with ongoing rotations for 10 minutes (not part of `make test`); writes
# memory at start and end, errors and calls per hour into BENCHMARKS.md.
soak: tools
	cargo bench --locked --bench harness -- --soak 600 $(ARGS)

# Regenerate the CRD YAML from the Rust types (a test fails when they drift).
crds:
	cargo run --quiet --locked -- crd > crds/lockstep.dev.yaml
	cp crds/lockstep.dev.yaml charts/lockstep/crds/lockstep.dev.yaml

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
