// A read-only memory map of a model file: weights are used in place, never copied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace adainfer {

class MappedFile {
 public:
  // Maps the whole file; throws std::runtime_error naming the path and the OS error.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // True when [offset, offset + bytes) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t bytes) const {
    return offset <= size_ && bytes <= size_ - offset;
  }

  // Drops the whole pages of [p, p + bytes) from this process's resident memory, if they lie in this mapping (else
  // nothing): for data copied elsewhere (packed weights). The file is unchanged; a later read maps the pages again.
  void release(const void* p, uint64_t bytes) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace adainfer
