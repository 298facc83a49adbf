// The README's session, written against the types openapi-typescript
// generates from the api's own /v1/openapi.json (schema.d.ts): tsc fails on
// a path, parameter, body or field the document does not have, and the run
// fails on an answer that is not the one the session expects.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const baseUrl = process.env.EPOCH_URL!;
const adminToken = process.env.EPOCH_ADMIN_TOKEN!;

function must<T>(what: string, r: { data?: T; error?: unknown; response: Response }): T {
  if (!r.response.ok || r.data === undefined) {
    throw new Error(`${what}: ${r.response.status} ${JSON.stringify(r.error)}`);
  }
  return r.data;
}

const admin = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${adminToken}` } });
const user = must("create a user", await admin.POST("/v1/users", { body: { name: "alice" } }));
const alice = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${user.token}` } });

const file = must("upload a file", await alice.POST("/v1/files", { body: { name: "report.pdf", size_bytes: 1500000 } }));
const job = must("create a job", await alice.POST("/v1/jobs", { body: { name: "q3" } }));
const link = await alice.PUT("/v1/jobs/{id}/files/{file_id}", { params: { path: { id: job.id, file_id: file.id } } });
const preview = must("link the file", link);
const position = Number(link.response.headers.get("Epoch-Position"));

const storage = must("storage", await alice.GET("/v1/storage", { params: { query: { min_position: position } } }));
const now = new Date();
const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
const nextMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
const yearStart = new Date(Date.UTC(now.getUTCFullYear(), 0, 1));
const nextYear = new Date(Date.UTC(now.getUTCFullYear() + 1, 0, 1));
const usage = must("usage", await alice.GET("/v1/usage", {
  params: { query: { from: yearStart.toISOString(), to: nextYear.toISOString(), min_position: position } },
}));
const days = must("usage by day", await alice.GET("/v1/usage", {
  params: { query: { from: monthStart.toISOString(), to: nextMonth.toISOString(), window: "day", tz: "Europe/Berlin" } },
}));
const statements = must("statements", await alice.GET("/v1/statements", {}));
const price = must("schedule a price", await admin.POST("/v1/admin/prices", {
  body: {
    effective_from: `${now.getUTCFullYear() + 4}-01-01T00:00:00Z`,
    currency: "EUR",
    tiers: [
      { up_to_gb_hours: "100", price_per_gb_hour: "0" },
      { up_to_gb_hours: null, price_per_gb_hour: "0.00002" },
    ],
  },
}));
const status = must("status", await admin.GET("/v1/admin/status", {}));

console.log(JSON.stringify({
  file: file.id,
  job: job.id,
  preview_files: preview.files.map((f) => f.id),
  position,
  storage_file_count: storage.file_count,
  usage_byte_seconds: usage.byte_seconds,
  day_windows: "items" in days ? days.items.length : -1,
  statements: statements.items.length,
  price_version: price.version,
  subscribers: status.subscribers.map((s) => s.name),
}));
