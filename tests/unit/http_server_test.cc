// HttpServer's admission control: at max_connections a new connection closes the connection that
// has waited longest for its request; a connection whose request is being handled is never cut;
// when every connection is busy the newcomer is closed at once. And its responses: whole and alike
// whether the handler answers inside its call or later from another thread.
#include "http/server.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace lastcall {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

class HttpServerTest : public ::testing::Test {
 protected:
  // Starts a server holding at most max_connections; GET /hold is kept unanswered until
  // ReleaseHeld(), every other request answers 200 at once.
  void StartServer(size_t max_connections) {
    HttpServerOptions o;
    o.port = 0;
    o.max_connections = max_connections;
    server_ = std::make_unique<HttpServer>(io_, o, [this](HttpRequest&& req, Respond respond) {
      if (req.path == "/hold") {
        std::lock_guard<std::mutex> lock(mu_);
        held_.push_back(std::move(respond));
        return;
      }
      HttpResponse r;
      r.body = "{}";
      if (req.path == "/crlf") r.headers["X-Test"] = "a\r\nSet-Cookie: evil";
      respond(std::move(r));
    });
    ASSERT_TRUE(server_->Start().ok());
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    ReleaseHeld();
    server_->Stop();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  size_t Held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }

  void ReleaseHeld() {
    std::vector<Respond> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held.swap(held_);
    }
    for (auto& r : held) r(HttpResponse{200, "application/json", "{}", {}});
  }

  std::unique_ptr<tcp::socket> Connect() {
    auto s = std::make_unique<tcp::socket>(client_io_);
    s->connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
    return s;
  }

  // A new connection whose GET /x was answered 200. Right after a response a kept-alive
  // connection is, for a moment, neither handled nor waiting (the server's write-completion
  // handler has not run yet), so a newcomer can find nobody to evict and be closed at once:
  // retry for up to 5 s.
  std::unique_ptr<tcp::socket> ConnectServed() {
    for (int i = 0; i < 500; ++i) {
      auto s = Connect();
      Send(*s, "/x");
      if (ReadStatus(*s) == 200) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "no new connection was served within 5 s";
    return Connect();
  }

  static void Send(tcp::socket& s, const std::string& path) {
    net::write(s, net::buffer("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"));
  }

  // The status of the next response (reads up to the end of its headers; bodies are "{}").
  static int ReadStatus(tcp::socket& s) {
    std::string got;
    char c;
    boost::system::error_code ec;
    while (got.find("\r\n\r\n") == std::string::npos) {
      if (net::read(s, net::buffer(&c, 1), ec) != 1) return -1;
      got.push_back(c);
    }
    char body[2];
    net::read(s, net::buffer(body, 2), ec);
    return std::stoi(got.substr(9, 3));
  }

  // The next response's head (through the blank line), after which its "{}" body is read.
  static std::string ReadHead(tcp::socket& s) {
    std::string got;
    char c;
    boost::system::error_code ec;
    while (got.find("\r\n\r\n") == std::string::npos) {
      if (net::read(s, net::buffer(&c, 1), ec) != 1) return got;
      got.push_back(c);
    }
    char body[2];
    net::read(s, net::buffer(body, 2), ec);
    return got;
  }

  static void ExpectWholeResponse(const std::string& head) {
    EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
    EXPECT_NE(head.find("\r\nContent-Length: 2\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("\r\nContent-Type: application/json\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("\r\nX-Request-Id: "), std::string::npos) << head;
    EXPECT_NE(head.find("\r\nX-Content-Type-Options: nosniff\r\n"), std::string::npos) << head;
    EXPECT_EQ(head.find("Connection: close"), std::string::npos) << head;
  }

  // True when the server closed s (EOF or reset) within two seconds.
  static bool ClosedByServer(tcp::socket& s) {
    s.non_blocking(true);
    for (int i = 0; i < 200; ++i) {
      char c;
      boost::system::error_code ec;
      s.read_some(net::buffer(&c, 1), ec);
      if (ec == net::error::eof || ec == net::error::connection_reset) return true;
      if (ec != net::error::would_block) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  static bool StillOpen(tcp::socket& s) {
    s.non_blocking(true);
    char c;
    boost::system::error_code ec;
    s.read_some(net::buffer(&c, 1), ec);
    return ec == net::error::would_block;
  }

  net::io_context io_{1};
  net::io_context client_io_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Respond> held_;
};

TEST_F(HttpServerTest, AtTheLimitTheConnectionWaitingLongestMakesRoom) {
  StartServer(2);
  auto a = Connect();
  Send(*a, "/x");
  ASSERT_EQ(ReadStatus(*a), 200);  // a now waits (kept alive) for its next request
  auto b = Connect();
  Send(*b, "/x");
  ASSERT_EQ(ReadStatus(*b), 200);  // then b
  auto c = ConnectServed();
  EXPECT_TRUE(ClosedByServer(*a));
  EXPECT_TRUE(StillOpen(*b));
}

TEST_F(HttpServerTest, AConnectionBeingHandledIsNeverCut) {
  StartServer(2);
  auto busy = Connect();
  Send(*busy, "/hold");
  ASSERT_TRUE(testing::Eventually([&] { return Held() == 1; }));
  auto idle = Connect();
  Send(*idle, "/x");
  ASSERT_EQ(ReadStatus(*idle), 200);
  auto newcomer = ConnectServed();
  EXPECT_TRUE(ClosedByServer(*idle));  // the waiting one went, not the busy one
  ReleaseHeld();
  busy->non_blocking(false);
  EXPECT_EQ(ReadStatus(*busy), 200);
}

TEST_F(HttpServerTest, WhenEveryConnectionIsBusyTheNewcomerIsClosed) {
  StartServer(1);
  auto busy = Connect();
  Send(*busy, "/hold");
  ASSERT_TRUE(testing::Eventually([&] { return Held() == 1; }));
  auto newcomer = Connect();
  EXPECT_TRUE(ClosedByServer(*newcomer));
  ReleaseHeld();
  busy->non_blocking(false);
  EXPECT_EQ(ReadStatus(*busy), 200);
}

TEST_F(HttpServerTest, AnswersInsideAndAfterTheHandlerAreWholeAndKeepTheConnection) {
  StartServer(4);
  auto s = Connect();
  Send(*s, "/x");  // answered inside the handler's call
  ExpectWholeResponse(ReadHead(*s));
  Send(*s, "/hold");  // answered later, from this thread
  ASSERT_TRUE(testing::Eventually([&] { return Held() == 1; }));
  ReleaseHeld();
  ExpectWholeResponse(ReadHead(*s));
  Send(*s, "/x");  // the same connection still serves
  ExpectWholeResponse(ReadHead(*s));
}

TEST_F(HttpServerTest, ConnectionCloseIsAnsweredAndHonoured) {
  StartServer(4);
  auto s = Connect();
  net::write(*s, net::buffer(std::string("GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
  std::string head = ReadHead(*s);
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nConnection: close\r\n"), std::string::npos) << head;
  EXPECT_TRUE(ClosedByServer(*s));
}

TEST_F(HttpServerTest, AHeaderValueCannotAddAField) {
  StartServer(4);
  auto s = Connect();
  Send(*s, "/crlf");
  std::string head = ReadHead(*s);
  EXPECT_NE(head.find("\r\nX-Test: a  Set-Cookie: evil\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("\r\nSet-Cookie"), std::string::npos) << head;
}

}  // namespace
}  // namespace lastcall
