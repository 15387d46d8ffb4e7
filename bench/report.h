// Turns the benchmark's JSON results into the target table, an SVG chart, docs/performance.md and
// the summary printed at the end of a run.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace bench {

// [{"target", "mode", "goal", "value", "unit", "met"}]; met is null when not measured.
nlohmann::json EvaluateTargets(const nlohmann::json& results);
std::string RenderSvg(const nlohmann::json& results);
// svg_rel and json_rel: paths of the chart and the JSON relative to the Markdown file (may be
// empty). profile_notes: Markdown included as the profile section.
std::string RenderMarkdown(const nlohmann::json& results, const std::string& svg_rel,
                           const std::string& json_rel, const std::string& profile_notes);
std::string RenderSummary(const nlohmann::json& results);

}  // namespace bench
