// Bindings of the declared update rules (cpp/src/rules.hpp): one generic
// binding per rule, and its layout exported as _core.rules[name], so the
// front end's columns, state keys and scalar order all come from the rule's
// C++ declaration.
//
// Type conversion and the checks that keep the kernel defined: the table's
// shape and codes, and no null pointer where the step's variant reads one.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "rule_cpu.hpp"
#include "rule_rows.hpp"
#include "rules.hpp"

namespace py = pybind11;

namespace clrfast {
namespace {

template <class R>
void bind_rule(py::module_& m, py::dict& layouts) {
  constexpr int K = static_cast<int>(R::kSlots.size());
  using C = RuleCols<K>;
  py::tuple slots(K), scalars(R::kScalars.size());
  for (int k = 0; k < K; ++k) slots[k] = R::kSlots[k];
  for (size_t k = 0; k < R::kScalars.size(); ++k) scalars[k] = R::kScalars[k];
  py::dict cols;
  cols["p"] = C::p;
  cols["g"] = C::g;
  for (int k = 0; k < K; ++k) cols[R::kSlots[k]] = C::s + k;
  cols["n"] = C::n;
  cols["dtype"] = C::dtype;
  cols["step"] = C::step;
  cols["step_dtype"] = C::step_dtype;
  cols["fresh"] = C::fresh;
  py::dict layout;
  layout["slots"] = slots;
  layout["scalars"] = scalars;
  layout["cols"] = cols;
  layout["width"] = C::count;
  layout["step"] = R::kStep;
  layout["root"] = R::kRoot;
  layout["grad_out"] = rule_detail::writes_any_grad<R>();
  layout["fresh"] = rule_detail::FreshBit<R>::bit != 0;
  layouts[R::kName] = layout;

  const std::string name = std::string(R::kName) + "_step";
  const std::string doc = "The " + std::string(R::kName) +
                          " step on the CPU over an int64 segment table (columns: _core.rules['" + R::kName +
                          "']['cols']). scalars: the values of _core.rules['" + R::kName +
                          "']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, "
                          "sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns "
                          "(lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the "
                          "schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, "
                          "and gradients are divided by it, as torch's fused CPU kernels unscale.";
  m.def(
      name.c_str(),
      [](const py::array& table, const std::vector<double>& scalars, double inv_scale, bool store_grad, int threads,
         uintptr_t sqrt_f32, uintptr_t sqrt_f64, uintptr_t sqrt_threads_local, const std::optional<Schedule>& schedule,
         int64_t next_step, double momentum, bool divide_scale) -> py::object {
        if (scalars.size() != R::kScalars.size())
          throw py::value_error("scalars: expected " + std::to_string(R::kScalars.size()) + " values (" +
                                std::string(R::kName) + "), got " + std::to_string(scalars.size()));
        if (divide_scale && !store_grad)
          throw py::value_error("divide_scale: GradScaler's division needs store_grad=True");
        const std::string why = R::invalid(scalars.data());
        if (!why.empty()) throw py::value_error(why);
        int64_t n = 0;
        const RuleRowOf<R>* rows = rule_rows<R>(table, scalars, &n);
        RuleRun run;
        run.inv_scale = inv_scale;
        run.store_grad = store_grad;
        run.divide_scale = divide_scale;
        run.threads = threads < 1 ? 1 : threads;
        run.sqrt_f32 = reinterpret_cast<VecSqrtF32>(sqrt_f32);
        run.sqrt_f64 = reinterpret_cast<VecSqrtF64>(sqrt_f64);
        run.sqrt_threads_local = reinterpret_cast<int (*)(int)>(sqrt_threads_local);
        // The values the group shows after this step, computed with it: one call per step.
        LrMom next{};
        if (schedule) next = group_values_at(*schedule, static_cast<double>(next_step), momentum);
        {
          py::gil_scoped_release release;
          rule_step_cpu<R>(rows, n, scalars.data(), run);
        }
        if (!schedule) return py::none();
        return py::make_tuple(next.lr, next.momentum);
      },
      py::arg("segments"), py::arg("scalars"), py::arg("inv_scale") = 1.0, py::arg("store_grad") = false,
      py::arg("threads") = 1, py::arg("sqrt_f32") = 0, py::arg("sqrt_f64") = 0, py::arg("sqrt_threads_local") = 0,
      py::arg("schedule") = py::none(), py::arg("next_step") = 0, py::arg("momentum") = 0.0,
      py::arg("divide_scale") = false, doc.c_str());
}

template <class... R>
void bind_all(py::module_& m, RuleList<R...>) {
  py::dict layouts;
  (bind_rule<R>(m, layouts), ...);
  m.attr("rules") = layouts;
}

}  // namespace

void bind_rules(py::module_& m) {
  bind_all(m, Rules{});
}

}  // namespace clrfast
