#include "sparse_conv_run.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <thread>
#include <vector>

#include "scratch.h"
#include "sparse_conv_amx.h"
#include "sparse_conv_lists.h"

namespace exprune {
namespace sparse_conv {
namespace {

// Bytes of per-image scratch (the non-zero lists) held at once; larger batches are
// processed in groups of images.
constexpr int64_t kGroupBytes = int64_t{64} << 20;
// Multiply-adds per compute task if nothing were skipped: large enough that
// scheduling it is small next to the arithmetic.
constexpr int64_t kTaskWork = int64_t{1} << 19;
constexpr int64_t kMaxTasks = 1024;
// Compute tasks kept where there is work for them, whatever the thread count (onnxruntime
// does not tell a kernel its pool's size): enough to share out over a few threads.
constexpr int64_t kMinTasks = 16;
// Input elements per task of the pass that lists the non-zero inputs.
constexpr int64_t kListWork = int64_t{1} << 15;
constexpr int64_t kMaxFloats = 512;  // the largest tile: nv * lanes * t of every kernel set
// Partial sums of a segment kept between chunks of input channels (32 KB): two 112-wide
// rows of 32 output channels, or more shorter ones. With a task a segment's rows (below),
// 16 KB was about 0.01 of onnxruntime's time slower on 512 -> 512 @14, within the noise
// elsewhere.
constexpr int64_t kSegFloats = 8192;
// How many input channels a chunk holds trades two costs. Few channels keep its weights
// near (the tiles wait on fetching them when many inputs are non-zero); many keep the
// per-pixel loops long (when few are). A chunk takes about kColumnEntries / (non-zero
// share) channels, so that each column lists about that many inputs per chunk, between
// kDenseChunkBytes and kChunkBytes of weights (a share of a level-2 cache; chunks small
// enough for level 1 made the loops too short). Against the two sizes this replaced
// (56 KB from 40% non-zeros up, else 256 KB), side by side: 512 -> 512 @14 0.53 instead
// of 0.57 of onnxruntime's time at 70% i.i.d. zeros and 0.69 instead of 0.70 at 50%;
// 256 @28 and 128 @56 within 0.01 either way.
constexpr double kColumnEntries = 32.0;
constexpr int64_t kChunkBytes = int64_t{256} << 10;
constexpr int64_t kDenseChunkBytes = int64_t{56} << 10;
// The largest chunk holds at least this many channels, whatever the kernel's size.
constexpr int64_t kMinChunk = 64;
// A block's weights over kCachedBlockBytes (512 -> 512 3x3: 590 KB) do not stay in a
// level-2 cache from one task to the next, and a task's first tiles read them in the
// scattered order of its lists: each chunk's weights are then prefetched, in order, before
// its first tiles. Side by side, 0.005-0.03 of onnxruntime's time faster at 50-90% zeros
// on 512 @14 and @15, within 0.01 on 512 @30; on 256 @28 (295 KB) it was mixed, within
// 0.013 either way, so smaller blocks are left to the hardware.
constexpr int64_t kCachedBlockBytes = int64_t{512} << 10;
// Where all the layer's weights are few (kWaveWeightBytes; 3x3 64 -> 64 is 147 KB), an
// image runs in waves of output rows: each wave lists the input rows it is the first to
// read, then runs its tiles, a band's blocks of output channels back to back, so that the
// tiles find the lists in level 2 instead of reading them back from level 3 once a block.
// A wave holds about kWaveListBytes of lists; there are at most kMaxWaves, as each is two
// rounds of tasks on the pool. Side by side on the AMD EPYC, 1 thread, against one wave:
// 64 @112 0.006-0.018 of onnxruntime's time faster at 50-90% zeros, 32 @224 0.009-0.038.
// With more weights each wave reads them again: in waves of 64 KB of lists, 128 @56
// (590 KB) was 0.003-0.008 slower, 256 @28 and 512 @14 0.02-0.08. Once a layer's tasks
// are seen on two threads its images run in one wave: each round of tasks ends waiting
// for the slowest thread, and at 2 threads the EPYC's ratios moved too much to show
// whether waves pay there.
constexpr int64_t kWaveWeightBytes = int64_t{256} << 10;
constexpr int64_t kWaveListBytes = int64_t{256} << 10;
constexpr int64_t kMaxWaves = 4;
// Columns are paired in the lists (sparse_conv_tile.h) when at least kPairShare of the
// sampled non-zero inputs have a non-zero right neighbour. Where fewer do, the extra
// loop per pair costs more than the shared loads save: on the AMD EPYC of
// docs/sparse_conv.md, 1-7% slower at 75-80% i.i.d. zeros on the bench layers (neighbour
// share 0.2-0.25), even at 70% (0.3); 5-15% faster at 30-50% i.i.d. zeros, and 2-9% at
// 70-90% zeros in the photo inputs, whose zeros cluster as a real ReLU's do. Where the
// lists are paced by their weight loads (the Xeons with two 512-bit multiply-add units,
// which the tile unit marks) each shared load counts more: there kLoadBoundPairShare,
// 0.01-0.03 of onnxruntime's time faster on 256 @28 and 512 @14 at 67-75% i.i.d. zeros.
constexpr double kPairShare = 0.35;
constexpr double kLoadBoundPairShare = 0.25;
// On load-bound CPUs, rows at least kFewWidth wide whose image's sampled non-zero share is
// under kFewShare are listed from bit masks (ListIn::few). Each channel's row then costs a
// loop whose exit is a mispredicted branch, so narrow rows gain nothing: on the Xeon, side
// by side at 82-95% zeros, 0.01-0.05 of onnxruntime's time faster on 64 @112 and 128 @56,
// 0.01-0.02 slower on 256 @28, within 0.01 on 512 @14. On the AMD EPYC (Zen 4) it was
// 0.005-0.025 slower on 64 @112 and 128 @56 at 80-95% zeros but for photo 95%.
constexpr double kFewShare = 0.2;
constexpr int64_t kFewWidth = 32;
// The input is sampled on every kSampleStride-th channel, counted in runs of
// kSampleRun values (32-bit counts).
constexpr int64_t kSampleStride = 8;
constexpr int64_t kSampleRun = int64_t{1} << 20;

// Register tiles of partial sums that a segment holds (kSegFloats): several whole output
// rows when they are short, else part of one row.
int64_t SegmentTiles(const Shape& shape, int64_t per_block) {
  return std::max<int64_t>(1, kSegFloats / (shape.t * per_block));
}

// Prefetches n floats from p, a cache line at a time.
void Prefetch(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / int64_t{sizeof(float)}) __builtin_prefetch(p + i, 0, 2);
}

// One task's block of output channels [j0, j0 + lanes) of group g, image n.
struct Block {
  const Layer& l;
  const Lists& s;
  const Shape& shape;
  int64_t nl, n, g, j0, per_block;  // per_block: lanes of a full block
  Row* rows;                        // scratch for kh rows

