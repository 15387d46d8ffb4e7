// ParseCloudEvent (src/domain/events.cc) on arbitrary bytes. Properties: a rejected event gets
// kInvalidArgument "invalid_event" with a UTF-8 message; an accepted one has the required
// attributes non-empty, data an object, and survives ToJson -> ParseCloudEvent unchanged.
#include <cstdint>
#include <string>
#include <string_view>

#include "domain/events.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = lastcall::ParseCloudEvent(text);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == lastcall::Code::kInvalidArgument, r.status().message());
    FUZZ_CHECK(r.status().error() == "invalid_event", r.status().error());
    FUZZ_CHECK(lastcall::fuzz::IsUtf8(r.status().message()), "error message is not UTF-8");
    return 0;
  }
  const lastcall::CloudEvent& e = *r;
  FUZZ_CHECK(!e.id.empty() && !e.source.empty() && !e.type.empty(), "required attribute empty");
  FUZZ_CHECK(e.data.is_object(), "data is not an object");
  const std::string wire = lastcall::ToJson(e).dump();
  auto back = lastcall::ParseCloudEvent(wire);
  FUZZ_CHECK(back.ok(), wire);
  FUZZ_CHECK(back->id == e.id && back->source == e.source && back->type == e.type &&
                 back->subject == e.subject && back->time == e.time && back->data == e.data,
             wire);
  return 0;
}
