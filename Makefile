# ns2flows — non-recursive Makefile. `make run` builds and starts the collector; `make test`
# installs what is missing, builds and runs every test. See README.md.

BUILD   ?= build
CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
# /usr installs keep their configuration in /etc, as Debian policy has it
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNAME := $(shell uname -s)
FIXTURES ?= $(firstword $(wildcard $(abspath ../shared/fixtures) /work/shared/fixtures) $(abspath ../shared/fixtures))
FUZZ_TIME ?= 60
V ?= 0
Q := $(if $(filter 1,$(V)),,@)

WERROR ?= -Werror
WARN    = -Wall -Wextra $(WERROR) -Wshadow -Wpointer-arith -Wcast-qual -Wcast-align \
          -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition -Wwrite-strings \
          -Wvla -Wformat=2 -Wundef -Wimplicit-fallthrough -Wnull-dereference -Wdouble-promotion
STRICT  = -Wconversion -Wsign-conversion
CFLAGS ?= -O2 -g
PKGS    = libzstd libxxhash libmicrohttpd libpcap libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CRIT_LIBS  := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -I. $(WARN) $(PKG_CFLAGS) $(CFLAGS) -MMD -MP -pthread
LDLIBS     = $(PKG_LIBS) -pthread -lm

ENGINE_SRC = $(wildcard engine/*.c)
INGEST_SRC = $(wildcard ingest/*.c)
HTTP_SRC   = $(wildcard http/*.c)
SINK_SRC   = $(wildcard sink/*.c)
TOOLS      = ns2flows ns2flows-dump ns2flows-replay ns2flows-gen ns2flows-query
UNIT_SRC   = $(wildcard test/test_*.c)
IT_SRC     = $(wildcard test/it/test_*.c)
FUZZ_SRC   = $(wildcard test/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
ENGINE_LIB = $(BUILD)/lib/libns2engine.a
INGEST_LIB = $(BUILD)/lib/libns2ingest.a
HTTP_LIB   = $(BUILD)/lib/libns2http.a
WWW_FILES  = $(sort $(wildcard http/www/*))
WWW_C      = $(BUILD)/gen/http_www.c
WWW_OBJ    = $(BUILD)/obj/gen/http_www.o
SINK_LIB   = $(BUILD)/lib/libns2sink.a
LIBS_ALL   = $(HTTP_LIB) $(INGEST_LIB) $(SINK_LIB) $(ENGINE_LIB)
BINS       = $(addprefix $(BUILD)/bin/,$(TOOLS))
UNIT_BINS  = $(patsubst test/%.c,$(BUILD)/test/%,$(UNIT_SRC))
IT_BINS    = $(patsubst test/it/%.c,$(BUILD)/test/it/%,$(IT_SRC))
CH_TEST_BIN  = $(BUILD)/test/clickhouse/test_clickhouse
REGRESS_BINS = $(patsubst test/fuzz/%.c,$(BUILD)/test/regress_%,$(FUZZ_SRC))

.PHONY: all deps deps-browser browser run test unit it test-clickhouse deps-clickhouse bench-clickhouse asan fuzz fuzz-objs bench install uninstall clean fmt fmt-check deps-asan deps-fuzz

all: $(BINS)

# engine/ and ingest/ build with -Wconversion from day one; tests and tools without.
$(BUILD)/obj/engine/%.o: engine/%.c
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	$(Q)$(CC) $(ALL_CFLAGS) $(STRICT) -c $< -o $@
$(BUILD)/obj/ingest/%.o: ingest/%.c
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	$(Q)$(CC) $(ALL_CFLAGS) $(STRICT) -c $< -o $@
$(BUILD)/obj/sink/%.o: sink/%.c
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	$(Q)$(CC) $(ALL_CFLAGS) $(STRICT) -c $< -o $@
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(ENGINE_LIB): $(call obj,$(ENGINE_SRC))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(INGEST_LIB): $(call obj,$(INGEST_SRC))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(HTTP_LIB): $(call obj,$(HTTP_SRC)) $(WWW_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(SINK_LIB): $(call obj,$(SINK_SRC))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

# The Flows Window page: http/www/* become byte arrays in one generated C file (http/embed.sh,
# od from coreutils), so the daemon serves the page with no files beside it.
$(WWW_C): http/embed.sh $(WWW_FILES) Makefile
	@mkdir -p $(dir $@)
	@echo '  GEN   $@'
	$(Q)sh http/embed.sh $@ $(WWW_FILES)
$(WWW_OBJ): $(WWW_C)
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(LIBS_ALL)
	@mkdir -p $(dir $@)
	@echo '  LD    $@'
	$(Q)$(CC) $(ALL_CFLAGS) $< $(LIBS_ALL) $(LDLIBS) -o $@

# ns2flows-query is started once per question, and a summary (-I) costs about what starting a
# program costs: loading and relocating shared libraries (libc, zstd, xxhash) was a third of it.
# So it is linked statically (it needs none of the daemon's other libraries, and nothing of libc
# that loads modules at run time: no NSS, no iconv), from the archives Debian's -dev packages
# ship. Where an archive is missing, the linker is not GNU's, or a sanitizer is on (ASan needs
# the shared runtime), it links like the other tools.
STATIC_A := $(filter /%,$(foreach a,libc.a libzstd.a libxxhash.a,$(shell $(CC) -print-file-name=$(a) 2>/dev/null)))
ifeq ($(UNAME)$(words $(STATIC_A))$(findstring -fsanitize,$(CFLAGS)),Linux3)
$(BUILD)/bin/ns2flows-query: LDLIBS = -static -lzstd -lxxhash -pthread -lm
endif

$(BUILD)/test/%: $(BUILD)/obj/test/%.o $(LIBS_ALL)
	@mkdir -p $(dir $@)
	@echo '  LD    $@'
	$(Q)$(CC) $(ALL_CFLAGS) $< $(LIBS_ALL) $(LDLIBS) $(CRIT_LIBS) -o $@

# Each fuzz target also links with a plain main() that replays its regression inputs.
$(BUILD)/test/regress_%: $(BUILD)/obj/test/fuzz/regress_driver.o $(BUILD)/obj/test/fuzz/%.o $(LIBS_ALL)
	@mkdir -p $(dir $@)
	@echo '  LD    $@'
	$(Q)$(CC) $(ALL_CFLAGS) $^ $(LDLIBS) -o $@

# ---------------------------------------------------------------------------------------------
# Dependencies from Debian, by package name; apt-get update only when something is missing.
DEB_PKGS = pkg-config libzstd-dev libxxhash-dev libmicrohttpd-dev libcriterion-dev libpcap-dev \
           curl openssl libcurl4-openssl-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"; \
	for pair in libzstd:libzstd-dev libxxhash:libxxhash-dev libmicrohttpd:libmicrohttpd-dev \
	            criterion:libcriterion-dev libpcap:libpcap-dev libcurl:libcurl4-openssl-dev; do \
	  pc=$${pair%%:*}; deb=$${pair#*:}; \
	  pkg-config --exists $$pc 2>/dev/null || missing="$$missing $$deb"; \
	done; \
	command -v cc >/dev/null 2>&1 || missing="$$missing build-essential"; \
	for tool in curl openssl; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(DEB_PKGS) build-essential; \
	fi

deps-asan deps-fuzz: deps
	@command -v clang >/dev/null 2>&1 && [ -n "$$(ls /usr/lib/llvm-14/lib/clang/14*/lib/linux/libclang_rt.asan-x86_64.a 2>/dev/null)" ] || \
	  { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends clang libclang-rt-14-dev; }