  const float* BlockWeights() const {
    if (l.blocked) return l.wt + (g * CeilDiv(l.mg, per_block) + j0 / per_block) * l.cg * l.chan_step;
    return l.wt + g * l.cg * l.chan_step + j0;
  }

  // The blocked weights of the group's next block, or null after its last (or when w is
  // not blocked).
  const float* NextBlockWeights() const {
    return l.blocked && j0 + per_block < l.mg ? BlockWeights() + l.cg * l.chan_step : nullptr;
  }

  int64_t ChunkFloats(int64_t k) const { return std::min(l.chunk, l.cg - k * l.chunk) * l.chan_step; }

  // Output rows [oy0, oy1) a segment at a time, each segment through every chunk of
  // input channels in turn, so that a chunk's weights are reused from cache by all the
  // segment's tiles; the segment's partial sums wait in `sums` between chunks. A segment
  // holds whole rows when they are short (several rows share a chunk's weights: 1-6%
  // faster on the bench layers, most on the narrow ones), else part of one row.
  void RunRows(int64_t oy0, int64_t oy1) const {
    const int64_t seg_tiles = SegmentTiles(shape, per_block);
    const int64_t row_tiles = CeilDiv(l.w.out, shape.t);
    if (row_tiles <= seg_tiles) {
      for (int64_t oy = oy0; oy < oy1; oy += seg_tiles / row_tiles) {
        RunSegment(oy, std::min(seg_tiles / row_tiles, oy1 - oy), 0, l.w.out, oy == oy0);
      }
      return;
    }
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      for (int64_t seg = 0; seg < l.w.out; seg += seg_tiles * shape.t) {
        RunSegment(oy, 1, seg, std::min(l.w.out, seg + seg_tiles * shape.t), oy == oy0 && seg == 0);
      }
    }
  }

