/// \file
/// mpx/process.hpp — mpx::init, start methods, and mpx::Process (Python's multiprocessing.Process).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <sys/types.h>

#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/start_method.hpp>  // StartMethod, to_string, parse_start_method, cpu_count

namespace mpx {

/// The first line of main. In the parent it starts the forkserver zygote (before any thread exists) and prepares the
/// session; the coordinator starts lazily. In a worker started by spawn it runs the worker's target and exits: it never
/// returns there.
MPX_API void init(int argc, char** argv);

/// Like Python: setting it twice throws ProcessError ("context has already been set") unless force is true.
MPX_API void set_start_method(StartMethod method, bool force = false);
MPX_API void set_start_method(std::string_view name, bool force = false);  ///< The same, by name (see parse_start_method).
MPX_API StartMethod get_start_method();  ///< forkserver unless set, as in Python 3.14
/// {"forkserver", "spawn", "fork"}: the default first, as in Python 3.14.
MPX_API std::vector<std::string> get_all_start_methods();
/// The program that spawn runs; /proc/self/exe unless set (Python: multiprocessing.set_executable).
MPX_API void set_executable(std::string path);
MPX_API std::string get_executable();  ///< The program that spawn runs.

/// Tag for a target that captures state: allowed only under the fork start method, where memory is copied.
struct closure_t {
  explicit closure_t() = default;  ///< Explicit, so that `{}` never converts to the tag by accident.
};
inline constexpr closure_t closure{};  ///< The closure tag: mpx::Process(mpx::closure, lambda).

/// Python's Process(name=..., daemon=...) keywords, plus the start method of this process only.
struct ProcessOptions {
  std::string name;             ///< empty: "Process-N" (or "<Class>-N" for a ProcessClass), as in Python
  std::optional<bool> daemon;   ///< unset: inherit from the creating process, as in Python
  std::optional<StartMethod> method;  ///< unset: get_start_method() at start()
  /// The node to run on (mpx::nodes()); unset or 0: this host. A process on another node starts through that node's
  /// forkserver, whatever `method` says, so its target must be a function, not a closure.
  std::optional<std::uint32_t> node = std::nullopt;  // a default, so that ProcessOptions{name, daemon, method} stays whole
};

namespace detail {
struct ProcessState;
}

/// Python's multiprocessing.Process: a child process that runs a target. The object is a handle: copies control the
/// same child. Errors: a misuse (start twice, join before start, close while running) raises mpx::ProcessError.
class MPX_API Process {
 public:
  /// Process(target, args...): target is a plain function or a captureless lambda; args are encoded now.
  template <class F, class... A>
    requires(!std::is_same_v<std::remove_cvref_t<F>, ProcessOptions> && !std::is_same_v<std::remove_cvref_t<F>, closure_t> &&
             !std::is_base_of_v<Process, std::remove_cvref_t<F>>)
  explicit Process(F&& target, A&&... args) : Process(ProcessOptions{}, std::forward<F>(target), std::forward<A>(args)...) {}

  /// The same, with a name, daemon flag or start method.
  template <class F, class... A>
  Process(ProcessOptions options, F&& target, A&&... args)
      : Process(std::move(options), mpx::bind(std::forward<F>(target), std::forward<A>(args)...)) {}

  /// A target that captures state; start() refuses it unless the start method is fork.
  Process(closure_t, std::function<void()> target, ProcessOptions options = {});

  Process(ProcessOptions options, BoundCall call);  ///< A process that runs a call already bound (mpx::bind).

  Process(const Process&) = default;  ///< a handle: copies control the same child
  Process& operator=(const Process&) = default;  ///< Makes this handle control the other's child.
  Process(Process&&) noexcept = default;  ///< Moves the handle.
  Process& operator=(Process&&) noexcept = default;  ///< Moves the handle.
  virtual ~Process() = default;  ///< Releases the handle only: the child keeps running.

  /// Starts the child with its start method. ProcessError if started before, or if this process is a daemon (daemons
  /// cannot have children). Arguments that cannot travel fail earlier, at construction.
  void start();
  /// Waits for the process to end. join(timeout) returns false if it is still running when the timeout passes.
  void join();
  [[nodiscard]] bool join(std::chrono::duration<double> timeout);  ///< Waits up to `timeout`; false if still running then.
  bool is_alive();  ///< True after start() until the child ends.
  void terminate();  ///< SIGTERM
  void kill();       ///< SIGKILL
  void interrupt();  ///< SIGINT
  void send_signal(int signal);  ///< Sends `signal` to the child: ProcessError before start, nothing once it ended.
  /// Releases the handle's resources; throws ProcessError if the process is still running.
  void close();

