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
  for (int64_t i = 0; i < *count; ++i) {
    const auto& r = rows[i];
    const std::string row = " in row " + std::to_string(i);
    if (r.dtype < 0 || r.dtype > 3) throw py::value_error("segments: unknown dtype code" + row);
    if (r.n < 0) throw py::value_error("segments: negative length" + row);
    if (r.fresh != 0 && r.fresh != 1) throw py::value_error("segments: fresh must be 0 or 1" + row);
    if (R::kStep) {
      // The counter advances even for an empty parameter, as torch's does.
      if (r.step == 0) throw py::value_error("segments: null step pointer" + row);
      if (r.step_dtype < 0 || r.step_dtype > 1) throw py::value_error("segments: unknown step dtype code" + row);
    }
    if (r.n == 0) continue;
    if (r.p == 0 || r.g == 0) throw py::value_error("segments: null pointer" + row);
    for (int k = 0; k < K; ++k)
      if (R::uses(rule_detail::row_variant<R>(v, r), k) && r.s[k] == 0)
        throw py::value_error(std::string("segments: null ") + R::kSlots[k] + " pointer" + row);
  }
  return rows;
}

}  // namespace clrfast