  // Positions [seg, seg_end) of output rows [oy0, oy0 + count); `first`: the task's first
  // segment, which finds the block's weights wherever the last task left them.
  void RunSegment(int64_t oy0, int64_t count, int64_t seg, int64_t seg_end, bool first) const {
    const int64_t kh = l.h.kernel;
    const int lanes = static_cast<int>(std::min(per_block, l.mg - j0));
    const bool sweep = l.w.kernel == 3 && l.w.stride == 1 && l.w.dilation == 1;
    const bool full = lanes == per_block || l.blocked;  // a blocked copy is padded with zeros
    const TileFn fn = sweep ? shape.sweep3[full] : shape.taps[full];
    const int64_t tile_floats = shape.t * per_block;
    const int64_t row_floats = CeilDiv(seg_end - seg, shape.t) * tile_floats;
    alignas(64) float sums[kSegFloats > kMaxFloats ? kSegFloats : kMaxFloats];
    Tile a{rows, kh, l.w.kernel, BlockWeights(), l.tap, 0, l.w.stride, l.w.dilation, lanes, nullptr, false};
    // (Only the blocked copy holds a block's weights apart from the other blocks'.)
    const bool fetch = first && l.blocked && l.cg * l.chan_step * int64_t{sizeof(float)} > kCachedBlockBytes;
    if (fetch) Prefetch(a.w, ChunkFloats(0));
    const int64_t calls = count * CeilDiv(seg_end - seg, shape.t);
    for (int64_t k = 0; k < l.chunks; ++k) {
      a.accumulate = k > 0;
      // The next chunk's weights (after the last, the next block's first chunk) are
      // fetched a slice before each tile, so that the fetch overlaps the arithmetic.
      const float* ahead = nullptr;
      if (fetch) ahead = k + 1 < l.chunks ? a.w + (k + 1) * l.chunk * l.chan_step : NextBlockWeights();
      const int64_t ahead_floats = ahead == nullptr ? 0 : ChunkFloats(k + 1 < l.chunks ? k + 1 : 0);
      const int64_t slice = fetch ? CeilDiv(ahead_floats, calls * 16) * 16 : 0;
      // Each tile spreads its slice over its kh rows of column steps.
      a.fetch_step = CeilDiv(slice * 4, kh * (shape.t / 2 + 1) * 64) * 64;
      int64_t fetched = 0;
      for (int64_t r = 0; r < count; ++r) {
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t iy = (oy0 + r) * l.h.stride - l.h.pad + ky * l.h.dilation;
          rows[ky] = iy < 0 || iy >= l.h.in ? Row{nullptr, nullptr, nullptr} : s.row(s.block(nl, iy, g, k, l), l);
        }
        for (int64_t ox0 = seg; ox0 < seg_end; ox0 += shape.t) {
          const int64_t now = slice > 0 ? std::clamp<int64_t>(ahead_floats - fetched, 0, slice) : 0;
          a.fetch = reinterpret_cast<const char*>(ahead + fetched);
          a.fetch_end = a.fetch + now * int64_t{sizeof(float)};
          fetched += now;
          a.col0 = ox0 * l.w.stride;  // padded column = input column + left pad
          a.out = sums + r * row_floats + (ox0 - seg) / shape.t * tile_floats;
          fn(a);
        }
      }
    }
    for (int64_t r = 0; r < count; ++r) {
      const int64_t at = (n * l.outs + g * l.mg + j0) * l.h.out * l.w.out + (oy0 + r) * l.w.out + seg;
      Select().finish(Out{sums + r * row_floats, per_block, seg_end - seg, lanes,
                          l.bias != nullptr ? l.bias + g * l.mg + j0 : nullptr, l.res != nullptr ? l.res + at : nullptr,
                          l.y + at, l.h.out * l.w.out, l.relu, l.clip_max});
    }
  }
};

