// Dupify portal: the few behaviours that need a script (served by the app; no inline scripts).
// Every page works without it; the script adds copy buttons, snippet tabs and the playground's
// local previews with boxes drawn over them.
"use strict";

function copyButtons(root) {
  // <button data-copy-target="element id">: the key is shown once, so make copying easy.
  for (const button of root.querySelectorAll("button[data-copy-target]")) {
    if (button.dataset.ready) continue;
    button.dataset.ready = "1";
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copyTarget);
      const status = document.getElementById(button.dataset.copyStatus || "");
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent.trim() + (source.closest("pre") ? "\n" : ""));
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
}

function tabs(root) {
  // [data-tabs]: without the script every snippet shows; with it, one language at a time.
  for (const group of root.querySelectorAll("[data-tabs]")) {
    const list = group.querySelector("[role=tablist]");
    const buttons = Array.from(group.querySelectorAll("[role=tab]"));
    if (!list || !buttons.length) continue;
    list.hidden = false;
    group.classList.add("tabbed");
    const select = (chosen, focus) => {
      for (const button of buttons) {
        const on = button === chosen;
        button.setAttribute("aria-selected", on ? "true" : "false");
        button.tabIndex = on ? 0 : -1;
        document.getElementById(button.getAttribute("aria-controls")).hidden = !on;
      }
      if (focus) chosen.focus();
    };
    buttons.forEach((button, index) => {
      button.addEventListener("click", () => select(button, false));
      button.addEventListener("keydown", (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (step) select(buttons[(index + step + buttons.length) % buttons.length], true);
      });
    });
    select(buttons[0], false);
  }
}

// -- playground ----------------------------------------------------------------------------

const bitmaps = {};

async function drawPreview(input) {
  const figure = document.getElementById(input.dataset.preview);
  const file = input.files && input.files[0];
  if (!figure) return;
  if (!file) { figure.hidden = true; delete bitmaps[figure.id]; return; }
  try {
    // Drawn from the local file on a canvas: nothing is uploaded for the preview.
    bitmaps[figure.id] = await createImageBitmap(file);
  } catch (error) {
    figure.hidden = true;
    return;
  }
  figure.hidden = false;
  paint(figure, [], [], 0, 0);
}

function paint(figure, faces, text, width, height) {
  const bitmap = bitmaps[figure.id];
  const canvas = figure.querySelector("canvas");
  if (!bitmap || !canvas) return 0;
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const sx = width ? bitmap.width / width : 1;
  const sy = height ? bitmap.height / height : 1;
  context.lineWidth = Math.max(2, Math.round(bitmap.width / 200));
  let drawn = 0;
  context.strokeStyle = "#ffcc00";
  for (const face of faces) {
    const [x, y, w, h] = face.box;
    context.strokeRect(x * sx, y * sy, w * sx, h * sy);
    drawn += 1;
  }
  context.strokeStyle = "#00d5ff";
  for (const line of text) {
    context.beginPath();
    line.box.forEach(([x, y], index) => (index ? context.lineTo(x * sx, y * sy) : context.moveTo(x * sx, y * sy)));
    context.closePath();
    context.stroke();
    drawn += 1;
  }
  canvas.dataset.boxes = String(drawn);
  canvas.setAttribute("aria-label", `Preview with ${faces.length} face and ${text.length} text boxes`);
  return drawn;
}

function showBoxes(form) {
  const figures = ["preview-a", "preview-b"].map((id) => document.getElementById(id));
  for (const result of document.querySelectorAll("#results .image-result[data-index]")) {
    const figure = figures[Number(result.dataset.index)];
    if (!figure || !result.dataset.faces) continue;
    paint(figure, JSON.parse(result.dataset.faces), JSON.parse(result.dataset.text || "[]"),
          Number(result.dataset.width), Number(result.dataset.height));
  }
  // The curl command names the files that were chosen.
  const curl = document.getElementById("playground-curl");
  const names = ["first.jpg", "second.jpg"];
  if (curl) {
    let command = curl.textContent;
    form.querySelectorAll("input[type=file]").forEach((input, index) => {
      const file = input.files && input.files[0];
      if (file) command = command.split("@" + names[index]).join("@" + JSON.stringify(file.name).slice(1, -1).replace(/ /g, "\\ "));
    });
    curl.textContent = command;
  }
}

function playground() {
  const form = document.getElementById("playground-form");
  if (!form) return;
  const status = document.getElementById("playground-status");
  for (const input of form.querySelectorAll("input[type=file][data-preview]")) {
    input.addEventListener("change", () => drawPreview(input));
    if (input.files && input.files.length) drawPreview(input);
  }
  form.addEventListener("submit", async (event) => {
    // Sent with fetch so the chosen files (and their previews) stay on the page.
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    status.textContent = "Analysing…";
    try {
      const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("results");
      document.getElementById("results").innerHTML = fresh ? fresh.innerHTML : "";
      const oldErrors = document.getElementById("form-errors");
      if (oldErrors) oldErrors.remove();
      const errors = page.getElementById("form-errors");
      if (errors) { form.before(errors); errors.focus(); }
      status.textContent = response.ok ? "Done: the results are below." : "The images were not analysed.";
      copyButtons(document);
      showBoxes(form);
    } catch (error) {
      status.textContent = "The request failed; check your connection and try again.";
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  copyButtons(document);
  tabs(document);
  playground();
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
