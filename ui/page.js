// Easel page helpers, loaded in <head>. Listeners sit on `document`, so they work whatever Gradio renders later.
(() => {
  const IMAGE_NAME = /\.(png|jpe?g|webp)$/i;

  // Ctrl+Enter (Cmd+Enter on macOS) in the prompt boxes clicks Generate.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const target = event.target;
    if (!(target instanceof Element) || !target.closest("#prompt, #negative-prompt")) return;
    event.preventDefault();
    const button = document.querySelector("#generate");
    if (button) button.click();
  }, true);

  // An image dropped anywhere on the page (outside other upload areas) goes to History's reader.
  const hasFiles = (event) => Array.from((event.dataTransfer && event.dataTransfer.types) || []).includes("Files");
  const ownDropZone = (event) => event.target instanceof Element &&
    event.target.closest("#history-drop, [data-testid='image'], .upload-container");

  const deliver = (file, triesLeft) => {
    const input = document.querySelector("#history-drop input[type='file']");
    if (!input) {
      if (triesLeft > 0) setTimeout(() => deliver(file, triesLeft - 1), 100);
      return;
    }
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  };

  document.addEventListener("dragover", (event) => {
    if (hasFiles(event) && !ownDropZone(event)) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event) || ownDropZone(event)) return;
    const file = Array.from(event.dataTransfer.files).find((f) => f.type.startsWith("image/") || IMAGE_NAME.test(f.name));
    if (!file) return;
    event.preventDefault();
    const tab = Array.from(document.querySelectorAll("button[role='tab']")).find((b) => b.textContent.trim() === "History");
    if (tab && tab.getAttribute("aria-selected") !== "true") tab.click();
    deliver(file, 50);
  });
})();

// Performance modes the engine cannot run with the model are labelled "(unavailable)": grey them out and make
// them unclickable (the server also falls back if one is picked anyway). Styles: a hover card with the preview.
(() => {
  const markModes = () => {
    for (const label of document.querySelectorAll("#performance label")) {
      const input = label.querySelector("input");
      const off = /\(unavailable\)\s*$/.test(label.textContent);
      label.classList.toggle("easel-unavailable", off);
      if (input && input.disabled !== off) input.disabled = off;
    }
  };
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; markModes(); });
  }).observe(document, { subtree: true, childList: true, characterData: true });

  let raw = null;
  let styles = {};
  const styleData = () => {
    const holder = document.querySelector("#easel-style-data");
    const text = holder ? holder.dataset.styles : null;
    if (text !== raw) {
      raw = text;
      try { styles = text ? JSON.parse(text) : {}; } catch (error) { styles = {}; }
    }
    return styles;
  };
  const card = document.createElement("div");
  card.id = "easel-style-card";
  card.hidden = true;
  const line = (text, className) => {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) p.className = className;
    return p;
  };
  document.addEventListener("mouseover", (event) => {
    const label = event.target instanceof Element ? event.target.closest("#styles label") : null;
    const style = label ? styleData()[label.textContent.trim()] : null;
    if (!style) { card.hidden = true; return; }
    card.replaceChildren(line(`${label.textContent.trim()} · ${style.category}`));
    card.firstChild.style.fontWeight = "600";
    if (style.preview) {
      const img = document.createElement("img");
      img.src = style.preview;
      img.alt = "";
      card.append(img);
    }
    card.append(line(style.prompt));
    if (style.negative) card.append(line(`Negative: ${style.negative}`, "easel-card-negative"));
    if (!card.isConnected) document.body.append(card);
    const box = label.getBoundingClientRect();
    card.style.left = `${Math.max(4, Math.min(box.left, window.innerWidth - 330))}px`;
    const below = box.bottom + 6;
    card.hidden = false;
    const height = card.getBoundingClientRect().height;
    card.style.top = `${below + height > window.innerHeight ? Math.max(4, box.top - height - 6) : below}px`;
  });
})();
