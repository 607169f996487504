#include "tools/process_tree.h"

#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace nibble {
namespace {

struct StatLine {
  char state = '?';  // R, S, D, Z (zombie), ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
};

// /proc/<pid>/stat is "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses, so
// the fields are read after the last ')'.
std::optional<StatLine> read_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(close + 1));
  StatLine s;
  if (!(fields >> s.state >> s.ppid >> s.pgrp)) return std::nullopt;
  return s;
}

std::optional<pid_t> parse_pid(const std::string& name) {
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
  if (ec != std::errc() || end != name.data() + name.size() || pid <= 0) return std::nullopt;
  return pid;
}

std::map<pid_t, StatLine> all_processes() {
  std::map<pid_t, StatLine> all;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const auto pid = parse_pid(it->path().filename().string());
    if (!pid) continue;
    if (auto s = read_stat(*pid)) all[*pid] = *s;  // a process may exit between listing and reading
  }
  return all;
}

}  // namespace

std::vector<pid_t> process_tree(pid_t root) {
  if (!read_stat(root)) return {};
  const std::map<pid_t, StatLine> all = all_processes();
  // Members: root, its group, and anything whose parent chain reaches a member. Processes are few
  // (hundreds), so a fixed-point pass is simpler than building a child index.
  std::vector<pid_t> tree{root};
  std::map<pid_t, bool> member{{root, true}};
  for (const auto& [pid, s] : all) {
    if (pid != root && s.pgrp == root) {
      member[pid] = true;
      tree.push_back(pid);
    }
  }
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, s] : all) {
      if (!member.contains(pid) && member.contains(s.ppid)) {
        member[pid] = true;
        tree.push_back(pid);
        grew = true;
      }
    }
  }
  return tree;
}

bool group_has_live_process(pid_t group) {
  for (const auto& [pid, s] : all_processes()) {
    if (s.pgrp == group && s.state != 'Z') return true;
  }
  return false;
}

std::optional<uint64_t> resident_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  if (!(in >> size_pages >> resident_pages)) return std::nullopt;
  return resident_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::optional<uint64_t> peak_resident_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    uint64_t kib = 0;
    if (fields >> kib) return kib * 1024;
  }
  return std::nullopt;
}

}  // namespace nibble
