# meshid build. Plain make, -MMD dependencies, one object tree per variant:
#   build/rel   release objects for bin/meshid (hardened, -O2)
#   build/asan  AddressSanitizer + UBSan objects for tests (bin: build/asan/bin/meshid)
#   build/fuzz  clang libFuzzer objects for tests/fuzz targets
#   build/clang a clang -Werror compile of everything (warnings check only)
# Targets: all (default), run, test, bench, fuzz, lint, deps, clean.

CC       ?= gcc
CLANG    ?= clang
PKGS     := openssl sqlite3 jansson yaml-0.1
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lgrpc -lgpr -lprotobuf-c -lpthread

WARN     := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-missing-field-initializers -Werror
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -I. -Ibuild/gen $(WARN) $(PKG_CFLAGS) -MMD -MP
# protoc-c output is not ours: compile it without our warning set.
GEN_CFLAGS  := -std=c11 -D_GNU_SOURCE -Ibuild/gen -MMD -MP

rel_CC      := $(CC)
rel_CFLAGS  := -O2 -g -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
rel_LDFLAGS := -pie -Wl,-z,relro,-z,now
asan_CC     := $(CC)
asan_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined -DMESHID_TESTING
asan_LDFLAGS:= -fsanitize=address,undefined
fuzz_CC     := $(CLANG)
fuzz_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=undefined -DMESHID_TESTING -DMESHID_FUZZING
clang_CC    := $(CLANG)
clang_CFLAGS:= -O1 -fsyntax-only

MODULES  := lib storage storage/sqlite identity ca sds meshcore
LIB_SRC  := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
# .proto files under proto/ become build/gen/<same path>.pb-c.{c,h} (protoc-c).
PROTO_SRC := $(shell find proto -name '*.proto' 2>/dev/null | sort)
GEN_SRC  := $(patsubst proto/%.proto,build/gen/%.pb-c.c,$(PROTO_SRC))
GEN_HDR  := $(GEN_SRC:.c=.h)
CLI_SRC  := $(wildcard cli/*.c)
TESTLIB_SRC := $(wildcard tests/testlib/*.c)
UNIT_DIRS := $(sort $(patsubst tests/unit/%/,%,$(dir $(wildcard tests/unit/*/*.c))))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)

.PHONY: all run test bench fuzz lint deps clean unit integration fuzz-replay clang-check
all: bin/meshid

deps:
	@bash scripts/install-deps.sh

# ---- generated protobuf-c code ------------------------------------------------
build/gen/%.pb-c.c build/gen/%.pb-c.h: proto/%.proto
	@mkdir -p build/gen
	protoc-c --c_out=build/gen -Iproto -I/usr/include $<
.PRECIOUS: build/gen/%.pb-c.c build/gen/%.pb-c.h

# ---- per-variant object trees -------------------------------------------
define VARIANT
$(1)_LIB_OBJ := $$(patsubst %.c,build/$(1)/%.o,$$(LIB_SRC)) \
                $$(patsubst build/gen/%.c,build/$(1)/gen/%.o,$$(GEN_SRC))
$(1)_CLI_OBJ := $$(patsubst %.c,build/$(1)/%.o,$$(CLI_SRC))
build/$(1)/gen/%.o: build/gen/%.c | $$(GEN_HDR)
	@mkdir -p $$(@D)
	$$($(1)_CC) $$(GEN_CFLAGS) $$(filter-out -fsyntax-only,$$($(1)_CFLAGS)) -c $$< -o $$@
build/$(1)/%.o: %.c | $$(GEN_HDR)
	@mkdir -p $$(@D)
	$$($(1)_CC) $$(BASE_CFLAGS) $$($(1)_CFLAGS) -c $$< -o $$@
build/$(1)/libmeshid.a: $$($(1)_LIB_OBJ)
	@mkdir -p $$(@D)
	@rm -f $$@
	ar rcs $$@ $$^
