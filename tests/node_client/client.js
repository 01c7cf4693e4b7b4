// A checkout client that is not Python's grpcio: @grpc/grpc-js with the repo's proto/.
// Started by tests/test_node_client.py, which checks what it prints.
//
//   node client.js TARGET CASE INCLUDE_DIR...
//
// CASE is "errors" (bad requests, then a normal quote on the same channel) or
// "no-deadline" (4 concurrent quotes without a deadline). Prints one JSON line
// per call: {"call", "code", "fields", "trailer_bytes", "message", "options"}.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const fs = require("fs");
const path = require("path");

const [target, caseName, ...includeDirs] = process.argv.slice(2);
const MB = 1 << 20;
const DEADLINE_MS = 20000;
const NYC = { latitude: 40.7128, longitude: -74.006 };

function loadService() {
  const definition = protoLoader.loadSync("oms/v1/checkout.proto", {
    includeDirs,
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(definition);
  return pkg.oms.v1.CheckoutService;
}

// google.rpc.Status and its details, from the googleapis protos the test points at.
function loadStatusTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
  return {
    status: root.lookupType("google.rpc.Status"),
    badRequest: root.lookupType("google.rpc.BadRequest"),
  };
}

// Bytes of grpc-message as sent: all but printable ASCII other than '%' are %XX.
function percentEncodedLength(text) {
  let n = 0;
  for (const b of Buffer.from(text || "", "utf8")) n += b >= 0x20 && b <= 0x7e && b !== 0x25 ? 1 : 3;
  return n;
}

function describe(types, call, err, response) {
  if (!err) {
    return { call, code: 0, options: response.options.length };
  }
  let trailer = "grpc-status".length + String(err.code).length;
  trailer += "grpc-message".length + percentEncodedLength(err.details);
  const fields = [];
  if (err.metadata) {
    for (const [key, values] of Object.entries(err.metadata.getMap())) {
      const value = Buffer.isBuffer(values) ? values : Buffer.from(String(values));
      trailer += key.length + (key.endsWith("-bin") ? 4 * Math.ceil(value.length / 3) : value.length);
    }
    const raw = err.metadata.get("grpc-status-details-bin");
    if (raw.length) {
      const status = types.status.decode(raw[0]);
      for (const detail of status.details) {
        if (detail.type_url.endsWith("/google.rpc.BadRequest")) {
          const bad = types.badRequest.decode(detail.value);
          for (const v of bad.field_violations || bad.fieldViolations || []) fields.push(v.field);
        }
      }
    }
  }
  return { call, code: err.code, fields, trailer_bytes: trailer, message: (err.details || "").slice(0, 200) };
}

function quote(client, types, call, request, { deadline = true } = {}) {
  const options = deadline ? { deadline: Date.now() + DEADLINE_MS } : {};
  return new Promise((resolve) => {
    client.QuoteDeliveryOptions(request, options, (err, response) => {
      resolve(describe(types, call, err, response));
    });
  });
}

function cart(lines) {
  return { destination: NYC, lines };
}

async function errors(client, types) {
  const unknown = [];
  for (let i = 0; i < 5000; i++) unknown.push({ sku: `NOPE-${i}`, quantity: 1 });
  const results = [];
  results.push(await quote(client, types, "5000-unknown-skus", cart(unknown)));
  results.push(await quote(client, types, "1mb-sku", cart([{ sku: "S".repeat(MB), quantity: 1 }])));
  // The same channel must go on serving.
  results.push(await quote(client, types, "normal-quote", cart([{ sku: "A", quantity: 1 }])));
  return results;
}

async function noDeadline(client, types) {
  const calls = [];
  for (let i = 0; i < 4; i++) {
    calls.push(quote(client, types, `no-deadline-${i}`, cart([{ sku: "A", quantity: 1 }]), { deadline: false }));
  }
  return Promise.all(calls);
}

async function main() {
  const Service = loadService();
  const types = loadStatusTypes();
  const client = new Service(target, grpc.credentials.createInsecure());
  const run = { errors, "no-deadline": noDeadline }[caseName];
  if (!run) throw new Error(`unknown case ${caseName}`);
  for (const result of await run(client, types)) process.stdout.write(JSON.stringify(result) + "\n");
  client.close();
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(2);
});
