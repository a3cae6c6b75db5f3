// The flagship demo: mpx::Process under every start method, with exit codes, a kill and a thrown exception.
//
// Targets are plain functions: a function's identity is its address, so the same call runs under fork,
// forkserver and spawn without registration. Child lines within one group may come in any order.
#include <mpx/mpx.hpp>

#include <cstdarg>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

void greet(int index, std::string greeting) {
  mpx::Process me = mpx::current_process();
  std::printf("    [child %d] %s from %s, pid %d, started by %s\n", index, greeting.c_str(), me.name().c_str(),
              static_cast<int>(getpid()), std::string(mpx::to_string(me.start_method())).c_str());
  std::fflush(stdout);
}

void exit_with_three() { std::exit(3); }

void sleep_until_killed() {
  for (;;) pause();
}

void throw_error(std::string message) { throw std::runtime_error(message); }

// Every line is flushed at once, so that it keeps its place among the children's lines and their stderr reports.
[[gnu::format(printf, 1, 2)]] void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(stdout, format, args);
  va_end(args);
  std::fflush(stdout);
}

std::string code(std::optional<int> exitcode) { return exitcode ? std::to_string(*exitcode) : "None"; }

void demo(mpx::StartMethod method) {
  const mpx::Context ctx(method);
  say("== start method: %s ==\n", std::string(mpx::to_string(method)).c_str());

  std::vector<mpx::Process> processes;
  for (int i = 0; i < 4; ++i) processes.push_back(ctx.Process(greet, i, "hello"));
  for (auto& p : processes) p.start();
  for (auto& p : processes) p.join();
  std::string codes;
  for (auto& p : processes) codes += (codes.empty() ? "" : ", ") + code(p.exitcode());
  say("  4 greeters joined, exit codes [%s]\n", codes.c_str());

  mpx::Process exits = ctx.Process(exit_with_three);
  exits.start();
  exits.join();
  say("  std::exit(3)            -> exitcode %s\n", code(exits.exitcode()).c_str());

  mpx::Process killed = ctx.Process(sleep_until_killed);
  killed.start();
  killed.kill();
  killed.join();
  say("  kill() (SIGKILL)        -> exitcode %s\n", code(killed.exitcode()).c_str());

  mpx::Process throws = ctx.Process(throw_error, "boom");
  throws.start();
  throws.join();
  say("  throw runtime_error     -> exitcode %s", code(throws.exitcode()).c_str());
  if (auto e = throws.exception())
    say(", exception() = %s: \"%s\" (pid %d)\n", e->type().c_str(), e->message().c_str(), static_cast<int>(e->pid()));
  else
    say(", exception() = none\n");
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::string methods;
  for (const auto& m : mpx::get_all_start_methods()) methods += (methods.empty() ? "" : ", ") + m;
  say("%s (pid %d): %d CPUs, start methods [%s], default %s\n", mpx::current_process().name().c_str(),
      static_cast<int>(getpid()), mpx::cpu_count(), methods.c_str(),
      std::string(mpx::to_string(mpx::get_start_method())).c_str());
  say("(the thrown exception is also reported on stderr by the child, as Python prints its traceback)\n\n");

  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn}) {
    demo(method);
    say("\n");
  }
  say("done\n");
}
