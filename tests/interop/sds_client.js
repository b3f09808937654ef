#!/usr/bin/env node
// Independent SDS client for meshid's agent socket, built only from Envoy's
// OFFICIAL protos (the copies @grpc/grpc-js-xds ships in deps/) with
// @grpc/grpc-js + @grpc/proto-loader; Secret and SPIFFECertValidatorConfig
// payloads inside google.protobuf.Any are decoded with protobufjs.
//
// Usage: node sds_client.js SOCKET MODE [ARGS...] [OPTIONS]
//   SOCKET                 /path/to/agent.sock or unix:/path/to/agent.sock
//   stream NAMES...        StreamSecrets (SotW): request NAMES, print each response
//                          as one JSON line with decoded secrets, ACK it.
//     --count N            stop after N responses (default 1)
//     --nack-next          NACK the first response (error_detail) instead of ACKing
//                          it, then expect nothing more for --quiet-ms
//     --stale-check        after the first response, send a request carrying a
//                          stale nonce and a changed name set; expect nothing back
//                          within --quiet-ms (exit 1 if something comes)
//     --quiet-ms MS        window for --nack-next / --stale-check (default 1000)
//   delta NAMES...         DeltaSecrets: subscribe NAMES, print responses, ACK them.
//     --count N            as above
//     --initial NAME=VER   initial_resource_versions entry (repeatable)
//     --nack-next          NACK the first response
//   fetch NAMES...         FetchSecrets (unary): print the response, or the error
//   write DIR              get "default" and "ROOTCA" and write DIR/cert.pem
//                          (chain), DIR/key.pem (0600) and DIR/ca.pem
//   watch-rotation SECONDS stream "default" for SECONDS and print the serial number
//                          of every certificate pushed; final line {"rotations":N}
// Common options: --timeout MS (overall, default 20000), --show-keys (print
// private keys in JSON output; off by default).
//
// Output: one JSON object per line. Exit 0 on success, 1 on any failure or
// unexpected status (printed as {"ok":false,...}), 2 on usage errors.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const LOADER_DIR = path.dirname(require.resolve('@grpc/proto-loader/package.json'));
const protobuf = require(require.resolve('protobufjs', { paths: [LOADER_DIR] }));

const SECRET_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const SPIFFE_TYPE =
  'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';
const DEPS = path.join(__dirname, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const INCLUDE = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate']
  .map((d) => path.join(DEPS, d))
  .concat([path.dirname(require.resolve('protobufjs/package.json', { paths: [LOADER_DIR] }))]);

// ---- arguments ---------------------------------------------------------------

function usage(msg) {
  if (msg) console.error(msg);
  console.error('usage: sds_client.js SOCKET stream|delta|fetch NAMES... | write DIR | ' +
    'watch-rotation SECONDS [--count N] [--nack-next] [--stale-check] [--quiet-ms MS] ' +
    '[--initial NAME=VER] [--timeout MS] [--show-keys]');
  process.exit(2);
}

const argv = process.argv.slice(2);
const opts = { count: 1, nackNext: false, staleCheck: false, quietMs: 1000, timeout: 20000,
  initial: {}, showKeys: false };
const pos = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '--count') opts.count = parseInt(val(), 10);
  else if (a === '--nack-next') opts.nackNext = true;
  else if (a === '--stale-check') opts.staleCheck = true;
  else if (a === '--quiet-ms') opts.quietMs = parseInt(val(), 10);
  else if (a === '--timeout') opts.timeout = parseInt(val(), 10);
  else if (a === '--show-keys') opts.showKeys = true;
  else if (a === '--initial') {
    const kv = val(); const eq = kv.indexOf('=');
    if (eq <= 0) usage('--initial wants NAME=VERSION');
    opts.initial[kv.slice(0, eq)] = kv.slice(eq + 1);
  } else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else pos.push(a);
}
if (pos.length < 2) usage();
const [sock, mode, ...rest] = pos;
const target = sock.startsWith('unix:') ? sock : `unix:${sock}`;

// ---- protos ------------------------------------------------------------------

const def = loader.loadSync('envoy/service/secret/v3/sds.proto', {
  includeDirs: INCLUDE, keepCase: true, longs: String, enums: String, defaults: false, oneofs: true,
});
const SDS = grpc.loadPackageDefinition(def).envoy.service.secret.v3.SecretDiscoveryService;

const root = new protobuf.Root();
root.resolvePath = (origin, target) => {
  for (const d of INCLUDE) {
    const p = path.join(d, target);
    if (fs.existsSync(p)) return p;
  }
  return protobuf.util.path.resolve(origin, target);
};
root.loadSync([
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
], { keepCase: true });
const SecretT = root.lookupType('envoy.extensions.transport_sockets.tls.v3.Secret');
const SpiffeT = root.lookupType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');

