// Helpers shared by the unit tests that run the real store and threads.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "store/sql.h"

namespace lastcall::testing {

// The first column of the first row of a read query (-1, and a test failure, on error).
inline int64_t CountRows(Database& db, const std::string& sql, const SqlParams& params = {}) {
  int64_t n = -1;
  EXPECT_TRUE(db.Read([&](SqlTx& tx) {
                  auto r = tx.QueryOne(sql, params);
                  if (!r.ok()) return r.status();
                  n = (*r)->Int(0);
                  return Status::Ok();
                }).ok());
  return n;
}

// Polls pred every 10 ms (real time) for up to 5 s: the work happens on other threads.
inline bool Eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

}  // namespace lastcall::testing
