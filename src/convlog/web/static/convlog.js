// convlog serve: the little script of its pages (served from the package; the CSP
// allows scripts from this origin only, none inline).
// The session page's time slider: show the seq while it moves, load the page as of
// that seq when it is let go (the form works without this script too: "Show").
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("as-of");
  if (!form) return;
  const slider = form.querySelector("input[type=range]");
  const shown = document.getElementById("as-of-value");
  slider.addEventListener("input", () => { shown.textContent = slider.value; });
  slider.addEventListener("change", () => { form.requestSubmit(); });
});
