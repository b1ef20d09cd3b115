// One claim's lifecycle through Connect's own Node.js clients, with descriptors from our proto.
// Usage: node lifecycle.mjs DESCRIPTORS.bin TRANSPORT BASE_URL MODULE.wasm AGENT_TOKEN AUDITOR_TOKEN
// TRANSPORT: connect-json | connect-binary (Connect over HTTP/1.1) | grpc (connect-node's gRPC).
// Prints one JSON line: the ExecuteClaimV2 and FetchCapsule answers and the error case's code.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { createFileRegistry, fromBinary, fromJson, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";

const [descriptors, kind, baseUrl, modulePath, agent, auditor] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const service = registry.getService("evidenceos.v2.EvidenceOS");
const transport =
  kind === "grpc"
    ? createGrpcTransport({ baseUrl })
    : createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: kind === "connect-binary" });
const client = createClient(service, transport);

// Calls `method` with a request given as proto3 JSON; returns the answer as proto3 JSON.
async function call(method, json, token, requestId) {
  const descriptor = service.methods.find((m) => m.name === method);
  const request = fromJson(descriptor.input, json, { registry });
  const headers = { authorization: `Bearer ${token}` };
  if (requestId) headers["x-request-id"] = requestId;
  const answer = await client[descriptor.localName](request, { headers, timeoutMs: 30000 });
  return toJson(descriptor.output, answer, { registry });
}

const module = readFileSync(modulePath);
const name = `interop-${kind}`;
const created = await call(
  "CreateClaimV2",
  {
    claimName: name,
    metadata: { lane: "fast", alphaMicros: 50000, epochConfigRef: "epoch/v1", outputSchemaId: "EVIDENCEOS_SC_V0" },
    signals: {},
    holdoutRef: "demo",
    epochSize: "1",
    oracleNumSymbols: 4,
    accessCredit: "64",
    oracleId: "accuracy",
  },
  agent,
  `create-${name}`,
);
const claimId = created.claimId;
const states = [created.state];
const commit = {
  claimId,
  artifacts: [{ artifactHash: createHash("sha256").update(module).digest("base64"), kind: "wasm" }],
  wasmModule: module.toString("base64"),
};
states.push((await call("CommitArtifacts", commit, agent)).state);
states.push((await call("FreezeGates", { claimId }, agent)).state);
states.push((await call("SealClaim", { claimId }, agent)).state);
const executed = await call("ExecuteClaimV2", { claimId }, agent, `execute-${name}`);
const fetched = await call("FetchCapsule", { claimId }, auditor);

let error = null;
try {
  await call("FetchCapsule", { claimId }, "not-a-token");
} catch (e) {
  const connectError = ConnectError.from(e);
  error = { code: Code[connectError.code], message: connectError.rawMessage };
}
console.log(JSON.stringify({ states, executed, fetched, error }));
