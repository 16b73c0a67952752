// Keeps the bundle page current without reloading it: polls the bundle's JSON and redraws the
// screenshots whose status changed, until every one of them is done or failed.
"use strict";

(function () {
  const root = document.querySelector("[data-bundle]");
  if (!root) return;
  const statusUrl = root.dataset.statusUrl;
  const interval = Number(root.dataset.pollMs) || 1000;
  const bar = root.querySelector(".progress-bar");
  const progress = root.querySelector(".progress");

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children || []) node.append(child);
    return node;
  }

  function frameFor(shot) {
    if (shot.status === "done") {
      const img = el("img", {src: shot.thumbnail, alt: "Screenshot of " + shot.url,
                             width: "400", height: "250"});
      return el("a", {href: shot.image, class: "shot-link"}, [img]);
    }
    if (shot.status === "failed") return el("p", {class: "shot-error"}, [shot.error]);
    return el("div", {class: "shot-wait"}, [el("span", {class: "spinner", "aria-hidden": "true"})]);
  }

  function drawShot(shot) {
    const item = root.querySelector('[data-shot-id="' + shot.id + '"]');
    if (!item) return;
    const frame = item.querySelector(".shot-frame");
    if (item.dataset.status !== shot.status || (shot.status === "failed" &&
        frame.textContent !== shot.error)) {
      frame.replaceChildren(frameFor(shot));
    }
    item.dataset.status = shot.status;
    item.querySelector('[data-role="status"]').textContent = shot.status;
    item.querySelector('[data-role="took"]').textContent =
      shot.took === null ? "" : shot.took + " s";
  }

  function draw(state) {
    state.shots.forEach(drawShot);
    bar.style.width = state.percent + "%";
    progress.setAttribute("aria-valuenow", String(state.finished));
    for (const [status, count] of Object.entries(state.counts)) {
      const node = root.querySelector('[data-count="' + status + '"]');
      if (node) node.textContent = String(count);
    }
    root.dataset.state = state.settled ? "settled" : "running";
  }

  async function poll() {
    let state = null;
    try {
      const response = await fetch(statusUrl, {headers: {Accept: "application/json"},
                                                cache: "no-store"});
      if (response.ok) state = await response.json();
    } catch (error) {
      // The server is restarting or the network is down: keep the page and try again.
    }
    if (state) draw(state);
    if (!state || !state.settled) window.setTimeout(poll, state ? interval : interval * 3);
  }

  if (root.dataset.state !== "settled") window.setTimeout(poll, interval);
})();
