// Each binding file registers its part of the clrfast._core module.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace clrfast {

// The rows of a kernel's segment table: a C-contiguous int64 array of shape (n, fields of Row),
// read as Row structs. The front end has checked every row's extent against its tensors; each
// binding then refuses only the codes and null pointers that would be undefined for its kernel.
template <typename Row>
const Row* segment_rows(const pybind11::array& table, int64_t* count) {
  constexpr int cols = static_cast<int>(sizeof(Row) / sizeof(int64_t));
  if (!pybind11::isinstance<pybind11::array_t<int64_t>>(table))
    throw pybind11::type_error("segments: expected an int64 array");
  if (table.ndim() != 2 || table.shape(1) != cols)
    throw pybind11::value_error("segments: expected shape (n, " + std::to_string(cols) + ")");
  if (!(table.flags() & pybind11::array::c_style)) throw pybind11::value_error("segments: must be C-contiguous");
  *count = table.shape(0);
  return static_cast<const Row*>(table.data());
}

void bind_schedules(pybind11::module_& m);
void bind_param_groups(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
void bind_step_check(pybind11::module_& m);
void bind_rules(pybind11::module_& m);
void bind_rule_launch(pybind11::module_& m);
}  // namespace clrfast