# ---------------------------------------------------------------------------------------------
run: deps
	$(MAKE) all
	$(BUILD)/bin/ns2flows -f $(ARGS)

unit: $(BINS) $(UNIT_BINS) $(REGRESS_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; NS_FIXTURES=$(FIXTURES) NS_BIN=$(abspath $(BUILD)/bin) $$t --jobs 2; done
	@set -e; for r in $(REGRESS_BINS); do n=$${r##*/regress_}; echo "== $$r"; $$r test/fuzz/regress/$$n; done

it: $(BINS) $(IT_BINS)
	@set -e; for t in $(IT_BINS); do echo "== $$t"; NS_FIXTURES=$(FIXTURES) NS_BIN=$(abspath $(BUILD)/bin) $$t --jobs 1; done

test: deps deps-browser
	$(MAKE) unit it browser test-clickhouse

# The Flows Window in headless chromium (test/browser/, playwright-core pinned in its
# package-lock.json). NS_SKIP_BROWSER=1 skips it, saying so; without chromium it fails.
BROWSER_STAMP = test/browser/node_modules/.installed
browser: $(BINS) $(BROWSER_STAMP)
	@if [ "$(NS_SKIP_BROWSER)" = 1 ]; then echo "== browser test SKIPPED (NS_SKIP_BROWSER=1)"; else \
	  echo "== test/browser"; \
	  NS_FIXTURES=$(FIXTURES) NS_BIN=$(abspath $(BUILD)/bin) NS_ARTIFACTS=$(abspath $(BUILD)) \
	    node --test test/browser/; fi
$(BROWSER_STAMP): test/browser/package.json test/browser/package-lock.json
	@if [ "$(NS_SKIP_BROWSER)" != 1 ]; then \
	  cd test/browser && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; fi

deps-browser:
	@[ "$(NS_SKIP_BROWSER)" = 1 ] || { command -v chromium >/dev/null 2>&1 && command -v node >/dev/null 2>&1 && \
	  command -v npm >/dev/null 2>&1; } || \
	  { echo "deps-browser: installing chromium nodejs npm"; $(SUDO) apt-get update && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium nodejs npm; }

# The ClickHouse sink against real servers (Debian's clickhouse-server, started by the test as
# plain processes on loopback; the package's system service is kept from starting).
deps-clickhouse: deps
	@if [ ! -x /usr/sbin/clickhouse-server ] || ! command -v curl >/dev/null 2>&1; then \
	  echo "deps-clickhouse: installing clickhouse-server clickhouse-client curl"; \
	  norc=""; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null && $(SUDO) chmod 755 /usr/sbin/policy-rc.d && norc=1; }; \
	  { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends clickhouse-server clickhouse-client curl; } || true; \
	  [ -z "$$norc" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d; \
	fi

test-clickhouse: deps-clickhouse
	$(MAKE) $(BINS) $(CH_TEST_BIN)
	@if [ -x /usr/sbin/clickhouse-server ] && command -v curl >/dev/null 2>&1; then \
	  echo "== $(CH_TEST_BIN)"; \
	  NS_SRC=$(CURDIR) NS_FIXTURES=$(FIXTURES) NS_BIN=$(abspath $(BUILD)/bin) $(CH_TEST_BIN) --jobs 1; \
	else \
	  echo "**************************************************************************"; \
	  echo "** test-clickhouse SKIPPED: clickhouse-server could not be installed    **"; \
	  echo "**************************************************************************"; \
	fi

asan: deps-asan
	$(MAKE) BUILD=build/asan CC=clang CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" unit it

FUZZ_CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
fuzz: deps-fuzz
	$(MAKE) BUILD=build/fuzz CC=clang CFLAGS="$(FUZZ_CFLAGS)" fuzz-objs
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all build/fuzz/obj/test/fuzz/$$n.o $(addprefix build/fuzz/lib/,libns2http.a libns2ingest.a libns2sink.a libns2engine.a) $(LDLIBS) -o build/fuzz/$$n; \
	  mkdir -p build/fuzz/corpus/$$n; \
	  seeds=test/fuzz/regress/$$n; \
	  echo "== $$n for $(FUZZ_TIME)s"; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_TIME) -artifact_prefix=build/fuzz/$$n- build/fuzz/corpus/$$n $$seeds; \
	done

fuzz-objs: $(LIBS_ALL) $(call obj,$(FUZZ_SRC))

bench:
	$(MAKE) all
	QUICK='$(QUICK)' bench/run.sh

bench-clickhouse: deps-clickhouse
	$(MAKE) all
	QUICK='$(QUICK)' nice -n 10 bench/clickhouse.sh

# ---------------------------------------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONFDIR)/ns2flows
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	[ -f $(DESTDIR)$(SYSCONFDIR)/ns2flows/netsaw.conf ] || install -m 644 dist/netsaw.conf $(DESTDIR)$(SYSCONFDIR)/ns2flows/netsaw.conf
ifeq ($(UNAME),Darwin)
	install -d $(DESTDIR)/Library/LaunchDaemons
	sed 's|@PREFIX@|$(PREFIX)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' dist/com.proquesys.NetSAW2.plist > $(DESTDIR)/Library/LaunchDaemons/com.proquesys.NetSAW2.plist
else
	install -d $(DESTDIR)/lib/systemd/system
	sed 's|@PREFIX@|$(PREFIX)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' dist/ns2flows.service > $(DESTDIR)/lib/systemd/system/ns2flows.service
endif

# Removes the programs and service files; never the configuration's database.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(TOOLS))
	rm -f $(DESTDIR)/lib/systemd/system/ns2flows.service $(DESTDIR)/Library/LaunchDaemons/com.proquesys.NetSAW2.plist
	@echo "uninstall: kept $(DESTDIR)$(SYSCONFDIR)/ns2flows/netsaw.conf and the database ($(DESTDIR)/var/lib/ns2flows/SESSIONDB)"

clean:
	rm -rf build

FMT_SRC = $(wildcard engine/*.[ch] ingest/*.[ch] http/*.[ch] sink/*.[ch] tools/*.c test/*.c test/it/*.c test/clickhouse/*.c test/fuzz/*.c)
fmt:
	clang-format -i $(FMT_SRC)
fmt-check:
	clang-format --dry-run --Werror $(FMT_SRC)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
