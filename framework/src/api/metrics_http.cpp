// libmpx-metrics-http.so: the metrics HTTP server (cpp-httplib), loaded by serve_metrics (see metrics_http.hpp).
#include "api/metrics_http.hpp"

#include <memory>
#include <thread>

#include <httplib.h>

namespace mpx::detail::metrics_http {
namespace {

struct Server {
  httplib::Server http;
  std::thread thread;
};

void* start(const char* host, int port, Render render, int* bound, std::string* error) {
  auto s = std::make_unique<Server>();
  // One handler thread: a scrape is one request to the coordinator, and each thread that asks opens a channel.
  s->http.new_task_queue = [] { return new httplib::ThreadPool(1); };
  s->http.Get("/metrics", [render](const httplib::Request&, httplib::Response& response) {
    std::string body;
    int status = 200;
    render(body, status);
    response.status = status;
    response.set_content(body, status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain");
  });
  const int port_bound = port == 0 ? s->http.bind_to_any_port(host) : (s->http.bind_to_port(host, port) ? port : -1);
  if (port_bound <= 0) {
    *error = "the address cannot be bound";
    return nullptr;
  }
  *bound = port_bound;
  s->thread = std::thread([http = &s->http] { http->listen_after_bind(); });
  // httplib's stop() does nothing before the loop runs, so the server is not handed out (to be stopped) before then.
  // The loop marks itself running first thing, a few instructions after the thread starts.
  while (!s->http.is_running()) std::this_thread::yield();
  return s.release();
}

void stop(void* server) {
  std::unique_ptr<Server> s(static_cast<Server*>(server));
  s->http.stop();
  if (s->thread.joinable()) s->thread.join();
}

const Module module{&start, &stop};

}  // namespace
}  // namespace mpx::detail::metrics_http

extern "C" __attribute__((visibility("default"))) const mpx::detail::metrics_http::Module* mpx_metrics_http_module() {
  return &mpx::detail::metrics_http::module;
}
