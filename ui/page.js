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
// them unclickable (the server also falls back if one is picked anyway). Styles: the search box and category
// filter the list here, as the style library's own search does (every word in the name or category; picked
// styles always stay in view), and a hover card shows a style's preview or template.
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
    requestAnimationFrame(() => { pending = false; markModes(); orderStyles(); filterStyles(); });
  }).observe(document, { subtree: true, childList: true, characterData: true });

  // The picked styles in the order they apply (the order they were ticked), shown first via CSS `order`. When the
  // server has set the list (its labels changed), it sent the picked ones first and in order: start from that.
  let order = [];
  let listing = "";
  const orderStyles = () => {
    const labels = Array.from(document.querySelectorAll("#styles label"));
    const names = labels.map((label) => label.textContent.trim());
    const picked = names.filter((_, i) => { const box = labels[i].querySelector("input"); return box && box.checked; });
    if (names.join("\n") !== listing) {
      listing = names.join("\n");
      order = picked;
    } else {
      order = order.filter((name) => picked.includes(name)).concat(picked.filter((name) => !order.includes(name)));
    }
    labels.forEach((label, i) => {
      const at = order.indexOf(names[i]);
      const value = at === -1 ? "" : String(at - order.length);
      if (label.style.order !== value) label.style.order = value;
    });
  };
  document.addEventListener("change", (event) => {
    if (event.target instanceof Element && event.target.closest("#styles")) { orderStyles(); filterStyles(); }
  });

  const filterStyles = () => {
    const search = document.querySelector("#style-search textarea, #style-search input");
    const select = document.querySelector("#easel-style-category");
    const words = (search ? search.value : "").toLowerCase().split(/\s+/).filter(Boolean);
    const category = select ? select.value : "";
    const data = styleData();
    for (const label of document.querySelectorAll("#styles label")) {
      const name = label.textContent.trim();
      const group = (data[name] || {}).category || "";
      const text = `${name} ${group}`.toLowerCase();
      const input = label.querySelector("input");
      const show = (input && input.checked) ||
        ((!category || group === category) && words.every((word) => text.includes(word)));
      const display = show ? "" : "none";
      if (label.style.display !== display) label.style.display = display;
    }
  };
  document.addEventListener("input", (event) => {
    if (event.target instanceof Element && event.target.closest("#style-search")) filterStyles();
  });
  document.addEventListener("change", (event) => {
    if (event.target instanceof Element && event.target.id === "easel-style-category") filterStyles();
  });

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
