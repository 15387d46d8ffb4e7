// Small text helpers shared by the parsers: UTF-8 validity, quoting an input inside an error
// message, and strict decimal numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lastcall {

// Length of the well-formed UTF-8 sequence at s[i] (a byte >= 0x80), or 0 when the bytes there
// are not well-formed UTF-8 (overlongs, surrogates and code points above U+10FFFF included).
size_t Utf8SequenceLength(std::string_view s, size_t i);

// True when all of s is well-formed UTF-8 (Utf8SequenceLength's rules).
bool IsValidUtf8(std::string_view s);

// The input as it appears inside an error message: at most 40 bytes (never cut inside a UTF-8
// sequence, "..." appended when cut), in double quotes, with control characters, '"' and every
// byte that is not part of well-formed UTF-8 replaced by '?', so the message stays one readable
// line of valid UTF-8.
std::string QuoteForMessage(std::string_view text);

// The longest prefix of text of at most max_bytes that does not end inside a UTF-8 sequence.
std::string_view Utf8Prefix(std::string_view text, size_t max_bytes);

// A non-negative decimal integer written with ASCII digits only (no sign, spaces, or other
// characters) and at most max; nullopt otherwise, including on overflow.
std::optional<int64_t> ParseDecimal(std::string_view text, int64_t max);

}  // namespace lastcall
