// Conformance: the behaviours CPython's own tests check (Lib/test/_test_multiprocessing.py, test_concurrent_futures),
// through mpx's public API only. One TEST_CASE per CPython test, named after it.
#include <catch2/catch.hpp>
#include <mpx/mpx.hpp>
