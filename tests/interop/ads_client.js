#!/usr/bin/env node
// Independent ADS (xDS) client for meshid's control plane, built only from
// Envoy's OFFICIAL protos (the copies @grpc/grpc-js-xds ships in deps/) with
// @grpc/grpc-js + @grpc/proto-loader; every resource inside a
// google.protobuf.Any is decoded with protobufjs and checked for the fields
// Envoy requires (see check* below).
//
// Usage: node ads_client.js HOST:PORT MODE [OPTIONS]
//   sotw     StreamAggregatedResources the way Envoy does it: CDS wildcard, then
//            EDS for every EDS cluster, LDS wildcard, then RDS for every RDS name
//            the listeners use; ACK everything. Prints one JSON line per
//            response ({"type":"cds","version":..,"names":[..]}) and, when the
//            initial fetch is complete, a summary line {"ok":true,"summary":{..}}.
//   delta    The same over DeltaAggregatedResources.
// Options:
//   --node-id ID          node.id (default "ads-client-js")
//   --meta K=V            node.metadata string entry (repeatable)
//   --proxyless           behave like grpc-js: user_agent_name "gRPC Node Pure JS"
//                         and LDS by explicit names (--lds NAME, repeatable)
//   --lds NAME            explicit LDS name(s) instead of wildcard
//   --watch-ms MS         after the initial fetch keep the stream open for MS and
//                         print every pushed response (ACKed)
//   --nack TYPE           NACK the first response of TYPE (cds|eds|lds|rds), then
//                         expect no resend of that type within --watch-ms (default
//                         1500) while the stream stays open; prints {"ok":true,...}
//   --expect-error CODE   expect the stream to fail with gRPC status CODE (number);
//                         prints {"ok":true,"code":..,"details":..}
//   --dump FILE           write every decoded resource (JSON, one object per line
//                         with "@type") to FILE
//   --tls CA,CERT,KEY     mutual TLS with these PEM files (CA = the trust bundle;
//                         CERT/KEY may be "-" for a TLS call without a client cert)
//   --server-name NAME    TLS name to verify the server as (default localhost)
//   --timeout MS          overall (default 20000)
// Exit 0 on success, 1 on failure (printed as {"ok":false,...}), 2 on usage.
'use strict';
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const LOADER_DIR = path.dirname(require.resolve('@grpc/proto-loader/package.json'));
const protobuf = require(require.resolve('protobufjs', { paths: [LOADER_DIR] }));

const DEPS = path.join(__dirname, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const INCLUDE = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate']
  .map((d) => path.join(DEPS, d))
  .concat([path.dirname(require.resolve('protobufjs/package.json', { paths: [LOADER_DIR] }))]);

const T = {
  cds: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  eds: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  lds: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  rds: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
};
const SHORT = Object.fromEntries(Object.entries(T).map(([k, v]) => [v, k]));

// ---- arguments ---------------------------------------------------------------

function usage(msg) {
  if (msg) console.error(msg);
  console.error('usage: ads_client.js HOST:PORT sotw|delta [--node-id ID] [--meta K=V]... ' +
    '[--proxyless] [--lds NAME]... [--watch-ms MS] [--nack TYPE] [--expect-error CODE] ' +
    '[--dump FILE] [--timeout MS]');
  process.exit(2);
}
const argv = process.argv.slice(2);
const opts = { nodeId: 'ads-client-js', meta: {}, proxyless: false, lds: [], watchMs: 0,
  nack: null, expectError: null, dump: null, timeout: 20000, tls: null, serverName: 'localhost' };
const pos = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '--node-id') opts.nodeId = val();
  else if (a === '--meta') {
    const kv = val(); const eq = kv.indexOf('=');
    if (eq <= 0) usage('--meta wants K=V');
    opts.meta[kv.slice(0, eq)] = kv.slice(eq + 1);
  } else if (a === '--proxyless') opts.proxyless = true;
  else if (a === '--lds') opts.lds.push(val());
  else if (a === '--watch-ms') opts.watchMs = parseInt(val(), 10);
  else if (a === '--nack') opts.nack = val();
  else if (a === '--expect-error') opts.expectError = parseInt(val(), 10);
  else if (a === '--dump') opts.dump = val();
  else if (a === '--timeout') opts.timeout = parseInt(val(), 10);
  else if (a === '--tls') {
    opts.tls = val().split(',');
    if (opts.tls.length !== 3) usage('--tls wants CA,CERT,KEY');
  } else if (a === '--server-name') opts.serverName = val();
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else pos.push(a);
}
if (pos.length !== 2 || !['sotw', 'delta'].includes(pos[1])) usage();
const [target, mode] = pos;
if (opts.nack && !T[opts.nack]) usage('--nack wants cds|eds|lds|rds');

