#!/usr/bin/env node
// Mutual-TLS traffic harness for CA rotation tests: two workloads keep making
// mTLS connections to each other, each always using the certificate, key and
// trust bundle most recently delivered by the meshid agent over SDS
// (StreamSecrets for "default" + "ROOTCA", loaded with Envoy's official protos
// from @grpc/grpc-js-xds's deps/, as in sds_client.js). See docs/testing.md.
//
// Usage:
//   node mtls_pair.js server SOCKET PORT [--expect-peer-id ID] [--stats FILE]
//       TLS server on 127.0.0.1:PORT (requestCert + rejectUnauthorized) that
//       swaps in every SDS push with setSecureContext (open connections keep
//       the old context). Each accepted connection must present exactly one
//       spiffe:// URI SAN (and equal ID if given); it is answered
//       "ok <own SPIFFE ID>\n" and closed. Prints {"listening":PORT,...} once
//       ready, one JSON stats line per second; on SIGTERM/SIGINT writes the
//       final summary to stdout (and FILE) and exits 0 iff nothing failed.
//   node mtls_pair.js client SOCKET PORT --expect-server-id ID --rate N
//       --duration S [--stats FILE]
//       SIGTERM/SIGINT end a client run early (expectation scaled to the time run).
//       Opens a fresh mTLS connection every 1/N s with the latest SDS
//       credentials, verifies the server chain against the latest ROOTCA and
//       its URI SAN == ID, reads the reply. Any TLS error, wrong identity or
//       reply, or no reply within 2 s counts as failed. One JSON line per
//       second, then a summary {"ok","failed","errors":[first 20],...}.
//       Exit 0 iff failed == 0 and ok >= 0.8 * N * S.
//   node mtls_pair.js probe PORT --cert F --key F --ca F [--expect-server-id ID]
//       ONE connection with the given PEM files (cert may be a chain). Exit 0
//       if the server answered "ok ...", 1 on any handshake/read failure
//       (the TLS error is printed), 2 on usage errors.
// SOCKET is /path/to/agent.sock or unix:/path/to/agent.sock.
// On a push that cannot be loaded into a SecureContext (bad PEM, key not
// matching the certificate) the harness NACKs it (error_detail) and keeps the
// previous credentials; every other push is ACKed. A broken SDS stream is
// re-opened every 500 ms (counted as sds_reconnects) with the old credentials
// still in use.
'use strict';
const fs = require('fs');
const path = require('path');
const tls = require('tls');
const crypto = require('crypto');

const SECRET_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const CONNECT_TIMEOUT_MS = 2000;
const MAX_ERRORS = 20;

function usage(msg) {
  if (msg) console.error(`mtls_pair.js: ${msg}`);
  console.error('usage: mtls_pair.js server SOCKET PORT [--expect-peer-id ID] [--stats FILE]\n' +
    '       mtls_pair.js client SOCKET PORT --expect-server-id ID --rate N --duration S [--stats FILE]\n' +
    '       mtls_pair.js probe PORT --cert F --key F --ca F [--expect-server-id ID]');
  process.exit(2);
}

// ---- arguments ---------------------------------------------------------------

const argv = process.argv.slice(2);
const opts = {};
const pos = [];
const VALUED = ['--stats', '--expect-server-id', '--expect-peer-id', '--rate', '--duration',
  '--cert', '--key', '--ca'];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (VALUED.includes(a)) {
    if (i + 1 >= argv.length) usage(`${a} needs a value`);
    opts[a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = argv[++i];
  } else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else pos.push(a);
}
const mode = pos[0];

