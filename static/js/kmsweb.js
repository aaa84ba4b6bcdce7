/* kmsweb dashboard behaviour: usage charts (Chart.js) and small niceties.
   No inline scripts anywhere: the Content-Security-Policy forbids them. */
(function () {
  "use strict";
  var palette = ["#2455d6", "#1f9d8a", "#7a4fd6", "#d68a1f", "#4f8fd6", "#8a9d1f", "#9aa3b5"];
  var charts = {};
  // Open findings by severity (the Compliance page's trend chart).
  var severity = { "severity-critical": "#7a1010", "severity-high": "#b3261e", "severity-medium": "#e8833a",
                   "severity-low": "#d6b21f", "severity-informational": "#9aa3b5" };

  function label(iso, range) {
    var d = new Date(iso);
    var pad = function (n) { return String(n).padStart(2, "0"); };
    if (range === "month") return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  function draw(canvas, range) {
    if (!window.Chart) return;
    // Axis text and grid lines follow the page's (light or dark) theme.
    var css = getComputedStyle(document.documentElement);
    window.Chart.defaults.color = css.getPropertyValue("--muted").trim() || "#5d6678";
    window.Chart.defaults.borderColor = css.getPropertyValue("--line").trim() || "#dfe3ea";
    var url = new URL(canvas.dataset.url, window.location.origin);
    url.searchParams.set("range", range);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) {
        var op = 0;
        // Every request counted in data.total is a bar in one stack (successes per
        // operation, then errors, then denials), so the visible height of each column
        // is its requests and the columns add up to the printed total. Only an
        // alarm's threshold is a line, in a stack of its own.
        var datasets = data.datasets.map(function (ds) {
          if (ds.kind === "threshold") {
            return { type: "line", label: ds.label, data: ds.data, borderColor: "#b3261e", backgroundColor: "#b3261e",
                     borderWidth: 2, pointRadius: 0, borderDash: [6, 4], stack: "threshold" };
          }
          var c = severity[ds.kind] || (ds.kind === "denied" ? "#b3261e" : ds.kind === "error" ? "#e8833a" : palette[op++ % palette.length]);
          return { type: "bar", label: ds.label, data: ds.data, backgroundColor: c, stack: "requests" };
        });
        if (charts[canvas.id]) charts[canvas.id].destroy();
        charts[canvas.id] = new window.Chart(canvas, {
          data: { labels: data.labels.map(function (l) { return label(l, data.range); }), datasets: datasets },
          options: {
            responsive: true, maintainAspectRatio: false, animation: false,
            interaction: { mode: "index", intersect: false },
            scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
            plugins: { legend: { position: "bottom" } }
          }
        });
        canvas.dataset.range = data.range;
        canvas.dataset.total = String(data.total);
        canvas.dataset.rendered = "true";
        var total = document.querySelector('[data-chart-total="' + canvas.id + '"]');
        if (total) total.textContent = data.totalText || data.total + " requests in this range.";
        document.querySelectorAll('[data-chart="' + canvas.id + '"]').forEach(function (b) {
          b.classList.toggle("primary", b.dataset.chartRange === data.range);
        });
      })
      .catch(function (err) { canvas.dataset.error = String(err); });
  }

  function drawAll(root) {
    root.querySelectorAll("canvas[data-url]").forEach(function (c) { draw(c, c.dataset.range || "day"); });
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-chart-range]");
    if (!button) return;
    var canvas = document.getElementById(button.dataset.chart);
    if (canvas) draw(canvas, button.dataset.chartRange);
  });
  ["keyChanged", "keyRotated"].forEach(function (name) {
    document.body && document.body.addEventListener(name, function () { drawAll(document); });
  });
  // Below 900 px the sidebar collapses into a top bar; its menu button opens it.
  document.addEventListener("click", function (e) {
    var toggle = e.target.closest("#nav-toggle");
    if (!toggle) return;
    var open = document.getElementById("sidebar").classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var bar = document.getElementById("loading-bar"); if (bar) bar.classList.add("htmx-request");
  });
  document.addEventListener("htmx:afterRequest", function () {
    var bar = document.getElementById("loading-bar"); if (bar) bar.classList.remove("htmx-request");
  });
})();
