#!/usr/bin/env node
// Proves that meshid's trimmed .proto files (proto/) are wire-compatible with
// the official APIs they mirror. For every message, field, enum value and
// service method we declare in an upstream package, the official definition
// with the same fully-qualified name must exist and agree on:
//   fields:  number, name, type (scalar, or the fully-qualified message/enum
//            name), repeated/map-ness, and oneof membership;
//   enums:   value name and number;
//   methods: name (hence the HTTP/2 path /<package>.<Service>/<Method>),
//            request/response types and both streaming flags.
// Trimming (declaring fewer fields than upstream) is the point and is fine.
//
// Official sources, all from node_modules (see tests/interop/package.json):
//   - Envoy, xDS, google.rpc: the .proto files @grpc/grpc-js-xds ships in
//     deps/{envoy-api,xds,googleapis,protoc-gen-validate}.
//   - google.protobuf well-known types: protobufjs' bundled definitions (the
//     official .proto files are not in any installed package). protobufjs
//     spells some of those field names in camelCase (Value.nullValue), so for
//     them names are compared after camelCasing both sides.
//   - SPIFFE Workload API: no official copy is installed, so our file is
//     compared against the table SPIFFE_WORKLOAD below, transcribed from
//     shared/reference/wire-contracts.md section 13 (spiffe/spiffe
//     standards/workloadapi.proto).
//   - A few fields are newer than the envoy-api snapshot inside grpc-js-xds;
//     they are checked against NEWER_THAN_SNAPSHOT below (wire-contracts,
//     data-plane-api 84e84367f256) and only when the snapshot lacks them.
// meshid's own APIs (package meshid.*) have no upstream: they are only
// parsed and resolved (which catches duplicate names/numbers and dangling
// type references).
//
// Usage: node check_protos.js [--verbose]. Exits 0 when everything matches,
// 1 on any mismatch (each printed on its own line), 2 on a load error.
'use strict';

const fs = require('fs');
const path = require('path');
// protobufjs is not a direct dependency: use the copy @grpc/proto-loader uses.
const LOADER_DIR = path.dirname(require.resolve('@grpc/proto-loader/package.json'));
const protobuf = require(require.resolve('protobufjs', { paths: [LOADER_DIR] }));

const VERBOSE = process.argv.includes('--verbose');
const HERE = __dirname;
const OUR_DIR = path.resolve(HERE, '..', '..', 'proto');
const XDS_DEPS = path.join(HERE, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const OFFICIAL_DIRS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate']
  .map((d) => path.join(XDS_DEPS, d))
  // google/protobuf/descriptor.proto, imported by the annotation protos.
  .concat([path.dirname(require.resolve('protobufjs/package.json', { paths: [LOADER_DIR] }))]);
// Well-known types protobufjs bundles (loaded from memory, not from disk).
const BUNDLED_WKT = ['any', 'duration', 'empty', 'struct', 'wrappers']
  .map((n) => `google/protobuf/${n}.proto`);

// ---- reference tables ------------------------------------------------------

// SPIFFE Workload API (no package). Field: [number, name, type].
// Method: [request, response, requestStream, responseStream].
const SPIFFE_WORKLOAD = {
  source: 'wire-contracts.md section 13 (spiffe/spiffe standards/workloadapi.proto)',
  messages: {
    X509SVIDRequest: [],
    X509SVIDResponse: [[1, 'svids', 'repeated X509SVID'], [2, 'crl', 'repeated bytes'],
      [3, 'federated_bundles', 'map<string,bytes>']],
    X509SVID: [[1, 'spiffe_id', 'string'], [2, 'x509_svid', 'bytes'], [3, 'x509_svid_key', 'bytes'],
      [4, 'bundle', 'bytes'], [5, 'hint', 'string']],
    X509BundlesRequest: [],
    X509BundlesResponse: [[1, 'crl', 'repeated bytes'], [2, 'bundles', 'map<string,bytes>']],
    JWTSVIDRequest: [[1, 'audience', 'repeated string'], [2, 'spiffe_id', 'string']],
    JWTSVIDResponse: [[1, 'svids', 'repeated JWTSVID']],
    JWTSVID: [[1, 'spiffe_id', 'string'], [2, 'svid', 'string'], [3, 'hint', 'string']],
    JWTBundlesRequest: [],
    JWTBundlesResponse: [[1, 'bundles', 'map<string,bytes>']],
    ValidateJWTSVIDRequest: [[1, 'audience', 'string'], [2, 'svid', 'string']],
    ValidateJWTSVIDResponse: [[1, 'spiffe_id', 'string'], [2, 'claims', 'google.protobuf.Struct']],
    // Incubating WIT-SVID profile, listed so a later addition is checked too.
    WITSVIDRequest: [[1, 'spiffe_id', 'string']],
    WITSVIDResponse: [[1, 'svids', 'repeated WITSVID']],
    WITSVID: [[1, 'spiffe_id', 'string'], [2, 'wit_svid', 'string'], [3, 'wit_svid_key', 'string'],
      [4, 'hint', 'string']],
    WITBundlesResponse: [[1, 'bundles', 'map<string,string>']],
  },
  services: {
    SpiffeWorkloadAPI: {
      FetchX509SVID: ['X509SVIDRequest', 'X509SVIDResponse', false, true],
      FetchX509Bundles: ['X509BundlesRequest', 'X509BundlesResponse', false, true],
      FetchJWTSVID: ['JWTSVIDRequest', 'JWTSVIDResponse', false, false],
      FetchJWTBundles: ['JWTBundlesRequest', 'JWTBundlesResponse', false, true],
      ValidateJWTSVID: ['ValidateJWTSVIDRequest', 'ValidateJWTSVIDResponse', false, false],
    },
  },
};

// Fields newer than the envoy-api copy in @grpc/grpc-js-xds.
// message -> number -> [name, type, source]
const NEWER_THAN_SNAPSHOT = {
  'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig': {
    2: ['trust_bundles', 'envoy.config.core.v3.DataSource',
      'wire-contracts.md section 5.8 (data-plane-api 84e84367f256)'],
  },
};

// ---- loading -----------------------------------------------------------------

function listProtos(dir) {
  const out = [];
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...listProtos(p));
    else if (ent.name.endsWith('.proto')) out.push(p);
  }
  return out.sort();
}