function print(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function now() { return new Date().toISOString(); }

// ---- certificates -----------------------------------------------------------------

function pemBlocks(pem) {
  return (pem || '').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) || [];
}
function cn(dn) {
  const m = /(?:^|\n)CN=([^\n]*)/.exec(dn || '');
  return m ? m[1] : null;
}
// URI SANs of an X509Certificate (Node formats them "URI:x, DNS:y"; values
// with special characters are JSON-quoted).
function uriSans(x509) {
  const out = [];
  const s = x509 && x509.subjectAltName;
  if (!s) return out;
  const re = /(?:^|, )URI:("(?:[^"\\]|\\.)*"|[^,]*)/g;
  let m;
  while ((m = re.exec(s)) !== null) {
    out.push(m[1].startsWith('"') ? JSON.parse(m[1]) : m[1]);
  }
  return out;
}
// Exactly one URI SAN, starting with spiffe://; returns it or throws.
function spiffeId(x509, who) {
  if (!x509) throw new Error(`${who} presented no certificate`);
  const uris = uriSans(x509);
  if (uris.length !== 1) throw new Error(`${who} certificate has ${uris.length} URI SANs`);
  if (!uris[0].startsWith('spiffe://')) throw new Error(`${who} URI SAN ${JSON.stringify(uris[0])} is not spiffe://`);
  return uris[0];
}
function describe(creds) {
  const leaf = new crypto.X509Certificate(pemBlocks(creds.cert)[0]);
  return { serial: leaf.serialNumber, issuer_cn: cn(leaf.issuer), not_after: leaf.validTo,
    id: spiffeId(leaf, 'own'), ca_count: pemBlocks(creds.ca).length,
    chain_len: pemBlocks(creds.cert).length };
}

// ---- SDS ---------------------------------------------------------------------

// Follows "default" + "ROOTCA" on the agent socket. onCreds(creds, info) is
// called with every complete, loadable set; it may throw to reject it.
function followSds(socket, onCreds, stats) {
  const grpc = require('@grpc/grpc-js');
  const loader = require('@grpc/proto-loader');
  const LOADER_DIR = path.dirname(require.resolve('@grpc/proto-loader/package.json'));
  const protobuf = require(require.resolve('protobufjs', { paths: [LOADER_DIR] }));
  const DEPS = path.join(__dirname, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
  const INCLUDE = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate']
    .map((d) => path.join(DEPS, d))
    .concat([path.dirname(require.resolve('protobufjs/package.json', { paths: [LOADER_DIR] }))]);
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
  root.loadSync(['envoy/extensions/transport_sockets/tls/v3/secret.proto'], { keepCase: true });
  const SecretT = root.lookupType('envoy.extensions.transport_sockets.tls.v3.Secret');
  const dsText = (ds) => {
    if (!ds) return null;
    if (ds.inline_bytes) return Buffer.from(ds.inline_bytes).toString('utf8');
    if (ds.inline_string) return ds.inline_string;
    return null;
  };

  const target = socket.startsWith('unix:') ? socket : `unix:${socket}`;
  const client = new SDS(target, grpc.credentials.createInsecure());
  const names = ['default', 'ROOTCA'];
  const node = { id: `mtls-pair-${mode}-${process.pid}`, cluster: 'interop', user_agent_name: 'meshid-mtls-pair' };
  let current = { cert: null, key: null, ca: null }; // last accepted set
  let call = null;
  let stopped = false;

  function open() {
    let acked = '';
    const c = client.StreamSecrets();
    call = c;
    c.on('data', (resp) => {
      stats.sds_responses++;
      const next = Object.assign({}, current);
      let err = null;
      try {
        if (resp.type_url !== SECRET_TYPE) throw new Error(`type_url ${resp.type_url}`);
        for (const any of resp.resources || []) {
          if (any.type_url !== SECRET_TYPE) throw new Error(`resource type_url ${any.type_url}`);
          const s = SecretT.toObject(SecretT.decode(any.value), { bytes: Buffer });
          if (s.name === 'default') {
            if (!s.tls_certificate) throw new Error('"default" has no tls_certificate');
            next.cert = dsText(s.tls_certificate.certificate_chain);
            next.key = dsText(s.tls_certificate.private_key);
          } else if (s.name === 'ROOTCA') {
            if (!s.validation_context) throw new Error('"ROOTCA" has no validation_context');
            next.ca = dsText(s.validation_context.trusted_ca);
          } else throw new Error(`unrequested secret ${JSON.stringify(s.name)}`);
        }
        if (next.cert && next.key && next.ca) {
          tls.createSecureContext(next); // throws on bad PEM or key/cert mismatch
          const info = describe(next);
          onCreds(next, info);
          print({ t: now(), event: 'credentials', version_info: resp.version_info, ...info });
        }
      } catch (e) {
        err = e;
      }
      const req = { type_url: SECRET_TYPE, resource_names: names, response_nonce: resp.nonce };
      if (err) {
        stats.sds_nacks++;
        print({ t: now(), event: 'nack', version_info: resp.version_info, error: err.message });
        req.version_info = acked;
        req.error_detail = { code: 3, message: `mtls_pair.js: ${err.message}`.slice(0, 400) };
      } else {
        current = next;
        acked = resp.version_info;
        req.version_info = acked;
      }
      c.write(req);
    });
    const broken = (why) => {
      if (stopped || call !== c) return;
      call = null;
      stats.sds_reconnects++;
      print({ t: now(), event: 'sds_stream_lost', error: why });
      setTimeout(() => { if (!stopped) open(); }, 500);
    };
    c.on('error', (e) => broken(e.details || e.message));
    c.on('end', () => broken('server ended the stream'));
    c.write({ type_url: SECRET_TYPE, resource_names: names, node, version_info: '', response_nonce: '' });
  }
  open();
  return { stop: () => { stopped = true; if (call) call.cancel(); client.close(); } };
}

function pushErr(stats, msg) {
  if (stats.errors.length < MAX_ERRORS) stats.errors.push({ t: now(), error: msg });
}
function newStats() {
  return { ok: 0, failed: 0, errors: [], own_serials: [], peer_serials: [], sds_responses: 0,
    sds_nacks: 0, sds_reconnects: 0 };
}
function noteSerial(list, serial) {
  if (serial && !list.includes(serial)) list.push(serial);
}
function writeStats(file, obj) {
  if (!file) return;
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(obj) + '\n');
  fs.renameSync(tmp, file);
}

