"""The planners' what-if tooling: replay order streams through network variants and policies.

* :mod:`~sourcing.whatif.simulate`: the replay engine (running stock, daily
  capacity, replenishment) and the sourcing policies it compares; pure, no I/O;
* :mod:`~sourcing.whatif.scenario`: TOML scenario files, network edits, the
  order generator, and running a scenario's variants x policies;
* :mod:`~sourcing.whatif.olist`: the Olist real-data network, orders and
  historical policy;
* :mod:`~sourcing.whatif.report`: KPI tables, plots and the HTML report.

It may import the engine (the rest of :mod:`sourcing`) and
:mod:`sourcing.batch` (the ``optimiser_batch`` policy); nothing in the engine
or in batch imports it, and it never imports :mod:`oms`. Only the ``sourcing
whatif`` command (:mod:`sourcing.cli`, the entry point) reaches in from above.
"""
