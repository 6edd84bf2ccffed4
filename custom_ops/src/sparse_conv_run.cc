#include "sparse_conv_run.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "sparse_conv_amx.h"

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

// Where a group of images' non-zero lists live: per (image, input row, group, chunk of
// channels) a block of entries (room for chunk * in_w + cols) and the starts of its
// cols + 1 padded columns followed by the counts of its cols / 2 + 1 column pairs.
struct Lists {
  Entry* entries;
  int32_t* start;
  int64_t cols;  // padded columns: left pad + enough for every tile's reads
  int64_t block(int64_t nl, int64_t iy, int64_t g, int64_t k, const Layer& l) const {
    return ((nl * l.h.in + iy) * l.groups + g) * l.chunks + k;
  }
  int64_t room(const Layer& l) const { return l.chunk * l.w.in + cols + kListSlack; }
  static int64_t Starts(int64_t cols) { return cols + 1 + cols / 2 + 1; }
  Entry* entries_of(int64_t b, const Layer& l) const { return entries + b * room(l); }
  int32_t* starts_of(int64_t b) const { return start + b * Starts(cols); }
  int32_t* both_of(int64_t b) const { return starts_of(b) + cols + 1; }
  Row row(int64_t b, const Layer& l) const { return Row{entries_of(b, l), starts_of(b), both_of(b)}; }
};

// The lists of image n (its slot nl in the group), input row iy, group g, chunk k: each
// pixel's non-zero channels (NaN and Inf are not zero), first those also non-zero in
// the paired pixel (sparse_conv_tile.h), then the others, each part in channel order.
// The input is read a channel row at a time (contiguous): once to count, then to fill.
// Every value is written to the next slot of its part, which advances on non-zeros
// only, so nothing branches on the data; zeros go to the second part's next slot, which
// a later non-zero or the spare slot after each pixel takes. Returns how many were
// listed. `next` has room for 2 * in_w counters.
int64_t ListRow(const Layer& l, const Lists& s, int64_t n, int64_t nl, int64_t iy, int64_t g, int64_t k, int32_t* next,
                float* scratch) {
  const int64_t b = s.block(nl, iy, g, k, l), in_w = l.w.in, plane = l.h.in * in_w, pad = l.w.pad;
  Entry* e = s.entries_of(b, l);
  int32_t* start = s.starts_of(b);
  int32_t* both = s.both_of(b);
  const int64_t c0 = g * l.cg + k * l.chunk, cn = std::min(l.chunk, l.cg - k * l.chunk);
  const float* src = l.x + ((n * l.channels + c0) * l.h.in + iy) * in_w;
  const float* next_row = iy + 1 < l.h.in ? src + in_w : nullptr;
  if (Select().list != nullptr) {
    return Select().list(ListIn{src, next_row, plane, cn, in_w, pad, s.cols,
                                static_cast<int32_t>(k * l.chunk * l.chan_step), static_cast<int32_t>(l.chan_step),
                                l.pair, l.few, e, start, both, scratch});
  }
  // The input column paired with ix, or -1 when that one is padding or nothing is paired.
  auto partner = [&](int64_t ix) {
    const int64_t p = ((ix + pad) ^ 1) - pad;
    return l.pair && p >= 0 && p < in_w ? p : -1;
  };
  int32_t* common = next;        // per pixel: non-zeros shared with its partner, then where the next one goes
  int32_t* other = next + in_w;  // per pixel: all non-zeros, then where the next unshared one goes
  std::fill(next, next + 2 * in_w, 0);
  for (int64_t c = 0; c < cn; ++c) {
    const float* row = src + c * plane;
    for (int64_t ix = 0; ix < in_w && next_row != nullptr; ix += 16) __builtin_prefetch(next_row + c * plane + ix);
    for (int64_t ix = 0; ix < in_w; ++ix) {
      const int64_t p = partner(ix);
      const int32_t nz = row[ix] != 0.0f ? 1 : 0;
      other[ix] += nz;
      common[ix] += nz & (p >= 0 ? (row[p] != 0.0f ? 1 : 0) : 0);
    }
  }
  int32_t at = 0;
  for (int64_t q = 0; q < s.cols; ++q) {  // padded columns hold no entries but their spare slot
    start[q] = at;
    const int64_t ix = q - pad;
    const bool inside = ix >= 0 && ix < in_w;
    if (q % 2 == 0) both[q / 2] = inside ? common[ix] : 0;
    if (inside) {
      const int32_t count = other[ix], shared = common[ix];
      common[ix] = at;
      other[ix] = at + shared;
      at += count;
    }
    ++at;
  }
  start[s.cols] = at++;
  for (int64_t c = 0; c < cn; ++c) {
    const int32_t off = static_cast<int32_t>((k * l.chunk + c) * l.chan_step);  // channel within the group
    const float* row = src + c * plane;
    for (int64_t ix = 0; ix < in_w; ++ix) {
      const int64_t p = partner(ix);
      const float v = row[ix];
      const int32_t nz = v != 0.0f ? 1 : 0;
      const int32_t shared = nz & (p >= 0 ? (row[p] != 0.0f ? 1 : 0) : 0);
      e[shared != 0 ? common[ix] : other[ix]] = Entry{v, off};
      common[ix] += shared;
      other[ix] += nz - shared;
    }
  }
  return at - (s.cols + 1);
}

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

