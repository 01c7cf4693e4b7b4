"""Forward-looking sourcing: opportunity costs of stock and the perfect-hindsight bound.

* :mod:`sourcing.forward.fluid`: the fluid LP of expected demand until the
  next replenishment; its duals price a unit of stock at each node;
* :mod:`sourcing.forward.hindsight`: the least total cost any policy could
  reach on a replayed stream knowing every order in advance (a lower bound,
  and a clairvoyant plan that shows how tight it is);
* :mod:`sourcing.forward.lp`: sparse LPs handed to OR-Tools in one call.

It imports the engine (model, costs, evaluate, solver) and nothing of the
planners' tooling or the service.
"""
