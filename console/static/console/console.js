// Refreshes the console's figures every few seconds: fetches the page's fragment and swaps it
// in. Paused while the tab is hidden; marks the figures stale when a refresh fails (the
// session ended: the answer is then the login page, not the fragment), with the service's reason
// when it gave one (503: the database is unreachable). Its fetch keeps fetch's own Accept (*/*):
// the service answers an outage in JSON to it, and as a page to a browser's navigation, which asks
// for text/html first (core/outage_page.py).
"use strict";

(function () {
  const live = document.getElementById("console-live");
  const figures = document.getElementById("console-figures");
  if (!live || !figures) {
    return;
  }
  const seconds = Number(live.dataset.refreshSeconds) || 5;
  let busy = false;

  // Why a refresh failed: the message of the service's error answer, else its status.
  async function reason(response) {
    if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
      try {
        return (await response.json()).error.message + " (" + response.status + ")";
      } catch (error) {
        // not the service's error shape: its status says enough
      }
    }
    return "status " + response.status;
  }

  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.pathname + "?fragment=1", {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!response.ok || response.headers.get("X-Console-Fragment") !== "1") {
        throw new Error(await reason(response));
      }
      figures.innerHTML = await response.text();
      live.classList.remove("stale");
      live.textContent = "Live: refreshes every " + seconds + " s";
    } catch (error) {
      live.classList.add("stale");
      live.textContent = "Stale: the last refresh failed: " + error.message + ". Reload the page";
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
})();
