// Node mode (framework/docs/distributed.md): the application's own binary, started as `app --mpx-node ENDPOINT
// [--mpx-keys DIR]` (or with MPX_NODE and MPX_KEYS), serves as the agent of its host for the coordinator at ENDPOINT
// instead of running main. mpx::init catches it before any thread exists.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mpx::runtime {

inline constexpr std::string_view node_flag = "--mpx-node";
inline constexpr std::string_view keys_flag = "--mpx-keys";
inline constexpr const char* node_variable = "MPX_NODE";

struct NodeMode {
  std::string endpoint;  // the coordinator's tcp:// endpoint
  std::string keys;      // this node's key directory (mpx-run keygen DIR --node NAME makes one)
};

// The node mode this program was started in, if any: --mpx-node in argv, else MPX_NODE.
std::optional<NodeMode> node_mode(const std::vector<std::string>& argv);
// Serves as the node's agent until the coordinator is gone; never returns. Call before any thread exists.
[[noreturn]] void run_node_agent(const NodeMode& mode);

}  // namespace mpx::runtime
