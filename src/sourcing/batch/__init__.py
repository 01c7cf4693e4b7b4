"""Batch re-optimisation: re-assign many open orders jointly, within their promises.

DESIGN section 5. Orders placed one at a time are allocated greedily in time:
an early order may take the last units at a node that a later order needed
more. Re-assigning the orders not yet released, together, lowers the total
reference cost (DESIGN section 7) without breaking any promise.

Model (solved per independent piece, see *Decomposition*), on arrays built
by :func:`sourcing.costs.order_costs` so that every price is the reference one:

* data: orders o, each with demand ``Q[o, k]`` units of SKU k (what its
  current allocation covers, line by line), a promise ``L[o]`` (latest
  delivery day) and a capacity bucket ``b(o)`` (the day whose node capacity
  it draws on); candidate parcels ("slots") ``p = (o, n, v)``: order o ships
  from node n by service v, with fixed cost ``F[p]`` (base price + handling),
  cost per unit ``u[p, k]`` (per-kg price x weight - storage credit) and
  arrival ``eta[p]``; stock ``A[n, k]`` free for the batch (what is
  available plus what the batch's own orders hold now, their reservations
  being released into the pool); capacity ``C[b, n]`` left per bucket and node
  (likewise with the batch's own usage given back);
* variables: ``x[p, k]`` integer units of SKU k in parcel p; ``y[p]``
  binary, parcel p is sent;
* constraints: ``sum_{p of o} x[p, k] == Q[o, k]`` (each order covered as
  now); ``x[p, k] <= min(Q[o, k], A[n, k]) * y[p]``; at most one parcel per
  (order, node); ``sum_{p at n} x[p, k] <= A[n, k]`` (shared stock);
  ``sum_{p at n, b(o) = b} x[p, k] <= C[b, n]`` (shared daily capacity); a
  slot exists only if ``eta[p] <= L[o]``, so every promise is kept;
* objective: minimise ``sum F[p] y[p] + sum u[p, k] x[p, k]``, the total
  reference cost in integer millicents.

Solved as a MIP by SCIP through OR-Tools' linear-solver wrapper (default;
``backend="cp-sat"`` builds the same model for CP-SAT): on these models the
LP relaxation is strong and SCIP closes 4,000-order sub-problems at the root
node in 10-20 s, where CP-SAT stayed at a 20-30% gap after 10 s on 400 orders
(see :data:`BACKENDS`). A solver's answer is rounded and re-checked against
every row before it is used.

Candidate slots are kept small: per order, the nodes that can meet its
promise, pruned to the ``candidates_per_sku`` cheapest per unit for each SKU,
the ``whole_order_candidates`` cheapest that can ship the whole order alone,
and the nodes of its current allocation; per node only services that are not
dearer in every respect than another service meeting the promise.

Who can gain: an order's cost can never fall below its own optimum with
the whole pool to itself, so only an order whose plan costs more than that
(*unhappy*; tested with cheap bounds, see :func:`_unhappy`) can get cheaper,
and a sub-problem without one cannot save anything: it is not solved. The
orders free to move are the unhappy ones and, up to ``reach`` levels, the
orders holding contended stock or capacity a free order could use (a move
of theirs may make room); the others keep their plans and their units are
out of the pool (``reach=None``: everyone is free, the exact model).

Decomposition: a stock position (n, k) is *contended* when the free orders
that could draw on it want more than it holds (likewise a capacity (b, n)).
Free orders linked through contended positions form a component
(union-find); orders that share none are independent and solved apart,
small components bundled into one model up to ``max_orders_per_problem``
orders. A larger component is
solved in *chunks*: each chunk keeps the stock its orders hold now plus a
share of the free stock (in proportion to what its orders could use), so the
chunks are independent and their union stays feasible. The chunking is
redone in further rounds with other groupings (orders wanting the same
contended position, then those sharing a current position, then at random)
so that orders split in one round can trade in the next.

Warm start and never worse: every sub-problem is hinted with the current
allocation (a feasible solution, so SCIP starts with it as its incumbent;
CP-SAT also gets its cost as an upper bound) and given a time limit; if the
solver returns nothing strictly cheaper, the current allocation stands. So
the answer is always feasible and never dearer.
A last pass gives back to an order its current allocation when that costs
it no more and still fits, so no order changes for nothing.

Each sub-problem is a pure function of its data (:func:`solve_problem`:
arrays in, arrays out), which is what a Dask worker runs (:class:`DaskRunner`).
Every final allocation is re-priced by the independent evaluator
(:func:`sourcing.evaluate.evaluate`), and :meth:`BatchResult.check` re-checks
the whole answer with it: per-order cost, promise and coverage, joint stock
and capacity, and the total never above the start.

The package, top-down (each module imports only those below it and the
engine: :mod:`sourcing.model`, :mod:`sourcing.costs`, :mod:`sourcing.orders`,
:mod:`sourcing.evaluate`; never :mod:`sourcing.whatif` or :mod:`oms`, which
call it):

* :mod:`~sourcing.batch.driver`: :func:`reoptimise`, rounds of sub-problems;
* :mod:`~sourcing.batch.decompose`: who can gain, components, chunks;
* :mod:`~sourcing.batch.build`: shared stock and capacity rows, a
  sub-problem's arrays;
* :mod:`~sourcing.batch.catalogue`: every order's candidate slots and cells;
* :mod:`~sourcing.batch.runners`: in process or on Dask;
* :mod:`~sourcing.batch.problem`: a sub-problem and :func:`solve_problem`
  (SCIP or CP-SAT);
* :mod:`~sourcing.batch.instance`: the instance, settings and result types.
"""

from sourcing.batch.driver import reoptimise
from sourcing.batch.instance import (
    BACKENDS,
    BatchInstance,
    BatchOrder,
    BatchResult,
    BatchSettings,
    OrderOutcome,
    ProblemReport,
    joint_violations,
)
from sourcing.batch.problem import Problem, ProblemSolution, solve_problem
from sourcing.batch.runners import DaskRunner, LocalRunner, Runner

__all__ = [
    "BACKENDS",
    "BatchInstance",
    "BatchOrder",
    "BatchResult",
    "BatchSettings",
    "DaskRunner",
    "LocalRunner",
    "OrderOutcome",
    "Problem",
    "ProblemReport",
    "ProblemSolution",
    "Runner",
    "joint_violations",
    "reoptimise",
    "solve_problem",
]