// Ours: every file parsed from disk into one root. We parse instead of
// Root.load because protobufjs would substitute its bundled copies for our
// google/protobuf/*.proto files. Imports are satisfied by the set itself.
function loadOurs() {
  const root = new protobuf.Root();
  const files = listProtos(OUR_DIR);
  for (const f of files) {
    protobuf.parse.filename = path.relative(OUR_DIR, f);
    protobuf.parse(fs.readFileSync(f, 'utf8'), root, { keepCase: true });
  }
  root.resolveAll();
  return { root, files: files.map((f) => path.relative(OUR_DIR, f)) };
}

function loadOfficial(ourFiles) {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (path.isAbsolute(target)) return target;
    for (const dir of OFFICIAL_DIRS) {
      const p = path.join(dir, target);
      if (fs.existsSync(p)) return p;
    }
    return target; // let the load fail loudly
  };
  const want = [];
  const missing = [];
  for (const rel of ourFiles) {
    if (rel.startsWith('meshid/') || rel.startsWith('spiffe/')) continue;
    if (BUNDLED_WKT.includes(rel)) { want.push(rel); continue; }
    if (OFFICIAL_DIRS.some((d) => fs.existsSync(path.join(d, rel)))) want.push(rel);
    else missing.push(rel);
  }
  root.loadSync(want, { keepCase: true });
  root.resolveAll();
  return { root, missing };
}

// ---- comparison ----------------------------------------------------------------

const strip = (fullName) => fullName.replace(/^\./, '');
const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

function typeName(field) {
  const t = field.resolvedType ? strip(field.resolvedType.fullName) : field.type;
  if (field.map) return `map<${field.keyType},${t}>`;
  return field.repeated ? `repeated ${t}` : t;
}

function oneofName(field) {
  const o = field.partOf;
  if (!o) return null;
  if (o.name.startsWith('_') && field.options && field.options.proto3_optional) return null;
  return o.name;
}

function* walk(ns) {
  for (const obj of ns.nestedArray || []) {
    if (obj instanceof protobuf.Type || obj instanceof protobuf.Enum ||
        obj instanceof protobuf.Service) yield obj;
    if (obj.nestedArray) yield* walk(obj);
  }
}

const problems = [];
const stats = { messages: 0, fields: 0, enumValues: 0, methods: 0, own: 0 };
const bad = (msg) => problems.push(msg);
const info = (msg) => { if (VERBOSE) console.log(msg); };

function isBundledWkt(name) {
  return name.startsWith('google.protobuf.');
}

function compareMessage(ours, off) {
  const name = strip(ours.fullName);
  const sameName = isBundledWkt(name) ? (a, b) => camel(a) === camel(b) : (a, b) => a === b;
  stats.messages++;
  for (const f of ours.fieldsArray) {
    stats.fields++;
    const where = `${name}.${f.name} (#${f.id})`;
    const o = off.fieldsById[f.id];
    if (!o) {
      const newer = (NEWER_THAN_SNAPSHOT[name] || {})[f.id];
      if (newer) {
        const [nname, ntype, src] = newer;
        if (nname !== f.name || ntype !== typeName(f) || oneofName(f)) {
          bad(`${where}: ours ${typeName(f)} ${f.name}, ${src} has ${ntype} ${nname}`);
        } else {
          console.log(`note: ${where} is newer than the installed envoy-api copy; ` +
                      `checked against ${src}`);
        }
        continue;
      }
      bad(`${where}: official ${name} has no field number ${f.id}`);
      continue;
    }
    if (!sameName(f.name, o.name)) bad(`${where}: official field #${f.id} is named ${o.name}`);
    if (typeName(f) !== typeName(o)) {
      bad(`${where}: type ours ${typeName(f)}, official ${typeName(o)}`);
    }
    if (oneofName(f) !== oneofName(o)) {
      bad(`${where}: oneof ours ${oneofName(f) || '(none)'}, official ${oneofName(o) || '(none)'}`);
    }
    info(`ok   ${where} ${typeName(f)}`);
  }
}

