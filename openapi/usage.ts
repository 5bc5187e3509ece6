// Type-checked (tsc --strict) against the types openapi-typescript generates from
// openapi/openapi.json into api.d.ts (see check-clients.sh). Not run: it proves the types fit.
import type { components, paths } from "./api";

type ExecuteRequest = components["schemas"]["ExecuteRequest"];
type ExecuteResponse = components["schemas"]["ExecuteResponse"];
type FindResponse =
  paths["/api/v4/store/find"]["post"]["responses"][200]["content"]["application/json"];
type CreateKey = components["schemas"]["CreateKey"];

export async function execute(
  baseUrl: string,
  key: string,
  body: ExecuteRequest,
  txnId?: number,
): Promise<ExecuteResponse> {
  const headers: Record<string, string> = {
    Authorization: `Bearer ${key}`,
    "Content-Type": "application/json",
  };
  if (txnId !== undefined) headers["X-DITTO-TXN-ID"] = String(txnId);
  const resp = await fetch(`${baseUrl}/api/v4/store/execute`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  return (await resp.json()) as ExecuteResponse;
}

export async function insertThenSelect(baseUrl: string, key: string): Promise<string[]> {
  const written = await execute(baseUrl, key, {
    statement: "INSERT INTO cars DOCUMENTS (:car)",
    args: { car: { _id: "1", color: "blue" } },
  });
  const queryType: "select" | "mutation" | "unknown" = written.queryType;
  if (queryType === "unknown") {
    throw new Error(`${written.error.code}: ${written.error.description}`);
  }
  const read = await execute(
    baseUrl,
    key,
    { statement: "SELECT * FROM cars" },
    written.transactionId,
  );
  const count: number = read.totalWarningsCount;
  return read.items.map((item) => `${String(item["color"])} (${count} warnings)`);
}

export function ids(found: FindResponse): unknown[] {
  return found.documents.map((d) => d.id);
}

export const newKey: CreateKey = {
  name: "me",
  permissions: {
    read: { everything: true },
    write: { queriesByCollection: { cars: ["true"] } },
  },
};