// ---- protos ------------------------------------------------------------------

const def = loader.loadSync('envoy/service/discovery/v3/ads.proto', {
  includeDirs: INCLUDE, keepCase: true, longs: String, enums: String, defaults: false, oneofs: true,
});
const ADS = grpc.loadPackageDefinition(def).envoy.service.discovery.v3.AggregatedDiscoveryService;

const root = new protobuf.Root();
root.resolvePath = (origin, tgt) => {
  for (const d of INCLUDE) {
    const p = path.join(d, tgt);
    if (fs.existsSync(p)) return p;
  }
  return protobuf.util.path.resolve(origin, tgt);
};
root.loadSync([
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
], { keepCase: true });

// Decodes an Any (type_url + bytes) into a plain object, recursively expanding
// nested Anys ({"@type": ..., ...fields}). Throws on an unknown type.
function decodeAny(any) {
  const url = any.type_url;
  const name = url.slice(url.lastIndexOf('/') + 1);
  const Type = root.lookupType(name);
  const msg = Type.decode(any.value);
  const err = Type.verify(msg);
  if (err) throw new Error(`${name}: ${err}`);
  const obj = Type.toObject(msg, { longs: String, enums: String, bytes: String, defaults: false });
  return Object.assign({ '@type': url }, expandAnys(obj));
}
function expandAnys(v) {
  if (Array.isArray(v)) return v.map(expandAnys);
  if (v && typeof v === 'object') {
    if (typeof v.type_url === 'string' && Object.keys(v).every((k) => k === 'type_url' || k === 'value')) {
      // an Any (an empty message has no `value` at all)
      return decodeAny({ type_url: v.type_url, value: Buffer.from(v.value || '', 'base64') });
    }
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = expandAnys(x);
    return o;
  }
  return v;
}

// ---- checks: the fields Envoy (or grpc-js for --proxyless) requires ---------------

function need(cond, what) { if (!cond) throw new Error(what); }
const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';

