#include <mpx/keys.hpp>

#include "runtime/runtime.hpp"
#include "wire/curve.hpp"

namespace mpx {

void make_keys(const std::string& directory) { wire::make_key_directory(directory); }

void set_keys(const std::string& directory) { runtime::set_keys(directory); }

}  // namespace mpx
