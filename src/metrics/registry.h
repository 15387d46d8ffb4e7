// Prometheus metrics, kept in memory and rendered in the text exposition format (version 0.0.4).
// Counters and histograms are labelled families; gauges that describe stored state are computed
// at scrape time by collectors. Thread-safe: recording is a short critical section per family.
//
// Written by hand (about 200 lines) rather than with Debian's prometheus-cpp-dev: its core
// registry and text serializer would serve, but it brings civetweb and libcurl for pull and push
// that lastcall does not use (Beast already serves /metrics), and the gauges here are computed
// from the store at scrape time. promtool checks the output in make test.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lastcall {

using Labels = std::vector<std::pair<std::string, std::string>>;  // in declaration order

class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> label_names);
  // Adds v (>= 0) to the series with these label values (one per label name, in order).
  void Inc(const std::vector<std::string>& label_values, double v = 1);
  double Value(const std::vector<std::string>& label_values) const;
  void Render(std::string* out) const;

 private:
  std::string name_, help_;
  std::vector<std::string> label_names_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, double> series_;
};

class HistogramFamily {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds);
  void Observe(const std::vector<std::string>& label_values, double v);
  uint64_t Count(const std::vector<std::string>& label_values) const;
  void Render(std::string* out) const;

 private:
  struct Series {
    std::vector<uint64_t> buckets;  // cumulative at render time; per-bucket here
    double sum = 0;
    uint64_t count = 0;
  };
  std::string name_, help_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, Series> series_;
};

// A gauge computed at scrape time. The collector returns (label values, value) pairs.
struct GaugeFamily {
  std::string name, help;
  std::vector<std::string> label_names;
  std::function<std::vector<std::pair<std::vector<std::string>, double>>()> collect;
  void Render(std::string* out) const;
};

// Escapes a label value for the text format (backslash, double quote, newline).
std::string EscapeLabelValue(const std::string& v);
std::string FormatMetricValue(double v);

}  // namespace lastcall