function checkSds(sds, where) {
  need(sds && sds.name, `${where}: SDS secret config without name`);
  const src = sds.sds_config;
  need(src && (src.ads || (src.api_config_source && src.api_config_source.grpc_services)),
    `${where}: sds_config for ${sds.name} has no source`);
}
function checkTls(ts, where, downstream) {
  need(ts.name === 'envoy.transport_sockets.tls', `${where}: transport socket ${ts.name}`);
  const ctx = ts.typed_config;
  need(ctx && ctx['@type'].endsWith(downstream ? 'DownstreamTlsContext' : 'UpstreamTlsContext'),
    `${where}: transport socket config type`);
  const c = ctx.common_tls_context || {};
  if (opts.proxyless) {
    need(c.tls_certificate_provider_instance, `${where}: proxyless TLS without provider instance`);
    return;
  }
  need((c.tls_certificate_sds_secret_configs || []).length === 1, `${where}: one SDS certificate`);
  checkSds(c.tls_certificate_sds_secret_configs[0], where);
  const cv = c.combined_validation_context;
  need(cv && cv.default_validation_context && cv.validation_context_sds_secret_config,
    `${where}: combined validation context`);
  checkSds(cv.validation_context_sds_secret_config, where);
  if (downstream) {
    need(ctx.require_client_certificate && ctx.require_client_certificate.value === true,
      `${where}: require_client_certificate`);
  } else {
    const sans = cv.default_validation_context.match_typed_subject_alt_names || [];
    need(sans.length >= 1 && sans.every((m) => m.san_type === 'URI' && m.matcher &&
      (m.matcher.exact || '').startsWith('spiffe://')), `${where}: SPIFFE SAN matchers`);
  }
}
function checkCluster(c) {
  const w = `cluster ${c.name}`;
  need(c.name, 'cluster without name');
  const type = c.type || 'STATIC';
  if (type === 'EDS') {
    const e = c.eds_cluster_config;
    need(e && e.eds_config && (e.eds_config.ads || e.eds_config.self), `${w}: eds_config must be ads/self`);
  } else {
    need(type === 'STATIC' && c.load_assignment, `${w}: type ${type} without load_assignment`);
  }
  if (!opts.proxyless) need(c.connect_timeout, `${w}: connect_timeout`);
  need(!c.lb_policy || ['ROUND_ROBIN', 'RING_HASH'].includes(c.lb_policy), `${w}: lb_policy`);
  if (c.transport_socket) checkTls(c.transport_socket, w, false);
}
function checkCla(cla, name) {
  need(cla.cluster_name === name, `CLA ${name}: cluster_name ${cla.cluster_name}`);
  const seen = new Set();
  for (const l of cla.endpoints || []) {
    need(l.locality !== undefined, `CLA ${name}: locality missing`);
    need(l.load_balancing_weight && l.load_balancing_weight.value > 0, `CLA ${name}: locality weight`);
    for (const e of l.lb_endpoints || []) {
      const sa = e.endpoint && e.endpoint.address && e.endpoint.address.socket_address;
      need(sa && sa.address && sa.port_value > 0, `CLA ${name}: endpoint address`);
      need(/^[0-9.]+$|:/.test(sa.address), `CLA ${name}: ${sa.address} is not an IP literal`);
      const k = `${sa.address}:${sa.port_value}`;
      need(!seen.has(k), `CLA ${name}: duplicate endpoint ${k}`);
      seen.add(k);
    }
  }
}
function checkHcm(h, w) {
  need(h['@type'] === HCM, `${w}: not an HCM`);
  need(h.stat_prefix, `${w}: HCM stat_prefix`);
  need(h.rds || h.route_config, `${w}: HCM without routes`);
  if (h.rds) need(h.rds.route_config_name && h.rds.config_source && h.rds.config_source.ads,
    `${w}: rds config`);
  const f = h.http_filters || [];
  need(f.length >= 1, `${w}: no http_filters`);
  const names = new Set();
  f.forEach((x, i) => {
    need(x.name && !names.has(x.name), `${w}: filter name ${x.name} missing or repeated`);
    names.add(x.name);
    need(x.typed_config, `${w}: filter ${x.name} without typed_config`);
    need((x.typed_config['@type'] === ROUTER) === (i === f.length - 1), `${w}: router must be last and only last`);
  });
}
function checkListener(l) {
  const w = `listener ${l.name}`;
  need(l.name, 'listener without name');
  if (l.api_listener) {
    checkHcm(l.api_listener.api_listener, w);
    return;
  }
  need(!opts.proxyless, `${w}: proxyless client got a non-api listener`);
  const sa = l.address && l.address.socket_address;
  need(sa && sa.address && sa.port_value > 0, `${w}: address`);
  need((l.filter_chains || []).length >= 1, `${w}: no filter chains`);
  for (const fc of l.filter_chains) {
    need((fc.filters || []).length >= 1, `${w}: empty filter chain`);
    for (const f of fc.filters) {
      need(f.name && f.typed_config, `${w}: filter without name/config`);
      if (f.typed_config['@type'] === HCM) checkHcm(f.typed_config, w);
    }
    if (fc.transport_socket) checkTls(fc.transport_socket, w, true);
  }
}
function checkRoute(rc, name, clusters) {
  need(rc.name === name, `route ${name}: name ${rc.name}`);
  for (const vh of rc.virtual_hosts || []) {
    need(vh.name && (vh.domains || []).length >= 1, `route ${name}: virtual host name/domains`);
    for (const r of vh.routes || []) {
      const m = r.match || {};
      need(m.prefix !== undefined || m.path !== undefined || m.safe_regex, `route ${name}: match`);
      if (r.route) {
        need(r.route.cluster, `route ${name}: route action without cluster`);
        need(clusters.has(r.route.cluster), `route ${name}: points at unknown cluster ${r.route.cluster}`);
      }
    }
  }
}

// ---- the client ------------------------------------------------------------------

function out(o) { console.log(JSON.stringify(o)); }
let client = null;
function finish(code) { if (client) client.close(); process.exit(code); }
function fail(what, err) {
  out({ ok: false, what, code: err && err.code, details: err && (err.details || err.message) });
  finish(1);
}
setTimeout(() => fail('timeout', { message: `no result within ${opts.timeout} ms` }), opts.timeout).unref();

