#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>
#include <vector>

namespace bench {
namespace {

using json = nlohmann::json;

const double kNaN = std::nan("");

// The number at a path of keys, or NaN when any step is missing.
double Num(const json& j, std::initializer_list<const char*> path) {
  const json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return kNaN;
    p = &(*p)[k];
  }
  return p->is_number() ? p->get<double>() : kNaN;
}

// 12345.6 -> "12,346" (digits after the point: decimals).
std::string Fmt(double v, int decimals = 0) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  std::string s = buf;
  size_t dot = s.find('.');
  size_t end = dot == std::string::npos ? s.size() : dot;
  size_t start = s[0] == '-' ? 1 : 0;
  for (int i = static_cast<int>(end) - 3; i > static_cast<int>(start); i -= 3) s.insert(i, ",");
  return s;
}

std::string Ms(double v) {
  if (std::isnan(v)) return "n/a";
  return Fmt(v, v < 10 ? 2 : (v < 100 ? 1 : 0));
}

const json* Mode(const json& r, const std::string& name) {
  if (!r.contains("modes")) return nullptr;
  for (const auto& m : r["modes"]) {
    if (m.value("synchronous", "") == name) return &m;
  }
  return nullptr;
}

const json* SweepRun(const json& r, bool big) {
  if (!r.contains("sweep") || !r["sweep"].is_array()) return nullptr;
  const json* best = nullptr;
  for (const auto& s : r["sweep"]) {
    double w = Num(s, {"waitingFar"});
    if (big ? w > 0 : w == 0) best = &s;
  }
  return best;
}

json Target(const std::string& target, const std::string& mode, const std::string& goal, double value,
            const std::string& unit, int met) {
  json t = {{"target", target}, {"mode", mode}, {"goal", goal}, {"unit", unit}};
  t["value"] = std::isnan(value) ? json(nullptr) : json(value);
  t["met"] = met < 0 ? json(nullptr) : json(met == 1);
  return t;
}

int Met(double v, bool ok) { return std::isnan(v) ? -1 : (ok ? 1 : 0); }

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

}  // namespace

json EvaluateTargets(const json& r) {
  json out = json::array();
  for (const char* name : {"NORMAL", "FULL"}) {
    const json* m = Mode(r, name);
    if (!m) continue;
    double goal = std::string(name) == "NORMAL" ? 5000 : 2500;
    double rate = Num(*m, {"fullLoad", "deletionsPerSecond"});
    out.push_back(Target("coordinated deletions per second (full load)", name, ">= " + Fmt(goal), rate,
                         "/s", Met(rate, rate >= goal)));
    double ratio = Num(*m, {"ratioToRaw"});
    out.push_back(Target("share of the raw SQLite limit", name, ">= 0.50", ratio, "",
                         Met(ratio, ratio >= 0.5)));
    double p50 = Num(*m, {"halfLoad", "latencyMs", "p50"});
    double p99 = Num(*m, {"halfLoad", "latencyMs", "p99"});
    out.push_back(Target("DELETE to file.deleted p50 at half load", name, "<= 5 ms", p50, "ms",
                         Met(p50, p50 <= 5)));
    out.push_back(Target("DELETE to file.deleted p99 at half load", name, "<= 25 ms", p99, "ms",
                         Met(p99, p99 <= 25)));
    double get = Num(*m, {"get", "perSecond"});
    out.push_back(Target("GET /files/{id} requests per second", name, ">= 30,000", get, "/s",
                         Met(get, get >= 30000)));
  }
  const json* big = SweepRun(r, true);
  const json* small = SweepRun(r, false);
  if (big) {
    double rss = Num(*big, {"peakRssMiB"});
    double waiting = Num(*big, {"waitingFar"}) + Num(*big, {"due"});
    double mb = rss * 1.048576;  // MiB -> MB
    out.push_back(Target("server peak RSS with " + Fmt(waiting) + " coordinations waiting", "sweep",
                         "<= 150 MB", mb, "MB", Met(mb, mb <= 150)));
  }
  if (big && small) {
    double a = Num(*big, {"sweepMs"});
    double b = Num(*small, {"sweepMs"});
    bool flat = a <= 1.25 * b + 50;
    double v = (std::isnan(a) || std::isnan(b)) ? kNaN : a;
    out.push_back(Target("deadline sweep time with " + Fmt(Num(*big, {"waitingFar"}) + Num(*big, {"due"})) +
                             " waiting vs " + Fmt(Num(*small, {"due"})) + " (" + Ms(b) + " ms)",
                         "sweep", "<= 1.25 x + 50 ms of the small run", v, "ms", Met(v, flat)));
  }
  return out;
}

