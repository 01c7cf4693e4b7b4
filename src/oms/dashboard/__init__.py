"""The operators' dashboard: a read-only web view of the store (issue 17).

* :mod:`oms.dashboard.app`: the Starlette app (routes and middleware);
* :mod:`oms.dashboard.pages`, :mod:`oms.dashboard.login`: the handlers (pages, htmx
  fragments, JSON; signing in), over :mod:`oms.dashboard.site` (store, templates,
  clock), :mod:`oms.dashboard.params` (query parameters) and
  :mod:`oms.dashboard.render` (template filters, chart series, the node map);
* :mod:`oms.dashboard.auth`: login, the signed session cookie, security headers;
* :mod:`oms.dashboard.views`: the read-side SQL every figure comes from, a module a page;
* :mod:`oms.dashboard.config`: settings and tokens;
* :mod:`oms.dashboard.process`: running it beside ``oms serve`` or alone;
* :mod:`oms.dashboard.demo`: demo orders for a fresh store, through the real checkout.

Templates and static files (htmx, Chart.js, the style sheet) ship in the package.
"""