  /// nullopt while running or before start; N for exit(N); 1 for an uncaught exception; -N when killed by signal N.
  std::optional<int> exitcode();
  /// The exception the target threw, once the process has ended; nullopt if it ended without one.
  std::optional<RemoteError> exception();
  pid_t pid() const;  ///< 0 before start
  /// A file descriptor that becomes readable when the process ends (for poll/select); -1 before start. For a process
  /// on another node it is a pipe the coordinator's word on its end is written to.
  int sentinel() const;
  /// The node it runs on (0: the coordinator's host).
  std::uint32_t node() const;

  const std::string& name() const;  ///< The name: "Process-N" unless given.
  void set_name(std::string name);  ///< Renames the handle (Python: p.name = ...).
  bool daemon() const;  ///< Whether it is a daemon: killed when its parent exits, and cannot start children.
  void set_daemon(bool daemon);  ///< only before start
  StartMethod start_method() const;  ///< The method it starts (or started) with.

  /// The body of the process. Subclasses (through ProcessClass<T>) override it; the default runs the target.
  virtual void run();

  /// Internal: a handle on an existing state (current_process, active_children).
  explicit Process(std::shared_ptr<detail::ProcessState> state);
  const std::shared_ptr<detail::ProcessState>& state() const { return state_; }  ///< Internal: the shared state.

 protected:
  struct subclass_t {};  ///< Tag of the ProcessClass constructor.
  /// For ProcessClass<T>: the object itself is the payload, rebuilt in the child by `rebuild`.
  Process(subclass_t, std::string_view class_name, Trampoline rebuild, std::string (*encode_self)(const Process&));
  /// In a rebuilt subclass object: take the name, pid and daemon flag of the process it runs in.
  void adopt_current_identity();

 private:
  std::shared_ptr<detail::ProcessState> state_;
};

/// Python's `class Processor(Process): def run(self)`. Derive as `struct Processor : mpx::ProcessClass<Processor>`,
/// override run(), and list the members the child needs in MSGPACK_DEFINE(...). Under spawn and forkserver the child
/// rebuilds the object from those members; under fork it runs on the copied object.
template <class Self>
class ProcessClass : public Process {
 protected:
  /// A process whose body is this object's run(); call start() to run it.
  ProcessClass() : Process(subclass_t{}, class_name(), &rebuild, &encode_self) {}

 private:
  static std::string_view class_name() {
    static const std::string name = demangled_class_name(typeid(Self).name());
    return name;
  }
  static std::string demangled_class_name(const char* mangled);

  static void check() {
    static_assert(std::is_default_constructible_v<Self>,
                  "mpx::ProcessClass<T>: T needs a default constructor, so that spawn and forkserver can rebuild it "
                  "in the child. Add `T() = default;`");
    static_assert(detail::HasMsgpackDefine<Self>,
                  "mpx::ProcessClass<T>: T must list the members the child needs with MSGPACK_DEFINE(members...) "
                  "(use MSGPACK_DEFINE() if there are none), so that spawn and forkserver can rebuild it");
  }
  static std::string encode_self(const Process& self) {
    check();
    return encode(static_cast<const Self&>(self));
  }
  static void rebuild(ErasedFunction, std::string_view payload, std::string& result) {
    check();
    Self self;
    decode_into(payload, self);
    self.adopt_current_identity();
    self.run();
    result = encode(Object{});
  }
  static void decode_into(std::string_view payload, Self& self) {
    auto handle = detail::unpack_bounded(payload.data(), payload.size());
    handle.get().convert(self);
  }
};

template <class Self>
std::string ProcessClass<Self>::demangled_class_name(const char* mangled) {
  std::string full = demangle(mangled);
  auto colon = full.rfind("::");
  return colon == std::string::npos ? full : full.substr(colon + 2);
}

/// This process, as a Process handle ("MainProcess" in the parent).
MPX_API Process current_process();
/// The process that started this one; nullopt in the main process.
MPX_API std::optional<Process> parent_process();
/// Live children started by this process; reaps the ones that ended, as Python does.
MPX_API std::vector<Process> active_children();

/// A start-method context, as returned by Python's get_context(): ctx.Process(...) uses its method.
class Context {
 public:
  explicit Context(StartMethod method) : method_(method) {}  ///< A context for `method`.
  StartMethod get_start_method() const { return method_; }  ///< The context's start method.

  /// Python's ctx.Process(target, args): a Process that starts with this context's method.
  template <class F, class... A>
  mpx::Process Process(F&& target, A&&... args) const {
    ProcessOptions options;
    options.method = method_;
    return mpx::Process(std::move(options), std::forward<F>(target), std::forward<A>(args)...);
  }

 private:
  StartMethod method_;
};

/// get_context() uses get_start_method(); an unknown name throws std::invalid_argument.
MPX_API Context get_context();
MPX_API Context get_context(std::string_view method);  ///< The context of the method named (see parse_start_method).

}  // namespace mpx
