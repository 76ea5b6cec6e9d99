#!/usr/bin/env bash
# The whole test suite on a fresh machine: install the package with its test extra
# (and, where apt is usable, Debian's offline Fashion-MNIST and tcmalloc), then run pytest.
#
#   bash scripts/test.sh            the whole suite (what CI runs: .ci/run)
#   bash scripts/test.sh --quick    the quick tier for the inner loop: every test not marked
#                                   slow, no install step (run the whole command once first)
#
# Further arguments go to pytest (e.g. tests/test_engine.py, -k resume, -x). How the suite
# is organised and what is slow: docs/design.md#tests.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then
  quick=1
  shift
fi
if [ "$quick" = 0 ]; then
  # Debian packages where apt is usable: the offline Fashion-MNIST (real-data tests) and
  # tcmalloc (the allocator ecl-jax run preloads, docs/performance.md; its tests need it)
  want=()
  [ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
  ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || want+=(libtcmalloc-minimal4)
  if [ "${#want[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}") >/dev/null 2>&1 \
      || echo "note: could not install ${want[*]} with apt; the tests that need them will be skipped"
  fi
  python -m pip install -q -e ".[test]"
elif ! python -c "import ecl_jax, xdist" >/dev/null 2>&1; then
  echo "error: the test extra is not installed; run 'bash scripts/test.sh' (the whole suite) once first" >&2
  exit 2
fi
# the linter first (seconds): unused or undefined names fail the suite (config in pyproject.toml)
python -m ruff check .
# two worker processes, scheduled by xdist group (tests/conftest.py)
if [ "$quick" = 1 ]; then
  exec python -m pytest -q -n 2 -m "not slow" "$@"
fi
exec python -m pytest -q -n 2 "$@"
