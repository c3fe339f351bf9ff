// Each binding file registers its part of the clrfast._core module.
#pragma once

#include <pybind11/pybind11.h>

namespace clrfast {
void bind_schedules(pybind11::module_& m);
void bind_param_groups(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
void bind_adam(pybind11::module_& m);
}  // namespace clrfast
