// Bindings shared by the fused optimizers: schedule values, threads, ISA, a schedule's bytes for the device.
// The CPU steps of every rule, SGD included, are cpp/bindings/rules.cpp's.
//
// The torch front end passes raw data pointers as integers in an int64 table, so this
// module never links libtorch. Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "clrfast/sgd_update.hpp"
#include "cpu_dispatch.hpp"
#include "thread_pool.hpp"

namespace py = pybind11;

namespace clrfast {

void bind_optim(py::module_& m) {
  m.def("sgd_hyper", [](const Schedule& s, int64_t step, double momentum) {
    const LrMom v = group_values_at(s, static_cast<double>(step), momentum);
    return py::make_tuple(v.lr, v.momentum);
  }, py::arg("schedule"), py::arg("step"), py::arg("momentum"),
     "(lr, momentum) of `step`; the schedule's momentum, else `momentum`.");
  m.def("cpu_isa", &cpu_isa, "Instruction set the CPU kernels dispatch to.");
  m.def("hardware_threads", &ThreadPool::hardware_threads);
  m.def("schedule_bytes", [](const Schedule& s) {
    return py::bytes(reinterpret_cast<const char*>(&s), sizeof(Schedule));
  }, "The compiled schedule's raw bytes (copied to device memory for the CUDA kernel).");
}

}  // namespace clrfast
