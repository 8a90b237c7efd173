"""What sde_gen needs to know about diffrax solvers: which ones fit, and what a step costs.

Every sampler reports its number of score evaluations (NFE). diffrax reports steps, so
the NFE follows from the solver's Butcher tableau (checked against counted evaluations in
the tests): an FSAL explicit Runge-Kutta method costs `1 + (stages - 1) * steps`, other
explicit methods `stages * steps`, a stochastic RK method one drift evaluation per stage
it does not skip.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from .._checks import check_positive, check_steps, choose


def _erk_nfe(solver: diffrax.AbstractERK, num_steps):
    tableau = solver.tableau
    stages = len(tableau.c) + 1
    return 1 + (stages - 1) * num_steps if tableau.fsal else stages * num_steps


ODE_SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
}
SDE_SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "euler_heun": diffrax.EulerHeun,
    "sea": diffrax.SEA,
    "sra1": diffrax.SRA1,
    "shark": diffrax.ShARK,
    "general_shark": diffrax.GeneralShARK,
    "spark": diffrax.SPaRK,
}


def get_solver(kind: str, solver, choices: dict):
    """A diffrax solver object from itself or from its name in `choices`."""
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    return choose(f"{kind} solver", solver, choices)()


def check_ode_solver(solver, adaptive: bool) -> None:
    """Raise `ValueError` unless `solver` is an explicit ODE solver we can count, and adaptive
    when step-size control is asked for."""
    if not isinstance(solver, (diffrax.AbstractERK, diffrax.Euler)):
        raise ValueError(
            f"unsupported ODE solver {type(solver).__name__}; choose an explicit diffrax solver: "
            f"{', '.join(cls.__name__ for cls in ODE_SOLVERS.values())} "
            "(implicit solvers would need Jacobians of the score network)"
        )
    if adaptive and not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            f"{type(solver).__name__} has no error estimate for adaptive step control; "
            "pass num_steps for fixed steps, or choose Tsit5, Dopri5, Heun, Bosh3 or Dopri8"
        )


def check_ode_solve(solver, rtol, atol, num_steps, max_steps):
    """Resolve the solver (object or name in `ODE_SOLVERS`) and check it fits, with valid
    tolerances (adaptive) or step count (fixed). Returns the solver object."""
    solver = get_solver("ODE", solver, ODE_SOLVERS)
    check_ode_solver(solver, adaptive=num_steps is None)
    if num_steps is None:
        check_positive("ode solver", rtol=rtol, atol=atol)
    else:
        check_steps("num_steps", num_steps)
    check_steps("max_steps", max_steps)
    return solver


def solve_endpoint(field, solver, t0, t1, y0, num_steps, rtol, atol, max_steps):
    """Solve `dy/dt = field(t, y)` from t0 to t1 and return `(y(t1), nfe)`.

    Steps are `num_steps` uniform ones, or adaptive under `PIDController(rtol, atol)` with
    at most `max_steps`; the NFE follows from the steps taken and the solver's tableau.
    """
    if num_steps is None:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
    else:
        controller = diffrax.StepTo(ts=jnp.linspace(t0, t1, num_steps + 1))
        max_steps = num_steps
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        t0,
        t1,
        None,
        y0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    y1 = jax.tree_util.tree_map(lambda leaf: leaf[0], sol.ys)
    return y1, ode_nfe(solver, sol.stats["num_steps"])


def ode_nfe(solver, num_steps):
    """Vector-field evaluations of an ODE solve that took `num_steps` steps (accepted or not)."""
    if isinstance(solver, diffrax.AbstractERK):
        return _erk_nfe(solver, num_steps)
    return num_steps


def check_sde_solver(solver):
    """Resolve the solver (object or name in `SDE_SOLVERS`) and check it fits; returns it."""
    solver = get_solver("SDE", solver, SDE_SOLVERS)
    if not isinstance(
        solver, (diffrax.Euler, diffrax.EulerHeun, diffrax.Heun, diffrax.AbstractSRK)
    ):
        raise ValueError(
            f"unsupported SDE solver {type(solver).__name__}; choose one of "
            f"{', '.join(cls.__name__ for cls in SDE_SOLVERS.values())} "
            "(the reverse SDE has additive noise, so Ito and Stratonovich solvers agree)"
        )
    return solver


def sde_nfe(solver, num_steps: int) -> int:
    """Drift (score) evaluations of `num_steps` fixed steps of an SDE solver."""
    if isinstance(solver, diffrax.AbstractSRK):
        tableau = solver.tableau
        skipped = 0 if tableau.ignore_stage_f is None else int(sum(tableau.ignore_stage_f))
        return (len(tableau.b_sol) - skipped) * num_steps
    if isinstance(solver, diffrax.AbstractERK):
        return _erk_nfe(solver, num_steps)
    return num_steps


def brownian_levy_area(solver):
    """The cheapest Levy area that satisfies the solver's `minimal_levy_area`."""
    needed = getattr(solver, "minimal_levy_area", diffrax.AbstractBrownianIncrement)
    for area in (diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea):
        if issubclass(area, needed):
            return area
    return diffrax.SpaceTimeTimeLevyArea