-include $$(patsubst %.c,build/$(1)/%.d,$$(LIB_SRC) $$(CLI_SRC) $$(TESTLIB_SRC) $$(BENCH_SRC) \
          $$(wildcard tests/unit/*/*.c))
endef
$(eval $(call VARIANT,rel))
$(eval $(call VARIANT,asan))
$(eval $(call VARIANT,fuzz))

bin/meshid: $(rel_CLI_OBJ) build/rel/libmeshid.a
	@mkdir -p bin
	$(CC) $(rel_LDFLAGS) -o $@ $(rel_CLI_OBJ) build/rel/libmeshid.a $(PKG_LIBS)

build/asan/bin/meshid: $(asan_CLI_OBJ) build/asan/libmeshid.a
	@mkdir -p $(@D)
	$(CC) $(asan_LDFLAGS) -o $@ $(asan_CLI_OBJ) build/asan/libmeshid.a $(PKG_LIBS)

# ---- unit tests: one cmocka binary per module (tests/unit/<module>/*.c) ----
asan_TESTLIB_OBJ := $(patsubst %.c,build/asan/%.o,$(TESTLIB_SRC))
UNIT_BINS := $(foreach d,$(UNIT_DIRS),build/asan/tests/unit_$(subst /,_,$(d)))
define UNIT
build/asan/tests/unit_$(subst /,_,$(1)): $$(patsubst %.c,build/asan/%.o,$$(wildcard tests/unit/$(1)/*.c)) $$(asan_TESTLIB_OBJ) build/asan/libmeshid.a
	@mkdir -p $$(@D)
	$$(CC) $$(asan_LDFLAGS) -o $$@ $$^ $$(PKG_LIBS) -lcmocka
endef
$(foreach d,$(UNIT_DIRS),$(eval $(call UNIT,$(d))))

# ---- fuzz targets (clang + libFuzzer) ----------------------------------------
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/bin/%,$(FUZZ_SRC))
build/fuzz/bin/%: build/fuzz/tests/fuzz/%.o build/fuzz/libmeshid.a
	@mkdir -p $(@D)
	$(CLANG) -fsanitize=fuzzer,address,undefined -o $@ $^ $(PKG_LIBS)
-include $(patsubst %.c,build/fuzz/%.d,$(FUZZ_SRC))

# ---- benchmarks (release flags) ------------------------------------------------
BENCH_BINS := $(patsubst tests/bench/%.c,build/rel/bin/%,$(BENCH_SRC))
build/rel/bin/%: build/rel/tests/bench/%.o build/rel/libmeshid.a
	@mkdir -p $(@D)
	$(CC) $(rel_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# ---- clang warnings check -----------------------------------------------------
clang-check: $(GEN_HDR)
	@for f in $(LIB_SRC) $(CLI_SRC); do \
	  $(CLANG) $(BASE_CFLAGS) $(clang_CFLAGS) -MF /dev/null $$f || exit 1; done
	@echo "clang-check: $(words $(LIB_SRC) $(CLI_SRC)) files clean under clang -Werror"

# ---- user-facing targets -------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/run-dev.sh

unit: $(UNIT_BINS)
integration: build/asan/bin/meshid bin/meshid
fuzz-replay: $(FUZZ_BINS)

test: deps
	@$(MAKE) --no-print-directory -j$$(nproc) bin/meshid build/asan/bin/meshid $(UNIT_BINS) $(FUZZ_BINS)
	@$(MAKE) --no-print-directory clang-check
	@bash scripts/run-tests.sh

bench: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(BENCH_BINS)
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done

FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(FUZZ_BINS)
	@for b in $(FUZZ_BINS); do n=$$(basename $$b); mkdir -p tests/fuzz/corpus/$$n; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  $$b -max_total_time=$(FUZZ_SECONDS) -max_len=65536 tests/fuzz/corpus/$$n || exit 1; done

lint:
	@bash scripts/lint.sh

clean:
	rm -rf build bin