// What the sample of one image found: the share of its inputs that are non-zero, and
// the share of non-zero inputs whose right neighbour (same channel) is non-zero too.
struct Sample {
  double nonzero, neighbour;
};

// Samples every kSampleStride-th channel of one image: cheap (whole channel planes are
// contiguous, so the reads stream) and a function of the image alone, so that an
// output's summation order does not depend on the rest of the batch. (Every 8th row of
// every channel cost three times as much: a cache miss a row.) A row's last value counts
// the next row's first as its neighbour: one pair in a row, noise.
Sample SampleImage(const float* x, int64_t channels, int64_t plane) {
  int64_t nonzero = 0, neighbour = 0, seen = 0;
  for (int64_t c = 0; c < channels; c += kSampleStride) {
    const float* p = x + c * plane;
    for (int64_t i0 = 0; i0 < plane; i0 += kSampleRun) {
      const int64_t n = std::min(kSampleRun, plane - i0), pairs = std::min(n, plane - 1 - i0);
      int32_t count = 0, both = 0;  // 32-bit lanes: vectorised four or more to a vector
      for (int64_t i = 0; i < n; ++i) count += p[i0 + i] != 0.0f ? 1 : 0;
      for (int64_t i = 0; i < pairs; ++i) both += (p[i0 + i] != 0.0f) & (p[i0 + i + 1] != 0.0f);
      nonzero += count;
      neighbour += both;
    }
    seen += plane;
  }
  if (nonzero == 0) return Sample{0.0, 0.0};
  return Sample{static_cast<double>(nonzero) / static_cast<double>(seen),
                static_cast<double>(neighbour) / static_cast<double>(nonzero)};
}

// Input channels per chunk (kColumnEntries), the chunks of a group balanced: the nearest
// whole number of chunks of the size wanted, no chunk over the most. A group of fewer
// than twice the fewest channels is not cut.
int64_t PickChunk(int64_t cg, int64_t tap_bytes, double share) {
  const int64_t most = std::max(kChunkBytes / tap_bytes, kMinChunk);
  const int64_t fewest = std::clamp<int64_t>(kDenseChunkBytes / tap_bytes, 1, most);
  int64_t want = share > 0.0 ? static_cast<int64_t>(std::min(kColumnEntries / share, 1e9)) : most;
  want = cg < 2 * fewest ? most : std::clamp(want, fewest, most);
  const int64_t chunks = std::max({CeilDiv(std::max<int64_t>(cg, 1), most), (cg + want / 2) / want, int64_t{1}});
  return CeilDiv(std::max<int64_t>(cg, 1), chunks);
}

// Kept between calls (scratch.h), so that the lists (twice the input's size) are not
// mapped and faulted in, nor the listers' rows zeroed, on every call.
struct ListScratch {
  scratch::Grown<Entry> entries;
  scratch::Grown<int32_t> starts;
  scratch::Grown<float> transposed;
};

// Whether the layer's calls have been seen running tasks on more than one thread.
bool Pooled(const Layer& l) { return l.pooled != nullptr && l.pooled->load(std::memory_order_relaxed); }

