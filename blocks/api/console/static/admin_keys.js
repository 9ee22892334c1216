// The page that shows a new API key once (admin console). Reloading it must neither show the key
// again nor send the form a second time (a second key): its history entry becomes the keys list.
"use strict";
const shownOnce = document.querySelector("[data-replace-url]");
if (shownOnce) {
  window.history.replaceState(null, "", shownOnce.dataset.replaceUrl);
}
