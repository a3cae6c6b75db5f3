#include <mpx/keys.hpp>

#include "runtime/runtime.hpp"
#include "wire/curve.hpp"

namespace mpx {

void make_keys(const std::string& directory) { wire::make_key_directory(directory); }

void make_node_keys(const std::string& directory, const std::string& name) {
  wire::make_node_key_directory(directory, name);
}

void set_keys(const std::string& directory) { runtime::set_keys(directory); }

}  // namespace mpx