std::string RenderSvg(const json& r) {
  const int W = 980, H = 460;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" viewBox=\"0 0 " << W << " " << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
    << "lastcall coordinated deletion: " << Escape(r.value("generatedAt", "")) << " ("
    << Escape(r["machine"].value("cpuModel", "")) << ", " << r["machine"].value("nproc", 0)
    << " cores)</text>\n";

  std::vector<std::string> modes;
  if (r.contains("modes")) {
    for (const auto& m : r["modes"]) modes.push_back(m.value("synchronous", "?"));
  }

  // Left: throughput, lastcall vs raw limit, per mode (linear).
  {
    const double x0 = 70, y0 = 60, w = 360, h = 320;
    double vmax = 1;
    for (const auto& name : modes) {
      const json* m = Mode(r, name);
      for (double v : {Num(*m, {"fullLoad", "deletionsPerSecond"}), Num(*m, {"raw", "unitsPerSecond"}),
                       name == "NORMAL" ? 5000.0 : 2500.0}) {
        if (!std::isnan(v)) vmax = std::max(vmax, v);
      }
    }
    double step = std::pow(10, std::floor(std::log10(vmax)));
    if (vmax / step < 2) step /= 5;
    else if (vmax / step < 5) step /= 2;
    double top = std::ceil(vmax / step) * step;
    s << "<text x=\"" << x0 + w / 2 << "\" y=\"" << y0 - 12
      << "\" text-anchor=\"middle\" font-weight=\"bold\">Throughput (per second, full load)</text>\n";
    for (double v = 0; v <= top + 1e-9; v += step) {
      double y = y0 + h - v / top * h;
      s << "<line x1=\"" << x0 << "\" x2=\"" << x0 + w << "\" y1=\"" << y << "\" y2=\"" << y
        << "\" stroke=\"#ddd\"/><text x=\"" << x0 - 6 << "\" y=\"" << y + 4
        << "\" text-anchor=\"end\">" << Fmt(v) << "</text>\n";
    }
    double group = w / std::max<size_t>(1, modes.size());
    for (size_t i = 0; i < modes.size(); ++i) {
      const json* m = Mode(r, modes[i]);
      double gx = x0 + group * static_cast<double>(i);
      struct Bar { const char* label; double v; const char* color; };
      Bar bars[] = {{"lastcall", Num(*m, {"fullLoad", "deletionsPerSecond"}), "#2b6cb0"},
                    {"raw SQLite", Num(*m, {"raw", "unitsPerSecond"}), "#a0aec0"}};
      double bw = group / 3.2;
      for (int b = 0; b < 2; ++b) {
        double v = std::isnan(bars[b].v) ? 0 : bars[b].v;
        double bx = gx + group * 0.12 + b * (bw + 8);
        double bh = v / top * h;
        s << "<rect x=\"" << bx << "\" y=\"" << y0 + h - bh << "\" width=\"" << bw << "\" height=\""
          << bh << "\" fill=\"" << bars[b].color << "\"/>\n";
        s << "<text x=\"" << bx + bw / 2 << "\" y=\"" << y0 + h - bh - 4
          << "\" text-anchor=\"middle\" font-size=\"11\">" << Fmt(bars[b].v) << "</text>\n";
        s << "<text x=\"" << bx + bw / 2 << "\" y=\"" << y0 + h + 14
          << "\" text-anchor=\"middle\" font-size=\"10\">" << bars[b].label << "</text>\n";
      }
      double goal = modes[i] == "NORMAL" ? 5000 : 2500;
      double gy = y0 + h - goal / top * h;
      s << "<line x1=\"" << gx + 4 << "\" x2=\"" << gx + group - 4 << "\" y1=\"" << gy << "\" y2=\""
        << gy << "\" stroke=\"#c53030\" stroke-dasharray=\"5,3\"/>\n";
      s << "<text x=\"" << gx + group - 4 << "\" y=\"" << gy - 3
        << "\" text-anchor=\"end\" font-size=\"10\" fill=\"#c53030\">target " << Fmt(goal) << "</text>\n";
      double ratio = Num(*m, {"ratioToRaw"});
      s << "<text x=\"" << gx + group / 2 << "\" y=\"" << y0 + h + 30
        << "\" text-anchor=\"middle\" font-weight=\"bold\">synchronous=" << modes[i] << "</text>\n";
      s << "<text x=\"" << gx + group / 2 << "\" y=\"" << y0 + h + 45
        << "\" text-anchor=\"middle\" font-size=\"11\">lastcall/raw = " << Fmt(ratio, 2) << "</text>\n";
    }
  }

  // Right: DELETE -> file.deleted latency percentiles (log scale), full and half load per mode.
  {
    const double x0 = 540, y0 = 60, w = 360, h = 320;
    double lo = 0.1, hi = 10;
    for (const auto& name : modes) {
      const json* m = Mode(r, name);
      for (const char* phase : {"fullLoad", "halfLoad"}) {
        for (const char* p : {"p50", "p90", "p99"}) {
          double v = Num(*m, {phase, "latencyMs", p});
          if (!std::isnan(v)) hi = std::max(hi, v);
        }
      }
    }
    double ltop = std::ceil(std::log10(hi * 1.2));
    double lbot = std::log10(lo);
    auto Y = [&](double v) {
      double l = std::log10(std::max(v, lo));
      return y0 + h - (l - lbot) / (ltop - lbot) * h;
    };
    s << "<text x=\"" << x0 + w / 2 << "\" y=\"" << y0 - 12
      << "\" text-anchor=\"middle\" font-weight=\"bold\">DELETE to file.deleted latency (ms, log scale)</text>\n";
    for (double e = lbot; e <= ltop + 1e-9; e += 1) {
      double v = std::pow(10, e);
      double y = Y(v);
      s << "<line x1=\"" << x0 << "\" x2=\"" << x0 + w << "\" y1=\"" << y << "\" y2=\"" << y
        << "\" stroke=\"#ddd\"/><text x=\"" << x0 - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
        << (v < 1 ? Fmt(v, 1) : Fmt(v)) << "</text>\n";
    }
    const char* colors[] = {"#90cdf4", "#3182ce", "#1a365d"};
    double group = w / std::max<size_t>(1, modes.size());
    for (size_t i = 0; i < modes.size(); ++i) {
      const json* m = Mode(r, modes[i]);
      double gx = x0 + group * static_cast<double>(i);
      int k = 0;
      for (const char* phase : {"fullLoad", "halfLoad"}) {
        double sub = gx + 10 + k * (group - 20) / 2;
        double bw = (group - 20) / 2 / 3.6;
        int c = 0;
        for (const char* p : {"p50", "p90", "p99"}) {
          double v = Num(*m, {phase, "latencyMs", p});
          double bx = sub + c * (bw + 2);
          double y = std::isnan(v) ? y0 + h : Y(v);
          s << "<rect x=\"" << bx << "\" y=\"" << y << "\" width=\"" << bw << "\" height=\"" << y0 + h - y
            << "\" fill=\"" << colors[c] << "\"><title>" << modes[i] << " " << phase << " " << p << " "
            << Ms(v) << " ms</title></rect>\n";
          s << "<text x=\"" << bx + bw / 2 << "\" y=\"" << y - 3
            << "\" text-anchor=\"middle\" font-size=\"9\">" << Ms(v) << "</text>\n";
          ++c;
        }
        s << "<text x=\"" << sub + 1.5 * (bw + 2) << "\" y=\"" << y0 + h + 14
          << "\" text-anchor=\"middle\" font-size=\"10\">" << (k == 0 ? "full load" : "half load")
          << "</text>\n";
        ++k;
      }
      s << "<text x=\"" << gx + group / 2 << "\" y=\"" << y0 + h + 30
        << "\" text-anchor=\"middle\" font-weight=\"bold\">synchronous=" << modes[i] << "</text>\n";
    }
    // The half-load goals, drawn over the bars and labelled in the right margin.
    for (double t : {5.0, 25.0}) {
      double y = Y(t);
      s << "<line x1=\"" << x0 << "\" x2=\"" << x0 + w << "\" y1=\"" << y << "\" y2=\"" << y
        << "\" stroke=\"#c53030\" stroke-dasharray=\"5,3\"/><text x=\"" << x0 + w + 4 << "\" y=\""
        << y + 4 << "\" font-size=\"10\" fill=\"#c53030\">" << (t == 5 ? "p50" : "p99") << " goal "
        << Fmt(t) << "</text>\n";
    }
    s << "<text x=\"" << x0 + w + 4 << "\" y=\"" << y0 + 4
      << "\" font-size=\"10\" fill=\"#c53030\">half load:</text>\n";
    double lx = x0 + 10;
    const char* names[] = {"p50", "p90", "p99"};
    for (int c = 0; c < 3; ++c) {
      s << "<rect x=\"" << lx + c * 60 << "\" y=\"" << H - 22 << "\" width=\"12\" height=\"12\" fill=\""
        << colors[c] << "\"/><text x=\"" << lx + c * 60 + 16 << "\" y=\"" << H - 12 << "\">" << names[c]
        << "</text>\n";
    }
  }
  s << "</svg>\n";
  return s.str();
}