// ---- decoding ------------------------------------------------------------------

function dsText(ds) {
  if (!ds) return null;
  if (ds.inline_bytes) return Buffer.from(ds.inline_bytes).toString('utf8');
  if (ds.inline_string) return ds.inline_string;
  return ds.filename ? `file:${ds.filename}` : null;
}

function decodeSecret(any) {
  if (any.type_url !== SECRET_TYPE) throw new Error(`unexpected resource type_url ${any.type_url}`);
  const s = SecretT.toObject(SecretT.decode(any.value), { longs: String, bytes: Buffer });
  const out = { name: s.name };
  if (s.tls_certificate) {
    const chain = dsText(s.tls_certificate.certificate_chain);
    const key = dsText(s.tls_certificate.private_key);
    out.tls_certificate = {
      certificate_chain: chain,
      private_key: opts.showKeys ? key : `(${key ? key.length : 0} bytes)`,
      leaf_serial: chain ? leafSerial(chain) : null,
    };
    Object.defineProperty(out, '_key', { value: key, enumerable: false });
  }
  if (s.validation_context) {
    const vc = s.validation_context;
    out.validation_context = {};
    if (vc.trusted_ca) out.validation_context.trusted_ca = dsText(vc.trusted_ca);
    if (vc.custom_validator_config) {
      const c = vc.custom_validator_config;
      const o = { name: c.name, type_url: c.typed_config && c.typed_config.type_url };
      if (o.type_url !== SPIFFE_TYPE) throw new Error(`unexpected validator type_url ${o.type_url}`);
      const cfg = SpiffeT.toObject(SpiffeT.decode(c.typed_config.value), { bytes: Buffer });
      o.trust_domains = (cfg.trust_domains || []).map((td) => ({
        name: td.name, trust_bundle: dsText(td.trust_bundle),
      }));
      out.validation_context.custom_validator_config = o;
    }
  }
  return out;
}

function leafSerial(pem) {
  const m = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/);
  return m ? new crypto.X509Certificate(m[0]).serialNumber : null;
}

function print(obj) { console.log(JSON.stringify(obj)); }
function fail(what, err) {
  print({ ok: false, what, code: err && err.code, details: err && (err.details || err.message) });
  process.exit(1);
}

const client = new SDS(target, grpc.credentials.createInsecure());
const node = { id: 'sds-client-js', cluster: 'interop', user_agent_name: 'meshid-interop' };
const overall = setTimeout(() => fail('timeout', { message: `no result within ${opts.timeout} ms` }),
  opts.timeout);

function finish(code) {
  clearTimeout(overall);
  client.close();
  process.exit(code);
}

// ---- modes ---------------------------------------------------------------------

// SotW stream. onResponse(resp, decoded, n) returns 'ack', 'nack' or 'stop'.
function sotw(names, onResponse) {
  const call = client.StreamSecrets();
  let nonce = '';
  let acked = '';
  let n = 0;
  let ended = false;
  call.on('data', (resp) => {
    n++;
    let secrets;
    try { secrets = (resp.resources || []).map(decodeSecret); } catch (e) { fail('decode', e); }
    if (resp.type_url !== SECRET_TYPE) fail('type_url', { message: resp.type_url });
    nonce = resp.nonce;
    const verdict = onResponse(resp, secrets, n, call);
    if (verdict === 'stop') return;
    const req = { type_url: SECRET_TYPE, resource_names: names, response_nonce: nonce };
    if (verdict === 'nack') {
      req.version_info = acked;
      req.error_detail = { code: 13, message: 'rejected by sds_client.js --nack-next' };
    } else {
      acked = resp.version_info;
      req.version_info = acked;
    }
    call.write(req);
  });
  call.on('error', (e) => { if (!ended) fail('stream', e); });
  call.on('end', () => { if (!ended) fail('stream', { message: 'server ended the stream' }); });
  call.write({ type_url: SECRET_TYPE, resource_names: names, node, version_info: '', response_nonce: '' });
  return { stop: () => { ended = true; call.cancel(); }, lastNonce: () => nonce };
}

