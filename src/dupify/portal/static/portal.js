// Dupify portal: the few behaviours that need a script (served by the app; no inline scripts).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: <button data-copy-target="element id">; the key is shown once, so make it easy.
  for (const button of document.querySelectorAll("button[data-copy-target]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copyTarget);
      const status = document.getElementById(button.dataset.copyStatus || "");
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        if (status) status.textContent = "Copied to the clipboard.";
      } catch (error) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (status) status.textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
      }
    });
  }
  // Forms that need a second thought (revoke, delete): <form data-confirm="question">.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // Move focus to a form's error summary so screen readers and keyboard users land on it.
  const summary = document.getElementById("form-errors");
  if (summary) summary.focus();
});