// Sees whether a round's tasks ran on a thread other than the caller's, and tells the layer.
struct Threads {
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> elsewhere{false};
  void Note() {
    if (std::this_thread::get_id() != caller) elsewhere.store(true, std::memory_order_relaxed);
  }
  void Tell(const Layer& l) const {
    if (elsewhere.load(std::memory_order_relaxed) && l.pooled != nullptr) l.pooled->store(true);
  }
};

// The layer's weights fit kWaveWeightBytes: the image runs in waves, and a band's blocks
// run back to back.
bool FewWeights(const Layer& l) {
  return l.outs * l.cg * l.h.kernel * l.w.kernel * int64_t{sizeof(float)} <= kWaveWeightBytes;
}

// Output rows per wave for `images` images whose sampled non-zero share is `nonzero`
// (h.out: the image in one wave).
int64_t WaveRows(const Layer& l, int64_t images, double nonzero) {
  if (!FewWeights(l) || Pooled(l)) return l.h.out;
  const double row_bytes = std::max(nonzero, 0.01) * static_cast<double>(images * l.channels * l.w.in * sizeof(Entry));
  const double rows = static_cast<double>(kWaveListBytes) / row_bytes / static_cast<double>(l.h.stride);
  return std::clamp<int64_t>(static_cast<int64_t>(std::min(rows, 1e9)), CeilDiv(l.h.out, kMaxWaves), l.h.out);
}

// Lists input rows [iy0, iy1) of images [n0, n0 + count) (tasks of bands of rows).
// Returns the number of non-zero inputs listed.
int64_t ListRows(const Ort::KernelContext& ctx, const Layer& l, const Lists& s, int64_t n0, int64_t count, int64_t iy0,
                 int64_t iy1) {
  const int64_t in_rows = iy1 - iy0, rows = count * in_rows * l.groups * l.chunks;
  if (rows <= 0) return 0;
  const int64_t row_work = std::max<int64_t>(l.chunk * l.w.in, 1);
  const int64_t tasks = std::max<int64_t>(1, std::min({rows * row_work / kListWork, rows, kMaxTasks}));
  std::vector<int64_t> listed(static_cast<size_t>(tasks), 0);
  std::vector<int32_t> next(static_cast<size_t>(tasks * 2 * l.w.in));
  const int64_t scratch_floats = CeilDiv(l.w.in, kListBlock) * CeilDiv(l.chunk, kListBlock) * kListBlock * kListBlock;
  float* scratch = Select().list != nullptr ? s.transposed->Get(static_cast<size_t>(tasks * scratch_floats)) : nullptr;
  Threads threads;
  std::atomic<bool> short_of_memory{false};
  auto list = [&](size_t task) noexcept {
    threads.Note();
    const int64_t t = static_cast<int64_t>(task);
    int64_t sum = 0;
    try {  // the AVX-512 listers grow their thread's masks and counts: a bad_alloc here would terminate
      for (int64_t r = t * rows / tasks; r < (t + 1) * rows / tasks; ++r) {
        const int64_t k = r % l.chunks, g = (r / l.chunks) % l.groups;
        const int64_t iy = iy0 + (r / (l.chunks * l.groups)) % in_rows, nl = r / (l.chunks * l.groups * in_rows);
        sum += ListRow(l, s, n0 + nl, nl, iy, g, k, next.data() + t * 2 * l.w.in,
                       scratch != nullptr ? scratch + t * scratch_floats : nullptr);
      }
    } catch (const std::bad_alloc&) {
      short_of_memory.store(true, std::memory_order_relaxed);
    }
    listed[static_cast<size_t>(task)] = sum;
  };
  ParallelTasks(ctx, static_cast<size_t>(tasks), list);
  threads.Tell(l);
  if (short_of_memory.load()) throw std::bad_alloc();  // a status, from the caller's thread
  int64_t total = 0;
  for (int64_t v : listed) total += v;
  return total;
}

