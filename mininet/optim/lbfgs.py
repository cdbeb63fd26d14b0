"""L-BFGS with torch.optim.LBFGS's interface: step(closure) runs up to max_iter quasi-Newton
iterations, re-evaluating the closure (which zeroes the gradients, computes the loss, calls
backward and returns the loss) as it goes.

Written from the textbook (Nocedal & Wright, Numerical Optimization, 2nd ed.): the search
direction is -H g by the two-loop recursion (Alg. 7.4) over the last history_size curvature
pairs (s, y), with H0 = (y.s / y.y) I from the newest pair; line_search_fn="strong_wolfe"
picks the step by Alg. 3.5 (bracketing) and 3.6 (zoom, cubic interpolation), otherwise every
step has length lr, the very first scaled by min(1, 1/|g|_1).

The optimizer works on all parameters as one flat float64 vector (numpy); its state (the
history, the last direction and step, the gradient before it) lives in self.state[0] and
persists between step() calls, as torch's."""
from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Callable, Iterable

import numpy as np

from ..autograd import Tensor, enable_grad
from ..backend.capture import CaptureError, capturing
from ..ndarray import NDArray
from .optimizers import Optimizer

_C1, _C2 = 1e-4, 0.9      # sufficient decrease, curvature (strong Wolfe)
_MAX_LS = 25              # closure evaluations per line search, at most
_LINE_SEARCHES = (None, "strong_wolfe")


