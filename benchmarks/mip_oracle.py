"""An independent oracle for the optimiser: the textbook fixed-charge MIP, solved by SCIP.

Independent twice over: a different optimiser (one plain MIP, no pruning,
bounds or enumeration), and its own prices. Every figure the model uses,
each node's free units, its capacity, the zone and rate row of each
(node, service), the parcel's fixed cost, each SKU's per-unit cost with its
storage credit, the arrival day, is computed here from the raw network by
``reference.py`` (the tests' reading of DESIGN section 7), not taken from
``sourcing.costs``. Only the network's data is shared with the solver.

Used by the tests (mid-size carts) and by ``verify_mip.py`` (large carts).
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from sourcing.model import Network, Order

from reference import (
    NO_LIMIT,
    free_to_promise,
    great_circle_km,
    unit_credit,
    unit_shipping,
    zone_name,
)


@dataclass(frozen=True)
class OracleCosts:
    """One order's candidates as the oracle prices them (C nodes with units, V services, K SKUs)."""

    demand: list[int]
    available: list[list[int]]
    capacity: list[int]
    usable: list[list[bool]]
    fixed: list[list[int]]
    unit: list[list[list[int]]]
    arrival: list[list[int]]


def oracle_costs(network: Network, order: Order) -> OracleCosts:
    """Prices, days and free units of every node that holds some of the order's SKUs."""
    wanted: dict[str, int] = {}
    for line in order.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
    skus = sorted(wanted)
    demand = [wanted[s] for s in skus]
    grams = [int(network.weight_g[network.sku_ids.index(s)]) for s in skus]
    services = [v for v, name in enumerate(network.service_ids) if name != "transfer"]
    costs = OracleCosts(demand, [], [], [], [], [], [])
    for n, node in enumerate(network.node_ids):
        free = [
            min(free_to_promise(network, node, s), q) for s, q in zip(skus, demand, strict=True)
        ]
        if not any(free):
            continue
        km = great_circle_km(
            float(network.lat[n]),
            float(network.lon[n]),
            order.destination.lat,
            order.destination.lon,
        )
        z = network.zone_ids.index(zone_name(network, km))
        credit = [unit_credit(network, node, s) for s in skus]
        handling = int(network.handling_cost[n])
        costs.available.append(free)
        limit = int(network.capacity[n])
        costs.capacity.append(limit if limit < NO_LIMIT else sum(demand))
        costs.usable.append([bool(network.offered[v, z]) for v in services])
        costs.fixed.append([int(network.base_price[v, z]) + handling for v in services])
        costs.unit.append(
            [
                [
                    unit_shipping(network.per_kg[v, z], g) - cr
                    for g, cr in zip(grams, credit, strict=True)
                ]
                for v in services
            ]
        )
        costs.arrival.append(
            [int(network.handling_days[n]) + int(network.transit_days[v, z]) for v in services]
        )
    return costs


def mip_optimum(
    network: Network,
    order: Order,
    *,
    value_of_day: int = 0,
    minimise_day: bool = False,
    deadline: int | None = None,
    time_limit_s: float = 60.0,
) -> tuple[int, int] | None:
    """The plain fixed-charge MIP on the oracle's own prices, solved by SCIP.

    Minimises cost + value_of_day * T (or T alone with ``minimise_day``),
    where T >= arrival of every parcel used; returns (objective, T) or None
    if infeasible. No pruning, no bounds, no enumeration: the textbook model.
    """
    c = oracle_costs(network, order)
    demand = c.demand
    solver = pywraplp.Solver.CreateSolver("SCIP")
    assert solver is not None
    n_nodes, n_services = len(c.usable), len(c.usable[0]) if c.usable else 0
    y = {}
    x = {}
    t = solver.NumVar(0, float(max((max(a) for a in c.arrival), default=0)), "T")
    for n in range(n_nodes):
        for v in range(n_services):
            if not c.usable[n][v] or (deadline is not None and c.arrival[n][v] > deadline):
                continue
            y[n, v] = solver.BoolVar(f"y{n}_{v}")
            solver.Add(t >= c.arrival[n][v] * y[n, v])
            for k in range(len(demand)):
                if c.available[n][k] > 0:
                    x[n, v, k] = solver.NumVar(0, float(c.available[n][k]), f"x{n}_{v}_{k}")
                    solver.Add(x[n, v, k] <= c.available[n][k] * y[n, v])
        services = [y[n, v] for v in range(n_services) if (n, v) in y]
        if services:
            solver.Add(sum(services) <= 1)
            for k in range(len(demand)):
                xs = [x[n, v, k] for v in range(n_services) if (n, v, k) in x]
                if xs:
                    solver.Add(sum(xs) <= c.available[n][k])
            carried = [x[key] for key in x if key[0] == n]
            if carried and c.capacity[n] < sum(c.available[n]):
                solver.Add(sum(carried) <= c.capacity[n])
    for k in range(len(demand)):
        xs = [x[key] for key in x if key[2] == k]
        solver.Add(sum(xs) == demand[k] if xs else solver.Sum([]) == 1)
    cost = sum(c.fixed[n][v] * var for (n, v), var in y.items()) + sum(
        c.unit[n][v][k] * var for (n, v, k), var in x.items()
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
        (c.arrival[n][v] for (n, v), var in y.items() if var.solution_value() > 0.5), default=0
    )
    return round(solver.Objective().Value()), day
