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

// A running answer follows its job's tokens over Server-Sent Events (its `data-events`), appending each as it comes;
// at the end, the finished bubble (Markdown rendered and sanitized on the server) takes its place. After a dropped
// connection EventSource reconnects by itself with Last-Event-ID, so no token is lost or repeated. When no stream
// can be opened (over the stream caps), or its first event does not get through in time (a proxy that holds the body
// back until the end), the bubble polls instead, as a waiting one does.
const following = new Map();
const READY_WITHIN = 5000; // ms for the stream's `ready` event (a busy server may take a second or two)

function follow(bubble) {
  const source = new EventSource(bubble.dataset.events);
  following.set(bubble, source);
  let text = "";
  const show = (value) => {
    const page = document.documentElement;
    const atTheEnd = window.innerHeight + window.scrollY >= page.scrollHeight - 64;
    let live = bubble.querySelector(".live");
    if (!live) {
      bubble.querySelectorAll(".markdown, .state").forEach((old) => old.remove());
      live = document.createElement("div");
      live.className = "live";
      bubble.prepend(live);
    }
    live.textContent = value;
    if (atTheEnd) {
      window.scrollTo({ top: page.scrollHeight });
    }
  };
  const replace = (url) => {
    source.close();
    following.delete(bubble);
    htmx.ajax("GET", url, { target: bubble, swap: "outerHTML" });
  };
  const poll = () => replace(`${bubble.dataset.answer}?poll=1`);
  source.addEventListener("token", (event) => {
    text += JSON.parse(event.data);
    show(text);
  });
  source.addEventListener("reset", () => {
    text = "";
    show(text);
  });
  let ready = false;
  source.addEventListener("ready", () => { ready = true; });
  setTimeout(() => {
    if (!ready && following.get(bubble) === source) {
      poll();
    }
  }, READY_WITHIN);
  source.addEventListener("end", () => replace(bubble.dataset.answer));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      poll();
    }
  });
}

htmx.onLoad((content) => {
  const bubbles = content.matches?.("[data-events]") ? [content] : [];
  bubbles.push(...(content.querySelectorAll?.("[data-events]") ?? []));
  bubbles.filter((bubble) => !following.has(bubble)).forEach(follow);
});

// A bubble swapped out (by Stop, or its own end) stops following its job.
document.addEventListener("htmx:beforeCleanupElement", (event) => {
  const source = following.get(event.target);
  if (source) {
    source.close();
    following.delete(event.target);
  }
});
