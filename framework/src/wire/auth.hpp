// Python 3.12's multiprocessing authentication (HMAC-SHA256 challenge and response), independent of what carries the
// messages: Listener/Client run it over a stream socket, a Manager over its ROUTER socket.
#pragma once

#include <string>
#include <string_view>

namespace mpx::wire::auth {

// The framing Python uses around the messages.
inline constexpr std::string_view challenge_tag = "#CHALLENGE#";
inline constexpr std::string_view welcome = "#WELCOME#";
inline constexpr std::string_view failure = "#FAILURE#";
inline constexpr std::size_t max_message_bytes = 256;

// A fresh challenge: "{sha256}" followed by 40 random bytes (without the #CHALLENGE# tag).
std::string new_challenge();
// The response proving knowledge of `authkey`: "{sha256}" + HMAC-SHA256(authkey, challenge). Throws
// mpx::AuthenticationError if the challenge is too short or asks for a digest other than sha256.
std::string respond(std::string_view authkey, std::string_view challenge);
// True if `response` is the right response to `challenge` under `authkey` (compared in constant time).
bool verify(std::string_view authkey, std::string_view challenge, std::string_view response);

}  // namespace mpx::wire::auth
