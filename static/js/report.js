// The usage report's chart: booked and used GPU-hours per team as side-by-side bars (uPlot), from
// the page's json_script data. The table below holds the same numbers for those who cannot see it.
(function () {
  "use strict";

  function draw() {
    var box = document.getElementById("usage-chart");
    var source = document.getElementById("usage-data");
    if (!box || !source || typeof window.uPlot !== "function") return;
    var data = JSON.parse(source.textContent);
    var uPlot = window.uPlot;
    var xs = data.teams.map(function (_, i) { return i; });
    // Two bars per team, each a third of the gap between teams, one left and one right of its tick.
    var bars = function (align) { return uPlot.paths.bars({ size: [0.35, 80], align: align }); };
    var opts = {
      width: Math.max(box.clientWidth, 280),
      height: 300,
      scales: {
        x: { time: false, range: [-0.6, xs.length - 0.4] },
        y: { range: function (u, min, max) { return [0, Math.max(max, 1) * 1.1]; } }
      },
      axes: [
        {
          // One tick per team, named.
          splits: function () { return xs; },
          values: function (u, ticks) { return ticks.map(function (t) { return data.teams[t] || ""; }); },
          grid: { show: false }
        },
        { label: "GPU-hours" }
      ],
      series: [
        { label: "team", value: function (u, i) { return i == null ? "" : data.teams[i]; } },
        { label: "booked", fill: "rgba(78,121,167,0.75)", stroke: "#4e79a7", paths: bars(-1), points: { show: false } },
        { label: "used", fill: "rgba(26,127,55,0.75)", stroke: "#1a7f37", paths: bars(1), points: { show: false } }
      ],
      legend: { live: false }
    };
    new uPlot(opts, [xs, data.booked, data.used], box);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
