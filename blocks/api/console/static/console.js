// The console's only script, loaded from this site (no inline script under the CSP). Every page
// works without it; it adds: a confirmation before a form marked data-confirm is sent.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
