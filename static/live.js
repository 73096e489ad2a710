/*
 * Live numbers: how old they are, and whether they can be trusted.
 *
 * The htmx websocket extension swaps the server's out-of-band fragments in by id; this file only reads them:
 *
 * - [data-live] regions carry data-live-at (when their numbers were read), data-live-interval (the feed's
 *   interval) and, when the upstream cannot be read, data-stale-since / data-stale-reason / data-stale-request-id.
 *   Their [data-live-age] element says "Updated 4 s ago".
 * - [data-age-since] elements count up ("3 min 12 s") between updates: the age of the oldest queued item.
 * - [data-live-status] is the page's badge. It stays hidden while the socket is open and every region is fresh;
 *   otherwise it says what is wrong and since when: the connection dropped (the extension reconnects, with
 *   backoff), the upstream fails (why, and the request-id), or no update came for three intervals.
 * - [data-clock] shows the time in its data-time-zone (the wall display); #wall-reload[data-reload], sent when the
 *   list of environments changes, makes a wall display load itself again.
 *
 * Updates replace text only: a page left open for days keeps the same number of nodes.
 * No inline scripts anywhere: the Content-Security-Policy allows scripts from this origin only.
 */
(function () {
  "use strict";

  var CLOSE_REVOKED = 4403;
  var CLOSE_SIGNED_OUT = 4401;
  var sockets = []; // {elt, open, since}
  var pageLoadedAt = Date.now();
  var reloading = false;

  // Reconnect with exponential backoff and jitter: 1 s, 2 s, 4 s ... at most 30 s.
  function reconnectDelay(retryCount) {
    var base = Math.min(30000, 1000 * Math.pow(2, retryCount));
    return Math.round(base / 2 + Math.random() * base / 2);
  }

  function configureHtmx() {
    if (window.htmx) {
      window.htmx.config.wsReconnectDelay = reconnectDelay;
    }
  }

  function two(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function clockText(date) {
    return two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds());
  }

  // The wording of dashboard/durations.py age_text, which writes the first paint (tests/test_durations.py).
  function ageText(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) {
      return s + " s";
    }
    var m = Math.floor(s / 60);
    if (m < 60) {
      return m + " min" + (m < 10 && s % 60 ? " " + (s % 60) + " s" : "");
    }
    var h = Math.floor(m / 60);
    if (h < 48) {
      return h + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
    }
    return Math.floor(h / 24) + " days";
  }

  function parseTime(value) {
    if (!value) {
      return null;
    }
    var t = Date.parse(value);
    return isNaN(t) ? null : t;
  }

  function timeOfDay(ms) {
    return clockText(new Date(ms));
  }

  var zoneFormats = {};
  function zoneClock(zone, date) {
    if (!zone) {
      return clockText(date);
    }
    if (!zoneFormats[zone]) {
      try {
        zoneFormats[zone] = new Intl.DateTimeFormat(undefined, {
          hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZone: zone,
        });
      } catch (err) {
        zoneFormats[zone] = null; // unknown zone in this browser: fall back to local time
      }
    }
    return zoneFormats[zone] ? zoneFormats[zone].format(date) : clockText(date);
  }

  // --- Sockets ------------------------------------------------------------------------------------------------

  function socketFor(elt) {
    for (var i = 0; i < sockets.length; i++) {
      if (sockets[i].elt === elt) {
        return sockets[i];
      }
    }
    var entry = { elt: elt, open: false, since: Date.now(), revoked: false, everOpened: false };
    sockets.push(entry);
    return entry;
  }

  function forgetDetachedSockets() {
    sockets = sockets.filter(function (entry) { return document.body.contains(entry.elt); });
  }

  document.addEventListener("htmx:wsConnecting", function (event) {
    socketFor(event.target);
  });

  document.addEventListener("htmx:wsOpen", function (event) {
    var entry = socketFor(event.target);
    entry.open = true;
    entry.everOpened = true;
    entry.since = Date.now();
    refresh();
  });

  document.addEventListener("htmx:wsClose", function (event) {
    var entry = socketFor(event.target);
    if (entry.open || !entry.closedOnce) {
      entry.since = Date.now();
    }
    entry.open = false;
    entry.closedOnce = true;
    var code = event.detail && event.detail.event ? event.detail.event.code : 0;
    if (code === CLOSE_SIGNED_OUT) {
      entry.signedOut = true;
    }
    if (code === CLOSE_REVOKED) {
      // The link was revoked: stop showing numbers that will never update again.
      entry.revoked = true;
      document.documentElement.classList.add("live-revoked");
    }
    refresh();
  });

  document.addEventListener("htmx:wsAfterMessage", function () {
    if (!reloading && document.querySelector("#wall-reload[data-reload]")) {
      // The wall display's list of environments changed: load the page again (spread out, not all at once).
      reloading = true;
      window.setTimeout(function () { window.location.reload(); }, 500 + Math.random() * 4500);
    }
    followIndex();
    refresh();
  });

  // --- Lists that follow the work index -------------------------------------------------------------------------
  // A list region carries data-index-mark: the index's counts it was drawn from. The feed's frames carry the
  // environment's current mark ([data-index-mark-for=<region id>]). When they differ, the region asks for itself
  // again (this page's address, the region as htmx target): new rows appear and every count follows, no reload.
  // Not while rows are selected in it: a note says the list changed, and the selection stays.

  var listAskedAt = {};

  function followIndex() {
    if (!window.htmx) {
      return;
    }
    var marks = document.querySelectorAll("[data-index-mark-for]");
    for (var i = 0; i < marks.length; i++) {
      var id = marks[i].getAttribute("data-index-mark-for");
      var region = document.getElementById(id);
      var live = marks[i].getAttribute("data-index-mark");
      if (!region || !live || !region.hasAttribute("data-index-mark")) {
        continue;
      }
      var note = region.querySelector("[data-index-changed]");
      if (live === region.getAttribute("data-index-mark")) {
        if (note) {
          note.hidden = true;
        }
        continue;
      }
      if (region.querySelector("input[type=checkbox]:checked")) {
        if (note) {
          note.hidden = false;
        }
        continue;
      }
      if (Date.now() - (listAskedAt[id] || 0) < 2000) {
        continue; // at most one re-read every two seconds; the next frame asks again if it is still behind
      }
      listAskedAt[id] = Date.now();
      region.setAttribute("data-index-mark", live);
      window.htmx.ajax("GET", window.location.pathname + window.location.search, { target: "#" + id, swap: "outerHTML" });
    }
  }

  // --- Regions ------------------------------------------------------------------------------------------------

  function regionState(region, now) {
    var interval = parseFloat(region.getAttribute("data-live-interval")) || 3;
    var at = parseTime(region.getAttribute("data-live-at"));
    var staleSince = parseTime(region.getAttribute("data-stale-since"));
    var state = { at: at, interval: interval, staleSince: staleSince, old: false };
    state.reason = region.getAttribute("data-stale-reason") || "";
    state.requestId = region.getAttribute("data-stale-request-id") || "";
    var reference = at === null ? pageLoadedAt : at;
    // Three missed intervals (and a little slack for a slow upstream) and the numbers are no longer live.
    state.old = now - reference > (3 * interval + 2) * 1000;
    return state;
  }

  function renderRegion(region, state, now, socketDown) {
    var age = region.querySelector("[data-live-age]");
    if (age) {
      if (state.at === null) {
        age.textContent = "Waiting for live numbers…";
      } else {
        age.textContent = "Updated " + ageText((now - state.at) / 1000) + " ago";
        age.setAttribute("title", new Date(state.at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"));
      }
    }
    var stale = state.staleSince !== null || state.old || socketDown;
    region.classList.toggle("is-stale", stale);
    if (document.body.hasAttribute("data-kiosk")) {
      var times = region.querySelectorAll("[data-stale] time[datetime]");
      for (var i = 0; i < times.length; i++) {
        var t = parseTime(times[i].getAttribute("datetime"));
        if (t !== null) {
          times[i].textContent = timeOfDay(t);
        }
      }
    }
  }

  function renderAges(now) {
    var counters = document.querySelectorAll("[data-age-since]");
    for (var i = 0; i < counters.length; i++) {
      var since = parseTime(counters[i].getAttribute("data-age-since"));
      if (since !== null) {
        counters[i].textContent = ageText((now - since) / 1000);
      }
    }
  }

  function renderClocks(now) {
    var clocks = document.querySelectorAll("[data-clock]");
    for (var i = 0; i < clocks.length; i++) {
      clocks[i].textContent = zoneClock(clocks[i].getAttribute("data-time-zone"), new Date(now));
    }
  }

  // --- The badge ----------------------------------------------------------------------------------------------

  function statusMessage(now) {
    forgetDetachedSockets();
    for (var i = 0; i < sockets.length; i++) {
      var entry = sockets[i];
      if (entry.revoked) {
        return { state: "revoked", text: "This display link was revoked." };
      }
      if (entry.signedOut) {
        return { state: "signed-out", text: "Signed out: live updates stopped. Reload the page to sign in again." };
      }
      // A socket that never opened is given three seconds (from the page's load, or from when a region that
      // re-read itself brought it) before the badge calls it lost.
      if (!entry.open && (entry.everOpened || now - Math.max(pageLoadedAt, entry.since) > 3000)) {
        return {
          state: "disconnected",
          text: "Connection lost since " + timeOfDay(entry.since) + "; reconnecting. The numbers shown are from before.",
        };
      }
    }
    var regions = document.querySelectorAll("[data-live]");
    var stale = null;
    var old = null;
    for (var j = 0; j < regions.length; j++) {
      var state = regionState(regions[j], now);
      if (state.staleSince !== null && (stale === null || state.staleSince < stale.staleSince)) {
        stale = state;
      } else if (state.staleSince === null && state.old && (old === null || (state.at || 0) < (old.at || 0))) {
        old = state;
      }
    }
    if (stale !== null) {
      return {
        state: "stale",
        text: "Stale since " + timeOfDay(stale.staleSince) + ": " + (stale.reason || "the Work API cannot be read") +
          (stale.requestId ? " (request id " + stale.requestId + ")" : "") + ". Showing the last numbers read.",
      };
    }
    if (old !== null) {
      return {
        state: "old",
        text: old.at === null ? "No live numbers yet." : "No update since " + timeOfDay(old.at) + ".",
      };
    }
    return null;
  }

  function renderStatus(now) {
    var message = statusMessage(now);
    var badges = document.querySelectorAll("[data-live-status]");
    for (var i = 0; i < badges.length; i++) {
      var badge = badges[i];
      var text = badge.querySelector("[data-live-status-text]");
      if (message === null) {
        badge.hidden = true;
        badge.removeAttribute("data-state");
        continue;
      }
      badge.hidden = false;
      badge.setAttribute("data-state", message.state);
      if (text && text.textContent !== message.text) {
        text.textContent = message.text;
      }
    }
    document.documentElement.classList.toggle("live-degraded", message !== null);
  }

  function refresh() {
    var now = Date.now();
    var socketDown = false;
    for (var i = 0; i < sockets.length; i++) {
      if (!sockets[i].open && sockets[i].everOpened) {
        socketDown = true;
      }
    }
    var regions = document.querySelectorAll("[data-live]");
    for (var j = 0; j < regions.length; j++) {
      renderRegion(regions[j], regionState(regions[j], now), now, socketDown);
    }
    renderAges(now);
    renderClocks(now);
    renderStatus(now);
  }

  function start() {
    configureHtmx();
    refresh();
    window.setInterval(refresh, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
