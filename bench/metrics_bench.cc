// The cost metrics add to each HTTP request: one counter increment and one histogram observation
// (what Api::Handle records per request), alone and with the other core contended.
#include <benchmark/benchmark.h>

#include "metrics/metrics.h"

namespace lastcall {
namespace {

Metrics& SharedMetrics() {
  static Metrics m;
  return m;
}

void BM_RequestMetrics(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  const std::string method = "GET", route = "/files/{id}", status = "200";
  for (auto _ : state) {
    m.http_requests.Inc({method, route, status});
    m.http_duration.Observe({route}, 0.0004);
  }
}
BENCHMARK(BM_RequestMetrics);
BENCHMARK(BM_RequestMetrics)->Threads(2);

void BM_RenderMetrics(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  for (auto _ : state) {
    std::string out;
    m.http_requests.Render(&out);
    m.http_duration.Render(&out);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_RenderMetrics);

}  // namespace
}  // namespace lastcall

BENCHMARK_MAIN();
