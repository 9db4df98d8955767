"""Maximum likelihood over positive parameters: minimise the negative mean log-likelihood in
log-parameter space with L-BFGS-B and an analytic gradient, from several starting points."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

FloatArray = npt.NDArray[np.float64]
# log-parameters -> (negative mean log-likelihood, its gradient in the log-parameters)
Objective = Callable[[FloatArray], tuple[float, FloatArray]]

LOG_BOUND = 25.0  # the search stays between e^-25 and e^25
RUNAWAY = 20.0  # a maximum beyond e^±20 is a parameter running to 0 or ∞: no interior one
GRADIENT_TOLERANCE = 1e-5


class FitError(ValueError):
    """The likelihood could not be maximised: too little or degenerate data."""


def maximise(objective: Objective, starts: Sequence[Sequence[float]], what: str) -> FloatArray:
    """The parameters (not their logs) that maximise the likelihood, from the first of
    ``starts`` (parameter values) whose run converges; FitError when none does."""
    reasons: list[str] = []
    for start in starts:
        x0 = np.log(np.asarray(start, dtype=np.float64))
        result = minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(-LOG_BOUND, LOG_BOUND)] * len(x0),
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        value = float(result.fun)
        gradient = np.asarray(result.jac, dtype=np.float64)
        converged = bool(result.success) or float(np.max(np.abs(gradient))) < GRADIENT_TOLERANCE
        at_bound = bool(np.any(np.abs(result.x) >= RUNAWAY))
        if not np.isfinite(value) or not converged or at_bound:
            reasons.append(
                str(result.message)
                if not at_bound
                else "a parameter ran to 0 or ∞: too few or too uniform customers"
            )
            continue
        return np.asarray(np.exp(result.x), dtype=np.float64)
    raise FitError(f"the {what} fit did not converge ({'; '.join(reasons)})")
