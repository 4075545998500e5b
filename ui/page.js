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