std::string RenderMarkdown(const json& r, const std::string& svg_rel, const std::string& json_rel,
                           const std::string& profile_notes) {
  std::ostringstream md;
  const json& mach = r["machine"];
  const json& par = r["parameters"];
  std::vector<std::string> modes;
  for (const auto& m : r["modes"]) modes.push_back(m.value("synchronous", "?"));

  md << "# Performance\n\n";
  md << "This page is written by `make bench` (the program in `bench/`), which runs coordinated "
        "deletion end to end against a real `lastcall serve` and measures the raw SQLite limit in "
        "the same run. Rerun it rather than trusting these figures: they come from one run on one "
        "machine"
     << (json_rel.empty() ? "" : " (all figures: [`" + json_rel + "`](" + json_rel + "))") << ".\n\n";
  md << "- Rerun: `make bench` runs the default parameters (this run took "
     << Fmt(Num(r, {"durationSeconds"}) / 60.0, 0)
     << " minutes with the parameters below). A smoke run of under a minute: "
        "`./build/bench/lastcall_bench --lastcall ./build/lastcall --files 500 --sweep-waiting 20000 "
        "--out /tmp/performance.md --json /tmp/latest.json --svg /tmp/chart.svg`; "
        "`--help` lists every parameter.\n";
  md << "- Generated: " << r.value("generatedAt", "") << ", in " << Fmt(Num(r, {"durationSeconds"}))
     << " s\n";
  md << "- Command: `" << r.value("command", "") << "` (source: `" << r.value("sourceRevision", "")
     << "`)\n";
  md << "- Machine: " << mach.value("nproc", 0) << " cores (" << mach.value("cpuModel", "")
     << "), " << Fmt(Num(mach, {"memTotalMiB"}) / 1024.0, 1) << " GiB memory, "
     << mach.value("kernel", "") << ", data on " << mach.value("workDirFileSystem", "")
     << "; load average " << mach.value("loadAvgAtStart", "") << " at the start and "
     << mach.value("loadAvgAtEnd", "")
     << " at the end (the benchmark client shares the machine with the server; other work on "
        "the machine shows in the load average)\n";
  md << "- Parameters: " << par.value("users", 0) << " users, " << Fmt(Num(par, {"files"}))
     << " files per batch of " << par.value("transactions", 0) << " transactions (dates: `"
     << par.value("dates", "scattered") << "`), "
     << par.value("connections", 0) << " keep-alive connections from " << par.value("clientThreads", 1)
     << " client thread(s), server log level `" << par.value("logLevel", "") << "`, HTTP threads "
     << (par.value("httpThreads", 0) == 0 ? std::string("default") : std::to_string(par.value("httpThreads", 0)))
     << ", raw limit " << par.value("rawBatch", 0) << " units per transaction with a "
     << (par.value("rawCacheMiB", 0) > 0 ? std::to_string(par.value("rawCacheMiB", 0)) + " MiB"
                                          : std::string("default (2 MiB)"))
     << " SQLite page cache\n\n";

  md << "## Figures against the targets (issue 7)\n\n";
  md << "| target | run | goal | measured | met |\n|---|---|---|---|---|\n";
  for (const auto& t : r["targets"]) {
    double v = t["value"].is_number() ? t["value"].get<double>() : kNaN;
    std::string unit = t.value("unit", "");
    std::string val = unit == "ms" ? Ms(v) + " ms"
                      : unit.empty() ? Fmt(v, 2)
                      : unit == "MB" ? Fmt(v, 1) + " MB"
                                     : Fmt(v) + unit;
    std::string met = t["met"].is_null() ? "not measured" : (t["met"].get<bool>() ? "yes" : "**no**");
    md << "| " << t.value("target", "") << " | " << t.value("mode", "") << " | " << t.value("goal", "")
       << " | " << val << " | " << met << " |\n";
  }
  md << "| coordinated deletions per second on PostgreSQL + NATS | - | >= 3,000 | - | not in this run: "
        "`--database-url` with `--nats-url` (see \"PostgreSQL + NATS\" in the profile) |\n\n";
  if (!svg_rel.empty()) md << "![throughput and latency per mode](" << svg_rel << ")\n\n";

  md << "## Results per mode\n\n| | ";
  for (const auto& m : modes) md << "synchronous=" << m << " | ";
  md << "\n|---|";
  for (size_t i = 0; i < modes.size(); ++i) md << "---|";
  md << "\n";
  auto row = [&](const std::string& label, const std::function<std::string(const json&)>& f) {
    md << "| " << label << " | ";
    for (const auto& name : modes) md << f(*Mode(r, name)) << " | ";
    md << "\n";
  };
  auto pct = [](const json& m, const char* phase, const char* key) {
    return Ms(Num(m, {phase, key, "p50"})) + " / " + Ms(Num(m, {phase, key, "p90"})) + " / " +
           Ms(Num(m, {phase, key, "p99"})) + " / " + Ms(Num(m, {phase, key, "max"}));
  };
  row("seeding: uploads (POST /files) per second", [](const json& m) { return Fmt(Num(m, {"seed", "uploadsPerSecond"})); });
  row("GET /files/{id} per second", [](const json& m) { return Fmt(Num(m, {"get", "perSecond"})); });
  row("GET latency p50 / p99 (ms)", [](const json& m) {
    return Ms(Num(m, {"get", "latencyMs", "p50"})) + " / " + Ms(Num(m, {"get", "latencyMs", "p99"}));
  });
  row("GET: server / client CPU per request (µs)", [](const json& m) {
    return Fmt(Num(m, {"get", "serverCpuMicrosPerRequest"})) + " / " + Fmt(Num(m, {"get", "clientCpuMicrosPerRequest"}));
  });
  row("**full load**: coordinated deletions per second", [](const json& m) { return "**" + Fmt(Num(m, {"fullLoad", "deletionsPerSecond"})) + "**"; });
  row("full load: DELETE to file.deleted p50 / p90 / p99 / max (ms)", [&](const json& m) { return pct(m, "fullLoad", "latencyMs"); });
  row("full load: 202 latency p50 / p99 (ms)", [](const json& m) {
    return Ms(Num(m, {"fullLoad", "ackMs", "p50"})) + " / " + Ms(Num(m, {"fullLoad", "ackMs", "p99"}));
  });
  row("full load: started_at to completed_at in the server p50 / p99 (ms)", [](const json& m) {
    return Ms(Num(m, {"fullLoad", "serverInternalMs", "p50"})) + " / " + Ms(Num(m, {"fullLoad", "serverInternalMs", "p99"}));
  });
  row("full load: server CPU per deletion (µs)", [](const json& m) { return Fmt(Num(m, {"fullLoad", "serverCpuMicrosPerDeletion"})); });
  row("full load: client CPU (s) / server CPU (s)", [](const json& m) {
    return Fmt(Num(m, {"fullLoad", "clientCpuSeconds"}), 2) + " / " + Fmt(Num(m, {"fullLoad", "serverCpuSeconds"}), 2);
  });
  row("full load: each server thread's CPU time / phase time", [](const json& m) {
    std::string out;
    if (!m.contains("fullLoad") || !m["fullLoad"].contains("serverThreads")) return std::string("n/a");
    for (const auto& t : m["fullLoad"]["serverThreads"]) {
      if (!out.empty()) out += ", ";
      out += t.value("thread", "?") + " " + Fmt(100.0 * t.value("busyShare", 0.0)) + "%";
    }
    return out;
  });
  row("full load: server write syscalls / KiB written (write, pwrite) per deletion", [](const json& m) {
    return Fmt(Num(m, {"fullLoad", "serverIoPerDeletion", "writeSyscalls"}), 1) + " / " +
           Fmt(Num(m, {"fullLoad", "serverIoPerDeletion", "bytesWritten"}) / 1024.0, 1);
  });
  row("**half load**: target rate / achieved (per second)", [](const json& m) {
    return Fmt(Num(m, {"halfLoad", "targetRate"})) + " / " + Fmt(Num(m, {"halfLoad", "deletionsPerSecond"}));
  });
  row("half load: DELETE to file.deleted p50 / p90 / p99 / max (ms)", [&](const json& m) { return "**" + pct(m, "halfLoad", "latencyMs") + "**"; });
  row("half load: 202 latency p50 / p99 (ms)", [](const json& m) {
    return Ms(Num(m, {"halfLoad", "ackMs", "p50"})) + " / " + Ms(Num(m, {"halfLoad", "ackMs", "p99"}));
  });
  row("half load: requests sent > 1 ms after their due time (client late or every connection busy)", [](const json& m) { return Fmt(Num(m, {"halfLoad", "startedLate"})); });
  row("raw SQLite limit (units per second)", [](const json& m) { return Fmt(Num(m, {"raw", "unitsPerSecond"})); });
  row("**lastcall / raw**", [](const json& m) { return "**" + Fmt(Num(m, {"ratioToRaw"}), 3) + "**"; });
  row("server peak RSS (VmHWM, MiB)", [](const json& m) { return Fmt(Num(m, {"serverPeakRssMiB"}), 1); });
  row("errors (non-202 DELETEs, transport failures)", [](const json& m) {
    return Fmt(Num(m, {"fullLoad", "non202"}) + Num(m, {"halfLoad", "non202"})) + ", " +
           Fmt(Num(m, {"fullLoad", "transportFailures"}) + Num(m, {"halfLoad", "transportFailures"}));
  });
  for (const auto& m : r["modes"]) {
    if (m.contains("error")) md << "\n**Error in " << m.value("synchronous", "") << ":** " << m["error"].dump() << "\n";
  }
  md << "\n";

  if (r.contains("sweep")) {
    md << "## Deadline sweep\n\n";
    md << "| coordinations waiting | due at the deadline | server ready before the deadline | first "
          "completed after the deadline | all due completed after the deadline | RSS before the "
          "deadline | peak RSS (VmHWM) |\n|---|---|---|---|---|---|---|\n";
    for (const auto& s : r["sweep"]) {
      md << "| " << Fmt(Num(s, {"waitingFar"}) + Num(s, {"due"})) << " | " << Fmt(Num(s, {"due"}))
         << " | " << (s.value("readyBeforeDeadline", false) ? "yes" : "**no**") << " ("
         << Fmt(Num(s, {"readyMsBeforeDeadline"})) << " ms) | " << Ms(Num(s, {"firstCompletedMsAfterDeadline"}))
         << " ms | **" << Ms(Num(s, {"sweepMs"})) << " ms** | " << Fmt(Num(s, {"rssBeforeDeadlineMiB"}), 1)
         << " MiB | " << Fmt(Num(s, {"peakRssMiB"}), 1) << " MiB |\n";
      if (s.contains("error")) md << "\n**Error:** " << s["error"].dump() << "\n";
    }
    md << "\nThe sweep runs use synchronous=" << par.value("sweepMode", "") << ".\n\n";
  }

  md << R"(## Method

- **Server.** Each mode starts the real `lastcall serve` (the binary given with `--lastcall`) on a
  free loopback port with a fresh data folder, `LASTCALL_JWT_SECRET` set to a random value,
  `LASTCALL_SQLITE_SYNCHRONOUS` set to the mode and every other setting at its default (both
  expected consumers in process and answering, `COORDINATION_TIMEOUT_MINUTES` 5). Its log goes to a
  file. The benchmark signs HS256 tokens itself with lastcall_core's `SignJwt`.
- **Client.** One C++ program (`bench/`), HTTP/1.1 keep-alive on raw non-blocking sockets and
  epoll, C connections driven from one thread; each request is serialized into one buffer and each
  answer read with a minimal parser that checks the status line and Content-Length. It runs on the
  same machine as the server and competes with it for the cores.
- **Seeding.** U accounts (`POST /accounts`), then two batches of F files of T CSV rows each
  (`POST /files`, multipart) from the C connections. File i belongs to user i mod U. With
  `--dates statement` (the default) each user's files are successive statements, one transaction
  a day, so a file's rows are adjacent in its account's date order, as a bank statement's are;
  `--dates scattered` (the only shape before 2026-11-29) spreads every file's rows over the same
  three months, so each deletion removes entries from about T separate places in the
  transactions' date indexes (bench/profile.md: that costs the raw limit 2.4 times its rate).
  The benchmark then waits until every bus target's cursor (`delivery_cursors`) has reached the
  newest outbox row, read from `$LASTCALL_DATA_DIR/lastcall.db` opened read-only: every
  `file.uploaded` has been handled by both consumers before any deletion starts.
- **GET.** `GET /files/{id}` on files of the first batch (they exist) from the C connections, closed
  loop, for a fixed time; only 200 answers count.
- **Full load.** `DELETE /files/{id}` for every file of the first batch, each connection sending its
  next DELETE as soon as the previous answer (202) arrived. The client records each request's send
  time (wall clock, µs) and the 202's latency (monotonic clock). It then polls the database every 50 ms
  until no coordination is `waiting` or `deleting`, and takes each coordination's `file.deleted` time from its
  timeline (`at` of its `deleted` entry, the same stamp as the `file.deleted` event's; the outbox's
  retention may have pruned the event by then). The server stamps it inside the unit of work that
  deletes, so it precedes that unit's commit by the rest of its batch and the commit itself (an
  `fsync` with `synchronous=FULL`); when the deletion ran in its request's batch (the usual case:
  the bus delivers in the publishing batch), the 202 is sent after that same commit, so the 202's
  latency, reported alongside, bounds the durable time from above.
  *Coordinated deletions per second* = completed deletions / (last `file.deleted` time − first
  DELETE send time). *DELETE to file.deleted* = the coordination's `file.deleted` time − its DELETE's
  send time. The server stamps whole milliseconds (it truncates), so the benchmark adds 0.5 ms to
  the server's stamp: each latency is exact to ±0.5 ms. Both clocks are the same machine's wall clock.
