// The account and task flow, written against TypeScript types generated from the spec
// (openapi-typescript) and openapi-fetch. Type-checked with `tsc --noEmit` before it runs.
// Run by tests/clients/run.sh: server at $KEEL_URL, maildev API at $MAILDEV_URL.
import { createHmac } from "node:crypto";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Problem = components["schemas"]["Problem"];

const BASE = process.env.KEEL_URL!;
const MAILDEV = process.env.MAILDEV_URL!;

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForToken(address: string): Promise<string> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const messages = (await (await fetch(`${MAILDEV}/api/email`)).json()) as Array<{
      to: Array<{ address: string }>;
      text: string;
    }>;
    for (const m of messages) {
      const match = /verify-email\?token=([A-Za-z0-9_-]+)/.exec(m.text);
      if (m.to.some((t) => t.address === address) && match) return match[1];
    }
    await sleep(200);
  }
  throw new Error(`no verification mail for ${address}`);
}

// RFC 6238 (SHA-1, 6 digits, 30 s), as an authenticator app computes it.
function totp(base32Secret: string, step: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of base32Secret) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from((bits.match(/.{8}/g) ?? []).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const digest = createHmac("sha1", key).update(counter).digest();
  const offset = digest[19] & 0x0f;
  const number = digest.readUInt32BE(offset) & 0x7fffffff;
  return String(number % 1_000_000).padStart(6, "0");
}

async function main(): Promise<void> {
  const client = createClient<paths>({ baseUrl: BASE });
  const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  const email = `ts-${tag}@example.com`;
  const username = `ts${tag}`;
  const password = "TypeScript123!";

  const created = await client.POST("/auth/register", { body: { email, username, password } });
  check(created.response.status === 201 && created.data?.email === email, "register");

  const duplicate = await client.POST("/auth/register", { body: { email, username, password } });
  const problem: Problem | undefined = duplicate.error;
  check(duplicate.response.status === 409 && problem?.code === "email_already_exists", "duplicate refused");

  const verified = await client.POST("/auth/verify-email", { body: { token: await waitForToken(email) } });
  check(verified.data?.verified === true, "verify email");

  const login = await client.POST("/auth/login", {
    body: { username: email, password },
    bodySerializer: (body) => new URLSearchParams(body as Record<string, string>),
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  check(login.data?.token_type === "bearer", `login: ${JSON.stringify(login.error)}`);
  const tokens = login.data;
  const auth = { Authorization: `Bearer ${tokens.access_token}` };

  const me = await client.GET("/users/me", { headers: auth });
  check(me.data?.username === username, "users/me");

  const users = await client.GET("/users", { params: { query: { page: 1, size: 5 } }, headers: auth });
  check((users.data?.metadata.total ?? 0) >= 1, "list users");

  const task = await client.POST("/system/background-tasks/test-task", {
    body: { message: "from typescript" },
    headers: auth,
  });
  check(task.response.status === 202 && task.data, "submit task");
  const taskId = task.data.task_id;
  for (let deadline = Date.now() + 15_000; ; ) {
    const status = await client.GET("/system/background-tasks/task-status/{task_id}", {
      params: { path: { task_id: taskId } },
      headers: auth,
    });
    check(status.data, "task status");
    if (status.data.status === "SUCCESS") {
      check((status.data.result as { message?: string }).message === "from typescript", "task result");
      break;
    }
    check(Date.now() < deadline, `task stuck in ${status.data.status}`);
    await sleep(200);
  }

  const refreshed = await client.POST("/auth/refresh", { body: { refresh_token: tokens.refresh_token } });
  check(refreshed.data && refreshed.data.refresh_token !== tokens.refresh_token, "refresh rotates");
  const replay = await client.POST("/auth/refresh", { body: { refresh_token: tokens.refresh_token } });
  check(replay.response.status === 401 && replay.error?.code === "token_invalid", "replay refused");

  const again = await client.POST("/auth/login", {
    body: { username, password },
    bodySerializer: (body) => new URLSearchParams(body as Record<string, string>),
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  check(again.data, "login again");
  const auth2 = { Authorization: `Bearer ${again.data.access_token}` };
  const out = await client.POST("/auth/logout", { headers: auth2 });
  check(out.response.status === 200, "logout");
  const after = await client.GET("/users/me", { headers: auth2 });
  check(after.response.status === 401 && after.error?.code === "session_revoked", "token dead after logout");

  // Two-factor sign-in: set up, confirm with a code, then sign in in two steps.
  const form = {
    bodySerializer: (body: unknown) => new URLSearchParams(body as Record<string, string>),
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  };
  const third = await client.POST("/auth/login", { body: { username: email, password }, ...form });
  check(third.data, "login before two-factor set-up");
  const auth3 = { Authorization: `Bearer ${third.data.access_token}` };
  const setup = await client.POST("/auth/mfa/totp/setup", { body: { password }, headers: auth3 });
  check(setup.data, `mfa setup: ${JSON.stringify(setup.error)}`);
  const step = Math.floor(Date.now() / 30_000);
  const confirmed = await client.POST("/auth/mfa/totp/confirm", {
    body: { code: totp(setup.data.secret, step) },
    headers: auth3,
  });
  check(confirmed.data?.recovery_codes.length === 10, `mfa confirm: ${JSON.stringify(confirmed.error)}`);
  const meNow = await client.GET("/users/me", { headers: auth3 });
  check(meNow.data?.mfa_enabled === true, "mfa_enabled shown");
  const first = await client.POST("/auth/login", { body: { username: email, password }, ...form });
  check(first.response.status === 401 && first.error?.code === "mfa_required", "password step");
  const mfaToken = first.error.mfa_token;
  check(mfaToken, "mfa_token in the problem");
  // A code serves once: the next step's code (accepted for clock drift).
  const second = await client.POST("/auth/mfa/verify", {
    body: { mfa_token: mfaToken, code: totp(setup.data.secret, step + 1) },
  });
  check(second.data?.token_type === "bearer", `mfa verify: ${JSON.stringify(second.error)}`);
  const final = await client.GET("/users/me", { headers: { Authorization: `Bearer ${second.data.access_token}` } });
  check(final.data?.email === email, "signed in with two factors");
  console.log("typescript client scenario: ok");
}

main().catch((e) => {
  console.error("typescript client scenario FAILED:", e);
  process.exit(1);
});
