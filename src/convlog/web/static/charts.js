// convlog serve: draws the Usage and Health pages' charts with the vendored Chart.js
// (served from the package; the CSP allows scripts from this origin only, none inline).
// Each <canvas data-chart="ID"> reads its Chart.js config from the JSON in
// <script type="application/json" id="ID"> (written by the server with tojson, so no
// recorded text can end the script element); its figures are also in the table beside it.
"use strict";
(function () {
  function draw(canvas) {
    const source = document.getElementById(canvas.dataset.chart);
    if (!source || Chart.getChart(canvas)) return;
    const config = JSON.parse(source.textContent);
    config.options = Object.assign({
      animation: false, // drawn at once: a screenshot or a test sees the finished chart
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { display: config.data.datasets.length > 1 } },
    }, config.options || {});
    new Chart(canvas, config);
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (typeof Chart === "undefined") return; // the tables still hold every figure
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  });
})();
