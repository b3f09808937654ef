#!/usr/bin/env node
// Proxyless gRPC through meshid: a real @grpc/grpc-js-xds client resolves
// `xds:///HOST:PORT` through meshid's ADS server (plaintext port) to local
// gRPC test servers (meshid.test.v1.Echo), and follows endpoint changes made
// with the meshid CLI without restarting:
//   1. endpoint 127.0.0.1:A            -> every call answered by A
//   2. same address, new port C        -> every call answered by C   (new port)
//   3. add endpoint 127.0.0.2:B        -> calls answered by both B and C
//   4. remove endpoint 127.0.0.1       -> every call answered by B   (removed endpoint)
//
// Usage: node xds_grpc_client.js --meshid BIN --data-dir DIR --xds HOST:PORT
//          --host echo.default.svc --port 7000 --spiffe-id spiffe://td/ns/default/sa/client
//          [--proto-root DIR] [--step-timeout MS]
// Prints one JSON line per step and {"ok":true} at the end; exit 1 on failure.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const args = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
    console.error(`bad argument ${argv[i]}`);
    process.exit(2);
  }
  args[argv[i].slice(2)] = argv[i + 1];
}
for (const k of ['meshid', 'data-dir', 'xds', 'host', 'port', 'spiffe-id']) {
  if (!args[k]) { console.error(`--${k} is required`); process.exit(2); }
}
const protoRoot = args['proto-root'] || path.join(__dirname, '..', '..', 'proto');
const stepTimeout = parseInt(args['step-timeout'] || '20000', 10);

// The bootstrap must be in place before grpc-js-xds reads it (on first use).
process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
  xds_servers: [{ server_uri: args.xds, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
  node: { id: args['spiffe-id'], cluster: 'interop', metadata: { GENERATOR: 'grpc' }, locality: {} },
});
require('@grpc/grpc-js-xds').register();

const def = loader.loadSync('meshid/test/v1/echo.proto', { includeDirs: [protoRoot], defaults: true });
const pkg = grpc.loadPackageDefinition(def).meshid.test.v1;

function out(o) { console.log(JSON.stringify(o)); }
let client = null;
const servers = [];
function finish(code) {
  if (client) client.close();
  for (const s of servers) s.forceShutdown();
  process.exit(code);
}
function fail(what, details) { out({ ok: false, what, details }); finish(1); }

// A test server that answers with its own label.
function startServer(label, addr) {
  return new Promise((resolve, reject) => {
    const srv = new grpc.Server();
    srv.addService(pkg.Echo.service, {
      Echo: (call, cb) => cb(null, { text: label, seq: 0, peer: '' }),
    });
    srv.bindAsync(`${addr}:0`, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) return reject(err);
      servers.push(srv);
      resolve(port);
    });
  });
}

function meshid(...a) {
  try {
    return execFileSync(args.meshid, ['--data-dir', args['data-dir'], ...a], { encoding: 'utf8' });
  } catch (e) {
    fail(`meshid ${a.join(' ')}`, `${e.stderr || e.message}`);
  }
  return '';
}

function callOnce() {
  return new Promise((resolve) => {
    client.Echo({ text: 'hi' }, { deadline: new Date(Date.now() + 2000) }, (err, resp) => {
      resolve(err ? `error:${err.code}` : resp.text);
    });
  });
}

// Calls until `done(labels of the last window)` holds for a window of 10 calls.
async function until(step, done) {
  const t0 = Date.now();
  let window = [];
  for (;;) {
    const r = await callOnce();
    window.push(r);
    if (window.length > 10) window.shift();
    if (window.length === 10 && done(window)) {
      out({ step, ok: true, ms: Date.now() - t0, answers: [...new Set(window)].sort() });
      return;
    }
    if (Date.now() - t0 > stepTimeout) fail(step, `last answers: ${window.join(',')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  const pA = await startServer('A', '127.0.0.1');
  const pB = await startServer('B', '127.0.0.2');
  const pC = await startServer('C', '127.0.0.1');
  const svc = args.host.split('.')[0];
  const yaml = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'meshid-xds-')), 'echo.yaml');
  fs.writeFileSync(yaml, [
    'apiVersion: networking.istio.io/v1',
    'kind: ServiceEntry',
    'metadata:',
    `  name: ${svc}`,
    '  namespace: default',
    'spec:',
    `  hosts: ["${args.host}"]`,
    '  location: MESH_INTERNAL',
    '  resolution: STATIC',
    '  ports:',
    `  - {number: ${args.port}, name: grpc-echo, protocol: GRPC}`,
    '  endpoints:',
    `  - address: 127.0.0.1`,
    `    ports: {grpc-echo: ${pA}}`,
    '',
  ].join('\n'));
  meshid('apply', '-f', yaml);

  client = new pkg.Echo(`xds:///${args.host}:${args.port}`, grpc.credentials.createInsecure());
  await until('resolve', (w) => w.every((x) => x === 'A'));

  meshid('endpoint', 'add', '--service', `default/${svc}`, '--address', '127.0.0.1', '--port', `grpc-echo=${pC}`);
  await until('new-port', (w) => w.every((x) => x === 'C'));

  meshid('endpoint', 'add', '--service', `default/${svc}`, '--address', '127.0.0.2', '--port', `grpc-echo=${pB}`);
  await until('added-endpoint', (w) => w.includes('B') && w.includes('C') && w.every((x) => x === 'B' || x === 'C'));

  meshid('endpoint', 'remove', '--service', `default/${svc}`, '--address', '127.0.0.1');
  await until('removed-endpoint', (w) => w.every((x) => x === 'B'));

  out({ ok: true });
  finish(0);
}

main().catch((e) => fail('exception', e.stack || String(e)));
