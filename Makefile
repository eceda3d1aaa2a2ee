# vitastor-rs: `make run` starts a local cluster, `make test` runs the whole suite.
CARGO ?= cargo
RELEASE_DIR := $(or $(CARGO_TARGET_DIR),target)/release
# Tests append a line here for each skip (testkit's prereq module); `make test` lists them.
SKIPPED := $(RELEASE_DIR)/skipped-tests.txt

.PHONY: setup build run test test-long bench clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace --bins
	$(CARGO) build --release -p vitastor-client -p vitastor-fio --lib  # libvitastor.so, libfio_vitastor.so
	$(CARGO) build --release -p vitastor-qemu  # block-vitastor.so, vitastor-qemu-preload

# A local cluster in ./var until Ctrl-C (see scripts/run.sh).
run: build
	@scripts/run.sh

# A test whose tool is missing fails. VITASTOR_ALLOW_SKIP=1 (never set here; only from the
# caller's environment, for local runs) makes it a skip instead; every skip, and what the
# machine cannot do (no NBD module...), is listed at the end.
test: setup
	$(CARGO) build --release --workspace --bins
	$(CARGO) build --release -p vitastor-client -p vitastor-fio --lib  # libvitastor.so, libfio_vitastor.so
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
	$(CARGO) build --release --workspace --bins
	VITASTOR_CRASH_POINTS=1000 VITASTOR_POWERLOSS_ROUNDS=2000 \
		$(CARGO) test --release -p vitastor-blockstore --test crash --test powerloss -- --nocapture

bench: setup
	$(CARGO) build --release --workspace --bins
	$(CARGO) build --release -p vitastor-client -p vitastor-fio --lib  # libvitastor.so, libfio_vitastor.so
	$(CARGO) build --release -p vitastor-qemu  # block-vitastor.so, vitastor-qemu-preload
	scripts/bench-blockstore.sh
	scripts/bench-fio.sh
	scripts/bench-nbd.sh
	scripts/bench-qemu.sh

clean:
	$(CARGO) clean
