// The emulator's core: runs a grid block by block on the calling host thread, each CUDA thread of
// a block a fiber (boost.context's fcontext: a register switch, no system call). A fiber runs
// until it reaches __syncthreads, a warp collective or its end; a round runs every ready fiber
// once, in the configured order; between rounds the scheduler resolves what is complete and
// reports, as a fault that fails the launch, whatever a real GPU would hang on or leave
// undefined: a barrier not reached by every thread of the block (some exited, or wait at another
// barrier), a warp collective whose mask names a lane that exited, waits elsewhere or posts a
// different collective, a shuffle that reads a lane outside its mask, too much shared memory.
#include <boost/context/detail/fcontext.hpp>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "emulator/control.h"
#include "emulator/device.h"
#include "emulator/launch.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SEQOPS_EMU_ASAN 1
#else
#define SEQOPS_EMU_ASAN 0
#endif

namespace ctx = boost::context::detail;

// Every static __shared__ object of this library (cuda_runtime.h puts them in this section).
extern "C" __attribute__((weak)) unsigned char __start_seqops_emu_shared[];
extern "C" __attribute__((weak)) unsigned char __stop_seqops_emu_shared[];

namespace seqops::emulator {

Builtins g_builtins;

namespace {

constexpr unsigned char kPoison = 0xFF;  // NaN in every float type, -1 in every integer
constexpr size_t kCanary = 64;           // checked bytes after the dynamic shared buffer

enum class State : uint8_t { Ready, AtBarrier, AtWarp, Done };

struct Fiber {
  ctx::fcontext_t context = nullptr;
  State state = State::Ready;
  uint3 index{};
  const char* file = nullptr;  // where it waits (barrier)
  int line = 0;
  WarpPost* post = nullptr;    // what it waits on (warp collective)
};

// Fiber stacks, kept across launches: mmap'd with a guard page below each, so an overflow
// faults at once instead of corrupting a neighbour.
class StackPool {
 public:
  size_t size() const { return size_; }
  void* top(size_t i) {
    while (stacks_.size() <= i) {
      const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      void* base = mmap(nullptr, size_ + page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (base == MAP_FAILED) throw std::runtime_error("seqops emulator: cannot map a fiber stack");
      mprotect(base, page, PROT_NONE);
      stacks_.push_back(static_cast<unsigned char*>(base) + page);
    }
    return stacks_[i] + size_;
  }
  unsigned char* bottom(size_t i) { return stacks_[i]; }

 private:
  // Sanitizers put redzones around every frame: give them room.
  size_t size_ = (SEQOPS_EMU_ASAN ? 512 : 128) * 1024;
  std::vector<unsigned char*> stacks_;
};

struct Launch {
  const char* name;
  void (*thunk)(void*);
  void* body;
  dim3 grid, block;
  size_t shared_bytes;
  unsigned threads;
};

// The state of the block being run (one at a time: launches hold g_mutex).
struct BlockRun {
  const Launch* launch = nullptr;
  std::vector<Fiber> fibers;
  Fiber* running = nullptr;
  ctx::fcontext_t scheduler = nullptr;
  std::string fault;
  std::vector<unsigned char> dynamic;
#if SEQOPS_EMU_ASAN
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
#endif
};

std::mutex g_mutex;
StackPool g_stacks;
BlockRun g_run;
Order g_order = Order::Forward;
uint64_t g_seed = 0;
uint64_t g_launch_counter = 0;
std::vector<std::string> g_launches;

std::string describe(const uint3& t) {
  std::ostringstream s;
  s << "(" << t.x << "," << t.y << "," << t.z << ")";
  return s.str();
}

// ------------------------------------------------------------------------------ switching

void finish_switch_into_fiber() {
#if SEQOPS_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_run.main_stack_bottom, &g_run.main_stack_size);
#endif
}

// From the running fiber back to the scheduler; returns when the scheduler resumes the fiber.
// (No fake-stack save: the sanitizer build runs with detect_stack_use_after_return=0.)
void yield_to_scheduler() {
#if SEQOPS_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g_run.main_stack_bottom, g_run.main_stack_size);
#endif
  const ctx::transfer_t t = ctx::jump_fcontext(g_run.scheduler, nullptr);
  g_run.scheduler = t.fctx;
  finish_switch_into_fiber();
}

void fiber_entry(ctx::transfer_t t) {
  g_run.scheduler = t.fctx;
  finish_switch_into_fiber();
  try {
    g_run.launch->thunk(g_run.launch->body);
  } catch (const std::exception& e) {  // nothing may unwind across a context switch
    g_run.fault = std::string("a C++ exception escaped the kernel: ") + e.what();
  }
  g_run.running->state = State::Done;
  yield_to_scheduler();  // never resumed
}

void resume(size_t i) {
  Fiber& f = g_run.fibers[i];
  g_builtins.thread_idx = f.index;
  g_run.running = &f;
  f.state = State::Ready;
#if SEQOPS_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g_stacks.bottom(i), g_stacks.size());
#endif
  const ctx::transfer_t t = ctx::jump_fcontext(f.context, nullptr);
  f.context = t.fctx;
#if SEQOPS_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  g_run.running = nullptr;
}

// ------------------------------------------------------------------------------ resolution

std::string lane_list(const std::vector<unsigned>& lanes) {
  std::ostringstream s;
  for (size_t i = 0; i < lanes.size(); ++i) s << (i ? "," : "") << lanes[i];
  return s.str();
}

std::string waits_at(const Fiber& f) {
  std::ostringstream s;
  switch (f.state) {
    case State::Done: s << "has exited"; break;
    case State::AtBarrier: s << "waits at __syncthreads (" << f.file << ":" << f.line << ")"; break;
    case State::AtWarp:
      s << "waits at " << f.post->what << " with mask 0x" << std::hex << f.post->mask << std::dec
        << " (" << f.post->file << ":" << f.post->line << ")";
      break;
    case State::Ready: s << "is running"; break;
  }
  return s.str();
}

// Resolves every complete warp collective; returns whether any was, or sets the fault.
bool resolve_warps() {
  const unsigned n = g_run.launch->threads;
  bool progressed = false;
  for (unsigned base = 0; base < n; base += 32) {
    for (unsigned lane = 0; lane < 32 && base + lane < n; ++lane) {
      Fiber& f = g_run.fibers[base + lane];
      if (f.state != State::AtWarp) continue;
      const WarpPost& post = *f.post;
      WarpPost* lanes[32] = {};
      for (unsigned j = 0; j < 32; ++j) {
        if (!(post.mask >> j & 1u)) continue;
        std::ostringstream why;
        if (base + j >= n) {
          why << "names lane " << j << ", which does not exist in a block of " << n << " threads";
        } else {
          const Fiber& g = g_run.fibers[base + j];
          if (g.state != State::AtWarp || g.post->resolve != post.resolve ||
              g.post->mask != post.mask)
            why << "names lane " << j << ", which " << waits_at(g);
          else
            lanes[j] = g.post;
        }
        if (!why.str().empty()) {
          std::ostringstream s;
          s << "thread " << describe(f.index) << " (warp " << base / 32 << ", lane " << lane
            << ") " << waits_at(f) << ", but the mask " << why.str();
          g_run.fault = s.str();
          return false;
        }
      }
      post.resolve(lanes, post.mask);
      if (!g_run.fault.empty()) return false;
      for (unsigned j = 0; j < 32; ++j)
        if (lanes[j] != nullptr) g_run.fibers[base + j].state = State::Ready;
      progressed = true;
    }
  }
  return progressed;
}

// Releases the block barrier when every thread waits at it; otherwise sets a fault for a
// barrier that cannot complete. Returns whether it released.
bool resolve_barrier() {
  const Fiber* first = nullptr;
  std::vector<unsigned> exited, elsewhere;
  for (unsigned i = 0; i < g_run.fibers.size(); ++i) {
    const Fiber& f = g_run.fibers[i];
    if (f.state == State::Done) exited.push_back(i);
    if (f.state != State::AtBarrier) continue;
    if (first == nullptr) first = &f;
    else if (f.file != first->file || f.line != first->line) elsewhere.push_back(i);
  }
  if (first == nullptr) return false;
  std::ostringstream s;
  if (!exited.empty()) {
    s << "__syncthreads (" << first->file << ":" << first->line << ") is not reached by every "
      << "thread: threads " << lane_list(exited) << " (linear index) have already returned";
  } else if (!elsewhere.empty()) {
    const Fiber& other = g_run.fibers[elsewhere.front()];
    s << "threads wait at different __syncthreads: " << first->file << ":" << first->line
      << " and " << other.file << ":" << other.line << " (threads " << lane_list(elsewhere)
      << ")";
  }
  if (!s.str().empty()) {
    g_run.fault = s.str();
    return false;
  }
  for (Fiber& f : g_run.fibers) f.state = State::Ready;
  return true;
}

std::string deadlock_report() {
  std::ostringstream s;
  s << "the block cannot make progress:";
  for (const Fiber& f : g_run.fibers)
    if (f.state != State::Done) {
      s << " thread " << describe(f.index) << " " << waits_at(f) << ";";
      break;
    }
  return s.str();
}

// ------------------------------------------------------------------------------ one block

void poison_shared() {
  if (__start_seqops_emu_shared != nullptr)
    std::memset(__start_seqops_emu_shared, kPoison,
                static_cast<size_t>(__stop_seqops_emu_shared - __start_seqops_emu_shared));
  std::fill(g_run.dynamic.begin(), g_run.dynamic.end(), kPoison);
  if (!SEQOPS_EMU_ASAN)
    std::fill(g_run.dynamic.end() - static_cast<std::ptrdiff_t>(kCanary), g_run.dynamic.end(),
              static_cast<unsigned char>(0xA5));
}

std::vector<unsigned> round_order(unsigned n, uint64_t block, uint64_t round) {
  std::vector<unsigned> order(n);
  std::iota(order.begin(), order.end(), 0u);
  if (g_order == Order::Reverse) std::reverse(order.begin(), order.end());
  if (g_order == Order::Random) {
    std::seed_seq seq{g_seed, g_launch_counter, block, round};
    std::mt19937_64 rng(seq);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

void run_block(const Launch& l, uint3 block_index, uint64_t block_linear) {
  g_builtins.block_idx = block_index;
  poison_shared();
  g_run.fibers.assign(l.threads, Fiber{});
  for (unsigned i = 0; i < l.threads; ++i) {
    Fiber& f = g_run.fibers[i];
    f.index = uint3{i % l.block.x, (i / l.block.x) % l.block.y, i / (l.block.x * l.block.y)};
    void* top = g_stacks.top(i);
#if SEQOPS_EMU_ASAN
    // A fiber abandoned by an earlier fault left its frames' redzones poisoned.
    __asan_unpoison_memory_region(g_stacks.bottom(i), g_stacks.size());
#endif
    f.context = ctx::make_fcontext(top, g_stacks.size(), fiber_entry);
  }
  for (uint64_t round = 0;; ++round) {
    for (unsigned i : round_order(l.threads, block_linear, round)) {
      if (g_run.fibers[i].state != State::Ready) continue;
      resume(i);
      if (!g_run.fault.empty()) return;
    }
    if (std::all_of(g_run.fibers.begin(), g_run.fibers.end(),
                    [](const Fiber& f) { return f.state == State::Done; }))
      break;
    if (resolve_warps()) continue;
    if (!g_run.fault.empty()) return;
    if (resolve_barrier()) continue;
    if (g_run.fault.empty()) g_run.fault = deadlock_report();
    return;
  }
  if (!SEQOPS_EMU_ASAN &&
      std::any_of(g_run.dynamic.end() - static_cast<std::ptrdiff_t>(kCanary), g_run.dynamic.end(),
                  [](unsigned char c) { return c != 0xA5; }))
    g_run.fault = "a write past the end of the dynamic shared memory (" +
                  std::to_string(l.shared_bytes) + " bytes)";
}

void check_launch_config(const Launch& l, const void* kernel) {
  std::ostringstream s;
  const uint64_t threads = uint64_t(l.block.x) * l.block.y * l.block.z;
  if (l.grid.x == 0 || l.grid.y == 0 || l.grid.z == 0 || l.block.x == 0 || l.block.y == 0 ||
      l.block.z == 0)
    s << "invalid configuration: a zero grid or block dimension";
  else if (threads > static_cast<uint64_t>(device_attribute(cudaDevAttrMaxThreadsPerBlock)) ||
           l.block.z > 64)
    s << "invalid configuration: " << threads << " threads per block";
  else if (l.grid.y > 65535 || l.grid.z > 65535 || l.grid.x > 2147483647u)
    s << "invalid configuration: grid (" << l.grid.x << "," << l.grid.y << "," << l.grid.z << ")";
  else if (l.shared_bytes > dynamic_shared_limit(kernel))
    s << "too many resources requested for launch: " << l.shared_bytes
      << " bytes of dynamic shared memory, the kernel may use " << dynamic_shared_limit(kernel)
      << " (device opt-in maximum "
      << device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) << ")";
  if (!s.str().empty())
    throw std::runtime_error(std::string("seqops emulator: launch of ") + l.name + " failed: " +
                             s.str());
}

}  // namespace

// ------------------------------------------------------------------------------ device side

void sync_block(const char* file, int line) {
  Fiber& f = *g_run.running;
  f.state = State::AtBarrier;
  f.file = file;
  f.line = line;
  yield_to_scheduler();
}

// Ends the running fiber for good after a fault: the launch fails. Whatever the fiber holds on
// its stack is abandoned, so the caller must not hold heap objects (messages are built first).
[[noreturn]] static void abandon_running() {
  g_run.running->state = State::Done;
  yield_to_scheduler();  // never resumed
  std::abort();
}

static void record_fault(const char* file, int line, const std::string& what) {
  std::ostringstream s;
  s << "thread " << describe(g_run.running->index) << ": " << what << " (" << file << ":" << line
    << ")";
  g_run.fault = s.str();
}

void warp_collective(WarpPost& post) {
  Fiber& f = *g_run.running;
  const unsigned lane = (f.index.x + f.index.y * g_run.launch->block.x +
                         f.index.z * g_run.launch->block.x * g_run.launch->block.y) % 32;
  const bool in_mask = post.mask >> lane & 1u;
  const bool good_width = post.width >= 1 && post.width <= 32 && (post.width & (post.width - 1)) == 0;
  if (!in_mask || !good_width) {
    {
      std::ostringstream s;
      if (!in_mask)
        s << post.what << " with mask 0x" << std::hex << post.mask << std::dec
          << " called by lane " << lane << ", which the mask leaves out";
      else
        s << post.what << ": width " << post.width << " is not a power of two <= 32";
      record_fault(post.file, post.line, s.str());
    }
    abandon_running();
  }
  f.state = State::AtWarp;
  f.post = &post;
  yield_to_scheduler();
  f.post = nullptr;
}

void fault(const char* file, int line, const char* what) {
  record_fault(file, line, what);
  abandon_running();
}

void collective_fault(const WarpPost& post, const char* what) {
  std::ostringstream s;
  s << what << " (" << post.file << ":" << post.line << ")";
  g_run.fault = s.str();
}

unsigned char* dynamic_shared() { return g_run.dynamic.data(); }

bool in_shared_memory(const void* address, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(address);
  const auto within = [&](const unsigned char* begin, size_t size) {
    return begin != nullptr && p >= begin && p + bytes <= begin + size;
  };
  const size_t dynamic_bytes = g_run.launch->shared_bytes;
  return within(g_run.dynamic.data(), dynamic_bytes) ||
         within(__start_seqops_emu_shared,
                static_cast<size_t>(__stop_seqops_emu_shared - __start_seqops_emu_shared));
}

// ------------------------------------------------------------------------------ host side

void run_grid(const char* name, const void* kernel, dim3 grid, dim3 block, size_t shared_bytes,
              void (*thunk)(void*), void* body) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  Launch l{name, thunk, body, grid, block, shared_bytes, block.x * block.y * block.z};
  check_launch_config(l, kernel);
  g_launches.emplace_back(name);
  ++g_launch_counter;
  g_run = BlockRun{};
  g_run.launch = &l;
  g_run.dynamic.assign(shared_bytes + (SEQOPS_EMU_ASAN ? 0 : kCanary), kPoison);
  g_builtins.block_dim = block;
  g_builtins.grid_dim = grid;
  uint64_t linear = 0;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x, ++linear) {
        run_block(l, uint3{x, y, z}, linear);
        if (!g_run.fault.empty()) {
          std::ostringstream s;
          s << "seqops emulator: kernel " << name << ", block (" << x << "," << y << "," << z
            << ") of grid (" << grid.x << "," << grid.y << "," << grid.z << "), block shape ("
            << block.x << "," << block.y << "," << block.z << "): " << g_run.fault;
          g_run = BlockRun{};
          throw std::runtime_error(s.str());
        }
      }
  g_run = BlockRun{};
}

void set_order(Order order, uint64_t seed) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_order = order;
  g_seed = seed;
}

Order order_from_name(const std::string& name) {
  if (name == "forward") return Order::Forward;
  if (name == "reverse") return Order::Reverse;
  if (name == "random") return Order::Random;
  throw std::invalid_argument("seqops emulator: order must be 'forward', 'reverse' or 'random', got '" +
                              name + "'");
}

std::vector<std::string> take_launches() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<std::string> out;
  out.swap(g_launches);
  return out;
}

}  // namespace seqops::emulator
