/*
 * Behaviour shared by every page of the dashboard. Pages work without it; this makes them quicker to read and use.
 *
 * - <time datetime="..."> elements: shown relative ("3 min ago") with UTC on hover, or in the browser's local
 *   time when the person turns on the "Local time" switch (saved for the signed-in person, and in localStorage).
 *   The history charts' time ticks and hover titles (data-at, data-from/data-to) follow the same switch.
 * - [data-copy] buttons copy their value (work ids, session ids) to the clipboard.
 * - Checkbox groups for bulk selection: [data-select-all="group"] toggles every [data-select-group="group"] box,
 *   shift-click selects a range, [data-selected-count="group"] shows how many are selected, and
 *   [data-requires-selection="group"] buttons stay disabled until something is selected.
 * - [data-confirm-match="text"] inputs enable the button named by data-confirm-target only once the exact text is
 *   typed (typed confirmation before a destructive action).
 *
 * No inline scripts or handlers anywhere: the Content-Security-Policy allows scripts from this origin only.
 */
(function () {
  "use strict";

  var TIME_MODE_KEY = "dashboard.timeMode";
  var MINUTE = 60;
  var HOUR = 60 * MINUTE;
  var DAY = 24 * HOUR;

  function storedTimeMode() {
    // A signed-in page carries the person's saved choice; the browser's own memory is the fallback.
    var fromServer = document.body ? document.body.getAttribute("data-time-mode") : null;
    if (fromServer === "local" || fromServer === "relative") {
      return fromServer;
    }
    try {
      return window.localStorage.getItem(TIME_MODE_KEY) === "local" ? "local" : "relative";
    } catch (err) {
      return "relative"; // storage disabled: relative times, no preference kept
    }
  }

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (err) {
      return "";
    }
  }

  function storeTimeMode(mode) {
    try {
      window.localStorage.setItem(TIME_MODE_KEY, mode);
    } catch (err) {
      /* storage disabled: the switch still works for this page */
    }
    var body = document.body;
    if (body.hasAttribute("data-time-mode")) {
      body.setAttribute("data-time-mode", mode);
    }
    var url = body.getAttribute("data-time-preference-url");
    if (url && window.fetch) {
      window.fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), "Content-Type": "application/x-www-form-urlencoded" },
        body: "local_time=" + (mode === "local" ? "1" : "0"),
      }).catch(function () { /* kept for this page; saved next time */ });
    }
  }

  function plural(count, unit) {
    return count + " " + unit + (count === 1 ? "" : "s");
  }

  function relativeText(date, now) {
    var seconds = Math.round((now.getTime() - date.getTime()) / 1000);
    var future = seconds < 0;
    var s = Math.abs(seconds);
    var text;
    if (s < 5) {
      return "just now";
    } else if (s < MINUTE) {
      text = plural(s, "second");
    } else if (s < HOUR) {
      text = plural(Math.floor(s / MINUTE), "minute");
    } else if (s < DAY) {
      var hours = Math.floor(s / HOUR);
      var minutes = Math.floor((s % HOUR) / MINUTE);
      text = plural(hours, "hour") + (hours < 6 && minutes ? " " + plural(minutes, "minute") : "");
    } else {
      text = plural(Math.floor(s / DAY), "day");
    }
    return future ? "in " + text : text + " ago";
  }

  function utcText(date) {
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  var localFormat = null;
  function localText(date) {
    if (localFormat === null) {
      localFormat = new Intl.DateTimeFormat(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
      });
    }
    return localFormat.format(date);
  }

  function renderTimes(root) {
    var mode = storedTimeMode();
    var now = new Date();
    var times = root.querySelectorAll ? root.querySelectorAll("time[datetime]") : [];
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) {
        continue;
      }
      if (mode === "local") {
        el.textContent = localText(date);
        el.title = utcText(date) + " (" + relativeText(date, now) + ")";
      } else {
        el.textContent = relativeText(date, now);
        el.title = utcText(date);
      }
    }
    renderChartTimes(root, mode === "local");
  }

  var chartFormats = {};
  function chartText(date, kind) {
    if (!chartFormats[kind]) {
      chartFormats[kind] = new Intl.DateTimeFormat(undefined, kind === "date"
        ? { weekday: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }
        : { hour: "2-digit", minute: "2-digit" });
    }
    return chartFormats[kind].format(date);
  }

  function renderChartTimes(root, local) {
    // Server-rendered charts say UTC; with the "Local time" switch on, their ticks and titles say local time.
    if (!root.querySelectorAll) {
      return;
    }
    var ticks = root.querySelectorAll("text[data-at][data-tick]");
    for (var i = 0; i < ticks.length; i++) {
      var el = ticks[i];
      if (!el.hasAttribute("data-utc")) {
        el.setAttribute("data-utc", el.textContent);
      }
      var date = new Date(el.getAttribute("data-at"));
      el.textContent = local && !isNaN(date.getTime())
        ? chartText(date, el.getAttribute("data-tick")) : el.getAttribute("data-utc");
    }
    var axes = root.querySelectorAll("[data-time-axis]");
    for (var j = 0; j < axes.length; j++) {
      axes[j].textContent = local ? "Time (local)" : "Time (UTC)";
    }
    var titles = root.querySelectorAll("title[data-from][data-to]");
    for (var k = 0; k < titles.length; k++) {
      var title = titles[k];
      if (!title.hasAttribute("data-utc")) {
        title.setAttribute("data-utc", title.textContent);
      }
      var from = new Date(title.getAttribute("data-from"));
      var to = new Date(title.getAttribute("data-to"));
      title.textContent = local && !isNaN(from.getTime()) && !isNaN(to.getTime())
        ? chartText(from, "date") + "–" + chartText(to, "time") + ": " + title.getAttribute("data-value")
        : title.getAttribute("data-utc");
    }
  }

  function renderTimeSwitches() {
    var local = storedTimeMode() === "local";
    var switches = document.querySelectorAll("[data-time-mode-toggle]");
    for (var i = 0; i < switches.length; i++) {
      switches[i].setAttribute("aria-pressed", local ? "true" : "false");
      switches[i].hidden = false;
    }
  }

  // --- Copy to clipboard --------------------------------------------------------------------------------------

  function copyWithSelection(text) {
    // Fallback for browsers without the async clipboard (or without permission to use it).
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (err) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok;
  }

  function showCopied(button, ok) {
    var original = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", original);
    button.textContent = ok ? "Copied" : "Press Ctrl+C";
    button.classList.add("copied");
    window.setTimeout(function () {
      button.textContent = original;
      button.classList.remove("copied");
    }, 1500);
  }

  function copy(button) {
    var text = button.getAttribute("data-copy");
    if (!text) {
      return;
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { showCopied(button, true); },
        function () { showCopied(button, copyWithSelection(text)); }
      );
    } else {
      showCopied(button, copyWithSelection(text));
    }
  }

  // --- Bulk selection -----------------------------------------------------------------------------------------

  var lastChecked = {};

  function groupBoxes(group) {
    return Array.prototype.slice.call(
      document.querySelectorAll('input[type="checkbox"][data-select-group="' + CSS.escape(group) + '"]')
    ).filter(function (box) { return !box.disabled; });
  }

  function refreshGroup(group) {
    var boxes = groupBoxes(group);
    var selected = boxes.filter(function (box) { return box.checked; }).length;
    var alls = document.querySelectorAll('[data-select-all="' + CSS.escape(group) + '"]');
    for (var i = 0; i < alls.length; i++) {
      alls[i].checked = boxes.length > 0 && selected === boxes.length;
      alls[i].indeterminate = selected > 0 && selected < boxes.length;
    }
    var counts = document.querySelectorAll('[data-selected-count="' + CSS.escape(group) + '"]');
    for (var j = 0; j < counts.length; j++) {
      counts[j].textContent = String(selected);
    }
    var buttons = document.querySelectorAll('[data-requires-selection="' + CSS.escape(group) + '"]');
    for (var k = 0; k < buttons.length; k++) {
      buttons[k].disabled = selected === 0;
    }
  }

  function refreshAllGroups() {
    var seen = {};
    var nodes = document.querySelectorAll("[data-select-group], [data-select-all]");
    for (var i = 0; i < nodes.length; i++) {
      var group = nodes[i].getAttribute("data-select-group") || nodes[i].getAttribute("data-select-all");
      if (!seen[group]) {
        seen[group] = true;
        refreshGroup(group);
      }
    }
  }

  function onCheckboxClick(event, box) {
    var group = box.getAttribute("data-select-group");
    var boxes = groupBoxes(group);
    var previous = lastChecked[group];
    if (event.shiftKey && previous && previous !== box && boxes.indexOf(previous) !== -1) {
      var from = boxes.indexOf(previous);
      var to = boxes.indexOf(box);
      var lo = Math.min(from, to);
      var hi = Math.max(from, to);
      for (var i = lo; i <= hi; i++) {
        boxes[i].checked = box.checked;
      }
    }
    lastChecked[group] = box;
    refreshGroup(group);
  }

  function onSelectAll(box) {
    var group = box.getAttribute("data-select-all");
    var boxes = groupBoxes(group);
    for (var i = 0; i < boxes.length; i++) {
      boxes[i].checked = box.checked;
    }
    refreshGroup(group);
  }

  // --- Typed confirmation -------------------------------------------------------------------------------------

  function refreshConfirmations(root) {
    var inputs = (root.querySelectorAll ? root : document).querySelectorAll("[data-confirm-match]");
    for (var i = 0; i < inputs.length; i++) {
      checkConfirmation(inputs[i]);
    }
  }

  function checkConfirmation(input) {
    var target = document.querySelector(input.getAttribute("data-confirm-target") || "");
    if (target) {
      target.disabled = input.value.trim() !== input.getAttribute("data-confirm-match");
    }
  }

  // --- Wiring -------------------------------------------------------------------------------------------------

  function init(root) {
    renderTimes(root);
    renderTimeSwitches();
    refreshAllGroups();
    refreshConfirmations(root);
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) {
      return;
    }
    var toggle = target.closest("[data-time-mode-toggle]");
    if (toggle) {
      storeTimeMode(storedTimeMode() === "local" ? "relative" : "local");
      renderTimeSwitches();
      renderTimes(document);
      return;
    }
    var copyButton = target.closest("[data-copy]");
    if (copyButton) {
      event.preventDefault();
      copy(copyButton);
      return;
    }
    if (target.matches('input[type="checkbox"][data-select-all]')) {
      onSelectAll(target);
    } else if (target.matches('input[type="checkbox"][data-select-group]')) {
      onCheckboxClick(event, target);
    }
  });

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target instanceof Element && target.matches("[data-confirm-match]")) {
      checkConfirmation(target);
    }
  });

  // htmx announces every piece of content it swaps in (and the body at start) with htmx:load.
  document.addEventListener("htmx:load", function (event) {
    init(event.target instanceof Element ? event.target : document);
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }

  // Keep relative times honest on a page left open.
  window.setInterval(function () { renderTimes(document); }, 30000);

  window.addEventListener("storage", function (event) {
    if (event.key === TIME_MODE_KEY && event.newValue) {
      if (document.body.hasAttribute("data-time-mode")) {
        document.body.setAttribute("data-time-mode", event.newValue);
      }
      renderTimeSwitches();
      renderTimes(document);
    }
  });
})();