// ---- server ----------------------------------------------------------------------

function modeServer(sock, port) {
  if (!sock || !(port >= 0)) usage('server needs SOCKET PORT');
  const stats = newStats();
  let info = null;
  let server = null;
  let lastSecond = { ok: 0, failed: 0 };
  const peers = {}; // "id serial" -> count

  const fail = (msg) => { stats.failed++; pushErr(stats, msg); };
  const summary = () => ({ mode: 'server', ok: stats.ok, failed: stats.failed, errors: stats.errors,
    rotations: Math.max(stats.own_serials.length - 1, 0), own_serials: stats.own_serials,
    peer_serials: stats.peer_serials, ca_count: info && info.ca_count, sds_responses: stats.sds_responses,
    sds_nacks: stats.sds_nacks, sds_reconnects: stats.sds_reconnects });

  const sds = followSds(sock, (creds, i) => {
    info = i;
    noteSerial(stats.own_serials, i.serial);
    if (server) { server.setSecureContext(creds); return; }
    // rejectUnauthorized is enforced here rather than by Node: Node's own
    // check also runs after the handshake and just destroys the socket, and
    // then the reason is lost ("socket hang up"); this way it is recorded.
    server = tls.createServer({ ...creds, requestCert: true, rejectUnauthorized: false });
    server.on('secureConnection', (s) => {
      let peerId;
      let peer;
      try {
        if (!s.authorized) throw new Error(`peer certificate refused: ${s.authorizationError}`);
        peer = s.getPeerX509Certificate();
        peerId = spiffeId(peer, 'peer');
        if (opts.expectPeerId && peerId !== opts.expectPeerId) {
          throw new Error(`peer is ${peerId}, expected ${opts.expectPeerId}`);
        }
      } catch (e) {
        fail(e.message);
        print({ t: now(), event: 'peer_refused', error: e.message });
        s.destroy();
        return;
      }
      s.on('error', (e) => fail(`after handshake with ${peerId}: ${e.message}`));
      stats.ok++;
      noteSerial(stats.peer_serials, peer.serialNumber);
      const k = `${peerId} ${peer.serialNumber}`;
      if (!peers[k]) print({ t: now(), event: 'new_peer', peer_id: peerId, peer_serial: peer.serialNumber });
      peers[k] = (peers[k] || 0) + 1;
      s.end(`ok ${info.id}\n`);
    });
    server.on('tlsClientError', (e) => fail(`handshake: ${e.code || ''} ${e.message}`.trim()));
    server.on('error', (e) => { console.error(`mtls_pair.js server: ${e.message}`); process.exit(1); });
    server.listen(port, '127.0.0.1', () => {
      print({ listening: server.address().port, id: i.id, serial: i.serial });
    });
  }, stats);

  const tick = setInterval(() => {
    if (!info) return;
    print({ t: now(), ok: stats.ok, failed: stats.failed, ok_per_s: stats.ok - lastSecond.ok,
      cert_serial: info.serial, ca_count: info.ca_count, issuer_cn: info.issuer_cn });
    lastSecond = { ok: stats.ok, failed: stats.failed };
    writeStats(opts.stats, summary());
  }, 1000);

  const stop = () => {
    clearInterval(tick);
    sds.stop();
    const sum = summary();
    writeStats(opts.stats, sum);
    print(sum);
    process.exit(sum.failed === 0 ? 0 : 1);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---- client -----------------------------------------------------------------------

// One connection; cb(err, peerX509) once, after the server's reply or a failure.
function connectOnce(port, ctxOpts, expectId, cb) {
  let done = false;
  let reply = '';
  let peer = null;
  const finish = (err) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    s.destroy();
    cb(err, peer);
  };
  const s = tls.connect({ host: '127.0.0.1', port, ...ctxOpts, rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      // runs only once the chain verified against our CA set
      try {
        const x = new crypto.X509Certificate(cert.raw);
        const id = spiffeId(x, 'server');
        if (expectId && id !== expectId) return new Error(`server is ${id}, expected ${expectId}`);
      } catch (e) { return e; }
      return undefined;
    } });
  const timer = setTimeout(() => finish(new Error(`no reply within ${CONNECT_TIMEOUT_MS} ms`)),
    CONNECT_TIMEOUT_MS);
  s.setEncoding('utf8');
  s.on('secureConnect', () => { peer = s.getPeerX509Certificate(); });
  s.on('data', (d) => { reply += d; });
  s.on('error', (e) => finish(new Error(`${e.code ? e.code + ': ' : ''}${e.message}`)));
  s.on('end', () => {
    const line = reply.trim();
    if (!reply) {
      // a TLS 1.3 server that refuses our certificate closes after the
      // handshake without an alert (Node does); the server logs the reason
      return finish(new Error('server closed the connection without a reply (refused our certificate?)'));
    }
    if (!line.startsWith('ok ')) return finish(new Error(`bad reply ${JSON.stringify(reply.slice(0, 200))}`));
    if (expectId && line !== `ok ${expectId}`) {
      return finish(new Error(`reply ${JSON.stringify(line)} does not name ${expectId}`));
    }
    finish(null);
  });
  s.on('close', () => finish(new Error(`connection closed without a reply${reply ? ` (got ${JSON.stringify(reply)})` : ''}`)));
}