const metaFields = {};
// protobufjs' built-in google.protobuf.Value uses camelCase member names
for (const [k, v] of Object.entries(opts.meta)) metaFields[k] = { stringValue: v };
const node = {
  id: opts.nodeId, cluster: 'interop',
  user_agent_name: opts.proxyless ? 'gRPC Node Pure JS' : 'envoy',
  metadata: { fields: metaFields },
};
let creds = grpc.credentials.createInsecure();
const chanOpts = {};
if (opts.tls) {
  const [ca, cert, key] = opts.tls;
  const rd = (f) => (f === '-' ? null : fs.readFileSync(f));
  creds = grpc.credentials.createSsl(rd(ca), rd(key), rd(cert));
  chanOpts['grpc.ssl_target_name_override'] = opts.serverName;
}
client = new ADS(target, creds, chanOpts);
const dumpFd = opts.dump ? fs.openSync(opts.dump, 'w') : null;

// state: per type the current resources (name -> decoded object)
const have = { cds: new Map(), eds: new Map(), lds: new Map(), rds: new Map() };
const order = [];          // types in the order their first response arrived
const counts = { cds: 0, eds: 0, lds: 0, rds: 0 };
let initialDone = false;
let nacked = null;         // { type, at } after --nack
let call;

function wanted(t) {
  if (t === 'eds') {
    return [...have.cds.values()].filter((c) => c.type === 'EDS')
      .map((c) => (c.eds_cluster_config && c.eds_cluster_config.service_name) || c.name).sort();
  }
  if (t === 'rds') {
    const names = new Set();
    for (const l of have.lds.values()) {
      const hcms = l.api_listener ? [l.api_listener.api_listener]
        : (l.filter_chains || []).flatMap((fc) => (fc.filters || []).map((f) => f.typed_config));
      for (const h of hcms) if (h && h['@type'] === HCM && h.rds) names.add(h.rds.route_config_name);
    }
    return [...names].sort();
  }
  if (t === 'lds' && opts.lds.length) return opts.lds.slice().sort();
  return null; // wildcard
}

// Every EDS cluster has its ClusterLoadAssignment (Envoy's cluster warming).
function clustersWarm() {
  return order.includes('cds') && wanted('eds').every((n) => have.eds.has(n));
}

function complete() {
  if (!['cds', 'lds'].every((t) => order.includes(t))) return false;
  for (const t of ['eds', 'rds']) {
    const w = wanted(t);
    if (w.length && !w.every((n) => have[t].has(n))) return false;
  }
  return true;
}

function verifyAll() {
  for (const c of have.cds.values()) checkCluster(c);
  for (const [n, cla] of have.eds) checkCla(cla, n);
  for (const l of have.lds.values()) checkListener(l);
  const clusters = new Set(have.cds.keys());
  for (const [n, rc] of have.rds) checkRoute(rc, n, clusters);
}

function summary() {
  const eps = {};
  for (const [n, cla] of have.eds) {
    eps[n] = (cla.endpoints || []).flatMap((l) => (l.lb_endpoints || []).map((e) => {
      const sa = e.endpoint.address.socket_address;
      return `${sa.address}:${sa.port_value}${e.health_status ? `/${e.health_status}` : ''}`;
    }));
  }
  return {
    order, clusters: [...have.cds.keys()].sort(), listeners: [...have.lds.keys()].sort(),
    routes: [...have.rds.keys()].sort(), endpoints: eps,
  };
}

function maybeDone() {
  if (opts.nack) return; // --nack: the quiet window decides (see handleResponse)
  if (initialDone || !complete()) return;
  if (opts.expectError !== null) fail('status', { message: `expected status ${opts.expectError}, got resources` });
  try { verifyAll(); } catch (e) { fail('check', e); }
  initialDone = true;
  out({ ok: true, summary: summary() });
  if (opts.watchMs > 0) setTimeout(() => finish(0), opts.watchMs);
  else finish(0);
}

function onResources(t, list, removed) {
  for (const r of list) {
    let obj;
    try { obj = decodeAny(r.any); } catch (e) { fail('decode', e); }
    const name = t === 'eds' ? obj.cluster_name : obj.name;
    if (r.name !== undefined && r.name !== name) fail('name', { message: `${t} resource ${r.name} holds ${name}` });
    if (dumpFd !== null) fs.writeSync(dumpFd, `${JSON.stringify(obj)}\n`);
    have[t].set(name, obj);
  }
  for (const n of removed || []) have[t].delete(n);
}

