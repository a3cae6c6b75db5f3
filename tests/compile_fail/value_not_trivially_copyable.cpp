// expect: T must be trivially copyable
// A Value of a type that owns heap memory cannot live in shared memory another process maps: refused at compile time
// with a readable message.
#include <mpx/mpx.hpp>

#include <string>

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Value<std::string> name(std::string("no"));
  (void)name;
}
