// Render the maths that pymdownx.arithmatex (generic mode) leaves as \( ... \) and \[ ... \] in
// <span class="arithmatex"> and <div class="arithmatex">, with the KaTeX shipped in assets/katex/
// (no CDN: the site reads the same offline).
(function () {
  function render() {
    document.querySelectorAll(".arithmatex").forEach(function (el) {
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      if (tex.startsWith("\\(") || tex.startsWith("\\[")) tex = tex.slice(2, -2);
      katex.render(tex, el, { displayMode: display, throwOnError: false });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render);
  else render();
})();