def _whole_at_least_one(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1


def _cubic_min(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
               lo: float, hi: float) -> float:
    """The minimizer in [lo, hi] of the cubic through (x1, f1) and (x2, f2) with slopes g1,
    g2 (N&W eq. 3.59); the middle of [lo, hi] where that cubic has no minimizer."""
    if x1 == x2:
        return (lo + hi) / 2
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if not math.isfinite(disc) or disc < 0:
        return (lo + hi) / 2
    d2 = math.copysign(math.sqrt(disc), x2 - x1)
    den = g2 - g1 + 2 * d2
    if den == 0:
        return (lo + hi) / 2
    x = x2 - (x2 - x1) * (g2 + d2 - d1) / den
    if not math.isfinite(x):
        return (lo + hi) / 2
    return min(max(x, lo), hi)


class LBFGS(Optimizer):
    """torch.optim.LBFGS: one parameter group; step(closure) returns the closure's first
    loss. Stops when max|g| <= tolerance_grad, when a step or the change of the loss is at
    most tolerance_change, after max_iter iterations or max_eval closure evaluations
    (default max_iter * 5 // 4)."""
    hypers = {"lr": "nonneg", "tolerance_grad": "nonneg", "tolerance_change": "nonneg"}

    def __init__(self, params: Iterable[Any], lr: float = 1, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        if max_eval is None and _whole_at_least_one(max_iter):
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      history_size=history_size,
                                      line_search_fn=line_search_fn))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the one param group (a dict with 'params' and options); L-BFGS
        takes a single group, so a second raises ValueError (as torch's)."""
        if getattr(self, "param_groups", None):
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): "
                             "give it one group")
        super().add_param_group(param_group)

    def _check_rules(self, group, where):
        for key in ("max_iter", "max_eval", "history_size"):
            if key in group and not _whole_at_least_one(group[key]):
                raise ValueError(f"LBFGS{where}: {key} must be a whole number >= 1, got "
                                 f"{group[key]!r}")
        if "line_search_fn" in group and group["line_search_fn"] not in _LINE_SEARCHES:
            raise ValueError(f"LBFGS{where}: line_search_fn must be None or 'strong_wolfe', "
                             f"got {group['line_search_fn']!r}")

    # the parameters as one flat vector ---------------------------------------------------
    def _flat_params(self) -> np.ndarray:
        return np.concatenate([p.cached_data.numpy().astype(np.float64).ravel()
                               for p in self.params])

    def _flat_grad(self) -> np.ndarray:
        parts = []
        for p in self.params:
            if p.grad is None:
                parts.append(np.zeros(int(np.prod(p.shape, dtype=np.int64))))
            else:
                parts.append(p.grad.cached_data.numpy().astype(np.float64).ravel())
        return np.concatenate(parts)

    def _set_params(self, x: np.ndarray) -> None:
        start = 0
        for p in self.params:
            shape = tuple(p.shape)
            n = int(np.prod(shape, dtype=np.int64))
            p.data = NDArray(x[start:start + n].reshape(shape), dtype=p.dtype, device=p.device)
            start += n

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Any, float, np.ndarray]:
        with enable_grad():
            loss = closure()
        value = loss.numpy() if isinstance(loss, Tensor) else loss
        return loss, float(np.asarray(value, dtype=np.float64).reshape(())), self._flat_grad()

    # the two-loop recursion (N&W Alg. 7.4) -------------------------------------------------
    @staticmethod
    def _direction(g: np.ndarray, s_hist: list, y_hist: list, gamma: float) -> np.ndarray:
        """-H g, H the L-BFGS inverse Hessian approximation with H0 = gamma I."""
        q = g.copy()
        rho = [1.0 / float(y @ s) for s, y in zip(s_hist, y_hist)]
        alpha = [0.0] * len(s_hist)
        for k in range(len(s_hist) - 1, -1, -1):
            alpha[k] = rho[k] * float(s_hist[k] @ q)
            q -= alpha[k] * y_hist[k]
        r = gamma * q
        for k in range(len(s_hist)):
            beta = rho[k] * float(y_hist[k] @ r)
            r += (alpha[k] - beta) * s_hist[k]
        return -r

    # the strong Wolfe line search (N&W Alg. 3.5 and 3.6) ----------------------------------
    def _line_search(self, closure, x0, d, t, f0, g0, gtd0, tol_change):
        """(t, f(x0 + t d), its gradient, evaluations): a step meeting the strong Wolfe
        conditions, or the best one found in _MAX_LS evaluations."""
        evals = 0

        def phi(step):
            nonlocal evals
            self._set_params(x0 + step * d)
            evals += 1
            _, f, g = self._evaluate(closure)
            return f, g, float(g @ d)

        d_max = float(np.abs(d).max())
        prev = (0.0, f0, g0, gtd0)
        bracket = None
        for i in range(_MAX_LS):
            f, g, gtd = phi(t)
            if not math.isfinite(f):     # far too long: come back towards the last point
                t = (prev[0] + t) / 2
                continue
            if f > f0 + _C1 * t * gtd0 or (i > 0 and f >= prev[1]):
                bracket = (prev, (t, f, g, gtd))
                break
            if abs(gtd) <= -_C2 * gtd0:
                return t, f, g, evals
            if gtd >= 0:
                bracket = ((t, f, g, gtd), prev)
                break
            t_next = _cubic_min(prev[0], prev[1], prev[3], t, f, gtd,
                                t + 0.01 * (t - prev[0]), 10 * t)
            prev = (t, f, g, gtd)
            t = t_next
        if bracket is None:
            return prev[0], prev[1], prev[2], evals
        lo, hi = bracket     # lo: the lowest sufficient-decrease point; the minimizer between
        while evals < _MAX_LS:
            if abs(hi[0] - lo[0]) * d_max < tol_change:
                break
            a, b = min(lo[0], hi[0]), max(lo[0], hi[0])
            t = _cubic_min(lo[0], lo[1], lo[3], hi[0], hi[1], hi[3], a, b)
            margin = 0.1 * (b - a)
            if t - a < margin or b - t < margin:   # safeguard: stay off the ends
                t = (a + b) / 2
            f, g, gtd = phi(t)
            if not math.isfinite(f) or f > f0 + _C1 * t * gtd0 or f >= lo[1]:
                hi = (t, f, g, gtd)
            else:
                if abs(gtd) <= -_C2 * gtd0:
                    return t, f, g, evals
                if gtd * (hi[0] - lo[0]) >= 0:
                    hi = lo
                lo = (t, f, g, gtd)
        return lo[0], lo[1], lo[2], evals

    # stepping -----------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Up to max_iter L-BFGS iterations; returns the closure's first loss."""
        if closure is None:
            raise ValueError("LBFGS.step needs a closure: it re-evaluates the loss")
        if capturing():
            raise CaptureError("LBFGS.step in a kernel graph capture: it reads the loss on "
                               "the host and replaces its parameters' buffers; run it eagerly")
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search = group["history_size"], group["line_search_fn"]
        self.step_count += 1
        st = self.state.setdefault(0, {})
        st.setdefault("func_evals", 0)
        st.setdefault("n_iter", 0)
        s_hist: list = st.setdefault("old_stps", [])
        y_hist: list = st.setdefault("old_dirs", [])

        orig_loss, loss, g = self._evaluate(closure)
        evals = 1
        st["func_evals"] += 1
        if float(np.abs(g).max(initial=0.0)) <= tol_grad:
            return orig_loss

        x = self._flat_params()
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            st["n_iter"] += 1
            if st["n_iter"] == 1:
                d = -g
                st["H_diag"] = 1.0
            else:
                y = g - st["prev_flat_grad"]
                s = st["t"] * st["d"]
                ys = float(y @ s)
                if ys > 1e-10:
                    if len(s_hist) == history_size:
                        s_hist.pop(0)
                        y_hist.pop(0)
                    s_hist.append(s)
                    y_hist.append(y)
                    st["H_diag"] = ys / float(y @ y)
                d = self._direction(g, s_hist, y_hist, st["H_diag"])
            st["prev_flat_grad"] = g.copy()
            prev_loss = loss
            if st["n_iter"] == 1:
                t = min(1.0, 1.0 / float(np.abs(g).sum())) * lr
            else:
                t = float(lr)
            gtd = float(g @ d)
            if gtd > -tol_change:     # not a descent direction (any more)
                break
            if line_search == "strong_wolfe":
                t, loss, g, ls_evals = self._line_search(closure, x, d, t, loss, g, gtd,
                                                         tol_change)
                x = x + t * d
                self._set_params(x)
            else:
                x = x + t * d
                self._set_params(x)
                ls_evals = 0
                if n_iter != max_iter:   # the last iteration's point is evaluated next step
                    _, loss, g = self._evaluate(closure)
                    ls_evals = 1
            st["d"], st["t"] = d, t
            evals += ls_evals
            st["func_evals"] += ls_evals
            if n_iter == max_iter or evals >= max_eval:
                break
            if float(np.abs(g).max(initial=0.0)) <= tol_grad:
                break
            if float(np.abs(d).max(initial=0.0)) * abs(t) <= tol_change:
                break
            if abs(loss - prev_loss) < tol_change:
                break
        return orig_loss

    def update(self, i, p, g, group):
        """Not used: L-BFGS moves all parameters together in step(closure), so the
        per-parameter update of the other optimizers raises NotImplementedError."""
        raise NotImplementedError("LBFGS updates in step(closure)")

    # state dicts: the history is lists of vectors, kept as they are -------------------------
    def state_dict(self) -> dict[str, Any]:
        state, self.state = self.state, {}
        try:
            sd = super().state_dict()
        finally:
            self.state = state
        sd["state"] = copy.deepcopy(state)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups, _ = self._loaded_groups(state_dict["param_groups"])
        state = copy.deepcopy(dict(state_dict.get("state", {})))
        self.param_groups = groups
        self.step_count = int(state_dict.get("step_count", 0))
        self.state = {0: state[0]} if 0 in state else {}
