// A booking's page: the training job's status, epoch, checkpoint, chart (uPlot) and log, refreshed
// from the page's JSON endpoint (data-job-url) while the job can still change; polling stops once it
// has finished.
(function () {
  "use strict";
  var LIVE_MS = 5000, WAITING_MS = 30000;
  var LOSSES = [
    ["train/box_loss", "box loss", "#1f5fbf"],
    ["train/cls_loss", "class loss", "#b42318"],
    ["train/dfl_loss", "DFL loss", "#8a4b00"]
  ];
  var MAPS = [
    ["metrics/mAP50(B)", "mAP50", "#1a7f37"],
    ["metrics/mAP50-95(B)", "mAP50-95", "#53389e"]
  ];

  var section, chartBox, chart = null, shownEpochs = -1;

  function text(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) el.textContent = value;
  }

  function chartData(series) {
    var data = [series.epoch || []];
    LOSSES.concat(MAPS).forEach(function (s) { data.push(series[s[0]] || []); });
    return data;
  }

  function chartOptions() {
    var opts = {
      width: Math.max(chartBox.clientWidth, 280),
      height: 260,
      scales: { x: { time: false }, loss: { auto: true }, map: { range: [0, 1] } },
      axes: [
        { label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] },
        { scale: "loss", label: "loss" },
        { scale: "map", label: "mAP", side: 1, grid: { show: false } }
      ],
      series: [{ label: "epoch" }],
      // The legend names the lines; values show on hover (a live legend reads "--" until then).
      legend: { live: false }
    };
    LOSSES.forEach(function (s) {
      opts.series.push({ label: s[1], scale: "loss", stroke: s[2], width: 2, spanGaps: true });
    });
    MAPS.forEach(function (s) {
      opts.series.push({ label: s[1], scale: "map", stroke: s[2], width: 2, dash: [6, 4], spanGaps: true });
    });
    return opts;
  }

  function drawChart(series) {
    var epochs = (series.epoch || []).length;
    if (epochs === shownEpochs || typeof window.uPlot !== "function") return;
    shownEpochs = epochs;
    text("chart-summary", epochs ? epochs + (epochs === 1 ? " epoch" : " epochs") + " recorded." : "No epoch finished yet.");
    if (!epochs) return;
    if (chart) {
      chart.setData(chartData(series));
    } else {
      chart = new window.uPlot(chartOptions(), chartData(series), chartBox);
    }
  }

  function showLog(log) {
    var pre = document.getElementById("job-log");
    if (!pre || pre.textContent === log) return;
    var atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.textContent = log;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  // The checkpoint's link and epoch, and "resume", as the page first showed them (detail.html).
  function showCheckpoint(state) {
    var box = document.getElementById("job-checkpoint");
    var shown = [state.checkpoint, state.checkpoint_epoch, state.resumable].join();
    // Rebuilt only when it changed, so that a link with the focus keeps it between refreshes.
    if (!box || box.getAttribute("data-shown") === shown) return;
    box.setAttribute("data-shown", shown);
    box.textContent = "";
    if (state.checkpoint) {
      var download = document.createElement("a");
      download.href = box.getAttribute("data-download-url");
      download.setAttribute("download", "");
      download.textContent = "Download checkpoint" + (state.checkpoint_epoch ? " (epoch " + state.checkpoint_epoch + ")" : "");
      box.appendChild(download);
    } else {
      box.appendChild(document.createTextNode("none yet"));
    }
    if (state.resumable) {
      var resume = document.createElement("a");
      resume.href = box.getAttribute("data-resume-url");
      resume.textContent = "Resume in a new booking";
      box.appendChild(document.createTextNode(" · "));
      box.appendChild(resume);
    }
  }

  function show(state) {
    var status = document.getElementById("job-status");
    if (status) {
      status.textContent = state.status_display;
      status.className = "status status-" + state.status;
    }
    text("job-epoch", "epoch " + state.epoch + " of " + state.epochs);
    text("job-reason", state.reason || "—");
    showCheckpoint(state);
    drawChart(state.series || {});
    showLog(state.log || "");
  }

  function schedule(state) {
    if (state.finished) return;
    window.setTimeout(refresh, state.live ? LIVE_MS : WAITING_MS);
  }

  function refresh() {
    fetch(section.getAttribute("data-job-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (state) { show(state); schedule(state); })
      .catch(function () {
        // A network hiccup or a restart: try again later rather than give up on the page.
        window.setTimeout(refresh, WAITING_MS);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    section = document.getElementById("job");
    chartBox = document.getElementById("job-chart");
    var initial = document.getElementById("job-state");
    if (!section || !chartBox || !initial) return;
    var state = JSON.parse(initial.textContent);
    show(state);
    var pre = document.getElementById("job-log");
    if (pre) pre.scrollTop = pre.scrollHeight;
    schedule(state);
    window.addEventListener("resize", function () {
      if (chart) chart.setSize({ width: Math.max(chartBox.clientWidth, 280), height: 260 });
    });
  });
})();
