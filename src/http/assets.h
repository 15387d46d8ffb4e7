// Files compiled into the binary (the dashboard), so it runs behind firewalls with no CDN and no
// files beside it. Built from src/http/dashboard/ by cmake/embed.cmake.
#pragma once

#include <string_view>
#include <vector>

namespace lastcall {

struct Asset {
  std::string_view name;   // path below src/http/dashboard, e.g. "index.html"
  std::string_view bytes;
};

// Every embedded asset. Thread-safe; the data lives for the whole program.
const std::vector<Asset>& EmbeddedAssets();

// The asset with this name, or nullptr.
const Asset* FindAsset(std::string_view name);

}  // namespace lastcall
