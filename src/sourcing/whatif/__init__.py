"""The planners' what-if tooling: replay order streams through network variants and policies.

* :mod:`~sourcing.whatif.simulate`: the replay engine (running stock, daily
  capacity, replenishment) and the sourcing policies it compares; pure, no I/O;
* :mod:`~sourcing.whatif.scenario`: TOML scenario files, network edits, the
  order generator, and running a scenario's variants x policies;
* :mod:`~sourcing.whatif.toml_reading`: the scenario file's tables, with typed
  getters whose errors name the file and key;
* :mod:`~sourcing.whatif.olist`: the Olist real-data network, orders and
  historical policy;
* :mod:`~sourcing.whatif.report`: KPI tables, plots and the HTML report;
* :mod:`~sourcing.whatif.forward`: the forward-looking policies
  (``optimiser_forward``, ``optimiser_forward_batch``), registered on import;
* :mod:`~sourcing.whatif.sweep`: replays as tasks, serially or on Dask.

It may import the engine (the rest of :mod:`sourcing`),
:mod:`sourcing.batch` (the ``optimiser_batch`` policy) and
:mod:`sourcing.forward` (forward prices, the perfect-hindsight bound); nothing in the engine
or in batch imports it, and it never imports :mod:`oms`. Only the ``sourcing
whatif`` command (:mod:`sourcing.cli`, the entry point) reaches in from above.
"""

# The forward-looking policies register themselves with the replay's built-ins.
from sourcing.whatif import forward as _forward  # noqa: F401
