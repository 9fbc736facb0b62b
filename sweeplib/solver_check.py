"""Solver honesty: how far every fit stopped from its optimum, and whether the findings depend
on it.

    python run_all.py --demo                  # every fit records its duality gap (step JSON)
    python run_all.py --demo --solver-check   # + the sweep refitted at --tol 1e-8 in solver_check/

The probe is defined by where L-BFGS stops. At scikit-learn's default tolerance (--tol 1e-4,
what the original research used) it stops once every gradient entry is <= 1e-4, which on these
weakly regularized problems (C = 10, thousands of features) can leave the objective far above
the C = 10 optimum. Every fit records a certificate (certificate()): the objective P, a
dual lower bound D on the optimum, and the duality gap P - D >= P - optimum; the report shows
gap / D (excess_bound), a bound on P / P* - 1, the share the control measures. The control
(controls.run_solver_check) refits every step at a tight tolerance; the analysis
(analysis.solver_summary) and the report's Solver section say whether the headline numbers and
the verdict move. Measured on the full-size demo: a certificate for all 24 fits costs one batched
product (~0.1 s); a tight re-solve of one fit per step costs ~20 s (hundreds of iterations).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit, xlogy

FOLDER = "solver_check"
CHECK_TOL = 1e-8              # the control's tolerance
CHECK_MAX_ITER = 10000        # ... and iteration cap (a tight fit needs hundreds of iterations)


# why a fit stopped (the record's "stop"): L-BFGS-B's two convergence tests told apart
STOP_GRADIENT = "gradient <= tol"                 # every gradient entry <= --tol
STOP_FLAT = "objective flat (ftol)"               # converged by ftol, a gradient entry > tol
STOP_CONVERGED = "converged"                      # saga (L1): its own test, no gradient
STOP_MAX_ITER = "hit --max-iter"
STOP_EARLY = "line search / evaluation limit"     # neither converged nor at the cap
STOP_LEGEND = (f"stop: '{STOP_GRADIENT}' = every gradient entry <= tol (converged); "
               f"'{STOP_FLAT}' = converged because the objective stopped decreasing "
               f"(relative change <= 64 eps), a gradient entry still above tol; "
               f"'{STOP_MAX_ITER}' = the iteration cap, not converged; '{STOP_EARLY}' = the "
               "line search found no decrease or the evaluation cap (15,000) was reached, "
               "not converged")


def stop_reason(n_iter, converged, tol, max_iter, max_abs_gradient=None):
    """Why a fit stopped, as one of the STOP_* labels."""
    if converged:
        if max_abs_gradient is None:
            return STOP_CONVERGED
        return STOP_GRADIENT if max_abs_gradient <= tol else STOP_FLAT
    return STOP_MAX_ITER if max_iter is not None and n_iter >= max_iter else STOP_EARLY


def record(n_iter, converged, tol, max_iter, **certificate):
    """What is recorded about one fit's solver run (the certificate: L2 fits only)."""
    stop = stop_reason(n_iter, converged, tol, max_iter, certificate.get("max_abs_gradient"))
    return {"n_iter": int(n_iter), "converged": bool(converged), "stop": stop,
            "tol": float(tol), **certificate}


def stop_label(rec, max_iter=None):
    """The stop reason of a recorded fit, also for records written before the STOP_* labels
    (recomputed from what they hold; max_iter: the run's --max-iter)."""
    if rec.get("stop") in (STOP_GRADIENT, STOP_FLAT, STOP_MAX_ITER, STOP_EARLY):
        return rec["stop"]                  # ('converged' was also the older L2 label)
    return stop_reason(rec.get("n_iter", 0), rec.get("converged"), rec.get("tol", 0.0),
                       max_iter, rec.get("max_abs_gradient"))


def excess_bound(rec):
    """Upper bound on P / P* - 1 (how far above the optimum P* the objective P stopped, as a
    share of the optimum) from a recorded certificate: gap / D, since P - P* <= gap and
    P* >= D (the dual bound). None without a certificate or when D <= 0 (no bound)."""
    gap, dual = rec.get("duality_gap"), rec.get("dual_bound")
    if gap is None or dual is None or not dual > 0:
        return None
    return gap / dual


def dual_point(z, sign, sw):
    """A dual-feasible point from the scores z: alpha = sigmoid(-y z), rescaled on one class
    so that sum(sw alpha y) = 0 (the unpenalized intercept's constraint); returns
    (alpha, c = sw alpha y)."""
    alpha = expit(-sign * z)
    pos, neg = sign > 0, sign < 0
    a_pos, a_neg = np.dot(sw[pos], alpha[pos]), np.dot(sw[neg], alpha[neg])
    if a_pos > a_neg and a_pos > 0:
        alpha[pos] *= a_neg / a_pos
    elif a_neg > a_pos and a_neg > 0:
        alpha[neg] *= a_pos / a_neg
    return alpha, sw * alpha * sign


def certificate(z, sign, sw, w, C, inv_scale, alpha, xtc, g):
    """How far a fit stopped from its optimum, in scikit-learn's scaling (loss per unit of
    sample weight): the objective P, a lower bound D on the optimum (the dual of the
    problem at theta * alpha, theta in (0, 1] chosen best), the gap P - D >= P - P*, the gap
    as a share of P, and the largest gradient entry (what --tol bounds)."""
    total = sw.sum()
    primal = (np.dot(sw, np.logaddexp(0.0, -sign * z)) + np.dot(w, w) / (2 * C)) / total
    v = np.asarray(xtc, dtype=np.float64) * inv_scale
    vv = float(np.dot(v, v))
    theta = _best_dual_scale(alpha, sw, C, vv)
    a = theta * alpha
    entropy = -(xlogy(a, a) + xlogy(1.0 - a, 1.0 - a))
    dual = (np.dot(sw, entropy) - 0.5 * C * theta * theta * vv) / total
    gap = max(primal - dual, 0.0)
    return {"objective": float(primal), "dual_bound": float(dual), "duality_gap": float(gap),
            "relative_gap": float(gap / primal) if primal > 0 else 0.0,
            "max_abs_gradient": float(np.max(np.abs(g)))}


def _best_dual_scale(alpha, sw, C, vv, steps=60):
    """theta in (0, 1] maximizing the (concave) dual along theta * alpha, by bisection on its
    derivative sum(sw alpha log((1 - theta alpha) / (theta alpha))) - C theta vv."""
    on = alpha > 0
    a, s = alpha[on], sw[on]

    def slope(t):
        """Derivative of the dual along theta * alpha at t."""
        return float(np.dot(s * a, np.log1p(-t * a) - np.log(t * a))) - C * t * vv
    if not len(a) or slope(1.0) >= 0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if mid > 0 and slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return max(lo, np.finfo(float).tiny)
