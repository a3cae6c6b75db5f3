#include "wire/auth.hpp"

#include <sodium.h>

#include <mpx/errors.hpp>

namespace mpx::wire::auth {

namespace {

constexpr std::string_view digest_prefix = "{sha256}";
constexpr std::size_t challenge_bytes = 40;
constexpr std::size_t min_challenge_bytes = 20;

void ensure_sodium() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw Error("mpx: libsodium could not be initialized");
}

std::string hmac_sha256(std::string_view key, std::string_view message) {
  ensure_sodium();
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(message.data()), message.size());
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_final(&state, mac);
  return std::string(reinterpret_cast<const char*>(mac), sizeof mac);
}

}  // namespace

std::string new_challenge() {
  ensure_sodium();
  std::string message(digest_prefix);
  std::string random(challenge_bytes, '\0');
  randombytes_buf(random.data(), random.size());
  return message + random;
}

std::string respond(std::string_view authkey, std::string_view challenge) {
  if (challenge.size() < min_challenge_bytes) throw AuthenticationError("mpx: authentication: challenge too short");
  if (!challenge.starts_with(digest_prefix)) {
    throw AuthenticationError("mpx: authentication: the peer asked for a digest other than sha256 (only sha256 is "
                              "supported)");
  }
  return std::string(digest_prefix) + hmac_sha256(authkey, challenge);
}

bool verify(std::string_view authkey, std::string_view challenge, std::string_view response) {
  const std::string expected = hmac_sha256(authkey, challenge);
  return response.size() == digest_prefix.size() + expected.size() && response.starts_with(digest_prefix) &&
         sodium_memcmp(response.data() + digest_prefix.size(), expected.data(), expected.size()) == 0;
}

}  // namespace mpx::wire::auth
