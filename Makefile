# reshard — see README.md. `make demo` and `make test` install what is missing.
GO      ?= go
BIN     := bin/reshard
PKGS    := ./...
export CGO_ENABLED := 1

.PHONY: all build test test-race test-fault demo bench pgcopydb bench-copy bench-replicas bench-schema bench-stream bench-stream-memory bench-admin bench-verify bench-local-ids lint deps fuzz clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(GO) build -trimpath -o $(BIN) ./cmd/reshard

# Every test, unit and integration (real PostgreSQL 15-18, started by
# tests/pgtest), the race detector over the concurrent stages, and the fault
# suite beside them (its own servers and ports; the integration tests spend
# most of their time waiting on PostgreSQL, so running both at once keeps
# make test within its budget on 2 cores). Fuzz targets run their seed
# corpus as normal tests.
test: deps
	$(GO) vet $(PKGS)
	@$(MAKE) --no-print-directory test-fault & fault=$$!; \
	$(GO) test -count=1 -timeout 14m $$($(GO) list $(PKGS) | grep -v '/tests/fault$$'); rc=$$?; \
	$(MAKE) --no-print-directory test-race || rc=1; \
	wait $$fault || rc=1; exit $$rc

# go test -race over the stream, copier, cutover and migration packages and
# the fault suite's proxy (the fault suite itself runs under -race in
# test-fault). See docs/reliability.md.
RACE_PKGS := ./sync/stream ./sync/copier ./sync/cutover ./sync/migrate ./tests/testkit
test-race: deps
	$(GO) test -race -count=1 -timeout 10m $(RACE_PKGS)

# The fault suite alone (tests/fault: crashes, server stops, network cuts,
# a shard rejecting writes, faults at every cutover and rollback step),
# under the race detector: each scenario's "fault hit" checks, its outcome
# and the summary line
# (faults injected, reshard restarts, rows compared); for a test that
# failed, the end of its own output as well. Full log in
# /tmp/reshard-test-fault.log.
test-fault: deps
	@$(GO) test -race -count=1 -timeout 20m -v ./tests/fault >/tmp/reshard-test-fault.log 2>&1; rc=$$?; \
	grep -E '^(--- |    .*(fault hit|fault did not hit|DATA RACE|exact|failed resumably|recovered|SHOW TASKS|writable)|fault suite summary|ok|FAIL)' /tmp/reshard-test-fault.log; \
	[ $$rc -eq 0 ] || scripts/fault-failures.sh /tmp/reshard-test-fault.log; exit $$rc

demo: build
	$(BIN) demo

# Throughput and allocation figures; see bench/README.md.
bench: deps pgcopydb
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Copy: psql COPY pipe, pgcopydb, CREATE SUBSCRIPTION and reshard on the same
# 3M-row data set, one run (BENCH_COPY_ROWS rows per table, default 1M).
bench-copy: deps pgcopydb
	$(GO) test ./bench -run '^$$' -bench '^BenchmarkCopy$$' -benchtime 1x -timeout 30m

# BenchmarkCopy's pgcopydb contender, from Debian's packages when missing
# (without it the benchmark fails rather than compare fewer contenders).
pgcopydb:
	@command -v pgcopydb >/dev/null 2>&1 || { apt-get install -y -qq pgcopydb >/dev/null 2>&1 || sudo apt-get install -y -qq pgcopydb >/dev/null 2>&1 || echo "pgcopydb unavailable: BenchmarkCopy fails without it"; }

# Copy from replicas (PostgreSQL 17): the same data read from the primary,
# from one standby and from two, one run (BENCH_REPLICA_ROWS rows per table,
# default 1M).
bench-replicas: deps
	$(GO) test ./bench -run '^$$' -bench BenchmarkCopyReplicas -benchtime 1x -timeout 30m

# Stream: a pgbench load for BENCH_STREAM_SECONDS (default 60) applied by
# reshard into 2 shards and by CREATE SUBSCRIPTION into 1 database, one run.
bench-stream: deps
	$(GO) test ./bench -run '^$$' -bench '^BenchmarkStream$$' -benchtime 1x -timeout 30m

# Stream memory: reshard's peak RSS streaming a 3M-row transaction and one
# carrying a 200 MB value, the 3M rows sent whole at commit, and again with
# resharding_ddl = "replicate" and a column added in the transaction
# (BENCH_STREAM_MEMORY_9M=1 adds 9M rows), against resharding_stream_memory
# + 64 MB; see bench/README.md.
bench-stream-memory: deps
	$(GO) test ./bench -run '^$$' -bench '^BenchmarkStreamMemory$$' -benchtime 1x -timeout 60m

# Schema sync: 1,000 tables and 3,000 indexes, against pg_dump -s | psql.
bench-schema: deps
	$(GO) test ./bench -run '^$$' -bench BenchmarkSchemaSync -benchtime 3x -timeout 30m

# Admin load: the same copy without and with 50 admin clients reading the SHOW
# views in a loop, alternately, one run; prints the slowdown and the errors.
bench-admin: deps
	$(GO) test ./bench -run '^$$' -bench BenchmarkAdminLoad -benchtime 1x -timeout 30m

# Verify: VERIFY of the copy bench's 3M-row data set on 2 shards against a
# count(*) + sum(hashtext(t::text)) scan of each table on the source alone,
# one run (BENCH_VERIFY_ROWS rows per table, default 1M); then 1,300 tables
# of 5 rows (BENCH_VERIFY_TABLES).
bench-verify: deps
	$(GO) test ./bench -run '^$$' -bench 'BenchmarkVerify' -benchtime 1x -timeout 30m

# Shard-local ids: what the generator CUTOVER installs costs per insert
# against a plain sequence default, on 2 and 4 shards, one run
# (BENCH_IDS_ROWS rows in one INSERT, BENCH_IDS_INSERTS single-row INSERTs).
bench-local-ids: deps
	$(GO) test ./bench -run '^$$' -bench BenchmarkShardLocalIDs -benchtime 1x -timeout 30m

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Every fuzz target in turn, FUZZTIME each: make fuzz FUZZTIME=10m. Their
# seed corpora (f.Add and testdata/fuzz/<Name>/) run in make test.
FUZZTIME ?= 60s
FUZZERS := ./commands:FuzzParse ./catalog:FuzzLoad ./sharding:FuzzBinaryReader \
	./sharding:FuzzTextReader ./sync/stream:FuzzDecodeRow ./sync/stream:FuzzDecodeMessage ./sync/ddl:FuzzStatement
fuzz: deps
	@set -e; for f in $(FUZZERS); do \
		echo "== $${f#*:} ($${f%%:*}, $(FUZZTIME))"; \
		$(GO) test $${f%%:*} -run '^$$' -fuzz "^$${f#*:}$$" -fuzztime $(FUZZTIME); \
	done

clean:
	rm -rf bin
