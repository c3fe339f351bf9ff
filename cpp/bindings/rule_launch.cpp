// Bindings of the CUDA step of every declared rule (cpp/src/rule_launch.hpp): its chunk table and
// geometry, the step executed on the CPU by the emulator, and (in a CUDA build) on a stream.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "rule_emulate.hpp"
#include "rule_launch.hpp"
#include "rule_rows.hpp"
#include "rules.hpp"
#ifdef CLRFAST_WITH_CUDA
#include "rule_cuda.hpp"
#endif

namespace py = pybind11;

namespace clrfast {
namespace {

// Calls f(R*) for the rule named `name`.
template <class F, class... R>
void with_rule(const std::string& name, F&& f, RuleList<R...>) {
  const bool found = ((name == R::kName ? (f(static_cast<R*>(nullptr)), true) : false) || ...);
  if (!found) throw py::value_error("unknown rule " + name);
}

py::array_t<int32_t> chunk_table_py(const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& n) {
  if (n.ndim() != 1) throw py::value_error("lengths: expected a 1-d array");
  for (py::ssize_t i = 0; i < n.shape(0); ++i)
    if (n.data()[i] < 0) throw py::value_error("lengths: negative length in row " + std::to_string(i));
  std::vector<launch::Chunk> out;
  if (!launch::chunk_table(n.data(), n.shape(0), [&](launch::Chunk c) { out.push_back(c); }))
    throw py::value_error("lengths: more than 2^31 rows or chunks in a row");
  py::array_t<int32_t> a({static_cast<py::ssize_t>(out.size()), py::ssize_t{2}});
  auto w = a.mutable_unchecked<2>();
  for (size_t i = 0; i < out.size(); ++i) {
    w(i, 0) = out[i].seg;
    w(i, 1) = out[i].chunk;
  }
  return a;
}

const launch::Chunk* chunk_rows(const py::array& chunks, int64_t* count) {
  if (!py::isinstance<py::array_t<int32_t>>(chunks)) throw py::type_error("chunks: expected an int32 array");
  if (chunks.ndim() != 2 || chunks.shape(1) != 2 || !(chunks.flags() & py::array::c_style))
    throw py::value_error("chunks: expected a C-contiguous array of shape (n, 2)");
  *count = chunks.shape(0);
  return static_cast<const launch::Chunk*>(chunks.data());
}

template <class T>
T* addr(uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

// The per-step inputs the emulated and the CUDA step take alike (addresses: 0 for none).
struct StepInputs {
  uintptr_t clock, grad_scale, found_inf, hyper_out;
  int lr_index, momentum_index;
  double inv_scale;
  bool store_grad;
};

template <class R>
void set_inputs(launch::Args<R>& a, const StepInputs& in, unsigned char* workspace) {
  a.clock = addr<int64_t>(in.clock);
  a.lr_index = in.lr_index;
  a.momentum_index = in.momentum_index;
  a.inv_scale = in.inv_scale;
  a.grad_scale = addr<const float>(in.grad_scale);
  a.found_inf = addr<const float>(in.found_inf);
  a.store_grad = in.store_grad;
  a.hyper_out = addr<double>(in.hyper_out);
  a.state = reinterpret_cast<launch::State<R>*>(workspace);
  a.coefs = reinterpret_cast<launch::CoefPair<R>*>(workspace + launch::coefs_offset<R>());
}

py::dict emulate_py(const std::string& name, py::array segments, const std::vector<double>& scalars,
                    const py::array& chunks, const std::optional<Schedule>& schedule, uintptr_t clock,
                    int lr_index, int momentum_index, double inv_scale, uintptr_t grad_scale, uintptr_t found_inf,
                    bool store_grad, uintptr_t hyper_out, uint64_t seed, bool dry, int64_t max_blocks,
                    const std::vector<int64_t>& only_blocks) {
  py::dict out;
  with_rule(
      name,
      [&](auto* tag) {
        using R = std::remove_pointer_t<decltype(tag)>;
        if (scalars.size() != R::kScalars.size()) throw py::value_error("scalars: wrong count for " + name);
        const std::string why = R::invalid(scalars.data());
        if (!why.empty()) throw py::value_error(why);
        if (!segments.writeable()) throw py::value_error("segments: must be writable (fresh is cleared)");
        const int ns = static_cast<int>(R::kScalars.size());
        if (lr_index < -1 || lr_index >= ns || momentum_index < -1 || momentum_index >= ns)
          throw py::value_error("lr_index, momentum_index: not a scalar index");
        if (schedule && clock == 0) throw py::value_error("clock: required with a schedule");
        launch::Args<R> a{};
        a.rows = const_cast<launch::Row<R>*>(rule_rows<R>(segments, scalars, &a.nrows));
        a.chunks = chunk_rows(chunks, &a.nchunks);
        a.scalars = scalars.data();
        a.schedule = schedule ? &*schedule : nullptr;
        std::vector<unsigned char> ws(static_cast<size_t>(launch::workspace_bytes<R>(a.nrows)) + 64);
        unsigned char* base = ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64;
        set_inputs(a, {clock, grad_scale, found_inf, hyper_out, lr_index, momentum_index, inv_scale, store_grad}, base);
        EmulateOptions o;
        o.seed = seed;
        o.dry = dry;
        o.max_blocks = max_blocks;
        o.only_blocks = only_blocks;
        EmulateStats st;
        try {
          py::gil_scoped_release release;
          st = emulate_step<R>(a, o);
        } catch (const std::out_of_range& e) {
          throw py::index_error(e.what());
        }
        out["blocks"] = st.blocks;
        out["accesses"] = st.accesses;
        out["skipped"] = a.state->skip != 0;
      },
      Rules{});
  return out;
}

#ifdef CLRFAST_WITH_CUDA
void step_cuda_py(const std::string& name, uintptr_t rows, int64_t nrows, uintptr_t chunks, int64_t nchunks,
                  uintptr_t scalars, uintptr_t schedule, uintptr_t clock, int lr_index, int momentum_index,
                  double inv_scale, uintptr_t grad_scale, uintptr_t found_inf, bool store_grad, uintptr_t hyper_out,
                  uintptr_t workspace, uintptr_t stream) {
  with_rule(
      name,
      [&](auto* tag) {
        using R = std::remove_pointer_t<decltype(tag)>;
        if (rows == 0 || (chunks == 0 && nchunks > 0) || scalars == 0 || workspace == 0)
          throw py::value_error("rows, chunks, scalars, workspace: null device pointer");
        if (schedule != 0 && clock == 0) throw py::value_error("clock: required with a schedule");
        launch::Args<R> a{};
        a.rows = addr<launch::Row<R>>(rows);
        a.nrows = nrows;
        a.chunks = addr<const launch::Chunk>(chunks);
        a.nchunks = nchunks;
        a.scalars = addr<const double>(scalars);
        a.schedule = addr<const Schedule>(schedule);
        set_inputs(a, {clock, grad_scale, found_inf, hyper_out, lr_index, momentum_index, inv_scale, store_grad},
                   addr<unsigned char>(workspace));
        const std::string err = rule_step_cuda<R>(a, reinterpret_cast<void*>(stream));
        if (!err.empty()) throw std::runtime_error("rule_step_cuda: " + err);
      },
      Rules{});
}
#endif

}  // namespace

void bind_rule_launch(py::module_& m) {
  py::dict geo;
  geo["threads"] = launch::kThreads;
  geo["chunk"] = launch::kChunk;
  geo["max_blocks"] = launch::kMaxBlocks;
  geo["row_threads"] = launch::kRowThreads;
  m.attr("cuda_geometry") = geo;
  m.def("cuda_chunk_table", &chunk_table_py, py::arg("lengths"),
        "The CUDA step's chunk table of rows of these lengths: int32 (seg, chunk) pairs, chunk c of a row "
        "covering its elements [c * chunk, (c + 1) * chunk) (cuda_geometry['chunk']).");
  m.def(
      "cuda_workspace_bytes",
      [](const std::string& name, int64_t nrows) {
        int64_t b = 0;
        with_rule(
            name, [&](auto* tag) { b = launch::workspace_bytes<std::remove_pointer_t<decltype(tag)>>(nrows); },
            Rules{});
        return b;
      },
      py::arg("name"), py::arg("nrows"), "Bytes of device workspace (64-byte aligned) a CUDA step of nrows rows needs.");
  m.def("rule_step_emulated", &emulate_py, py::arg("name"), py::arg("segments"), py::arg("scalars"),
        py::arg("chunks"), py::kw_only(), py::arg("schedule") = py::none(), py::arg("clock") = 0,
        py::arg("lr_index") = -1, py::arg("momentum_index") = -1, py::arg("inv_scale") = 1.0,
        py::arg("grad_scale") = 0, py::arg("found_inf") = 0, py::arg("store_grad") = false, py::arg("hyper_out") = 0,
        py::arg("seed") = 0, py::arg("dry") = false, py::arg("max_blocks") = launch::kMaxBlocks,
        py::arg("only_blocks") = std::vector<int64_t>{},
        "One CUDA step of rule `name` executed on the CPU: the device kernels' code over their grid, block by block "
        "and thread by thread (seed: a permuted order), every index checked (IndexError). Addresses are host "
        "memory: clock (int64), grad_scale and found_inf (float32), hyper_out (2 float64). dry: the index "
        "arithmetic only, memory untouched. Returns the grid size, the element accesses and whether it skipped.");
#ifdef CLRFAST_WITH_CUDA
  m.def("rule_step_cuda", &step_cuda_py, py::arg("name"), py::arg("rows"), py::arg("nrows"), py::arg("chunks"),
        py::arg("nchunks"), py::arg("scalars"), py::kw_only(), py::arg("schedule") = 0, py::arg("clock") = 0,
        py::arg("lr_index") = -1, py::arg("momentum_index") = -1, py::arg("inv_scale") = 1.0,
        py::arg("grad_scale") = 0, py::arg("found_inf") = 0, py::arg("store_grad") = false, py::arg("hyper_out") = 0,
        py::arg("workspace") = 0, py::arg("stream") = 0,
        "Enqueues one step of rule `name` on a CUDA stream; every address is device memory (rows: the segment "
        "table, chunks: cuda_chunk_table, scalars: float64, schedule: a Schedule's bytes, workspace: "
        "cuda_workspace_bytes). Never synchronizes.");
#endif
}

}  // namespace clrfast
