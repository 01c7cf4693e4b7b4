"""An independent oracle for the optimiser: the textbook fixed-charge MIP, solved by SCIP.

Used by the tests (mid-size carts) and by ``verify_mip.py`` (large carts).
"""

from __future__ import annotations

from ortools.linear_solver import pywraplp

from sourcing.costs import order_costs
from sourcing.model import Network, Order
from sourcing.orders import demand_by_sku


def mip_optimum(
    network: Network,
    order: Order,
    *,
    value_of_day: int = 0,
    minimise_day: bool = False,
    deadline: int | None = None,
    time_limit_s: float = 60.0,
) -> tuple[int, int] | None:
    """An independent oracle: the plain fixed-charge MIP solved by SCIP.

    Minimises cost + value_of_day * T (or T alone with ``minimise_day``),
    where T >= arrival of every parcel used; returns (objective, T) or None
    if infeasible. No pruning, no bounds, no enumeration: the textbook model.
    """
    skus, demand = demand_by_sku(network, order)
    c = order_costs(network, order.destination.lat, order.destination.lon, skus, demand)
    solver = pywraplp.Solver.CreateSolver("SCIP")
    assert solver is not None
    n_nodes, n_services = c.usable.shape
    y = {}
    x = {}
    t = solver.NumVar(0, float(c.arrival.max(initial=0)), "T")
    for n in range(n_nodes):
        for v in range(n_services):
            if not c.usable[n, v] or (deadline is not None and c.arrival[n, v] > deadline):
                continue
            y[n, v] = solver.BoolVar(f"y{n}_{v}")
            solver.Add(t >= int(c.arrival[n, v]) * y[n, v])
            for k in range(len(skus)):
                if c.available[n, k] > 0:
                    x[n, v, k] = solver.NumVar(0, float(c.available[n, k]), f"x{n}_{v}_{k}")
                    solver.Add(x[n, v, k] <= int(c.available[n, k]) * y[n, v])
        services = [y[n, v] for v in range(n_services) if (n, v) in y]
        if services:
            solver.Add(sum(services) <= 1)
            for k in range(len(skus)):
                xs = [x[n, v, k] for v in range(n_services) if (n, v, k) in x]
                if xs:
                    solver.Add(sum(xs) <= int(c.available[n, k]))
            carried = [x[key] for key in x if key[0] == n]
            if carried and c.capacity[n] < c.available[n].sum():
                solver.Add(sum(carried) <= int(c.capacity[n]))
    for k in range(len(skus)):
        xs = [x[key] for key in x if key[2] == k]
        solver.Add(sum(xs) == int(demand[k]) if xs else solver.Sum([]) == 1)
    cost = sum(int(c.fixed[n, v]) * var for (n, v), var in y.items()) + sum(
        int(c.unit[n, v, k]) * var for (n, v, k), var in x.items()
    )
    solver.Minimize(t if minimise_day else cost + value_of_day * t)
    solver.SetTimeLimit(int(time_limit_s * 1000))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 0.0)
    status = solver.Solve(params)
    if status == pywraplp.Solver.INFEASIBLE:
        return None
    assert status == pywraplp.Solver.OPTIMAL, status
    day = max(
        (int(c.arrival[n, v]) for (n, v), var in y.items() if var.solution_value() > 0.5), default=0
    )
    return round(solver.Objective().Value()), day
