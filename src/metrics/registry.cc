#include "metrics/registry.h"

#include <cmath>
#include <cstdio>

namespace lastcall {
namespace {

void RenderLabels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                  const std::string& extra_name, const std::string& extra_value, std::string* out) {
  if (names.empty() && extra_name.empty()) return;
  out->push_back('{');
  bool first = true;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (!first) out->push_back(',');
    first = false;
    *out += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    if (!first) out->push_back(',');
    *out += extra_name + "=\"" + extra_value + "\"";
  }
  out->push_back('}');
}

void Header(const std::string& name, const std::string& help, const char* type, std::string* out) {
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

CounterFamily::CounterFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

void CounterFamily::Inc(const std::vector<std::string>& label_values, double v) {
  if (v < 0) return;
  std::lock_guard<std::mutex> l(mu_);
  series_[label_values] += v;
}

double CounterFamily::Value(const std::vector<std::string>& label_values) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = series_.find(label_values);
  return it == series_.end() ? 0 : it->second;
}

void CounterFamily::Render(std::string* out) const {
  Header(name_, help_, "counter", out);
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [labels, v] : series_) {
    *out += name_;
    RenderLabels(label_names_, labels, "", "", out);
    *out += " " + FormatMetricValue(v) + "\n";
  }
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {}

void HistogramFamily::Observe(const std::vector<std::string>& label_values, double v) {
  std::lock_guard<std::mutex> l(mu_);
  Series& s = series_[label_values];
  if (s.buckets.empty()) s.buckets.assign(bounds_.size(), 0);
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      ++s.buckets[i];
      break;
    }
  }
  s.sum += v;
  ++s.count;
}

uint64_t HistogramFamily::Count(const std::vector<std::string>& label_values) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = series_.find(label_values);
  return it == series_.end() ? 0 : it->second.count;
}

void HistogramFamily::Render(std::string* out) const {
  Header(name_, help_, "histogram", out);
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [labels, s] : series_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += s.buckets[i];
      *out += name_ + "_bucket";
      RenderLabels(label_names_, labels, "le", FormatMetricValue(bounds_[i]), out);
      *out += " " + std::to_string(cumulative) + "\n";
    }
    *out += name_ + "_bucket";
    RenderLabels(label_names_, labels, "le", "+Inf", out);
    *out += " " + std::to_string(s.count) + "\n";
    *out += name_ + "_sum";
    RenderLabels(label_names_, labels, "", "", out);
    *out += " " + FormatMetricValue(s.sum) + "\n";
    *out += name_ + "_count";
    RenderLabels(label_names_, labels, "", "", out);
    *out += " " + std::to_string(s.count) + "\n";
  }
}

void GaugeFamily::Render(std::string* out) const {
  Header(name, help, "gauge", out);
  for (const auto& [labels, v] : collect()) {
    *out += name;
    RenderLabels(label_names, labels, "", "", out);
    *out += " " + FormatMetricValue(v) + "\n";
  }
}

}  // namespace lastcall
