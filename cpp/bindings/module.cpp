#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "clrfast compiled core: schedules, batch tables, fused SGD and Adam steps.";
  clrfast::bind_schedules(m);
  clrfast::bind_param_groups(m);
  clrfast::bind_optim(m);
  clrfast::bind_adam(m);
  clrfast::bind_step_check(m);
#ifdef CLRFAST_WITH_CUDA
  m.attr("cuda_built") = true;
#else
  m.attr("cuda_built") = false;
#endif
}
