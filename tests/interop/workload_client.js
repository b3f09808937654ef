#!/usr/bin/env node
// Independent SPIFFE Workload API client (@grpc/grpc-js + @grpc/proto-loader)
// for meshid's agent socket. It loads OUR proto/spiffe/workload.proto: no
// official copy ships in node_modules, and ours is field-checked against the
// upstream table by check_protos.js. Every call carries the metadata
// "workload.spiffe.io: true" except in mode no-header.
//
// Usage: node workload_client.js SOCKET MODE [OPTIONS]
//   SOCKET        /path/to/agent.sock or unix:/path/to/agent.sock
//   fetch-x509    FetchX509SVID: print each response (SVIDs with their chain's
//                 subjects/serials/URI SAN, key type, bundle and federated
//                 bundle certificate counts)
//   bundles       FetchX509Bundles: print each response (trust domain -> certs)
//   jwt-bundles   FetchJWTBundles: print each response (trust domain -> JWKS)
//   jwt-svid      FetchJWTSVID: prints the status (UNIMPLEMENTED expected today)
//   no-header     FetchX509SVID without the security header; succeeds (exit 0)
//                 iff the server answers INVALID_ARGUMENT
// Options: --count N (stop after N stream messages, default 1),
//          --timeout MS (overall, default 20000),
//          --expect-code N (the call must end with gRPC status N; exit 0 then).
// Output: one JSON object per line; exit 0 on success, 1 on failure, 2 usage.
'use strict';
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');

function usage(msg) {
  if (msg) console.error(msg);
  console.error('usage: workload_client.js SOCKET fetch-x509|bundles|jwt-bundles|jwt-svid|no-header ' +
    '[--count N] [--timeout MS] [--expect-code N]');
  process.exit(2);
}

const argv = process.argv.slice(2);
const opts = { count: 1, timeout: 20000, expectCode: null };
const pos = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '--count') opts.count = parseInt(val(), 10);
  else if (a === '--timeout') opts.timeout = parseInt(val(), 10);
  else if (a === '--expect-code') opts.expectCode = parseInt(val(), 10);
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else pos.push(a);
}
if (pos.length !== 2) usage();
const [sock, mode] = pos;
const target = sock.startsWith('unix:') ? sock : `unix:${sock}`;

const def = loader.loadSync('spiffe/workload.proto', {
  includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: true,
});
const WL = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI;
const client = new WL(target, grpc.credentials.createInsecure());

function print(obj) { console.log(JSON.stringify(obj)); }
function finish(code) { clearTimeout(overall); client.close(); process.exit(code); }
function fail(what, err) {
  print({ ok: false, what, code: err && err.code, details: err && (err.details || err.message) });
  finish(1);
}
const overall = setTimeout(() => fail('timeout', { message: `no result within ${opts.timeout} ms` }),
  opts.timeout);

// Splits concatenated DER certificates (each a SEQUENCE with a definite length).
function splitDer(buf) {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    if (buf[off] !== 0x30 || off + 2 > buf.length) throw new Error(`bad DER at offset ${off}`);
    let len = buf[off + 1];
    let hdr = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4 || off + 2 + n > buf.length) throw new Error(`bad DER length at ${off}`);
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + buf[off + 2 + k];
      hdr += n;
    }
    if (off + hdr + len > buf.length) throw new Error(`truncated DER at ${off}`);
    out.push(buf.subarray(off, off + hdr + len));
    off += hdr + len;
  }
  return out;
}

function describeCert(der) {
  const c = new crypto.X509Certificate(der);
  return { subject: c.subject, serial: c.serialNumber, uri_san: c.subjectAltName || null, ca: c.ca,
    not_after: c.validTo };
}

function describeCerts(buf) { return splitDer(Buffer.from(buf)).map(describeCert); }

function md(withHeader) {
  const m = new grpc.Metadata();
  if (withHeader) m.set('workload.spiffe.io', 'true');
  return m;
}

function onStatusEnd(err) {
  if (opts.expectCode !== null && err && err.code === opts.expectCode) {
    print({ ok: true, code: err.code, details: err.details });
    finish(0);
  }
  fail('call', err);
}

function stream(method, withHeader, describe) {
  let n = 0;
  let done = false;
  const call = client[method]({}, md(withHeader));
  call.on('data', (resp) => {
    n++;
    let o;
    try { o = describe(resp); } catch (e) { fail('decode', e); }
    print(o);
    if (n >= opts.count && opts.expectCode === null) { done = true; call.cancel(); finish(0); }
  });
  call.on('error', (e) => { if (!done) onStatusEnd(e); });
  call.on('end', () => { if (!done && opts.expectCode === null) fail('stream', { message: 'server ended the stream' }); });
}

function describeSvids(resp) {
  const keyType = (der) => {
    try { return crypto.createPrivateKey({ key: Buffer.from(der), format: 'der', type: 'pkcs8' }).asymmetricKeyType; }
    catch (e) { throw new Error(`x509_svid_key is not PKCS#8 DER: ${e.message}`); }
  };
  const fed = {};
  for (const [td, der] of Object.entries(resp.federated_bundles || {})) fed[td] = describeCerts(der).length;
  return {
    type: 'x509_svid_response',
    svids: (resp.svids || []).map((s) => ({
      spiffe_id: s.spiffe_id, hint: s.hint, chain: describeCerts(s.x509_svid),
      key_type: keyType(s.x509_svid_key), bundle_certs: describeCerts(s.bundle).length,
    })),
    federated_bundles: fed,
  };
}

function describeBundles(resp) {
  const b = {};
  for (const [td, der] of Object.entries(resp.bundles || {})) b[td] = describeCerts(der);
  return { type: 'x509_bundles_response', bundles: b };
}

function describeJwtBundles(resp) {
  const b = {};
  for (const [td, jwks] of Object.entries(resp.bundles || {})) b[td] = JSON.parse(Buffer.from(jwks).toString('utf8'));
  return { type: 'jwt_bundles_response', bundles: b };
}

switch (mode) {
  case 'fetch-x509': stream('FetchX509SVID', true, describeSvids); break;
  case 'bundles': stream('FetchX509Bundles', true, describeBundles); break;
  case 'jwt-bundles': stream('FetchJWTBundles', true, describeJwtBundles); break;
  case 'no-header':
    if (opts.expectCode === null) opts.expectCode = grpc.status.INVALID_ARGUMENT;
    stream('FetchX509SVID', false, (r) => { throw new Error(`got a response without the header: ${JSON.stringify(r)}`); });
    break;
  case 'jwt-svid':
    client.FetchJWTSVID({ audience: ['interop'] }, md(true), { deadline: new Date(Date.now() + opts.timeout) },
      (err, resp) => {
        if (err) onStatusEnd(err);
        else { print({ type: 'jwt_svid_response', svids: resp.svids }); finish(0); }
      });
    break;
  default: usage(`unknown mode ${mode}`);
}
