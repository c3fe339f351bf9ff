// The schedule core bound with nanobind instead of pybind11: the same C++
// functions behind the same Python signatures, so bench/bench_binding.py
// measures nothing but the binding layer.
#include <nanobind/nanobind.h>

#include "clrfast/schedule.hpp"

namespace nb = nanobind;
using namespace clrfast;

NB_MODULE(_nb_bench, m) {
  nb::class_<Schedule>(m, "Schedule")
      .def("lr", [](const Schedule& s, double t) { return lr_at(s, t); })
      .def("at", [](const Schedule& s, double t) {
        const LrMom r = schedule_at(s, t);
        return nb::make_tuple(r.lr, r.momentum);
      });
  m.def("cyclic", [](double base_lr, double max_lr, double up, double down) {
    Leaf leaf{};
    leaf.kind = Kind::Cyclic;
    leaf.cyclic = make_cyclic(base_lr, max_lr, cyclic_geometry(up, down), ScaleKind::Triangular, 1.0, ScaleMode::Cycle,
                              Window::Triangular, false, 0.0, 0.0);
    return single(leaf);
  });
  m.def("cyclic_scale", [](int kind, double gamma, double x) {
    return cyclic_scale(static_cast<ScaleKind>(kind), gamma, x);
  });
}