function modeClient(sock, port) {
  const rate = parseFloat(opts.rate);
  const duration = parseFloat(opts.duration);
  if (!sock || !(port > 0) || !opts.expectServerId || !(rate > 0) || !(duration > 0)) {
    usage('client needs SOCKET PORT --expect-server-id ID --rate N --duration S');
  }
  const stats = newStats();
  let ctx = null;
  let info = null;
  let started = null;
  let inflight = 0;
  let attempts = 0;
  let lastOk = 0;
  let want = rate * duration;
  let stopEarly = false;
  // SIGTERM/SIGINT end the run early: the expectation scales to the time run.
  const onStop = () => {
    stopEarly = true;
    if (started) want = Math.max(1, Math.floor(rate * (Date.now() - started) / 1000));
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);

  const sds = followSds(sock, (creds, i) => {
    ctx = tls.createSecureContext(creds);
    info = i;
    noteSerial(stats.own_serials, i.serial);
    if (!started) start();
  }, stats);

  function start() {
    started = Date.now();
    const fire = setInterval(() => {
      if (stopEarly || attempts >= want || Date.now() - started > duration * 1000 + 500) {
        clearInterval(fire);
        return finishWhenIdle();
      }
      attempts++;
      inflight++;
      const t0 = Date.now();
      const serialUsed = info.serial;
      connectOnce(port, { secureContext: ctx }, opts.expectServerId, (err, peer) => {
        inflight--;
        if (err) {
          stats.failed++;
          pushErr(stats, `${err.message} (own cert ${serialUsed}, after ${Date.now() - t0} ms)`);
        } else {
          stats.ok++;
          noteSerial(stats.peer_serials, peer && peer.serialNumber);
        }
      });
    }, 1000 / rate);
    const tick = setInterval(() => {
      print({ t: Math.round((Date.now() - started) / 1000), ok: stats.ok, failed: stats.failed,
        ok_per_s: stats.ok - lastOk, cert_serial: info.serial, ca_count: info.ca_count,
        issuer_cn: info.issuer_cn });
      lastOk = stats.ok;
    }, 1000);
    let finishing = false;
    function finishWhenIdle() {
      if (finishing) return;
      finishing = true;
      const poll = setInterval(() => {
        if (inflight > 0) return;
        clearInterval(poll);
        clearInterval(tick);
        sds.stop();
        const sum = { mode: 'client', ok: stats.ok, failed: stats.failed, errors: stats.errors,
          attempts, wanted: want, elapsed_s: (Date.now() - started) / 1000,
          rotations: Math.max(stats.own_serials.length - 1, 0), own_serials: stats.own_serials,
          peer_serials: stats.peer_serials, ca_count: info.ca_count, sds_responses: stats.sds_responses,
          sds_nacks: stats.sds_nacks, sds_reconnects: stats.sds_reconnects };
        if (stats.ok < 0.8 * want) sum.stalled = `only ${stats.ok} ok of ${want} wanted`;
        writeStats(opts.stats, sum);
        print(sum);
        process.exit(stats.failed === 0 && stats.ok >= 0.8 * want ? 0 : 1);
      }, 20);
    }
  }
}

// ---- probe ------------------------------------------------------------------------

function modeProbe(port) {
  if (!(port > 0) || !opts.cert || !opts.key || !opts.ca) usage('probe needs PORT --cert F --key F --ca F');
  let ctxOpts;
  try {
    ctxOpts = { cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key), ca: fs.readFileSync(opts.ca) };
    tls.createSecureContext(ctxOpts);
  } catch (e) {
    console.error(`mtls_pair.js probe: cannot load credentials: ${e.message}`);
    process.exit(2);
  }
  connectOnce(port, ctxOpts, opts.expectServerId, (err, peer) => {
    if (err) {
      print({ ok: false, error: err.message });
      process.exit(1);
    }
    print({ ok: true, server_serial: peer && peer.serialNumber });
    process.exit(0);
  });
}

switch (mode) {
  case 'server': modeServer(pos[1], parseInt(pos[2], 10)); break;
  case 'client': modeClient(pos[1], parseInt(pos[2], 10)); break;
  case 'probe': modeProbe(parseInt(pos[1], 10)); break;
  default: usage(mode ? `unknown mode ${mode}` : 'no mode');
}
