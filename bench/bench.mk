# bench/bench.mk — included by the main Makefile.
#   make bench        the full run (~20–25 min on 2 cores): peers table, NBD rate
#                     aggregation, nmp micro-benchmark, failover per PSP; writes
#                     docs/benchmarks.md and docs/failover-*.svg
#   make bench-quick  the same, short (~5 min); writes /tmp/mpathfs-bench-quick.md
#   make bench-soak   opt-in: RSS at QD64 over a 10-minute soak (bench/soak.sh),
#                     then re-assembles docs/benchmarks.md
# Knobs are environment variables, see the headers of bench/run.sh,
# bench/failover.sh and bench/soak.sh (ROUNDS, RUNTIME, SIZE, RATE, PSPS, ...).
.PHONY: bench bench-quick bench-soak bench-failover bench-hedge

bench:
	bash bench/run.sh

bench-quick:
	bash bench/run.sh --quick

bench-failover:
	PARTS=failover bash bench/run.sh

bench-soak:
	bash bench/soak.sh

# Hedged reads against a hung path, hedging off vs on per PSP
# (bench/hedge.sh); writes bench/results/hedge.md and re-assembles
# docs/benchmarks.md.
bench-hedge:
	bash bench/hedge.sh && bash bench/run.sh --assemble-only

# CPU profile of the 4k QD1/QD32 jobs with perf (bench/profile.sh); writes
# bench/results/profile.md and re-assembles docs/benchmarks.md.
.PHONY: bench-profile
bench-profile:
	bash bench/profile.sh && bash bench/run.sh --assemble-only

# What a 4k QD1 I/O costs over NBD, mpathfs against nbdfuse: CPU time and
# context switches per I/O of the daemon and of nbdkit (bench/nbdcost.sh,
# perf stat software counters); writes bench/results/nbdcost.md.
.PHONY: bench-nbdcost
bench-nbdcost:
	bash bench/nbdcost.sh

# The array server against tgt over iSCSI (libiscsi's iscsi-perf: 4k random
# read QD1 and QD32, 1 MiB sequential read); writes bench/results/iscsi.md
# and re-assembles docs/benchmarks.md. Also a part of `make bench`.
.PHONY: bench-iscsi
bench-iscsi:
	bash bench/iscsi.sh

# The NBD hop against its floor: mpathfs-nbd, nbdfuse, fio's nbd engine
# (libnbd, no FUSE) and bench/fuseceiling over the suite's jobs, with CPU per
# I/O (bench/nbdfloor.sh); writes bench/results/nbdfloor.md and re-assembles
# docs/benchmarks.md. Also a part of `make bench`.
.PHONY: bench-nbdfloor
bench-nbdfloor:
	bash bench/nbdfloor.sh