function modeStream(names) {
  if (names.length === 0) usage('stream needs resource names');
  let quietTimer = null;
  const s = sotw(names, (resp, secrets, n, call) => {
    if (quietTimer) fail('quiet', { message: `unexpected response ${resp.version_info} after NACK/stale request` });
    print({ type: 'response', version_info: resp.version_info, nonce: resp.nonce, resources: secrets });
    if (n === 1 && opts.nackNext) {
      quietTimer = setTimeout(() => { print({ nack: 'no resend', quiet_ms: opts.quietMs }); s.stop(); finish(0); },
        opts.quietMs);
      return 'nack';
    }
    if (n === 1 && opts.staleCheck) {
      // ACK first, then a request answering a nonce we never received, with
      // one more name: the server must ignore it entirely.
      setImmediate(() => {
        call.write({ type_url: SECRET_TYPE, resource_names: names.concat(['ROOTCA', 'ALL']),
          response_nonce: `stale-${resp.nonce}-x`, version_info: resp.version_info });
        quietTimer = setTimeout(() => { print({ stale_check: 'ok', quiet_ms: opts.quietMs }); s.stop(); finish(0); },
          opts.quietMs);
      });
      return 'ack';
    }
    if (n >= opts.count) { s.stop(); finish(0); return 'stop'; }
    return 'ack';
  });
}

function modeDelta(names) {
  if (names.length === 0) usage('delta needs resource names');
  const call = client.DeltaSecrets();
  let n = 0;
  let ended = false;
  call.on('data', (resp) => {
    n++;
    let res;
    try {
      res = (resp.resources || []).map((r) => ({ name: r.name, version: r.version,
        secret: r.resource ? decodeSecret(r.resource) : null }));
    } catch (e) { fail('decode', e); }
    print({ type: 'delta_response', nonce: resp.nonce, system_version_info: resp.system_version_info,
      resources: res, removed_resources: resp.removed_resources || [] });
    const req = { type_url: SECRET_TYPE, response_nonce: resp.nonce };
    if (n === 1 && opts.nackNext) req.error_detail = { code: 13, message: 'rejected by sds_client.js' };
    call.write(req);
    if (n >= opts.count) { ended = true; setTimeout(() => { call.cancel(); finish(0); }, 50); }
  });
  call.on('error', (e) => { if (!ended) fail('delta', e); });
  call.on('end', () => { if (!ended) fail('delta', { message: 'server ended the stream' }); });
  call.write({ type_url: SECRET_TYPE, node, resource_names_subscribe: names,
    initial_resource_versions: opts.initial });
}

function modeFetch(names) {
  client.FetchSecrets({ type_url: SECRET_TYPE, resource_names: names, node },
    { deadline: new Date(Date.now() + opts.timeout) }, (err, resp) => {
      if (err) fail('fetch', err);
      let secrets;
      try { secrets = (resp.resources || []).map(decodeSecret); } catch (e) { fail('decode', e); }
      print({ type: 'response', version_info: resp.version_info, nonce: resp.nonce, resources: secrets });
      finish(0);
    });
}

function modeWrite(dir) {
  if (!dir) usage('write needs a directory');
  fs.mkdirSync(dir, { recursive: true });
  const got = {};
  const s = sotw(['default', 'ROOTCA'], (resp, secrets) => {
    for (const sec of secrets) got[sec.name] = sec;
    if (!got.default || !got.ROOTCA) return 'ack';
    const tc = got.default.tls_certificate;
    const ca = got.ROOTCA.validation_context && got.ROOTCA.validation_context.trusted_ca;
    if (!tc || !ca) fail('write', { message: 'default or ROOTCA has the wrong secret type' });
    fs.writeFileSync(path.join(dir, 'cert.pem'), tc.certificate_chain);
    fs.writeFileSync(path.join(dir, 'key.pem'), got.default._key, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'ca.pem'), ca);
    print({ ok: true, dir, files: ['cert.pem', 'key.pem', 'ca.pem'], leaf_serial: tc.leaf_serial });
    s.stop();
    finish(0);
    return 'stop';
  });
}

function modeWatch(seconds) {
  const secs = parseFloat(seconds);
  if (!(secs > 0)) usage('watch-rotation needs SECONDS > 0');
  clearTimeout(overall);
  let rotations = -1; // the first response is the initial certificate
  let last = null;
  const s = sotw(['default'], (resp, secrets) => {
    const d = secrets.find((x) => x.name === 'default');
    if (d && d.tls_certificate) {
      const serial = d.tls_certificate.leaf_serial;
      if (serial === last) fail('watch', { message: `certificate ${serial} pushed twice` });
      last = serial;
      rotations++;
      print({ type: 'certificate', version_info: resp.version_info, serial, at: new Date().toISOString() });
    }
    return 'ack';
  });
  setTimeout(() => { print({ rotations: Math.max(rotations, 0) }); s.stop(); finish(0); }, secs * 1000);
}

switch (mode) {
  case 'stream': modeStream(rest); break;
  case 'delta': modeDelta(rest); break;
  case 'fetch': modeFetch(rest); break;
  case 'write': modeWrite(rest[0]); break;
  case 'watch-rotation': modeWatch(rest[0]); break;
  default: usage(`unknown mode ${mode}`);
}
