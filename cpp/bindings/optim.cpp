// Bindings of the fused SGD step (filled in with the optimizer kernels).
#include "bindings.hpp"

namespace clrfast {
void bind_optim(pybind11::module_&) {}
}  // namespace clrfast
