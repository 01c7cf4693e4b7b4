"""The delivery solver: exact delivery options for one order, the Pareto set and its labels.

Model (DESIGN section 3), on the arrays of :class:`~sourcing.costs.OrderCosts`:

* data: K distinct SKUs with demand ``Q[k]``; C candidate nodes with
  available units ``a[n, k]`` and capacity ``cap[n]``; per (node, service)
  a parcel's fixed cost ``F[n, v]`` (base price + handling), a cost per unit
  ``u[n, v, k]`` (per-kg price x weight - storage credit) and an arrival day
  ``eta[n, v]``;
* variables: ``x[n, v, k]`` integer units of SKU k shipped from node n by
  service v; ``y[n, v]`` binary, a parcel leaves n by v;
* constraints: ``sum_{n,v} x[n,v,k] == Q[k]``; ``sum_v x[n,v,k] <= a[n,k]``;
  ``x[n,v,k] <= a[n,k] * y[n,v]``; ``sum_v y[n,v] <= 1`` (one parcel per node);
  ``sum_{v,k} x[n,v,k] <= cap[n]``; ``y[n,v] <= sum_k x[n,v,k]`` (no empty
  parcel); and, per sub-problem ``P(D, p)``, ``y[n,v] = 0`` when
  ``eta[n,v] > D`` and ``sum y <= p``;
* objective: ``sum F y + sum u x`` (millicents, so CP-SAT is exact).

The options are the Pareto set over (cost, delivery day, parcels). They are
found by the epsilon-constraint method: ``P(D, p)``, the least (cost, then
parcels) plan delivering by day D in at most p parcels, is solved for the
candidate delivery days D (the distinct arrival days). CHEAPEST, FASTEST,
SINGLE_PARCEL and BALANCED are read off the results; a deadline that cannot
win any label is skipped, and one that could only win BALANCED is solved
with a cutoff (plans dearer than the best BALANCED value allows are not
wanted, so a bound ends it early). The deadlines are solved in order, so
each cutoff deadline (and each before FASTEST's) knows every plan arriving
earlier to be dearer than its cutoff (or not to exist): stage 4 searches
only plans with a parcel arriving on that very day. With ``full_frontier`` every deadline is
solved and, below each optimum's parcel count, every smaller cap p too: the
whole frontier.

Each ``P(D, p)`` is closed by the cheapest means that proves it (DESIGN
section 8), in this order:

1. dominated services are dropped (per node: no dearer and no slower, or
   strictly cheaper per parcel);
2. plans are enumerated exactly by parcel count (one parcel, two, three...)
   while the sets to try stay few: for a fixed set of parcels the best split
   is cheapest unit first, so pricing a set is a few numpy operations (where
   that split breaks a node's capacity, a min-cost flow re-splits the set
   exactly). Under a Lagrangian bound only the sets whose bound fits a
   budget are generated, by set-cover branching (every covering set holds a
   holder of the rarest SKU still short) when the plain filter admits too
   many; the budget grows from the least set bound towards the best cost,
   and two parcel counts are searched together, so a poor first plan does
   not flood the search;
3. between rounds, a bound on plans with more parcels settles the question:
   the cheapest fixed costs plus the cheapest units, then a Lagrangian bound
   (demand rows relaxed; LP strength, tightened by the parcel count and by
   node capacities) whose reduced costs also prune nodes; a greedy
   capacity-aware cover, a drop heuristic from the relaxation's open nodes
   and an add/drop/swap local search tighten the best plan;
4. only what is left goes to CP-SAT: the model above on the surviving nodes
   and parcel counts, hinted with the best plan and given the bound; where
   hundreds of slots survive (50-line carts on 500 nodes of fragmented
   stock), the residue is split by parcel count instead, each count bounded
   on its own (a cardinality term), its nodes fixed by its reduced costs,
   then a Lagrangian branch and bound over the open counts (prices
   re-optimised per branch), and CP-SAT per count for what is left.

What a sub-problem proves per parcel count (every plan of up to e parcels
costs at least its best plan or cutoff; every plan of p or more, at least its
bound) holds for every earlier deadline too, whose plans are plans of the later
one: a sub-problem skips the counts these floors put above its best plan, and
bounds only the counts left open. Under a cutoff no heuristic runs until a plan
within it is known (their plans almost never are).

Each option's :class:`~sourcing.model.Proof` names the step that proved it.
Once the quote's time is up (``time_limit_s`` or ``should_stop``), no stage
starts: the sub-problems left take the best known plan that fits, or a
greedy one, as FEASIBLE with a gap. Every option is re-priced by the
independent evaluator before it is returned.

The package, top-down (each module imports only those below it, the engine's
lower modules (:mod:`sourcing.model`, :mod:`sourcing.costs`,
:mod:`sourcing.orders`, :mod:`sourcing.evaluate`, :mod:`sourcing.errors`),
numpy, numba and OR-Tools; never :mod:`sourcing.fulfil` or :mod:`sourcing.menu`,
which build on it):

* :mod:`~sourcing.solver.frontier`: :func:`quote_delivery` and
  :func:`solve_costs`, the frontier over sub-problems and its labels;
* :mod:`~sourcing.solver.subproblem`: one ``P(D, p)``, stages 2-4 in order;
* :mod:`~sourcing.solver.large` (stage 4 on large residues, per parcel count),
  :mod:`~sourcing.solver.branching` (its branch and bound over one count),
  :mod:`~sourcing.solver.cpsat` (stage 4), :mod:`~sourcing.solver.heuristics`,
  :mod:`~sourcing.solver.enumeration` (stage 2),
  :mod:`~sourcing.solver.lagrangian` (stage 3's bound);
* :mod:`~sourcing.solver.strengthen`: a stronger bound for one parcel count (the
  least covering set's terms) and the prices that raise it, with nodes forced in or
  out; tested, not yet called by the search (benchmarks/README.md, issue 15);
* :mod:`~sourcing.solver.kernels`: the bounds' inner loop (each slot's term at
  given prices), compiled by numba; :func:`warm_up` compiles or loads it;
* :mod:`~sourcing.solver.context`: the plan type, one order's context and
  what each deadline shares (stage 1's dominance).
"""

from sourcing.solver.context import FEASIBLE, OPTIMAL, Plan
from sourcing.solver.frontier import cheapest_plan, quote_delivery, solve_costs
from sourcing.solver.kernels import warm_up

__all__ = [
    "FEASIBLE",
    "OPTIMAL",
    "Plan",
    "cheapest_plan",
    "quote_delivery",
    "solve_costs",
    "warm_up",
]
