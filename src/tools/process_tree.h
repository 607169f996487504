// defines: process_tree (a process, its descendants and its process group, from /proc),
// group_has_live_process,
// resident_bytes, peak_resident_bytes (Linux /proc readers, see proc(5)).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace nibble {

// `root` first, then every live process whose parent chain reaches `root` or whose process group
// is `root`'s (and their descendants). Empty when `root` does not exist any more.
std::vector<pid_t> process_tree(pid_t root);

// True while a process of process group `group` is alive. Zombies do not count: where PID 1
// does not reap orphans (some containers) they would otherwise linger for ever.
bool group_has_live_process(pid_t group);

// Resident set size of `pid` (/proc/<pid>/statm, field 2 x page size); unset if it is gone.
std::optional<uint64_t> resident_bytes(pid_t pid);

// Peak resident set size of this process (VmHWM in /proc/self/status).
std::optional<uint64_t> peak_resident_bytes();

}  // namespace nibble
