// Keel's operator console: built only on the public HTTP API (every call below is in the
// spec), for superusers. Tokens live in this script's memory only: never in localStorage or
// sessionStorage, so closing the tab or signing out ends the session.
"use strict";

(function () {
  const main = document.querySelector("main.console");
  const API = main.dataset.api;
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 5000; // 4 requests a refresh: well within the default 100/min per address
  let session = null; // { access, refresh }
  let mfaToken = null;
  let view = "jobs";
  let selectedJob = null;
  let timer = null;
  // Each load renders only if no later one started meanwhile: an older answer arriving last
  // never overwrites a newer one.
  const latest = { jobs: 0, accounts: 0 };

  class Problem extends Error {
    constructor(status, body) {
      super((body && body.detail) || "HTTP " + status);
      this.status = status;
      this.code = body && body.code;
      this.body = body;
    }
  }

  async function call(method, path, body, retried) {
    const headers = { Accept: "application/json" };
    if (session) headers.Authorization = "Bearer " + session.access;
    let payload;
    if (body instanceof URLSearchParams) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(API + path, { method, headers, body: payload, credentials: "omit" });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      // An empty or non-JSON answer: the status says enough.
    }
    if (response.status === 401 && session && !retried && data && data.code === "token_expired") {
      await refresh();
      return call(method, path, body, true);
    }
    if (!response.ok) throw new Problem(response.status, data);
    return data;
  }

  async function refresh() {
    const pair = await fetch(API + "/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ refresh_token: session.refresh }),
      credentials: "omit",
    });
    if (!pair.ok) {
      endSession("Your session ended. Sign in again.");
      throw new Problem(401, null);
    }
    const tokens = await pair.json();
    session = { access: tokens.access_token, refresh: tokens.refresh_token };
  }

  function say(el, kind, text) {
    el.hidden = false;
    el.className = "result " + kind;
    el.textContent = text;
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    row.appendChild(td);
    return td;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "–";
  }

  // --- signing in and out ---------------------------------------------------------------

  async function started(tokens) {
    session = { access: tokens.access_token, refresh: tokens.refresh_token };
    const me = await call("GET", "/users/me");
    if (!me.is_superuser) {
      await signOut();
      say($("sign-in-result"), "failed", "This console is for superusers; " + me.username + " is not one. You are signed out.");
      return;
    }
    $("sign-in").hidden = true;
    $("nav").hidden = false;
    show("jobs");
  }

  $("password-step").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-result").hidden = true;
    const form = new URLSearchParams({ username: $("identifier").value, password: $("password").value });
    try {
      await started(await call("POST", "/auth/login", form));
    } catch (e) {
      if (e.code === "mfa_required") {
        mfaToken = e.body.mfa_token;
        $("password-step").hidden = true;
        $("code-step").hidden = false;
        $("code").focus();
      } else {
        say($("sign-in-result"), "failed", e.message);
      }
    } finally {
      $("password").value = "";
    }
  });

  $("code-step").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await started(await call("POST", "/auth/mfa/verify", { mfa_token: mfaToken, code: $("code").value.trim() }));
      mfaToken = null;
    } catch (e) {
      say($("sign-in-result"), "failed", e.message);
      if (e.code !== "invalid_mfa_code") {
        $("code-step").hidden = true;
        $("password-step").hidden = false;
      }
    } finally {
      $("code").value = "";
    }
  });

  async function signOut() {
    if (session) {
      try {
        await call("POST", "/auth/logout", { refresh_token: session.refresh });
      } catch (_) {
        // Already ended: nothing left to do.
      }
    }
    endSession();
  }

  function endSession(message) {
    session = null;
    clearInterval(timer);
    timer = null;
    for (const id of ["jobs", "accounts", "nav", "code-step"]) $(id).hidden = true;
    $("sign-in").hidden = false;
    $("password-step").hidden = false;
    if (message) say($("sign-in-result"), "failed", message);
  }

  $("sign-out").addEventListener("click", () => signOut());

  // --- views --------------------------------------------------------------------------------

  function show(name) {
    view = name;
    for (const tab of document.querySelectorAll(".tab")) {
      if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    $("jobs").hidden = name !== "jobs";
    $("accounts").hidden = name !== "accounts";
    clearInterval(timer);
    if (name === "jobs") {
      loadJobs();
      // Refreshes itself while open (and while the tab is visible).
      timer = setInterval(() => {
        if (!document.hidden && session) loadJobs();
      }, REFRESH_MS);
    } else {
      loadAccounts();
    }
  }

  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => show(tab.dataset.view));
  }

  // --- jobs ------------------------------------------------------------------------------

  async function loadJobs() {
    const mine = ++latest.jobs;
    try {
      const [stats, queues, list] = await Promise.all([
        call("GET", "/admin/statistics"),
        call("GET", "/system/background-tasks/queues"),
        call("GET", "/system/background-tasks?" + jobQuery()),
      ]);
      if (mine !== latest.jobs) return;
      const counts = $("status-counts");
      counts.textContent = "";
      for (const [status, n] of Object.entries(stats.jobs_by_status)) {
        const item = document.createElement("p");
        item.className = "count";
        item.dataset.status = status;
        const value = document.createElement("strong");
        value.textContent = n;
        item.append(value, " " + status);
        counts.appendChild(item);
      }
      const qbody = $("queues").tBodies[0];
      qbody.textContent = "";
      for (const q of queues) {
        const row = qbody.insertRow();
        for (const v of [q.queue, q.waiting, q.scheduled, q.running, q.failed, q.finished_last_minute,
          q.oldest_waiting_seconds === null ? null : q.oldest_waiting_seconds.toFixed(1) + " s"]) cell(row, v);
      }
      const body = $("job-list").tBodies[0];
      body.textContent = "";
      for (const job of list.items) {
        const row = body.insertRow();
        row.dataset.id = job.task_id;
        const name = cell(row, "");
        const link = document.createElement("button");
        link.type = "button";
        link.className = "link";
        link.textContent = job.task_name + " " + job.task_id.slice(0, 8);
        link.addEventListener("click", () => openJob(job.task_id));
        name.appendChild(link);
        cell(row, job.status).className = "status " + job.status.toLowerCase();
        cell(row, job.queue);
        cell(row, job.attempts);
        cell(row, when(job.created_at));
      }
      if (!list.items.length) cell(body.insertRow(), "No tasks match.").colSpan = 5;
      $("refreshed").textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshes every 5 seconds.";
      if (selectedJob) await openJob(selectedJob, true);
    } catch (e) {
      if (session) $("refreshed").textContent = "Could not refresh: " + e.message;
    }
  }

  // Why a task has not started, in words (`waiting_for`).
  function waitingFor(reason) {
    return {
      rate_limit: "its queue's rate limit (it starts at its reserved time)",
      queue_concurrency_limit: "its queue's concurrency limit",
      key_concurrency_limit: "another task with its concurrency key to finish",
    }[reason] ?? reason;
  }

  function jobQuery() {
    const q = new URLSearchParams({ size: "50" });
    if ($("filter-status").value) q.set("status", $("filter-status").value);
    if ($("filter-queue").value) q.set("queue", $("filter-queue").value);
    return q.toString();
  }

  $("filter-status").addEventListener("change", loadJobs);
  $("filter-queue").addEventListener("change", loadJobs);
  $("job-filter").addEventListener("submit", (e) => { e.preventDefault(); loadJobs(); });

  async function openJob(id, quiet) {
    selectedJob = id;
    let job;
    try {
      job = await call("GET", "/system/background-tasks/task-status/" + id);
    } catch (e) {
      if (!quiet) say($("job-result"), "failed", e.message);
      return;
    }
    const panel = $("job-detail");
    panel.hidden = false;
    panel.dataset.status = job.status;
    $("job-title").textContent = job.task_name + " · " + job.status;
    const fields = $("job-fields");
    fields.textContent = "";
    const rows = [
      ["Task id", job.task_id], ["Status", job.status], ["Queue", job.queue],
      ["Priority", job.priority], ["Attempts", job.attempts], ["Created", when(job.created_at)],
      ["Waiting for", waitingFor(job.waiting_for)], ["Concurrency key", job.concurrency_key],
      ["Runs at", when(job.run_at)], ["Started", when(job.started_at)], ["Finished", when(job.finished_at)],
      ["Error", job.error], ["Payload", job.payload], ["Progress", job.progress], ["Result", job.result],
    ];
    for (const [label, value] of rows) {
      if (value === null || value === undefined) continue;
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      if (typeof value === "object") {
        const pre = document.createElement("pre");
        pre.textContent = JSON.stringify(value, null, 2);
        dd.appendChild(pre);
      } else {
        dd.textContent = String(value);
      }
      fields.append(dt, dd);
    }
    $("job-retry").hidden = !["FAILURE", "REVOKED"].includes(job.status);
    $("job-cancel").hidden = !["PENDING", "STARTED", "RETRY"].includes(job.status);
    if (!quiet) $("job-result").hidden = true;
  }

  $("job-retry").addEventListener("click", async () => {
    try {
      await call("POST", "/system/background-tasks/" + selectedJob + "/retry");
      say($("job-result"), "done", "Queued again, from its first attempt.");
    } catch (e) {
      say($("job-result"), "failed", e.message);
    }
    loadJobs();
  });

  $("job-cancel").addEventListener("click", async () => {
    try {
      await call("DELETE", "/system/background-tasks/" + selectedJob);
      say($("job-result"), "done", "Cancelled.");
    } catch (e) {
      say($("job-result"), "failed", e.message);
    }
    loadJobs();
  });

  // --- accounts ------------------------------------------------------------------------

  async function loadAccounts() {
    const mine = ++latest.accounts;
    try {
      const stats = await call("GET", "/admin/statistics");
      if (mine !== latest.accounts) return;
      const box = $("user-stats");
      box.textContent = "";
      for (const [label, key] of [["accounts", "total_users"], ["verified", "verified_users"],
        ["unverified", "unverified_users"], ["superusers", "superusers"], ["deleted", "deleted_users"],
        ["deletion pending", "pending_deletion"], ["live sessions", "active_sessions"]]) {
        const item = document.createElement("p");
        item.className = "count";
        const value = document.createElement("strong");
        value.textContent = stats[key];
        item.append(value, " " + label);
        box.appendChild(item);
      }
      const q = new URLSearchParams({ size: "50" });
      if ($("user-query").value.trim()) q.set("q", $("user-query").value.trim());
      if ($("include-deleted").checked) q.set("include_deleted", "true");
      const page = await call("GET", "/admin/users?" + q.toString());
      if (mine !== latest.accounts) return;
      const body = $("user-list").tBodies[0];
      body.textContent = "";
      for (const u of page.items) {
        const row = body.insertRow();
        row.dataset.id = u.id;
        cell(row, u.username);
        cell(row, u.email);
        cell(row, u.is_verified ? "yes" : "no");
        cell(row, u.is_superuser ? "yes" : "no");
        cell(row, u.is_deleted ? "deleted" : u.deletion_scheduled_for ? "deletion on " + when(u.deletion_scheduled_for) : "active");
        const actions = cell(row, "");
        const act = (label, method, path, done, danger) => {
          const b = document.createElement("button");
          b.type = "button";
          b.className = danger ? "small danger" : "small";
          b.textContent = label;
          b.addEventListener("click", async () => {
            try {
              await call(method, path);
              say($("user-result"), "done", done + ": " + u.username + ".");
            } catch (e) {
              say($("user-result"), "failed", e.message);
            }
            loadAccounts();
          });
          actions.appendChild(b);
        };
        act(u.is_verified ? "Unverify" : "Verify", "POST", "/admin/users/" + u.id + "/toggle-verification",
          u.is_verified ? "Marked unverified" : "Verified");
        if (u.is_deleted) act("Restore", "POST", "/users/" + u.id + "/restore", "Restored");
        else act("Soft delete", "DELETE", "/users/" + u.id + "/soft", "Soft-deleted", true);
      }
      if (!page.items.length) cell(body.insertRow(), "No accounts match.").colSpan = 6;
    } catch (e) {
      say($("user-result"), "failed", e.message);
    }
  }

  $("user-search").addEventListener("submit", (e) => { e.preventDefault(); loadAccounts(); });
  $("include-deleted").addEventListener("change", loadAccounts);
})();
