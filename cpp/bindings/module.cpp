#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "clrfast/sgd_update.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "clrfast compiled core: schedules, batch tables, fused SGD and Adam steps, the declared rules.";
  clrfast::bind_schedules(m);
  clrfast::bind_param_groups(m);
  clrfast::bind_optim(m);
  clrfast::bind_step_check(m);
  clrfast::bind_rules(m);
  clrfast::bind_rule_launch(m);
  // The storage dtype codes of every kernel table, the one source of the front end's.
  pybind11::dict codes;
  codes["float32"] = static_cast<int>(clrfast::DType::F32);
  codes["float64"] = static_cast<int>(clrfast::DType::F64);
  codes["bfloat16"] = static_cast<int>(clrfast::DType::BF16);
  codes["float16"] = static_cast<int>(clrfast::DType::F16);
  m.attr("dtype_codes") = codes;
#ifdef CLRFAST_WITH_CUDA
  m.attr("cuda_built") = true;
#else
  m.attr("cuda_built") = false;
#endif
}