function handleResponse(t, version, nonce, list, removed, replaceAll) {
  counts[t]++;
  if (!order.includes(t)) order.push(t);
  if (nacked && nacked.type === t) fail('nack', { message: `${t} resent after a NACK` });
  if (replaceAll) have[t].clear();
  const names = list.map((r) => r.name);
  if (opts.nack === t && counts[t] === 1) {
    out({ type: t, version, nacked: true });
    nacked = { type: t };
    setTimeout(() => { out({ ok: true, nacked: t, resent: false }); finish(0); }, opts.watchMs || 1500);
    return 'nack';
  }
  onResources(t, list, removed);
  out({ type: t, version, names: [...have[t].keys()].sort(), pushed: initialDone });
  return 'ack';
}

// SotW
function sotw() {
  call = client.StreamAggregatedResources();
  const acked = { cds: '', eds: '', lds: '', rds: '' };
  const subs = { eds: [], rds: [] };
  const send = (t, extra) => call.write(Object.assign({
    type_url: T[t], resource_names: wanted(t) || [], version_info: acked[t],
  }, extra || {}));
  call.on('data', (resp) => {
    const t = SHORT[resp.type_url];
    if (!t) fail('type_url', { message: resp.type_url });
    if (!resp.nonce) fail('nonce', { message: `${t} response without nonce` });
    for (const a of resp.resources || []) {
      if (a.type_url !== resp.type_url) fail('any type', { message: `${a.type_url} in a ${t} response` });
    }
    const list = (resp.resources || []).map((a) => ({ any: a }));
    const replace = t === 'cds' || t === 'lds';
    const verdict = handleResponse(t, resp.version_info, resp.nonce, list, [], replace);
    if (verdict === 'nack') {
      send(t, { response_nonce: resp.nonce, error_detail: { code: 13, message: 'rejected by ads_client.js --nack' } });
    } else {
      acked[t] = resp.version_info;
      send(t, { response_nonce: resp.nonce });
    }
    // follow-on subscriptions, as Envoy does: EDS after CDS, LDS once the
    // clusters are warm (their endpoints arrived), RDS after LDS
    for (const d of ['eds', 'rds']) {
      const w = wanted(d);
      if (JSON.stringify(w) !== JSON.stringify(subs[d]) && w.length) {
        subs[d] = w;
        send(d, {});
      }
    }
    if (!subs.lds && clustersWarm()) {
      subs.lds = true;
      send('lds', {});
    }
    maybeDone();
  });
  call.on('error', onError);
  call.on('end', () => fail('stream', { message: 'server ended the stream' }));
  call.write({ node, type_url: T.cds, resource_names: [], version_info: '' });
}

// Delta
function delta() {
  call = client.DeltaAggregatedResources();
  const subs = { eds: [], rds: [] };
  call.on('data', (resp) => {
    const t = SHORT[resp.type_url];
    if (!t) fail('type_url', { message: resp.type_url });
    if (!resp.nonce) fail('nonce', { message: `${t} response without nonce` });
    const list = (resp.resources || []).map((r) => {
      if (!r.resource || r.resource.type_url !== resp.type_url) fail('any type', { message: `bad resource in ${t}` });
      if (!r.version) fail('version', { message: `${t} resource ${r.name} without version` });
      return { any: r.resource, name: r.name };
    });
    const verdict = handleResponse(t, resp.system_version_info, resp.nonce, list, resp.removed_resources, false);
    const req = { type_url: T[t], response_nonce: resp.nonce };
    if (verdict === 'nack') req.error_detail = { code: 13, message: 'rejected by ads_client.js --nack' };
    call.write(req);
    for (const d of ['eds', 'rds']) {
      const w = wanted(d);
      const add = w.filter((n) => !subs[d].includes(n));
      const del = subs[d].filter((n) => !w.includes(n));
      if (add.length || del.length) {
        subs[d] = w;
        call.write({ type_url: T[d], resource_names_subscribe: add, resource_names_unsubscribe: del });
      }
    }
    if (!subs.lds && clustersWarm()) {
      subs.lds = true;
      call.write({ type_url: T.lds, resource_names_subscribe: wanted('lds') || ['*'] });
    }
    maybeDone();
  });
  call.on('error', onError);
  call.on('end', () => fail('stream', { message: 'server ended the stream' }));
  call.write({ node, type_url: T.cds, resource_names_subscribe: ['*'] });
}

function onError(e) {
  if (opts.expectError !== null) {
    if (e.code === opts.expectError) { out({ ok: true, code: e.code, details: e.details }); finish(0); }
    fail('status', { code: e.code, details: `expected ${opts.expectError}, got ${e.code}: ${e.details}` });
  }
  if (initialDone && e.code === grpc.status.CANCELLED) return;
  fail('stream', e);
}

if (mode === 'sotw') sotw(); else delta();
