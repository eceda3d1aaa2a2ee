# vitastor-rs: `make run` starts a local cluster, `make test` runs the whole suite.
CARGO ?= cargo
RELEASE_DIR := target/release

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

test: setup
	$(CARGO) build --release --workspace --bins
	$(CARGO) build --release -p vitastor-client -p vitastor-fio --lib  # libvitastor.so, libfio_vitastor.so
	$(CARGO) test --release --workspace

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