// Runs the tiles of output rows [oy0, oy1) of images [n0, n0 + count): tasks of (image,
// group, block of output channels, band of rows), whose input rows are listed.
void TileRows(const Ort::KernelContext& ctx, const Layer& l, const Lists& s, const Shape& shape, int64_t n0,
              int64_t count, int64_t oy0, int64_t oy1) {
  const int64_t lanes_per_block = int64_t{shape.nv} * Select().lanes;
  const int64_t blocks = CeilDiv(l.mg, lanes_per_block);
  const int64_t units = count * l.groups * blocks, out_rows = oy1 - oy0;
  const int64_t row_macs = l.w.out * lanes_per_block * l.cg * l.h.kernel * l.w.kernel;
  const int64_t want = std::clamp<int64_t>(units * out_rows * row_macs / kTaskWork, 1, kMaxTasks);
  // A task takes at least a segment's rows where that leaves kMinTasks tasks: the
  // segment's rows then share each chunk's weights from cache (Block::RunRows). Bands of
  // one row (as the work per task alone picks) read 512 -> 512 @14's 590 KB of weights
  // per block once a row: 0.01-0.03 of onnxruntime's time slower on it, 0.01 on 256 @28.
  const int64_t seg_rows = std::max<int64_t>(1, SegmentTiles(shape, lanes_per_block) / CeilDiv(l.w.out, shape.t));
  const int64_t fewest_bands = std::min(out_rows, CeilDiv(kMinTasks, units));
  const int64_t bands =
      std::clamp<int64_t>(CeilDiv(want, units), 1, std::max(fewest_bands, CeilDiv(out_rows, seg_rows)));
  const bool blocks_inner = FewWeights(l);
  std::vector<Row> row_refs(static_cast<size_t>(units * bands * l.h.kernel));
  Threads threads;
  auto compute = [&](size_t task) noexcept {
    threads.Note();
    const int64_t t = static_cast<int64_t>(task);
    // Task order: bands of a block, or (few weights) blocks of a band.
    const int64_t blk = blocks_inner ? t % blocks : (t / bands) % blocks;
    const int64_t band = blocks_inner ? (t / blocks) % bands : t % bands;
    const int64_t unit = t / (blocks * bands);  // (image, group)
    const int64_t g = unit % l.groups, nl = unit / l.groups;
    Block job{l, s, shape, nl, n0 + nl, g, blk * lanes_per_block, lanes_per_block, row_refs.data() + t * l.h.kernel};
    job.RunRows(oy0 + band * out_rows / bands, oy0 + (band + 1) * out_rows / bands);
  };
  ParallelTasks(ctx, static_cast<size_t>(units * bands), compute);
  threads.Tell(l);
}

// Runs the layer over images [n0, n0 + count) in waves of `wave` output rows, each
// listing the input rows it is the first to read. Returns the number of non-zero inputs
// listed.
int64_t RunImages(const Ort::KernelContext& ctx, const Layer& l, const Lists& s, const Shape& shape, int64_t n0,
                  int64_t count, int64_t wave) {
  int64_t listed = 0, listed_to = 0;  // input rows [0, listed_to) are listed
  for (int64_t oy0 = 0; oy0 < l.h.out; oy0 += wave) {
    if (Pooled(l)) wave = l.h.out - oy0;  // seen in the first wave's listing: the rest at once
    const int64_t oy1 = std::min(l.h.out, oy0 + wave);
    const int64_t reach = (oy1 - 1) * l.h.stride - l.h.pad + (l.h.kernel - 1) * l.h.dilation + 1;
    const int64_t iy1 = oy1 == l.h.out ? l.h.in : std::clamp<int64_t>(reach, listed_to, l.h.in);
    listed += ListRows(ctx, l, s, n0, count, listed_to, iy1);
    listed_to = iy1;
    TileRows(ctx, l, s, shape, n0, count, oy0, oy1);
  }
  return listed;
}

}  // namespace

const Shape& PickShape(const Kernels& k, int64_t mg, int64_t out_w) {
  if (mg <= k.lanes) return k.shapes[0];
  const auto covered = [&](const Shape& s) { return CeilDiv(out_w, s.t) * s.t; };
  return covered(k.shapes[2]) < covered(k.shapes[1]) ? k.shapes[2] : k.shapes[1];
}

