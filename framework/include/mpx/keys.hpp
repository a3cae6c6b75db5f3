/// \file
/// mpx/keys.hpp — CURVE keys for a session whose coordinator listens on tcp:// (many hosts). A tcp:// coordinator
/// always uses CURVE: it admits only the client keys of its allow list, and plain tcp without keys is refused. The
/// key directory, what it holds and who needs which file: framework/docs/distributed.md, "Keys and security".
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <string>

#include <mpx/detail/export.hpp>

namespace mpx {

/// Creates a key directory (what `mpx-run keygen DIR` does): `coordinator.key` and `coordinator.key_secret` (the
/// coordinator's pair), `client.key` and `client.key_secret` (the pair every process of the session connects with),
/// and `allowed/client.key`, the allow list. The files are czmq's certificates, which czmq's `zcert_load` and pyzmq's
/// `zmq.auth.load_certificate` read. Throws ValueError if the directory already holds keys (they are never
/// overwritten) or a file cannot be written.
MPX_API void make_keys(const std::string& directory);

/// Gives node `name` a key of its own (what `mpx-run keygen DIR --node NAME` does) in a directory make_keys made:
/// `DIR/nodes/NAME/` is the node's key directory (its pair, and the coordinator's public key) to copy to its host and
/// pass as `--mpx-keys`, and `DIR/allowed/NAME.key` admits it. The coordinator binds every message on a connection
/// with that key to the node that said hello with it (framework/docs/distributed.md). Throws ValueError for a name
/// other than letters, digits, '-', '_' and '.', or if that node already has keys.
MPX_API void make_node_keys(const std::string& directory, const std::string& name);

/// Chooses the key directory of this session's tcp:// coordinator instead of the environment variable `MPX_KEYS`;
/// child processes are told it. Call it in the root process before the coordinator starts (before the first shared
/// object), or it throws ProcessError. Throws ValueError naming the file that is missing or malformed.
MPX_API void set_keys(const std::string& directory);

}  // namespace mpx
