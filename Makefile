# vitastor-rs: `make run` starts a local cluster, `make test` runs the whole suite.
CARGO ?= cargo
RELEASE_DIR := $(or $(CARGO_TARGET_DIR),target)/release
# Tests append a line here for each skip (testkit's prereq module); `make test` lists them.
SKIPPED := $(RELEASE_DIR)/skipped-tests.txt
# Tests and local clusters never read this host's /etc/vitastor/vitastor.conf: a test OSD
# started without --etcd_address would join the cluster it names (see vitastor_etcd::config_file).
export VITASTOR_CONFIG_PATH ?= $(abspath $(RELEASE_DIR))/no-vitastor.conf

# Every program and library (libvitastor.so, libfio_vitastor.so, block-vitastor.so with
# vitastor-qemu-preload) in ONE cargo invocation: separate invocations resolve the shared
# dependencies' features differently and each rebuilt vitastor-client and what it uses, so a
# second `make build` was never a no-op. Keep every target here.
BUILD := $(CARGO) build --release --workspace --lib --bins

.PHONY: setup build run test test-long test-faults bench deb test-packages clean

setup:
	@scripts/setup.sh

build: setup
	$(BUILD)

# A local cluster in ./var until Ctrl-C (see scripts/run.sh).
run: build
	@scripts/run.sh

# A test whose tool is missing fails. VITASTOR_ALLOW_SKIP=1 (never set here; only from the
# caller's environment, for local runs) makes it a skip instead; every skip, and what the
# machine cannot do (no NBD module...), is listed at the end.
test: setup
	$(BUILD)
	@rm -f $(SKIPPED)
	@status=0; $(CARGO) test --release --workspace || status=$$?; \
	if [ -s $(SKIPPED) ]; then \
		echo "== skipped tests ($$(wc -l < $(SKIPPED))):"; cat $(SKIPPED); \
	else \
		echo "== no test was skipped"; \
	fi; \
	exit $$status

# Opt-in long runs (thousands of crash points); not part of `make test`.
test-long: setup
	$(BUILD)
	VITASTOR_CRASH_POINTS=1000 VITASTOR_POWERLOSS_ROUNDS=2000 \
		$(CARGO) test --release -p vitastor-blockstore --test crash --test powerloss -- --nocapture

# Opt-in fault-injection suite (issue #16; README "Reliability"), at most ~30 min: the OSD
# kill loops (rep2, rep3, EC 2+1) for VITASTOR_KILL_LOOP_SECS (10 min, as the issue asks),
# every other scenario of faults/tests for VITASTOR_FAULT_SECS (`make test` runs them all for
# 30 s), then each fuzz target (protocol, nbd, layout) for FUZZ_RUNS inputs. cargo-fuzz is
# installed when missing; it needs nightly features, which RUSTC_BOOTSTRAP=1 enables on the
# stable toolchain. The figures table comes last. Three scenarios run at once so that the
# three 10-minute kill loops overlap.
VITASTOR_FAULT_SECS ?= 60
VITASTOR_KILL_LOOP_SECS ?= 600
FUZZ_RUNS ?= 1000000
FIGURES := $(RELEASE_DIR)/fault-figures.txt
test-faults: setup
	$(BUILD)
	@rm -f $(FIGURES)
	VITASTOR_FAULT_SECS=$(VITASTOR_FAULT_SECS) VITASTOR_KILL_LOOP_SECS=$(VITASTOR_KILL_LOOP_SECS) \
		$(CARGO) test --release -p vitastor-faults -- --nocapture --test-threads=3 || \
		{ echo "== fault-injection figures (a scenario failed):"; cat $(FIGURES); exit 1; }
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	@for dir in protocol/fuzz nbd/fuzz layout/fuzz; do \
		for target in $$(cd $$dir && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
			log=$(RELEASE_DIR)/fuzz-$$target.log; \
			echo "== fuzz $$dir $$target: $(FUZZ_RUNS) inputs (log $$log)"; \
			(cd $$dir && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$target -- \
				-runs=$(FUZZ_RUNS) -print_final_stats=1) > $$log 2>&1 || \
				{ tail -n 40 $$log; exit 1; }; \
			echo "fuzz $$dir/$$target: $$(grep -m1 '^Done' $$log), no crash" >> $(FIGURES); \
		done; \
	done
	@echo "== fault-injection figures:"; cat $(FIGURES)

bench: setup
	$(BUILD)
	scripts/bench-blockstore.sh
	scripts/bench-fio.sh
	scripts/bench-nbd.sh
	scripts/bench-qemu.sh
	scripts/bench-layers.sh

# Debian packages of the release build in target/debian/ (see README "Install on Debian").
deb: build
	packaging/make-deb.sh

# Opt-in (network, root, a few minutes): install the packages into a clean Debian root made
# by mmdebstrap and run them there.
test-packages: deb
	packaging/test-packages.sh

clean:
	$(CARGO) clean
