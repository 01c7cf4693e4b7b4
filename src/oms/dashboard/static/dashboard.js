// OMS dashboard: follows the store without a reload, and draws the charts.
// Polls /api/changes; when its mark moves (or every 30 s) it fires "oms:changed" on <body>,
// which the htmx regions listen for (hx-trigger="oms:changed from:body") to fetch their
// fragment again. Quotes do not move that mark (checkout quotes all the time): the reply's
// own "quotes" mark fires "oms:quotes" instead, at most every five polls, which only the
// overview's conversion card listens for. Charts are drawn from <script type="application/json" class="chart-data">
// blocks, on load and after every swap. No inline script anywhere (the CSP forbids it).
(function () {
  "use strict";
  var body = document.body;
  var pollMs = Math.max(1000, Number(body.getAttribute("data-poll") || "3") * 1000);
  var FORCE_MS = 30000;
  var QUOTES_MS = Math.max(2000, 5 * pollMs);
  var mark = null;
  var quotes = null;
  var quotesMoved = false;
  var lastRefresh = Date.now();
  var lastQuotes = Date.now();
  var live = document.getElementById("live");

  function say(text) { if (live) { live.textContent = text; } }

  function check() {
    if (document.hidden || !window.fetch || location.pathname === "/login") { return; }
    fetch("/api/changes", { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
          return null;
        }
        return r.ok ? r.json() : null;
      })
      .then(function (data) {
        if (!data) { return; }
        var now = Date.now();
        if (quotes !== null && data.quotes !== quotes) { quotesMoved = true; }
        quotes = data.quotes;
        if ((mark !== null && data.mark !== mark) || now - lastRefresh > FORCE_MS) {
          lastRefresh = now;
          lastQuotes = now;
          quotesMoved = false;  // every part, the conversion card too, is fetched again
          body.dispatchEvent(new CustomEvent("oms:changed"));
        } else if (quotesMoved && now - lastQuotes >= QUOTES_MS) {
          lastQuotes = now;
          quotesMoved = false;
          body.dispatchEvent(new CustomEvent("oms:quotes"));
        }
        mark = data.mark;
        say("live · checked " + new Date(now).toLocaleTimeString());
      })
      .catch(function () { say("offline · retrying"); });
  }

  function draw(root) {
    if (!window.Chart) { return; }
    var blocks = root.querySelectorAll ? root.querySelectorAll("script.chart-data") : [];
    Array.prototype.forEach.call(blocks, function (block) {
      var spec;
      try { spec = JSON.parse(block.textContent); } catch (e) { return; }
      var scope = block.parentNode;
      Object.keys(spec.charts).forEach(function (key) {
        var canvas = scope.querySelector('canvas[data-chart="' + key + '"]');
        if (!canvas) { return; }
        var old = window.Chart.getChart(canvas);
        if (old) { old.destroy(); }
        var c = spec.charts[key];
        new window.Chart(canvas, {
          type: c.type,
          data: {
            labels: spec.labels,
            datasets: c.datasets.map(function (d) {
              return {
                label: d.label, data: d.data, borderColor: d.color, backgroundColor: d.color,
                borderWidth: c.type === "line" ? 2 : 0, pointRadius: c.type === "line" ? 1.5 : 0, tension: 0.2
              };
            })
          },
          options: {
            animation: false, responsive: true, maintainAspectRatio: false,
            interaction: { mode: "index", intersect: false },
            plugins: { legend: { position: "bottom", labels: { boxWidth: 10, font: { size: 11 } } } },
            scales: {
              x: { stacked: !!c.stacked, ticks: { maxRotation: 0, autoSkipPadding: 8, font: { size: 10 } } },
              y: { stacked: !!c.stacked, beginAtZero: true, ticks: { font: { size: 10 } } }
            }
          }
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    draw(document);
    check();
    window.setInterval(check, pollMs);
  });
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { check(); } });
  body.addEventListener("htmx:afterSwap", function (e) { draw(e.detail.target); });
})();
