/* Twins results: charts (Chart.js, vendored) and small enhancements. Data comes from the page's
 * <script type="application/json" id="chart-data"> element, never from HTML strings. */
(function () {
  "use strict";
  var body = document.body;
  var airflowRoot = body.getAttribute("data-airflow-root") || "";
  var COLORS = ["#3182ce", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#718096", "#b7791f"];

  function readData() {
    var el = document.getElementById("chart-data");
    return el ? JSON.parse(el.textContent) : null;
  }

  function shortTime(iso) {
    return iso ? iso.slice(0, 16).replace("T", " ") : "";
  }

  function baseOptions(yTitle) {
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false, // drawn at once: screenshots and tests see the final picture
      interaction: { mode: "nearest", intersect: false },
      scales: { y: { beginAtZero: true, title: { display: true, text: yTitle } } },
      plugins: { legend: { position: "bottom" } }
    };
  }

  function markChart(canvas, chart) {
    canvas.setAttribute("data-drawn", "true");
    canvas.chart = chart;
  }

  /* A run and its baseline can be an order of magnitude apart (a CPU's 3 img/s beside the recipe's GPU 62-77):
   * on a linear axis the smaller bars are a few pixels high. Past LOG_SPREAD the axis is logarithmic, from the
   * power of ten below the smallest bar, so every bar has a readable height; its title says so. */
  var LOG_SPREAD = 10;

  function runScale(values) {
    var positive = values.filter(function (v) { return typeof v === "number" && v > 0; });
    if (positive.length < 2) return null;
    var low = Math.min.apply(null, positive), high = Math.max.apply(null, positive);
    if (high / low < LOG_SPREAD) return null;
    return {
      type: "logarithmic",
      min: Math.pow(10, Math.floor(Math.log10(low))),
      title: { display: true, text: "img/s (log scale: bars differ up to " + Math.round(high / low) + "x)" },
      // Labels at 1, 2 and 5 times a power of ten only: Chart.js labels every gridline, which crowd at the top,
      // and skipping labels on its own it drops some of these too.
      ticks: {
        autoSkip: false,
        callback: function (value) {
          var mantissa = value / Math.pow(10, Math.floor(Math.log10(value) + 1e-9));
          var round = [1, 2, 5].some(function (k) { return Math.abs(mantissa - k) < 1e-6; });
          return round ? String(Number(value.toPrecision(3))) : "";
        }
      }
    };
  }

  function runChart(data) {
    var canvas = document.getElementById("chart");
    if (!canvas) return;
    var labels = data.rows.map(function (r) { return "bs" + r.batch_size; });
    var sets = [{ label: data.label, data: data.rows.map(function (r) { return r.throughput; }), backgroundColor: COLORS[0] }];
    if (data.baseline_label !== "none") {
      sets.push({ label: data.baseline_label, data: data.rows.map(function (r) { return r.baseline; }), backgroundColor: "#a0aec0" });
    }
    var options = baseOptions("img/s");
    var log = runScale(sets.reduce(function (all, set) { return all.concat(set.data); }, []));
    if (log) options.scales.y = log;
    options.plugins.tooltip = {
      callbacks: {
        afterBody: function (items) {
          var r = data.rows[items[0].dataIndex];
          return r.ratio === null || r.ratio === undefined ? [] : ["ratio " + r.ratio.toFixed(2) + " of " + data.baseline_label];
        }
      }
    };
    markChart(canvas, new Chart(canvas, { type: "bar", data: { labels: labels, datasets: sets }, options: options }));
    linkMappedTasks(data);
  }

  var ACCEPTED = "#6b46c1", EXCLUDED = "#a0aec0";

  /* People's marks on the history: a run accepted as the new normal (a change point: the reference window starts
   * again there) is a triangle with a dashed vertical line; an excluded run (out of every reference) a grey cross. */
  function changePointLines(indices) {
    return {
      id: "twinsChangePoints",
      afterDatasetsDraw: function (chart) {
        var x = chart.scales.x, area = chart.chartArea, ctx = chart.ctx;
        ctx.save();
        ctx.strokeStyle = ACCEPTED;
        ctx.lineWidth = 1.5;
        ctx.setLineDash([6, 4]);
        indices.forEach(function (i) {
          var px = x.getPixelForValue(i);
          ctx.beginPath();
          ctx.moveTo(px, area.top);
          ctx.lineTo(px, area.bottom);
          ctx.stroke();
        });
        ctx.restore();
      }
    };
  }

  function historyChart(data) {
    var canvas = document.getElementById("chart");
    if (!canvas) return;
    var labels = data.points.map(function (p) { return shortTime(p.recorded_at); });
    var changes = [];
    data.points.forEach(function (p, i) { if (p.accepted) changes.push(i); });
    var radius = data.points.map(function (p) {
      return p.accepted ? 8 : p.excluded ? 7 : p.regressed || p.reference ? 6 : 2;
    });
    var style = data.points.map(function (p) { return p.accepted ? "triangle" : p.excluded ? "crossRot" : "circle"; });
    var fill = function (color) {
      return data.points.map(function (p) {
        return p.accepted ? ACCEPTED : p.excluded ? EXCLUDED : p.regressed ? "#c53030" : p.reference ? "#1a365d" : color;
      });
    };
    var border = function (color) {
      return data.points.map(function (p) { return p.accepted ? ACCEPTED : p.excluded ? EXCLUDED : color; });
    };
    var sets = data.batch_sizes.map(function (bs, i) {
      var color = COLORS[i % COLORS.length];
      return {
        label: "bs" + bs,
        data: data.points.map(function (p) { var v = p.throughput[String(bs)]; return v === undefined ? null : v; }),
        borderColor: color, backgroundColor: color, pointBackgroundColor: fill(color), pointBorderColor: border(color),
        pointRadius: radius, pointStyle: style, spanGaps: true, tension: 0
      };
    });
    var tooltip = {
      callbacks: {
        afterBody: function (items) {
          var p = data.points[items[0].dataIndex];
          var notes = [p.run_key];
          if (p.regressed) notes.push("regression check failed");
          if (p.reference) notes.push("in the reference window (bs " + p.reference_batch_sizes.join(", ") + ")");
          if (p.mark) {
            notes.push((p.accepted ? "accepted as the new normal" : "excluded from references") + " by " + p.mark.by +
              " at " + shortTime(p.mark.at) + " UTC: " + p.mark.why);
          }
          return notes;
        }
      }
    };
    var options = baseOptions("img/s");
    options.plugins.tooltip = tooltip;
    canvas.setAttribute("data-change-points", JSON.stringify(changes.map(function (i) { return data.points[i].run_key; })));
    markChart(canvas, new Chart(canvas, {
      type: "line", data: { labels: labels, datasets: sets }, options: options, plugins: [changePointLines(changes)]
    }));
    var top1Canvas = document.getElementById("chart-top1");
    if (top1Canvas) {
      var top1Options = baseOptions("top-1 %");
      top1Options.scales.y.beginAtZero = false;
      top1Options.plugins.tooltip = tooltip;
      markChart(top1Canvas, new Chart(top1Canvas, {
        type: "line",
        data: { labels: labels, datasets: [{
          label: "top-1 %", data: data.points.map(function (p) { return p.top1; }),
          borderColor: "#38a169", backgroundColor: "#38a169", pointBackgroundColor: fill("#38a169"),
          pointBorderColor: border("#38a169"), pointRadius: radius, pointStyle: style, spanGaps: true
        }] },
        options: top1Options,
        plugins: [changePointLines(changes)]
      }));
    }
  }

  function compareChart(data) {
    var canvas = document.getElementById("chart");
    if (!canvas) return;
    markChart(canvas, new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.batch_sizes.map(function (bs) { return "bs" + bs; }),
        datasets: [
          { label: "A " + data.a, data: data.throughput_a, backgroundColor: "#a0aec0" },
          { label: "B " + data.b, data: data.throughput_b, backgroundColor: COLORS[0] }
        ]
      },
      options: baseOptions("img/s")
    }));
  }

  /* Each batch size ran as one instance of the mapped tasks; its map index is the position in the run's
   * (unsorted) batch-size list, which the results database does not keep. Ask Airflow's REST API (same origin,
   * same login cookie) which instance rendered which batch_size, and point the links at it. Left as the
   * mapped-task list when that is not possible (no permission, run deleted). */
  function linkMappedTasks(data) {
    if (!data.dag_id) return;
    data.batch_tasks.forEach(function (taskId) {
      var url = airflowRoot + "/api/v2/dags/" + encodeURIComponent(data.dag_id) + "/dagRuns/" +
        encodeURIComponent(data.run_key) + "/taskInstances/" + encodeURIComponent(taskId) + "/listMapped?limit=1000";
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (payload) {
          if (!payload || !payload.task_instances) return;
          payload.task_instances.forEach(function (ti) {
            var bs = ti.rendered_fields && ti.rendered_fields.batch_size;
            if (bs === undefined || bs === null) return;
            var selector = 'a.task-log[data-task-id="' + CSS.escape(taskId) + '"][data-batch-size="' + CSS.escape(String(bs)) + '"]';
            document.querySelectorAll(selector).forEach(function (a) {
              var href = a.getAttribute("href").replace(/\/mapped$/, "/mapped/" + encodeURIComponent(String(ti.map_index)));
              a.setAttribute("href", href);
              a.setAttribute("data-map-index", String(ti.map_index));
            });
          });
        })
        .catch(function () { /* keep the list links */ });
    });
  }

  /* "Accept as the new normal" / "Exclude from references" on the run page: POST api/mark with the reason, then
   * show the page again with the mark. The WRITE header (its name in the form's data-header) is what tells the
   * server the request comes from these pages, not from another site's form riding on the login cookie. */
  function markForm() {
    var form = document.getElementById("mark-form");
    if (!form) return;
    var error = document.getElementById("mark-error");
    var buttons = Array.prototype.slice.call(form.querySelectorAll("button"));
    function busy(on) { buttons.forEach(function (b) { b.disabled = on; }); }
    function problem(body, status) {
      var detail = body && body.detail;
      if (Array.isArray(detail)) {
        return detail.map(function (d) { return (d.loc || []).slice(1).join(".") + ": " + d.msg; }).join("; ");
      }
      return detail ? String(detail) : "HTTP " + status;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var action = event.submitter ? event.submitter.getAttribute("data-action") : null;
      var why = document.getElementById("mark-why").value.trim();
      if (!action) return;
      if (!why) { error.textContent = "Say why: the next person reading the history needs it."; return; }
      error.textContent = "";
      busy(true);
      var headers = { "Content-Type": "application/json", Accept: "application/json" };
      headers[form.getAttribute("data-header")] = "twins-results";
      fetch(body.getAttribute("data-base") + "/api/mark", {
        method: "POST",
        credentials: "same-origin",
        headers: headers,
        body: JSON.stringify({ run_key: form.getAttribute("data-run-key"), action: action, why: why })
      })
        .then(function (r) {
          return r.json().catch(function () { return null; }).then(function (answer) {
            if (r.ok) { window.location.reload(); return; }
            error.textContent = "Not saved: " + problem(answer, r.status);
            busy(false);
          });
        })
        .catch(function (exc) { error.textContent = "Not saved: " + exc; busy(false); });
    });
  }

  function compareFromRuns() {
    var form = document.getElementById("compare-form");
    if (!form) return;
    var button = document.getElementById("compare-button");
    var picks = [];
    form.addEventListener("change", function (event) {
      var box = event.target;
      if (!box.classList || !box.classList.contains("pick")) return;
      picks = picks.filter(function (p) { return p !== box; });
      if (box.checked) picks.push(box);
      while (picks.length > 2) { picks.shift().checked = false; }
      button.disabled = picks.length !== 2;
      if (picks.length === 2) {
        // The list is newest first: the lower row is the older run, A.
        var rows = Array.prototype.slice.call(form.querySelectorAll("input.pick"));
        var sorted = picks.slice().sort(function (x, y) { return rows.indexOf(y) - rows.indexOf(x); });
        document.getElementById("compare-a").value = sorted[0].value;
        document.getElementById("compare-b").value = sorted[1].value;
      }
    });
  }

  /* Links into the Airflow UI (DAG run, task logs) are real <a href target="_top">: opened on their own, or in a
   * new tab, they navigate as usual. Inside the Airflow UI this page is in an iframe sandboxed WITHOUT
   * allow-top-navigation, so the browser refuses such a link ("Unsafe attempt to initiate navigation").
   * The frame is same-origin (allow-same-origin), so instead of navigating the top window we move the UI's
   * router there: push the URL onto the top window's history and tell React Router, which follows popstate,
   * to render it. The state has React Router's shape ({usr, key, idx}), so Back returns here. */
  function topRouter() {
    if (window.top === window) return null; // not framed: the link's own navigation works
    var frame = window.frameElement; // null when the parent is another origin
    if (!frame) return null;
    var sandbox = frame.getAttribute("sandbox");
    if (sandbox === null || /(^|\s)allow-top-navigation(\s|$)/.test(sandbox)) return null;
    return window.top;
  }

  function followInAirflow(event) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var link = event.target && event.target.closest ? event.target.closest('a[target="_top"][href]') : null;
    if (!link) return;
    var top = topRouter();
    if (!top) return;
    var url = new URL(link.href, document.baseURI);
    if (url.origin !== top.location.origin) return;
    event.preventDefault();
    var state = top.history.state || {};
    var idx = typeof state.idx === "number" ? state.idx + 1 : 0;
    top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: idx }, "", url.pathname + url.search + url.hash);
    top.dispatchEvent(new top.PopStateEvent("popstate", { state: top.history.state }));
  }

  function start() {
    compareFromRuns();
    markForm();
    var data = readData();
    if (!data || typeof Chart === "undefined") return;
    if (data.kind === "run") runChart(data);
    else if (data.kind === "history") historyChart(data);
    else if (data.kind === "compare") compareChart(data);
  }

  // At once, not on DOMContentLoaded: the links are already there. The mark tells tests (and anyone looking)
  // that a click now goes through followInAirflow.
  document.addEventListener("click", followInAirflow);
  body.setAttribute("data-links", "airflow-router");
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
