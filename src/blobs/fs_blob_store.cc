#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "blobs/blob_store.h"
#include "common/ids.h"

namespace lastcall {
namespace fs = std::filesystem;
namespace {

Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Status::Unavailable("open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::Unavailable("fsync " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

bool ValidKey(const std::string& key) {
  if (key.empty() || key.size() > 64) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'f') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<FsBlobStore>> FsBlobStore::Open(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Unavailable("cannot create blob folder " + dir + ": " + ec.message());
  // A temporary file can only be left by a write that a crash interrupted (one process owns the
  // folder): remove them before anything else runs.
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file() && it->path().filename().string().rfind(".tmp-", 0) == 0) {
      std::error_code rm;
      fs::remove(it->path(), rm);
    }
  }
  return std::unique_ptr<FsBlobStore>(new FsBlobStore(dir));
}

Result<std::string> FsBlobStore::PathFor(const std::string& key) const {
  if (!ValidKey(key)) return Status::Internal("invalid blob key");
  return dir_ + "/" + key.substr(0, 2) + "/" + key;
}

Status FsBlobStore::Put(const std::string& key, std::string_view bytes) {
  auto path = PathFor(key);
  if (!path.ok()) return path.status();
  std::string folder = dir_ + "/" + key.substr(0, 2);
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) return Status::Unavailable("cannot create " + folder + ": " + ec.message());
  std::string tmp = folder + "/.tmp-" + RandomHex(8);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Unavailable("create " + tmp + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::Unavailable("write " + tmp + ": " + err);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::Unavailable("fsync " + tmp + ": " + err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path->c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Status::Unavailable("rename " + tmp + ": " + err);
  }
  return FsyncPath(folder, O_RDONLY | O_DIRECTORY);
}

Result<std::string> FsBlobStore::Get(const std::string& key) {
  auto path = PathFor(key);
  if (!path.ok()) return path.status();
  std::ifstream in(*path, std::ios::binary);
  if (!in) return Status::NotFound("blob not found");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::Unavailable("read failed for blob");
  return data;
}

Status FsBlobStore::Delete(const std::string& key) {
  auto path = PathFor(key);
  if (!path.ok()) return path.status();
  if (::unlink(path->c_str()) != 0 && errno != ENOENT) {
    return Status::Unavailable("unlink blob: " + std::string(std::strerror(errno)));
  }
  return Status::Ok();
}

Result<std::vector<BlobEntry>> FsBlobStore::List() {
  std::vector<BlobEntry> entries;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir_, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    std::string name = it->path().filename().string();
    if (!ValidKey(name)) continue;
    struct stat st {};
    WallMillis modified = 0;
    if (::stat(it->path().c_str(), &st) == 0) {
      modified = static_cast<WallMillis>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
    }
    entries.push_back({name, modified});
  }
  if (ec) return Status::Unavailable("cannot list blobs: " + ec.message());
  return entries;
}

}  // namespace lastcall