function compareEnum(ours, off) {
  const name = strip(ours.fullName);
  for (const [k, v] of Object.entries(ours.values)) {
    stats.enumValues++;
    if (!(k in off.values)) bad(`${name}.${k}: no such value in the official enum`);
    else if (off.values[k] !== v) bad(`${name}.${k}: ours ${v}, official ${off.values[k]}`);
    else info(`ok   ${name}.${k} = ${v}`);
  }
}

function methodSig(m) {
  return [strip(m.resolvedRequestType.fullName), strip(m.resolvedResponseType.fullName),
    !!m.requestStream, !!m.responseStream];
}

function fmtSig(s) {
  return `(${s[2] ? 'stream ' : ''}${s[0]}) returns (${s[3] ? 'stream ' : ''}${s[1]})`;
}

function compareService(ours, offMethods) {
  const svc = strip(ours.fullName);
  for (const m of ours.methodsArray) {
    stats.methods++;
    const p = `/${svc}/${m.name}`;
    const want = offMethods[m.name];
    if (!want) { bad(`${p}: no such method in the official service`); continue; }
    const got = methodSig(m);
    if (got.some((x, i) => x !== want[i])) {
      bad(`${p}: ours ${fmtSig(got)}, official ${fmtSig(want)}`);
    } else {
      info(`ok   ${p} ${fmtSig(got)}`);
    }
  }
}

function checkSpiffe(obj) {
  const name = strip(obj.fullName);
  if (obj instanceof protobuf.Service) {
    const want = SPIFFE_WORKLOAD.services[name];
    if (!want) { bad(`service ${name}: not in the SPIFFE Workload API table`); return; }
    compareService(obj, want);
    return;
  }
  if (!(obj instanceof protobuf.Type)) { bad(`${name}: unexpected top-level definition`); return; }
  const want = SPIFFE_WORKLOAD.messages[name];
  if (!want) { bad(`${name}: not a message of the SPIFFE Workload API (${SPIFFE_WORKLOAD.source})`); return; }
  stats.messages++;
  for (const f of obj.fieldsArray) {
    stats.fields++;
    const where = `${name}.${f.name} (#${f.id})`;
    const row = want.find((r) => r[0] === f.id);
    if (!row) { bad(`${where}: the SPIFFE table has no field number ${f.id}`); continue; }
    if (row[1] !== f.name) bad(`${where}: SPIFFE field #${f.id} is named ${row[1]}`);
    if (row[2] !== typeName(f)) bad(`${where}: type ours ${typeName(f)}, SPIFFE ${row[2]}`);
    if (oneofName(f)) bad(`${where}: in oneof ${oneofName(f)}, SPIFFE has no oneofs`);
    info(`ok   ${where} ${typeName(f)}`);
  }
}

function main() {
  let ours;
  let official;
  try {
    ours = loadOurs();
  } catch (e) {
    console.error(`check_protos: cannot load our protos from ${OUR_DIR}: ${e.message}`);
    return 2;
  }
  try {
    official = loadOfficial(ours.files);
  } catch (e) {
    console.error(`check_protos: cannot load the official protos (run tests/interop/setup.sh): ${e.message}`);
    return 2;
  }
  for (const rel of official.missing) {
    bad(`${rel}: no official file at that path (our upstream mirrors must keep upstream paths)`);
  }

  for (const obj of walk(ours.root)) {
    const name = strip(obj.fullName);
    if (name.startsWith('meshid.')) { stats.own++; continue; }
    if (!name.includes('.')) { checkSpiffe(obj); continue; }
    const off = official.root.lookup(obj.fullName);
    if (obj instanceof protobuf.Type) {
      if (!(off instanceof protobuf.Type)) { bad(`message ${name}: not found upstream`); continue; }
      compareMessage(obj, off);
    } else if (obj instanceof protobuf.Enum) {
      if (!(off instanceof protobuf.Enum)) { bad(`enum ${name}: not found upstream`); continue; }
      compareEnum(obj, off);
    } else {
      if (!(off instanceof protobuf.Service)) { bad(`service ${name}: not found upstream`); continue; }
      const offMethods = {};
      for (const m of off.methodsArray) offMethods[m.name] = methodSig(m);
      compareService(obj, offMethods);
    }
  }

  for (const p of problems) console.log(`MISMATCH ${p}`);
  console.log(`check_protos: ${ours.files.length} files; ${stats.messages} messages, ` +
              `${stats.fields} fields, ${stats.enumValues} enum values, ${stats.methods} methods ` +
              `compared (${stats.own} meshid-own definitions only parsed); ` +
              `SPIFFE Workload API checked against a table (${SPIFFE_WORKLOAD.source}), ` +
              `no official copy is installed; ${problems.length} mismatch(es)`);
  return problems.length ? 1 : 0;
}

process.exitCode = main();
