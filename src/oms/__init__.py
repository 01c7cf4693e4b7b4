"""The order management service around the sourcing engine (gRPC, store, jobs).

* the servicers (:mod:`oms.checkout`, :mod:`oms.fulfilment`, :mod:`oms.inventory`,
  with :mod:`oms.resourcing` and :mod:`oms.receiving`) and the server that hosts
  them (:mod:`oms.server`, :mod:`oms.interceptors`, :mod:`oms.status`);
* the store (:mod:`oms.store`: one repository per aggregate; :mod:`oms.schema`,
  :mod:`oms.migrations`), which never imports the servicers above it;
* the jobs (:mod:`oms.reoptimise`, :mod:`oms.reprice`), the CLI (:mod:`oms.cli`)
  and the operators' dashboard (:mod:`oms.dashboard`, read-side views apart).

``oms`` may import the ``sourcing`` engine, batch and forward packages; ``sourcing``
never imports ``oms`` (the import contracts in ``pyproject.toml``).
"""
