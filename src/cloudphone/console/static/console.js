/* cloudphone console: the few behaviours htmx does not give (no inline script: CSP). */
(function () {
  "use strict";

  /* Live refresh pauses while the tab is hidden, and catches up when it is shown again. */
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (document.hidden && elt.hasAttribute("data-poll")) {
      event.preventDefault();
      document.body.dataset.pollPaused = "true";
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) return;
    delete document.body.dataset.pollPaused;
    refreshAll();
  });
  function refreshAll() {
    document.querySelectorAll("[data-poll]").forEach(function (elt) {
      htmx.trigger(elt, "refresh");
    });
  }

  /* Live refresh never replaces a region from under someone working in it: while a
     confirmation is open, or a field of the region has the focus, its polls are held (the
     region says so with data-poll-held) and it catches up once the dialog closes or the field
     loses the focus. A refresh keeps the focus on the action button that had it. */
  function inUse(region) {
    if (document.querySelector("dialog[open]")) return true;
    var active = document.activeElement;
    return !!active && region.contains(active) && active.matches("input, select, textarea");
  }
  function polled(event) {
    var config = event.detail.requestConfig;
    var elt = (config && config.elt) || event.detail.elt;
    return elt && elt.hasAttribute && elt.hasAttribute("data-poll") ? elt : null;
  }
  function hold(region) {
    if (!inUse(region)) return false;
    region.dataset.pollHeld = "true";
    return true;
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var region = polled(event);
    if (region && !document.hidden && hold(region)) event.preventDefault();
  });
  var focusedAction = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var region = polled(event);
    if (!region) return;
    if (hold(region)) {
      event.detail.shouldSwap = false;
      return;
    }
    var active = document.activeElement;
    focusedAction = active && region.contains(active) && active.dataset.action
      ? active.dataset.action : null;
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!focusedAction) return;
    var button = document.querySelector('[data-action="' + focusedAction + '"]');
    focusedAction = null;
    if (button) button.focus();
  });
  function catchUp() {
    if (document.querySelector("dialog[open]")) return;
    document.querySelectorAll("[data-poll-held]").forEach(function (region) {
      if (inUse(region)) return;
      delete region.dataset.pollHeld;
      htmx.trigger(region, "refresh");
    });
  }
  document.addEventListener("close", function () { setTimeout(catchUp, 0); }, true);
  document.addEventListener("focusout", function () { setTimeout(catchUp, 0); });

  /* Confirmation dialogs: a button names its <dialog>; the dialog's form posts with htmx. */
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.dialog);
      if (dialog) {
        event.preventDefault();
        dialog.showModal();
      }
      return;
    }
    var closer = event.target.closest("[data-close]");
    if (closer) {
      event.preventDefault();
      closer.closest("dialog").close();
      return;
    }
    var copier = event.target.closest("[data-copy]");
    if (copier) copy(copier);
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var dialog = event.detail.elt.closest && event.detail.elt.closest("dialog");
    if (dialog && dialog.open) {
      dialog.close();
      var form = dialog.querySelector("form");
      if (form) form.reset();
    }
  });

  /* An action's answer always shows in place, a 503 included (the provider did not answer);
     a poll's 5xx is not swapped, so the page stays as it was and the next poll retries. */
  document.addEventListener("htmx:beforeSwap", function (event) {
    var config = event.detail.requestConfig;
    var from = config && config.elt;
    if (event.detail.xhr.status === 503 && from && from.closest && from.closest("dialog")) {
      event.detail.shouldSwap = true;
    }
  });

  /* After an action, keyboard users land on its result. Open <details> survive a refresh. */
  var openDetails = [];
  document.addEventListener("htmx:beforeSwap", function (event) {
    openDetails = Array.prototype.map.call(
      event.detail.target.querySelectorAll("details[open][id]"),
      function (d) { return d.id; }
    );
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    openDetails.forEach(function (id) {
      var d = document.getElementById(id);
      if (d) d.open = true;
    });
    var result = document.querySelector("[data-result][data-fresh]");
    if (result) {
      result.removeAttribute("data-fresh");
      result.focus();
    }
    drawCharts();
    refreshTimes();
  });

  /* Copy an id to the clipboard. */
  function copy(button) {
    var text = button.dataset.copy;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.dataset.copied = "true";
      setTimeout(function () {
        button.textContent = label;
        delete button.dataset.copied;
      }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    }
  }

  /* Relative times ("3 min ago") stay true between refreshes. */
  function span(seconds) {
    var units = [[86400, "d"], [3600, "h"], [60, "min"]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][0]) return Math.floor(seconds / units[i][0]) + " " + units[i][1];
    }
    return Math.floor(seconds) + " s";
  }
  function refreshTimes() {
    var now = Date.now();
    document.querySelectorAll("time[data-relative]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (isNaN(at)) return;
      var seconds = (now - at) / 1000;
      if (Math.abs(seconds) < 1) { t.textContent = "just now"; return; }
      t.textContent = seconds < 0 ? "in " + span(-seconds) : span(seconds) + " ago";
    });
  }
  setInterval(refreshTimes, 15000);

  /* The overview's charts (uPlot), drawn from the JSON the page embeds. */
  var charts = [];
  function drawCharts() {
    var source = document.getElementById("activity-data");
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    if (!source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source.textContent);
    var runs = document.getElementById("chart-runs");
    var failure = document.getElementById("chart-failure");
    var axis = { stroke: "#475467", grid: { stroke: "#eaecf0" }, ticks: { stroke: "#eaecf0" } };
    var size = function (el) {
      return {
        width: Math.max(el.clientWidth, 280),
        height: 180,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      };
    };
    if (runs) {
      charts.push(new uPlot(Object.assign(size(runs), {
        legend: { show: true, live: false },
        scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 4)]; } } },
        axes: [axis, axis],
        series: [
          {},
          { label: "started", stroke: "#1570ef", width: 2, fill: "rgba(21,112,239,0.08)" },
          { label: "finished", stroke: "#079455", width: 2, dash: [6, 3] },
        ],
      }), [data.t, data.started, data.finished], runs));
    }
    if (failure) {
      charts.push(new uPlot(Object.assign(size(failure), {
        legend: { show: true, live: false },
        scales: { x: { time: true }, y: { range: [0, 100] } },
        axes: [axis, Object.assign({}, axis, { values: function (u, v) { return v.map(function (x) { return x + " %"; }); } })],
        series: [
          {},
          { label: "not completed", stroke: "#d92d20", width: 2, spanGaps: false, points: { show: true, size: 4 } },
        ],
      }), [data.t, data.failure], failure));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    refreshTimes();
  });
  var resizing;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(drawCharts, 200);
  });
})();