- **Half load.** The second batch, DELETEs sent open loop at half the full-load rate just measured
  (request i is due at t0 + i / rate, whether or not earlier answers came back), same figures. A
  request that found every connection busy is sent late and counted; its latency still starts at its
  real send time.
- **Memory.** VmHWM (peak resident set) of the server from `/proc/<pid>/status` at the end of the
  mode (seeding included).
- **Raw limit.** After the server stopped, a fresh database with lastcall's schema (lastcall_core's
  `Migrate`) and the same synchronous mode is seeded with the same numbers of users, files and
  transactions, on the same dates; then for each file of the first batch one
  *coordination-shaped unit of work* runs: insert a coordination row and an outbox row, two
  updates (mark the file, complete the coordination), delete the file's T transaction rows and
  the file row; 100 units per transaction (`--raw-batch`), prepared statements, the page cache
  of `--raw-cache-mib` (the server writer's), no HTTP, no events, no consumers. *lastcall / raw* = full-load
  coordinated deletions per second / raw units per second.
- **Deadline sweep.** A fresh database (schema by `Migrate`) gets N waiting coordinations written
  directly, deadlines 30 days away, plus 1,000 whose deadline is a few seconds later (`--sweep-lead`)
  and whose files do not exist (the driver logs a warning for each and completes it as
  `timed_out`). The server starts, the benchmark records its RSS just before the deadline, then polls
  until the 1,000 are `completed`; the sweep time is the newest `completed_at` minus the deadline
  (ms). Run once with N = 1,000,000 and once with N = 0 (1,000 waiting in all). "Flat" is read as:
  the large run's sweep time is at most 1.25 × the small run's + 50 ms.
- **PostgreSQL + NATS** is not part of the default run (it needs a PostgreSQL server and a
  nats-server): run the benchmark with `--database-url postgresql://...` and
  `--nats-url nats://...` (the server does not inherit the caller's `LASTCALL_*` variables). The figures measured so far are under "PostgreSQL + NATS" in the profile.
- **Other server settings.** The server never inherits the benchmark's own environment's
  `LASTCALL_*` variables (every setting above is the benchmark's choice); pass any other with
  `--server-env KEY=VALUE` (repeatable), e.g. `--server-env LASTCALL_SQLITE_MEMORY_MIB=0`. The
  results JSON records them (`parameters.serverEnv`).

)";
  md << "## Profile\n\n";
  if (profile_notes.empty()) {
    md << "No profile notes (bench/profile.md) were found.\n";
  } else {
    md << profile_notes;
    if (profile_notes.back() != '\n') md << "\n";
  }
  return md.str();
}

std::string RenderSummary(const json& r) {
  std::ostringstream s;
  s << "\nlastcall benchmark (" << r.value("generatedAt", "") << ", " << Fmt(Num(r, {"durationSeconds"}))
    << " s)\n";
  for (const auto& t : r["targets"]) {
    double v = t["value"].is_number() ? t["value"].get<double>() : kNaN;
    std::string met = t["met"].is_null() ? "n/a " : (t["met"].get<bool>() ? "MET " : "MISS");
    char line[300];
    std::snprintf(line, sizeof line, "  [%s] %-8s %-70s %12s (goal %s)\n", met.c_str(),
                  t.value("mode", "").c_str(), t.value("target", "").c_str(),
                  (t.value("unit", "") == "ms" ? Ms(v) : Fmt(v, t.value("unit", "").empty() ? 3 : 0)).c_str(),
                  t.value("goal", "").c_str());
    s << line;
  }
  for (const auto& m : r["modes"]) {
    char line[300];
    std::snprintf(line, sizeof line,
                  "  %-6s full %s/s (raw %s/s, ratio %s), half-load p50/p99 %s/%s ms, GET %s/s, peak RSS %s MiB\n",
                  m.value("synchronous", "").c_str(), Fmt(Num(m, {"fullLoad", "deletionsPerSecond"})).c_str(),
                  Fmt(Num(m, {"raw", "unitsPerSecond"})).c_str(), Fmt(Num(m, {"ratioToRaw"}), 3).c_str(),
                  Ms(Num(m, {"halfLoad", "latencyMs", "p50"})).c_str(),
                  Ms(Num(m, {"halfLoad", "latencyMs", "p99"})).c_str(), Fmt(Num(m, {"get", "perSecond"})).c_str(),
                  Fmt(Num(m, {"serverPeakRssMiB"}), 1).c_str());
    s << line;
  }
  return s.str();
}

}  // namespace bench