// Grow-only, uninitialised storage kept per calling thread across runs, so that the
// lists (twice the input's size) are not mapped, zeroed and faulted in on every call.
template <typename T>
T* Scratch(std::unique_ptr<T[]>& buf, size_t& capacity, size_t n) {
  if (capacity < n) {
    buf.reset();
    buf.reset(new T[n]);
    capacity = n;
  }
  return buf.get();
}

// Runs the layer over images [n0, n0 + count), whose lists are built first. Returns the
// number of non-zero inputs listed.
int64_t RunImages(const Ort::KernelContext& ctx, const Layer& l, const Lists& s, const Shape& shape, int64_t n0,
                  int64_t count) {
  // ---- list the non-zero inputs: tasks of (image, band of input rows)
  const int64_t rows = count * l.h.in * l.groups * l.chunks;
  const int64_t row_work = std::max<int64_t>(l.chunk * l.w.in, 1);
  const int64_t list_tasks = std::max<int64_t>(1, std::min({rows * row_work / kListWork, rows, kMaxTasks}));
  std::vector<int64_t> listed(static_cast<size_t>(list_tasks), 0);
  std::vector<int32_t> next(static_cast<size_t>(list_tasks * 2 * l.w.in));
  const int64_t scratch_floats = CeilDiv(l.w.in, kListBlock) * CeilDiv(l.chunk, kListBlock) * kListBlock * kListBlock;
  std::vector<float> scratch(static_cast<size_t>(Select().list != nullptr ? list_tasks * scratch_floats : 0));
  auto list = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    int64_t sum = 0;
    for (int64_t r = t * rows / list_tasks; r < (t + 1) * rows / list_tasks; ++r) {
      const int64_t k = r % l.chunks, g = (r / l.chunks) % l.groups, iy = (r / (l.chunks * l.groups)) % l.h.in;
      const int64_t nl = r / (l.chunks * l.groups * l.h.in);
      sum += ListRow(l, s, n0 + nl, nl, iy, g, k, next.data() + t * 2 * l.w.in, scratch.data() + t * scratch_floats);
    }
    listed[static_cast<size_t>(task)] = sum;
  };
  ParallelTasks(ctx, static_cast<size_t>(list_tasks), list);

  // ---- the tiles: tasks of (image, group, block of output channels, band of output rows)
  const int64_t lanes_per_block = int64_t{shape.nv} * Select().lanes;
  const int64_t blocks = CeilDiv(l.mg, lanes_per_block);
  const int64_t units = count * l.groups * blocks;
  const int64_t row_macs = l.w.out * lanes_per_block * l.cg * l.h.kernel * l.w.kernel;
  const int64_t want = std::clamp<int64_t>(units * l.h.out * row_macs / kTaskWork, 1, kMaxTasks);
  // A task takes at least a segment's rows where that leaves kMinTasks tasks: the
  // segment's rows then share each chunk's weights from cache (Block::RunRows). Bands of
  // one row (as the work per task alone picks) read 512 -> 512 @14's 590 KB of weights
  // per block once a row: 0.01-0.03 of onnxruntime's time slower on it, 0.01 on 256 @28.
  const int64_t seg_rows = std::max<int64_t>(1, SegmentTiles(shape, lanes_per_block) / CeilDiv(l.w.out, shape.t));
  const int64_t fewest_bands = std::min(l.h.out, CeilDiv(kMinTasks, units));
  const int64_t bands =
      std::clamp<int64_t>(CeilDiv(want, units), 1, std::max(fewest_bands, CeilDiv(l.h.out, seg_rows)));
  std::vector<Row> row_refs(static_cast<size_t>(units * bands * l.h.kernel));
  auto compute = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t band = t % bands, unit = t / bands;
    const int64_t blk = unit % blocks, g = (unit / blocks) % l.groups, nl = unit / (blocks * l.groups);
    Block job{l, s, shape, nl, n0 + nl, g, blk * lanes_per_block, lanes_per_block, row_refs.data() + t * l.h.kernel};
    job.RunRows(band * l.h.out / bands, (band + 1) * l.h.out / bands);
  };
  ParallelTasks(ctx, static_cast<size_t>(units * bands), compute);
  int64_t total = 0;
  for (int64_t v : listed) total += v;
  return total;
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
  int64_t read = 0;
  // Forcing the tiles also forces their CPUs' list choices, so that a test run with them
  // forced covers both listers on any CPU with AVX-512.
  const bool load_bound = sparse_conv_amx::Usable() != nullptr || sparse_conv_amx::Forced();
  for (int64_t n = 0; n < l.batch; ++n) {
    const Sample sample = SampleImage(l.x + n * image, l.channels, l.h.in * l.w.in);
    chunk[n] = PickChunk(l.cg, tap_bytes, sample.nonzero);
    pair[n] = sample.neighbour >= (load_bound ? kLoadBoundPairShare : kPairShare);
    few[n] = load_bound && sample.nonzero < kFewShare && l.w.in >= kFewWidth;
    if (l.amx != nullptr && sparse_conv_amx::Wanted(sample.nonzero, l.channels)) {
      tiled[n] = sparse_conv_amx::RunImage(ctx, l, *l.amx, n);
      read += tiled[n] ? image : 0;
    }
  }
  if (std::all_of(tiled.begin(), tiled.end(), [](char t) { return t != 0; })) return read;  // no lists to hold
  // Every padded column a tile reads has a count (0 in the padding).
  const int64_t reach = (CeilDiv(l.w.out, shape.t) * shape.t - 1) * l.w.stride + (l.w.kernel - 1) * l.w.dilation;
  const int64_t cols = std::max(l.w.pad + l.w.in, reach + 1);
  // Per image, the entries and starts of the larger of the chunkings picked.
  int64_t entries_per_image = 0, starts_per_image = 0;
  for (const int64_t c : chunk) {
    const int64_t blocks = l.h.in * l.groups * CeilDiv(l.cg, c);
    entries_per_image = std::max(entries_per_image, blocks * (c * l.w.in + cols + kListSlack));
    starts_per_image = std::max(starts_per_image, blocks * Lists::Starts(cols));
  }
  const int64_t per_image = entries_per_image * int64_t{sizeof(Entry)} + starts_per_image * 4;
  const int64_t group = std::clamp<int64_t>(kGroupBytes / std::max<int64_t>(per_image, 1), 1, l.batch);
  thread_local std::unique_ptr<Entry[]> entries;
  thread_local std::unique_ptr<int32_t[]> starts;
  thread_local size_t entries_size = 0, starts_size = 0;
  const Lists lists{Scratch(entries, entries_size, static_cast<size_t>(group * entries_per_image)),
                    Scratch(starts, starts_size, static_cast<size_t>(group * starts_per_image)), cols};
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
    read += RunImages(ctx, l, lists, shape, n0, count);
  }
  return read;
}

}  // namespace sparse_conv
}  // namespace exprune
