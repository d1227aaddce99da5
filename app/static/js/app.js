// The few behaviours htmx does not cover. Loaded as a file (no inline script), so a strict CSP stays possible.

// Enter sends the message; Shift+Enter starts a new line (and Enter while an IME is composing is left alone).
document.addEventListener("keydown", (event) => {
  const box = event.target;
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || !box.matches("textarea[data-enter-sends]")) {
    return;
  }
  event.preventDefault();
  box.form.requestSubmit();
});

// While an answer grows, keep its newest line in view, unless the reader has scrolled up to read.
let followingTheEnd = false;
document.addEventListener("htmx:beforeSwap", () => {
  const page = document.documentElement;
  followingTheEnd = window.innerHeight + window.scrollY >= page.scrollHeight - 64;
});
document.addEventListener("htmx:afterSettle", (event) => {
  if (followingTheEnd && event.target.closest(".messages")) {
    window.scrollTo({ top: document.documentElement.scrollHeight });
  }
});

// A request the server refused (an expired CSRF token, a server error) says so instead of failing silently.
document.addEventListener("htmx:responseError", (event) => {
  const problem = document.getElementById("problem");
  problem.textContent = `The server refused that (${event.detail.xhr.status}). Reload the page and try again.`;
  problem.hidden = false;
});

// Copy buttons: on an answer, its text as written (Markdown); on a code block, the code.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) {
    return;
  }
  const block = button.closest(".code");
  const text = block ? block.querySelector("pre").innerText : button.dataset.copy;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
});
