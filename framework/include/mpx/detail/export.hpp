// mpx/detail/export.hpp — MPX_API marks what libmpx.so exports. The library is built with hidden visibility, so
// only the public API (and the mpx::detail functions that the public headers' inline and template code calls) is
// reachable from a program; the floors below api stay private to the library, and calls among them bind locally.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define MPX_API __attribute__((visibility("default")))
#else
#define MPX_API
#endif
