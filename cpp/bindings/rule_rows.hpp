// The checks of a rule's segment table shared by its CPU binding (rules.cpp) and its CUDA and
// emulated bindings (rule_launch.cpp): the table's shape and codes, and no null pointer where
// the step's variant reads one.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "rule_cpu.hpp"

namespace clrfast {

// A rule's rows, checked (the extents are the front end's; see segment_rows).
template <class R>
const RuleRowOf<R>* rule_rows(const pybind11::array& table, const std::vector<double>& sc, int64_t* count) {
  namespace py = pybind11;
  constexpr int K = static_cast<int>(R::kSlots.size());
  const RuleRowOf<R>* rows = segment_rows<RuleRowOf<R>>(table, count);
  const int v = R::variant(sc.data());
  // The message is built only for a bad row: this runs every step, once per row.
  auto bad = [](const std::string& what, int64_t i) {
    return py::value_error("segments: " + what + " in row " + std::to_string(i));
  };
  for (int64_t i = 0; i < *count; ++i) {
    const auto& r = rows[i];
    if (r.dtype < 0 || r.dtype > 3) throw bad("unknown dtype code", i);
    if (r.n < 0) throw bad("negative length", i);
    if (r.fresh != 0 && r.fresh != 1) throw bad("fresh must be 0 or 1", i);
    if (R::kStep) {
      // The counter advances even for an empty parameter, as torch's does.
      if (r.step == 0) throw bad("null step pointer", i);
      if (r.step_dtype < 0 || r.step_dtype > 1) throw bad("unknown step dtype code", i);
    }
    if (r.n == 0) continue;
    if (r.p == 0 || r.g == 0) throw bad("null pointer", i);
    for (int k = 0; k < K; ++k)
      if (R::uses(rule_detail::row_variant<R>(v, r), k) && r.s[k] == 0)
        throw bad(std::string("null ") + R::kSlots[k] + " pointer", i);
  }
  return rows;
}

}  // namespace clrfast
