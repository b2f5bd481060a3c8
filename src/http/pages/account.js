// Keel's account pages: the button (or form) of a mailed link calls the API with the link's
// token; opening the page alone changes nothing. No framework, no inline script (the CSP allows
// scripts from this origin only).
"use strict";

(function () {
  const main = document.querySelector("main[data-endpoint]");
  if (!main) return;
  const form = document.getElementById("action");
  const result = document.getElementById("result");
  const button = form.querySelector("button");
  const lead = main.querySelector(".lead");

  // The page's action is over (done, or the link cannot work): only the outcome stays.
  function over() {
    form.hidden = true;
    lead.hidden = true;
  }
  const token = new URLSearchParams(window.location.search).get("token");

  function show(kind, text, items) {
    result.hidden = false;
    result.className = "result " + kind;
    result.textContent = text;
    if (items && items.length) {
      const list = document.createElement("ul");
      for (const item of items) {
        const li = document.createElement("li");
        li.textContent = item;
        list.appendChild(li);
      }
      result.appendChild(list);
    }
    result.focus();
  }

  // What a problem answer means for a person holding a link.
  function explain(status, problem) {
    const code = problem && problem.code;
    if (code === "token_invalid") {
      return ["This link was already used, or it is not a valid link. Nothing was changed."];
    }
    if (code === "token_expired") {
      return ["This link has expired. Ask for a new one and use it soon after it arrives."];
    }
    if (code === "validation_failed" && problem.errors) {
      return [
        "Please correct the following:",
        problem.errors.map((e) => (e.field === "new_password" ? "Password " : e.field + " ") + e.message),
      ];
    }
    if (status === 429) {
      return ["Too many attempts from here. Wait a minute, then try again."];
    }
    if (problem && problem.detail) {
      return [problem.detail.charAt(0).toUpperCase() + problem.detail.slice(1) + "."];
    }
    return ["Something went wrong (HTTP " + status + "). Try again in a moment."];
  }

  if (!token) {
    over();
    show("failed", "This link is incomplete: it has no token. Open the link from the mail again, in full.");
    return;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { token: token };
    const password = form.querySelector("#new_password");
    if (password) {
      const repeat = form.querySelector("#repeat_password");
      if (password.value !== repeat.value) {
        show("failed", "The two passwords differ. Type the same password twice.");
        repeat.focus();
        return;
      }
      body.new_password = password.value;
    }
    button.disabled = true;
    result.hidden = true;
    try {
      const response = await fetch(main.dataset.api + main.dataset.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
      });
      if (response.ok) {
        over();
        show("done", main.dataset.done);
        return;
      }
      let problem = null;
      try {
        problem = await response.json();
      } catch (_) {
        // Not a problem document: the status says enough.
      }
      const [text, items] = explain(response.status, problem);
      show("failed", text, items);
      // A used or expired link cannot succeed on a second press.
      if (problem && (problem.code === "token_invalid" || problem.code === "token_expired")) {
        over();
      }
    } catch (_) {
      show("failed", "The server could not be reached. Check your connection and try again.");
    } finally {
      button.disabled = false;
    }
  });
})();
