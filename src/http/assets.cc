#include "http/assets.h"

namespace lastcall {

const Asset* FindAsset(std::string_view name) {
  for (const Asset& a : EmbeddedAssets()) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

}  // namespace lastcall
