#include <mpx/version.hpp>

namespace mpx {

// Compiled here, not inline in the header, so that it reports the library that is loaded at run time.
std::string_view version() noexcept { return MPX_VERSION_STRING; }

}  // namespace mpx