// Runs every image, in groups whose lists fit kGroupBytes and whose images pick the
// same chunking. Returns the number of non-zero inputs listed.
int64_t RunBatch(const Ort::KernelContext& ctx, Layer l, const Shape& shape) {
  const int64_t tap_bytes = l.h.kernel * l.w.kernel * shape.nv * Select().lanes * 4;
  const int64_t image = l.channels * l.h.in * l.w.in;
  std::vector<int64_t> chunk(static_cast<size_t>(l.batch));
  std::vector<char> pair(static_cast<size_t>(l.batch)), few(static_cast<size_t>(l.batch));
  std::vector<char> tiled(static_cast<size_t>(l.batch), 0);
  std::vector<double> nonzero(static_cast<size_t>(l.batch));
  int64_t read = 0;
  // Forcing the tiles also forces their CPUs' list choices, so that a test run with them
  // forced covers both listers on any CPU with AVX-512.
  const bool load_bound = sparse_conv_amx::Usable() != nullptr || sparse_conv_amx::Forced();
  for (int64_t n = 0; n < l.batch; ++n) {
    const Sample sample = SampleImage(l.x + n * image, l.channels, l.h.in * l.w.in);
    chunk[n] = PickChunk(l.cg, tap_bytes, sample.nonzero);
    nonzero[n] = sample.nonzero;
    pair[n] = sample.neighbour >= (load_bound ? kLoadBoundPairShare : kPairShare);
    few[n] = load_bound && sample.nonzero < kFewShare && l.w.in >= kFewWidth;
    if (l.amx != nullptr && sparse_conv_amx::Wanted(sample.nonzero, l.channels)) {
      tiled[n] = sparse_conv_amx::RunImage(ctx, l, *l.amx, n);
      read += tiled[n] ? image : 0;
    }
  }
  if (std::all_of(tiled.begin(), tiled.end(), [](char t) { return t != 0; })) return read;  // no lists to hold
  // Every padded column a tile reads has a count (0 in the padding).
  const int64_t cols = Lists::Columns(l, shape);
  // Per image, the entries and starts of the larger of the chunkings picked.
  int64_t entries_per_image = 0, starts_per_image = 0;
  for (const int64_t c : chunk) {
    const int64_t blocks = l.h.in * l.groups * CeilDiv(l.cg, c);
    entries_per_image = std::max(entries_per_image, blocks * (c * l.w.in + cols + kListSlack));
    starts_per_image = std::max(starts_per_image, blocks * Lists::Starts(cols));
  }
  const int64_t per_image = entries_per_image * int64_t{sizeof(Entry)} + starts_per_image * 4;
  const int64_t group = std::clamp<int64_t>(kGroupBytes / std::max<int64_t>(per_image, 1), 1, l.batch);
  const scratch::Pool<ListScratch>::Lease held = scratch::Pool<ListScratch>::Take();
  const Lists lists{held->entries.Get(static_cast<size_t>(group * entries_per_image)),
                    held->starts.Get(static_cast<size_t>(group * starts_per_image)), cols, &held->transposed};
  for (int64_t n0 = 0, count = 1; n0 < l.batch; n0 += count) {
    count = 1;
    if (tiled[n0] != 0) continue;
    l.chunk = chunk[n0];
    l.pair = pair[n0] != 0;
    l.few = few[n0] != 0;
    l.chunks = CeilDiv(l.cg, l.chunk);
    while (n0 + count < l.batch && count < group && tiled[n0 + count] == 0 && chunk[n0 + count] == l.chunk &&
           (pair[n0 + count] != 0) == l.pair && (few[n0 + count] != 0) == l.few) {
      ++count;
    }
    read += RunImages(ctx, l, lists, shape, n0, count, WaveRows(l, count, nonzero[n0]));
  }
  return read;
}

}  // namespace sparse_conv
}  // namespace exprune
